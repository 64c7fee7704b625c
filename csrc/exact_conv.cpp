// vqaudio::exact_conv1d: a 1-D convolution whose every output value has the same bits whatever the shape of the
// tensor it is computed in (CPU, float32, inference only: no autograd kernel).
//
// Contract (the pure-PyTorch reference is vqaudio/ops/exact_conv.py; x [B, Cin, T], weight [Cout, Cin, K],
// bias [Cout], xpad = x with pad_left zeros before and pad_right zeros after,
// Tout = (T + pad_left + pad_right - dilation (K - 1) - 1) / stride + 1):
//
//   y[b, co, t] = bias[co] + sum over ci (outer), k (inner) of weight[co, ci, k] * xpad[b, ci, t stride + k dilation]
//
// accumulated in that one order, each term by one fused multiply-add (where the CPU has FMA; the baseline clone
// multiplies then adds). Why: ATen's convolutions (oneDNN, im2col + GEMM) block their sums by the tensor's length,
// batch and thread count, so one output position rounds differently in a 20 ms stream window and in a 15 s chunk,
// and a code can flip at a near-tie. Here each SIMD lane is one output position t and every lane of every tile
// runs the same instruction sequence; the tile's other lanes (real positions, or the zero slack past the end) never
// enter a lane's sum, and the output channels of a block have their own accumulators. So a value's bits depend only
// on its own inputs, weights and bias: not on T, B, the padding of the call, the thread count, nor where t falls in
// a tile. Threads split over (b, chunks of t-tiles) only.
//
// `elu`: the input goes through ELU (alpha 1) first, y = conv(elu(x)), as the encoder's activation-then-conv pairs.
// ATen's elementwise kernels run a vector body and a scalar tail with other exp code (Sleef vs libm), so an ATen
// ELU's value at one position depends on where the tensor ends and how threads split it; here every element goes
// through the same vector code (elu_vec: exp by range reduction and a polynomial, error ~1e-7 absolute), the last
// partial vector zero-filled.
//
// Strided convs read their input split into `stride` phases (phase p holds xpad[p], xpad[p + s], ...), so every tap
// is a contiguous vector load: position t s + k d is phase (k d) % s, index t + (k d) / s.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "target_clones.h"  // AVX-512 / AVX2+FMA / baseline clones (VQ_TARGET_CLONES)

namespace vqaudio {
namespace {

constexpr int W = 16;   // lanes per vector (one zmm; two ymm on AVX2)
constexpr int NV = 2;   // vectors per tile: a tile is TW = 32 output positions
constexpr int TW = W * NV;
constexpr int COB = 8;  // output channels per block (their accumulators: COB x NV vectors)

typedef float vf __attribute__((vector_size(W * sizeof(float))));
typedef float vf_unaligned __attribute__((vector_size(W * sizeof(float)), aligned(4)));
typedef int32_t vi __attribute__((vector_size(W * sizeof(int32_t))));

// ELU (alpha 1) of every lane: x for x > 0 (and NaN), else exp(x) - 1 (x (1 + x/2 + x^2/6 ...) near 0).
inline vf elu_vec(vf x) {
  const vf zero = vf{};
  vf xn = x < zero ? x : zero;
  xn = xn < zero - 87.0f ? zero - 87.0f : xn;  // exp(-87) - 1 rounds to -1 in float32; 2^n stays normal
  const vf magic = zero + 12582912.0f;         // 1.5 * 2^23: adding it rounds to an integer in the low bits
  const vf t = xn * 1.44269504f + magic;
  const vf n = t - magic;
  const vi ni = (vi)t - (vi)magic;
  const vf r = (xn - n * 0.693145752f) - n * 1.42860677e-6f;  // ln 2 in two parts (Cody-Waite)
  vf p = zero + (1.0f / 720.0f);
  p = p * r + (1.0f / 120.0f);
  p = p * r + (1.0f / 24.0f);
  p = p * r + (1.0f / 6.0f);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const vf scale = (vf)((ni + 127) << 23);
  vf q = zero + (1.0f / 120.0f);  // exp(x) - 1 without the cancellation, for |x| < 1/16
  q = q * xn + (1.0f / 24.0f);
  q = q * xn + (1.0f / 6.0f);
  q = q * xn + 0.5f;
  q = q * xn + 1.0f;
  const vf neg = xn > zero - 0.0625f ? q * xn : p * scale - 1.0f;
  return x <= zero ? neg : x;
}

// Row r of x [rows, T], through ELU if `elu`, into xpad positions pad_left .. pad_left + T - 1 split in S phases of M
// (dst[(j % S) M + j / S] = value of xpad[j]).
VQ_TARGET_CLONES void fill_row(const float* __restrict src, int64_t T, int64_t pad_left, int64_t S, int64_t M, bool elu,
                               float* __restrict dst) {
  for (int64_t i0 = 0; i0 < T; i0 += W) {
    const int64_t n = std::min<int64_t>(W, T - i0);
    vf v = vf{};
    std::memcpy(&v, src + i0, n * sizeof(float));
    if (elu) v = elu_vec(v);
    float lanes[W];
    std::memcpy(lanes, &v, sizeof(vf));
    if (S == 1) {
      std::memcpy(dst + pad_left + i0, lanes, n * sizeof(float));
      continue;
    }
    int64_t p = (i0 + pad_left) % S, m = (i0 + pad_left) / S;  // no division per element
    for (int64_t l = 0; l < n; ++l) {
      dst[p * M + m] = lanes[l];
      if (++p == S) p = 0, ++m;
    }
  }
}

// One tile: COB output channels (rows `co[0..COB)` of the weights) at TW positions from `t0` of the phase buffer.
// `ph` points at [Cin, S, M] (phase p of channel ci at ph + (ci S + p) M); `tap_phase` / `tap_off` give each tap's
// phase and offset. The result goes to out[c * TW + j].
VQ_TARGET_CLONES void conv_tile(const float* __restrict ph, int64_t Cin, int64_t S, int64_t M, int64_t K,
                                const int64_t* __restrict tap_phase, const int64_t* __restrict tap_off,
                                const float* const* __restrict wrow, const float* __restrict bias, int64_t t0,
                                float* __restrict out) {
  vf acc[COB][NV];
#pragma GCC unroll 8
  for (int c = 0; c < COB; ++c)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[c][v] = bias[c] - vf{};
  for (int64_t ci = 0; ci < Cin; ++ci) {
    const float* xc = ph + ci * S * M + t0;
    for (int64_t k = 0; k < K; ++k) {
      const float* xk = xc + tap_phase[k] * M + tap_off[k];
      vf xv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) xv[v] = *reinterpret_cast<const vf_unaligned*>(xk + v * W);
      const int64_t wi = ci * K + k;
#pragma GCC unroll 8
      for (int c = 0; c < COB; ++c) {
        const float wv = wrow[c][wi];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[c][v] = wv * xv[v] + acc[c][v];  // contracted to one FMA (-ffp-contract)
      }
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < COB; ++c)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) std::memcpy(out + c * TW + v * W, &acc[c][v], sizeof(vf));
}

at::Tensor exact_conv1d_cpu(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& b_in, int64_t stride,
                            int64_t dilation, int64_t pad_left, int64_t pad_right, bool elu) {
  const char* names[] = {"x", "weight", "bias"};
  const at::Tensor* ts[] = {&x_in, &w_in, &b_in};
  const int64_t dims[] = {3, 3, 1};
  for (int i = 0; i < 3; ++i) {
    TORCH_CHECK_VALUE(ts[i]->dim() == dims[i], "exact_conv1d: ", names[i], " must be ", dims[i], "-D, got shape ",
                      ts[i]->sizes());
    TORCH_CHECK_TYPE(ts[i]->scalar_type() == at::kFloat, "exact_conv1d: ", names[i], " must be float32, got ",
                     ts[i]->scalar_type());
    TORCH_CHECK_VALUE(ts[i]->device().is_cpu(), "exact_conv1d: ", names[i], " must be on the CPU, got ",
                      ts[i]->device());
  }
  const int64_t B = x_in.size(0), Cin = x_in.size(1), T = x_in.size(2);
  const int64_t Cout = w_in.size(0), K = w_in.size(2), S = stride, D = dilation;
  TORCH_CHECK_VALUE(w_in.size(1) == Cin, "exact_conv1d: weight must be [Cout, ", Cin, ", K], got ", w_in.sizes());
  TORCH_CHECK_VALUE(b_in.size(0) == Cout, "exact_conv1d: bias must be [", Cout, "], got ", b_in.sizes());
  TORCH_CHECK_VALUE(K >= 1 && S >= 1 && D >= 1, "exact_conv1d: kernel, stride and dilation must be >= 1, got ", K, ", ",
                    S, ", ", D);
  TORCH_CHECK_VALUE(pad_left >= 0 && pad_right >= 0, "exact_conv1d: padding must be >= 0, got ", pad_left, ", ",
                    pad_right);
  const int64_t Tp = T + pad_left + pad_right, span = D * (K - 1) + 1;
  TORCH_CHECK_VALUE(Tp >= span, "exact_conv1d: padded input length ", Tp, " is shorter than the kernel span ", span);
  const int64_t Tout = (Tp - span) / S + 1;
  at::Tensor out = at::empty({B, Cout, Tout}, x_in.options());
  if (B == 0 || Cout == 0 || Tout == 0) return out;

  // Phase buffer [B, Cin, S, M]: M covers every tile's reads (whole tiles, zeros past xpad's end).
  const int64_t tiles = (Tout + TW - 1) / TW;
  std::vector<int64_t> tap_phase(K), tap_off(K);
  int64_t max_off = 0;
  for (int64_t k = 0; k < K; ++k) {
    tap_phase[k] = (k * D) % S;
    tap_off[k] = (k * D) / S;
    max_off = std::max(max_off, tap_off[k]);
  }
  const int64_t M = tiles * TW + max_off;
  const at::Tensor x = x_in.contiguous(), w = w_in.contiguous(), bias = b_in.contiguous();
  std::unique_ptr<float[]> phases_mem(new float[B * Cin * S * M]);  // zeroed per row below
  float* const phases_ptr = phases_mem.get();
  const float* xp = x.data_ptr<float>();
  at::parallel_for(0, B * Cin, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* dst = phases_ptr + r * S * M;
      std::fill(dst, dst + S * M, 0.0f);
      fill_row(xp + r * T, T, pad_left, S, M, elu, dst);
    }
  });

  const int64_t coblocks = (Cout + COB - 1) / COB;
  const int64_t chunk = 8;  // tiles per work item: its inputs (Cin x ~256 positions) stay in cache for every co-block
  const int64_t chunks = (tiles + chunk - 1) / chunk;
  const float *wp = w.data_ptr<float>(), *bp = bias.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // Work items (b, t-chunk), each every co-block of its tiles; small calls (stream pushes) stay on one thread.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, Cout * Cin * K * TW * chunk / 64));
  at::parallel_for(0, B * chunks, grain, [&](int64_t i0, int64_t i1) {
    alignas(64) float tile[COB * TW];
    const float* wrow[COB];
    float bb[COB];
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / chunks, t_end = std::min(tiles, (i % chunks + 1) * chunk);
      for (int64_t cb = 0; cb < coblocks; ++cb) {
        for (int c = 0; c < COB; ++c) {  // a short last block repeats its last channel (computed, not stored)
          const int64_t co = std::min(cb * COB + c, Cout - 1);
          wrow[c] = wp + co * Cin * K;
          bb[c] = bp[co];
        }
        for (int64_t tt = (i % chunks) * chunk; tt < t_end; ++tt) {
          conv_tile(phases_ptr + b * Cin * S * M, Cin, S, M, K, tap_phase.data(), tap_off.data(), wrow, bb,
                    tt * TW, tile);
          const int64_t n = std::min<int64_t>(TW, Tout - tt * TW);
          for (int c = 0; c < COB && cb * COB + c < Cout; ++c)
            std::memcpy(op + (b * Cout + cb * COB + c) * Tout + tt * TW, tile + c * TW, n * sizeof(float));
        }
      }
    }
  });
  return out;
}


// --- exact_conv1d_narrow: the same contract and the same bits, vectorised over output channels. ---
// For outputs of few positions (a stream push: 2 frames in, 14 to 168 samples out) one lane per position wastes most
// of a 32-position tile. Here a lane is an output channel: weight_t [Cin, K, Cout] (Cout a multiple of W) makes each
// tap's weights for W channels one vector load, the input value one broadcast. Every value is still
// bias + sum over ci (outer), k (inner) of weight * xpad, one FMA a term (a * b + c is the same FMA whichever operand
// is broadcast), its input through the same elu_vec: bit for bit exact_conv1d's value.
// A block is NP positions x CV channel vectors (NP CV accumulators, 16 where the outputs allow: enough independent
// FMA chains to fill the units; 2 positions where a push has only 2, so no lane computes a repeated one). Which block
// computes a value does not change its bits. The weight rows of the next taps are prefetched: a wide layer's weights
// (the first transposed conv's 1.8 MB) are read once per push, from beyond L2.
constexpr int NCV = 4;  // channel vectors per block at most (64 channels)
constexpr int PF = 12;  // taps ahead to prefetch

template <int CV, int NP>
VQ_TARGET_CLONES void narrow_block(const float* __restrict xr, int64_t Cin, int64_t M, int64_t K, int64_t S,
                                   int64_t D, const float* __restrict wt, int64_t Cout, const float* __restrict bias,
                                   int64_t t0, int64_t np, float* __restrict out, int64_t Tout,
                                   const float* __restrict res, int64_t res_c) {
  vf acc[NP][CV];
  vf b[CV];
#pragma GCC unroll 4
  for (int v = 0; v < CV; ++v) b[v] = *reinterpret_cast<const vf_unaligned*>(bias + v * W);
#pragma GCC unroll 16
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < CV; ++v) acc[p][v] = b[v];
  int64_t pos[NP];
  for (int p = 0; p < NP; ++p) pos[p] = (t0 + std::min<int64_t>(p, np - 1)) * S;  // a short block repeats its last
  for (int64_t ci = 0; ci < Cin; ++ci) {
    const float* xc = xr + ci * M;
    for (int64_t k = 0; k < K; ++k) {
      const float* wk = wt + (ci * K + k) * Cout;
#pragma GCC unroll 4
      for (int v = 0; v < CV; ++v) __builtin_prefetch(wk + PF * Cout + v * W);  // past the end: a no-op hint
      vf wv[CV];
#pragma GCC unroll 4
      for (int v = 0; v < CV; ++v) wv[v] = *reinterpret_cast<const vf_unaligned*>(wk + v * W);
      const int64_t kd = k * D;
#pragma GCC unroll 16
      for (int p = 0; p < NP; ++p) {
        const float xv = xc[pos[p] + kd];
#pragma GCC unroll 4
        for (int v = 0; v < CV; ++v) acc[p][v] = wv[v] * xv + acc[p][v];  // contracted to one FMA, as conv_tile
      }
    }
  }
  for (int p = 0; p < np; ++p) {
    float lanes[CV * W];
    std::memcpy(lanes, acc[p], sizeof(lanes));
    if (res)  // the residual added last: res + y, the same bits as adding y to it afterwards
      for (int64_t c = 0; c < CV * W; ++c) out[c * Tout + t0 + p] = lanes[c] + res[c * res_c + t0 + p];
    else
      for (int64_t c = 0; c < CV * W; ++c) out[c * Tout + t0 + p] = lanes[c];
  }
}

// `head` [B, Cin, H] (optional): the input is head then x along time (a stream's kept state and its new samples,
// without a concatenated copy). `residual` [B, Cout, Tout] (optional): added to the outputs (a residual unit's skip).
at::Tensor exact_conv1d_narrow_cpu(const at::Tensor& x_in, const at::Tensor& wt_in, const at::Tensor& b_in,
                                   int64_t stride, int64_t dilation, int64_t pad_left, int64_t pad_right, bool elu,
                                   const std::optional<at::Tensor>& head_in,
                                   const std::optional<at::Tensor>& residual_in) {
  const char* names[] = {"x", "weight_t", "bias"};
  const at::Tensor* ts[] = {&x_in, &wt_in, &b_in};
  const int64_t dims[] = {3, 3, 1};
  for (int i = 0; i < 3; ++i) {
    TORCH_CHECK_VALUE(ts[i]->dim() == dims[i], "exact_conv1d_narrow: ", names[i], " must be ", dims[i],
                      "-D, got shape ", ts[i]->sizes());
    TORCH_CHECK_TYPE(ts[i]->scalar_type() == at::kFloat, "exact_conv1d_narrow: ", names[i],
                     " must be float32, got ", ts[i]->scalar_type());
    TORCH_CHECK_VALUE(ts[i]->device().is_cpu(), "exact_conv1d_narrow: ", names[i], " must be on the CPU, got ",
                      ts[i]->device());
  }
  const int64_t B = x_in.size(0), Cin = x_in.size(1), H = head_in ? head_in->size(-1) : 0, T = H + x_in.size(2);
  const int64_t K = wt_in.size(1), Cout = wt_in.size(2), S = stride, D = dilation;
  if (head_in) {
    TORCH_CHECK_VALUE(head_in->dim() == 3 && head_in->size(0) == B && head_in->size(1) == Cin,
                      "exact_conv1d_narrow: head must be [", B, ", ", Cin, ", H], got ", head_in->sizes());
    TORCH_CHECK_TYPE(head_in->scalar_type() == at::kFloat && head_in->device().is_cpu(),
                     "exact_conv1d_narrow: head must be float32 on the CPU");
  }
  TORCH_CHECK_VALUE(wt_in.size(0) == Cin, "exact_conv1d_narrow: weight_t must be [", Cin, ", K, Cout], got ",
                    wt_in.sizes());
  TORCH_CHECK_VALUE(Cout % W == 0, "exact_conv1d_narrow: Cout must be a multiple of ", W, ", got ", Cout);
  TORCH_CHECK_VALUE(b_in.size(0) == Cout, "exact_conv1d_narrow: bias must be [", Cout, "], got ", b_in.sizes());
  TORCH_CHECK_VALUE(K >= 1 && S >= 1 && D >= 1, "exact_conv1d_narrow: kernel, stride and dilation must be >= 1, got ",
                    K, ", ", S, ", ", D);
  TORCH_CHECK_VALUE(pad_left >= 0 && pad_right >= 0, "exact_conv1d_narrow: padding must be >= 0, got ", pad_left,
                    ", ", pad_right);
  const int64_t Tp = T + pad_left + pad_right, span = D * (K - 1) + 1;
  TORCH_CHECK_VALUE(Tp >= span, "exact_conv1d_narrow: padded input length ", Tp, " is shorter than the kernel span ",
                    span);
  const int64_t Tout = (Tp - span) / S + 1;
  at::Tensor out = at::empty({B, Cout, Tout}, x_in.options());
  if (B == 0 || Cout == 0 || Tout == 0) return out;
  // xpad rows [B, Cin, M] through fill_row (the same ELU code as exact_conv1d; one phase).
  const int64_t M = Tp;
  // x and head may be views with rows apart (a stream's slices): only their time steps must be contiguous.
  auto rows = [](const at::Tensor& t) { return t.stride(-1) == 1 || t.size(-1) <= 1 ? t : t.contiguous(); };
  const at::Tensor x = rows(x_in), wt = wt_in.contiguous(), bias = b_in.contiguous();
  const at::Tensor head = head_in ? rows(*head_in) : at::Tensor();
  if (residual_in) {
    TORCH_CHECK_VALUE(residual_in->dim() == 3 && residual_in->size(0) == B && residual_in->size(1) == Cout &&
                          residual_in->size(2) == Tout,
                      "exact_conv1d_narrow: residual must be [", B, ", ", Cout, ", ", Tout, "], got ",
                      residual_in->sizes());
    TORCH_CHECK_TYPE(residual_in->scalar_type() == at::kFloat && residual_in->device().is_cpu(),
                     "exact_conv1d_narrow: residual must be float32 on the CPU");
  }
  const at::Tensor res = residual_in ? rows(*residual_in) : at::Tensor();
  std::unique_ptr<float[]> xpad_mem(new float[B * Cin * M]);
  float* const xpad = xpad_mem.get();
  const float* xp = x.data_ptr<float>();
  const float* hp = H ? head.data_ptr<float>() : nullptr;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t ci = 0; ci < Cin; ++ci) {
      float* dst = xpad + (b * Cin + ci) * M;
      std::fill(dst, dst + pad_left, 0.0f);
      std::fill(dst + pad_left + T, dst + M, 0.0f);
      if (H)  // elu_vec is per lane: no seam at H
        fill_row(hp + b * head.stride(0) + ci * head.stride(1), H, pad_left, 1, M, elu, dst);
      fill_row(xp + b * x.stride(0) + ci * x.stride(1), T - H, pad_left + H, 1, M, elu, dst);
    }
  }
  const float *wp = wt.data_ptr<float>(), *bp = bias.data_ptr<float>();
  float* op = out.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    const float* xr = xpad + b * Cin * M;
    for (int64_t c0 = 0; c0 < Cout; c0 += NCV * W) {
      const int64_t cv = std::min<int64_t>(NCV, (Cout - c0) / W);
      const int64_t npb = Tout <= 2 ? 2 : cv == 1 ? 16 : cv == 2 ? 8 : 4;  // positions per block
      float* ob = op + (b * Cout + c0) * Tout;
      const int64_t rc = residual_in ? res.stride(1) : 0;
      const float* rb = residual_in ? res.data_ptr<float>() + b * res.stride(0) + c0 * rc : nullptr;
      for (int64_t t0 = 0; t0 < Tout; t0 += npb) {
        const int64_t np = std::min<int64_t>(npb, Tout - t0);
        const float *wc = wp + c0, *bc = bp + c0;
        if (npb == 2) {
          switch (cv) {
            case 4: narrow_block<4, 2>(xr, Cin, M, K, S, D, wc, Cout, bc, t0, np, ob, Tout, rb, rc); break;
            case 3: narrow_block<3, 2>(xr, Cin, M, K, S, D, wc, Cout, bc, t0, np, ob, Tout, rb, rc); break;
            case 2: narrow_block<2, 2>(xr, Cin, M, K, S, D, wc, Cout, bc, t0, np, ob, Tout, rb, rc); break;
            default: narrow_block<1, 2>(xr, Cin, M, K, S, D, wc, Cout, bc, t0, np, ob, Tout, rb, rc); break;
          }
        } else {
          switch (cv) {
            case 4: narrow_block<4, 4>(xr, Cin, M, K, S, D, wc, Cout, bc, t0, np, ob, Tout, rb, rc); break;
            case 3: narrow_block<3, 4>(xr, Cin, M, K, S, D, wc, Cout, bc, t0, np, ob, Tout, rb, rc); break;
            case 2: narrow_block<2, 8>(xr, Cin, M, K, S, D, wc, Cout, bc, t0, np, ob, Tout, rb, rc); break;
            default: narrow_block<1, 16>(xr, Cin, M, K, S, D, wc, Cout, bc, t0, np, ob, Tout, rb, rc); break;
          }
        }
      }
    }
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(vqaudio, m) {
  m.def("exact_conv1d(Tensor x, Tensor weight, Tensor bias, int stride, int dilation, int pad_left, int pad_right, "
        "bool elu=False) -> Tensor");
  m.def("exact_conv1d_narrow(Tensor x, Tensor weight_t, Tensor bias, int stride, int dilation, int pad_left, "
        "int pad_right, bool elu=False, Tensor? head=None, Tensor? residual=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(vqaudio, CPU, m) {
  m.impl("exact_conv1d", &exact_conv1d_cpu);
  m.impl("exact_conv1d_narrow", &exact_conv1d_narrow_cpu);
}

}  // namespace vqaudio
