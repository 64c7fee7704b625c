// vqaudio::wavenet_step_: one cached generation step through every layer of the WaveNet prior (CPU, float32).
//
// Contract (the pure-PyTorch reference is vqaudio/ops/wavenet_step.py; shapes: B batch, R residual channels,
// G gate channels, L layers, k kernel size, layer l's ring buffer of span_l = dilations[l] * (k - 1) rows is
// buffer[off_l : off_l + span_l], off_l = span_0 + ... + span_{l-1}):
//
//   for l in 0..L-1, d = dilations[l]:
//     a      = conv_b[l] + [ring_l[(t - (k-1)d) % span], ..., ring_l[(t - d) % span], x] @ conv_w[l]   // [B, G]
//     ring_l[t % span] = x                                                         // after the taps are read
//     gated[:, l] = tanh(a[:, :G/2]) * sigmoid(a[:, G/2:])                         // [B, G/2]
//     x      = res_b[l] + gated[:, l] @ res_w[l] + residual_scale * x              // [B, R]
//   return x
//
// One op instead of about seven small ATen ops per layer: the step of a 20-layer prior at batch 1 is a few
// tens of microseconds of arithmetic, which per-op dispatch would otherwise multiply by ten or more.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "target_clones.h"  // the row update is multi-versioned (VQ_TARGET_CLONES)

namespace vqaudio {
namespace {

// y[0:n] += sum_i x[i] * w[i, 0:n] for a row-major w [m, n] (a vector-matrix product accumulated into y).
VQ_TARGET_CLONES void vecmat_acc(const float* __restrict x, int64_t m, const float* __restrict w, int64_t n,
                                 float* __restrict y) {
  for (int64_t i = 0; i < m; ++i) {
    const float s = x[i];
    const float* __restrict row = w + i * n;
    for (int64_t j = 0; j < n; ++j) y[j] += s * row[j];
  }
}

void check_float_cpu(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK_VALUE(t.dim() == dim, "wavenet_step_: ", name, " must be ", dim, "-D, got shape ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, "wavenet_step_: ", name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device().is_cpu(), "wavenet_step_: ", name, " must be on the CPU, got ", t.device());
}

at::Tensor wavenet_step_cpu(const at::Tensor& x_in, at::Tensor& buffer, int64_t t, at::IntArrayRef dilations,
                            int64_t kernel_size, const at::Tensor& conv_w_in, const at::Tensor& conv_b_in,
                            const at::Tensor& res_w_in, const at::Tensor& res_b_in, double residual_scale,
                            at::Tensor& gated) {
  check_float_cpu(x_in, "x", 2);
  check_float_cpu(buffer, "buffer", 3);
  check_float_cpu(conv_w_in, "conv_w", 3);
  check_float_cpu(conv_b_in, "conv_b", 3);
  check_float_cpu(res_w_in, "res_w", 3);
  check_float_cpu(res_b_in, "res_b", 2);
  check_float_cpu(gated, "gated", 3);
  const int64_t B = x_in.size(0), R = x_in.size(1), L = static_cast<int64_t>(dilations.size()), k = kernel_size;
  TORCH_CHECK_VALUE(k >= 2, "wavenet_step_: kernel_size must be >= 2, got ", k);
  TORCH_CHECK_VALUE(t >= 0, "wavenet_step_: t must be >= 0, got ", t);
  int64_t total = 0;
  std::vector<int64_t> offset(L), span(L);
  for (int64_t l = 0; l < L; ++l) {
    TORCH_CHECK_VALUE(dilations[l] >= 1, "wavenet_step_: dilations must be >= 1, got ", dilations[l]);
    offset[l] = total;
    span[l] = dilations[l] * (k - 1);
    total += span[l];
  }
  const int64_t G = conv_w_in.size(2), H = G / 2;
  TORCH_CHECK_VALUE(G % 2 == 0, "wavenet_step_: conv_w must have an even number of gate channels, got ", G);
  TORCH_CHECK_VALUE(buffer.size(0) == total && buffer.size(1) == B && buffer.size(2) == R,
                    "wavenet_step_: buffer must be [", total, ", ", B, ", ", R, "], got ", buffer.sizes());
  TORCH_CHECK_VALUE(conv_w_in.size(0) == L && conv_w_in.size(1) == k * R, "wavenet_step_: conv_w must be [", L, ", ",
                    k * R, ", G], got ", conv_w_in.sizes());
  TORCH_CHECK_VALUE(conv_b_in.size(0) == L && (conv_b_in.size(1) == 1 || conv_b_in.size(1) == B) &&
                        conv_b_in.size(2) == G,
                    "wavenet_step_: conv_b must be [", L, ", 1 or ", B, ", ", G, "], got ", conv_b_in.sizes());
  TORCH_CHECK_VALUE(res_w_in.size(0) == L && res_w_in.size(1) == H && res_w_in.size(2) == R,
                    "wavenet_step_: res_w must be [", L, ", ", H, ", ", R, "], got ", res_w_in.sizes());
  TORCH_CHECK_VALUE(res_b_in.size(0) == L && res_b_in.size(1) == R, "wavenet_step_: res_b must be [", L, ", ", R,
                    "], got ", res_b_in.sizes());
  TORCH_CHECK_VALUE(gated.size(0) == B && gated.size(1) == L && gated.size(2) == H, "wavenet_step_: gated must be [",
                    B, ", ", L, ", ", H, "], got ", gated.sizes());
  TORCH_CHECK_VALUE(buffer.is_contiguous() && gated.is_contiguous(),
                    "wavenet_step_: buffer and gated are written in place and must be contiguous");

  const at::Tensor x = x_in.contiguous(), conv_w = conv_w_in.contiguous(), conv_b = conv_b_in.contiguous(),
                   res_w = res_w_in.contiguous(), res_b = res_b_in.contiguous();
  at::Tensor out = at::empty({B, R}, x.options());
  const float c = static_cast<float>(residual_scale);
  float* buf = buffer.data_ptr<float>();
  float* gate_out = gated.data_ptr<float>();
  const float *xp = x.data_ptr<float>(), *cw = conv_w.data_ptr<float>(), *cb = conv_b.data_ptr<float>(),
              *rw = res_w.data_ptr<float>(), *rb = res_b.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t bias_stride = conv_b.size(1) == 1 ? 0 : G;

  // Batch rows are independent; a row's layers run in order. Small batches stay on the calling thread.
  at::parallel_for(0, B, 16, [&](int64_t b0, int64_t b1) {
    std::vector<float> scratch(G + 2 * R);
    float *a = scratch.data(), *cur = a + G, *next = cur + R;
    for (int64_t b = b0; b < b1; ++b) {
      std::copy(xp + b * R, xp + (b + 1) * R, cur);
      for (int64_t l = 0; l < L; ++l) {
        const int64_t d = dilations[l], n = span[l];
        float* ring = buf + offset[l] * B * R;  // row s of layer l, batch b: ring[(s * B + b) * R]
        const float* w = cw + l * k * R * G;
        const float* bias = cb + (l * conv_b.size(1)) * G + b * bias_stride;
        std::copy(bias, bias + G, a);
        for (int64_t i = 0; i + 1 < k; ++i) {  // tap i reads x_{t - (k-1-i) d}
          const int64_t s = (((t - (k - 1 - i) * d) % n) + n) % n;
          vecmat_acc(ring + (s * B + b) * R, R, w + i * R * G, G, a);
        }
        vecmat_acc(cur, R, w + (k - 1) * R * G, G, a);
        std::copy(cur, cur + R, ring + ((t % n) * B + b) * R);
        float* g = gate_out + (b * L + l) * H;
        for (int64_t j = 0; j < H; ++j) g[j] = std::tanh(a[j]) / (1.0f + std::exp(-a[H + j]));
        const float* rbl = rb + l * R;
        for (int64_t r = 0; r < R; ++r) next[r] = rbl[r] + c * cur[r];
        vecmat_acc(g, H, rw + l * H * R, R, next);
        std::swap(cur, next);
      }
      std::copy(cur, cur + R, op + b * R);
    }
  });
  return out;
}

// Logits of one stage of the prior's head: relu(relu(acc + stage_bias) @ w1 + b1) @ w2 + b2.
at::Tensor wavenet_head_cpu(const at::Tensor& acc_in, const at::Tensor& stage_bias_in, const at::Tensor& w1_in,
                            const at::Tensor& b1_in, const at::Tensor& w2_in, const at::Tensor& b2_in) {
  const char* names[] = {"acc", "stage_bias", "w1", "b1", "w2", "b2"};
  const at::Tensor* ts[] = {&acc_in, &stage_bias_in, &w1_in, &b1_in, &w2_in, &b2_in};
  const int64_t dims[] = {2, 1, 2, 1, 2, 1};
  for (int i = 0; i < 6; ++i) {
    TORCH_CHECK_VALUE(ts[i]->dim() == dims[i], "wavenet_head: ", names[i], " must be ", dims[i], "-D, got shape ",
                      ts[i]->sizes());
    TORCH_CHECK_TYPE(ts[i]->scalar_type() == at::kFloat, "wavenet_head: ", names[i], " must be float32, got ",
                     ts[i]->scalar_type());
    TORCH_CHECK_VALUE(ts[i]->device().is_cpu(), "wavenet_head: ", names[i], " must be on the CPU, got ",
                      ts[i]->device());
  }
  const int64_t B = acc_in.size(0), H = acc_in.size(1), H1 = w1_in.size(1), K = w2_in.size(1);
  TORCH_CHECK_VALUE(stage_bias_in.size(0) == H && w1_in.size(0) == H && b1_in.size(0) == H1 && w2_in.size(0) == H1 &&
                        b2_in.size(0) == K,
                    "wavenet_head: shapes do not chain: acc ", acc_in.sizes(), ", stage_bias ", stage_bias_in.sizes(),
                    ", w1 ", w1_in.sizes(), ", b1 ", b1_in.sizes(), ", w2 ", w2_in.sizes(), ", b2 ", b2_in.sizes());
  const at::Tensor acc = acc_in.contiguous(), sb = stage_bias_in.contiguous(), w1 = w1_in.contiguous(),
                   b1 = b1_in.contiguous(), w2 = w2_in.contiguous(), b2 = b2_in.contiguous();
  at::Tensor out = at::empty({B, K}, acc.options());
  const float *ap = acc.data_ptr<float>(), *sbp = sb.data_ptr<float>(), *w1p = w1.data_ptr<float>(),
              *b1p = b1.data_ptr<float>(), *w2p = w2.data_ptr<float>(), *b2p = b2.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> scratch(H + H1);
    float *h = scratch.data(), *h1 = h + H;
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t j = 0; j < H; ++j) h[j] = std::max(ap[r * H + j] + sbp[j], 0.0f);
      std::copy(b1p, b1p + H1, h1);
      vecmat_acc(h, H, w1p, H1, h1);
      for (int64_t j = 0; j < H1; ++j) h1[j] = std::max(h1[j], 0.0f);
      float* y = op + r * K;
      std::copy(b2p, b2p + K, y);
      vecmat_acc(h1, H1, w2p, K, y);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(vqaudio, m) {
  m.def("wavenet_head(Tensor acc, Tensor stage_bias, Tensor w1, Tensor b1, Tensor w2, Tensor b2) -> Tensor");
  m.def(
      "wavenet_step_(Tensor x, Tensor(a!) buffer, int t, int[] dilations, int kernel_size, Tensor conv_w, "
      "Tensor conv_b, Tensor res_w, Tensor res_b, float residual_scale, Tensor(b!) gated) -> Tensor");
}

TORCH_LIBRARY_IMPL(vqaudio, CPU, m) {
  m.impl("wavenet_step_", &wavenet_step_cpu);
  m.impl("wavenet_head", &wavenet_head_cpu);
}

}  // namespace vqaudio
