"""Priors ``p(z)`` over the latent code.

**The prior contract** (see ``docs/custom_priors.rst``): a prior is an :class:`torch.nn.Module`
whose call, with no arguments, returns a Pyro distribution (a ``pyro.distributions`` object)
over ``z`` with ``event_shape == (latent_dim,)`` and ``batch_shape == ()``. Learnable priors own
their parameters as submodules or ``nn.Parameter`` attributes, so they train with the rest of the
model. The model samples ``z`` from the prior inside the data plate, so Pyro broadcasts the
distribution to the batch; only ``log_prob`` (for the ELBO) and ``sample`` (for generating
images) are needed. When :math:`\\mathrm{KL}(q(z|x)\\,\\|\\,p(z))` has no closed form the ELBO
uses the Monte Carlo estimate :math:`\\log q(z|x) - \\log p(z)` at the guide's sample.

Priors are built from spec strings by :func:`make_prior` (the strings stored in a run's
``config.json``): ``standard``, ``learned``, ``mog[:K]``, ``vamp[:K]``, ``flow[:L[:KIND]]``,
``studentt[:DF]`` and ``module:pkg.mod:Factory`` for a user's own prior.
"""
from __future__ import annotations

import copy

import math
from typing import Optional, Sequence, Tuple

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from pyro.distributions.transforms import SplineAutoregressive, affine_autoregressive
from pyro.nn import AutoRegressiveNN
from torch import nn
from torch.nn import functional as F

from .devices import module_device
from ._spec import SpecEntry, import_target, parse_spec, positive_float, positive_int
from .errors import InputError

__all__ = ["StandardNormal", "LearnedNormal", "MixtureOfGaussians", "VampPrior", "FlowPrior", "StudentT",
           "UniformMixture", "diagonal_normal_log_prob_matrix", "check_prior", "make_prior", "PRIORS", "FLOW_LAYERS",
           "sample_prior"]


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class StandardNormal(nn.Module):
    """The isotropic standard Normal :math:`p(z) = \\mathcal{N}(0, I)` (Kingma & Welling 2014).

    :param latent_dim: size of z.
    """

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class LearnedNormal(nn.Module):
    """A Normal with learned mean and diagonal scale,
    :math:`p(z) = \\mathcal{N}(\\mu, \\operatorname{diag}\\sigma^2)`,
    :math:`\\sigma = \\operatorname{softplus}(\\rho) + \\sigma_{\\min}`, started at
    :math:`\\mathcal{N}(0, I)`. The KL to a diagonal Normal guide has a closed form.

    :param latent_dim: size of z.
    :param min_scale: floor :math:`\\sigma_{\\min}` on the scale.
    """

    def __init__(self, latent_dim: int, min_scale: float = 1e-3):
        super().__init__()
        self.min_scale = min_scale
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.raw_scale = nn.Parameter(torch.full((latent_dim,), _inverse_softplus(1.0 - min_scale)))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, F.softplus(self.raw_scale) + self.min_scale).to_event(1)


class MixtureOfGaussians(nn.Module):
    """A mixture of ``K`` diagonal Normals with learned weights, means and scales,

    .. math::

        p(z) = \\sum_{k=1}^K \\pi_k\\, \\mathcal{N}(z;\\, \\mu_k, \\operatorname{diag}\\sigma_k^2),
        \\qquad \\pi = \\operatorname{softmax}(\\alpha),

    (e.g. Dilokthanakul et al. 2016, "Deep Unsupervised Clustering with Gaussian Mixture
    Variational Autoencoders"). The means start at draws from :math:`\\mathcal{N}(0, I)`, the
    scales at ``init_scale`` and the weights equal. The KL has no closed form: the ELBO uses
    Monte Carlo.

    :param latent_dim: size of z.
    :param num_components: K.
    :param init_scale: starting scale of every component.
    :param min_scale: floor on the scales.
    """

    def __init__(self, latent_dim: int, num_components: int = 10, init_scale: float = 1.0, min_scale: float = 1e-3):
        super().__init__()
        self.min_scale = min_scale
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.locs = nn.Parameter(torch.randn(num_components, latent_dim))
        self.raw_scales = nn.Parameter(torch.full((num_components, latent_dim),
                                                  _inverse_softplus(init_scale - min_scale)))

    def forward(self) -> dist.TorchDistribution:
        components = dist.Normal(self.locs, F.softplus(self.raw_scales) + self.min_scale).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


def _shared(t: torch.Tensor, event_dims: int) -> Optional[torch.Tensor]:
    """``t`` without its leading batch dimensions when they only broadcast one set of values
    (size 1 or stride 0, as ``Distribution.expand`` leaves them), else ``None``."""
    lead = t.dim() - event_dims
    if lead < 0 or any(n != 1 and st != 0 for n, st in zip(t.shape[:lead], t.stride()[:lead])):
        return None
    return t[(0,) * lead] if lead else t


def _shared_diagonal_normals(mix: dist.MixtureSameFamily):
    """``(logits (K,), loc (K, D), scale (K, D))`` when the mixture's components are diagonal
    Gaussians and every batch element has the same mixture (one set of ``K`` components, maybe
    expanded to a batch shape by a plate), else ``None``."""
    source = getattr(mix, "_unexpanded", mix)
    if source.batch_shape == ():  # the K components themselves: no index into an expanded tensor, whose
        mix = source  # backward would fill a zero tensor of the whole expanded shape (batch x particles x K x D)
    comp = mix.component_distribution
    if not (isinstance(comp, dist.Independent) and comp.reinterpreted_batch_ndims == 1
            and type(comp.base_dist) is dist.Normal):
        return None
    parts = (_shared(mix.mixture_distribution.logits, 1), _shared(comp.base_dist.loc, 2),
             _shared(comp.base_dist.scale, 2))
    return None if any(p is None for p in parts) else parts


def diagonal_normal_log_prob_matrix(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """:math:`\\log \\mathcal{N}(z_n; \\mu_k, \\mathrm{diag}\\,\\sigma_k^2)` for every row ``z_n`` of
    ``z (N, D)`` and every component ``k`` of ``loc, scale (K, D)``, shape ``(N, K)``, by expanding
    the square,

    .. math::

        \\sum_d \\frac{(z_d - \\mu_{kd})^2}{\\sigma_{kd}^2}
        = \\sum_d z_d^2 a_{kd} - 2 \\sum_d z_d\\,\\mu_{kd} a_{kd} + \\sum_d \\mu_{kd}^2 a_{kd},
        \\qquad a_{kd} = \\sigma_{kd}^{-2},

    two ``(N, D) x (D, K)`` matrix products instead of an ``(N, K, D)`` tensor (computed in
    float64: the expanded square cancels digits that float32 does not have).
    """
    z64, loc64, scale64 = z.double(), loc.double(), scale.double()
    a = scale64.pow(-2)
    quad = z64.pow(2) @ a.T - 2 * z64 @ (loc64 * a).T + (loc64.pow(2) * a).sum(-1)
    norm = scale64.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)
    return (-0.5 * quad - norm).to(z.dtype)


class UniformMixture(dist.MixtureSameFamily):
    """A :class:`~pyro.distributions.MixtureSameFamily` whose ``log_prob`` expands ``z`` over the
    components explicitly, ``(..., D) -> (..., K, D)``, instead of broadcasting a singleton
    component dimension. That lets components whose ``log_prob`` does not broadcast (e.g. a flow
    conditioned on one context per component) be mixed. Diagonal Gaussian components (the
    :class:`VampPrior` of a diagonal guide) take a faster exact path,
    :func:`diagonal_normal_log_prob_matrix`. Used by :class:`VampPrior`.
    """

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        new._unexpanded = getattr(self, "_unexpanded", self)  # a plate expands the prior to its batch shape
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        shared = _shared_diagonal_normals(self)
        if shared is not None:
            logits, loc, scale = shared
            log_comp = diagonal_normal_log_prob_matrix(value.reshape(-1, value.shape[-1]), loc, scale)
            log_p = torch.logsumexp(log_comp + torch.log_softmax(logits, -1), dim=-1).reshape(value.shape[:-1])
            return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))
        k = self.mixture_distribution.logits.shape[-1]
        log_mix = torch.log_softmax(self.mixture_distribution.logits, dim=-1)
        x = value.unsqueeze(-1 - self._event_ndims)
        x = x.expand(x.shape[:-1 - self._event_ndims] + (k,) + self.event_shape)
        return torch.logsumexp(self.component_distribution.log_prob(x) + log_mix, dim=-1)


class VampPrior(nn.Module):
    """The variational mixture of posteriors prior (Tomczak & Welling 2018, "VAE with a
    VampPrior"): the guide's own posterior, averaged over ``K`` learned pseudo-inputs
    :math:`u_k`,

    .. math::

        p(z) = \\frac{1}{K} \\sum_{k=1}^K q_\\phi(z \\mid u_k).

    The pseudo-inputs are images (``nn.Parameter`` of shape ``(K, C, H, W)``) started at
    :math:`\\mathcal{N}(\\text{init\\_mean}, \\text{init\\_std}^2)` pixels as in the paper, and
    learned with the rest of the model; the guide (encoder included) is shared with the VAE, so
    its parameters get gradients from both the guide and the prior terms of the ELBO. Every
    evaluation runs the guide on the K pseudo-inputs; the KL has no closed form (Monte Carlo).
    With a diagonal guide the density of a batch of codes under the K components is two matrix
    products (:func:`diagonal_normal_log_prob_matrix`), not a tensor of every code against every
    component.

    With a flow guide (``iaf``) each component's density at an arbitrary ``z`` needs the flow's
    inverse, which costs ``latent_dim`` sequential passes: slow, but correct.

    :param latent_dim: size of z.
    :param guide: the VAE's guide family (a module mapping images to a distribution over z);
        it must have a density (not :class:`~pyro_gen.guides.Delta`).
    :param num_components: K, the number of pseudo-inputs.
    :param image_shape: ``(C, H, W)`` of a pseudo-input (default: ``guide.encoder.image_shape``).
    :param init_mean: mean of the starting pixel values.
    :param init_std: spread of the starting pixel values.
    """

    def __init__(self, latent_dim: int, guide: nn.Module, num_components: int = 50,
                 image_shape: Optional[Tuple[int, int, int]] = None, init_mean: float = 0.05,
                 init_std: float = 0.01):
        super().__init__()
        if guide is None:
            raise InputError("the VampPrior needs the guide (its components are q(z|u_k)); pass guide=")
        if getattr(guide, "deterministic", False):
            raise InputError(f"the VampPrior needs a guide with a density; the {type(guide).__name__} guide is a "
                             f"point mass (use a diagonal, fullrank or iaf guide)")
        if getattr(getattr(guide, "encoder", None), "condition_dim", 0):
            raise InputError("the VampPrior mixes q(z|u_k) over pseudo-images alone; a conditional model's guide "
                             "q(z|x,y) needs labels too (use another prior for --model cvae/ssvae)")
        if image_shape is None:
            image_shape = getattr(guide, "image_shape", None) or getattr(getattr(guide, "encoder", None),
                                                                         "image_shape", None)
            if image_shape is None:
                raise InputError("VampPrior: cannot tell the image shape from the guide; pass image_shape=")
        self.latent_dim = latent_dim
        self.guide = guide
        self.pseudo_inputs = nn.Parameter(init_mean + init_std * torch.randn(num_components, *image_shape))

    def forward(self) -> dist.TorchDistribution:
        components = self.guide(self.pseudo_inputs)
        if components.event_shape != (self.latent_dim,):
            raise InputError(f"VampPrior: the guide gives z of shape {tuple(components.event_shape)}, "
                             f"expected ({self.latent_dim},)")
        uniform = dist.Categorical(logits=self.pseudo_inputs.new_zeros(self.pseudo_inputs.shape[0]))
        return UniformMixture(uniform, components)


def rational_quadratic_spline_autoregressive(input_dim: int, hidden_dims: Optional[Sequence[int]] = None,
                                             count_bins: int = 8, bound: float = 3.0) -> SplineAutoregressive:
    """An autoregressive rational-quadratic spline layer (Durkan et al. 2019, "Neural Spline
    Flows"): monotone, continuously differentiable, the identity outside ``[-bound, bound]``.
    (Pyro's ``spline_autoregressive`` helper sizes its network for the linear order only.)

    :param input_dim: size of z.
    :param hidden_dims: hidden widths of the autoregressive network (default ``[10 D, 10 D]``).
    :param count_bins: number of spline segments.
    :param bound: half-width of the box where the spline acts.
    """
    hidden_dims = [10 * input_dim, 10 * input_dim] if hidden_dims is None else list(hidden_dims)
    arn = AutoRegressiveNN(input_dim, hidden_dims, param_dims=[count_bins, count_bins, count_bins - 1])
    return SplineAutoregressive(input_dim, arn, count_bins=count_bins, bound=bound, order="quadratic")


#: Autoregressive transforms a :class:`FlowPrior` can stack (``flow:L:KIND``).
FLOW_LAYERS = {"affine": affine_autoregressive, "spline": rational_quadratic_spline_autoregressive}


class FlowPrior(nn.Module):
    """A normalizing-flow prior: a standard Normal pushed through ``L`` autoregressive transforms,

    .. math::

        \\log p(z) = \\log \\mathcal{N}(f(z); 0, I) + \\log\\left|\\det \\frac{\\partial f}{\\partial z}\\right|,
        \\qquad f = f_L \\circ \\cdots \\circ f_1,

    where each :math:`f_l` is an autoregressive transform of Pyro (``affine``: a MAF layer,
    Papamakarios et al. 2017; ``spline``: a rational-quadratic spline layer, Durkan et al.
    2019), each with its own random variable ordering. The flows are used in their fast
    direction for the density (one network pass per layer, which the ELBO needs at every
    step); drawing samples inverts them (``latent_dim`` passes per layer). The transforms are
    submodules, so their parameters are the prior's. The KL has no closed form (Monte Carlo).

    :param latent_dim: size of z.
    :param num_layers: L.
    :param kind: a key of :data:`FLOW_LAYERS`.
    :param hidden: hidden widths of each layer's autoregressive network (Pyro's default if ``None``).
    """

    def __init__(self, latent_dim: int, num_layers: int = 2, kind: str = "affine",
                 hidden: Optional[Sequence[int]] = None):
        super().__init__()
        if kind not in FLOW_LAYERS:
            raise InputError(f"unknown flow layer {kind!r}: expected one of {', '.join(FLOW_LAYERS)}")
        hidden = None if hidden is None else list(hidden)
        self.flows = nn.ModuleList([FLOW_LAYERS[kind](latent_dim, hidden_dims=hidden) for _ in range(num_layers)])
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        base = dist.Normal(self.loc, self.scale).to_event(1)
        # sampling applies f^{-1} = f_1^{-1} o ... o f_L^{-1}; log_prob applies f, the fast direction
        return dist.TransformedDistribution(base, [flow.inv for flow in reversed(self.flows)])


class StudentT(nn.Module):
    """Independent Student-t coordinates, a heavy-tailed prior,
    :math:`p(z) = \\prod_d t_{\\nu_d}(z_d;\\, 0, 1)`.

    With ``df=None`` the degrees of freedom are learned per coordinate,
    :math:`\\nu = \\operatorname{softplus}(\\rho) + \\nu_{\\min}`, started at ``init_df``;
    otherwise they are fixed at ``df``. As :math:`\\nu \\to \\infty` this tends to the standard
    Normal. The KL has no closed form (Monte Carlo).

    :param latent_dim: size of z.
    :param df: fixed degrees of freedom, or ``None`` to learn them.
    :param init_df: starting value of learned degrees of freedom.
    :param min_df: floor on learned degrees of freedom.
    """

    def __init__(self, latent_dim: int, df: Optional[float] = None, init_df: float = 5.0, min_df: float = 0.5):
        super().__init__()
        self.min_df = min_df
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))
        if df is None:
            self.raw_df = nn.Parameter(torch.full((latent_dim,), _inverse_softplus(init_df - min_df)))
        else:
            if not df > 0:
                raise InputError(f"Student-t degrees of freedom must be positive, got {df}")
            self.register_buffer("fixed_df", torch.full((latent_dim,), float(df)))

    @property
    def df(self) -> torch.Tensor:
        """The degrees of freedom, shape ``(latent_dim,)``."""
        if hasattr(self, "fixed_df"):
            return self.fixed_df
        return F.softplus(self.raw_df) + self.min_df

    def forward(self) -> dist.TorchDistribution:
        return dist.StudentT(self.df, self.loc, self.scale).to_event(1)


def check_prior(prior: nn.Module, latent_dim: int, name: str = "prior") -> None:
    """Check the structural part of the prior contract and raise a clear ``ValueError`` if it
    fails: ``prior`` is an ``nn.Module`` whose call returns a Pyro distribution with
    ``event_shape == (latent_dim,)`` and ``batch_shape == ()``, and ``log_prob`` of a batch of
    its own samples is finite with the batch's shape. (The numerical checks — normalization,
    moments, gradients — are the contract tests in ``tests/test_priors.py``.)

    :param prior: the module to check.
    :param latent_dim: the size of z it must cover.
    :param name: how to call it in error messages.
    """
    if not isinstance(prior, nn.Module):
        raise InputError(f"{name}: a prior must be a torch.nn.Module, got {type(prior).__name__}")
    d = prior()
    if not isinstance(d, TorchDistributionMixin):
        raise InputError(f"{name}: calling the prior must return a Pyro distribution (pyro.distributions.*), "
                         f"got {type(d).__module__}.{type(d).__name__}")
    if tuple(d.event_shape) != (latent_dim,) or tuple(d.batch_shape) != ():
        raise InputError(f"{name}: the prior's distribution must have event_shape ({latent_dim},) and batch_shape (), "
                         f"got event_shape {tuple(d.event_shape)} and batch_shape {tuple(d.batch_shape)} "
                         f"(use .to_event(1) on independent coordinates)")
    with torch.no_grad():
        lp = d.log_prob(d.sample((3,)))
    if lp.shape != (3,) or not bool(torch.isfinite(lp).all()):
        raise InputError(f"{name}: log_prob of 3 of the prior's own samples must be 3 finite numbers, got {lp}")


def _import_prior(latent_dim: int, target: str = "") -> nn.Module:
    """``module:pkg.mod:Factory``: import ``pkg.mod``, take its attribute ``Factory`` (nothing
    else is imported or evaluated) and call ``Factory(latent_dim)``."""
    spec = f"module:{target}"
    factory = import_target(target, "prior", "my_priors:LaplacePrior")
    prior = factory(latent_dim)
    check_prior(prior, latent_dim, name=f"prior {spec!r}")
    return prior


#: Spec table of :func:`make_prior`: name -> factory, optional ``:``-separated arguments.
PRIORS = {
    "standard": SpecEntry(StandardNormal, (), "standard", "N(0, I)"),
    "learned": SpecEntry(LearnedNormal, (), "learned", "Normal with learned mean and diagonal scale"),
    "mog": SpecEntry(MixtureOfGaussians, (("num_components", positive_int),), "mog[:K]",
                     "mixture of K diagonal Normals (default K=10)"),
    "vamp": SpecEntry(VampPrior, (("num_components", positive_int),), "vamp[:K]",
                      "VampPrior with K pseudo-inputs (default K=50)"),
    "flow": SpecEntry(FlowPrior, (("num_layers", positive_int), ("kind", str)), "flow[:L[:affine|spline]]",
                      "N(0, I) through L autoregressive flows (default 2, affine)"),
    "studentt": SpecEntry(StudentT, (("df", positive_float),), "studentt[:DF]",
                          "Student-t coordinates, learned degrees of freedom unless DF is given"),
    "module": SpecEntry(_import_prior, (("target", str),), "module:pkg.mod:Factory",
                        "your own prior: Factory(latent_dim) returns a module obeying the prior contract"),
}

#: Priors built from the guide (they receive ``guide=``).
_NEEDS_GUIDE = (VampPrior,)


def make_prior(spec: str, latent_dim: int, guide: Optional[nn.Module] = None, **kwargs) -> nn.Module:
    """Build a prior from a spec string (a row of :data:`PRIORS`).

    :param spec: ``standard``, ``learned``, ``mog[:K]``, ``vamp[:K]``, ``flow[:L[:affine|spline]]``,
        ``studentt[:DF]`` or ``module:pkg.mod:Factory``.
    :param latent_dim: size of z.
    :param guide: the VAE's guide family; needed by ``vamp`` only.
    :param kwargs: more keyword arguments of the prior's class (e.g. ``init_scale`` of
        :class:`MixtureOfGaussians`).
    :raises ValueError: naming the problem with the spec.
    """
    entry, parsed = parse_spec(spec, PRIORS, "prior")
    if entry.factory in _NEEDS_GUIDE:
        parsed["guide"] = guide
    return entry.factory(latent_dim, **parsed, **kwargs)


def sample_prior(prior: nn.Module, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``n`` draws ``(n, latent_dim)`` from ``prior()``; with ``generator`` (a CPU generator),
    reproducibly from its state (the global RNG is left as it was): the draws are made on the CPU,
    from a CPU copy of a prior that lives on another device, so they are the same on any device,
    and returned on the prior's device."""
    if generator is None:
        return prior().sample((n,))
    device = module_device(prior)
    on_cpu = prior if device.type == "cpu" else copy.deepcopy(prior).to("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(generator.get_state())
        return on_cpu().sample((n,)).to(device)
