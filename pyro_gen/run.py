"""The run directory: the unit a user keeps.

``config.json`` records what was trained (the :class:`~pyro_gen.vae.ModelSpec`), how
(:class:`~pyro_gen.train.TrainSettings`) and on which data; ``checkpoint.pt`` the parameters and
training state; ``metrics.jsonl`` one row per epoch. :func:`load_run` rebuilds the trained model
from the directory alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn

from . import __version__
from .checkpoint import CHECKPOINT, CONFIG, FORMAT_VERSION, METRICS, RunError, load_checkpoint, read_json, read_jsonl
from .data import Dataset, binarize_fixed, load_data
from .errors import InputError
from .vae import ModelSpec

__all__ = ["Run", "load_run", "read_config", "load_state", "run_data", "make_config", "split_tensor", "build_model",
           "conditions", "on_side_vectors", "CONDITION_SOURCES"]

#: What a conditional VAE run (``model_kind`` "cvae") is conditioned on, as ``config["data"]["condition"]``:
#: the data's labels (one-hot) or its side vectors (the "condition" array of a .npz file).
CONDITION_SOURCES = ("labels", "vectors")


@dataclass
class Run:
    """A loaded run of any family (:data:`pyro_gen.families.FAMILIES`, the GAN's included): its
    folder, configuration, model (in eval mode), training settings and history."""

    path: Path
    config: dict
    spec: ModelSpec
    settings: object  #: the family's settings: TrainSettings, or GANSettings for the GAN
    model: nn.Module
    history: list

    @property
    def family(self):
        """The run's :class:`~pyro_gen.families.Family`."""
        from .families import family_of
        return family_of(self.config)

    @property
    def vae(self) -> nn.Module:
        """The model (its name from when every run was a VAE; the same object as :attr:`model`)."""
        return self.model

    @property
    def gan(self) -> nn.Module:
        """The model of a GAN run (the same object as :attr:`model`)."""
        return self.model

    def load_data(self, spec: Optional[str] = None) -> Dataset:
        """The run's data set (or ``spec`` instead), validated for the run's likelihood and image shape."""
        return run_data(self.config, self.spec, spec)


def run_data(config: dict, spec: ModelSpec, data_spec: Optional[str] = None) -> Dataset:
    """The data set of a run's ``config`` (or ``data_spec`` instead), validated for the likelihood
    and image shape of the run's model ``spec``."""
    data = config["data"]
    ds = load_data(data_spec or data["spec"], likelihood=spec.likelihood, root=data.get("root"))
    if tuple(ds.image_shape) != tuple(spec.image_shape):
        raise RunError(f"{data_spec or data['spec']}: images of shape {ds.image_shape} do not fit this run, "
                       f"which was trained on {tuple(spec.image_shape)}")
    return ds


def make_config(spec: ModelSpec, settings, data_spec: str, data_root=None,
                model_kind: str = "vae", condition: Optional[str] = None, device=None) -> dict:
    """The content of ``config.json``; ``condition`` (one of :data:`CONDITION_SOURCES`) says what a
    conditional model is conditioned on, ``device`` where it trains (recorded when given)."""
    from dataclasses import asdict
    data = {"spec": data_spec, "root": None if data_root is None else str(data_root)}
    if condition is not None:
        if condition not in CONDITION_SOURCES:
            raise InputError(f"condition must be one of {', '.join(CONDITION_SOURCES)}, got {condition!r}")
        data["condition"] = condition
    config = {"format_version": FORMAT_VERSION, "pyro_gen_version": __version__, "model_kind": model_kind,
              "model": spec.to_dict(), "train": asdict(settings), "data": data}
    if device is not None:
        config["device"] = str(device)
    return config


def on_side_vectors(config: dict) -> bool:
    """Whether a run's configuration is of a cvae conditioned on side vectors (not on labels)."""
    return config.get("data", {}).get("condition") == "vectors"


def conditions(config: dict, ds: Dataset) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """``(train, test)``: what a conditional run (``model_kind`` "cvae") is given with each image
    of ``ds``, its labels or its side vectors (``config["data"]["condition"]``, labels when absent);
    ``(None, None)`` for any other run.

    :raises RunError: if ``ds`` has no such labels or side vectors, or they do not fit the model.
    """
    from .families import family_of
    if family_of(config).inputs != "condition":
        return None, None
    dim, name = config["model"]["condition_dim"], ds.name
    if on_side_vectors(config):
        if ds.side_dim is None:
            raise RunError(f"{name}: this run is conditioned on side vectors, and the data has none "
                           "(a .npz file needs a 'condition' array)")
        if ds.side_dim != dim:
            raise RunError(f"{name}: side vectors of size {ds.side_dim} do not fit this run, which is "
                           f"conditioned on side vectors of size {dim}")
        return ds.train_c, ds.test_c
    if ds.train_y is None or ds.test_y is None:
        raise RunError(f"{name}: this run is conditioned on labels, and the data has none "
                       "(a .npz file needs a 'labels' array)")
    if ds.num_classes > dim:
        raise RunError(f"{name}: labels up to {ds.num_classes - 1} do not fit this run, which has classes "
                       f"0 to {dim - 1}")
    return ds.train_y, ds.test_y


def build_model(spec: ModelSpec, config: dict):
    """The (untrained) model a run's configuration describes (its family's ``build``,
    :data:`pyro_gen.families.FAMILIES`)."""
    from .families import build_model as build
    return build(spec, config)


def read_config(run_dir) -> Tuple[Path, dict]:
    """The folder and ``config.json`` of a run directory, of this format version.

    :raises RunError: if the folder or its config is missing, malformed or of another version.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(f"{path}: no such run directory")
    config = read_json(path / CONFIG)
    if not isinstance(config, dict):
        raise RunError(f"{path / CONFIG}: not a valid pyro_gen run configuration")
    if config.get("format_version") != FORMAT_VERSION:
        raise RunError(f"{path / CONFIG}: run format version {config.get('format_version')} is not "
                       f"supported (expects {FORMAT_VERSION})")
    return path, config


def load_state(model, path: Path) -> None:
    """Load ``checkpoint.pt`` of the run folder ``path`` into ``model`` (its best parameters when early
    stopping kept them), or raise :class:`RunError` naming the mismatch."""
    state = load_checkpoint(path / CHECKPOINT)
    try:
        model.load_state_dict(state.get("best_model") or state["model"])
        if state.get("pyro_params"):  # a pair's own pyro.param parameters, created by one run on zeros
            from .params import load_store_state
            shape = tuple(read_json(path / CONFIG)["model"]["image_shape"])
            from .devices import module_device
            load_store_state(model, state["pyro_params"], torch.zeros((2,) + shape, device=module_device(model)))
    except (KeyError, RuntimeError) as e:
        raise RunError(f"{path / CHECKPOINT}: does not match {CONFIG} ({str(e).splitlines()[0]})") from None


def load_run(run_dir, require_checkpoint: bool = True, family: Optional[str] = None) -> Run:
    """Rebuild a trained model from a run directory.

    :param run_dir: a folder written by ``pyro-gen train`` (or :func:`pyro_gen.train.fit` plus a
        ``config.json`` from :func:`make_config`).
    :param require_checkpoint: with ``False``, a run stopped before its first checkpoint loads
        as its configuration with an untrained model (``history`` empty).
    :param family: the family the run must be of (e.g. ``"gan"``); ``None``: any.
    :raises RunError: if the folder, its config or its checkpoint is missing, corrupt or incompatible.
    """
    from .families import family_of
    path, config = read_config(run_dir)
    if family is not None:
        from .families import FAMILIES
        if family not in FAMILIES:
            raise InputError(f"unknown family {family!r}: expected one of {', '.join(FAMILIES)}")
        try:
            kind = family_of(config).name
        except InputError:
            kind = config.get("model_kind")
        if kind != family:
            raise RunError(f"{path / CONFIG}: a {kind} run, not a {family} run")
    try:
        spec = ModelSpec.from_dict(config["model"])
        settings = family_of(config).load_settings(config["train"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RunError(f"{path / CONFIG}: not a valid pyro_gen run configuration ({e})") from None
    vae = build_model(spec, config)
    if not require_checkpoint and not (path / CHECKPOINT).exists():
        return Run(path=path, config=config, spec=spec, settings=settings, model=vae, history=[])
    load_state(vae, path)
    vae.eval()
    return Run(path=path, config=config, spec=spec, settings=settings, model=vae,
               history=read_jsonl(path / METRICS))


def split_tensor(ds: Dataset, likelihood_binarizes: bool) -> Tuple[torch.Tensor, Optional[np.ndarray]]:
    """The test split as a tensor, binarized once with seed 0 for a Bernoulli likelihood (the
    protocol of BENCHMARKS.md), and its labels."""
    x = binarize_fixed(ds.test_x, seed=0) if likelihood_binarizes else ds.test_x
    return torch.as_tensor(x, dtype=torch.float32, device="cpu"), ds.test_y  # host memory; moved in chunks
