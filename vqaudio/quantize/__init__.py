"""Quantisers of ``[B, D, T]`` latents, one family per file; every one returns the same output types.

- ``vq.py``: :class:`VectorQuantizer` (VQ-VAE; EMA or gradient codebook, k-means init, restarts).
- ``residual.py``: :class:`ResidualVQ` (residual stages, quantiser dropout).
- ``common.py``: :class:`VQOutput` (single stage), :class:`RVQOutput` (residual), shared helpers.
- ``distributed.py``: the all-reduce and broadcast helpers that keep codebooks identical under DDP.
"""

from .common import RVQOutput, VQOutput
from .residual import ResidualVQ
from .vq import VectorQuantizer

__all__ = ["VQOutput", "RVQOutput", "VectorQuantizer", "ResidualVQ"]
