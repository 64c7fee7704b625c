"""Checkpoint averaging: the mean of the weights of several checkpoints of one training run.

Averaging snapshots taken along the end of a run (ESPnet's ``average_checkpoints``, fairseq's
``average_checkpoints.py``, stochastic weight averaging) lands nearer the centre of the region the
optimiser is circling than any one snapshot, and usually scores a little better than the last one.

Every floating-point tensor is averaged (in float64, then cast back); integer and boolean tensors
(counters, flags, seeds) and the tensors named by ``keep_last`` are taken from the last checkpoint
given. With EMA codebooks and dead-code restarts, a code that was restarted between two snapshots
has unrelated rows in them, so ``keep_last=("quantizer.*",)`` keeps the last codebooks whole.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vqaudio.checkpoint import (
    MANIFEST,
    build_model,
    load_checkpoint,
    read_experiment_train,
    read_manifest,
    write_model_folder,
)
from vqaudio.errors import CheckpointError

__all__ = ["average_weights", "average_checkpoints"]


def average_weights(weights: list[dict[str, torch.Tensor]], keep_last: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The element-wise mean of ``weights`` (state dicts with the same names, shapes and dtypes).

    Tensors that are not floating point, or whose name matches a ``keep_last`` glob pattern, are
    copied from ``weights[-1]``. Raises ``ValueError`` when the state dicts do not match.
    """
    if not weights:
        raise ValueError("nothing to average")
    last = weights[-1]
    for i, w in enumerate(weights[:-1]):
        if set(w) != set(last):
            diff = sorted(set(w) ^ set(last))
            raise ValueError(f"checkpoint {i + 1} and the last hold different tensors (e.g. {diff[0]!r})")
        for k, t in w.items():
            if t.shape != last[k].shape or t.dtype != last[k].dtype:
                raise ValueError(f"tensor {k!r} is {t.dtype}{list(t.shape)} in checkpoint {i + 1} "
                                 f"but {last[k].dtype}{list(last[k].shape)} in the last")
    out: dict[str, torch.Tensor] = {}
    for k, t in last.items():
        if not t.is_floating_point() or any(fnmatch.fnmatchcase(k, p) for p in keep_last):
            out[k] = t.clone()
        else:
            out[k] = torch.stack([w[k].double() for w in weights]).mean(0).to(t.dtype)
    return out


def average_checkpoints(sources: list[str | os.PathLike], output: str | os.PathLike, keep_last: tuple[str, ...] = (),
                        force: bool = False) -> tuple[Path, nn.Module]:
    """Average the models of ``sources`` (checkpoint or experiment folders, oldest first) into ``output``.

    All sources must be the same kind of model with the same config. ``output`` is a new checkpoint
    folder (model only, no optimizer state) written under a temporary name and renamed into place;
    an existing one is replaced only with ``force`` (see :func:`vqaudio.checkpoint.write_model_folder`).
    Its meta lists the sources (folder, sha256, step), the last source's step and the training config.
    Returns ``(folder, model)`` with the model in eval mode.
    """
    from vqaudio.registry import resolve

    if not sources:
        raise CheckpointError("give at least one checkpoint to average")
    folders = [resolve(s)[1] for s in sources]
    ckpts = [load_checkpoint(f) for f in folders]
    first = ckpts[0]
    for c in ckpts[1:]:
        if c.model_type != first.model_type or c.config != first.config:
            what = "model type" if c.model_type != first.model_type else "model config"
            raise CheckpointError(f"its {what} differs from {first.path / MANIFEST}'s; only checkpoints of one model "
                                  "can be averaged", str(c.path / MANIFEST))
    try:
        weights = average_weights([c.weights for c in ckpts], keep_last)
    except ValueError as err:
        raise CheckpointError(f"cannot average: {err}", str(ckpts[-1].path)) from None
    last = ckpts[-1]
    last.weights = weights
    model = build_model(last).eval()
    meta: dict[str, Any] = {"averaged": [{"path": str(c.path), "sha256": c.sha256, "step": (c.meta or {}).get("step")}
                                         for c in ckpts]}
    if keep_last:
        meta["averaged_keep_last"] = list(keep_last)
    if last.meta and "step" in last.meta:
        meta["step"] = last.meta["step"]
    train = read_experiment_train(last)
    if train is not None:
        meta["train"] = train
    out = write_model_folder(output, model, meta, force=force, sources=tuple(folders))
    model.checkpoint_sha256 = read_manifest(out)["sha256"]
    return out, model
