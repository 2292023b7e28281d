"""The training engine: any model/guide pair trained by stochastic variational inference.

:func:`fit` minimizes the negative objective (the ELBO, or the IWAE / Rényi bounds) of a Pyro
model/guide pair -- a built-in family or a user's own pair (:mod:`pyro_gen.traces`) -- by
minibatch gradient descent: each step computes ``elbo.differentiable_loss`` of the pair under the
engine's effect handlers (data-set scale, β; :mod:`pyro_gen.handlers`, via
:func:`pyro_gen.objectives.training_loss`) and takes one step of a torch optimizer over the pair's
parameters (module parameters and ``pyro.param`` ones, :mod:`pyro_gen.params`). This is Pyro's
``ELBOModule`` way of running SVI: the same estimator as ``pyro.infer.SVI``, which keeps the step
as fast as a hand-written PyTorch step and makes checkpoints plain state dicts.

Each epoch appends a row to ``metrics.jsonl`` and writes ``checkpoint.pt`` atomically, so a run
that is killed can be resumed (``resume=True``) from its last complete epoch, bit-exactly.

Every model trains in one epoch loop, :func:`train_epochs` (minibatches, the device, binarization,
progress, metrics, the non-finite guard, checkpoints, resume, torchrun); what a minibatch does is
its *step*: :class:`SVIStep` for a model/guide pair (``fit``), the adversarial step of
:class:`pyro_gen.gan.AdversarialStep` for the GAN (``pyro_gen.gan.fit_gan``).
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import pyro
import torch
from torch.utils.data import DistributedSampler
from ._progress import progress_bar

from .checkpoint import (CHECKPOINT, METRICS, RunError, load_checkpoint, resume_history,
                         save_checkpoint, write_jsonl)
from .data import binarize as binarize_batch
from .objectives import KLSchedule, make_elbo, make_objective, training_loss
from . import distributed
from .devices import flush_denormals, module_device
from .params import load_store_state, materialize, pair_parameters, store_parameters, store_state
from .errors import InputError

__all__ = ["TrainSettings", "FitResult", "fit", "train_epochs", "SVIStep", "TrainingError", "make_optimizer",
           "check_free_bits"]


class TrainingError(RuntimeError):
    """Training could not go on (e.g. a non-finite loss); the last good checkpoint is kept."""


@dataclass
class TrainSettings:
    """How to train; stored in ``config.json`` under ``"train"``.

    :param epochs: passes over the training data.
    :param batch_size: minibatch size.
    :param lr: peak learning rate.
    :param elbo: ``"trace"`` or ``"meanfield"`` (see :mod:`pyro_gen.objectives`).
    :param num_particles: Monte Carlo particles per datum.
    :param optimizer: ``"adam"`` or ``"clippedadam"`` (Adam with gradient-norm clipping at ``clip_norm``).
    :param lr_schedule: ``"constant"`` or ``"cosine"`` (cosine decay to ``lr / 20`` over the epochs).
    :param seed: seeds parameters, minibatch order, binarization and the ELBO's draws.
    :param patience: stop when the validation ELBO has not improved for this many epochs
        (``None``: train all epochs); the best parameters are kept.
    :param val_fraction: share of the training data held out for validation when
        ``patience`` is set.
    :param clip_norm: gradient-norm bound for ``clippedadam``.
    :param objective: ``"elbo"``, ``"iwae:K"`` or ``"renyi:ALPHA:K"``
        (:func:`pyro_gen.objectives.make_objective`).
    :param beta: weight of the KL term after warm-up (β-VAE; 1 for the ELBO).
    :param warmup_epochs: length of the KL ramp in epochs (0: none).
    :param kl_schedule: ``"linear"`` or ``"cyclical"`` (:class:`pyro_gen.objectives.KLSchedule`).
    :param free_bits: λ of free bits, nats per latent dimension (0: none; see
        :mod:`pyro_gen.objectives`); for the ELBO objective with one particle.
    :param weight_decay: decoupled weight decay (AdamW, Loshchilov & Hutter 2019): each step
        multiplies every parameter by ``1 - lr * weight_decay`` before Adam's
        update (0: none).
    """

    epochs: int = 100
    batch_size: int = 128
    lr: float = 3e-3
    elbo: str = "meanfield"
    num_particles: int = 1
    optimizer: str = "adam"
    lr_schedule: str = "cosine"
    seed: int = 0
    patience: Optional[int] = None
    val_fraction: float = 0.1
    clip_norm: float = 10.0
    objective: str = "elbo"
    beta: float = 1.0
    warmup_epochs: int = 0
    kl_schedule: str = "linear"
    free_bits: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self):
        for name in ("epochs", "batch_size", "num_particles"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be a positive number, got {self.lr}")
        if self.optimizer not in ("adam", "clippedadam"):
            raise InputError(f"unknown optimizer {self.optimizer!r}: expected adam or clippedadam")
        if self.lr_schedule not in ("constant", "cosine"):
            raise InputError(f"unknown lr schedule {self.lr_schedule!r}: expected constant or cosine")
        if self.patience is not None and self.patience < 1:
            raise InputError(f"patience must be a positive integer, got {self.patience}")
        if not 0 < self.val_fraction < 1:
            raise InputError(f"val-fraction must be in (0, 1), got {self.val_fraction}")
        make_elbo(self.elbo)  # validates the name
        make_objective(self.objective, self.elbo, self.num_particles)
        if int(self.warmup_epochs) != self.warmup_epochs or self.warmup_epochs < 0:
            raise InputError(f"warmup-epochs must be a non-negative integer, got {self.warmup_epochs}")
        KLSchedule(self.beta, 0, self.kl_schedule)  # validates beta and the schedule's name
        if not (self.free_bits >= 0 and math.isfinite(self.free_bits)):
            raise InputError(f"free-bits must be a non-negative number of nats, got {self.free_bits}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise InputError(f"weight-decay must be a non-negative number, got {self.weight_decay}")
        if self.free_bits and (self.objective != "elbo" or self.elbo == "enum" or self.num_particles != 1):
            raise InputError("free-bits needs the ELBO objective with one particle (not --objective iwae/renyi, "
                             "--elbo enum or --num-particles > 1)")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    :param history: one dict per epoch (the rows of ``metrics.jsonl``).
    :param checkpoint_path: the final checkpoint, or ``None`` without a run directory.
    :param stopped_early: whether early stopping ended training.
    """

    history: List[dict] = field(default_factory=list)
    checkpoint_path: Optional[Path] = None
    stopped_early: bool = False


class LossModule(torch.nn.Module):
    """``forward(x, *args, beta=)`` is :func:`~pyro_gen.objectives.training_loss` of the pair
    (like Pyro's ``ELBOModule``), so that ``DistributedDataParallel`` can wrap the loss computation.

    :param elbo: the objective.
    :param pair: the model/guide pair (an ``nn.Module``, so that its parameters are the module's).
    :param num_data: the data-set size N.
    :param free_bits: λ of free bits.
    """

    def __init__(self, elbo, pair, num_data: int, free_bits: float = 0.0):
        super().__init__()
        self.elbo, self.pair, self.num_data, self.free_bits = elbo, pair, num_data, free_bits

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, beta: float = 1.0) -> torch.Tensor:
        args = () if y is None else (y,)
        return training_loss(self.elbo, self.pair, x, *args, num_data=self.num_data, beta=beta,
                             free_bits=self.free_bits)


def adam(params, lr: float, betas=(0.9, 0.999), cls=torch.optim.Adam, **kwargs) -> torch.optim.Optimizer:
    """Adam (or its subclass ``cls``), fused into one kernel where torch supports it on the device
    (the engine's and the GAN's optimizer)."""
    params = list(params)
    try:
        return cls(params, lr=lr, betas=betas, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # fused Adam not available for this device/dtype
        return cls(params, lr=lr, betas=betas, **kwargs)


class ClippedAdam(torch.optim.Adam):
    """Adam whose ``step`` first scales the gradients of all its parameters together to a global
    norm of at most ``clip_norm`` (:func:`torch.nn.utils.clip_grad_norm_`); its state dict is
    Adam's. (Pyro's ``ClippedAdam`` clips each parameter's gradient on its own instead.)"""

    def __init__(self, params, clip_norm: float = 10.0, **kwargs):
        super().__init__(params, **kwargs)
        self.clip_norm = float(clip_norm)

    def step(self, closure=None):
        torch.nn.utils.clip_grad_norm_([p for group in self.param_groups for p in group["params"]], self.clip_norm)
        return super().step(closure)


def make_optimizer(params, settings: TrainSettings) -> torch.optim.Optimizer:
    """The engine's optimizer of ``settings.optimizer`` at ``settings.lr``: :func:`adam`, or
    :class:`ClippedAdam` with ``settings.clip_norm`` for ``clippedadam``; with
    ``settings.weight_decay`` decoupled from the gradient (AdamW)."""
    decay = dict(weight_decay=settings.weight_decay, decoupled_weight_decay=True) if settings.weight_decay else {}
    if settings.optimizer == "clippedadam":
        return adam(params, settings.lr, cls=ClippedAdam, clip_norm=settings.clip_norm, **decay)
    return adam(params, settings.lr, **decay)


def cosine_factor(step: int, total: int) -> float:
    """The cosine learning-rate shape: 1 at step 0, decaying to 1/20 at ``total`` (and after)."""
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _set_peak_lr(opt, sched, lr: float) -> None:
    """After a resume with another ``--lr``: the schedule goes on from its step with the new peak
    learning rate (nothing changes when the peak is the same, so resume stays bit-exact)."""
    if all(base == lr for base in sched.base_lrs):
        return
    sched.base_lrs = [lr for _ in opt.param_groups]
    factor = sched.lr_lambdas[0](sched.last_epoch)
    for group in opt.param_groups:
        group["lr"] = lr * factor
    sched._last_lr = [group["lr"] for group in opt.param_groups]


def _make_schedule(opt, settings: TrainSettings, steps_per_epoch: int):
    total = settings.epochs * steps_per_epoch
    if settings.lr_schedule == "cosine":
        def factor(step):
            return cosine_factor(step, total)
    else:
        def factor(step):
            return 1.0
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def split_validation(x: np.ndarray, fraction: float, seed: int):
    """Hold out ``fraction`` of ``x`` (chosen by ``seed``) for validation: ``(train, val)``."""
    idx = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(fraction * len(x))))
    return x[np.sort(idx[n_val:])], x[np.sort(idx[:n_val])]


@torch.no_grad()
def mean_elbo(pair, elbo, x: torch.Tensor, y: Optional[torch.Tensor] = None, batch_size: int = 1000) -> float:
    """The single-sample ELBO per datum of ``x`` (and labels ``y``) under ``elbo``'s estimator: the
    plain pair, unscaled (β = 1, no free bits)."""
    total = 0.0
    for start in range(0, len(x), batch_size):
        batch = (x[start:start + batch_size],) + (() if y is None else (y[start:start + batch_size],))
        total -= float(elbo.loss(pair.model, pair.guide, *batch))
    return total / len(x)


@torch.no_grad()
def check_free_bits(pair, x: torch.Tensor, y: Optional[torch.Tensor]) -> None:
    """Raise :class:`~pyro_gen.errors.InputError` if free bits cannot apply to ``pair``: every
    latent site's guide and prior must factorize over its last dimension. Tries the pair on one
    datum ``x`` (labels ``y``)."""
    from .traces import inspect_pair
    sites = inspect_pair(pair, x, *(() if y is None else (y,)))
    other = [name for name in sites.latent if name not in sites.factorized]
    if other:
        raise InputError(f"free-bits cannot be used with this model: the KL per latent dimension needs a guide and a "
                         f"prior that factorize over the dimensions (a diagonal guide; the standard, learned or "
                         f"studentt prior), and site {other[0]!r} does not")


class SVIStep:
    """The engine's step for a model/guide pair (:func:`fit`): one optimizer step on the training
    objective under the engine's handlers; at each epoch's end the ELBO on the training probe and
    the validation data, the per-epoch diagnostics and early stopping.

    A step of :func:`train_epochs` has: ``setup(model, x_all, y_all, steps_per_epoch, world)``
    (once, before resuming); ``start_epoch(epoch)``; ``__call__(x, y, epoch, step, first)`` (one
    minibatch on the device; returns a loss value, non-finite in every process when the step
    could not be taken); ``shown(value)`` (the progress bar's entries); ``end_epoch(epoch, say)``
    (the entries of the epoch's row); ``state_dict()`` / ``load_state_dict(state)`` (what a
    checkpoint keeps besides the model); ``advice(run_dir)`` (what to do after a non-finite loss);
    ``stop`` (end training after this epoch) and ``finish()``. The GAN's adversarial step
    (:class:`pyro_gen.gan.AdversarialStep`) is the other one.
    """

    def __init__(self, settings: TrainSettings, *, val_x=None, val_y=None, binarize: bool = False,
                 epoch_metrics: Optional[Callable[..., dict]] = None):
        self.settings, self.binarize, self.epoch_metrics = settings, binarize, epoch_metrics
        self.val_x, self.val_y = val_x, val_y
        self.stop, self.best, self.best_state, self.bad_epochs = False, -math.inf, None, 0

    def setup(self, pair, x_all: torch.Tensor, y_all: Optional[torch.Tensor], steps_per_epoch: int, world: int):
        settings = self.settings
        self.pair, self.x_all, self.y_all, self.world = pair, x_all, y_all, world
        self.device = device = module_device(pair)
        self.x_val = None if self.val_x is None else torch.as_tensor(self.val_x, dtype=torch.float32, device=device)
        self.y_val = _labels(self.val_y, device)
        self.latent_labels = getattr(pair, "labels_are_latent", False)
        self.x_probe = self.y_probe = None  # training images on which the ELBO is reported when it is not the objective
        self.steps_per_epoch, self.n = steps_per_epoch, len(x_all)
        elbo = make_objective(settings.objective, settings.elbo, settings.num_particles)
        self.eval_elbo = make_elbo("enum" if settings.elbo == "enum" else "trace")
        self.kl_schedule = KLSchedule(settings.beta, settings.warmup_epochs * steps_per_epoch, settings.kl_schedule,
                                      total_steps=settings.epochs * steps_per_epoch)
        head = (x_all[:2].to(device),) + (() if y_all is None else (y_all[:2].to(device),))
        if settings.free_bits:
            check_free_bits(pair, head[0][:1], None if y_all is None else head[1][:1])
        # the parameters exist before DDP and the optimizer are built (lazy pyro.param ones too); DDP averages gradients
        materialize(pair, *head)
        self.head = head
        if world > 1 and store_parameters(pair):
            raise InputError(f"{type(pair).__name__} keeps parameters in Pyro's param store (pyro.param), which "
                             "DistributedDataParallel does not synchronize: train it in one process, or make them "
                             "module parameters (nn.Parameter, PyroModule's PyroParam)")
        # each process scales its share of the global batch to the data set
        self.loss_fn = distributed.wrap(LossModule(elbo, pair, self.n, settings.free_bits), world)
        self.opt = make_optimizer(pair_parameters(pair), settings)
        self.sched = _make_schedule(self.opt, settings, steps_per_epoch)
        self.total, self.beta = 0.0, 1.0

    def start_epoch(self, epoch: int) -> None:
        s = self.settings
        self.total, self.exact = 0.0, s.objective == "elbo" and not s.free_bits and not self.latent_labels

    def __call__(self, x: torch.Tensor, y: Optional[torch.Tensor], epoch: int, step: int, first: bool) -> float:
        self.beta = beta = self.kl_schedule(epoch * self.steps_per_epoch + step)
        self.exact = self.exact and beta == 1.0
        self.opt.zero_grad(set_to_none=True)
        # Validate shapes and supports on the first step, then run without checks.
        with pyro.validation_enabled(first):
            loss = self.loss_fn(x, y, beta)
            loss.backward()
        value = loss.item()
        if not distributed.all_finite(value, self.world):  # in any process: no process steps
            return value if not math.isfinite(value) else math.nan  # the engine reports it
        self.opt.step()
        self.sched.step()
        self.total += value * len(x)
        return value

    def shown(self, value: float) -> dict:
        """The progress bar's entry for a step's value."""
        return {"elbo" if self.exact else "objective": f"{-value:.2f}"}

    def advice(self, run_dir) -> str:
        s = self.settings
        return ("resume with a lower lr (fit(..., resume=True) and TrainSettings(lr=...))" if run_dir is None
                else f"continue with a lower --lr: pyro-gen train --out {run_dir} --resume --lr {s.lr / 10:.3g}")

    def end_epoch(self, epoch: int, say: bool) -> dict:
        pair, device = self.pair, self.device
        objective = -distributed.total(self.total, self.world) / self.n
        row = {"train_elbo": objective, "train_objective": objective, "kl_scale": self.beta,
               "lr": self.opt.param_groups[0]["lr"]}
        pair.eval()  # the epoch's measurements, in eval mode
        if not self.exact:
            if self.x_probe is None:
                x_probe, y_probe = _probe(self.x_all, None if self.latent_labels else self.y_all, self.binarize,
                                          self.settings.seed)
                self.x_probe = x_probe.to(device)
                self.y_probe = None if y_probe is None else y_probe.to(device)
            row["train_elbo"] = mean_elbo(pair, self.eval_elbo, self.x_probe, self.y_probe)
        if self.x_val is not None:
            row["val_elbo"] = mean_elbo(pair, self.eval_elbo, self.x_val, self.y_val)
        if self.epoch_metrics is not None:
            row.update(_epoch_extras(self.epoch_metrics, pair, self.x_val, epoch + 1, say))
        pair.train()
        watched = row.get("val_elbo", row["train_elbo"])
        if watched > self.best:
            self.best, self.bad_epochs = watched, 0
            if self.settings.patience is not None:
                self.best_state = {k: v.detach().clone() for k, v in pair.state_dict().items()}
        else:
            self.bad_epochs += 1
        self.stop = distributed.agree(self.settings.patience is not None and self.bad_epochs >= self.settings.patience,
                                      self.world)
        return row

    def state_dict(self) -> dict:
        state = {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "best": self.best,
                 "bad_epochs": self.bad_epochs}
        if self.best_state is not None:
            state["best_model"] = self.best_state
        pyro_params = store_state(self.pair)
        if pyro_params:
            state["pyro_params"] = pyro_params
        return state

    def load_state_dict(self, state: dict) -> None:
        load_store_state(self.pair, state.get("pyro_params", {}), *self.head)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        _set_peak_lr(self.opt, self.sched, self.settings.lr)
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]
        self.best_state = state.get("best_model")

    def finish(self) -> None:
        if self.best_state is not None:
            self.pair.load_state_dict(self.best_state)


def train_epochs(model: torch.nn.Module, step, train_x: np.ndarray, *, epochs: int, batch_size: int, seed: int,
                 train_y: Optional[np.ndarray] = None, binarize: bool = False, run_dir=None, resume: bool = False,
                 progress: bool = True, on_epoch: Optional[Callable[[dict], None]] = None) -> FitResult:
    """The epoch loop every model trains in: minibatches (split between processes under
    torchrun), binarization, the device, the progress bar, ``metrics.jsonl``, the non-finite
    guard, atomic checkpoints and bit-exact resume; what one minibatch does is ``step``'s
    (:class:`SVIStep` for a model/guide pair, :class:`pyro_gen.gan.AdversarialStep` for the GAN).

    :param model: the module trained (its ``state_dict`` is checkpointed; it runs where its
        parameters are, :func:`~pyro_gen.devices.module_device`).
    :param step: the step (see :class:`SVIStep`).
    :param train_x: training data, kept in host memory; each minibatch moves to the device once (a
        batch gathered by indexing is a fresh tensor, so pinning the data set would not speed the copy).
    :param epochs: passes over the data; ``batch_size``: the global minibatch size; ``seed``: the
        minibatch order, the binarization noise and torch's global generator.
    :returns: a :class:`FitResult`.
    """
    rank, world = distributed.rank_world()
    torch.manual_seed(seed + rank)  # the draws of z differ between processes
    if batch_size % world:
        raise InputError(f"batch-size {batch_size} must be divisible by the number of processes ({world})")
    local_batch = batch_size // world
    device = module_device(model)  # the model runs where its parameters are; data stay in host memory
    x_all = torch.as_tensor(train_x, dtype=torch.float32, device="cpu")
    y_all = _labels(train_y)
    n = len(x_all)
    # One shuffled order per epoch, the same in every process (seed + epoch); process r takes
    # every world-th index, so the processes' batches together are the single-process batch.
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    steps_per_epoch = math.ceil(len(sampler) / local_batch)
    step.setup(model, x_all, y_all, steps_per_epoch, world)
    gen = torch.Generator().manual_seed(seed + 7919 * rank)  # binarization noise
    progress = progress and rank == 0
    run_dir = None if run_dir is None else Path(run_dir)
    write_dir = run_dir if rank == 0 else None  # only the first process writes files
    history: List[dict] = []
    start_epoch = 0
    if resume:
        state = load_checkpoint(run_dir / CHECKPOINT)
        try:
            model.load_state_dict(state["model"])
            step.load_state_dict(state)
            gen.set_state(state["data_rng"])
            torch.set_rng_state(state["torch_rng"])
            start_epoch = state["epoch"]
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            if isinstance(e, InputError):
                raise
            raise RunError(f"{run_dir / CHECKPOINT}: not a checkpoint of this model and its training "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        if device.type == "cuda" and "cuda_rng" in state:  # the draws on the GPU
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        history = resume_history(run_dir, start_epoch)
    elif write_dir is not None:
        write_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(write_dir / METRICS, [])

    bar = progress_bar(total=epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
                       enabled=progress, unit="step", dynamic_ncols=True, leave=True)
    model.train()
    scope = contextlib.ExitStack()  # the epochs run inside: NaN warnings quiet, subnormals flushed
    try:
        # a non-finite loss is reported below as a TrainingError naming the epoch and the step
        scope.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message="Encountered NaN")
        scope.enter_context(flush_denormals())  # subnormals: up to 1.55x slower (benchmarks/subnormal_step.py)
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            perm = torch.tensor(list(sampler), device="cpu")
            step.start_epoch(epoch)
            for i in range(steps_per_epoch):
                idx = perm[i * local_batch:(i + 1) * local_batch]
                x, y = x_all[idx], None if y_all is None else y_all[idx]
                if binarize:
                    x = binarize_batch(x, gen)  # on the CPU, from its own generator: the same bits on any device
                x = x.to(device, non_blocking=True)
                y = None if y is None else y.to(device, non_blocking=True)
                value = step(x, y, epoch, i, epoch == start_epoch and i == 0)
                if not math.isfinite(value):  # a step returns a non-finite value in every process alike
                    raise TrainingError(f"the loss became {value} at epoch {epoch + 1}, step {i + 1}; the last good "
                                        f"checkpoint (epoch {epoch}) is kept: {step.advice(run_dir)}")
                bar.update(1)
                if i % 10 == 0:
                    bar.set_postfix({"epoch": epoch + 1, **step.shown(value)}, refresh=False)
            seconds = time.perf_counter() - t0  # the epoch's training steps
            row = {"epoch": epoch + 1, **step.end_epoch(epoch, rank == 0)}
            row["seconds"] = seconds
            history.append(row)
            if write_dir is not None:
                write_jsonl(write_dir / METRICS, history)
                state = {"model": model.state_dict(), **step.state_dict(), "data_rng": gen.get_state(),
                         "torch_rng": torch.get_rng_state(), "epoch": epoch + 1,
                         "finished": step.stop or epoch + 1 == epochs}
                if device.type == "cuda":
                    state["cuda_rng"] = torch.cuda.get_rng_state(device)
                save_checkpoint(write_dir / CHECKPOINT, state)
            if on_epoch is not None:
                on_epoch(row)
            if step.stop:
                break
    finally:
        bar.close()
        scope.close()
    step.finish()
    model.eval()
    return FitResult(history=history, checkpoint_path=None if run_dir is None else run_dir / CHECKPOINT,
                     stopped_early=step.stop)


def fit(vae, train_x: np.ndarray, settings: TrainSettings = TrainSettings(), *,
        train_y: Optional[np.ndarray] = None, val_y: Optional[np.ndarray] = None,
        val_x: Optional[np.ndarray] = None, run_dir=None, resume: bool = False, progress: bool = True,
        on_epoch: Optional[Callable[[dict], None]] = None,
        epoch_metrics: Optional[Callable[..., dict]] = None, binarize: Optional[bool] = None) -> FitResult:
    """Train a model/guide pair on ``train_x`` by SVI.

    :param vae: any model/guide pair (an ``nn.Module`` with ``model`` and ``guide``: a
        :class:`~pyro_gen.vae.VAE`, a family's model or a user's own pair; :mod:`pyro_gen.traces`).
    :param train_x: training images ``(N, C, H, W)``, float32 in the likelihood's support.
    :param settings: a :class:`TrainSettings`.
    :param train_y: labels (or side vectors) of the training images, passed to the model and
        guide of a model that takes them (a conditional VAE; the semi-supervised VAE, with -1
        for unknown labels).
    :param val_y: the same for ``val_x``.
    :param val_x: data whose ELBO is reported each epoch (binarized already for a Bernoulli
        likelihood). With ``settings.patience`` set, a validation split is instead carved out
        of ``train_x`` and early stopping watches it.
    :param run_dir: where ``checkpoint.pt`` and ``metrics.jsonl`` go (``None``: nothing is written).
    :param resume: continue from ``run_dir/checkpoint.pt``.
    :param progress: show a progress bar.
    :param on_epoch: called with each epoch's metrics row, after its checkpoint is written.
    :param epoch_metrics: ``epoch_metrics(vae, x_val) -> dict`` adds entries (e.g. diagnostics) to
        each epoch's row; called in eval mode without gradients. ``x_val`` may be ``None``.
    :param binarize: draw a fresh Bernoulli binarization of each minibatch (default: what the
        model's ``likelihood`` asks for; ``False`` for a pair without one).
    :returns: a :class:`FitResult`.

    The pair is scaled from outside (:mod:`pyro_gen.handlers`): its data plate by N/B and its
    latent sites by the :class:`~pyro_gen.objectives.KLSchedule` of ``settings`` at each step.
    Each row has ``train_objective`` (the optimized objective
    per datum, averaged over the epoch's minibatches), ``kl_scale`` (its value at the epoch's last
    step) and ``train_elbo``: the same number when the objective is the ELBO with β = 1 throughout
    the epoch; otherwise the ELBO (β = 1) at the epoch's end on a fixed subset of at most
    1,000 training images, so that runs with different objectives stay comparable. A model whose
    labels are latent variables (``labels_are_latent``, the semi-supervised VAE) always gets the
    latter, with the labels summed out: the ELBO of :math:`\\log p(x)`, as its test ELBO.
    """
    if binarize is None:  # the built-in models say so through their likelihood
        binarize = bool(getattr(getattr(vae, "likelihood", None), "binarize", False))
    if settings.patience is not None:
        train_x, val_x = split_validation(train_x, settings.val_fraction, settings.seed)
        if train_y is not None:
            train_y, val_y = split_validation(train_y, settings.val_fraction, settings.seed)
        if binarize:
            from .data import binarize_fixed
            val_x = binarize_fixed(val_x, seed=settings.seed)
    step = SVIStep(settings, val_x=val_x, val_y=val_y, binarize=binarize, epoch_metrics=epoch_metrics)
    return train_epochs(vae, step, train_x, epochs=settings.epochs, batch_size=settings.batch_size, seed=settings.seed,
                        train_y=train_y, binarize=binarize, run_dir=run_dir, resume=resume, progress=progress,
                        on_epoch=on_epoch)


def _epoch_extras(epoch_metrics: Callable[..., dict], vae, x_val, epoch: int, say: bool) -> dict:
    """``epoch_metrics(vae, x_val)`` without gradients. A diagnostic never ends a run: if it
    raises, the epoch's row gets ``diagnostics_error`` ("Type: message"), one warning line goes to
    standard error, and training goes on."""
    try:
        with torch.no_grad():
            return epoch_metrics(vae, x_val)
    except Exception as e:  # noqa: BLE001 -- any failure of an optional measurement
        what = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        if say:
            from tqdm.auto import tqdm
            tqdm.write(f"pyro-gen: warning: the diagnostics of epoch {epoch} failed ({what}); training goes on "
                       "(the epoch's row in metrics.jsonl has diagnostics_error)", file=sys.stderr)
        return {"diagnostics_error": what}


def _labels(y, device="cpu") -> Optional[torch.Tensor]:
    if y is None:
        return None
    y = torch.as_tensor(np.asarray(y), device=device)
    return y.to(torch.float32) if torch.is_floating_point(y) else y.long()


def _probe(x_all: torch.Tensor, y_all: Optional[torch.Tensor], binarize_once: bool, seed: int, size: int = 1000):
    """The first ``size`` training images (binarized once with ``seed`` for a Bernoulli likelihood)."""
    x = x_all[:size]
    if binarize_once:
        x = binarize_batch(x, torch.Generator().manual_seed(seed))
    return x, None if y_all is None else y_all[:size]
