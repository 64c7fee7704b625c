// vqaudio::quantize_channels and its backward: nearest-code quantisation of channels-first latents
// z [B, D, T] (vqaudio/ops/channels.py), CPU kernels; no transposed copy of z, its gradient or the output.
//
// Forward: the nearest_code search reads the rows z[b, :, t] in place (a strided [B, T, D] view), then the
// chosen codes are written channels-first: quantized[b, :, t] = codebook[indices[b, t]], whole code rows
// transposed into a [D, TB] tile per block of TB frames.
// Backward, one pass per block of TB frames of one item, with e = codebook[k], k = indices[b, t]:
//   grad_z[b, :, t] = G(g) + 2 grad_dist2[b, t] (z - e)      (G: identity, or the rotation trick's
//                                                             lambda R^T g of csrc/rotate_to.cpp)
//   grad_codebook[k] = -sum over the frames coded k of 2 grad_dist2 (z - e)
// The block's codes, z and grad are copied into [D, TB] tiles, so every loop runs over TB contiguous frames
// in L1 (reading the D rows of a block again and again from z itself would thrash L1 for power-of-two T).
// The scatter into grad_codebook accumulates per thread into its own K x D buffer, then the buffers are
// summed; when those would exceed kMaxBuffer elements the codebook gradient is accumulated by one thread.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "nearest_code.h"

namespace vqaudio {
namespace {

constexpr int64_t TB = 64;  // frames per block: runs of 256 bytes per channel row; the tiles stay in L2
constexpr int64_t kMaxBuffer = int64_t(1) << 24;  // per-thread grad_codebook buffers, elements in all
constexpr int64_t kScratchRows = 12;               // per-frame scalars of a block (backward_block)

void check_channels(const at::Tensor& z, const at::Tensor& codebook) {
  TORCH_CHECK_VALUE(z.dim() == 3, "quantize_channels: z must be 3-D [B, D, T], got shape ", z.sizes());
  TORCH_CHECK_VALUE(codebook.dim() == 2, "quantize_channels: codebook must be 2-D [K, D], got shape ",
                    codebook.sizes());
  TORCH_CHECK_VALUE(z.size(1) == codebook.size(1), "quantize_channels: z has D = ", z.size(1),
                    " but codebook has D = ", codebook.size(1));
  check_inputs(at::empty({0, z.size(1)}, z.options()), codebook);  // dtype, device and codebook checks
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_channels_cpu(const at::Tensor& z, const at::Tensor& codebook,
                                                                     bool rotation_trick) {
  (void)rotation_trick;  // the forward is the same; the flag selects the backward
  check_channels(z, codebook);
  const int64_t B = z.size(0), D = z.size(1), T = z.size(2);
  at::Tensor indices = at::empty({B, T}, z.options().dtype(at::kLong));
  at::Tensor dist2 = at::empty({B, T}, z.options().dtype(dist_dtype(z.scalar_type())));
  nearest_code_rows_cpu(z.transpose(1, 2), codebook, indices, dist2);
  at::Tensor quantized = at::empty({B, D, T}, z.options().memory_format(at::MemoryFormat::Contiguous));
  // quantized[b, :, t0:t0 + TB] per block of TB frames: the chosen code rows (D contiguous values each) are
  // transposed into a [D, TB] tile in L1, then written as D runs of TB frames
  const int64_t* idx = indices.data_ptr<int64_t>();
  const int64_t per_item = (T + TB - 1) / TB;
  const at::Tensor e = codebook.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "quantize_channels_cpu", [&] {
    const scalar_t* E = e.data_ptr<scalar_t>();
    scalar_t* out = quantized.data_ptr<scalar_t>();
    at::parallel_for(0, B * per_item, std::max<int64_t>(1, 16384 / std::max<int64_t>(D * TB, 1)),
                     [&](int64_t k0, int64_t k1) {
      std::vector<scalar_t> tile(D * TB);
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t b = k / per_item, t0 = (k % per_item) * TB, n = std::min(TB, T - t0);
        const int64_t* ib = idx + b * T + t0;
        for (int64_t r = 0; r < n; ++r) {
          const scalar_t* er = E + ib[r] * D;
          for (int64_t d = 0; d < D; ++d) tile[d * TB + r] = er[d];
        }
        for (int64_t d = 0; d < D; ++d) std::copy_n(tile.data() + d * TB, n, out + (b * D + d) * T + t0);
      }
    });
  });
  return {quantized, indices, dist2};
}

// One block: frames [t0, t0 + n) of item b. gz (if any) receives grad_z, gbuf (if any) accumulates the
// codebook gradient. scratch: (4 D + kScratchRows) TB acc_t. Inlined into backward_block below, once per
// instruction set.
template <typename scalar_t, typename acc_t>
inline __attribute__((always_inline)) void backward_block_body(
    const scalar_t* Z, const scalar_t* G, const acc_t* GD, const scalar_t* E, const int64_t* idx, int64_t D,
    int64_t T, int64_t b, int64_t t0, int64_t n, bool rotation, scalar_t* gz, acc_t* gbuf, acc_t* scratch) {
  constexpr acc_t tiny = acc_t(1e-12);
  constexpr acc_t opposite = 64 * std::numeric_limits<acc_t>::epsilon();
  acc_t* q = scratch;     // [D, TB] tiles: the chosen codes, z and grad of the block, read once from memory
  acc_t* zt = q + D * TB;
  acc_t* gt = zt + D * TB;
  acc_t* w = gt + D * TB;  // 2 grad_dist2 per frame
  acc_t *cg = w + TB, *ce = cg + TB, *cq = ce + TB;  // grad_z = cg g + ce z + cq e + w (z - e)
  acc_t *ee = cq + TB, *qq = ee + TB, *gq = qq + TB, *ge = gq + TB;
  const int64_t* ib = idx + b * T + t0;
  const int64_t base = b * D * T + t0;
  for (int64_t r = 0; r < n; ++r) {  // whole code rows, transposed into the tile
    const scalar_t* er = E + ib[r] * D;
    for (int64_t d = 0; d < D; ++d) q[d * TB + r] = static_cast<acc_t>(er[d]);
  }
  for (int64_t d = 0; d < D; ++d)
    for (int64_t r = 0; r < n; ++r) {
      zt[d * TB + r] = static_cast<acc_t>(Z[base + d * T + r]);
      if (gz) gt[d * TB + r] = static_cast<acc_t>(G[base + d * T + r]);
    }
  for (int64_t r = 0; r < n; ++r) w[r] = acc_t(2) * GD[b * T + t0 + r];
  if (gz) {
    for (int64_t r = 0; r < n; ++r) cg[r] = acc_t(1), ce[r] = acc_t(0), cq[r] = acc_t(0);
    if (rotation) {
      for (int64_t r = 0; r < n; ++r) ee[r] = qq[r] = gq[r] = ge[r] = acc_t(0);
      for (int64_t d = 0; d < D; ++d) {
        const acc_t *zr = zt + d * TB, *gr = gt + d * TB, *qr = q + d * TB;
        for (int64_t r = 0; r < n; ++r) {
          const acc_t zv = zr[r], gv = gr[r], qv = qr[r];
          ee[r] += zv * zv;
          qq[r] += qv * qv;
          ge[r] += gv * zv;
          gq[r] += gv * qv;
        }
      }
      acc_t *ss = ge + TB, *ie = ss + TB, *iq = ie + TB;  // ss: |u + v|^2, summed from its components
      for (int64_t r = 0; r < n; ++r) {
        const acc_t ne = std::sqrt(ee[r]), nq = std::sqrt(qq[r]);
        const bool defined = ne > tiny && nq > tiny;
        ie[r] = defined ? acc_t(1) / ne : acc_t(0);
        iq[r] = defined ? acc_t(1) / nq : acc_t(0);
        ss[r] = acc_t(0);
      }
      for (int64_t d = 0; d < D; ++d) {
        const acc_t *zr = zt + d * TB, *qr = q + d * TB;
        for (int64_t r = 0; r < n; ++r) {
          const acc_t s = zr[r] * ie[r] + qr[r] * iq[r];
          ss[r] += s * s;
        }
      }
      for (int64_t r = 0; r < n; ++r) {
        if (ie[r] == acc_t(0)) continue;  // |z| or |e| (numerically) zero: straight through
        const acc_t rg = ss[r] > opposite ? (ge[r] * ie[r] + gq[r] * iq[r]) / ss[r] : acc_t(0);
        const acc_t vg = gq[r] * iq[r];
        const acc_t scale = std::sqrt(qq[r]) * ie[r];
        cg[r] = scale;
        ce[r] = scale * (acc_t(2) * (vg - rg)) * ie[r];
        cq[r] = -scale * acc_t(2) * rg * iq[r];
      }
    }
    for (int64_t d = 0; d < D; ++d) {
      const acc_t *zr = zt + d * TB, *gr = gt + d * TB, *qr = q + d * TB;
      scalar_t* o = gz + base + d * T;
      for (int64_t r = 0; r < n; ++r) {
        const acc_t zv = zr[r], qv = qr[r];
        o[r] = static_cast<scalar_t>(cg[r] * gr[r] + (ce[r] + w[r]) * zv + (cq[r] - w[r]) * qv);
      }
    }
  }
  if (gbuf) {  // the terms row by row ([TB, D], from the tiles' contiguous runs), then scattered in whole rows
    acc_t* terms = gt + D * TB + kScratchRows * TB;  // [TB, D], after the per-frame scalars
    for (int64_t d = 0; d < D; ++d) {
      const acc_t *zr = zt + d * TB, *qr = q + d * TB;
      for (int64_t r = 0; r < n; ++r) terms[r * D + d] = w[r] * (zr[r] - qr[r]);
    }
    for (int64_t r = 0; r < n; ++r) {
      acc_t* row = gbuf + ib[r] * D;
      const acc_t* tr = terms + r * D;
      for (int64_t d = 0; d < D; ++d) row[d] -= tr[d];
    }
  }
}

// The block's loops vectorised for AVX2 where the CPU has it (no FMA: the same roundings as the baseline
// build, so the gradients are bit-identical across the two).
template <typename scalar_t, typename acc_t>
__attribute__((target("avx2"))) void backward_block_avx2(const scalar_t* Z, const scalar_t* G, const acc_t* GD,
                                                         const scalar_t* E, const int64_t* idx, int64_t D, int64_t T,
                                                         int64_t b, int64_t t0, int64_t n, bool rotation, scalar_t* gz,
                                                         acc_t* gbuf, acc_t* scratch) {
  backward_block_body<scalar_t, acc_t>(Z, G, GD, E, idx, D, T, b, t0, n, rotation, gz, gbuf, scratch);
}

template <typename scalar_t, typename acc_t>
void backward_block(const scalar_t* Z, const scalar_t* G, const acc_t* GD, const scalar_t* E, const int64_t* idx,
                    int64_t D, int64_t T, int64_t b, int64_t t0, int64_t n, bool rotation, scalar_t* gz, acc_t* gbuf,
                    acc_t* scratch) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) {
    backward_block_avx2<scalar_t, acc_t>(Z, G, GD, E, idx, D, T, b, t0, n, rotation, gz, gbuf, scratch);
  } else {
    backward_block_body<scalar_t, acc_t>(Z, G, GD, E, idx, D, T, b, t0, n, rotation, gz, gbuf, scratch);
  }
}

std::tuple<at::Tensor, at::Tensor> quantize_channels_backward_cpu(const at::Tensor& grad_quantized,
                                                                  const at::Tensor& grad_dist2, const at::Tensor& z_in,
                                                                  const at::Tensor& codebook_in,
                                                                  const at::Tensor& indices_in, bool rotation_trick,
                                                                  bool z_grad, bool codebook_grad) {
  TORCH_CHECK_VALUE(z_in.dim() == 3 && codebook_in.dim() == 2 && z_in.size(1) == codebook_in.size(1),
                    "quantize_channels_backward: z [B, D, T] and codebook [K, D] expected, got ", z_in.sizes(),
                    " and ", codebook_in.sizes());
  const int64_t B = z_in.size(0), D = z_in.size(1), T = z_in.size(2), K = codebook_in.size(0);
  TORCH_CHECK_VALUE(grad_quantized.sizes() == z_in.sizes() && grad_dist2.dim() == 2 && grad_dist2.size(0) == B &&
                        grad_dist2.size(1) == T && indices_in.sizes() == grad_dist2.sizes(),
                    "quantize_channels_backward: grad_quantized must be [B, D, T], grad_dist2 and indices [B, T]");
  TORCH_CHECK_TYPE(z_in.scalar_type() == codebook_in.scalar_type() &&
                       grad_quantized.scalar_type() == z_in.scalar_type() && indices_in.scalar_type() == at::kLong,
                   "quantize_channels_backward: z, codebook and grad_quantized must share a dtype and indices be int64");
  const at::Tensor z = z_in.contiguous(), e = codebook_in.contiguous(), idx = indices_in.contiguous();
  const at::Tensor g = grad_quantized.contiguous();
  const auto acc_type = z.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor gd = grad_dist2.to(acc_type).contiguous();
  at::Tensor gz = z_grad ? at::empty({B, D, T}, z.options()) : at::empty({0}, z.options());
  at::Tensor ge = at::empty({0}, e.options());
  if (B * T > 0) {
    TORCH_CHECK_VALUE(idx.min().item<int64_t>() >= 0 && idx.max().item<int64_t>() < K,
                      "quantize_channels_backward: indices out of range");
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "quantize_channels_backward_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    const int64_t n_buffers = codebook_grad ? (threads * K * D <= kMaxBuffer ? threads : 1) : 0;
    at::Tensor buffers = at::zeros({n_buffers * K * D}, z.options().dtype(acc_type));
    const scalar_t *Z = z.data_ptr<scalar_t>(), *G = g.data_ptr<scalar_t>(), *E = e.data_ptr<scalar_t>();
    const acc_t* GD = gd.data_ptr<acc_t>();
    const int64_t* I = idx.data_ptr<int64_t>();
    scalar_t* GZ = z_grad ? gz.data_ptr<scalar_t>() : nullptr;
    acc_t* BUF = n_buffers ? buffers.data_ptr<acc_t>() : nullptr;
    const int64_t per_item = (T + TB - 1) / TB, nblocks = B * per_item, scratch_size = (4 * D + kScratchRows) * TB;
    auto blocks = [&](int64_t k0, int64_t k1, scalar_t* gz_out, acc_t* gbuf) {
      std::vector<acc_t> scratch(scratch_size);
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t b = k / per_item, t0 = (k % per_item) * TB;
        backward_block<scalar_t, acc_t>(Z, G, GD, E, I, D, T, b, t0, std::min(TB, T - t0), rotation_trick, gz_out,
                                        gbuf, scratch.data());
      }
    };
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(D * TB, 1));
    if (n_buffers > 1) {
      at::parallel_for(0, nblocks, grain, [&](int64_t k0, int64_t k1) {
        blocks(k0, k1, GZ, BUF + int64_t(at::get_thread_num()) * K * D);
      });
    } else {
      if (GZ) at::parallel_for(0, nblocks, grain, [&](int64_t k0, int64_t k1) { blocks(k0, k1, GZ, nullptr); });
      if (BUF) blocks(0, nblocks, nullptr, BUF);  // a single buffer: the scatter is serial
    }
    if (codebook_grad) ge = buffers.view({n_buffers, K, D}).sum(0).to(e.scalar_type());
  });
  return {gz, ge};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(vqaudio, m) {
  m.def("quantize_channels(Tensor z, Tensor codebook, bool rotation_trick) -> (Tensor, Tensor, Tensor)");
  m.def(
      "quantize_channels_backward(Tensor grad_quantized, Tensor grad_dist2, Tensor z, Tensor codebook, "
      "Tensor indices, bool rotation_trick, bool z_grad, bool codebook_grad) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(vqaudio, CPU, m) {
  m.impl("quantize_channels", &quantize_channels_cpu);
  m.impl("quantize_channels_backward", &quantize_channels_backward_cpu);
}

}  // namespace vqaudio
