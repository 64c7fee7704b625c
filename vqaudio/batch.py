"""Padding-aware batches of short items of different lengths, with the results of coding them one at a time.

Items are stacked into ``[B, C, max length]`` with zeros after each item. That alone would change the
last frames of a shorter item: in a layer-by-layer conv stack, the zeros one item's layer sees past its end
are replaced, from the second layer on, by that layer's response to the padding (biases, activations). So
while a batch runs, every convolution of the encoder or decoder gets its input with each item's positions
past its own end set to zero (:func:`masked`): exactly what the zero padding of the item alone gives, layer
by layer (models/conv.py: every layer pads with zeros at the two ends only and is otherwise
position-independent). The encoder's input is masked at each item's sample count, so series normalised
before padding see zeros there too.

Lengths at a layer are proportional: an item of ``F`` frames has ``F * hop / r`` positions where the batch has
``F_max * hop / r`` (``r``: the layer's downsampling); the hooks read them off the input's length.
Batches are formed from items sorted by length, at most ``budget`` padded samples each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqaudio.models.conv import Conv, ConvTranspose
from vqaudio.postfilter import Postfilter

__all__ = ["masked", "batches", "pad_stack", "resample_rows"]


def _zero_past(x: Tensor, valid: list[int]) -> Tensor:
    """``x [B, C, L]`` with ``x[i, :, valid[i]:] = 0``."""
    keep = torch.arange(x.shape[-1], device=x.device)[None, :] < torch.tensor(valid, device=x.device)[:, None]
    return torch.where(keep[:, None, :], x, torch.zeros((), dtype=x.dtype, device=x.device))


@contextlib.contextmanager
def masked(stack: nn.Module, frames: list[int], samples: list[int] | None = None) -> Iterator[None]:
    """While in the block, each :class:`~vqaudio.models.conv.Conv` / :class:`~vqaudio.models.conv.ConvTranspose`
    in ``stack`` (an encoder or decoder) zeroes its input past each item's end: item ``i`` has ``frames[i]``
    of the batch's ``max(frames)`` frames, at every layer's resolution. ``samples``: the items' lengths at
    the stack's input (masked there too: an encoder input of ``samples[i] <= frames[i] * hop`` samples)."""
    f_max = max(frames)

    def at_layer(module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if x.shape[-1] % f_max:
            raise RuntimeError(f"masked batch: a layer input of length {x.shape[-1]} is not a multiple of {f_max} frames")
        per_frame = x.shape[-1] // f_max
        return (_zero_past(x, [f * per_frame for f in frames]), *args[1:])

    def at_input(module: nn.Module, args: tuple) -> tuple | None:
        return (_zero_past(args[0], samples), *args[1:]) if min(samples) < args[0].shape[-1] else None

    # items of as many frames as the batch have nothing past their end at any layer: no mask to apply there
    layers = [m for m in stack.modules() if isinstance(m, Conv | ConvTranspose)] if min(frames) < f_max else []
    hooks = [m.register_forward_pre_hook(at_layer) for m in layers]
    if samples is not None:
        hooks.append(stack.register_forward_pre_hook(at_input))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def batches(sizes: list[int], budget: int) -> list[list[int]]:
    """Indices of items grouped by size (largest first): each group's ``len * max size`` is at most ``budget``
    (a larger item goes alone), so little of a batch is padding."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * sizes[groups[-1][0]] <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def pad_stack(rows: list[Tensor], length: int) -> Tensor:
    """``[B, ..., length]`` from ``rows`` ``[..., n_i]`` (``n_i <= length``), zero-padded at the end."""
    if all(r.shape[-1] == length for r in rows):
        return torch.stack(rows)
    return torch.stack([F.pad(r, (0, length - r.shape[-1])) for r in rows])


def resample_rows(resample: nn.Module, rows: list[Tensor], lengths: list[int], budget: int) -> list[Tensor]:
    """``resample`` (a :class:`torchaudio.transforms.Resample`) of each row ``[C_i, n_i]``, cut to ``lengths[i]``:
    rows are zero-padded into batches, which is what resampling one row pads it with."""
    out: list[Tensor | None] = [None] * len(rows)
    flat = [(i, c) for i, r in enumerate(rows) for c in range(r.shape[0])]
    for group in batches([rows[i].shape[-1] for i, _ in flat], budget):
        y = resample(pad_stack([rows[flat[g][0]][flat[g][1]] for g in group], rows[flat[group[0]][0]].shape[-1]))
        for k, g in enumerate(group):
            i, c = flat[g]
            if out[i] is None:
                out[i] = y.new_empty(rows[i].shape[0], lengths[i])
            out[i][c] = y[k, : lengths[i]]
    return out


# --- Codec.encode / Codec.decode of several items ------------------------------------------------

BUDGET_CHUNKS = 1  # a batch holds at most one chunk of the codec (padded samples or frames): more is slower on a CPU


def _resampler(orig: int, new: int, chunk_seconds: float) -> tuple[float, nn.Module | None]:
    """``(limit, resample)``: streaming fewer than ``limit`` samples from ``orig`` to ``new`` Hz is one call of
    ``resample`` (what a batch reproduces); ``(inf, None)`` for the identity."""
    from vqaudio.codec import StreamResampler

    rs = StreamResampler(orig, new, chunk_seconds)
    if rs.identity:
        return float("inf"), None
    r = rs.runner
    return (r.chunk + r.context) * r.unit, rs.resample


def _encode_rows(codec, rows: list[Tensor], n_q: int, stats: list | None) -> list[Tensor]:
    """Codes int32 ``[n_q, F_i]`` of encoder inputs ``rows`` ``[C, n_i]`` (series: with their ``SeriesStats``)."""
    from vqaudio.models.vqvae import SeriesStats

    hop, out = codec.hop, [None] * len(rows)
    frames = [-(-r.shape[-1] // hop) for r in rows]
    for group in batches([f * hop for f in frames], BUDGET_CHUNKS * codec.chunk_frames * hop):
        f_max = frames[group[0]]
        x = pad_stack([rows[i] for i in group], f_max * hop).to(codec.device)
        st = None
        if stats is not None:
            st = SeriesStats(*(torch.cat([getattr(stats[i], k) for i in group]).to(codec.device) for k in ("mean", "std")))
        with masked(codec.model.encoder, [frames[i] for i in group], [rows[i].shape[-1] for i in group]):
            codes = codec.model.encode(x, n_q, stats=st).to("cpu", torch.int32)
        for k, i in enumerate(group):
            out[i] = codes[k, :, : frames[i]]
    return out


def _per_item(rows: list[tuple[int, int]], codes: list[Tensor]) -> dict[int, Tensor]:
    """``{item: codes [rows of the item, n_q, F]}`` from the codes ``[n_q, F]`` of rows ``(item, channel)``."""
    per_item: dict[int, list[Tensor]] = {}
    for (i, _), c in zip(rows, codes, strict=True):
        per_item.setdefault(i, []).append(c)
    return {i: torch.stack(c) for i, c in per_item.items()}


def _series_stats(codec, items: list[Tensor]) -> list:
    """The RevIN ``SeriesStats`` of each series ``[C, T]`` that coding it alone computes (``[C, 1, 1]``: a row per
    channel for per-channel models, else ``[1, C, 1]``), computed at once for the items of one shape."""
    out: list = [None] * len(items)
    shapes: dict[tuple[int, ...], list[int]] = {}
    for k, x in enumerate(items):
        shapes.setdefault(tuple(x.shape), []).append(k)
    for (c, t), idx in shapes.items():
        x = torch.stack([items[k] for k in idx])  # [n, C, T]
        st = codec.model.coding_stats(x.view(-1, 1, t) if codec.per_channel else x)  # [n * C, 1, 1] or [n, C, 1]
        rows = c if codec.per_channel else 1
        for j, k in enumerate(idx):
            out[k] = type(st)(st.mean[j * rows : (j + 1) * rows], st.std[j * rows : (j + 1) * rows])
    return out


def encode_many(codec, items: list[Tensor], sample_rate: int | None, n_q: int | None) -> list:
    """:meth:`vqaudio.codec.Codec.encode` of each item ``[C, T_i]`` (checked; audio float32, series float64): a list of ``Codes`` equal to
    encoding them one by one. Items that one call of the codec would chunk are encoded one by one."""
    from vqaudio.errors import AudioError
    from vqaudio.input_warnings import ClipCounter, warn_rate
    from vqaudio.io import check_series_codable, resample_problem
    from vqaudio.models.vqvae import SeriesStats
    from vqaudio.series_resample import center_series
    from vqaudio.tokenfile import resampled_length

    n_q = codec._n_q(n_q)
    limit = (codec.chunk_frames + codec.encoder_overlap) * codec.hop  # samples at the model's rate
    out: list = [None] * len(items)
    if codec.kind == "series":
        for i, x in enumerate(items):
            if x.shape[0] != codec.channels and not codec.per_channel:
                raise AudioError(f"series has {x.shape[0]} channel(s) but model {codec.name!r} codes {codec.channels}",
                                 f"input[{i}]")
            check_series_codable(x, codec.min_length, f"input[{i}]")
        short = [i for i, x in enumerate(items) if x.shape[-1] < limit]
        centered = {i: center_series(items[i]) for i in short}  # float32 without the (float64) mean, as encode_series
        # rows: each channel alone with its own RevIN statistics (per-channel models), else the whole series
        rows = [(i, c) for i in short for c in range(items[i].shape[0] if codec.per_channel else 1)]
        with torch.inference_mode():
            stats = dict(zip(short, _series_stats(codec, [centered[i][0] for i in short]), strict=True))
            codes = _encode_rows(codec, [centered[i][0][c : c + 1] if codec.per_channel else centered[i][0]
                                         for i, c in rows], n_q,
                                 [SeriesStats(stats[i].mean[c : c + 1], stats[i].std[c : c + 1]) for i, c in rows])
        for i, c in _per_item(rows, codes).items():
            st = SeriesStats(stats[i].mean.double() + centered[i][1].view_as(stats[i].mean), stats[i].std)
            out[i] = codec._codes(c, items[i].shape[-1], items[i].shape[0], None, n_q, st, None)
        return [o if o is not None else codec.encode_series(x, n_q, None) for o, x in zip(out, items, strict=True)]
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
        raise AudioError(f"sample rate must be a positive integer, got {sample_rate!r}", "input")
    problem = resample_problem(sample_rate, codec.sample_rate)
    if problem:
        raise AudioError(problem, "input")
    fits, resample = _resampler(sample_rate, codec.sample_rate, codec.chunk_seconds)
    short = [i for i, x in enumerate(items)
             if x.shape[-1] < fits and resampled_length(x.shape[-1], codec.sample_rate, sample_rate) < limit]
    with torch.inference_mode():
        rows = [items[i] for i in short]
        if resample is not None:
            lengths = [resampled_length(x.shape[-1], codec.sample_rate, sample_rate) for x in rows]
            rows = resample_rows(resample, rows, lengths, BUDGET_CHUNKS * round(codec.chunk_seconds * sample_rate))
        channels = [(k, c) for k, r in enumerate(rows) for c in range(r.shape[0])]  # mono model: a row per channel
        codes = _per_item(channels, _encode_rows(codec, [rows[k][c : c + 1] for k, c in channels], n_q, None))
    for k, i in enumerate(short):
        out[i] = codec._codes(codes[k], items[i].shape[-1], items[i].shape[0], sample_rate, n_q, None, None)
        clips = ClipCounter()
        clips.push(items[i])
        clips.warn(f"input[{i}]")
    if short:
        warn_rate("input", sample_rate, codec.sample_rate)
    return [o if o is not None else codec.encode(x, sample_rate, n_q) for o, x in zip(out, items, strict=True)]


def decode_many(codec, codes_list: list, sample_rate: str | int) -> list[tuple[Tensor, int | None]]:
    """:meth:`vqaudio.codec.Codec.decode` of each ``Codes``: a list of ``(wav [C, T], rate)`` equal to decoding them
    one by one. Items that one call of the codec would chunk are decoded one by one."""
    from vqaudio.codec import Codes
    from vqaudio.errors import TokenFileError
    from vqaudio.models.vqvae import SeriesStats

    for i, c in enumerate(codes_list):
        if not isinstance(c, Codes):
            raise TokenFileError(f"decode takes Codes or a list of Codes, got {type(c).__name__} at [{i}]")
    plans = [codec.decode_plan(c, sample_rate) for c in codes_list]
    out: list = [None] * len(codes_list)
    resamplers = {rate: (float("inf"), None) if rate is None else _resampler(codec.sample_rate, rate, codec.chunk_seconds)
                  for rate in {p[0] for p in plans}}
    max_frames = codec.chunk_frames + codec.decoder_overlap  # what one call decodes in one chunk
    short = [i for i, (c, p) in enumerate(zip(codes_list, plans, strict=True))
             if c.model_length < resamplers[p[0]][0] and c.frames < max_frames and c.decimate == 1]
    rows = [(i, k) for i in short for k in range(codes_list[i].items)]  # (item, coded row): a channel, or a series
    decoded: dict[tuple[int, int], Tensor] = {}
    with torch.inference_mode():
        for n_q in sorted({codes_list[i].n_q for i in short}):
            these = [r for r in rows if codes_list[r[0]].n_q == n_q]
            frames = [codes_list[i].frames for i, _ in these]
            for group in batches(frames, BUDGET_CHUNKS * codec.chunk_frames):
                f_max = frames[group[0]]
                x = pad_stack([codes_list[these[g][0]].codes[these[g][1]] for g in group], f_max).to(codec.device)
                st = None
                if codec.kind == "series":
                    st = SeriesStats(*(torch.cat([getattr(plans[i][2], k)[row : row + 1] for i, row in
                                                  (these[g] for g in group)]).to(codec.device) for k in ("mean", "std")))
                with masked(codec.model.decoder, [frames[g] for g in group]):
                    y = codec.model.decode(x, stats=st).cpu()  # [B, C, f_max * hop]
                for k, g in enumerate(group):
                    i, row = these[g]
                    item = y[k, :, : frames[g] * codec.hop]
                    if codec.postfilter:  # per item, on its whole frames (as Codec.decode does)
                        item = Postfilter.apply(item, codec.sample_rate, codec.hop)
                    decoded[(i, row)] = item[:, : codes_list[i].model_length]
        by_rate: dict[int | None, list[int]] = {}
        for i in short:
            by_rate.setdefault(plans[i][0], []).append(i)
        for rate, idx in by_rate.items():
            if codec.kind == "series" and not codec.per_channel:
                wavs = [decoded[(i, 0)] for i in idx]  # [C, length]
            else:  # a row per channel
                wavs = [torch.cat([decoded[(i, k)] for k in range(codes_list[i].items)]) for i in idx]  # [C, n]
            lengths = [plans[i][1] for i in idx]
            if resamplers[rate][1] is not None:
                budget = BUDGET_CHUNKS * round(codec.chunk_seconds * codec.sample_rate)
                wavs = resample_rows(resamplers[rate][1], wavs, lengths, budget)
            for i, w, n in zip(idx, wavs, lengths, strict=True):
                out[i] = (w[..., :n].contiguous(), rate)
    return [o if o is not None else codec.decode(c, sample_rate) for o, c in zip(out, codes_list, strict=True)]
