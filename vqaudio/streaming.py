"""Real-time streaming: codes out while audio comes in (:class:`StreamEncoder`), audio out while codes come in
(:class:`StreamDecoder`), and the algorithmic latency of the pair (:func:`latency_of`).

::

    enc = codec.stream_encoder()            # push float32 [C, t] at the model's rate (or pass sample_rate=)
    dec = codec.stream_decoder()
    for x in chunks:                        # any sizes, down to one sample
        y = dec.push(enc.push(x))           # codes [C, n_q, f] of every frame now complete; audio [C, t] now final
    y = dec.push(enc.flush()); y_end = dec.flush()

**Exact codes.** The encoder streams layer by layer on state (:mod:`vqaudio.models.stream_layers`, as the decoder):
each conv keeps the inputs its next outputs read and emits every output whose inputs have all arrived, so a frame
comes out as soon as its receptive field is in (``f hop + right_context < received``) and each push costs about
what its samples cost offline. On the CPU the convs are ``exact_conv1d`` (:mod:`vqaudio.ops.exact_conv`): a conv
output has the same bits whatever the length, batch or thread count of the call, as in the offline encoder's
15 s chunks, and the nearest-code search treats each frame alone, so the streamed codes equal
:meth:`vqaudio.codec.Codec.encode`'s bit for bit, for any push sizes. At the end, :meth:`StreamEncoder.flush`
pads the input to a whole frame with zeros (series: normalised zeros) and lets every layer add its right padding,
as encoding the whole file does. (Elsewhere, e.g. on CUDA, ATen's convs round by their call's shape: codes then
equal the offline ones but for float near-ties.)

**Decoding** needs no such care (audio is compared to float rounding, not bit for bit): the decoder
runs layer by layer on state (:mod:`vqaudio.models.stream_layers`, as EnCodec's and Moshi's streaming
convs) and emits every sample whose inputs have arrived (at most ``decoder_context[1]`` frames later). On the CPU
its convs are exact ones too, for speed: ``exact_conv1d_narrow`` on a push's few positions, ELUs fused, transposed
convs as kernel-2 convs (about 23 conv calls a push); the offline decoder keeps ATen's convs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from vqaudio.errors import AudioError
from vqaudio.models.vqvae import VQVAE, SeriesStats
from vqaudio.ops import exact_conv
from vqaudio.postfilter import Postfilter

__all__ = ["Latency", "latency_of", "StreamEncoder", "StreamDecoder"]

TABLE_MAX = 1 << 16  # the most code vectors (stages x codebook size) a StreamDecoder copies into lookup tables


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """A push's work on one intra-op thread: its convs are too small to split (20 ms pushes at two threads were 1.5x
    to ~70x slower than at one on a shared 2-core machine, the worst when other processes load the cores: each
    parallel region waits for a descheduled thread), and a pipe's encoder and decoder then use a core each. Codes
    do not depend on the thread count (``exact_conv1d``)."""
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


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

    def __init__(self, model: VQVAE, n_q: int, stats: SeriesStats | None = None, device: torch.device | str = "cpu",
                 resampler=None) -> None:
        from vqaudio.models.stream_layers import streaming

        self.model, self.n_q, self.stats, self.device = model, n_q, stats, device
        self.hop = model.hop
        self.joint, self.resampler = model.config.kind == "series", resampler
        self.stack = streaming(model.encoder, exact=exact_conv.enabled_for(torch.device(device)))
        self.items: int | None = None
        self.channels: int | None = None  # of the first push
        self.received = 0

    def push(self, x: Tensor) -> Tensor:
        """Add samples ``[C, t]``; return the codes ``[items, n_q, f]`` of the frames now complete."""
        with torch.inference_mode(), one_thread():
            return self._push(x)

    def _push(self, x: Tensor) -> Tensor:
        x = torch.as_tensor(x).detach()
        if x.dim() == 1:  # [t]: one channel, as Codec.encode takes it
            x = x.unsqueeze(0)
        if x.dim() != 2 or not x.is_floating_point():
            raise AudioError(f"push takes float samples [C, t] (or [t]), got {x.dtype} {list(x.shape)}", "stream")
        if self.channels is not None and x.shape[0] != self.channels:
            raise AudioError(f"push: {x.shape[0]} channel(s) after {self.channels} before; a stream keeps its channels",
                             "stream")
        self.channels = x.shape[0]
        x = x.to("cpu", torch.float32)
        if self.resampler is not None:
            x = torch.cat([x[..., :0], *self.resampler.push(x)], dim=-1)
        self.items = 1 if self.joint else x.shape[0]
        self.received += x.shape[-1]
        return self._codes(self.stack.push(self._input(x)) if x.shape[-1] else None)

    def flush(self) -> Tensor:
        """End of input: the codes of the remaining frames (those whose field reaches the end)."""
        with torch.inference_mode(), one_thread():
            head = self._empty()
            if self.resampler is not None:
                rest, self.resampler = list(self.resampler.finish()), None
                head = self._push(torch.cat(rest, dim=-1)) if rest else head
            if self.items is None:
                return head
            pad = -self.received % self.hop  # the whole file's padding to a frame: zeros once normalised
            zeros = torch.zeros(self.items, self.model.config.channels if self.joint else 1, pad, device=self.device)
            parts = [z for z in (self.stack.push(zeros) if pad else None, self.stack.flush()) if z is not None]
            tail = self._codes(torch.cat(parts, dim=-1) if parts else None)
            self.received += pad
            return torch.cat([head, tail], dim=-1)

    def _input(self, x: Tensor) -> Tensor:
        """``x [C, t]`` as the encoder's normalised input ``[items, C', t]`` on the device."""
        x = x[None] if self.joint else x[:, None]
        return self.model.normalize(x.to(self.device), self.stats)[0]

    def _codes(self, z: Tensor | None) -> Tensor:
        if z is None or z.shape[-1] == 0:
            return self._empty()
        return self.model.quantizer.encode(z, self.n_q).cpu()

    def _empty(self) -> Tensor:
        items = 1 if self.joint else (self.items or 0)
        return torch.zeros(items, self.n_q, 0, dtype=torch.int64)


class StreamDecoder:
    """Audio (or series) ``[C, t]`` that is final, as codes ``[items, n_q, f]`` arrive; ``flush()`` the rest.

    The decoder runs layer by layer on state (:mod:`vqaudio.models.stream_layers`, exact convs on the CPU): each
    push costs about what its frames cost offline. The output is that of decoding all the codes at once at the model's rate
    (``F * hop`` samples; pass ``length`` to :meth:`flush` to trim the padding of the last frame), to float rounding.
    With a ``postfilter`` (:meth:`vqaudio.codec.Codec.new_postfilter`) the samples pass it as they become final.
    """

    def __init__(self, model: VQVAE, stats: SeriesStats | None = None, device: torch.device | str = "cpu",
                 postfilter: Postfilter | None = None) -> None:
        from vqaudio.models.stream_layers import streaming

        self.model, self.stats, self.device, self.postfilter = model, stats, device, postfilter
        self.joint = model.config.kind == "series"
        self.stack = streaming(model.decoder, exact=exact_conv.enabled_for(torch.device(device)))
        q = model.quantizer  # its stages' code vectors looked up per push (a copy: the model is not trained meanwhile)
        self.tables = q.decode_tables() if q.n_q * q.codebook_size <= TABLE_MAX else None
        self.emitted, self.items = 0, None

    def push(self, codes: Tensor) -> Tensor:
        """Add codes ``[items, n_q, f]``; return the samples ``[C, t]`` now final (``t`` may be 0)."""
        self.items = codes.shape[0]
        if codes.shape[-1] == 0:
            return self._out(None)
        with torch.inference_mode(), one_thread():
            z = self.model.quantizer.decode(codes.long().to(self.device), self.tables)
            return self._out(self.stack.push(z))

    def flush(self, length: int | None = None) -> Tensor:
        """End of codes: the remaining samples, the total trimmed to ``length`` if given."""
        with torch.inference_mode(), one_thread():
            y = self._out(self.stack.flush())
            if self.postfilter is not None:
                tail = self.postfilter.flush()
                self.emitted += tail.shape[-1]
                y = torch.cat([y, tail], dim=-1) if tail.numel() else y
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
        if self.postfilter is not None:
            y = self.postfilter.push(y)
        self.emitted += y.shape[-1]
        return y
