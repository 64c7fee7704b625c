// vqaudio::rotate_to_backward: the backward of the rotation trick (vqaudio/ops/rotation.py), CPU kernel.
//
// Per row of e, q, grad ([N, D] after flattening the leading dimensions), with u = e/|e|, v = q/|q|:
//   grad_e = |q|/|e| (g - 2 (u + v) ((u + v) . g) / |u + v|^2 + 2 u (v . g))
// which is lambda R^T g for R = I - 2 r r^T + 2 v u^T, r = (u + v)/|u + v| (two Householder reflections),
// applied as a rank-2 update: two passes over the row (the four dot products, then |u + v|^2 summed
// from its components, so nearly opposite rows do not cancel through 2 + 2 cos) and one to write.
// Rows with |e| or |q| below 1e-12 pass the gradient through; where |u + v|^2 <= 64 eps (opposite directions
// within rounding) the bisector is noise and r is taken as 0 (R = I + 2 v u^T, the reflection u -> -u).
// float16/bfloat16 are computed in float32. Same formula as the PyTorch reference rotation_vjp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

namespace vqaudio {
namespace {

template <typename scalar_t, typename acc_t>
void rotate_rows(const scalar_t* e, const scalar_t* q, const scalar_t* g, scalar_t* out, int64_t N, int64_t D) {
  constexpr acc_t tiny = acc_t(1e-12);
  constexpr acc_t opposite = 64 * std::numeric_limits<acc_t>::epsilon();
  at::parallel_for(0, N, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const scalar_t* er = e + n * D;
      const scalar_t* qr = q + n * D;
      const scalar_t* gr = g + n * D;
      scalar_t* o = out + n * D;
      acc_t ee = 0, qq = 0, ge = 0, gq = 0;
      for (int64_t d = 0; d < D; ++d) {
        const acc_t ed = er[d], qd = qr[d], gd = gr[d];
        ee += ed * ed;
        qq += qd * qd;
        ge += gd * ed;
        gq += gd * qd;
      }
      const acc_t ne = std::sqrt(ee), nq = std::sqrt(qq);
      if (!(ne > tiny && nq > tiny)) {
        for (int64_t d = 0; d < D; ++d) o[d] = gr[d];
        continue;
      }
      const acc_t ie = acc_t(1) / ne, iq = acc_t(1) / nq;
      acc_t ss = 0;  // |u + v|^2 from its components
      for (int64_t d = 0; d < D; ++d) {
        const acc_t s = acc_t(er[d]) * ie + acc_t(qr[d]) * iq;
        ss += s * s;
      }
      const acc_t rg = ss > opposite ? (ge * ie + gq * iq) / ss : acc_t(0);  // ((u + v) . g) / |u + v|^2
      const acc_t vg = gq * iq;                      // v . g
      const acc_t scale = nq * ie;
      const acc_t ce = scale * (acc_t(2) * (vg - rg)) * ie;  // coefficient of e
      const acc_t cq = -scale * acc_t(2) * rg * iq;          // coefficient of q
      for (int64_t d = 0; d < D; ++d)
        o[d] = static_cast<scalar_t>(scale * acc_t(gr[d]) + ce * acc_t(er[d]) + cq * acc_t(qr[d]));
    }
  });
}

at::Tensor rotate_to_backward_cpu(const at::Tensor& e_in, const at::Tensor& q_in, const at::Tensor& grad_in) {
  TORCH_CHECK_VALUE(e_in.sizes() == q_in.sizes() && e_in.sizes() == grad_in.sizes(),
                    "rotate_to_backward: e, q and grad must have the same shape, got ", e_in.sizes(), ", ",
                    q_in.sizes(), ", ", grad_in.sizes());
  TORCH_CHECK_VALUE(e_in.dim() >= 1, "rotate_to_backward: tensors need a last (vector) dimension");
  const auto st = e_in.scalar_type();
  TORCH_CHECK_TYPE(q_in.scalar_type() == st && grad_in.scalar_type() == st,
                   "rotate_to_backward: e, q and grad must have one dtype");
  const int64_t D = e_in.size(-1);
  const int64_t N = D == 0 ? 0 : e_in.numel() / D;
  const at::Tensor e = e_in.contiguous(), q = q_in.contiguous(), g = grad_in.contiguous();
  at::Tensor out = at::empty(e_in.sizes(), e_in.options().memory_format(at::MemoryFormat::Contiguous));
  if (N == 0 || D == 0) return out.copy_(grad_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, st, "rotate_to_backward_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    rotate_rows<scalar_t, acc_t>(e.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                                 out.data_ptr<scalar_t>(), N, D);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(vqaudio, m) {
  m.def("rotate_to_backward(Tensor e, Tensor q, Tensor grad) -> Tensor");
}

TORCH_LIBRARY_IMPL(vqaudio, CPU, m) {
  m.impl("rotate_to_backward", &rotate_to_backward_cpu);
}

}  // namespace vqaudio
