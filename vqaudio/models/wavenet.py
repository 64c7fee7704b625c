"""WaveNet-style autoregressive prior over residual-VQ token frames, with cached (fast-wavenet) generation.

Factorisation of a frame ``z_t = (z_t^0, ..., z_t^{n_q-1})`` (codebook level order)::

    p(z_t^q | z_{<t}, z_t^{<q}) = head_q( ctx_t + sum_{j<q} E'_j[z_t^j] )
    ctx_t = WaveNet( [start, e_0, ..., e_{t-1}] )_t,   e_s = sum_q E_q[z_s^q]

The dilated causal conv stack runs once per *frame* over the summed embeddings of all stages of the past
frames (shifted right by a learned start vector), and a small per-stage MLP head predicts the stages of the
current frame one after the other from the frame context plus the embeddings of the stages already chosen.

Generation keeps, for each layer, a ring buffer of its last ``dilation * (kernel_size - 1)`` inputs, so a step
costs O(layers) whatever the receptive field (fast-wavenet; r9y9/wavenet_vocoder ``incremental_forward``). On the
CPU the whole layer stack of a step is one compiled op, and so is each stage's head (:mod:`vqaudio.ops.wavenet_step`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqaudio.ops.wavenet_step import wavenet_head, wavenet_step

__all__ = ["WaveNetConfig", "WaveNetPrior", "GenState"]

_C = math.sqrt(0.5)  # residual scaling: x_next = (x + res) * sqrt(1/2)


@dataclass
class WaveNetConfig:
    """Hyper-parameters of :class:`WaveNetPrior` (JSON-serialisable; stored next to the weights)."""

    codebook_size: int = 1024  # K: tokens per stage
    n_q: int = 1  # residual VQ stages per frame
    residual_channels: int = 64
    gate_channels: int = 128  # conv output channels; split in tanh / sigmoid halves
    skip_channels: int = 128
    head_channels: int = 256
    kernel_size: int = 2
    layers: int = 20
    cycle: int = 10  # dilations 1, 2, ..., 2**(cycle-1), repeated layers // cycle times
    n_labels: int = 0  # > 0: global conditioning on a label id in [0, n_labels)
    label_names: list[str] = field(default_factory=list)  # optional names of the label ids
    codec: dict = field(default_factory=dict)  # metadata of the codec whose tokens it models (see vqaudio.prior)

    def __post_init__(self) -> None:
        for name in ("codebook_size", "n_q", "residual_channels", "skip_channels", "head_channels", "layers", "cycle"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"WaveNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.gate_channels < 2 or self.gate_channels % 2:
            raise ValueError(f"WaveNetConfig.gate_channels must be even and >= 2, got {self.gate_channels}")
        if self.kernel_size < 2:
            raise ValueError(f"WaveNetConfig.kernel_size must be >= 2, got {self.kernel_size}")
        if self.n_labels < 0:
            raise ValueError(f"WaveNetConfig.n_labels must be >= 0, got {self.n_labels}")
        if self.label_names and len(self.label_names) != self.n_labels:
            raise ValueError(f"WaveNetConfig has {len(self.label_names)} label names for n_labels={self.n_labels}")

    @property
    def dilations(self) -> list[int]:
        return [2 ** (i % self.cycle) for i in range(self.layers)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> WaveNetConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"WaveNetConfig: unknown keys {unknown}")
        return cls(**d)


@dataclass
class GenState:
    """Cache of an incremental generation, in the layout of :func:`vqaudio.ops.wavenet_step.wavenet_step`."""

    buffer: Tensor  # [sum of spans, B, R]: layer l's ring buffer of its last d_l * (k-1) inputs, layer after layer
    t: int  # frames fed so far (the start vector counts as one)
    conv_w: Tensor  # [L, k*R, G] tap-major conv weights
    conv_b: Tensor  # [L, 1 or B, G] conv bias (+ label embedding)
    res_w: Tensor  # [L, G/2, R] residual 1x1 weights, pre-scaled by sqrt(1/2)
    res_b: Tensor  # [L, R] residual biases, pre-scaled by sqrt(1/2)
    gated: Tensor  # [B, L, G/2]: every layer's gated activation of the current step
    skip: tuple[Tensor, Tensor]  # all layers' skip 1x1 convs as one [L*G/2, S] matmul, bias [S]


class _GatedLayer(nn.Module):
    """Causal dilated conv -> tanh·sigmoid gate -> residual and skip 1x1 convs."""

    def __init__(self, cfg: WaveNetConfig, dilation: int) -> None:
        super().__init__()
        r, g, s = cfg.residual_channels, cfg.gate_channels, cfg.skip_channels
        self.dilation, self.k = dilation, cfg.kernel_size
        self.conv = nn.Conv1d(r, g, cfg.kernel_size, dilation=dilation)
        self.out = nn.Conv1d(g // 2, r + s, 1)  # residual and skip 1x1 convs, fused
        self.label = nn.Embedding(cfg.n_labels, g) if cfg.n_labels else None
        self.r = r

    @property
    def span(self) -> int:
        """Past inputs the conv reads besides the current one: ``dilation * (kernel_size - 1)``."""
        return self.dilation * (self.k - 1)

    def forward(self, x: Tensor, label: Tensor | None) -> tuple[Tensor, Tensor]:
        """x: [B, R, F] -> (x_next [B, R, F], skip [B, S, F]); causal (left zero padding)."""
        # k shifted copies and one matmul: the same maths as a dilated Conv1d, without PyTorch's slow CPU
        # dilated-conv path (slow_conv_dilated2d), and the same tap-major weight as the cached step
        xp, d, n = F.pad(x, (self.span, 0)), self.dilation, x.shape[2]
        taps = torch.cat([xp[:, :, i * d : i * d + n] for i in range(self.k)], dim=1)  # [B, k*R, F]
        a = torch.matmul(self.conv_weight().t(), taps) + self.conv.bias[:, None]
        if self.label is not None:
            a = a + self.label(label)[:, :, None]
        ta, sb = a.chunk(2, dim=1)
        o = torch.matmul(self.out.weight[:, :, 0], torch.tanh(ta) * torch.sigmoid(sb)) + self.out.bias[:, None]
        return (x + o[:, : self.r]) * _C, o[:, self.r :]

    def conv_weight(self) -> Tensor:
        """Conv weight [G, R, k] as a matrix [k*R, G] matching ``cat(taps)`` (tap-major)."""
        w = self.conv.weight
        return w.permute(2, 1, 0).reshape(-1, w.shape[0])

    def residual_weights(self) -> tuple[Tensor, Tensor]:
        """Residual 1x1 conv pre-scaled by c = sqrt(1/2): weight [G/2, R], bias [R]."""
        return self.out.weight[: self.r, :, 0].t() * _C, self.out.bias[: self.r] * _C

    def skip_weights(self) -> tuple[Tensor, Tensor]:
        """Skip 1x1 conv: weight [G/2, S], bias [S]."""
        return self.out.weight[self.r :, :, 0].t(), self.out.bias[self.r :]


class WaveNetPrior(nn.Module):
    """Autoregressive prior over token frames ``codes int64[B, n_q, F]`` (see module docstring)."""

    def __init__(self, cfg: WaveNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        K, Q, R, S, H = cfg.codebook_size, cfg.n_q, cfg.residual_channels, cfg.skip_channels, cfg.head_channels
        self.embed = nn.Embedding(Q * K, R)  # stage q token k -> row q*K + k; summed over stages
        self.start = nn.Parameter(torch.randn(R) * 0.1)
        self.layers = nn.ModuleList(_GatedLayer(cfg, d) for d in cfg.dilations)
        self.post = nn.Sequential(nn.ReLU(), nn.Linear(S, S), nn.ReLU(), nn.Linear(S, H))
        self.stage_embed = nn.Embedding(Q * K, H)  # current-frame earlier stages, for the head
        self.stage_bias = nn.Parameter(torch.zeros(Q, H))
        self.head_w1 = nn.Parameter(torch.randn(Q, H, H) / math.sqrt(H))
        self.head_b1 = nn.Parameter(torch.zeros(Q, H))
        self.head_w2 = nn.Parameter(torch.randn(Q, H, K) / math.sqrt(H) * 0.1)
        self.head_b2 = nn.Parameter(torch.zeros(Q, K))
        self.register_buffer("offsets", torch.arange(Q) * K, persistent=False)

    # ---- shapes, checks -------------------------------------------------------------------------------------
    @property
    def receptive_field(self) -> int:
        """Past frames the prediction of a frame can see: ``(kernel_size - 1) * sum(dilations) + 1``."""
        return (self.cfg.kernel_size - 1) * sum(self.cfg.dilations) + 1

    def _check(self, codes: Tensor, label: Tensor | None) -> None:
        if codes.dim() != 3 or codes.shape[1] != self.cfg.n_q:
            raise ValueError(f"codes must be [B, {self.cfg.n_q}, F], got {tuple(codes.shape)}")
        if (self.cfg.n_labels > 0) != (label is not None):
            raise ValueError("label is required iff the prior has n_labels > 0")

    def _frame_embed(self, codes: Tensor) -> Tensor:
        """codes [B, Q, F] -> summed stage embeddings [B, F, R]."""
        return self.embed(codes + self.offsets[None, :, None]).sum(1)

    # ---- teacher-forced forward ----------------------------------------------------------------------------
    def context(self, codes: Tensor, label: Tensor | None = None) -> Tensor:
        """Frame contexts: codes int64[B, Q, F] -> ctx[B, F, H]; ctx_t depends on frames < t only."""
        self._check(codes, label)
        B = codes.shape[0]
        x = torch.cat([self.start.expand(B, 1, -1), self._frame_embed(codes[:, :, :-1])], dim=1)  # [B, F, R]
        x = x.transpose(1, 2)
        skips = 0.0
        for layer in self.layers:
            x, s = layer(x, label)
            skips = skips + s
        skips = skips * math.sqrt(1.0 / len(self.layers))
        return self.post(skips.transpose(1, 2))

    def head(self, ctx: Tensor, codes: Tensor) -> Tensor:
        """Per-stage logits with teacher forcing: ctx[B, F, H], codes[B, Q, F] -> logits[B, Q, F, K]."""
        e = self.stage_embed(codes + self.offsets[None, :, None])  # [B, Q, F, H]
        prev = F.pad(torch.cumsum(e[:, :-1], dim=1), (0, 0, 0, 0, 1, 0))  # sum over stages j < q
        h = torch.relu(ctx[:, None] + prev + self.stage_bias[None, :, None])
        h = torch.relu(torch.einsum("bqfh,qhg->bqfg", h, self.head_w1) + self.head_b1[None, :, None])
        return torch.einsum("bqfh,qhk->bqfk", h, self.head_w2) + self.head_b2[None, :, None]

    def forward(self, codes: Tensor, label: Tensor | None = None) -> Tensor:
        """codes int64[B, Q, F] (label int64[B]) -> logits float[B, Q, F, K] of every token given its past."""
        return self.head(self.context(codes, label), codes)

    def nll(self, codes: Tensor, label: Tensor | None = None) -> Tensor:
        """Mean negative log-likelihood (nats per token) of codes[B, Q, F] under teacher forcing."""
        logits = self(codes, label)
        return F.cross_entropy(logits.reshape(-1, self.cfg.codebook_size), codes.reshape(-1))

    # ---- cached generation -------------------------------------------------------------------------------
    # init_state and step run under inference mode; the per-stage helpers below do not enter it themselves
    # (a few microseconds per call, several calls per frame): generation calls them inside inference mode.
    @torch.inference_mode()
    def init_state(
        self, batch: int, label: Tensor | None = None, prime: Tensor | None = None
    ) -> tuple[GenState, Tensor]:
        """Start a generation of ``batch`` sequences, optionally after prime codes int64[B, Q, P].

        Returns the cache and the context ctx[B, H] of the next frame (frame P).
        """
        p = self.embed.weight
        if prime is not None:
            self._check(prime, label)
            if prime.shape[0] != batch:
                raise ValueError(f"prime batch {prime.shape[0]} != {batch}")
        elif (self.cfg.n_labels > 0) != (label is not None):
            raise ValueError("label is required iff the prior has n_labels > 0")
        L, R = len(self.layers), self.cfg.residual_channels
        if label is not None:
            label = torch.as_tensor(label, device=p.device).reshape(-1)
            if label.shape[0] not in (1, batch):
                raise ValueError(f"label must hold 1 or {batch} ids, got {label.shape[0]}")
        bias = [ly.conv.bias + ly.label(label) if ly.label is not None else ly.conv.bias[None] for ly in self.layers]
        res = [ly.residual_weights() for ly in self.layers]
        skip = [ly.skip_weights() for ly in self.layers]
        scale = math.sqrt(1.0 / L)
        state = GenState(p.new_zeros(sum(ly.span for ly in self.layers), batch, R), 0,
                         torch.stack([ly.conv_weight() for ly in self.layers]), torch.stack(bias),
                         torch.stack([w for w, _ in res]), torch.stack([b for _, b in res]),
                         p.new_zeros(batch, L, self.cfg.gate_channels // 2),
                         (torch.cat([w for w, _ in skip]) * scale, sum(b for _, b in skip) * scale))
        if prime is None or prime.shape[2] == 0:
            return state, self.step(state, self.start.expand(batch, -1))
        # Fill every layer's ring buffer from one teacher-forced pass over [start, e_0 .. e_{P-2}], then
        # step the last prime frame through the cache to get the context of frame P.
        P = prime.shape[2]
        x = torch.cat([self.start.expand(batch, 1, -1), self._frame_embed(prime[:, :, :-1])], dim=1).transpose(1, 2)
        off = 0
        for layer in self.layers:
            n = layer.span
            buf, off = state.buffer[off : off + n], off + n
            times = torch.arange(P - n, P, device=x.device)  # inputs at times P-n .. P-1 (negative: zero pad)
            past = F.pad(x, (max(0, n - P), 0))[:, :, -n:]
            buf[times % n] = past.permute(2, 0, 1)
            x, _ = layer(x, label)
        state.t = P
        return state, self.step(state, self._frame_embed(prime[:, :, -1:])[:, 0])

    @torch.inference_mode()
    def step(self, state: GenState, x: Tensor) -> Tensor:
        """Feed one frame input x[B, R] (an embedded frame or the start vector) -> next context ctx[B, H]."""
        x = wavenet_step(x, state.buffer, state.t, self.cfg.dilations, self.cfg.kernel_size, state.conv_w, state.conv_b,
                         state.res_w, state.res_b, _C, state.gated)
        state.t += 1
        skips = torch.addmm(state.skip[1], state.gated.view(x.shape[0], -1), state.skip[0])  # all layers at once
        return self.post(skips)

    def stage_logits(self, ctx: Tensor, prev: Tensor, q: int) -> Tensor:
        """Logits[B, K] of stage q given ctx[B, H] and the current frame's earlier stages prev int64[B, q]."""
        if q > 0:
            ctx = ctx + self.stage_embed(prev[:, :q] + self.offsets[:q]).sum(1)
        return self.stage_head(ctx, q)

    def stage_head(self, acc: Tensor, q: int) -> Tensor:
        """Logits[B, K] of stage q from ``acc = ctx + sum_{j<q} E'_j[z^j]`` [B, H] (see :meth:`stage_embedding`)."""
        return wavenet_head(acc, self.stage_bias[q], self.head_w1[q], self.head_b1[q], self.head_w2[q], self.head_b2[q])

    def stage_embedding(self, z: Tensor, q: int) -> Tensor:
        """E'_q[z] [B, H] for stage-q tokens z int64[B]: what the heads of stages > q add to their input."""
        K = self.cfg.codebook_size
        return self.stage_embed.weight[q * K : (q + 1) * K].index_select(0, z)

    def embed_frame(self, frame: Tensor) -> Tensor:
        """frame int64[B, Q] -> summed stage embeddings [B, R] (the next input of :meth:`step`)."""
        return self.embed(frame + self.offsets).sum(1)

    def config_dict(self) -> dict:
        return self.cfg.to_dict()
