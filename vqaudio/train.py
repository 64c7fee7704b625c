"""One training loop, :func:`fit`, for every model (the VQ-VAE here, the WaveNet prior in ``prior.py``).

The task protocol
-----------------
``fit`` trains a *task*: any object with

- ``model: nn.Module`` — the module to optimise (all parameters with ``requires_grad``) and to
  checkpoint (a type registered in :data:`vqaudio.checkpoint.MODEL_TYPES`).
- ``training_step(batch, model=None) -> (loss, metrics)`` — the scalar loss to minimise and a
  dict of floats to log. ``batch`` is what the ``DataLoader`` collated from the train set, already
  moved to the device. Compute the loss by calling ``model`` (when given: under torchrun it is
  the DDP wrapper, and only calls through it synchronise gradients), else ``self.model``.
- ``validate(batches, exp_dir=None, step=0) -> metrics`` — metrics (floats) over an iterable of
  validation batches; put the model in eval mode and back. ``exp_dir`` and ``step`` are passed
  only if the method accepts them (to write figures, e.g. ``exp_dir/plots/step-0000100-*.png``).
  Runs with the plain model and must not call collective operations: at each validation on rank 0
  only, and once before training on one batch on every rank (a sanity check that ``best_metric`` is
  among the metrics it reports; RNG states are restored after it).
- ``config_dict() -> dict`` — JSON-serialisable description of the task, stored in ``train.json``.
- optional ``setup(device, step, saved)`` — called once before training with the device, the
  step training starts from and, on resume, ``(tensors, meta)`` of what ``state()`` saved (else
  ``None``); and ``state() -> (tensors, meta)`` — extra training state (e.g. a discriminator and its
  optimizer) stored in ``exp_dir/last`` under ``task.*``.

A prior task needs nothing else: ``fit(PriorTask(prior), train_windows, valid_windows, cfg, exp)``
with ``TrainConfig(best_metric="nll_bits")``.

What ``fit`` does
-----------------
AdamW, linear warm-up then constant or cosine learning rate, gradient clipping; a tqdm bar; train
and validation metrics as JSON lines in ``exp_dir/log.jsonl``; checkpoints ``exp_dir/last`` (model +
optimizer + RNG + step: see :mod:`vqaudio.checkpoint`) every ``checkpoint_every`` steps and
``exp_dir/best`` (model only) whenever the validation metric ``best_metric`` improves (lower or,
with ``best_mode``, higher is better); with ``keep_every``, the model every so many steps in
``exp_dir/snapshots/step-NNNNNNN`` (with the validation metrics of that step, if it was validated), to
average with ``vqaudio average``. ``resume=True`` continues from ``exp_dir/last`` exactly: the
data order and crops are a pure function of ``(seed, step)`` (:class:`GlobalBatches` and
``dataset.sample(index, epoch)``), and weights, optimizer moments, RNG states and the best metric
are restored, so an interrupted and resumed run ends with the same weights as an uninterrupted one.
``log.jsonl`` is cut back to the checkpoint's step on resume. A NaN or infinite loss or gradient
norm (a diverging run) stops it with :class:`vqaudio.errors.TrainingError` (under DDP on every rank,
via the all-reduced gradient norm: grad_clip > 0).

Several processes: under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE`` etc. set) ``fit`` initialises
the process group (NCCL on GPU, gloo on CPU), wraps the model in DDP and gives rank ``r`` the
``r``-th contiguous slice of each global batch (``batch_size`` is the global batch size), so a run
on N ranks computes the same steps as a 1-rank run (up to float summation order); the quantiser
all-reduces its codebook statistics, so codebooks stay identical on all ranks. Only rank 0 writes
files. ``fit`` tears down the process group it created.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from vqaudio import metrics as M
from vqaudio.adversarial import AdversarialConfig, Adversary
from vqaudio.augment import AugmentConfig
from vqaudio.checkpoint import (
    MANIFEST,
    SNAPSHOTS,
    jsonable,
    load_checkpoint,
    load_optimizer_state,
    load_weights,
    optimizer_state,
    save_checkpoint,
)
from vqaudio.errors import ConfigError, TrainingError, is_finite_number
from vqaudio.io import atomic_path

__all__ = ["TrainConfig", "Task", "fit", "GlobalBatches", "VQVAETask", "train_vqvae", "init_distributed", "lr_at"]


class Task(Protocol):
    """See the module docstring."""

    model: nn.Module

    def training_step(self, batch: Any, model: nn.Module | None = None) -> tuple[Tensor, dict[str, float]]: ...

    def validate(self, batches: Any, exp_dir: Path | None = None, step: int = 0) -> dict[str, float]: ...

    def config_dict(self) -> dict: ...


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings of :func:`fit` (JSON-serialisable)."""

    steps: int = 20000
    batch_size: int = 16  # global: split evenly over the ranks
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    eps: float = 1e-8  # AdamW epsilon
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "cosine"  # "constant" or "cosine" (down to min_lr_ratio * lr at the last step)
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    log_every: int = 10
    valid_every: int = 500
    valid_batches: int = 8  # 0: the whole validation set
    checkpoint_every: int = 500
    keep_every: int = 0  # also keep the model every N steps as exp_dir/snapshots/step-N (for `vqaudio average`); 0: none
    best_metric: str = "loss"  # validation metric that picks exp_dir/best
    best_mode: str = "auto"  # "min", "max", or "auto": max for pesq_nb/pesq_wb/stoi/si_snr, else min
    # submodules kept as they are from frozen_from_step on (fine-tuning the rest of a trained model), e.g.
    # ["encoder", "quantizer.layers"]: the codebooks, not the "quantizer" container (eval mode there would
    # switch quantiser dropout off)
    frozen: list[str] = field(default_factory=list)
    frozen_from_step: int = 0
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda"
    progress: bool = True
    compile: bool = False  # VQ-VAE: torch.compile the encoder and decoder in place (benchmarks/bench_train_speed.py)
    # how training items are drawn: "items" (a permutation of them per epoch) or "folders" (each draw picks one of
    # the items' parent folders uniformly, e.g. one voice of a corpus laid out by voice, then an item in it)
    balance: str = "items"
    # with balance "folders": a folder of n items is drawn with probability proportional to n ** balance_power
    # (temperature sampling, as multilingual models draw languages: 0 every folder equally, 1 every item equally)
    balance_power: float = 0.0

    def __post_init__(self) -> None:
        self.betas = list(self.betas) if isinstance(self.betas, tuple) else self.betas
        for name in ("steps", "batch_size", "log_every", "valid_every", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"TrainConfig.{name} must be an integer >= 1, got {v!r}")
        for name in ("warmup_steps", "valid_batches", "keep_every", "num_workers", "seed", "frozen_from_step"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"TrainConfig.{name} must be an integer >= 0, got {v!r}")
        # real numbers (not bools, strings, lists or None), stored as floats; the ranges are checked below
        for name in ("lr", "eps", "weight_decay", "min_lr_ratio", "grad_clip", "balance_power"):
            v = getattr(self, name)
            if not is_finite_number(v):
                raise ConfigError(f"TrainConfig.{name} must be a finite number, got {v!r}")
            setattr(self, name, float(v))
        if not self.lr > 0:
            raise ConfigError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if not (isinstance(self.betas, list) and len(self.betas) == 2 and all(is_finite_number(b) and 0 <= b < 1 for b in self.betas)):
            raise ConfigError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = [float(b) for b in self.betas]
        if not isinstance(self.schedule, str) or self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"TrainConfig.schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.grad_clip < 0:
            raise ConfigError(f"TrainConfig.grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip!r}")
        if self.eps <= 0:
            raise ConfigError(f"TrainConfig.eps must be > 0, got {self.eps!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if not isinstance(self.best_metric, str) or not self.best_metric:
            raise ConfigError(f"TrainConfig.best_metric must be a metric name (a string), got {self.best_metric!r}")
        if not isinstance(self.best_mode, str) or self.best_mode not in ("auto", "min", "max"):
            raise ConfigError(f"TrainConfig.best_mode must be 'auto', 'min' or 'max', got {self.best_mode!r}")
        if not (isinstance(self.frozen, list) and all(isinstance(n, str) and n for n in self.frozen)):
            raise ConfigError(f"TrainConfig.frozen must be a list of submodule names, got {self.frozen!r}")
        if not isinstance(self.balance, str) or self.balance not in ("items", "folders"):
            raise ConfigError(f"TrainConfig.balance must be 'items' or 'folders', got {self.balance!r}")
        if not 0 <= self.balance_power <= 1:
            raise ConfigError(f"TrainConfig.balance_power must be in [0, 1], got {self.balance_power!r}")
        if self.balance_power and self.balance != "folders":
            raise ConfigError(f"TrainConfig.balance_power {self.balance_power!r} weighs folders: it needs balance 'folders'")
        if not isinstance(self.device, str) or self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"TrainConfig.device must be auto, cpu or cuda, got {self.device!r}")
        for name in ("progress", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"TrainConfig.{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def maximise_best(self) -> bool:
        """Whether a higher ``best_metric`` is better (``best_mode``, or the metric's nature under "auto")."""
        if self.best_mode == "auto":
            return M.HIGHER_IS_BETTER.get(self.best_metric, False)
        return self.best_mode == "max"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"TrainConfig: unknown keys {unknown}")
        return cls(**d)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up, then constant or cosine decay."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - 1 - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# ---- data order --------------------------------------------------------------------------------------------
class GlobalBatches(Sampler[list[tuple[int, int]]]):
    """Batches of keys ``(index, epoch)`` for steps ``[start, stop)``, this rank's slice of each global batch.

    Global batch ``s`` is positions ``[s B, (s + 1) B)`` of an endless stream made of one random
    permutation of the ``n`` items per epoch (seeded by ``(seed, epoch)``); rank ``r`` of ``W``
    gets the ``r``-th contiguous ``B / W`` of it. A pure function of the step: resuming is exact.

    ``groups`` (one label per item, e.g. its folder): each position instead draws a group uniformly, then an
    item of that group uniformly (``n`` draws per epoch, seeded the same way), so every group is seen equally
    often whatever its size; the key's second field is then the position, so an item drawn twice gets two crops.
    ``power`` > 0 draws a group of ``m`` items with probability proportional to ``m ** power`` instead
    (temperature sampling: 1 gives every item the same chance, as without groups, but drawn with replacement).
    """

    def __init__(self, n: int, batch_size: int, start: int, stop: int, seed: int = 0, rank: int = 0, world: int = 1,
                 groups: list | None = None, power: float = 0.0) -> None:
        if n < 1:
            raise ConfigError("the training set is empty")
        if groups is not None and len(groups) != n:
            raise ValueError(f"GlobalBatches: {len(groups)} group labels for {n} items")
        self.members: list[Tensor] | None = None
        if groups is not None:
            by_group: dict = {}
            for i, label in enumerate(groups):
                by_group.setdefault(label, []).append(i)
            self.members = [torch.tensor(v) for v in by_group.values()]
        self.group_p = None
        if groups is not None and power:
            sizes = torch.tensor([len(m) for m in self.members], dtype=torch.float64)
            self.group_p = sizes**power / (sizes**power).sum()
        if batch_size % world:
            raise ConfigError(f"batch size {batch_size} is not divisible by the {world} processes")
        self.n, self.batch, self.local = n, batch_size, batch_size // world
        self.start, self.stop, self.seed, self.rank = start, stop, seed, rank
        self._perms: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            if self.members is None:
                self._perms[epoch] = torch.randperm(self.n, generator=g).tolist()
            else:
                if self.group_p is None:
                    group = torch.randint(len(self.members), (self.n,), generator=g).tolist()
                else:
                    group = torch.multinomial(self.group_p, self.n, replacement=True, generator=g).tolist()
                u = torch.rand(self.n, generator=g, dtype=torch.float64).tolist()
                self._perms[epoch] = [int(self.members[k][int(r * len(self.members[k]))]) for k, r in zip(group, u, strict=True)]
        return self._perms[epoch]

    def key(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(position, self.n)
        return self._perm(epoch)[offset], (epoch if self.members is None else position)

    def __iter__(self):
        for step in range(self.start, self.stop):
            first = step * self.batch + self.rank * self.local
            yield [self.key(p) for p in range(first, first + self.local)]


class _Keyed(Dataset):
    """``(index, epoch)`` keys to items: ``dataset.sample(index, epoch)`` if it has one, else ``dataset[index]``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.sample = getattr(dataset, "sample", None)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        return self.sample(index, epoch) if self.sample is not None else self.dataset[index]


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


# ---- distributed -------------------------------------------------------------------------------------------
@dataclass
class _Dist:
    rank: int
    world: int
    device: torch.device
    created: bool


def init_distributed(device: str = "auto") -> _Dist:
    """Join the torchrun process group if ``WORLD_SIZE > 1`` (NCCL on CUDA, gloo on CPU); pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    dev = torch.device("cuda", local % torch.cuda.device_count()) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    created = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        created = True
    if dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), dev, created)
    return _Dist(0, 1, dev, False)


def _barrier(d: _Dist) -> None:
    if d.world > 1:
        dist.barrier()


def _mean_over_ranks(values: dict[str, float], d: _Dist) -> dict[str, float]:
    if d.world == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return {k: float(v) / d.world for k, v in zip(keys, t.tolist(), strict=True)}


# ---- training state ----------------------------------------------------------------------------------------
def _state(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer + RNG state as (tensors, JSON): no pickle."""
    tensors, meta = optimizer_state(opt)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    meta["rng"] = {"python": jsonable(random.getstate()), "numpy": jsonable(np.random.get_state())}
    return tensors, meta


def _restore_state(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    load_optimizer_state(opt, tensors, meta)
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    py = meta["rng"]["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = meta["rng"]["numpy"]
    np.random.set_state((npy[0], np.array(npy[1], dtype=np.uint32), *npy[2:]))


def _log_step(line: str) -> float:
    """The step of a ``log.jsonl`` line; ``inf`` (dropped on resume) for a blank, truncated or corrupt line.

    A killed run or a full disk can leave a half-written last line; the checkpoint is the source of truth.
    """
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError; too many digits; too deeply nested
        return math.inf
    step = record.get("step", 0) if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else math.inf


def _json_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with NaN / infinite numbers as ``None`` (JSON ``null``): a metric no item could be scored on."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}


class _Log:
    """``exp_dir/log.jsonl`` writer (rank 0 only); unscored (NaN) metrics are written as ``null``."""

    def __init__(self, path: Path, enabled: bool, keep_until: int | None) -> None:
        self.path, self.enabled = path, enabled
        if enabled and keep_until is not None and path.exists():  # resume: drop records after the checkpoint
            kept = [ln for ln in path.read_text(errors="replace").splitlines() if _log_step(ln) <= keep_until]
            with atomic_path(path) as tmp:
                tmp.write_text("".join(ln + "\n" for ln in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(_json_metrics(record), allow_nan=False) + "\n")


def _call_validate(task: Task, batches: Any, exp_dir: Path | None, step: int) -> dict[str, float]:
    params = inspect.signature(task.validate).parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in (("exp_dir", exp_dir), ("step", step)) if k in params or var_kw}
    return {k: float(v) for k, v in task.validate(batches, **kwargs).items()}


def _ddp(model: nn.Module, d: _Dist) -> nn.Module:
    """``model`` wrapped for DistributedDataParallel when there are several ranks, else itself."""
    if d.world == 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[d.device.index] if d.device.type == "cuda" else None, broadcast_buffers=False)


def _frozen_modules(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """The submodules ``names`` of ``model`` (``TrainConfig.frozen``); a one-line error for a missing one."""
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            children = ", ".join(n for n, _ in model.named_children())
            raise ConfigError(f"TrainConfig.frozen: the model has no submodule {name!r} (its top-level ones: {children})")
    return [modules[name] for name in names]


def _old_best_metric(exp: Path) -> str | None:
    """``best_metric`` of a run whose checkpoints predate saving it (it was always minimised): from the
    run's ``train.json``, not yet rewritten when a resume reads it; ``None`` if unreadable."""
    try:
        return json.loads((exp / "train.json").read_text())["train"]["best_metric"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _rule(metric: str | None, maximise: bool) -> str:
    if metric is None:
        return "an unknown rule"
    return f"the {'highest' if maximise else 'lowest'} validation {metric}"


def _check_best_metric(cfg: TrainConfig, metrics: dict[str, float]) -> None:
    if cfg.best_metric not in metrics:
        known = ", ".join(sorted(metrics)) or "none"
        raise ConfigError(f"TrainConfig.best_metric {cfg.best_metric!r} is not a validation metric of this task "
                          f"(it reports: {known})")


# ---- the loop ----------------------------------------------------------------------------------------------
def fit(task: Task, train_set: Dataset, valid_set: Dataset | None, config: TrainConfig, exp_dir: str | os.PathLike,
        resume: bool = False) -> dict[str, Any]:
    """Train ``task`` for ``config.steps`` steps in ``exp_dir``; see the module docstring.

    Returns ``{"step", "best_step", "best", "valid", "train", "steps_per_s"}`` (same on every rank).
    """
    d = init_distributed(config.device)
    try:
        return _fit(task, train_set, valid_set, config, Path(exp_dir), resume, d)
    finally:
        if d.created:
            dist.destroy_process_group()


def _fit(task: Task, train_set: Dataset, valid_set: Dataset | None, cfg: TrainConfig, exp: Path, resume: bool,
         d: _Dist) -> dict[str, Any]:
    rank0 = d.rank == 0
    last, best_dir = exp / "last", exp / "best"
    if rank0:
        exp.mkdir(parents=True, exist_ok=True)
    model = task.model.to(d.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    to_freeze = _frozen_modules(model, cfg.frozen)  # a misspelt name fails now, not at frozen_from_step
    frozen: list[nn.Module] = []  # to_freeze once frozen_from_step is reached
    start, best, best_step = 0, math.inf, None  # best: sign * metric, lower is better
    sign = -1.0 if cfg.maximise_best else 1.0
    saved_task: tuple[dict[str, Tensor], Any] | None = None
    if (last / MANIFEST).exists():
        if not resume:
            raise ConfigError(f"{exp} already holds a training run ({last}); pass --resume to continue it or choose a new --exp")
        ckpt = load_checkpoint(last)
        load_weights(model, ckpt.weights, str(last))
        if ckpt.meta is None or "step" not in ckpt.meta:
            raise ConfigError(f"{last} has no training state to resume from")
        _restore_state(opt, ckpt.state, ckpt.meta)
        start, best_step = int(ckpt.meta["step"]), ckpt.meta.get("best_step")
        best = math.inf if ckpt.meta.get("best") is None else sign * float(ckpt.meta["best"])
        saved_rule = (ckpt.meta.get("best_metric") or _old_best_metric(exp), bool(ckpt.meta.get("best_max", False)))
        if saved_rule != (cfg.best_metric, cfg.maximise_best):
            if rank0:
                print(f"vqaudio train: best/ was picked by {_rule(*saved_rule)} and is now picked by "
                      f"{_rule(cfg.best_metric, cfg.maximise_best)}: the next validation replaces it", file=sys.stderr)
            best, best_step = math.inf, None
        if ckpt.meta.get("task") is not None:
            saved_task = ({k[5:]: v for k, v in ckpt.state.items() if k.startswith("task.")}, ckpt.meta["task"])
    else:
        snaps = exp / SNAPSHOTS
        if cfg.keep_every and snaps.is_dir() and any(snaps.iterdir()):
            raise ConfigError(f"{snaps} holds snapshots of an earlier run, which an average would mix with this one's; "
                              "move them away or choose a new --exp")
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        if resume and rank0:
            print(f"vqaudio train: nothing to resume in {exp}; starting a new run", file=sys.stderr)
    if hasattr(task, "setup"):
        task.setup(d.device, start, saved_task)
    wrapped = _ddp(model, d)
    groups = None
    if cfg.balance == "folders":
        groups = getattr(train_set, "folders", None)
        if groups is None:
            raise ConfigError(f"balance 'folders' needs training items from files; {type(train_set).__name__} has no folders")
    sampler = GlobalBatches(len(train_set), cfg.batch_size, start, cfg.steps, cfg.seed, d.rank, d.world, groups,
                            cfg.balance_power)
    # own generators: creating a loader iterator must not draw from the global RNG (exact resume)
    loader = DataLoader(_Keyed(train_set), batch_sampler=sampler, num_workers=cfg.num_workers,
                        pin_memory=d.device.type == "cuda", generator=torch.Generator().manual_seed(cfg.seed))
    valid_loader = None
    if valid_set is not None and len(valid_set) > 0:
        valid_loader = DataLoader(valid_set, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                                  generator=torch.Generator().manual_seed(cfg.seed))

    if valid_loader is not None and cfg.steps > start:
        # sanity check on one validation batch before training (and before train.json or the log is
        # touched), so that a best_metric the task does not report fails now on every rank, not at the
        # first validation; RNG states are restored (exact resume)
        with torch.random.fork_rng(devices=[d.device] if d.device.type == "cuda" else []), torch.no_grad():
            probe = _call_validate(task, [_to_device(next(iter(valid_loader)), d.device)], None, start)
        _check_best_metric(cfg, probe)
    log = _Log(exp / "log.jsonl", rank0, start if resume else None)
    if rank0 and not resume:
        (exp / "log.jsonl").unlink(missing_ok=True)
    if rank0:
        info = {"train": cfg.to_dict(), "task": task.config_dict(), "world_size": d.world}
        with atomic_path(exp / "train.json") as tmp:
            tmp.write_text(json.dumps(info, indent=2))

    bar = tqdm(total=cfg.steps, initial=start, disable=not (rank0 and cfg.progress), desc="train", dynamic_ncols=True)
    acc: dict[str, list[float]] = {}  # per metric: [sum, steps] (adversarial terms start mid-window)
    n_acc, t_log, steps_per_s = 0, time.perf_counter(), 0.0
    train_metrics: dict[str, float] = {}
    valid_metrics: dict[str, float] = {}
    step = start
    for step, batch in enumerate(loader, start=start):
        batch = _to_device(batch, d.device)
        lr = lr_at(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        if to_freeze and not frozen and step >= cfg.frozen_from_step:
            # no gradients, and eval mode at every step (below) so that buffers updated in training (EMA
            # codebooks, dead-code restarts) stay as they are; the optimizer keeps the frozen parameters
            # (without gradients AdamW skips them), so its saved state has one layout whatever is frozen;
            # DDP must be rebuilt around the new set of gradients
            frozen = [m.requires_grad_(False) for m in to_freeze]
            wrapped = _ddp(model, d)
        model.train()
        for m in frozen:
            m.eval()
        loss, metrics = task.training_step(batch, model=wrapped)
        value = float(loss.detach())
        if d.world == 1 and not math.isfinite(value):  # under DDP the (all-reduced) grad norm below, on every rank
            raise TrainingError(f"training loss is {value} at step {step + 1}; try a lower --lr or --grad-clip")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            norm = float(nn.utils.clip_grad_norm_(params, cfg.grad_clip))
            if not math.isfinite(norm):
                raise TrainingError(f"gradient norm is {norm} at step {step + 1}; try a lower --lr")
            metrics = {**metrics, "grad_norm": norm}
        opt.step()
        done = step + 1
        for k, v in {"loss": value, **metrics}.items():
            a = acc.setdefault(k, [0.0, 0])
            a[0], a[1] = a[0] + float(v), a[1] + 1
        n_acc += 1

        if done % cfg.log_every == 0 or done == cfg.steps:
            now = time.perf_counter()
            steps_per_s = n_acc / max(now - t_log, 1e-9)
            train_metrics = _mean_over_ranks({k: total / n for k, (total, n) in acc.items()}, d)
            log.write({"step": done, "split": "train", "lr": lr, "steps_per_s": steps_per_s, **train_metrics})
            bar.set_postfix(loss=f"{train_metrics['loss']:.4f}")
            acc, n_acc, t_log = {}, 0, now

        validated = valid_loader is not None and (done % cfg.valid_every == 0 or done == cfg.steps)
        if validated:
            if rank0:
                batches = (_to_device(b, d.device) for b in itertools.islice(valid_loader, cfg.valid_batches or None))
                valid_metrics = _call_validate(task, batches, exp, done)
                _check_best_metric(cfg, valid_metrics)
                log.write({"step": done, "split": "valid", **valid_metrics})
                if sign * valid_metrics[cfg.best_metric] < best:
                    best, best_step = sign * valid_metrics[cfg.best_metric], done
                    save_checkpoint(best_dir, model, meta={"step": done, "metrics": _json_metrics(valid_metrics)})
            _barrier(d)

        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            if rank0:
                tensors, meta = _state(opt)
                meta.update(step=done, best=None if best == math.inf else sign * best, best_step=best_step,
                            best_metric=cfg.best_metric, best_max=cfg.maximise_best)
                if hasattr(task, "state"):
                    task_tensors, meta["task"] = task.state()
                    tensors.update({f"task.{k}": v for k, v in task_tensors.items()})
                save_checkpoint(last, model, state=tensors, meta=meta)
            _barrier(d)
        if rank0 and cfg.keep_every and done % cfg.keep_every == 0:  # model only, read by no other rank
            metrics = _json_metrics(valid_metrics) if validated else {}
            save_checkpoint(exp / SNAPSHOTS / f"step-{done:07d}", model, meta={"step": done, "metrics": metrics})
        bar.update(1)
    bar.close()
    if valid_loader is None and rank0 and cfg.steps > start:  # no validation data: best = last
        save_checkpoint(best_dir, model, meta={"step": cfg.steps, "metrics": {}})
    _barrier(d)
    return {"step": max(start, cfg.steps), "best_step": best_step,
            "best": None if best == math.inf else sign * best, "valid": valid_metrics, "train": train_metrics,
            "steps_per_s": steps_per_s}


# ---- the VQ-VAE task ---------------------------------------------------------------------------------------
class VQVAETask:
    """Trains a :class:`vqaudio.models.VQVAE` on ``[B, C, T]`` batches; validation writes figures."""

    PERCEPTUAL = ("pesq_nb", "pesq_wb", "stoi")

    def __init__(self, model: nn.Module, plots: bool = True, n_plot: int = 3,
                 adversarial: AdversarialConfig | None = None, perceptual: bool = True,
                 augment: AugmentConfig | None = None, init: str | None = None) -> None:
        self.model, self.plots, self.n_plot, self.perceptual = model, plots, n_plot, perceptual
        self.augment, self.init = augment, init  # recorded in train.json (the data side applies the augmentation)
        self.adversary: Adversary | None = None
        self.step = 0
        if adversarial is not None and adversarial.enabled:
            if model.config.kind != "audio":
                raise ConfigError("adversarial training needs an audio model (the discriminator looks at STFTs)")
            self.adversary = Adversary(adversarial, model.config.fft_sizes)

    def setup(self, device: torch.device, step: int, saved: tuple[dict[str, Tensor], Any] | None) -> None:
        """Move the discriminator to ``device`` and restore it (a resumed run), or start it fresh."""
        self.step = step
        if self.adversary is None:
            return
        self.adversary.to(device)
        if saved is not None and isinstance(saved[1], dict) and "adversary" in saved[1]:
            self.adversary.load_state({k[4:]: v for k, v in saved[0].items() if k.startswith("adv.")}, saved[1]["adversary"])
        elif step > 0 and int(os.environ.get("RANK", "0")) == 0:
            print(f"vqaudio train: no discriminator in the checkpoint; starting a new one at step {step}", file=sys.stderr)

    def state(self) -> tuple[dict[str, Tensor], dict | None]:
        if self.adversary is None:
            return {}, None
        tensors, meta = self.adversary.state()
        return {f"adv.{k}": v for k, v in tensors.items()}, {"adversary": meta}

    def training_step(self, batch: Tensor, model: nn.Module | None = None) -> tuple[Tensor, dict[str, float]]:
        out = (model or self.model)(batch)
        loss = out.loss
        metrics = {k: float(v.detach()) for k, v in out.losses.items()}
        metrics["perplexity"] = float(out.stats["perplexity"].mean())
        metrics["usage"] = float(out.stats["usage"].mean())
        if self.adversary is not None:
            terms, adv_metrics = self.adversary.step(batch, out.recon, self.step)
            metrics.update(adv_metrics)
            if terms:
                cfg = self.adversary.config
                loss = loss + cfg.weight * terms["adv"] + cfg.feature_weight * terms["feat"]
                metrics.update({k: float(v.detach()) for k, v in terms.items()})
        self.step += 1
        return loss, metrics

    @torch.no_grad()
    def validate(self, batches: Any, exp_dir: Path | None = None, step: int = 0) -> dict[str, float]:
        """Mean losses, per-stage codebook ``usage`` / ``perplexity`` over all validation codes, and for
        audio the perceptual metrics (``pesq_nb``, ``stoi``; ``pesq_wb`` from 16 kHz up) that the
        installed packages allow, each the mean over the crops it can score (silent or too short crops
        are skipped; ``nan`` when none can be scored, which never becomes ``best/``)."""
        model = self.model
        was = model.training
        model.eval()
        c = model.config
        counts = torch.zeros(c.n_q, c.codebook_size, dtype=torch.float64)
        sums: dict[str, float] = {}
        perceptual = M.audio_metrics(c.sample_rate, self.PERCEPTUAL) if c.kind == "audio" and self.perceptual else ()
        scored: dict[str, list[float]] = {m: [] for m in perceptual}
        n, first = 0, None
        for x in batches:
            out = model(x)
            b = x.shape[0]
            for k, v in {"loss": out.loss, **out.losses}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * b
            if perceptual:
                ref, est = x.detach().float().cpu(), out.recon.detach().float().cpu()
                for name, value in (kv for i in range(b) for kv in M.score(ref[i], est[i], c.sample_rate, metrics=perceptual).items()):
                    if math.isfinite(value):
                        scored[name].append(value)
            for q in range(out.codes.shape[1]):
                counts[q] += torch.bincount(out.codes[:, q].flatten().cpu(), minlength=c.codebook_size).double()
            n += b
            if first is None:
                first = (x[: self.n_plot].cpu(), out.recon[: self.n_plot].cpu())
        model.train(was)
        if n == 0:
            return {}
        metrics = {k: v / n for k, v in sums.items()}
        p = counts / counts.sum(1, keepdim=True).clamp_min(1)
        metrics["usage"] = float((counts > 0).double().mean())
        metrics["perplexity"] = float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum(1)).mean())
        metrics.update({name: sum(v) / len(v) if v else math.nan for name, v in scored.items()})
        if self.plots and exp_dir is not None and first is not None:
            from vqaudio import plots

            out_dir = Path(exp_dir) / "plots"
            out_dir.mkdir(parents=True, exist_ok=True)
            x, y = first
            if c.kind == "audio":
                plots.plot_spectrograms(out_dir / f"step-{step:07d}-spectrogram.png", list(x[:, 0]), list(y[:, 0]), c.sample_rate)
            else:
                plots.plot_series(out_dir / f"step-{step:07d}-series.png", list(x), list(y))
            plots.plot_codebook_usage(out_dir / f"step-{step:07d}-codebook.png", counts)
        return metrics

    def config_dict(self) -> dict:
        d = {"task": "vqvae", "model": self.model.config.to_dict()}
        if self.adversary is not None:
            d["adversarial"] = self.adversary.config.to_dict()
        if self.augment is not None and self.augment.enabled:
            d["augment"] = self.augment.to_dict()
        if self.init is not None:
            d["init"] = self.init
        return d


def train_vqvae(data: str, exp_dir: str | os.PathLike, model_config: Any, config: TrainConfig, segment: int | None = None,
                resume: bool = False, valid_fraction: float = 0.1, plots: bool = True,
                adversarial: AdversarialConfig | None = None, augment: AugmentConfig | None = None,
                init: str | os.PathLike | None = None) -> dict[str, Any]:
    """Build the datasets of ``data`` (see :func:`vqaudio.data.build_datasets`) and :func:`fit` a VQ-VAE.

    On ``resume`` with an existing ``exp_dir/last`` the model config comes from that checkpoint.
    Series data sets ``channels`` of ``model_config`` from the data. ``augment`` perturbs the training crops
    (:mod:`vqaudio.augment`). ``init`` (a model folder or shipped name) warm-starts a new run from that model's weights;
    its architecture must equal ``model_config``'s, loss weights may differ (``VQVAEConfig.TRAINING_FIELDS``), or
    ``model_config`` may add decoder frame-rate residual units, which start at identity (:mod:`vqaudio.models.grow`);
    a resume ignores ``init``: the run's own weights come first.
    """
    from vqaudio.checkpoint import load_model, read_manifest
    from vqaudio.data import build_datasets
    from vqaudio.models import VQVAE, VQVAEConfig
    from vqaudio.models.grow import can_grow, grow_into
    from vqaudio.registry import resolve

    last = Path(exp_dir) / "last"
    resuming = resume and (last / MANIFEST).exists()
    if resuming:
        model_config = VQVAEConfig.from_dict(read_manifest(last)["config"])
    start, grow = None, False
    if init is not None and not resuming:
        _, init_dir = resolve(init)
        start = load_model(init_dir)
        theirs, ours = start.config.architecture(), model_config.architecture()
        grow = can_grow(start.config, model_config)
        if theirs != ours and not grow:
            diff = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
            raise ConfigError(f"--init {init}: its model config differs from this run's in {diff}; give the same "
                              "model settings (or none; loss weights may differ)")
    train_set, valid_set, info = build_datasets(data, segment, model_config.sample_rate, None, valid_fraction, config.seed,
                                                augment=augment)
    if info["kind"] != model_config.kind or info["channels"] != model_config.channels:
        if resume and (last / MANIFEST).exists():
            raise ConfigError(f"--data {data} has {info['kind']} with {info['channels']} channels but the run in {exp_dir} "
                              f"was trained on {model_config.kind} with {model_config.channels}")
        changes = {"kind": info["kind"], "channels": info["channels"]}
        if info["kind"] == "series":
            changes["sample_rate"] = None
        model_config = dataclasses.replace(model_config, **changes, fft_sizes=[], n_mels=[])
    torch.manual_seed(config.seed)
    model = VQVAE(model_config)
    if grow:
        grow_into(model, start)
    elif start is not None:
        model.load_state_dict(start.state_dict())
    if config.compile:  # in place: the state-dict keys stay those of the plain model (the quantiser's in-place EMA
        model.encoder.compile()  # updates would break a whole-model graph's backward)
        model.decoder.compile()
    task = VQVAETask(model, plots=plots, adversarial=adversarial, augment=augment,
                     init=str(init) if init is not None and not resuming else None)
    result = fit(task, train_set, valid_set, config, exp_dir, resume=resume)
    result["data"] = info
    return result
