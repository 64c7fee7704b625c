"""Quantisers of ``[B, D, T]`` latents, one family per file; every one returns the same output types.

- ``vq.py``: :class:`VectorQuantizer` (VQ-VAE; EMA or gradient codebook, k-means init, restarts).
- ``residual.py``: :class:`Residual` (the stack of any family: residual stages, quantiser dropout) and
  :class:`ResidualVQ`.
- ``fsq.py``: :class:`FSQ`, :class:`ResidualFSQ` (finite scalar quantisation, Mentzer et al. 2024).
- ``lfq.py``: :class:`LFQ`, :class:`ResidualLFQ` (lookup-free quantisation, MAGVIT-v2; ``spherical``: BSQ).
- ``simvq.py``: :class:`SimVQ`, :class:`ResidualSimVQ` (a frozen random codebook times a learned map).
- ``common.py``: :class:`VQOutput` (single stage), :class:`RVQOutput` (residual), shared helpers.
- ``distributed.py``: the all-reduce and broadcast helpers that keep codebooks identical under DDP.
"""

from .common import RVQOutput, VQOutput
from .fsq import FSQ, ResidualFSQ
from .lfq import LFQ, ResidualLFQ
from .residual import Residual, ResidualVQ
from .simvq import ResidualSimVQ, SimVQ
from .vq import VectorQuantizer

__all__ = ["VQOutput", "RVQOutput", "VectorQuantizer", "Residual", "ResidualVQ", "FSQ", "ResidualFSQ", "LFQ", "ResidualLFQ",
           "SimVQ", "ResidualSimVQ"]
