"""Adversarial training of an audio VQ-VAE: a multi-scale STFT discriminator with its own optimizer.

:class:`Adversary` is owned by the VQ-VAE training task (``vqaudio.train.VQVAETask``). Each training
step, after the generator's forward pass, :meth:`Adversary.step` first updates the discriminator on
``(x, recon.detach())`` (hinge loss, AdamW with its own learning rate, gradients averaged over the
torchrun ranks, clipped), then returns the generator's hinge loss and relative feature-matching loss
against the updated discriminator, which the task adds to the reconstruction loss (EnCodec's order).
Before ``start_step`` it does nothing, so a run can start reconstruction-only and switch on the
adversary later, including when resuming a run that had none. The discriminator and its optimizer
state travel in the training checkpoint (``exp/last``), never in the model checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vqaudio.checkpoint import load_optimizer_state, optimizer_state
from vqaudio.config_section import ConfigSection
from vqaudio.errors import ConfigError, is_finite_number
from vqaudio.models.discriminator import MultiScaleSTFTDiscriminator, discriminator_loss, feature_loss, generator_loss

__all__ = ["AdversarialConfig", "Adversary"]


@dataclass
class AdversarialConfig(ConfigSection):
    """Settings of the adversary (JSON section ``"adversarial"`` of a ``vqaudio train --config``).

    ``weight`` scales the generator's hinge loss and ``feature_weight`` the feature-matching loss;
    both 0 (the default) means no discriminator at all. The discriminator starts at ``start_step``
    and trains alone for ``warmup_steps`` before the generator gets its losses (when switching it on
    for a trained model, so the first adversarial gradients come from a discriminator that can tell
    real from reconstructed). ``fft_sizes`` empty: the three smallest of the model's spectral-loss
    sizes (``[128, 256, 512]`` at 8 kHz).
    """

    SECTION: ClassVar[str] = "adversarial"

    weight: float = 0.0
    feature_weight: float = 0.0
    start_step: int = 0
    warmup_steps: int = 0
    fft_sizes: list[int] = field(default_factory=list)
    channels: int = 32
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        def number(name: str, lo: float) -> None:
            v = getattr(self, name)
            if not is_finite_number(v) or v < lo:
                raise ConfigError(f"AdversarialConfig.{name} must be a number >= {lo}, got {v!r}")
            setattr(self, name, float(v))

        for name in ("weight", "feature_weight", "grad_clip"):
            number(name, 0.0)
        number("lr", 1e-12)
        for name, lo in (("start_step", 0), ("warmup_steps", 0), ("channels", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"AdversarialConfig.{name} must be an integer >= {lo}, got {v!r}")
        if not (isinstance(self.fft_sizes, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 16
                                                          for n in self.fft_sizes)):
            raise ConfigError(f"AdversarialConfig.fft_sizes must be a list of integers >= 16, got {self.fft_sizes!r}")
        betas = list(self.betas) if isinstance(self.betas, (list, tuple)) else None
        if not (betas and len(betas) == 2 and all(is_finite_number(b) and 0 <= b < 1 for b in betas)):
            raise ConfigError(f"AdversarialConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = [float(b) for b in betas]

    @property
    def enabled(self) -> bool:
        return self.weight > 0 or self.feature_weight > 0


class Adversary:
    """A :class:`MultiScaleSTFTDiscriminator` and its optimizer; see the module docstring."""

    def __init__(self, config: AdversarialConfig, default_fft_sizes: list[int], device: torch.device | str = "cpu") -> None:
        self.config = config
        sizes = config.fft_sizes or sorted(default_fft_sizes)[:3]
        self.discriminator = MultiScaleSTFTDiscriminator(sizes, config.channels).to(device)
        self.optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=config.lr, betas=tuple(config.betas))

    def to(self, device: torch.device | str) -> Adversary:
        self.discriminator.to(device)
        return self

    def _sync_grads(self) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            grads = [p.grad for p in self.discriminator.parameters() if p.grad is not None]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= dist.get_world_size()
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def step(self, x: Tensor, recon: Tensor, step: int) -> tuple[dict[str, Tensor], dict[str, float]]:
        """Update the discriminator on ``x`` / ``recon`` ``[B, 1, T]``; return the generator's loss terms.

        Returns ``({"adv": hinge, "feat": feature matching}, metrics)``: both empty before ``start_step``,
        the terms empty (the discriminator still trained) during the ``warmup_steps`` after it.
        """
        if step < self.config.start_step:
            return {}, {}
        d = self.discriminator
        d.train()
        d.requires_grad_(True)
        real_logits, _ = d(x)
        fake_logits, _ = d(recon.detach())
        d_loss = discriminator_loss(real_logits, fake_logits)
        self.optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self._sync_grads()
        metrics = {"d_loss": float(d_loss.detach())}
        if self.config.grad_clip > 0:
            metrics["d_grad_norm"] = float(nn.utils.clip_grad_norm_(d.parameters(), self.config.grad_clip))
        self.optimizer.step()
        d.requires_grad_(False)  # the generator's backward goes through D without touching its weights
        if step < self.config.start_step + self.config.warmup_steps:
            return {}, metrics
        with torch.no_grad():
            _, real_features = d(x)
        fake_logits, fake_features = d(recon)
        terms = {"adv": generator_loss(fake_logits), "feat": feature_loss(real_features, fake_features)}
        return terms, metrics

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Discriminator weights and optimizer state as (tensors, JSON) for a training checkpoint."""
        tensors, meta = optimizer_state(self.optimizer)
        tensors.update({f"d.{k}": v for k, v in self.discriminator.state_dict().items()})
        return tensors, meta

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state` saved."""
        self.discriminator.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("d.")})
        load_optimizer_state(self.optimizer, tensors, meta)
