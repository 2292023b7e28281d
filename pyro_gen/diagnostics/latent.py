"""How the latent code is used: the ELBO's two terms, KL per dimension, active units, the
"ELBO surgery" split of the KL, and posterior collapse.

With :math:`q(z|x)` the guide and :math:`p(z)` the prior,

.. math::

    \\mathrm{ELBO}(x) = \\underbrace{E_{q(z|x)}[\\log p(x|z)]}_{\\text{reconstruction}}
    - \\underbrace{\\mathrm{KL}(q(z|x)\\,\\|\\,p(z))}_{\\text{rate}}.

Averaged over data :math:`x_1..x_N`, the KL splits into the mutual information between x and z
under :math:`q(x, z) = \\frac1N \\sum_n \\delta_{x_n}(x) q(z|x_n)` and the divergence of the
aggregate posterior :math:`q(z) = \\frac1N\\sum_n q(z|x_n)` from the prior (Hoffman & Johnson
2016, "ELBO surgery"):

.. math::

    \\frac1N \\sum_n \\mathrm{KL}(q(z|x_n)\\,\\|\\,p(z)) = I_q(x; z) + \\mathrm{KL}(q(z)\\,\\|\\,p(z)).

A unit :math:`d` is *active* when :math:`A_d = \\mathrm{Cov}_x(E_{q(z|x)}[z_d]) > 0.01` (Burda,
Grosse & Salakhutdinov 2015): an inactive unit's posterior mean does not depend on x, so it carries
no information about x. *Posterior collapse* is the state where the whole code is inactive: the
guide ignores x and the KL is (nearly) zero.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Tuple

import torch
from torch.distributions import Normal, TransformedDistribution, kl_divergence

from ..devices import rng_devices
from ..objectives import univariate_factors
from ..errors import InputError

__all__ = ["LatentDiagnostics", "elbo_terms", "kl_per_dimension_estimate", "posterior_means", "unit_activity",
           "active_units", "elbo_surgery", "latent_diagnostics", "epoch_diagnostics", "make_epoch_metrics",
           "is_point_mass", "unsupported_reason", "tiled_cross", "POINT_MASS_NOTE", "ACTIVE_THRESHOLD",
           "COLLAPSE_KL", "COLLAPSE_ACTIVE", "FLOW_MI_POINTS"]

#: Burda et al. (2015)'s threshold on :math:`\\mathrm{Cov}_x(E_q[z_d])` for an active unit.
ACTIVE_THRESHOLD = 0.01
#: Posterior collapse is flagged when the mean KL per datum is below this many nats ...
COLLAPSE_KL = 1.0
#: ... or fewer than this many units are active.
COLLAPSE_ACTIVE = 1
#: With a flow guide, the mutual information is estimated on at most this many data.
FLOW_MI_POINTS = 100
#: What a density-based diagnostic says for the deterministic autoencoder.
POINT_MASS_NOTE = "not defined for a point-mass guide (the deterministic autoencoder has no density q(z|x))"


def unsupported_reason(vae) -> str:
    """Why the diagnostics cannot handle this model (``""`` when they can): they cover the built-in
    :class:`~pyro_gen.vae.VAE` with its fast paths, conditional models given their side vectors and
    any other pair through traces (:mod:`pyro_gen.diagnostics.sites`); not the semi-supervised VAE,
    whose labels are latent (enumerated)."""
    if getattr(vae, "labels_are_latent", False):
        return (f"the diagnostics cover unconditional VAEs and pairs without enumerated labels, not "
                f"{type(vae).__name__} (its class labels are latent)")
    return ""


def is_point_mass(vae) -> bool:
    """Whether the VAE's guide is a point mass (:class:`~pyro_gen.guides.Delta`)."""
    return bool(getattr(vae.guide_net, "deterministic", False))


def _kl_total(q, prior, z: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, bool]:
    """:math:`\\mathrm{KL}(q(z|x_n)\\|p(z))` per datum ``(B,)``: closed form where one is
    registered, else Monte Carlo over the draws ``z`` ``(S, B, D)``. Returns ``(kl, closed_form)``."""
    try:
        return kl_divergence(q, prior), True
    except NotImplementedError:
        if z is None:
            z = q.sample((64,))
        return (q.log_prob(z) - prior.log_prob(z)).mean(0), False


@torch.no_grad()
def elbo_terms(vae, x: torch.Tensor, num_samples: int = 1) -> Tuple[torch.Tensor, Optional[torch.Tensor], bool]:
    """The two terms of the ELBO per datum.

    :param vae: a :class:`~pyro_gen.vae.VAE`.
    :param x: data ``(B, C, H, W)``.
    :param num_samples: draws of z per datum for the reconstruction term (and a Monte Carlo KL).
    :returns: ``(rec, kl, closed_form)``: :math:`E_q[\\log p(x|z)]` ``(B,)``; the KL ``(B,)``
        (``None`` for a point-mass guide, whose KL is not defined); whether the KL is in closed form.
    """
    q = vae.guide_net(x)
    z = q.sample((num_samples,))
    rec = vae.likelihood(vae.decoder(z)).log_prob(x).mean(0)
    if is_point_mass(vae):
        return rec, None, False
    kl, closed = _kl_total(q, vae.prior(), z)
    return rec, kl, closed


@torch.no_grad()
def kl_per_dimension_estimate(q, prior, num_samples: int = 256, method: str = "auto") -> Tuple[Optional[torch.Tensor], str]:
    """:math:`\\mathrm{KL}(q(z_d|x)\\,\\|\\,p(z_d))` for each datum and latent dimension.

    Defined when both the guide and the prior factorize over dimensions (diagonal Normal guide,
    factorized prior); then the total KL is the sum over dimensions. For two Normals

    .. math::

        \\mathrm{KL}_d = \\log\\frac{\\sigma_p}{\\sigma_q}
        + \\frac{\\sigma_q^2 + (\\mu_q - \\mu_p)^2}{2\\sigma_p^2} - \\frac12 ;

    for pairs without a registered closed form, a Monte Carlo average of
    :math:`\\log q(z_d|x) - \\log p(z_d)` over ``num_samples`` draws.

    :param q: the guide's distribution for a batch, ``batch_shape (B,)``, ``event_shape (D,)``.
    :param prior: the prior, ``event_shape (D,)``.
    :param num_samples: draws for the Monte Carlo estimate.
    :param method: ``"auto"`` (closed form when registered), ``"closed"`` or ``"mc"``.
    :returns: ``(kl, how)``: a tensor ``(B, D)`` and how it was computed, or ``(None, reason)``.
    """
    if method not in ("auto", "closed", "mc"):
        raise InputError(f"method must be auto, closed or mc, got {method!r}")
    qb, pb = univariate_factors(q), univariate_factors(prior)
    if qb is None or pb is None:
        return None, ("not defined: the guide or the prior does not factorize over latent dimensions "
                      "(only the total KL is reported)")
    if method != "mc":
        try:
            return kl_divergence(qb, pb), "closed form"
        except NotImplementedError:
            if method == "closed":
                raise
    z = qb.sample((num_samples,))
    return (qb.log_prob(z) - pb.log_prob(z)).mean(0), f"Monte Carlo ({num_samples} draws)"


@torch.no_grad()
def posterior_means(vae, x: torch.Tensor, num_samples: int = 64) -> torch.Tensor:
    """:math:`E_{q(z|x)}[z]` per datum ``(B, D)``: the guide's mean where it has one in closed
    form, else a Monte Carlo average over ``num_samples`` draws."""
    q = vae.guide_net(x)
    try:
        return q.mean
    except NotImplementedError:
        return q.sample((num_samples,)).mean(0)


def unit_activity(means: torch.Tensor) -> torch.Tensor:
    """:math:`A_d = \\mathrm{Cov}_x(E_q[z_d])`, the variance over data of each posterior mean
    (Burda et al. 2015). :param means: ``(N, D)``. :returns: ``(D,)``."""
    return means.var(0, unbiased=True) if len(means) > 1 else means.new_zeros(means.shape[-1])


def active_units(vae, x: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> int:
    """The number of units with :math:`\\mathrm{Cov}_x(E_q[z_d]) >` ``threshold`` on data ``x``."""
    return int((unit_activity(posterior_means(vae, x)) > threshold).sum())


def _broadcast_cross(q) -> Callable[[torch.Tensor], torch.Tensor]:
    """``cross(z) [n, m] = log q(z_n | x_m)`` by broadcasting ``z (N, 1, D)`` against ``q``'s batch;
    for a diagonal Normal ``q`` as three matrix products (in float64),
    :math:`-\\frac12\\sum_d (z_{nd}^2 - 2 z_{nd}\\mu_{md} + \\mu_{md}^2)/\\sigma_{md}^2
    - \\sum_d \\log\\sigma_{md} - \\frac D2\\log 2\\pi`."""
    base = univariate_factors(q)
    if not isinstance(base, Normal):
        return lambda zs: q.log_prob(zs.unsqueeze(-2))
    mu, var = base.loc.double(), base.scale.double() ** 2
    const = -(0.5 * mu ** 2 / var + 0.5 * var.log()).sum(-1) - 0.5 * mu.shape[-1] * math.log(2 * math.pi)

    def cross(zs: torch.Tensor) -> torch.Tensor:
        zs = zs.double()
        return -0.5 * (zs ** 2) @ (1 / var).T + zs @ (mu / var).T + const
    return cross


def tiled_cross(guide_net, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``cross(z) [n, m] = log q(z_n | x_m)`` by scoring every (code, datum) pair as one batch of
    ``N * N`` -- for guides whose distributions do not broadcast (conditional flows).

    The pairs are scored in float64, on a float64 copy of the guide. A flow guide scores a code
    it did not produce by inverting the flow, an autoregressive recursion whose intermediate
    values grow without bound for codes far from the datum's posterior: in float32 it overflows
    to inf or NaN (and Normal's argument check raised) for about 1 % of the pairs of a trained
    IAF guide. In float64 the same pairs agree with float32 wherever float32 is finite and
    :math:`\\log q > -500` (checked on a trained IAF guide), and where even float64 overflows,
    the base variable is beyond :math:`10^{300}`, so :math:`\\log q = -\\infty` to working
    precision; non-finite results are returned as :math:`-\\infty`, which is their limit and
    what the aggregate posterior's log-sum-exp needs.
    """
    import copy

    import pyro

    n = len(x)
    guide64 = copy.deepcopy(guide_net).double()
    x64 = x.double()

    def cross(zs: torch.Tensor) -> torch.Tensor:
        x_rep = x64.repeat((n,) + (1,) * (x.dim() - 1))  # [k = i * n + m] -> x_m
        with pyro.validation_enabled(False):
            lp = guide64(x_rep).log_prob(zs.double().repeat_interleave(n, dim=0)).reshape(n, n)
        return torch.where(torch.isfinite(lp), lp, torch.full_like(lp, -math.inf))
    return cross


@torch.no_grad()
def aggregate_posterior_draws(q, num_samples: int = 1,
                              cross: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
    """Draws :math:`z_{sn} \\sim q(z|x_n)` ``(S, N, D)`` with :math:`\\log q(z_{sn}|x_n)` and the
    log density of the aggregate posterior of the ``N`` data, :math:`\\log\\frac1N\\sum_m q(z_{sn}|x_m)`,
    both ``(S, N)`` in float64 (see :func:`elbo_surgery`); ``q`` has ``batch_shape (N,)``."""
    n = q.batch_shape[0]
    cross = cross or _broadcast_cross(q)
    z = q.sample((num_samples,))  # (S, N, D)
    log_q_own = q.log_prob(z).double()  # (S, N)
    # log q(z_sn | x_m) for all m, one draw index s at a time (memory N x N x D)
    log_agg = torch.stack([torch.logsumexp(cross(zs).double(), dim=-1) for zs in z]) - math.log(n)
    return z, log_q_own, log_agg


@torch.no_grad()
def elbo_surgery(q, prior, num_samples: int = 1,
                 cross: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Tuple[float, float, float]:
    """Monte Carlo estimates of the three terms of the ELBO-surgery identity on ``N`` data.

    With :math:`z_{sn} \\sim q(z|x_n)` and the aggregate posterior of these data evaluated exactly
    as the mixture :math:`\\log q(z) = \\log\\frac1N\\sum_m q(z|x_m)`:

    .. math::

        \\widehat{\\mathrm{KL}} = \\overline{\\log q(z_{sn}|x_n) - \\log p(z_{sn})}, \\quad
        \\hat I = \\overline{\\log q(z_{sn}|x_n) - \\log q(z_{sn})}, \\quad
        \\widehat{\\mathrm{KL}}_{\\text{marg}} = \\overline{\\log q(z_{sn}) - \\log p(z_{sn})},

    so :math:`\\widehat{\\mathrm{KL}} = \\hat I + \\widehat{\\mathrm{KL}}_{\\text{marg}}` holds
    draw by draw. :math:`\\hat I` is the mutual information of the empirical distribution of
    these ``N`` data, bounded by :math:`\\log N` (Hoffman & Johnson 2016).

    :param q: the guide's distribution for the ``N`` data, ``batch_shape (N,)``.
    :param prior: the prior.
    :param num_samples: draws per datum.
    :param cross: ``cross(z)`` for codes ``z (N, D)`` returns the ``(N, N)`` matrix
        :math:`\\log q(z_n|x_m)`; default: broadcasting ``q`` (:func:`tiled_cross` for guides
        that do not broadcast).
    :returns: ``(average_kl, mutual_information, marginal_kl)`` in nats.
    """
    z, log_q_own, log_agg = aggregate_posterior_draws(q, num_samples, cross)
    log_p = prior.log_prob(z).double()
    return (float((log_q_own - log_p).mean()), float((log_q_own - log_agg).mean()),
            float((log_agg - log_p).mean()))


@dataclass
class LatentDiagnostics:
    """What :func:`latent_diagnostics` measures on a set of data (nats per datum).

    :param rec: mean :math:`E_q[\\log p(x|z)]`.
    :param kl: mean :math:`\\mathrm{KL}(q(z|x)\\|p(z))`; ``None`` for a point-mass guide.
    :param kl_closed_form: whether ``kl`` is in closed form (else Monte Carlo).
    :param kl_per_dim: mean KL of each latent dimension, or ``None`` (see ``kl_per_dim_note``).
    :param kl_per_dim_note: how ``kl_per_dim`` was computed, or why it is missing.
    :param activity: :math:`\\mathrm{Cov}_x(E_q[z_d])` per dimension.
    :param active_units: dimensions with activity above ``active_threshold``.
    :param mutual_info: :math:`I_q(x; z)` of the data used (at most ``log num_points``).
    :param marginal_kl: :math:`\\mathrm{KL}(q(z)\\|p(z))` of the aggregate posterior.
    :param collapse: the posterior-collapse flag.
    :param collapse_reason: why the flag fired (empty when it did not).
    :param num_points: how many data were used.
    :param note: what could not be computed and why.
    :param sites: per latent site (a pair diagnosed from traces, :mod:`pyro_gen.diagnostics.sites`):
        its KL, active units, dimensions and activity; ``None`` for the built-in VAE's one site.
    """

    rec: float
    kl: Optional[float]
    kl_closed_form: bool
    kl_per_dim: Optional[List[float]]
    kl_per_dim_note: str
    activity: List[float]
    active_units: int
    mutual_info: Optional[float]
    marginal_kl: Optional[float]
    collapse: bool
    collapse_reason: str
    num_points: int
    active_threshold: float = ACTIVE_THRESHOLD
    min_kl: float = COLLAPSE_KL
    min_active_units: int = COLLAPSE_ACTIVE
    note: str = ""
    seconds: float = field(default=0.0, compare=False)
    sites: Optional[dict] = None

    def to_dict(self) -> dict:
        return asdict(self)

    def row(self) -> dict:
        """The entries added to a ``metrics.jsonl`` row (JSON-able)."""
        out = {"rec": self.rec, "active_units": self.active_units, "posterior_collapse": self.collapse,
               "diag_points": self.num_points, "diag_seconds": round(self.seconds, 4)}
        if self.collapse:
            out["collapse_reason"] = self.collapse_reason
        if self.kl is not None:
            out.update(kl=self.kl, mutual_info=self.mutual_info, marginal_kl=self.marginal_kl)
        if self.kl_per_dim is not None:
            out["kl_per_dim"] = [round(v, 5) for v in self.kl_per_dim]
        if self.sites is not None:
            out["kl_sites"] = {name: s["kl"] for name, s in self.sites.items()}
            out["active_units_sites"] = {name: s["active_units"] for name, s in self.sites.items()}
            out["mutual_info_sites"] = {name: s.get("mutual_info") for name, s in self.sites.items()}
        return out


def _subset_index(n: int, max_points: int) -> torch.Tensor:
    """At most ``max_points`` indices evenly spaced through ``range(n)`` (the same ones every call)."""
    if n <= max_points:
        return torch.arange(n, device="cpu")
    return torch.linspace(0, n - 1, max_points, device="cpu").round().long()


def _subset(x: torch.Tensor, max_points: int) -> torch.Tensor:
    return x if len(x) <= max_points else x[_subset_index(len(x), max_points)]


@torch.no_grad()
def latent_diagnostics(vae, x: torch.Tensor, max_points: int = 500, num_samples: int = 1, seed: int = 0,
                       min_kl: float = COLLAPSE_KL, min_active_units: int = COLLAPSE_ACTIVE,
                       active_threshold: float = ACTIVE_THRESHOLD) -> LatentDiagnostics:
    """Measure the latent code on (at most ``max_points`` of) ``x``.

    The random draws come from a private generator seeded with ``seed``: calling this does not
    change the global torch random state (so training with and without it is identical).

    :param vae: a :class:`~pyro_gen.vae.VAE` (put it in eval mode first).
    :param x: data ``(N, C, H, W)`` (binarized already for a Bernoulli likelihood).
    :param max_points: use at most this many data, evenly spaced through ``x``.
    :param num_samples: draws of z per datum.
    :param seed: seed of the draws.
    :param min_kl: collapse is flagged when the mean KL is below this (nats) ...
    :param min_active_units: ... or fewer units than this are active.
    :param active_threshold: activity above which a unit is active.
    :returns: a :class:`LatentDiagnostics`.
    """
    t0 = time.perf_counter()
    x = _subset(x, max_points)
    with torch.random.fork_rng(devices=rng_devices(x)):
        torch.manual_seed(seed)
        rec, kl, closed = elbo_terms(vae, x, num_samples)
        means = posterior_means(vae, x)
        activity = unit_activity(means)
        n_active = int((activity > active_threshold).sum())
        kl_dim, kl_dim_note, mi, mkl, note = None, POINT_MASS_NOTE, None, None, ""
        if kl is not None:
            q, prior = vae.guide_net(x), vae.prior()
            kl_dim_t, kl_dim_note = kl_per_dimension_estimate(q, prior)
            kl_dim = None if kl_dim_t is None else kl_dim_t.mean(0).tolist()
            cross = None
            if isinstance(q, TransformedDistribution):
                # scoring a flow guide at arbitrary z inverts the flow: keep the N x N scoring small
                xs = x[_subset_index(len(x), FLOW_MI_POINTS)]
                q, cross = vae.guide_net(xs), tiled_cross(vae.guide_net, xs)
                if len(xs) < len(x):
                    note = (f"mutual information and marginal KL on {len(xs)} of the {len(x)} data "
                            "(a flow guide is costly to score at arbitrary z)")
            _, mi, mkl = elbo_surgery(q, prior, num_samples, cross=cross)
        else:
            note = "KL, KL per dimension, mutual information and marginal KL: " + POINT_MASS_NOTE
    reasons = []
    if kl is not None and float(kl.mean()) < min_kl:
        reasons.append(f"mean KL {float(kl.mean()):.3f} nats < {min_kl:g}")
    if n_active < min_active_units:
        reasons.append(f"{n_active} active units < {min_active_units}")
    return LatentDiagnostics(
        rec=float(rec.mean()), kl=None if kl is None else float(kl.mean()), kl_closed_form=closed,
        kl_per_dim=kl_dim, kl_per_dim_note=kl_dim_note, activity=activity.tolist(), active_units=n_active,
        mutual_info=mi, marginal_kl=mkl, collapse=bool(reasons), collapse_reason="; ".join(reasons),
        num_points=len(x), active_threshold=active_threshold, min_kl=min_kl, min_active_units=min_active_units,
        note=note, seconds=time.perf_counter() - t0)


def epoch_diagnostics(vae, x: Optional[torch.Tensor], max_points: int = 500, **kwargs) -> dict:
    """Per-epoch diagnostics for :func:`pyro_gen.train.fit`'s ``epoch_metrics``: the
    :meth:`LatentDiagnostics.row` of :func:`latent_diagnostics` on held-out data ``x``
    (``{}`` when there is none, or for a model they do not cover: see :func:`unsupported_reason`).

    Keys: ``rec`` (:math:`E_q\\log p(x|z)`), ``kl``, ``kl_per_dim`` (list), ``active_units``,
    ``mutual_info``, ``marginal_kl`` (nats per datum), ``posterior_collapse`` (bool),
    ``diag_points``, ``diag_seconds``. Runs on one intra-op thread (restored afterwards): at
    this size a second thread gains little on an idle machine and loses a lot on a busy one.
    """
    from ..vae import VAE
    if x is None or len(x) == 0 or not isinstance(vae, VAE) or vae.condition_dim or unsupported_reason(vae):
        return {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is as fast idle and far faster on a busy machine
    try:
        return latent_diagnostics(vae, x, max_points=max_points, **kwargs).row()
    finally:
        torch.set_num_threads(threads)


def make_epoch_metrics(x_fallback: Optional[torch.Tensor] = None,
                       on_collapse: Optional[Callable[[dict], None]] = None,
                       **kwargs) -> Callable[..., dict]:
    """An ``epoch_metrics(vae, x_val)`` callable for :func:`pyro_gen.train.fit`.

    :param x_fallback: data to use when ``fit`` has no held-out data.
    :param on_collapse: called with an epoch's row when the collapse flag fires after an epoch
        where it did not (so once per episode of collapse, not every epoch).
    :param kwargs: passed to :func:`latent_diagnostics`.
    """
    state = {"collapsed": False}

    def epoch_metrics(vae, x_val):
        row = epoch_diagnostics(vae, x_val if x_val is not None else x_fallback, **kwargs)
        collapsed = bool(row.get("posterior_collapse"))
        if collapsed and not state["collapsed"] and on_collapse is not None:
            on_collapse(row)
        state["collapsed"] = collapsed
        return row
    return epoch_metrics
