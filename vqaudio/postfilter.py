"""The decoder's formant post-filter, as speech codecs have it: decoded audio ``[C, n]`` in, the same length out.

CELP decoders (G.729, AMR) and Codec2 sharpen the formants of their output with an adaptive filter
``A(z/0.55) / A(z/0.7)`` (``A`` the LPC polynomial of the decoded signal itself) plus a tilt compensation and a gain
that keeps each subframe's energy; it costs no bits and no model capacity. A model whose config sets
``postfilter: true`` (the shipped ``speech-8k``) passes everything it decodes through :class:`Postfilter`; ``vqaudio
decode --no-postfilter`` and ``load_codec(..., postfilter=False)`` turn it off. The filter is causal and adds no
delay where blocks come in whole subframes (the model's hop, repeated up to 10 ms): the op is in
:mod:`vqaudio.ops.postfilter`, its measured effect in ``docs/models.md`` (the settings below were chosen on training
voices, then measured once on the unseen ones).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vqaudio.ops.postfilter import formant_postfilter, history

__all__ = ["Postfilter", "GAMMA_NUM", "GAMMA_DEN", "TILT", "ORDER", "subframe_for"]

GAMMA_NUM = 0.55  # bandwidth expansion of the numerator A(z/g): G.729's value
GAMMA_DEN = 0.7  # and of the denominator
TILT = 0.3  # fraction of the filter's first reflection coefficient taken back out (G.729: 0.8; 0.3 keeps more low band)
ORDER = 10  # LPC order (narrowband speech)


def subframe_for(sample_rate: int, hop: int) -> int:
    """Subframe of the post-filter: the smallest multiple of ``hop`` of at least 10 ms (``speech-8k``: 84 samples)."""
    return hop * max(1, math.ceil(0.01 * sample_rate / hop))


class Postfilter:
    """Streams ``[C, n]`` float blocks through the post-filter: ``push`` returns the samples now final (whole
    subframes), ``flush`` the rest (the last partial subframe, filtered as if followed by silence). Pieces of any
    size give the same samples as :meth:`apply` on the whole signal."""

    def __init__(self, sample_rate: int, hop: int) -> None:
        self.sample_rate = sample_rate
        self.subframe = subframe_for(sample_rate, hop)
        self.context = history(self.subframe, ORDER)
        self._history: Tensor | None = None  # [C, context] of unfiltered signal
        self._pending: Tensor | None = None  # [C, < subframe] waiting for a whole subframe (None: nothing pushed)

    def _filter(self, x: Tensor) -> Tensor:
        if self._history is None:
            self._history = x.new_zeros(x.shape[0], self.context)
        both = torch.cat([self._history, x], dim=-1)
        self._history = both[:, -self.context :]
        return formant_postfilter(both, self.context, self.subframe, ORDER, GAMMA_NUM, GAMMA_DEN, TILT,
                                  self.sample_rate)

    def push(self, y: Tensor) -> Tensor:
        """Add ``y [C, n]``; return ``[C, m]``, the filtered samples now final."""
        y = y.float()
        if self._pending is not None and self._pending.shape[-1]:
            y = torch.cat([self._pending, y], dim=-1)
        whole = y.shape[-1] // self.subframe * self.subframe
        self._pending = y[:, whole:]
        return self._filter(y[:, :whole]) if whole else y[:, :0]

    def flush(self) -> Tensor:
        """The samples still pending ``[C, r]``, ``r < subframe``, filtered with silence after them."""
        rest = self._pending
        if rest is None:
            return torch.zeros(0, 0)
        self._pending = rest[:, :0]
        if not rest.shape[-1]:
            return rest
        padded = torch.nn.functional.pad(rest, (0, self.subframe - rest.shape[-1]))
        return self._filter(padded)[:, : rest.shape[-1]]

    @classmethod
    def apply(cls, y: Tensor, sample_rate: int, hop: int) -> Tensor:
        """The whole signal ``y [C, n]`` filtered: ``[C, n]``."""
        pf = cls(sample_rate, hop)
        return torch.cat([pf.push(y), pf.flush()], dim=-1) if y.shape[-1] else y.float()
