"""Objectives: which Pyro ELBO trains the model.

``trace`` is :class:`pyro.infer.Trace_ELBO` (Monte Carlo KL); ``meanfield`` is
:class:`pyro.infer.TraceMeanField_ELBO`, which uses the closed-form
:math:`\\mathrm{KL}(q(z|x)\\,\\|\\,p(z))` where one is registered
(:func:`torch.distributions.kl.kl_divergence`) and falls back to Monte Carlo otherwise — the
automatic choice; ``analytic`` (:class:`AnalyticKL_ELBO`) is the same estimator in a strict mode
that refuses, with an error naming both distributions, a guide/prior pair without a closed form;
``enum`` is :class:`pyro.infer.TraceEnum_ELBO`, which sums discrete latent sites marked for
enumeration exactly (the semi-supervised :mod:`pyro_gen.ssvae`). Particles are vectorized.

Objectives other than the ELBO (:func:`make_objective`): the importance-weighted bound ``iwae:K``
and the Rényi bound ``renyi:ALPHA:K`` (:class:`RenyiBound`). The β of the β-VAE and KL warm-up
(linear or cyclical) are a :class:`KLSchedule` whose value the trainer applies to the latent sites
through an effect handler (:class:`pyro_gen.handlers.scale_latents`). *Free bits* (Kingma et al. 2016, "Improved variational inference with inverse
autoregressive flow", eq. 15) replace the KL term :math:`\\sum_j \\mathrm{KL}_j` by
:math:`\\sum_j \\max(\\lambda, \\mathrm{KL}_j)`, with :math:`\\mathrm{KL}_j` the minibatch average
of the KL of latent dimension :math:`j`: dimensions below :math:`\\lambda` nats get no pressure
towards the prior. Pyro's ELBOs see one log-density per latent site, so the engine adds the
difference, :math:`\\sum_j \\max(0, \\lambda - \\mathrm{KL}_j)` per datum (:func:`free_bits_penalty`), to
the loss (:func:`training_loss`); it needs a guide and a prior that factorize over the latent
dimensions at every latent site (:func:`kl_per_dimension`).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import pyro.infer
import pyro.poutine as poutine
import torch
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from pyro.poutine.util import site_is_subsample
from torch.distributions import Distribution, Independent, TransformedDistribution
from torch.distributions.kl import kl_divergence

from ._spec import SpecEntry, parse_spec, positive_int
from .errors import InputError

__all__ = ["make_elbo", "training_loss", "ELBOS", "AnalyticKL_ELBO", "check_analytic_kl", "describe_distribution",
           "RenyiBound", "make_objective", "OBJECTIVES", "KLSchedule", "KL_SCHEDULES", "univariate_factors",
           "kl_per_dimension", "free_bits_penalty"]


def describe_distribution(d: Distribution) -> str:
    """A short name for a distribution that shows its structure, e.g. ``Independent(Normal)``."""
    name = type(d).__name__
    if isinstance(d, Independent):
        return f"{name}({describe_distribution(d.base_dist)})"
    if isinstance(d, TransformedDistribution):
        return f"{name}({describe_distribution(d.base_dist)}, {len(d.transforms)} transforms)"
    if hasattr(d, "component_distribution"):
        return f"{name}({describe_distribution(d.component_distribution)})"
    return name


def check_analytic_kl(model, guide, *args, **kwargs) -> None:
    """Raise ``ValueError`` unless every latent site of ``model`` has a closed-form
    :math:`\\mathrm{KL}(q\\,\\|\\,p)` registered with :func:`torch.distributions.kl.kl_divergence`
    for the guide's and the model's distributions at that site.

    Runs the guide once and the model once (replayed on the guide's draws) without gradients,
    on a forked random-number state (the caller's random stream is left as it was).

    :param model: a Pyro model, e.g. ``vae.model``.
    :param guide: its guide, e.g. ``vae.guide``.
    :param args: the arguments of both, e.g. a small batch of data.
    :raises ValueError: naming the site and both distributions.
    """
    with torch.no_grad(), torch.random.fork_rng():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    for name, site in model_trace.nodes.items():
        if (site["type"] != "sample" or site["is_observed"] or site_is_subsample(site)
                or name not in guide_trace.nodes):
            continue
        q, p = guide_trace.nodes[name]["fn"], site["fn"]
        try:
            with torch.no_grad():
                kl_divergence(q, p)
        except NotImplementedError:
            raise InputError(
                f"the analytic ELBO needs a closed-form KL(q || p) at site {name!r}, but none is registered between "
                f"the guide's {describe_distribution(q)} and the prior's {describe_distribution(p)}; use the "
                f"meanfield ELBO (closed form where one exists, Monte Carlo otherwise) or trace, or register one "
                f"with torch.distributions.kl.register_kl") from None


def univariate_factors(d: Distribution) -> Optional[Distribution]:
    """The univariate base distribution of ``d`` if ``d`` factorizes over its last dimension
    (``Independent(base, 1)`` with a scalar ``base``), else ``None``."""
    if isinstance(d, Independent) and d.reinterpreted_batch_ndims == 1 and d.base_dist.event_shape == ():
        return d.base_dist
    return None


def kl_per_dimension(q: Distribution, prior: Distribution, z: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:math:`\\mathrm{KL}(q(z_j \\mid x)\\,\\|\\,p(z_j))` for each datum and latent dimension,
    differentiable: the closed form where one is registered, else the one-draw Monte Carlo
    estimate :math:`\\log q(z_j \\mid x) - \\log p(z_j)` at the draw ``z``.

    :param q: the guide's distribution, ``batch_shape (B,)``, ``event_shape (D,)``.
    :param prior: the prior, ``event_shape (D,)``.
    :param z: a draw from ``q``, ``(B, D)``; needed only without a closed form.
    :returns: a tensor ``(B, D)``.
    :raises ValueError: if ``q`` or ``prior`` does not factorize over the latent dimensions.
    """
    qb, pb = univariate_factors(q), univariate_factors(prior)
    if qb is None or pb is None:
        raise InputError(f"the KL per latent dimension needs a guide and a prior that factorize over the dimensions "
                         f"(a diagonal guide; the standard, learned or studentt prior); got the guide "
                         f"{describe_distribution(q)} and the prior {describe_distribution(prior)}")
    try:
        return kl_divergence(qb, pb)
    except NotImplementedError:
        if z is None:
            raise InputError(f"no closed-form KL between {describe_distribution(qb)} and {describe_distribution(pb)}: "
                             f"pass a draw z for the Monte Carlo estimate") from None
        return qb.log_prob(z) - pb.log_prob(z)


def free_bits_penalty(q: Distribution, prior: Distribution, z: Optional[torch.Tensor], free_bits: float) -> torch.Tensor:
    """:math:`\\sum_j \\max(0, \\lambda - \\overline{\\mathrm{KL}}_j)`, with
    :math:`\\overline{\\mathrm{KL}}_j` the batch average of :func:`kl_per_dimension`: what free
    bits (Kingma et al. 2016) add to the negative ELBO of one datum, since
    :math:`\\sum_j \\max(\\lambda, \\mathrm{KL}_j) = \\sum_j \\mathrm{KL}_j + \\sum_j \\max(0, \\lambda - \\mathrm{KL}_j)`.
    Its gradient cancels the KL's for the dimensions below :math:`\\lambda`.

    :param q: the guide's distribution for a batch, ``batch_shape (B,)``, ``event_shape (D,)``.
    :param prior: the prior.
    :param z: the draw from ``q`` (for pairs without a closed-form KL).
    :param free_bits: :math:`\\lambda`, nats per latent dimension.
    """
    kl = kl_per_dimension(q, prior, z)
    return torch.relu(free_bits - kl.reshape(-1, kl.shape[-1]).mean(0)).sum()


class AnalyticKL_ELBO:
    """:class:`pyro.infer.TraceMeanField_ELBO` in a strict mode: before its first use with a
    model/guide pair it checks (:func:`check_analytic_kl`) that every latent site has a closed-form
    KL, and raises a ``ValueError`` naming both distributions instead of silently falling back to
    Monte Carlo. Afterwards it is exactly the wrapped ELBO. A wrapper, not a subclass: it
    forwards ``loss``, ``differentiable_loss`` and ``loss_and_grads`` and any other attribute.

    :param kwargs: arguments of :class:`~pyro.infer.TraceMeanField_ELBO`.
    """

    def __init__(self, **kwargs):
        self.elbo = pyro.infer.TraceMeanField_ELBO(**kwargs)
        self._checked = set()

    def _check(self, model, guide, args, kwargs) -> None:
        key = tuple((id(getattr(f, "__self__", None)), getattr(f, "__func__", f)) for f in (model, guide))
        if key not in self._checked:
            check_analytic_kl(model, guide, *args, **kwargs)
            self._checked.add(key)

    def loss(self, model, guide, *args, **kwargs) -> float:
        self._check(model, guide, args, kwargs)
        return self.elbo.loss(model, guide, *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        self._check(model, guide, args, kwargs)
        return self.elbo.differentiable_loss(model, guide, *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        self._check(model, guide, args, kwargs)
        return self.elbo.loss_and_grads(model, guide, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.__dict__["elbo"], name)


ELBOS = {"trace": pyro.infer.Trace_ELBO, "meanfield": pyro.infer.TraceMeanField_ELBO, "analytic": AnalyticKL_ELBO,
         "enum": functools.partial(pyro.infer.TraceEnum_ELBO, strict_enumeration_warning=False)}


def make_elbo(name: str = "trace", num_particles: int = 1) -> pyro.infer.ELBO:
    """Build a Pyro ELBO by name.

    :param name: ``"trace"``, ``"meanfield"``, ``"analytic"`` or ``"enum"`` (objectives other than
        the ELBO, such as ``"iwae:50"``, come from :func:`make_objective`).
    :param num_particles: Monte Carlo particles per datum (vectorized).
    """
    if name not in ELBOS:
        raise InputError(f"unknown ELBO {name!r}: expected one of {', '.join(ELBOS)} (objectives such as "
                         f"{', '.join(e.usage for e in OBJECTIVES.values())} are chosen with --objective)")
    return ELBOS[name](num_particles=num_particles, vectorize_particles=num_particles > 1,
                       max_plate_nesting=1)


class RenyiBound:
    """The Rényi variational bound of order :math:`\\alpha` with ``K`` samples per datum (Li &
    Turner 2016, "Rényi Divergence Variational Inference"); :math:`\\alpha = 0` is the
    importance-weighted bound of the IWAE (Burda, Grosse & Salakhutdinov 2015):

    .. math::

        \\mathcal{L}_{\\alpha,K}(x) = \\frac{1}{1-\\alpha} \\log \\frac1K \\sum_{k=1}^K
        w_k^{1-\\alpha}, \\qquad w_k = \\frac{p(x, z_k)}{q(z_k \\mid x)}, \\quad
        z_k \\sim q(z \\mid x).

    For :math:`\\alpha \\in [0, 1)` it lies between the ELBO (:math:`\\alpha \\to 1`, or
    ``K = 1``) and :math:`\\log p(x)`, and for :math:`\\alpha = 0` it increases with ``K``
    towards :math:`\\log p(x)`; :math:`\\alpha < 0` can exceed :math:`\\log p(x)`.

    A wrapper around :class:`pyro.infer.RenyiELBO` (``vectorize_particles=True``), whose traces it
    uses, adding what training needs: :meth:`bound` per datum and a :meth:`differentiable_loss`
    (the bound differentiated directly through reparameterized draws, which is the IWAE gradient
    estimator; guides must be reparameterized). The bound does **not** commute with a
    minibatch scale: ``RenyiELBO`` weights every log-density by its ``poutine.scale``, so a data
    plate scaled by :math:`N/B` would give :math:`\\frac{1}{1-\\alpha}\\log\\frac1K\\sum_k
    w_k^{(1-\\alpha)N/B}` instead of :math:`\\frac NB \\mathcal{L}_{\\alpha,K}`.
    :func:`training_loss` therefore runs the model unscaled for it (``scales_with_data`` is
    False) and averages the per-datum bounds. A β (:class:`pyro_gen.handlers.scale_latents`) still applies:
    :math:`\\log w_k = \\log p(x \\mid z_k) + \\beta(\\log p(z_k) - \\log q(z_k \\mid x))`.

    :param alpha: the order :math:`\\alpha \\ne 1`.
    :param num_particles: K.
    :param max_plate_nesting: as in Pyro's ELBOs.
    """

    scales_with_data = False

    def __init__(self, alpha: float = 0.0, num_particles: int = 5, max_plate_nesting: int = 1):
        if not math.isfinite(alpha) or alpha == 1:
            raise InputError(f"the Rényi order alpha must be a finite number other than 1 (alpha = 1 is the ELBO), "
                             f"got {alpha}")
        if int(num_particles) < 1:
            raise InputError(f"the number of samples K must be a positive integer, got {num_particles}")
        self.alpha, self.num_particles = float(alpha), int(num_particles)
        self.elbo = pyro.infer.RenyiELBO(alpha=self.alpha, num_particles=self.num_particles,
                                         vectorize_particles=True, max_plate_nesting=max_plate_nesting)

    def log_weights(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """:math:`\\log w_k` of each datum, shape ``(K,) + batch``, differentiable."""
        for model_trace, guide_trace in self.elbo._get_traces(model, guide, args, kwargs):
            sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
            log_w = 0.0
            for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
                for name, site in trace.nodes.items():
                    if site["type"] != "sample":
                        continue
                    if sign < 0 and not site["fn"].has_rsample:
                        raise InputError(f"the Rényi/IWAE bound needs a reparameterized guide, but site {name!r} "
                                         f"has a {type(site['fn']).__name__} without rsample")
                    log_w = log_w + sign * torch_sum(site["log_prob"], sum_dims)
        return log_w if self.num_particles > 1 else log_w.unsqueeze(0)

    def bound(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """:math:`\\mathcal{L}_{\\alpha,K}` per datum (shape ``batch``), differentiable."""
        log_w = (1.0 - self.alpha) * self.log_weights(model, guide, *args, **kwargs)
        return (torch.logsumexp(log_w, 0) - math.log(self.num_particles)) / (1.0 - self.alpha)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """:math:`-\\sum_n \\mathcal{L}_{\\alpha,K}(x_n)` over the batch."""
        return -self.bound(model, guide, *args, **kwargs).sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss)


def _renyi_alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value == 1:
        raise InputError(f"expected a finite number other than 1 (alpha = 1 is the ELBO), got {text!r}")
    return value


def _no_particles(name: str, elbo: str, num_particles: int) -> None:
    if elbo == "enum":
        raise InputError(f"the {name} objective samples every latent site: it cannot enumerate discrete ones "
                         "(the enum ELBO)")
    if num_particles != 1:
        raise InputError(f"the {name} objective takes its number of samples K in the spec ({name}:K...), "
                         f"not from num_particles={num_particles}")


def _elbo_objective(elbo: str = "trace", num_particles: int = 1):
    return make_elbo(elbo, num_particles)


def _iwae_objective(elbo: str = "trace", num_particles_setting: int = 1, num_particles: int = 5) -> RenyiBound:
    _no_particles("iwae", elbo, num_particles_setting)
    return RenyiBound(alpha=0.0, num_particles=num_particles)


def _renyi_objective(elbo: str = "trace", num_particles_setting: int = 1, alpha: float = 0.5,
                     num_particles: int = 5) -> RenyiBound:
    _no_particles("renyi", elbo, num_particles_setting)
    return RenyiBound(alpha=alpha, num_particles=num_particles)


#: Spec table of :func:`make_objective`.
OBJECTIVES = {
    "elbo": SpecEntry(_elbo_objective, (), "elbo", "the ELBO, with the chosen estimator (default)"),
    "iwae": SpecEntry(_iwae_objective, (("num_particles", positive_int),), "iwae[:K]",
                      "importance-weighted bound with K samples (default 5)"),
    "renyi": SpecEntry(_renyi_objective, (("alpha", _renyi_alpha), ("num_particles", positive_int)),
                       "renyi[:ALPHA[:K]]", "Rényi bound of order ALPHA with K samples (default 0.5, 5)"),
}


def make_objective(spec: str = "elbo", elbo: str = "trace", num_particles: int = 1):
    """The objective a run maximizes, from a spec string (a row of :data:`OBJECTIVES`).

    :param spec: ``"elbo"`` (the ELBO with estimator ``elbo`` and ``num_particles`` particles),
        ``"iwae:K"`` (:class:`RenyiBound` with :math:`\\alpha = 0`) or ``"renyi:ALPHA:K"``.
    :param elbo: the ELBO estimator of ``"elbo"`` (:data:`ELBOS`); the importance-weighted
        objectives have their own estimator and ignore it (except ``"enum"``, which they refuse).
    :param num_particles: particles of ``"elbo"``; must stay 1 for the others (K is in the spec).
    :raises ValueError: naming the problem.
    """
    entry, kwargs = parse_spec(spec, OBJECTIVES, "objective")
    return entry.factory(elbo, num_particles, **kwargs)


def training_loss(elbo, pair, x: torch.Tensor, *args, num_data: Optional[int] = None, beta: float = 1.0,
                  free_bits: float = 0.0) -> torch.Tensor:
    """The negative objective per datum of the data set, differentiable, for any model/guide pair.

    The pair runs under the engine's effect handlers (:mod:`pyro_gen.handlers`): its plates over
    data scaled by :math:`N/B`, so that ``elbo.differentiable_loss`` estimates :math:`-\\sum_n
    \\mathrm{ELBO}(x_n)` over the whole data set, and its latent sites by β; dividing by
    :math:`N` gives the per-datum loss, whose gradients have the magnitude of an ordinary mean
    loss (sensible for gradient clipping and learning rates). An objective that does not commute
    with the data plate's scale (``scales_with_data`` False: :class:`RenyiBound`) is evaluated on
    the unscaled pair and divided by the batch size, the same per-datum estimate. With free bits
    :math:`\\lambda > 0` the loss adds :math:`\\beta \\sum_s` :func:`free_bits_penalty` over the
    latent sites, so that its KL term is :math:`\\beta \\sum_j \\max(\\lambda, \\mathrm{KL}_j)`.

    :param elbo: a Pyro ELBO or a :class:`RenyiBound`.
    :param pair: a model/guide pair (``pair.model``, ``pair.guide``).
    :param x: a minibatch ``(B, ...)``.
    :param args: further arguments of model and guide (labels or side vectors).
    :param num_data: :math:`N`, the data-set size (``None``: the batch is the data set).
    :param beta: the weight of the latent sites (β-VAE, warm-up).
    :param free_bits: :math:`\\lambda`, nats per latent dimension (0: none).
    """
    from .handlers import record_latents, scaled
    from .traces import data_plates
    b = x.shape[0]
    n = num_data or b if getattr(elbo, "scales_with_data", True) else b
    plates = data_plates(pair)
    seen_q, seen_p = (record_latents(), record_latents()) if free_bits else (None, None)
    loss = elbo.differentiable_loss(scaled(pair.model, n / b, beta, plates, seen_p),
                                    scaled(pair.guide, n / b, beta, plates, seen_q), x, *args) / n
    if free_bits:
        for name, (q, z) in seen_q.sites.items():
            loss = loss + beta * free_bits_penalty(q, seen_p.sites[name][0], z, free_bits)
    return loss


def _linear_shape(position: int, warmup: int) -> float:
    return min(1.0, (position + 1) / warmup)


def _cyclical_shape(position: int, warmup: int) -> float:
    return min(1.0, (position % (2 * warmup) + 1) / warmup)


#: Shapes of :class:`KLSchedule`: ``shape(step, warmup_steps)`` in (0, 1].
KL_SCHEDULES = {"linear": _linear_shape, "cyclical": _cyclical_shape}


@dataclass(frozen=True)
class KLSchedule:
    """The weight :math:`\\beta_t` of the KL term at optimization step ``t`` (counted from 0),
    applied before each step by :class:`pyro_gen.handlers.scale_latents` (a scale on the latent
    sites in model and guide, so the objective is :math:`E_q \\log p(x|z) - \\beta_t \\mathrm{KL}(q \\| p)`):

    - ``linear`` warm-up (Bowman et al. 2016; Sønderby et al. 2016):
      :math:`\\beta_t = \\beta \\min(1, (t+1)/W)`;
    - ``cyclical`` (Fu et al. 2019, "Cyclical Annealing Schedule: A Simple Approach to
      Mitigating KL Vanishing"): the same ramp over :math:`W` steps, then :math:`W` steps at
      :math:`\\beta`, repeated: :math:`\\beta_t = \\beta \\min(1, ((t \\bmod 2W) + 1)/W)` (their
      ratio :math:`R = 0.5`; their 4 cycles over ``T`` steps are :math:`W = T/8`). Given
      ``total_steps``, a cycle starts only if it ends before training does; the steps after the
      last whole cycle stay at :math:`\\beta`, so a run never ends part-way up a ramp.

    With ``warmup_steps = 0`` it is the constant :math:`\\beta` (the β-VAE of Higgins et al.
    2017; :math:`\\beta = 1` is the ELBO). Values are never 0 (a zero scale is not allowed by
    ``poutine.scale``): the first step has :math:`\\beta / W`.

    :param beta: the final weight β > 0.
    :param warmup_steps: W, the length of a ramp in optimization steps.
    :param kind: ``"linear"`` or ``"cyclical"`` (:data:`KL_SCHEDULES`).
    :param total_steps: the length of training in steps, if known (used by ``cyclical``).
    """

    beta: float = 1.0
    warmup_steps: int = 0
    kind: str = "linear"
    total_steps: Optional[int] = None

    def __post_init__(self):
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise InputError(f"beta must be a positive number, got {self.beta}")
        if int(self.warmup_steps) != self.warmup_steps or self.warmup_steps < 0:
            raise InputError(f"warm-up must be a non-negative whole number of steps, got {self.warmup_steps}")
        if self.kind not in KL_SCHEDULES:
            raise InputError(f"unknown KL schedule {self.kind!r}: expected one of {', '.join(KL_SCHEDULES)}")

    def __call__(self, step: int) -> float:
        if self.warmup_steps == 0:
            return float(self.beta)
        if self.kind == "cyclical" and self.total_steps is not None:
            period = 2 * int(self.warmup_steps)
            if step >= max(1, self.total_steps // period) * period:  # after the last whole cycle
                return float(self.beta)
        return self.beta * KL_SCHEDULES[self.kind](int(step), int(self.warmup_steps))
