"""The adaptive formant post-filter of CELP decoders as an op: ``vqaudio::formant_postfilter``.

``formant_postfilter(x [B, T] float32, context, subframe, order, gamma_num, gamma_den, tilt, sample_rate) -> [B, T -
context]``: each subframe of ``subframe`` samples after the first ``context`` (history) samples of a row goes
through ``A(z/gamma_num) / A(z/gamma_den)`` (``A`` the order-``order`` LPC polynomial of the last ``3 * subframe``
samples), a first-order tilt compensation and a gain that keeps the subframe's energy (ITU-T G.729 section 4.2,
without its pitch filter). The full contract is in ``csrc/formant_postfilter.cpp``; :func:`formant_postfilter_reference`
is the same contract in PyTorch ops (float64 inside), used for every other device, when the extension lacks the op,
with ``VQAUDIO_KERNEL=reference``, and by the tests. ``context`` must be at least :func:`history` samples; a subframe
reads nothing older, so a signal filtered piece by piece, each piece with its history, equals the whole filtered
at once. The op has no backward (decoding only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vqaudio import ops

__all__ = ["formant_postfilter", "formant_postfilter_reference", "history", "has_compiled_postfilter"]

WARM = 64  # samples of warm-up before each subframe for the recursive filter
IMPULSE = 24  # samples of impulse response for the tilt estimate
LAG_HZ = 60.0  # bandwidth of the Gaussian lag window on the autocorrelation


def history(subframe: int, order: int) -> int:
    """Samples of history a subframe reads before its own: ``max(3 subframe, subframe + 64 + order)``."""
    return max(3 * subframe, subframe + WARM + order)


_COMPILED = ops.compiled_ops(("formant_postfilter",), "decoding uses the slower PyTorch ops")

if _COMPILED:

    @torch.library.register_fake("vqaudio::formant_postfilter")
    def _formant_postfilter_fake(x, context, subframe, order, gamma_num, gamma_den, tilt, sample_rate):
        return x.new_empty(x.shape[0], x.shape[1] - context)


def has_compiled_postfilter() -> bool:
    """Whether float32 CPU signals are post-filtered by the compiled kernel."""
    return _COMPILED


def _check(x: Tensor, context: int, subframe: int, order: int) -> None:
    if x.dim() != 2:
        raise ValueError(f"formant_postfilter: x must be 2-D [B, T], got shape {tuple(x.shape)}")
    if subframe <= 0 or not 0 < order < IMPULSE:
        raise ValueError(f"formant_postfilter: subframe must be positive and order in [1, {IMPULSE - 1}], "
                         f"got {subframe}, {order}")
    if not history(subframe, order) <= context <= x.shape[1]:
        raise ValueError(f"formant_postfilter: context must be in [{history(subframe, order)}, T], got {context}")
    if (x.shape[1] - context) % subframe:
        raise ValueError(f"formant_postfilter: T - context must be a multiple of subframe ({subframe}), "
                         f"got {x.shape[1] - context}")


def _levinson(r: Tensor, p: int) -> Tensor:
    """LPC polynomials ``[S, p + 1]`` (``a_0 = 1``) of autocorrelations ``r [S, p + 1]``."""
    a = torch.zeros_like(r)
    a[:, 0] = 1
    err = r[:, 0].clone()
    for i in range(1, p + 1):
        acc = r[:, i] + (a[:, 1:i] * r[:, 1:i].flip(-1)).sum(-1)
        k = -acc / err.clamp_min(1e-12)
        a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, 1:i].flip(-1)
        a[:, i] = k
        err = err * (1 - k * k).clamp_min(1e-6)
    return a


def _lfilter_all_pole(e: Tensor, ad: Tensor) -> Tensor:
    """``s[n] = e[n] - sum_{k>=1} ad[:, k] s[n - k]`` per row, zero state: ``e [S, N]``, ``ad [S, p + 1]``."""
    p = ad.shape[1] - 1
    s = torch.zeros(e.shape[0], e.shape[1] + p, dtype=e.dtype, device=e.device)
    taps = ad[:, 1:].flip(-1)  # [S, p], oldest first
    for n in range(e.shape[1]):
        s[:, n + p] = e[:, n] - (taps * s[:, n : n + p]).sum(-1)
    return s[:, p:]


def formant_postfilter_reference(x: Tensor, context: int, subframe: int, order: int, gamma_num: float,
                                 gamma_den: float, tilt: float, sample_rate: int) -> Tensor:
    """The contract in PyTorch ops (see ``csrc/formant_postfilter.cpp``): ``[B, T - context]``, ``x``'s dtype."""
    _check(x, context, subframe, order)
    B, T = x.shape
    L, p, W, M = subframe, order, 3 * subframe, WARM
    S = (T - context) // L + 1  # the subframes to filter, the one before the first output included
    xd = F.pad(x.double(), (W, 0))  # x[n] = 0 for n < 0; xd index = n + W
    starts = context - L + L * torch.arange(S, device=x.device)  # subframe starts a, in x's indices
    idx = lambda first, length: (starts + W + first)[:, None] + torch.arange(length, device=x.device)  # noqa: E731
    n = torch.arange(W, dtype=torch.float64, device=x.device)
    ham = 0.54 - 0.46 * torch.cos(2 * math.pi * n / (W - 1))
    seg = xd[:, idx(L - W, W)] * ham  # [B, S, W]
    r = torch.stack([(seg[..., k:] * seg[..., : W - k]).sum(-1) for k in range(p + 1)], -1)  # [B, S, p + 1]
    k = torch.arange(p + 1, dtype=torch.float64, device=x.device)
    r = r * torch.exp(-0.5 * (2 * math.pi * LAG_HZ * k / sample_rate) ** 2)
    r[..., 0] = r[..., 0] * 1.0001 + 1e-9
    lpc = _levinson(r.reshape(B * S, p + 1), p)  # [B S, p + 1]
    an, ad = lpc * gamma_num**k, lpc * gamma_den**k
    past = xd[:, idx(-M - p, M + L + p)].reshape(B * S, M + L + p)  # x[a - M - p : a + L]
    e = (past.unfold(1, p + 1, 1) * an.flip(-1)[:, None, :]).sum(-1)  # [B S, M + L]: e[n], n = a - M ..
    s = _lfilter_all_pole(e, ad)
    impulse = torch.zeros(B * S, IMPULSE, dtype=torch.float64, device=x.device)
    impulse[:, : p + 1] = an
    h = _lfilter_all_pole(impulse, ad)
    mu = tilt * ((h[:, :-1] * h[:, 1:]).sum(-1) / (h * h).sum(-1).clamp_min(1e-12)).clamp_min(0)
    t = s[:, M:] - mu[:, None] * s[:, M - 1 : -1]  # [B S, L]
    ex = xd[:, idx(0, L)].reshape(B * S, L).square().sum(-1)
    et = t.square().sum(-1)
    g = torch.where(et > 1e-20, (ex / et.where(et > 1e-20, torch.ones_like(et))).sqrt(), torch.ones_like(et))
    g = g.reshape(B, S)
    ramp = 1 - 0.9 ** torch.arange(1, L + 1, dtype=torch.float64, device=x.device)
    gains = g[:, :-1, None] + (g[:, 1:] - g[:, :-1])[..., None] * ramp  # [B, S - 1, L]
    y = t.reshape(B, S, L)[:, 1:] * gains
    return y.reshape(B, (S - 1) * L).to(x.dtype)


def formant_postfilter(x: Tensor, context: int, subframe: int, order: int, gamma_num: float, gamma_den: float,
                       tilt: float, sample_rate: int) -> Tensor:
    """The op (see the module docstring): the compiled kernel for float32 CPU tensors, else the reference."""
    if _COMPILED and x.dtype == torch.float32 and x.device.type == "cpu":
        return torch.ops.vqaudio.formant_postfilter(x, context, subframe, order, gamma_num, gamma_den, tilt, sample_rate)
    return formant_postfilter_reference(x, context, subframe, order, gamma_num, gamma_den, tilt, sample_rate)
