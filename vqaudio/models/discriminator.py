"""Multi-scale STFT discriminator (EnCodec's MS-STFTD) and the adversarial losses that go with it.

Each scale takes the complex STFT of a ``[B, 1, T]`` waveform (hann window ``n``, hop ``n / 4``) as a
two-channel ``[B, 2, frames, n / 2 + 1]`` image (real, imaginary) and runs 2D convs over (time,
frequency): a ``(3, 9)`` conv in, three ``(3, 9)`` convs with time dilations 1, 2, 4 that halve the
frequency axis, a ``(3, 3)`` conv, and a ``(3, 3)`` conv out to one logit per cell; LeakyReLU(0.2) and
weight norm throughout. Every layer's output is also returned, for feature matching.

Losses (hinge GAN, as in EnCodec, SoundStream, DAC): the discriminator minimises
``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))``; the generator minimises ``mean(relu(1 - D(G(z))))``
and the relative feature-matching loss ``mean_l |f_l(x) - f_l(G(z))|_1 / mean |f_l(x)|``, each
averaged over scales. The discriminator is a training-time module: it is never part of a codec
checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["STFTDiscriminator", "MultiScaleSTFTDiscriminator", "discriminator_loss", "generator_loss", "feature_loss"]


class STFTDiscriminator(nn.Module):
    """One scale: ``[B, 1, T]`` -> (logits ``[B, 1, frames', bins']``, features of every layer)."""

    def __init__(self, n_fft: int, channels: int = 32, dilations: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [weight_norm(nn.Conv2d(2, channels, (3, 9), padding=(1, 4)))]
        for d in dilations:
            layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4))))
        layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.layers = nn.ModuleList(layers)
        self.out = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        spec = torch.stft(x.reshape(-1, x.shape[-1]).float(), self.n_fft, self.hop, window=self.window,
                          center=True, pad_mode="constant", return_complex=True)  # [B, bins, frames]
        h = torch.view_as_real(spec).permute(0, 3, 2, 1)  # [B, 2, frames, bins]
        features = []
        for layer in self.layers:
            h = F.leaky_relu(layer(h), 0.2)
            features.append(h)
        return self.out(h), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """STFT discriminators at ``fft_sizes``; ``forward(x [B, 1, T])`` -> (logits per scale, features per scale)."""

    def __init__(self, fft_sizes: list[int], channels: int = 32) -> None:
        super().__init__()
        if not fft_sizes or any(n < 16 for n in fft_sizes):
            raise ValueError(f"discriminator FFT sizes must be >= 16, got {fft_sizes}")
        self.scales = nn.ModuleList(STFTDiscriminator(n, channels) for n in fft_sizes)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        outs = [d(x) for d in self.scales]
        return [o[0] for o in outs], [o[1] for o in outs]


def discriminator_loss(real: list[Tensor], fake: list[Tensor]) -> Tensor:
    """Hinge loss of the discriminator, mean over scales: real logits pushed above 1, fake below -1."""
    return torch.stack([F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake, strict=True)]).mean()


def generator_loss(fake: list[Tensor]) -> Tensor:
    """Hinge loss of the generator, mean over scales."""
    return torch.stack([F.relu(1 - f).mean() for f in fake]).mean()


def feature_loss(real: list[list[Tensor]], fake: list[list[Tensor]]) -> Tensor:
    """Relative L1 feature matching (EnCodec): per layer ``mean|r - f| / mean|r|``, mean over layers and scales.

    ``real`` features are constants (computed without gradient or detached by the caller).
    """
    terms = [(r - f).abs().mean() / r.abs().mean().clamp_min(1e-8)
             for rs, fs in zip(real, fake, strict=True) for r, f in zip(rs, fs, strict=True)]
    return torch.stack(terms).mean()
