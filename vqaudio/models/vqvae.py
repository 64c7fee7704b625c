"""The VQ-VAE (van den Oord et al. 2017) with a residual quantiser: ``VQVAEConfig`` and ``VQVAE``.

``x [B, C, T] --encoder--> z_e [B, D, F] --quantiser--> codes [B, n_q, F] --decoder--> x̂ [B, C, T]``
with ``F = ceil(T / hop)``. The quantiser is a residual stack of any family of :mod:`vqaudio.quantize`
(``VQVAEConfig.quantizer``: ``vq``, ``fsq``, ``lfq`` or ``simvq``). Inputs of any length are zero-padded on the right to a multiple of
``hop`` and outputs are trimmed back, so ``decode(encode(x), length=T)`` has ``x``'s length.

Series models (``kind="series"``) normalise each item and channel by its own mean and standard
deviation over time (RevIN, Kim et al. 2022, without the affine part) before the encoder and undo
it after the decoder. The statistics are a :class:`SeriesStats` ``(mean, std)`` of ``[B, C, 1]``
tensors: ``encode(x, return_stats=True)`` returns them next to the codes and ``decode(codes,
stats=stats)`` restores the original scale (without ``stats`` the output stays normalised, e.g.
for codes sampled from a prior). Chunked encoding of a series must compute the statistics once on
the whole series (``normalize``) and pass them to every chunk (``encode(chunk, stats=...)``).

Chunked encoding with exact codes: see ``vqaudio/models/conv.py`` and :meth:`VQVAE.encode_chunked`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqaudio.errors import ConfigError
from vqaudio.losses import SpectralLoss, default_fft_sizes, default_n_mels, series_mse, waveform_l1
from vqaudio.models.conv import Decoder, Encoder
from vqaudio.quantize import Residual, ResidualFSQ, ResidualLFQ, ResidualSimVQ, ResidualVQ
from vqaudio.quantize.fsq import check_levels, check_noise_dropout
from vqaudio.quantize.lfq import check_lfq_size

__all__ = ["VQVAEConfig", "VQVAE", "VQVAEOutput", "SeriesStats", "build_quantizer", "QUANTIZERS"]

KINDS = ("audio", "series")
QUANTIZERS = ("vq", "fsq", "lfq", "simvq")


# fields added after the first release, with the defaults that older readers implicitly assume
_NEWER_FIELDS: dict[str, Any] = {"encoder_causal": False, "decoder_causal": False, "encoder_hidden": None, "encoder_max_hidden": None, "encoder_dilations": None,
                                 "decoder_frame_dilations": None, "decoder_frame_kernel": None, "decoder_frame_compress": 2, "logmag_weight": 1.0, "quantizer": "vq", "rotation_trick": False, "codebook_dim": None,
                                 "l2_normalize": False, "levels": None, "entropy_loss_weight": 0.1,
                                 "diversity_gamma": 1.0, "spherical": False, "inv_temperature": 100.0,
                                 "noise_dropout": 0.5, "compressed_weight": 0.0, "compression": 0.3}
# quantiser options -> the quantisers they apply to (a non-default value elsewhere is a ConfigError)
_QUANTIZER_OPTIONS = {"rotation_trick": ("vq", "simvq"), "codebook_dim": ("vq",), "l2_normalize": ("vq",),
                      "levels": ("fsq",), "entropy_loss_weight": ("lfq",), "diversity_gamma": ("lfq",),
                      "spherical": ("lfq",), "inv_temperature": ("lfq",),
                      "noise_dropout": ("fsq",)}


@dataclass
class VQVAEConfig:
    """Hyper-parameters of :class:`VQVAE`; serialised as JSON next to the weights.

    ``sample_rate`` is in Hz for audio (required) and optional for series (then rates are per
    time step). Audio models are mono (``channels=1``); series models have their dataset's channels.
    Loss weights: audio uses ``l1_weight`` (waveform) and ``spectral_weight`` (multi-resolution
    log-mel + ``logmag_weight`` x log-STFT magnitude + ``compressed_weight`` x the MSE of STFT magnitudes
    raised to ``compression`` (:class:`vqaudio.losses.SpectralLoss`), at ``fft_sizes`` / ``n_mels``, empty =
    defaults for the rate);
    series use ``mse_weight`` on normalised data; both add ``vq_weight`` times the quantiser loss.

    ``quantizer`` picks the family of the ``n_q``-stage residual quantiser (:mod:`vqaudio.quantize`):
    ``vq`` (``ResidualVQ``: ``ema``, ``decay``, ``eps``, ``dead_threshold``, ``kmeans_init``, and
    ``rotation_trick``, ``codebook_dim``, ``l2_normalize``), ``fsq`` (``ResidualFSQ`` on ``levels``;
    ``codebook_size`` must be their product), ``lfq`` (``ResidualLFQ``: ``codebook_size`` a power of two,
    ``entropy_loss_weight``, ``diversity_gamma``, ``inv_temperature`` of the code distribution (default 100,
    as vector-quantize-pytorch), ``spherical`` for BSQ) or ``simvq`` (``ResidualSimVQ``,
    ``rotation_trick``, and ``decay``, ``dead_threshold`` for its dead-code restart). ``beta`` is the
    commitment weight of vq, lfq and simvq.
    """

    kind: str = "audio"
    sample_rate: int | None = 8000
    channels: int = 1
    hidden: int = 32
    max_hidden: int = 256
    dim: int = 64
    strides: list[int] = field(default_factory=lambda: [2, 4, 4])
    kernel: int = 7
    dilations: list[int] = field(default_factory=lambda: [1, 3, 9])
    activation: str = "elu"
    # encoder-only width and residual units (None: as the decoder). A light encoder makes encoding
    # fast while the decoder keeps the capacity (speech-8k: hidden 16, dilations [1]).
    encoder_hidden: int | None = None
    encoder_max_hidden: int | None = None
    encoder_dilations: list[int] | None = None
    # decoder residual units at the frame rate, after its input conv (None: none): cheap sequence capacity; their
    # kernel (None: ``kernel``) and bottleneck (channels // compress): a stream reads their weights once per push
    decoder_frame_dilations: list[int] | None = None
    decoder_frame_kernel: int | None = None
    decoder_frame_compress: int = 2
    # latency budget: causal convs (no lookahead) in the encoder / decoder; False: symmetric padding (speech-8k:
    # 274 samples of encoder lookahead + 11 frames of decoder lookahead = 149.75 ms, vqaudio/streaming.py)
    encoder_causal: bool = False
    decoder_causal: bool = False
    weight_norm: bool = True
    n_q: int = 4
    codebook_size: int = 256
    quantizer_dropout: float = 0.0
    beta: float = 0.25
    ema: bool = True
    decay: float = 0.99
    eps: float = 1e-5
    dead_threshold: float = 1.0
    kmeans_init: bool = True
    quantizer: str = "vq"
    rotation_trick: bool = False
    codebook_dim: int | None = None
    l2_normalize: bool = False
    levels: list[int] | None = None
    entropy_loss_weight: float = 0.1
    diversity_gamma: float = 1.0
    spherical: bool = False
    inv_temperature: float = 100.0
    noise_dropout: float = 0.5
    l1_weight: float = 1.0
    spectral_weight: float = 1.0
    logmag_weight: float = 1.0  # weight of the log-STFT-magnitude term inside the spectral loss (0: log-mel only)
    compressed_weight: float = 0.0  # weight of the power-law compressed magnitude MSE inside the spectral loss
    compression: float = 0.3  # its exponent c in |X|^c
    mse_weight: float = 1.0
    vq_weight: float = 1.0
    fft_sizes: list[int] = field(default_factory=list)
    n_mels: list[int] = field(default_factory=list)
    revin_eps: float = 1e-5
    # audio only: decoded audio passes the causal formant post-filter of vqaudio.postfilter (not part of training)
    postfilter: bool = False

    def __post_init__(self) -> None:
        for name in ("strides", "dilations", "encoder_dilations", "decoder_frame_dilations", "fft_sizes", "n_mels", "levels"):
            if isinstance(getattr(self, name), tuple):
                setattr(self, name, list(getattr(self, name)))
        self.validate()
        if self.kind == "audio" and not self.fft_sizes:
            self.fft_sizes = default_fft_sizes(self.sample_rate)
        if self.kind == "audio" and not self.n_mels:
            self.n_mels = default_n_mels(self.fft_sizes)

    def validate(self) -> None:
        """Raise :class:`ConfigError` (one line) on any invalid value."""
        hints = {f.name: f.type for f in dataclasses.fields(self)}
        for name, hint in hints.items():
            v = getattr(self, name)
            if "list[int]" in hint:
                ok = (v is None and "None" in hint) or (
                    isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v))
            elif hint == "bool":
                ok = isinstance(v, bool)
            elif hint == "str":
                ok = isinstance(v, str)
            elif hint.startswith("int"):
                ok = (isinstance(v, int) and not isinstance(v, bool)) or (v is None and "None" in hint)
            else:
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok:
                raise ConfigError(f"VQVAEConfig.{name} has an invalid value {v!r} (expected {hint})")
        if self.kind not in KINDS:
            raise ConfigError(f"VQVAEConfig.kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "audio" and (self.sample_rate is None or self.channels != 1):
            raise ConfigError("VQVAEConfig: audio models need a sample_rate and channels=1 (multi-channel audio is coded per channel)")
        if self.postfilter and self.kind != "audio":
            raise ConfigError("VQVAEConfig.postfilter is for audio models (a speech post-filter), not series")
        positive = ["channels", "hidden", "max_hidden", "dim", "kernel", "n_q", "codebook_size"]
        for name in positive + (["sample_rate"] if self.sample_rate is not None else []):
            if getattr(self, name) < 1:
                raise ConfigError(f"VQVAEConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.strides or any(s < 1 for s in self.strides):
            raise ConfigError(f"VQVAEConfig.strides must be a non-empty list of integers >= 1, got {self.strides}")
        for name in ("encoder_hidden", "encoder_max_hidden", "decoder_frame_kernel"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"VQVAEConfig.{name} must be >= 1 or null, got {getattr(self, name)}")
        for name in ("encoder_dilations", "decoder_frame_dilations"):
            if getattr(self, name) is not None and any(d < 1 for d in getattr(self, name)):
                raise ConfigError(f"VQVAEConfig.{name} must be integers >= 1 or null, got {getattr(self, name)}")
        if self.decoder_frame_compress < 1:
            raise ConfigError(f"VQVAEConfig.decoder_frame_compress must be >= 1, got {self.decoder_frame_compress}")
        if any(d < 1 for d in self.dilations) or any(n < 16 for n in self.fft_sizes) or any(m < 1 for m in self.n_mels):
            raise ConfigError("VQVAEConfig: dilations and n_mels must be >= 1 and fft_sizes >= 16")
        if self.fft_sizes and self.n_mels and len(self.fft_sizes) != len(self.n_mels):
            raise ConfigError(f"VQVAEConfig: {len(self.fft_sizes)} fft_sizes but {len(self.n_mels)} n_mels")
        if len(set(self.fft_sizes)) != len(self.fft_sizes):
            raise ConfigError(f"VQVAEConfig.fft_sizes must be distinct, got {self.fft_sizes}")
        if self.activation not in ("elu", "snake"):
            raise ConfigError(f"VQVAEConfig.activation must be 'elu' or 'snake', got {self.activation!r}")
        if not 0.0 < self.compression <= 1.0:
            raise ConfigError(f"VQVAEConfig.compression must be in (0, 1], got {self.compression}")
        if not 0.0 <= self.quantizer_dropout <= 1.0 or not 0.0 <= self.decay < 1.0:
            raise ConfigError("VQVAEConfig: quantizer_dropout must be in [0, 1] and decay in [0, 1)")
        for name in ("beta", "eps", "dead_threshold", "l1_weight", "spectral_weight", "logmag_weight", "compressed_weight", "mse_weight",
                     "vq_weight",
                     "revin_eps", "entropy_loss_weight", "diversity_gamma"):
            if getattr(self, name) < 0:
                raise ConfigError(f"VQVAEConfig.{name} must be >= 0, got {getattr(self, name)}")
        self._validate_quantizer()

    def _validate_quantizer(self) -> None:
        """The quantiser family and its options (one-line :class:`ConfigError`)."""
        q = self.quantizer
        if q not in QUANTIZERS:
            raise ConfigError(f"VQVAEConfig.quantizer must be one of {QUANTIZERS}, got {q!r}")
        for name, families in _QUANTIZER_OPTIONS.items():
            if q not in families and getattr(self, name) != _NEWER_FIELDS[name]:
                raise ConfigError(f"VQVAEConfig.{name} applies to quantizer {' or '.join(families)}, not {q!r}")
        if self.codebook_dim is not None and not 1 <= self.codebook_dim <= self.dim:
            raise ConfigError(f"VQVAEConfig.codebook_dim must be in [1, dim = {self.dim}], got {self.codebook_dim}")
        if q == "fsq":
            if self.levels is None:
                raise ConfigError("VQVAEConfig: quantizer 'fsq' needs levels (e.g. [8, 5, 5, 5])")
            try:
                levels = check_levels("VQVAEConfig.levels", self.levels)
            except ConfigError as err:
                raise ConfigError(str(err)) from None
            if math.prod(levels) != self.codebook_size:
                raise ConfigError(f"VQVAEConfig: levels {levels} make {math.prod(levels)} codes but codebook_size is "
                                  f"{self.codebook_size}; set codebook_size to {math.prod(levels)}")
        if q == "fsq":
            check_noise_dropout("VQVAEConfig.noise_dropout", self.noise_dropout)
        if q == "lfq":
            check_lfq_size("VQVAEConfig (quantizer 'lfq')", self.codebook_size)
        if not self.inv_temperature > 0:
            raise ConfigError(f"VQVAEConfig.inv_temperature must be > 0, got {self.inv_temperature}")

    @property
    def hop(self) -> int:
        return math.prod(self.strides)

    # what only shapes training (loss weights, spectral resolutions, quantiser dropout): a warm start
    # (``vqaudio train --init``) may change these, never the rest
    TRAINING_FIELDS = ("beta", "quantizer_dropout", "l1_weight", "spectral_weight", "logmag_weight", "compressed_weight",
                       "compression", "mse_weight", "vq_weight", "fft_sizes", "n_mels")

    def architecture(self) -> dict[str, Any]:
        """Every field but :attr:`TRAINING_FIELDS`: equal architectures take each other's weights."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.TRAINING_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON types; fields added after version 0.1 are left out while they hold their
        defaults, so such checkpoints stay readable by the vqaudio versions that predate them."""
        d = dataclasses.asdict(self)
        for name, default in _NEWER_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VQVAEConfig:
        """Build from a dict (e.g. parsed JSON); unknown keys are a :class:`ConfigError`."""
        if not isinstance(d, dict):
            raise ConfigError(f"VQVAEConfig: expected a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"VQVAEConfig: unknown keys {unknown}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> VQVAEConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"VQVAEConfig: invalid JSON ({err})") from None
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | os.PathLike) -> VQVAEConfig:
        """Read a JSON config file; problems are a :class:`ConfigError` naming the file."""
        try:
            return cls.from_json(Path(path).read_text())
        except OSError as err:
            raise ConfigError(f"cannot read config ({err.strerror})", str(path)) from None
        except (ConfigError, TypeError) as err:
            raise ConfigError(str(err), str(path)) from None


def build_quantizer(c: VQVAEConfig) -> Residual:
    """The ``n_q``-stage residual quantiser of ``c.dim``-dimensional latents that ``c.quantizer`` names."""
    common = dict(quantizer_dropout=c.quantizer_dropout)
    if c.quantizer == "fsq":
        return ResidualFSQ(c.n_q, c.dim, c.levels, **common, noise_dropout=c.noise_dropout)
    if c.quantizer == "lfq":
        return ResidualLFQ(c.n_q, c.dim, c.codebook_size, **common, entropy_loss_weight=c.entropy_loss_weight,
                           diversity_gamma=c.diversity_gamma, beta=c.beta, spherical=c.spherical,
                           inv_temperature=c.inv_temperature)
    if c.quantizer == "simvq":
        return ResidualSimVQ(c.n_q, c.dim, c.codebook_size, **common, beta=c.beta, rotation_trick=c.rotation_trick,
                             dead_threshold=c.dead_threshold, decay=c.decay)
    return ResidualVQ(
        c.n_q, c.dim, c.codebook_size, **common, beta=c.beta, ema=c.ema, decay=c.decay, eps=c.eps,
        dead_threshold=c.dead_threshold, kmeans_init=c.kmeans_init, codebook_dim=c.codebook_dim,
        rotation_trick=c.rotation_trick, l2_normalize=c.l2_normalize,
    )


class SeriesStats(NamedTuple):
    """RevIN statistics of a batch of series: ``mean``, ``std`` float32 ``[B, C, 1]``."""

    mean: Tensor
    std: Tensor


@dataclass
class VQVAEOutput:
    """``recon [B, C, T]`` (original scale), ``codes [B, n_q, F]``, ``loss`` (weighted total),
    ``losses`` (named scalar terms, unweighted), ``stats`` (quantiser ``perplexity``/``usage`` ``[n_q]``)."""

    recon: Tensor
    codes: Tensor
    loss: Tensor
    losses: dict[str, Tensor]
    stats: dict[str, Tensor]


class VQVAE(nn.Module):
    """Conv encoder, residual VQ, conv decoder; see the module docstring."""

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        self.config = c = config
        kw = dict(hidden=c.hidden, max_hidden=c.max_hidden, kernel=c.kernel, dilations=tuple(c.dilations), act=c.activation, norm=c.weight_norm)
        enc = dict(kw, hidden=c.encoder_hidden or c.hidden, max_hidden=c.encoder_max_hidden or c.max_hidden,
                   dilations=tuple(c.dilations if c.encoder_dilations is None else c.encoder_dilations))
        self.encoder = Encoder(c.channels, c.dim, c.strides, **enc, causal=c.encoder_causal)
        self.quantizer = build_quantizer(c)
        self.decoder = Decoder(c.channels, c.dim, c.strides, **kw, causal=c.decoder_causal,
                               frame_dilations=tuple(c.decoder_frame_dilations or ()),
                               frame_kernel=c.decoder_frame_kernel, frame_compress=c.decoder_frame_compress)
        self.spectral = SpectralLoss(c.sample_rate, c.fft_sizes, c.n_mels, c.logmag_weight, c.compressed_weight,
                                     c.compression) if c.kind == "audio" else None

    # -- geometry ------------------------------------------------------------------------------
    @property
    def hop(self) -> int:
        """Input samples per frame (``prod(strides)``)."""
        return self.encoder.hop

    @property
    def frame_rate(self) -> float:
        """Frames per second (per time step for series without a ``sample_rate``)."""
        return (self.config.sample_rate or 1) / self.hop

    def bitrate(self, n_q: int | None = None) -> float:
        """Bits per second (per time step for series without a rate) with ``n_q`` stages."""
        n_q = self.config.n_q if n_q is None else n_q
        return self.frame_rate * n_q * math.log2(self.config.codebook_size)

    @property
    def encoder_context(self) -> tuple[int, int]:
        """``(left, right)``: frame ``f`` depends exactly on samples ``[f*hop - left, f*hop + right]``."""
        return self.encoder.context

    @property
    def encoder_receptive_field(self) -> int:
        """Input samples one frame depends on (``left + right + 1``)."""
        return self.encoder.receptive_field

    @property
    def decoder_context(self) -> tuple[int, int]:
        """``(left, right)`` in frames: output samples of frame ``f`` depend on frames ``[f - left, f + right]``."""
        return self.decoder.context

    @property
    def decoder_receptive_field(self) -> int:
        """Frames one output sample can depend on (``left + right + 1``)."""
        return self.decoder.receptive_field

    def num_frames(self, length: int) -> int:
        """``F = ceil(length / hop)``."""
        return -(-length // self.hop)

    # -- normalisation -------------------------------------------------------------------------
    def normalize(self, x: Tensor, stats: SeriesStats | None = None, valid: Tensor | None = None
                  ) -> tuple[Tensor, SeriesStats | None]:
        """Series: ``((x - mean) / std, stats)`` with stats over time of ``x [B, C, T]`` unless given.

        ``valid`` (bool, like ``x``): only those steps count in the statistics, and the others become 0 (a
        training crop padded past its series' end, which the model then sees as a coded series' end). Audio:
        ``(x, None)``.
        """
        if self.config.kind != "series":
            return x, None
        w = None if valid is None else valid.to(torch.float32)
        if stats is None:
            if w is None:
                var, mean = torch.var_mean(x.float(), dim=-1, keepdim=True, correction=0)
            else:
                count = w.sum(-1, keepdim=True).clamp_min(1)
                mean = (x.float() * w).sum(-1, keepdim=True) / count
                var = ((x.float() - mean).square() * w).sum(-1, keepdim=True) / count
            stats = SeriesStats(mean, (var + self.config.revin_eps).sqrt())
        xn = (x - stats.mean.to(x)) / stats.std.to(x)
        return (xn if w is None else xn * w.to(xn)), stats

    def coding_stats(self, x: Tensor) -> SeriesStats:
        """The RevIN statistics that coding a series ``x [B, C, T]`` records: mean and std over time, summed in float64,
        without :attr:`VQVAEConfig.revin_eps`, so that coding ``a * x + b`` gives the codes of ``x`` at any scale
        (``revin_eps`` guards training crops; an absolute floor would flatten series of small values, e.g. 1e-6 SI
        units, to noise). Constant channels are refused before coding (:func:`vqaudio.io.check_series_codable`)."""
        var, mean = torch.var_mean(x.double(), dim=-1, keepdim=True, correction=0)
        return SeriesStats(mean.float(), var.sqrt().float())

    def denormalize(self, x: Tensor, stats: SeriesStats | None) -> Tensor:
        """Inverse of :meth:`normalize` (identity without ``stats``)."""
        if stats is None:
            return x
        dtype = torch.promote_types(x.dtype, stats.mean.dtype)  # float64 statistics (coding) give float64 output
        return x.to(dtype) * stats.std.to(dtype) + stats.mean.to(dtype)

    def _check(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.config.channels or x.shape[-1] < 1:
            raise ValueError(f"VQVAE: expected x of shape [B, {self.config.channels}, T >= 1], got {list(x.shape)}")

    def _pad(self, x: Tensor) -> Tensor:
        return F.pad(x, (0, self.num_frames(x.shape[-1]) * self.hop - x.shape[-1]))

    # -- API -----------------------------------------------------------------------------------
    def forward(self, x: Tensor, n_q: int | None = None) -> VQVAEOutput:
        """Reconstruct ``x [B, C, T]`` and compute the training losses (see :class:`VQVAEConfig`).

        Series may carry NaN after their end (``SeriesCrops`` pads short series so): those steps are left out of
        the RevIN statistics and the loss, and are zeros to the encoder, as past the end of a coded series."""
        self._check(x)
        c, length = self.config, x.shape[-1]
        valid = None
        if c.kind == "series" and bool(x.isnan().any()):
            valid, x = ~x.isnan(), x.nan_to_num(0.0)
        xn, stats = self.normalize(x, valid=valid)
        z = self.encoder(self._pad(xn))
        q = self.quantizer(z, n_q)
        yn = self.decoder(q.quantized)[..., :length]
        losses = {"vq": q.loss}
        if c.kind == "audio":
            losses["l1"] = waveform_l1(yn, x)
            losses["spectral"], parts = self.spectral(yn, x)
            losses.update(parts)
            loss = c.l1_weight * losses["l1"] + c.spectral_weight * losses["spectral"]
        else:
            losses["mse"] = series_mse(yn, xn, valid)
            loss = c.mse_weight * losses["mse"]
        loss = loss + c.vq_weight * q.loss
        stats_q = {k: v for k, v in q.stats.items() if k in ("perplexity", "usage")}
        return VQVAEOutput(self.denormalize(yn, stats), q.codes, loss, losses, stats_q)

    @torch.no_grad()
    def encode(
        self, x: Tensor, n_q: int | None = None, return_stats: bool = False, stats: SeriesStats | None = None
    ) -> Tensor | tuple[Tensor, SeriesStats | None]:
        """Codes int64 ``[B, n_q, ceil(T / hop)]`` of ``x [B, C, T]``.

        Series: normalised with ``stats`` if given, else with the batch's own statistics;
        ``return_stats=True`` returns ``(codes, stats)`` (``stats`` is ``None`` for audio).
        """
        self._check(x)
        xn, stats = self.normalize(x, stats)
        codes = self.quantizer.encode(self.encoder(self._pad(xn)), n_q)
        return (codes, stats) if return_stats else codes

    @torch.no_grad()
    def decode(self, codes: Tensor, length: int | None = None, stats: SeriesStats | None = None) -> Tensor:
        """``x [B, C, length]`` from codes int64 ``[B, n_q', F]`` (``length`` defaults to ``F * hop``).

        Series: ``stats`` restores the original scale (else the output stays normalised).
        """
        if codes.dim() != 3:
            raise ValueError(f"VQVAE: expected codes [B, n_q, F], got {list(codes.shape)}")
        full = codes.shape[-1] * self.hop
        length = full if length is None else length
        if not 0 <= length <= full:
            raise ValueError(f"VQVAE: length {length} does not fit {codes.shape[-1]} frames of hop {self.hop}")
        y = self.decoder(self.quantizer.decode(codes))[..., :length]
        return self.denormalize(y, stats)

    @torch.no_grad()
    def encode_chunked(self, x: Tensor, chunk_frames: int = 256, n_q: int | None = None, stats: SeriesStats | None = None) -> Tensor:
        """Same codes as :meth:`encode` (bit for bit, up to the convolution arithmetic) with bounded memory.

        Frames ``[f0, f1)`` are encoded from the chunk ``x[..., f0*hop - left' : f1*hop + right']``
        where ``left'`` is ``encoder_context[0]`` rounded up to a multiple of ``hop`` (chunks start on
        the frame grid), clipped to the signal; only the frames whose receptive field lies inside
        the chunk are kept. Series statistics are computed once on the whole of ``x``.
        """
        self._check(x)
        _, stats = self.normalize(x, stats)
        left, right = self.encoder_context
        margin_l = -(-left // self.hop)
        total, length, out = self.num_frames(x.shape[-1]), x.shape[-1], []
        for f0 in range(0, total, chunk_frames):
            f1 = min(total, f0 + chunk_frames)
            a = max(0, f0 - margin_l) * self.hop
            b = min(length, f1 * self.hop + right)
            codes = self.encode(x[..., a:b], n_q, stats=stats)
            out.append(codes[..., f0 - a // self.hop : f1 - a // self.hop])
        return torch.cat(out, dim=-1)
