"""The model families: everything the command line and a run directory need to know about each
kind of model, in one place.

A family says how its model is built from a run's configuration, which guide it defaults to,
which data it needs besides the images (labels, side vectors), its own command-line flags and
the settings it does not take, which training settings it defaults to, and whether it has fast
paths of its own or is evaluated and diagnosed through the generic, trace-based paths
(:mod:`pyro_gen.traces`, :mod:`pyro_gen.diagnostics.sites`). Adding a family is one entry of
:data:`FAMILIES` (and its model code); ``pyro-gen train`` adds the families' flags to its parser
and refuses a family's flags given for another family, in one line.

``--model module:pkg.mod:Factory`` makes a user's own model/guide pair a family too: ``Factory``
is called with the keyword arguments it accepts among ``image_shape``, ``latent_dim``, ``hidden``
and ``likelihood`` (the ``--latent-dim``, ``--hidden`` and ``--likelihood`` flags), and must return an
``nn.Module`` with ``model(x)`` and ``guide(x)`` (the contract of :mod:`pyro_gen.traces`).
"""
from __future__ import annotations

import argparse
import inspect
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

from torch import nn

from ._flags import Flag, fraction, nonnegative_float, nonnegative_int, positive_float, positive_int
from ._spec import import_target
from .errors import InputError
from .gan import GANSettings
from .likelihoods import make_likelihood
from .nets import NETWORKS
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
    :param refuses: model or training settings (``ModelSpec``, ``TrainSettings`` fields) the family
        does not take (a training default of the family is accepted when given its own value, e.g.
        ``--elbo enum`` of the ssvae); the command line refuses their flags in one line.
    :param refusal: why, the end of that line.
    :param flags: its own command-line flags (:class:`~pyro_gen._flags.Flag`); each sets the field
        of ``settings`` named by its key, or, for a family with ``configure``, an option passed to it.
    :param configure: ``configure(options, data, seed) -> dict``: the section (``config[name]``) the
        family adds to a new run's ``config.json`` from its flags' values ``options`` (those given)
        and the data set.
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
    refusal: str = ""
    flags: Tuple[Flag, ...] = ()
    configure: Optional[Callable[[dict, object, int], dict]] = None
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

    def refused(self, given: dict) -> List[str]:
        """The settings among ``given`` (``{field: value}``) the family does not take."""
        fixed = {} if callable(self.train_defaults) else self.train_defaults
        return [k for k in self.refuses if k in given and (k not in fixed or given[k] != fixed[k])]

    def options(self, args: argparse.Namespace) -> Dict[str, object]:
        """``{key: value}`` of the family's own flags given on the command line ``args``."""
        return {f.key: f.value(args) for f in self.flags if f.value(args) is not None}


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


def _configure_ssvae(options: dict, ds, seed: int) -> dict:
    """The config's ``"ssvae"`` section: the labelled subset (fewer labels than asked: one line) and
    the flags' ``options``."""
    from .ssvae import semi_supervised_data
    semi = semi_supervised_data(ds.train_x, ds.train_y, options["labels_per_class"], seed=seed,
                                repeat=options.get("repeat"))
    return {"labels_per_class": options["labels_per_class"], "num_labelled": semi.num_labelled, "repeat": semi.repeat,
            "aux_weight": options.get("aux_weight", semi.aux_weight), "labelled_weight": semi.labelled_weight,
            "augment": bool(options.get("augment", True)), "aux_dim": int(options.get("aux_dim", 0))}


_SSVAE_FLAGS = (
    Flag("--labels-per-class", "labels_per_class", "labelled training images kept per class (chosen with --seed)",
         required=True, kwargs=dict(type=positive_int, metavar="N")),
    Flag("--aux-weight", "aux_weight", "weight of the classification term log q(y|x) per labelled image (default "
         "10 N / N_labelled; Kingma et al. used 0.1 N / N_labelled)", kwargs=dict(type=nonnegative_float, metavar="W")),
    Flag("--labelled-repeat", "repeat", "copies of each labelled image per epoch, weighted 1/R so the objective is "
         "unchanged (default: half of the data)", kwargs=dict(type=positive_int, metavar="R")),
    Flag("--augment", "augment", "train the classification term on randomly rotated, scaled and shifted labelled "
         "images (default: on)", kwargs=dict(action=argparse.BooleanOptionalAction)),
    Flag("--aux-dim", "aux_dim", "size of the auxiliary latent a of the ADGM (Maaloe et al. 2016); 0: plain M2 "
         "(default)", kwargs=dict(type=nonnegative_int, metavar="N")),
)

_GAN_FLAGS = (
    Flag("--gan-loss", "loss", "ns (non-saturating, default) or wgan-gp (Wasserstein with gradient penalty); --lr is "
         "then the generator's learning rate (default 2e-4)", kwargs=dict(choices=["ns", "wgan-gp"])),
    Flag("--d-lr", "d_lr", "the discriminator's learning rate (default: as the generator's)",
         kwargs=dict(type=positive_float)),
    Flag("--disc-net", "disc_net", "the discriminator's network (default: as --net; the generator is always the "
         "--net decoder)", kwargs=dict(choices=list(NETWORKS))),
    Flag("--spectral-norm", "spectral_norm", "spectral normalization of the discriminator (default: on for ns, off "
         "for wgan-gp)", kwargs=dict(action=argparse.BooleanOptionalAction)),
    Flag("--ema", "ema", "decay of the moving average of the generator's weights that samples come from (default "
         "0.999; 0: none)", kwargs=dict(type=fraction, metavar="DECAY")),
)

#: What a family whose model defines its own networks and guide refuses.
_OWN_NETWORKS = ("guide", "net", "activation")


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
           inputs="semi", train_defaults={"elbo": "enum", "objective": "elbo", "free_bits": 0.0}, flags=_SSVAE_FLAGS,
           configure=_configure_ssvae,
           refuses=("elbo", "objective", "free_bits", "patience"),
           refusal="M2 trains on its ELBO summed over the classes exactly (--elbo enum, its default), on every "
                   "training image (a held-out split would take labelled images away)"),
    Family("hvae", "hierarchical VAE with two stochastic layers, z1 of 2 x --latent-dim and z2 of --latent-dim "
                   "units (Burda et al. 2015's shape; bottom-up inference; 10 epochs of KL warm-up by default; "
                   "--prior applies to z2)",
           "hierarchical VAE", _build_hvae, guide=None, generic=True, train_defaults=_hvae_defaults,
           refuses=_OWN_NETWORKS, refusal="its model defines its own MLPs and guide"),
    # runs written before the moving average and spectral normalization existed had neither
    Family("gan", "the decoder network trained as a GAN generator, on grey-level images (see --gan-loss)",
           "GAN (the decoder network as its generator)", _build_gan, guide=None, settings=GANSettings, density=False,
           older={"ema": 0.0, "spectral_norm": False}, flags=_GAN_FLAGS,
           refuses=("prior", "guide", "elbo", "optimizer", "lr_schedule", "patience", "objective", "beta",
                    "warmup_epochs", "kl_schedule", "free_bits", "weight_decay"),
           refusal="these configure the VAE's likelihood training"),
    Family("module", "your own Pyro model/guide pair, built by Factory (docs/own_model.rst)",
           "your own model/guide pair", _build_module, guide=None, generic=True, train_defaults={"elbo": "trace"},
           refuses=_OWN_NETWORKS + ("prior",), refusal="its model defines its own networks, guide and prior"),
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
