"""The model families: everything the command line and a run directory need to know about each
kind of model, in one place.

A family says how its model is built from a run's configuration, which guide it defaults to,
which data it needs besides the images (labels, side vectors), which training settings it
defaults to, and whether it has fast paths of its own or is evaluated and diagnosed through the
generic, trace-based paths (:mod:`pyro_gen.traces`, :mod:`pyro_gen.diagnostics.sites`). Adding a
family is one entry of :data:`FAMILIES` (and its model code).

``--model module:pkg.mod:Factory`` makes a user's own model/guide pair a family too: ``Factory``
is called with the keyword arguments it accepts among ``image_shape``, ``latent_dim``, ``hidden``
and ``likelihood`` (the ``--latent-dim``, ``--hidden`` and ``--likelihood`` flags), and must return an
``nn.Module`` with ``model(x)`` and ``guide(x)`` (the contract of :mod:`pyro_gen.traces`).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple, Union

from torch import nn

from ._spec import import_target
from .errors import InputError
from .gan import GANSettings
from .likelihoods import make_likelihood
from .traces import is_pair
from .train import TrainSettings
from .vae import ModelSpec

__all__ = ["Family", "FAMILIES", "family_of", "parse_model", "build_model", "binarizes", "MODULE_PREFIX"]

MODULE_PREFIX = "module:"


@dataclass(frozen=True)
class Family:
    """One kind of model.

    :param name: the ``--model`` value (``model_kind`` in ``config.json``).
    :param help: one line for ``--help``.
    :param title: what the report calls it.
    :param build: ``build(spec, config) -> nn.Module``, the untrained model of a run.
    :param guide: the guide spec it defaults to (``None``: the family has no ``--guide``).
    :param inputs: what it needs besides images: ``""``, ``"condition"`` (labels or side
        vectors) or ``"semi"`` (labels, most of them hidden).
    :param generic: evaluated and diagnosed through the trace-based paths only.
    :param train_defaults: training settings it needs other than :class:`~pyro_gen.train.TrainSettings`'s
        defaults (e.g. the ``trace`` ELBO for a hierarchy, whose guide is not mean-field), or a
        function of the settings given (a dict) that returns them (:meth:`defaults_for`).
    :param refuses: model settings (``ModelSpec`` fields) the family does not take, because its
        model defines them itself; the command line refuses their flags in one line.
    :param settings: how it trains: :class:`~pyro_gen.train.TrainSettings` (SVI on its model/guide
        pair) or :class:`~pyro_gen.gan.GANSettings` (the adversarial step); both run in the
        engine's one epoch loop (:func:`pyro_gen.train.train_epochs`).
    :param density: it has a likelihood and a guide, so that ``evaluate`` (test ELBO, NLL) and
        ``diagnose`` apply; ``False`` for the GAN, which is compared on its samples only.
    :param older: settings that runs written by older versions lack, with the value they had then.
    """

    name: str
    help: str
    title: str
    build: Callable[[ModelSpec, dict], nn.Module]
    guide: Optional[str] = "diagonal"
    inputs: str = ""
    generic: bool = False
    train_defaults: Union[Dict[str, object], Callable[[dict], Dict[str, object]]] = field(default_factory=dict)
    refuses: Tuple[str, ...] = ()
    settings: type = TrainSettings
    density: bool = True
    older: Dict[str, object] = field(default_factory=dict)

    def defaults_for(self, given: dict) -> Dict[str, object]:
        """The family's training defaults when the settings ``given`` are given (they win)."""
        defaults = self.train_defaults(given) if callable(self.train_defaults) else self.train_defaults
        return {**defaults, **given}

    def load_settings(self, train: dict):
        """The training settings stored in a run's ``config["train"]``."""
        return self.settings(**{**self.older, **train})


def _build_vae(spec: ModelSpec, config: dict) -> nn.Module:
    return spec.build()


def _build_ssvae(spec: ModelSpec, config: dict) -> nn.Module:
    from .ssvae import build_ssvae
    options = config["ssvae"]
    return build_ssvae(spec, aux_weight=options["aux_weight"], labelled_weight=options["labelled_weight"],
                       aux_dim=options.get("aux_dim", 0), augment=options.get("augment", False))


def _build_hvae(spec: ModelSpec, config: dict) -> nn.Module:
    from .hvae import HVAE
    return HVAE(spec.image_shape, latent_dims=(2 * spec.latent_dim, spec.latent_dim), hidden=spec.hidden,
                likelihood=spec.likelihood, prior=spec.prior)


def _build_gan(spec: ModelSpec, config: dict) -> nn.Module:
    from .gan import build_gan
    return build_gan(spec, family_of(config).load_settings(config["train"]))


def _hvae_defaults(given: dict) -> Dict[str, object]:
    """The trace ELBO (the bottom-up guide is not mean-field) and a KL warm-up of 10 epochs (at most
    half the run): without it the top layer stays unused (KL of z2 about 2 nats) and the hierarchy
    is no better than one layer (benchmarks/hvae_vs_vae.py)."""
    epochs = int(given.get("epochs", TrainSettings.epochs))
    return {"elbo": "trace", "warmup_epochs": min(10, epochs // 2)}


def _build_module(spec: ModelSpec, config: dict) -> nn.Module:
    target = config["module"]
    factory = import_target(target, "model", "my_models:MyVAE")
    offered = {"image_shape": tuple(spec.image_shape), "latent_dim": spec.latent_dim, "hidden": tuple(spec.hidden),
               "likelihood": spec.likelihood}
    try:
        params = inspect.signature(factory).parameters
        takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in offered.items() if takes_all or k in params}
    except (TypeError, ValueError):
        kwargs = {}
    pair = factory(**kwargs)
    if not isinstance(pair, nn.Module) or not is_pair(pair):
        raise InputError(f"model 'module:{target}': {target} returned a {type(pair).__name__}; it must return a "
                         f"torch.nn.Module with model(x) and guide(x) methods written in Pyro")
    return pair


#: Every family, by ``--model`` name (``module`` stands for ``module:pkg.mod:Factory``).
FAMILIES: Dict[str, Family] = {f.name: f for f in [
    Family("vae", "the VAE (default)", "variational autoencoder (VAE)", _build_vae),
    Family("ae", "the deterministic autoencoder (the delta guide)", "deterministic autoencoder (point-mass guide)",
           _build_vae, guide="delta"),
    Family("cvae", "conditioned on the labels, or on the side vectors of a .npz file's 'condition' array",
           "conditional VAE", _build_vae, inputs="condition"),
    Family("ssvae", "semi-supervised M2, with --labels-per-class", "semi-supervised VAE (M2)", _build_ssvae,
           inputs="semi", train_defaults={"elbo": "enum"}),
    Family("hvae", "hierarchical VAE with two stochastic layers, z1 of 2 x --latent-dim and z2 of --latent-dim "
                   "units (Burda et al. 2015's shape; bottom-up inference; 10 epochs of KL warm-up by default; "
                   "--prior applies to z2)",
           "hierarchical VAE", _build_hvae, guide=None, generic=True, train_defaults=_hvae_defaults,
           refuses=("guide", "net", "activation")),
    # runs written before the moving average and spectral normalization existed had neither
    Family("gan", "the decoder network trained as a GAN generator, on grey-level images (see --gan-loss)",
           "GAN (the decoder network as its generator)", _build_gan, guide=None, settings=GANSettings, density=False,
           older={"ema": 0.0, "spectral_norm": False}),
    Family("module", "your own Pyro model/guide pair, built by Factory (docs/own_model.rst)",
           "your own model/guide pair", _build_module,
           guide=None, generic=True, train_defaults={"elbo": "trace"}, refuses=("guide", "prior", "net", "activation")),
]}


def parse_model(text: str) -> Tuple[str, Optional[str]]:
    """``--model`` -> ``(family name, module target or None)``.

    :raises InputError: for an unknown name or a malformed ``module:`` spec.
    """
    if text.startswith(MODULE_PREFIX):
        target = text[len(MODULE_PREFIX):]
        if ":" not in target:
            raise InputError(f"--model {text}: expected module:pkg.mod:Factory, e.g. module:my_models:MyVAE")
        return "module", target
    if text not in FAMILIES or text == "module":
        raise InputError(f"unknown model {text!r}: expected one of {', '.join(n for n in FAMILIES if n != 'module')}, "
                         f"or module:pkg.mod:Factory")
    return text, None


def family_of(config: dict) -> Family:
    """The family of a run's configuration (``model_kind``)."""
    kind = config.get("model_kind", "vae")
    if kind not in FAMILIES:
        raise InputError(f"unknown model kind {kind!r} in the run's configuration")
    return FAMILIES[kind]


def build_model(spec: ModelSpec, config: dict) -> nn.Module:
    """The (untrained) model a run's configuration describes."""
    return family_of(config).build(spec, config)


def binarizes(spec: ModelSpec) -> bool:
    """Whether the data of a run are binarized (a Bernoulli likelihood: dynamically in training,
    once with seed 0 for the test split)."""
    return bool(make_likelihood(spec.likelihood).binarize)
