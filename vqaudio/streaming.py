"""Real-time streaming: codes out while audio comes in (:class:`StreamEncoder`), audio out while codes come in
(:class:`StreamDecoder`), and the algorithmic latency of the pair (:func:`latency_of`).

::

    enc = codec.stream_encoder()            # push float32 [C, t] at the model's rate (or pass sample_rate=)
    dec = codec.stream_decoder()
    for x in chunks:                        # any sizes, down to one sample
        y = dec.push(enc.push(x))           # codes [C, n_q, f] of every frame now complete; audio [C, t] now final
    y = dec.push(enc.flush()); y_end = dec.flush()

**Exact codes.** A convolution's float result at one position depends on the shape of the tensor it is
computed in (oneDNN/BLAS blocking differs with the length), so computing a frame once in a 20 ms piece
and once in a 15 s chunk can round differently and flip a code at a near-tie. The stream encoder
therefore computes every frame from a window fixed by the frame's index alone: its codes are the same
bits whatever the push sizes and thread count. :meth:`vqaudio.codec.Codec.encode` runs the whole file in
long chunks instead (about 3x faster than this encoder fed the whole file, which is what the offline
speed target needs); its codes equal the stream's except at float near-ties (a few in 10^4 frames on speech).
Making both the same bits at full speed needs a conv whose summation order does not depend on the
tensor's length (a C++ kernel for the encoder's layers); not done yet. Frames come in blocks of ``block`` frames; block ``b`` is computed from the input frames
``[max(0, b G - left), (b + 1) G - 1 + right)`` (``G = block``; ``left``/``right``: the encoder's receptive
field rounded up to whole frames). Samples not received yet are zeros in that window: they lie outside
the receptive field of every frame emitted from it, and a conv output is a sum over its own receptive
field only, so the frame's float value is the same whether the rest of the window holds zeros (while
streaming) or signal (offline). Each push recomputes the current block's window (a few ms) and emits
the frames whose receptive field is complete (``f hop + right_context < received``). The frames
whose receptive field reaches the end of the signal (at most ``right`` of them) are computed at
:meth:`StreamEncoder.flush` from the window ``[max(0, first - left), F)`` that ends at the (hop-padded)
end, where the zero padding of every layer is that of the whole file; a block 0 window starts at
sample 0 likewise. Block windows are computed one at a time with the same batch (the channels): a
conv run at another batch size rounds differently too.

**Decoding** needs no such care (audio is compared to float rounding, not bit for bit): the decoder
runs layer by layer on state (:mod:`vqaudio.models.stream_layers`, as EnCodec's and Moshi's streaming
convs) and emits every sample whose inputs have arrived (at most ``decoder_context[1]`` frames later).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vqaudio.models.vqvae import VQVAE, SeriesStats

__all__ = ["Latency", "latency_of", "StreamEncoder", "StreamDecoder"]


@contextlib.contextmanager
def _small_convs() -> Iterator[None]:
    """Convs of the encoder's windows without oneDNN: PyTorch's own im2col + GEMM convs give every output the
    same bits whatever the number of threads (oneDNN's do not), and cost less per call on short windows."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """A push's work on one intra-op thread: its convs are too small to split (20 ms pushes at two threads were 1.5x
    to ~70x slower than at one on a shared 2-core machine, the worst when other processes load the cores: each
    parallel region waits for a descheduled thread), and a pipe's encoder and decoder then use a core each. Codes
    do not depend on the thread count (:func:`_small_convs`)."""
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


MAX_BATCH = 8  # items per encoder call when windows are batched (offline)


@dataclass(frozen=True)
class Latency:
    """Algorithmic latency of streaming encode + decode: a decoded sample ``t`` is final once input
    samples ``0 .. t + samples`` have been pushed (``ms`` at the model's rate; ``None`` for series without a rate).
    ``encoder``: samples of right context of a frame; ``decoder``: frames of right context of an output sample."""

    samples: int
    ms: float | None
    encoder: int
    decoder: int


def latency_of(model: VQVAE) -> Latency:
    """The :class:`Latency` of ``model``'s receptive fields: output sample ``t`` of frame ``t // hop``
    depends on frames up to ``t // hop + decoder_right``, and frame ``g`` is out once sample ``g hop + encoder_right``
    is in; the worst case (``t`` the first sample of a frame) is ``encoder_right + decoder_right * hop``."""
    enc_right = model.encoder_context[1]
    dec_right = model.decoder_context[1]
    samples = enc_right + dec_right * model.hop
    rate = model.config.sample_rate
    return Latency(samples, None if rate is None else 1000.0 * samples / rate, enc_right, dec_right)


class StreamEncoder:
    """Codes of the frames that are complete, as input arrives (see the module docstring).

    ``push(x [C, t])`` returns int64 ``[items, n_q, f]`` (``f`` may be 0); ``flush()`` the rest. Audio models
    code each channel as an item (``items = C``); series models code the ``C`` channels together
    (``items = 1``) normalised with ``stats`` (the whole series' RevIN statistics). ``resampler``: an
    eager :class:`vqaudio.codec.StreamResampler` from the input's rate to the model's, or ``None``.
    """

    def __init__(self, model: VQVAE, n_q: int, block: int = 8, stats: SeriesStats | None = None,
                 device: torch.device | str = "cpu", resampler=None) -> None:
        if block < 1:
            raise ValueError(f"StreamEncoder: block must be >= 1 frame, got {block}")
        self.model, self.n_q, self.block, self.stats, self.device = model, n_q, block, stats, device
        self.hop = model.hop
        left, self.right_context = model.encoder_context
        self.left = -(-left // self.hop)  # frames of input before a block's first frame
        self.right = -(-(self.right_context + 1) // self.hop)  # input frames f .. f + right - 1 hold frame f's field
        self.joint, self.resampler = model.config.kind == "series", resampler
        self.buf: Tensor | None = None  # [C, n]: input samples from `start` (at the model's rate)
        self.start = self.received = self.done = 0

    @property
    def frames_ready(self) -> int:
        """Frames whose receptive field lies in the samples received so far."""
        return max(0, (self.received - self.right_context - 1) // self.hop + 1)

    def push(self, x: Tensor) -> Tensor:
        """Add samples ``[C, t]``; return the codes ``[items, n_q, f]`` of the frames now complete."""
        with one_thread():
            return self._push(x)

    def _push(self, x: Tensor) -> Tensor:
        x = x.detach().to("cpu", torch.float32)
        if self.resampler is not None:
            x = torch.cat([x[..., :0], *self.resampler.push(x)], dim=-1)
        self.buf = x if self.buf is None else torch.cat([self.buf, x], dim=-1)
        self.received += x.shape[-1]
        jobs, ready = [], self.frames_ready
        while self.done < ready:
            b = self.done // self.block
            upto = min(ready, (b + 1) * self.block)
            lo, hi = b * self.block, (b + 1) * self.block
            jobs.append((max(0, lo - self.left), hi - 1 + self.right, lo, hi, self.done - lo, upto - lo))
            self.done = upto
        out = self._run(jobs)
        keep = max(0, (self.done // self.block) * self.block - self.left) * self.hop  # the next window's start
        self.buf, self.start = self.buf[..., keep - self.start :], keep
        return torch.cat(out, dim=-1) if out else self._empty()

    def flush(self) -> Tensor:
        """End of input: the codes of the remaining frames (those whose field reaches the end)."""
        with one_thread():
            return self._flush()

    def _flush(self) -> Tensor:
        head = self._empty()
        if self.resampler is not None:
            rest, self.resampler = list(self.resampler.finish()), None
            head = self._push(torch.cat(rest, dim=-1)) if rest else head
        frames = -(-self.received // self.hop)
        if self.done >= frames:
            return head
        codes = self._run([(max(0, self.done - self.left), frames, self.done, frames, 0, frames - self.done)])
        self.done = frames
        return torch.cat([head, *codes], dim=-1)

    def _empty(self) -> Tensor:
        items = 1 if self.joint else (0 if self.buf is None else self.buf.shape[0])
        return torch.zeros(items, self.n_q, 0, dtype=torch.int64)

    def _window(self, a: int, e: int) -> Tensor:
        """The encoder input ``[items, C, n]`` of the window of input frames ``[a, e)``, zeros past the samples
        received (series: the mean, which normalises to the zeros of the whole file's padding)."""
        x = self.buf[..., a * self.hop - self.start : e * self.hop - self.start]
        pad = (e - a) * self.hop - x.shape[-1]
        if pad and self.stats is not None:
            x = torch.cat([x, self.stats.mean.reshape(-1, 1).to(x).expand(-1, pad)], dim=-1)
        x = F.pad(x, (0, (e - a) * self.hop - x.shape[-1]))
        return x[None] if self.joint else x[:, None]

    def _run(self, jobs: list[tuple[int, int, int, int, int, int]]) -> list[Tensor]:
        """Codes for each job ``(a, e, lo, hi, i, j)``: frames ``[lo, hi)`` (a block, or the tail) computed from the
        window of input frames ``[a, e)``, of which ``[lo + i, lo + j)`` are returned. Windows of one length run
        together, at most :data:`MAX_BATCH` items a call (PyTorch's GEMM convs give each item the same bits at any
        batch size up to 15, not beyond); each job's frames are quantised on their own (a code-space projection is
        a matrix product, whose rounding may depend on the number of rows)."""
        out: list[Tensor] = []
        k = 0
        while k < len(jobs):
            a, e = jobs[k][:2]
            group = [jobs[k]]
            items = self._window(a, e).shape[0]
            while (k + len(group) < len(jobs) and jobs[k + len(group)][1] - jobs[k + len(group)][0] == e - a
                   and (len(group) + 1) * items <= MAX_BATCH):
                group.append(jobs[k + len(group)])
            k += len(group)
            x = torch.cat([self._window(ja, je) for ja, je, *_ in group]).to(self.device)
            with torch.inference_mode(), _small_convs():
                z = self.model.encoder(self.model.normalize(x, self.stats)[0])
                for n, (ja, _, lo, hi, i, j) in enumerate(group):
                    zz = z[n * items : (n + 1) * items, :, lo - ja : hi - ja]
                    out.append(self.model.quantizer.encode(zz, self.n_q).cpu()[..., i:j])
        return out


class StreamDecoder:
    """Audio (or series) ``[C, t]`` that is final, as codes ``[items, n_q, f]`` arrive; ``flush()`` the rest.

    The decoder runs layer by layer on state (:mod:`vqaudio.models.stream_layers`): each push costs about what
    its frames cost offline. The output is that of decoding all the codes at once at the model's rate
    (``F * hop`` samples; pass ``length`` to :meth:`flush` to trim the padding of the last frame), to float rounding.
    """

    def __init__(self, model: VQVAE, stats: SeriesStats | None = None, device: torch.device | str = "cpu") -> None:
        from vqaudio.models.stream_layers import streaming

        self.model, self.stats, self.device = model, stats, device
        self.joint = model.config.kind == "series"
        self.stack = streaming(model.decoder)
        self.emitted, self.items = 0, None

    def push(self, codes: Tensor) -> Tensor:
        """Add codes ``[items, n_q, f]``; return the samples ``[C, t]`` now final (``t`` may be 0)."""
        self.items = codes.shape[0]
        if codes.shape[-1] == 0:
            return self._out(None)
        with torch.inference_mode(), one_thread():
            z = self.model.quantizer.decode(codes.long().to(self.device))
            return self._out(self.stack.push(z))

    def flush(self, length: int | None = None) -> Tensor:
        """End of codes: the remaining samples, the total trimmed to ``length`` if given."""
        with torch.inference_mode(), one_thread():
            y = self._out(self.stack.flush())
        if length is not None:
            y = y[..., : max(0, length - (self.emitted - y.shape[-1]))]
            self.emitted = min(self.emitted, length)
        return y

    def _out(self, y: Tensor | None) -> Tensor:
        channels = self.model.config.channels if self.joint else (self.items or 1)
        if y is None:
            return torch.zeros(channels, 0)
        y = self.model.denormalize(y, self.stats).cpu()
        y = y[0] if self.joint else y[:, 0]
        self.emitted += y.shape[-1]
        return y
