// vqaudio::nearest_code: schema, input checks and the CPU kernel.
//
// indices[n] = argmin_k ||x[n] - codebook[k]||^2 (ties to the lowest k), dist2[n] = that minimum.
// The N x K distance matrix is never formed: rows are processed in blocks of MR, each block sweeps
// the packed codebook with a register-blocked micro-kernel (csrc/cpu/microkernel.h) that keeps a
// running (value, index) minimum of ||e||^2 - 2 x.e (||x||^2 is the same for every code, as in
// FAISS's k = 1 path); dist2 is then summed directly for the winner only, so it has no cancellation.
// x and the codebook are centred on the codebook mean first (distances do not change; cancellation
// does). Small D (kDirectMaxDim) and tiny codebooks compare direct differences instead, uncentred.
// Extra memory: the packed codebook and a centred copy (2 K x D) plus one MR x D tile per thread.
#include <ATen/Parallel.h>
#include <Python.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/kernels.h"
#include "nearest_code.h"

// Importing vqaudio._C registers the ops below (the pattern of pytorch/extension-cpp).
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace vqaudio {

void check_inputs(const at::Tensor& x, const at::Tensor& codebook) {
  TORCH_CHECK_VALUE(x.dim() == 2, "nearest_code: x must be 2-D [N, D], got shape ", x.sizes());
  TORCH_CHECK_VALUE(codebook.dim() == 2, "nearest_code: codebook must be 2-D [K, D], got shape ", codebook.sizes());
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"x", x}, {"codebook", codebook}}) {
    const auto st = t.scalar_type();
    TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16, "nearest_code: ",
                     name, " has dtype ", st, "; expected float32, float64, float16 or bfloat16");
  }
  TORCH_CHECK_TYPE(x.scalar_type() == codebook.scalar_type(), "nearest_code: x is ", x.scalar_type(),
                   " but codebook is ", codebook.scalar_type(), "; they must match");
  TORCH_CHECK_VALUE(x.device() == codebook.device(), "nearest_code: x is on ", x.device(), " but codebook is on ",
                    codebook.device());
  TORCH_CHECK_VALUE(codebook.size(0) > 0, "nearest_code: codebook is empty (K = 0); it needs at least one code");
  TORCH_CHECK_VALUE(x.size(1) == codebook.size(1), "nearest_code: x has D = ", x.size(1), " but codebook has D = ",
                    codebook.size(1));
  TORCH_CHECK_VALUE(codebook.size(0) < (int64_t(1) << 31), "nearest_code: codebook has more than 2^31 codes");
}

at::ScalarType dist_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

namespace {

template <typename acc_t>
cpu::Kernel<acc_t> select_kernel() {
  if constexpr (std::is_same_v<acc_t, double>) {
    return cpu::select_f64();
  } else {
    return cpu::select_f32();
  }
}

// Copies `rows` rows (from row0 on) of strided rows into a dense [MR, D] tile, converting to acc_t and
// subtracting the codebook mean mu; zero-fills the rest of the tile. Strided rows (channels-first z,
// sd = T) are read channel by channel across the rows: each channel's values of neighbouring frames
// share a cache line, while one row's D channels, 4 * T bytes apart, map to a few L1 sets for
// power-of-two T and would be evicted before the next row reads them.
template <typename scalar_t, typename acc_t>
void pack_rows(const scalar_t* src, const RowLayout& L, int64_t row0, int64_t rows, int64_t D, int64_t MR,
               const acc_t* mu, acc_t* tile) {
  if (L.sd == 1) {
    for (int64_t r = 0; r < rows; ++r) {
      const scalar_t* row = src + L.offset(row0 + r);
      acc_t* out = tile + r * D;
      for (int64_t d = 0; d < D; ++d) out[d] = static_cast<acc_t>(row[d]) - mu[d];
    }
  } else {
    constexpr int64_t kMaxRows = 16;  // >= every kernel's MR
    TORCH_INTERNAL_ASSERT(rows <= kMaxRows);
    const scalar_t* row[kMaxRows];
    for (int64_t r = 0; r < rows; ++r) row[r] = src + L.offset(row0 + r);
    for (int64_t d = 0; d < D; ++d) {
      const int64_t off = d * L.sd;
      for (int64_t r = 0; r < rows; ++r) tile[r * D + d] = static_cast<acc_t>(row[r][off]) - mu[d];
    }
  }
  std::memset(tile + rows * D, 0, sizeof(acc_t) * (MR - rows) * D);
}

// ||x - e||^2 summed directly (8 partial sums, so the loop vectorises) for a centred row x and the
// winning code e: exact zeros for exact matches and no cancellation. Non-finite exactly when x has a
// NaN/Inf or the values are large enough to overflow; the caller tells the two apart.
template <typename acc_t>
acc_t squared_distance(const acc_t* x, const acc_t* e_centred, int64_t D) {
  constexpr int L = 8;
  acc_t part[L] = {};
  int64_t d = 0;
  for (; d + L <= D; d += L)
    for (int j = 0; j < L; ++j) {
      const acc_t diff = x[d + j] - e_centred[d + j];
      part[j] += diff * diff;
    }
  for (; d < D; ++d) part[0] += (x[d] - e_centred[d]) * (x[d] - e_centred[d]);
  acc_t sum = 0;
  for (int j = 0; j < L; ++j) sum += part[j];
  return sum;
}

// Whether a raw row of x is finite: called only when its distance is not, which means NaN/Inf in x
// or finite values whose centred squares overflow.
template <typename scalar_t, typename acc_t>
bool row_finite(const scalar_t* row, int64_t s1, int64_t D) {
  for (int64_t d = 0; d < D; ++d)
    if (!std::isfinite(static_cast<acc_t>(row[d * s1]))) return false;
  return true;
}

// Mean of the codebook rows (summed in double); zeros if it is not finite (a non-finite codebook
// is reported by the packing pass).
template <typename scalar_t, typename acc_t>
std::vector<acc_t> codebook_mean(const scalar_t* E, int64_t e0, int64_t e1, int64_t K, int64_t D) {
  std::vector<double> sum(D, 0.0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t d = 0; d < D; ++d) sum[d] += static_cast<double>(static_cast<acc_t>(E[k * e0 + d * e1]));
  std::vector<acc_t> mu(D);
  for (int64_t d = 0; d < D; ++d) {
    const acc_t m = static_cast<acc_t>(sum[d] / static_cast<double>(K));
    mu[d] = std::isfinite(m) ? m : acc_t(0);
  }
  return mu;
}

// Codebooks up to this size are compared with every row directly (see run()): measured faster than
// a 64-code panel and its lane reduction for K <= 4 at any D, slower from K = 8 on.
constexpr int64_t kTinyCodebook = 4;

template <typename scalar_t, typename acc_t>
void run(const at::Tensor& x, const at::Tensor& codebook, at::Tensor& indices, at::Tensor& dist2) {
  const auto kernel = select_kernel<acc_t>();
  // x is [B, T, D] with any strides (the 2-D op passes [1, N, D]); rows are read in place
  const RowLayout L{x.size(1), x.stride(0), x.stride(1), x.stride(2)};
  const int64_t N = x.size(0) * x.size(1), D = x.size(2), K = codebook.size(0);
  const int64_t MR = kernel.MR, NR = kernel.NR;
  const int64_t npanels = (K + NR - 1) / NR;
  // Direct differences (tiny codebooks, or small D: see nearest_code.h) need no centring; the
  // expansion does.
  const bool tiny = K <= kTinyCodebook;
  const bool direct = tiny || D <= kDirectMaxDim;

  // Distances are translation invariant: centre x and the codebook on the codebook mean, so the
  // ||x||^2 - 2 x.e + ||e||^2 expansion does not cancel catastrophically for latents far from 0.
  const scalar_t* E = codebook.data_ptr<scalar_t>();
  const int64_t e0 = codebook.stride(0), e1 = codebook.stride(1);
  const std::vector<acc_t> mu = direct ? std::vector<acc_t>(D, acc_t(0)) : codebook_mean<scalar_t, acc_t>(E, e0, e1, K, D);

  // Pack the centred codebook into panels of NR codes ([panel][d][j], scaled by -2; +e for the
  // direct sweep) with their squared norms (0 for the direct sweep; padding codes +inf), and keep a
  // row-major centred copy where it is read: the expansion's final distances and the tiny path.
  const bool row_major = tiny || !direct;
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<acc_t>::value);
  at::Tensor panels = at::zeros({npanels * D * NR}, options);
  at::Tensor norms = at::full({npanels * NR}, std::numeric_limits<acc_t>::infinity(), options);
  at::Tensor centred = at::empty({row_major ? K * D : 0}, options);
  acc_t* P = panels.data_ptr<acc_t>();
  acc_t* Q = norms.data_ptr<acc_t>();
  acc_t* C = centred.data_ptr<acc_t>();
  // The micro-kernels load panels and norms with aligned vector loads (the CPU allocator aligns to 64).
  TORCH_INTERNAL_ASSERT(reinterpret_cast<uintptr_t>(P) % 64 == 0 && reinterpret_cast<uintptr_t>(Q) % 64 == 0);
  const acc_t scale = direct ? acc_t(1) : acc_t(-2);
  std::atomic<bool> codebook_finite{true};
  at::parallel_for(0, K, 256, [&](int64_t k0, int64_t k1) {
    bool finite = true;
    for (int64_t k = k0; k < k1; ++k) {
      acc_t* dst = P + (k / NR) * D * NR + (k % NR);
      acc_t norm = 0;
      for (int64_t d = 0; d < D; ++d) {
        const acc_t raw = static_cast<acc_t>(E[k * e0 + d * e1]);
        finite &= std::isfinite(raw);
        const acc_t v = raw - mu[d];
        if (row_major) C[k * D + d] = v;
        dst[d * NR] = scale * v;
        norm += v * v;  // dropped by the direct sweep
      }
      Q[k] = direct ? acc_t(0) : norm;
    }
    if (!finite) codebook_finite = false;
  });
  TORCH_CHECK_VALUE(codebook_finite.load(), "nearest_code: codebook contains NaN or Inf");
  if (N == 0) return;

  const scalar_t* X = x.data_ptr<scalar_t>();
  int64_t* out_idx = indices.data_ptr<int64_t>();
  acc_t* out_dist = dist2.data_ptr<acc_t>();
  const int64_t nblocks = (N + MR - 1) / MR;
  std::atomic<bool> x_finite{true};
  // At least ~256k multiply-adds per task: small calls run inline, with no thread start-up.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(1, MR * npanels * NR * D));
  if (tiny) {
    // A handful of codes: direct distances per row beat a 64-code panel and a lane reduction.
    at::parallel_for(0, nblocks, grain, [&](int64_t b0, int64_t b1) {
      std::vector<acc_t> tile(MR * D);
      bool finite = true;
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t row0 = b * MR, rows = std::min<int64_t>(MR, N - row0);
        pack_rows<scalar_t, acc_t>(X, L, row0, rows, D, MR, mu.data(), tile.data());
        for (int64_t r = 0; r < rows; ++r) {
          const acc_t* xr = tile.data() + r * D;
          int64_t arg = 0;
          acc_t best = squared_distance(xr, C, D);
          for (int64_t k = 1; k < K; ++k) {
            const acc_t dist = squared_distance(xr, C + k * D, D);
            if (dist < best) best = dist, arg = k;  // strict: the lowest index wins ties
          }
          if (!std::isfinite(best)) finite &= row_finite<scalar_t, acc_t>(X + L.offset(row0 + r), L.sd, D);
          out_idx[row0 + r] = arg;
          out_dist[row0 + r] = best;
        }
      }
      if (!finite) x_finite = false;
    });
    TORCH_CHECK_VALUE(x_finite.load(), "nearest_code: x contains NaN or Inf");
    return;
  }
  at::parallel_for(0, nblocks, grain, [&](int64_t b0, int64_t b1) {
    std::vector<acc_t> tile(MR * D), best(MR);
    std::vector<int64_t> arg(MR);
    bool finite = true;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t row0 = b * MR, rows = std::min<int64_t>(MR, N - row0);
      pack_rows<scalar_t, acc_t>(X, L, row0, rows, D, MR, mu.data(), tile.data());
      (direct ? kernel.direct : kernel.fn)(tile.data(), D, P, Q, npanels, best.data(), arg.data());
      for (int64_t r = 0; r < rows; ++r) {
        const acc_t dist = direct ? best[r] : squared_distance(tile.data() + r * D, C + arg[r] * D, D);
        if (!std::isfinite(dist)) finite &= row_finite<scalar_t, acc_t>(X + L.offset(row0 + r), L.sd, D);
        out_idx[row0 + r] = arg[r];
        out_dist[row0 + r] = dist;
      }
    }
    if (!finite) x_finite = false;
  });
  TORCH_CHECK_VALUE(x_finite.load(), "nearest_code: x contains NaN or Inf");
}

}  // namespace

void nearest_code_rows_cpu(const at::Tensor& x, const at::Tensor& codebook, at::Tensor& indices, at::Tensor& dist2) {
  TORCH_INTERNAL_ASSERT(x.dim() == 3 && x.device().is_cpu() && indices.is_contiguous() && dist2.is_contiguous());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "nearest_code_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    run<scalar_t, acc_t>(x, codebook, indices, dist2);
  });
}

std::tuple<at::Tensor, at::Tensor> nearest_code_cpu(const at::Tensor& x, const at::Tensor& codebook) {
  check_inputs(x, codebook);
  TORCH_INTERNAL_ASSERT(x.device().is_cpu());
  at::Tensor indices = at::empty({x.size(0)}, x.options().dtype(at::kLong));
  at::Tensor dist2 = at::empty({x.size(0)}, x.options().dtype(dist_dtype(x.scalar_type())));
  nearest_code_rows_cpu(x.unsqueeze(0), codebook, indices, dist2);
  return {indices, dist2};
}

namespace cpu {

namespace {
template <typename T>
Kernel<T> pick(Kernel<T> (*b)(), Kernel<T> (*a2)(), Kernel<T> (*a512)()) {
  const char* forced = std::getenv("VQAUDIO_CPU_ISA");
  const bool has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (forced && *forced) {
    const std::string want(forced);
    if (want == "base") return b();
    TORCH_CHECK_VALUE(want == "avx2" || want == "avx512", "VQAUDIO_CPU_ISA must be base, avx2 or avx512, not '",
                      want, "'");
    TORCH_CHECK_VALUE(want == "avx2" ? has2 : has512, "VQAUDIO_CPU_ISA=", want, " but this CPU does not support it");
    return want == "avx2" ? a2() : a512();
  }
  return has512 ? a512() : has2 ? a2() : b();
}
}  // namespace

Kernel<float> select_f32() { return pick<float>(&base::kernel_f32, &avx2::kernel_f32, &avx512::kernel_f32); }
Kernel<double> select_f64() { return pick<double>(&base::kernel_f64, &avx2::kernel_f64, &avx512::kernel_f64); }
const char* selected_isa() { return select_f32().isa; }

}  // namespace cpu

namespace {
std::string cpu_isa() { return cpu::selected_isa(); }
}  // namespace

TORCH_LIBRARY(vqaudio, m) {
  m.def("nearest_code(Tensor x, Tensor codebook) -> (Tensor, Tensor)");
  m.def("cpu_isa() -> str", &cpu_isa);
}

TORCH_LIBRARY_IMPL(vqaudio, CPU, m) {
  m.impl("nearest_code", &nearest_code_cpu);
}

}  // namespace vqaudio
