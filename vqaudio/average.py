"""Checkpoint averaging: the mean of the weights of several checkpoints of one training run.

Averaging snapshots taken along the end of a run (ESPnet's ``average_checkpoints``, fairseq's
``average_checkpoints.py``, stochastic weight averaging) lands nearer the centre of the region the
optimiser is circling than any one snapshot, and often scores a little better than the last one.

What is averaged (in float64, then cast back):

- every floating-point tensor, element-wise;
- weight-normalised weights (``*.parametrizations.weight.original0`` = g, ``original1`` = v) as the
  weights the layer computes, ``w = g v / ||v||``: the mean ``w̄`` is stored as ``v = w̄``,
  ``g = ||w̄||``, so the averaged layer computes exactly ``w̄`` (averaging g and v apart would lean
  towards the checkpoint whose v is longest);
- EMA codebooks, their running sums and counts, each element-wise like any float tensor: the
  averaged codebook is the mean of the codebooks (what encoding uses), no longer exactly the ratio of
  the averaged EMA statistics; the next training step recomputes it from them.

Integer and boolean tensors (counters, flags, seeds) and the tensors named by ``keep_last`` glob
patterns come from the last checkpoint. A code restarted (dead-code restart) between two snapshots
has unrelated rows in them: ``keep_last=("quantizer.*",)`` keeps the last codebooks whole.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vqaudio.checkpoint import (
    MANIFEST,
    Checkpoint,
    build_model,
    load_checkpoint,
    model_config,
    read_experiment_train,
    read_manifest,
    write_model_folder,
)
from vqaudio.errors import CheckpointError

__all__ = ["average_weights", "average_checkpoints"]

_G, _V = ".parametrizations.weight.original0", ".parametrizations.weight.original1"


def _norm_except(v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``||v||`` over the dimensions where ``g`` has size 1 (``g``'s shape), as weight norm computes it."""
    dims = [d for d in range(v.dim()) if g.shape[d] == 1]
    return torch.linalg.vector_norm(v, dim=dims, keepdim=True) if dims else v.abs()


def average_weights(weights: Iterable[Mapping[str, torch.Tensor]], keep_last: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The mean of ``weights`` (state dicts with the same names, shapes and dtypes), see the module doc.

    ``weights`` is consumed one state dict at a time (a generator keeps one checkpoint in memory).
    Raises ``ValueError`` when a state dict does not match the first, or a ``keep_last`` pattern
    matches no tensor.
    """
    sums: dict[str, torch.Tensor] = {}
    first: Mapping[str, torch.Tensor] | None = None
    last: Mapping[str, torch.Tensor] = {}
    n = 0
    for i, w in enumerate(weights):
        if first is None:
            first = w
        elif set(w) != set(first):
            diff = sorted(set(w) ^ set(first))
            raise ValueError(f"checkpoint {i + 1} and the first hold different tensors (e.g. {diff[0]!r})")
        for k, t in w.items():
            ref = first[k]
            if t.shape != ref.shape or t.dtype != ref.dtype:
                raise ValueError(f"tensor {k!r} is {t.dtype}{list(t.shape)} in checkpoint {i + 1} "
                                 f"but {ref.dtype}{list(ref.shape)} in the first")
            if not t.is_floating_point() or k.endswith(_G):
                continue
            t = t.double()
            if k.endswith(_V) and k[: -len(_V)] + _G in w:
                g = w[k[: -len(_V)] + _G].double()
                t = t * (g / _norm_except(t, g))  # the layer's weight
            sums[k] = sums[k] + t if k in sums else t.clone()
        last, n = w, n + 1
    if first is None:
        raise ValueError("nothing to average")
    for p in keep_last:
        if not any(fnmatch.fnmatchcase(k, p) for k in last):
            raise ValueError(f"--keep-last {p!r} matches no tensor (names look like {next(iter(last))!r})")

    def kept(k: str) -> bool:
        pair = k[: -len(_G)] + _V if k.endswith(_G) else k[: -len(_V)] + _G if k.endswith(_V) else k
        return any(fnmatch.fnmatchcase(name, p) for p in keep_last for name in (k, pair))

    out: dict[str, torch.Tensor] = {}
    for k, t in last.items():
        if k in sums and not kept(k):
            mean = sums[k] / n
            if k.endswith(_V) and (g_name := k[: -len(_V)] + _G) in last:  # its g follows from the mean weight
                out[g_name] = _norm_except(mean, last[g_name]).to(last[g_name].dtype)
            out[k] = mean.to(t.dtype)
        elif k not in out:  # not averaged (or a g set with its v)
            out[k] = t.clone()
    return {k: out[k] for k in last}  # the state dict's order


def average_checkpoints(sources: list[str | os.PathLike], output: str | os.PathLike, keep_last: tuple[str, ...] = (),
                        force: bool = False) -> tuple[Path, nn.Module]:
    """Average the models of ``sources`` (checkpoint or experiment folders, oldest first) into ``output``.

    All sources must be the same kind of model with the same config, each given once. ``output`` is
    a new checkpoint folder (model only, no optimizer state) written under a temporary name and
    renamed into place; an existing one is replaced only with ``force`` (see
    :func:`vqaudio.checkpoint.write_model_folder`). Its meta lists the sources (folder, sha256, step),
    the last source's step and the training config. Returns ``(folder, model)``, the model in eval mode.
    """
    from vqaudio.registry import resolve

    if not sources:
        raise CheckpointError("give at least one checkpoint to average")
    folders = [resolve(s)[1].resolve() for s in sources]
    for i, f in enumerate(folders):
        if f in folders[:i]:
            raise CheckpointError("given twice; each checkpoint is averaged once", str(f))
    read: list[Checkpoint] = []  # the checkpoints read so far, weights dropped once summed

    def each() -> Iterable[dict[str, torch.Tensor]]:
        for f in folders:
            c = load_checkpoint(f)
            if read and (c.model_type != read[0].model_type or model_config(c) != model_config(read[0])):
                what = "model type" if c.model_type != read[0].model_type else "model config"
                raise CheckpointError(f"its {what} differs from {read[0].path / MANIFEST}'s; only checkpoints of one "
                                      "model can be averaged", str(c.path / MANIFEST))
            read.append(c)
            yield c.weights
            c.weights = {}  # summed: only the running sums (and the first and last state dicts) stay

    try:
        weights = average_weights(each(), keep_last)
    except ValueError as err:
        raise CheckpointError(f"cannot average: {err}", str(read[-1].path / read[-1].weights_file)) from None
    last = read[-1]
    last.weights = weights
    model = build_model(last).eval()
    meta: dict[str, Any] = {"averaged": [{"path": str(c.path), "sha256": c.sha256, "step": (c.meta or {}).get("step")}
                                         for c in read]}
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
