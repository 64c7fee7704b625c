// vqaudio::nearest_code_backward: the gradient of dist2 = ||x[n] - e[k_n]||^2 (vqaudio/ops/__init__.py), CPU kernel.
//
//   diff[n] = 2 grad_dist2[n] (x[n] - e[k_n]),  grad_x[n] = diff[n],  grad_e[k] = -sum_{n: k_n = k} diff[n]
//
// in one pass over the rows (the PyTorch form gathers, subtracts, scales and scatters in four). The scatter
// into grad_e accumulates per thread into its own K x D buffer, then the buffers are summed; when those
// would exceed kMaxBuffer elements the rows are scattered by one thread. Accumulation is in float64 for
// float64 inputs, else float32 (as the PyTorch reference). An output that is not asked for is returned
// empty (0 elements).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

namespace vqaudio {
namespace {

constexpr int64_t kMaxBuffer = int64_t(1) << 24;  // per-thread grad_e buffers, elements in all

template <typename scalar_t, typename acc_t>
void backward_rows(const acc_t* g, const scalar_t* x, const scalar_t* e, const int64_t* idx, int64_t N, int64_t D,
                   int64_t K, scalar_t* gx, acc_t* ge_buffers, int64_t n_buffers) {
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(D, 1));
  // rows [n0, n1): grad_x into gx_out (if any), -diff accumulated into ge_out (if any)
  auto rows = [&](int64_t n0, int64_t n1, scalar_t* gx_out, acc_t* ge_out) {
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t k = idx[n];
      const acc_t w = acc_t(2) * g[n];
      const scalar_t* xr = x + n * D;
      const scalar_t* er = e + k * D;
      acc_t* gr = ge_out ? ge_out + k * D : nullptr;
      for (int64_t d = 0; d < D; ++d) {
        const acc_t diff = (static_cast<acc_t>(xr[d]) - static_cast<acc_t>(er[d])) * w;
        if (gx_out) gx_out[n * D + d] = static_cast<scalar_t>(diff);
        if (gr) gr[d] -= diff;
      }
    }
  };
  if (n_buffers > 1) {  // one grad_e buffer per thread
    at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
      rows(n0, n1, gx, ge_buffers + int64_t(at::get_thread_num()) * K * D);
    });
    return;
  }
  if (gx) at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) { rows(n0, n1, gx, nullptr); });
  if (ge_buffers) rows(0, N, nullptr, ge_buffers);  // a single buffer: the scatter is serial
}

std::tuple<at::Tensor, at::Tensor> nearest_code_backward_cpu(const at::Tensor& grad_dist2, const at::Tensor& x_in,
                                                              const at::Tensor& codebook_in, const at::Tensor& indices_in,
                                                              bool x_grad, bool codebook_grad) {
  TORCH_CHECK_VALUE(x_in.dim() == 2 && codebook_in.dim() == 2 && x_in.size(1) == codebook_in.size(1),
                    "nearest_code_backward: x [N, D] and codebook [K, D] expected, got ", x_in.sizes(), " and ",
                    codebook_in.sizes());
  TORCH_CHECK_VALUE(grad_dist2.dim() == 1 && indices_in.dim() == 1 && grad_dist2.size(0) == x_in.size(0) &&
                        indices_in.size(0) == x_in.size(0),
                    "nearest_code_backward: grad_dist2 and indices must be [N]");
  TORCH_CHECK_TYPE(x_in.scalar_type() == codebook_in.scalar_type() && indices_in.scalar_type() == at::kLong,
                   "nearest_code_backward: x and codebook must share a dtype and indices be int64");
  const int64_t N = x_in.size(0), D = x_in.size(1), K = codebook_in.size(0);
  const at::Tensor x = x_in.contiguous(), e = codebook_in.contiguous(), idx = indices_in.contiguous();
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor g = grad_dist2.to(acc_type).contiguous();
  at::Tensor gx = x_grad ? at::empty({N, D}, x.options()) : at::empty({0}, x.options());
  at::Tensor ge = at::empty({0}, e.options());
  if (N > 0 && K > 0) {
    TORCH_CHECK_VALUE(idx.min().item<int64_t>() >= 0 && idx.max().item<int64_t>() < K,
                      "nearest_code_backward: indices out of range");
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "nearest_code_backward_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    const int64_t n_buffers = codebook_grad ? (threads * K * D <= kMaxBuffer ? threads : 1) : 0;
    at::Tensor buffers = at::zeros({n_buffers * K * D}, x.options().dtype(acc_type));
    if (N > 0)
      backward_rows<scalar_t, acc_t>(g.data_ptr<acc_t>(), x.data_ptr<scalar_t>(), e.data_ptr<scalar_t>(),
                                     idx.data_ptr<int64_t>(), N, D, K, x_grad ? gx.data_ptr<scalar_t>() : nullptr,
                                     n_buffers ? buffers.data_ptr<acc_t>() : nullptr, n_buffers);
    if (codebook_grad) {
      at::Tensor summed = buffers.view({n_buffers, K, D}).sum(0);
      ge = summed.to(e.scalar_type());
    }
  });
  return {gx, ge};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(vqaudio, m) {
  m.def(
      "nearest_code_backward(Tensor grad_dist2, Tensor x, Tensor codebook, Tensor indices, bool x_grad, "
      "bool codebook_grad) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(vqaudio, CPU, m) {
  m.impl("nearest_code_backward", &nearest_code_backward_cpu);
}

}  // namespace vqaudio
