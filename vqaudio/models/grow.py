"""Function-preserving growth for warm starts (``vqaudio train --init``; Net2Net, Chen et al. 2016).

A model may start from a smaller one whose architecture differs only in having fewer decoder frame-rate residual
units (``VQVAEConfig.decoder_frame_dilations``, the source's list a prefix of the target's). The source's weights
keep their roles, and each new unit's output conv starts at zero, so the unit is the identity and the grown model
computes exactly what the source did; training then lets the units grow in.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from vqaudio.models.vqvae import VQVAE, VQVAEConfig

__all__ = ["can_grow", "grow_into"]


def _frame_units(config: VQVAEConfig) -> list[int]:
    return list(config.decoder_frame_dilations or [])


def can_grow(source: VQVAEConfig, target: VQVAEConfig) -> bool:
    """Whether ``target`` is ``source`` with more decoder frame-rate residual units appended."""
    have, want = _frame_units(source), _frame_units(target)
    same = dataclasses.replace(source, decoder_frame_dilations=target.decoder_frame_dilations)
    if not have:  # a source without frame units takes units of any kernel and bottleneck
        same = dataclasses.replace(same, decoder_frame_kernel=target.decoder_frame_kernel,
                                   decoder_frame_compress=target.decoder_frame_compress)
    return len(want) > len(have) and want[: len(have)] == have and same.architecture() == target.architecture()


def grow_into(target: VQVAE, source: VQVAE) -> None:
    """Load ``source``'s weights into ``target`` (``can_grow(source.config, target.config)``), the new units at
    identity: ``target`` then decodes exactly as ``source`` does."""
    if not can_grow(source.config, target.config):
        raise ValueError("grow_into: the target is not the source with more decoder frame-rate residual units")
    have, want = len(_frame_units(source.config)), len(_frame_units(target.config))
    state = target.state_dict()
    for key, value in source.state_dict().items():
        m = re.fullmatch(r"decoder\.layers\.(\d+)\.(.+)", key)
        if m and int(m[1]) > have:  # after the input conv (0) and the source's own units (1..have)
            key = f"decoder.layers.{int(m[1]) + want - have}.{m[2]}"
        state[key] = value
    target.load_state_dict(state)
    with torch.no_grad():
        for unit in target.decoder.layers[1 + have : 1 + want]:
            conv = unit.block[-1].conv
            weight = conv.parametrizations.weight.original0 if hasattr(conv, "parametrizations") else conv.weight
            weight.zero_()  # (weight norm: the gain g = 0 makes the whole kernel 0)
            conv.bias.zero_()
