"""Pure-PyTorch reference of ``vqaudio::nearest_code``: same contract as the compiled kernels.

Straightforward rather than fast. Distances are computed pair by pair in float64 (no ``||x||² -
2x·e + ||e||²`` expansion and no matrix multiply), so every (row, code) pair goes through the
same arithmetic: exact ties, such as duplicated codebook rows, resolve to the lowest index exactly
as the contract says. Rows are processed in chunks, so memory stays O(chunk · K).
"""

from __future__ import annotations

import torch

_CHUNK_ELEMENTS = 1 << 22  # rows per chunk = this / K: bounded memory for the chunk's distances


def check_inputs(x: torch.Tensor, codebook: torch.Tensor) -> None:
    """Raise the contract's errors (the compiled kernels raise the same messages)."""
    if x.dim() != 2:
        raise ValueError(f"nearest_code: x must be 2-D [N, D], got shape {list(x.shape)}")
    if codebook.dim() != 2:
        raise ValueError(f"nearest_code: codebook must be 2-D [K, D], got shape {list(codebook.shape)}")
    for name, t in (("x", x), ("codebook", codebook)):
        if t.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            raise TypeError(f"nearest_code: {name} has dtype {t.dtype}; expected float32, float64, float16 or bfloat16")
    if x.dtype != codebook.dtype:
        raise TypeError(f"nearest_code: x is {x.dtype} but codebook is {codebook.dtype}; they must match")
    if x.device != codebook.device:
        raise ValueError(f"nearest_code: x is on {x.device} but codebook is on {codebook.device}")
    if codebook.shape[0] == 0:
        raise ValueError("nearest_code: codebook is empty (K = 0); it needs at least one code")
    if x.shape[1] != codebook.shape[1]:
        raise ValueError(f"nearest_code: x has D = {x.shape[1]} but codebook has D = {codebook.shape[1]}")
    if not bool(torch.isfinite(codebook).all()):
        raise ValueError("nearest_code: codebook contains NaN or Inf")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError("nearest_code: x contains NaN or Inf")


def nearest_code(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest codebook row for every row of ``x``.

    Args:
        x: ``[N, D]`` float32/float64/float16/bfloat16, any strides.
        codebook: ``[K, D]``, same dtype and device as ``x``, K >= 1.

    Returns:
        ``indices``: int64 ``[N]``, ``argmin_k ||x[n] - codebook[k]||²``, ties to the lowest k.
        ``dist2``: ``[N]`` that minimum squared distance (float64 for float64 input, else float32).
    """
    check_inputs(x, codebook)
    out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    n, k = x.shape[0], codebook.shape[0]
    indices = torch.empty(n, dtype=torch.int64, device=x.device)
    dist2 = torch.empty(n, dtype=out_dtype, device=x.device)
    e = codebook.to(torch.float64)
    step = max(1, _CHUNK_ELEMENTS // k)
    for start in range(0, n, step):
        xs = x[start : start + step].to(torch.float64)
        d = torch.cdist(xs, e, compute_mode="donot_use_mm_for_euclid_dist").square_()
        best, arg = d.min(dim=1)  # first minimum: the lowest index among exact ties
        indices[start : start + step] = arg
        dist2[start : start + step] = best.to(out_dtype)
    return indices, dist2
