// vqaudio::nearest_code, CUDA kernel: the same contract as the CPU kernel (csrc/nearest_code.cpp).
//
// x and the codebook are centred on the codebook mean mu (as on the CPU: distances are unchanged and
// the expansion below cancels far less for latents away from 0). One fused kernel: each thread block
// owns BM rows of x and sweeps the codebook in tiles of BN codes.
// Tiles of x and of the codebook (BK dimensions at a time) are staged in shared memory; each thread
// accumulates a TM x TN register tile of ||e||^2 - 2 x.e (accumulators start at ||e||^2, as on the
// CPU) and keeps a running (value, index) minimum for its TM rows; dist2 of the winner is then summed
// directly. The 16 threads that share rows
// reduce their minima with warp shuffles, lowest index on ties. No N x K buffer exists: extra memory
// is the K code norms, the D-vector mu and a 2-int error flag (plus an N x D copy of x, or K x D of
// the codebook, only when they are not contiguous). Norms and dist2 are rounded as on the CPU. Every code's value is computed by the same sequence of
// operations, so duplicated codebook rows tie exactly and resolve to the lowest k, as on the CPU.
// For D <= kDirectMaxDim (nearest_code.h) the same tiles hold +e and the accumulators add
// fma(x - e, x - e) from 0, uncentred: the value is the squared distance itself, summed in order of
// d with FMA like the CPU's DIRECT micro-kernel, so a row halfway between two codes ties exactly.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraphsUtils.cuh>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <climits>
#include <cmath>
#include <type_traits>

#include "../nearest_code.h"

namespace vqaudio {
namespace {

constexpr int BM = 64;   // rows per block
constexpr int BN = 64;   // codes per tile
constexpr int BK = 16;   // dimensions staged per step
constexpr int TM = 4;    // rows per thread
constexpr int TN = 4;    // codes per thread
constexpr int THREADS_N = BN / TN;  // 16 threads share a row group
constexpr int THREADS = (BM / TM) * THREADS_N;  // 256
static_assert(THREADS_N <= 32 && 32 % THREADS_N == 0, "row groups must not straddle warps");

enum Flag { kCodebookNotFinite = 0, kXNotFinite = 1 };

// Unfused multiply and add: the CPU computes norms and dist2 without FMA, and these must round the
// same way there and here (nvcc would otherwise contract a * b + c into one FMA).
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// mu[d] = mean over k of e[k][d] (summed in double, as on the CPU); 0 if not finite.
template <typename scalar_t, typename acc_t>
__global__ void code_mean_kernel(const scalar_t* __restrict__ e, int64_t K, int64_t D, acc_t* __restrict__ mu) {
  const int64_t d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= D) return;
  double sum = 0;
  for (int64_t k = 0; k < K; ++k) sum += static_cast<double>(static_cast<acc_t>(e[k * D + d]));
  const acc_t m = static_cast<acc_t>(sum / static_cast<double>(K));
  mu[d] = isfinite(m) ? m : acc_t(0);
}

// norms[k] = ||e_k - mu||^2 in acc_t; flags a non-finite codebook value.
template <typename scalar_t, typename acc_t>
__global__ void code_norms_kernel(const scalar_t* __restrict__ e, const acc_t* __restrict__ mu, int64_t K, int64_t D,
                                  acc_t* __restrict__ norms, int* __restrict__ flags) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= K) return;
  acc_t norm = 0;
  bool finite = true;
  for (int64_t d = 0; d < D; ++d) {
    const acc_t raw = static_cast<acc_t>(e[k * D + d]);
    finite = finite && isfinite(raw);
    const acc_t v = raw - mu[d];
    norm = add_rn(norm, mul_rn(v, v));
  }
  norms[k] = norm;
  if (!finite) flags[kCodebookNotFinite] = 1;
}

template <typename acc_t>
__device__ __forceinline__ bool better(acc_t v, int i, acc_t best_v, int best_i) {
  return v < best_v || (v == best_v && i < best_i);
}

template <typename scalar_t, typename acc_t, bool DIRECT>
__global__ void __launch_bounds__(THREADS)
    nearest_code_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ e, const acc_t* __restrict__ mu,
                        const acc_t* __restrict__ enorm, int64_t N, int64_t K, int64_t D,
                        int64_t* __restrict__ out_idx, acc_t* __restrict__ out_dist, int* __restrict__ flags) {
  // Padding makes the transposing staging stores below conflict-free (a warp writes two rows of
  // 16 consecutive dd: stride 66 floats or 65 doubles puts them in distinct banks).
  constexpr int PAD = sizeof(acc_t) == 4 ? 2 : 1;
  __shared__ acc_t xs[BK][BM + PAD];
  __shared__ acc_t es[BK][BN + PAD];
  const int tid = threadIdx.x;
  const int tx = tid % THREADS_N;  // code group: codes tx, tx + 16, ... of a tile
  const int ty = tid / THREADS_N;  // row group: rows ty, ty + 16, ... of the block
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * BM;

  acc_t best[TM];
  int best_i[TM];
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    best[i] = INFINITY;
    best_i[i] = 0;  // as the CPU lanes: an all-overflow row (every value +inf or NaN) gets code 0
  }

  for (int64_t k0 = 0; k0 < K; k0 += BN) {
    acc_t acc[TM][TN];
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int64_t c = k0 + tx + j * THREADS_N;
      const acc_t start = (c < K && !DIRECT) ? enorm[c] : acc_t(0);
#pragma unroll
      for (int i = 0; i < TM; ++i) acc[i][j] = start;
    }
    for (int64_t d0 = 0; d0 < D; d0 += BK) {
      for (int t = tid; t < BM * BK; t += THREADS) {
        const int r = t / BK, dd = t % BK;
        const int64_t gr = row0 + r, gd = d0 + dd;
        xs[dd][r] = (gr < N && gd < D) ? static_cast<acc_t>(x[gr * D + gd]) - mu[gd] : acc_t(0);
      }
      for (int t = tid; t < BN * BK; t += THREADS) {
        const int c = t / BK, dd = t % BK;
        const int64_t gc = k0 + c, gd = d0 + dd;
        const acc_t centred = (gc < K && gd < D) ? static_cast<acc_t>(e[gc * D + gd]) - mu[gd] : acc_t(0);
        es[dd][c] = DIRECT ? centred : acc_t(-2) * centred;
      }
      __syncthreads();
#pragma unroll
      for (int dd = 0; dd < BK; ++dd) {
        acc_t a[TM], b[TN];
#pragma unroll
        for (int i = 0; i < TM; ++i) a[i] = xs[dd][ty + i * (BM / TM)];
#pragma unroll
        for (int j = 0; j < TN; ++j) b[j] = es[dd][tx + j * THREADS_N];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) {
            if constexpr (DIRECT) {
              const acc_t diff = a[i] - b[j];  // padded dimensions are 0 - 0
              acc[i][j] = fma(diff, diff, acc[i][j]);
            } else {
              acc[i][j] = fma(a[i], b[j], acc[i][j]);
            }
          }
      }
      __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int64_t c = k0 + tx + j * THREADS_N;
      if (c >= K) continue;
#pragma unroll
      for (int i = 0; i < TM; ++i)
        if (better(acc[i][j], static_cast<int>(c), best[i], best_i[i])) {
          best[i] = acc[i][j];
          best_i[i] = static_cast<int>(c);
        }
    }
  }

  // The 16 threads of a row group are 16 consecutive lanes of one warp: reduce within them.
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    acc_t v = best[i];
    int bi = best_i[i];
#pragma unroll
    for (int offset = THREADS_N / 2; offset > 0; offset >>= 1) {
      const acc_t ov = __shfl_xor_sync(0xffffffffu, v, offset);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, offset);
      if (better(ov, oi, v, bi)) {
        v = ov;
        bi = oi;
      }
    }
    // dist2 of the winner summed directly, in the CPU's order (csrc/nearest_code.cpp,
    // squared_distance): 8 partial sums over d = j, j + 8, ..., the D % 8 tail into sum 0, then
    // summed 0..7, all unfused. Lanes 0..7 of the row group hold the partial sums. The direct sweep's
    // value v is already that distance (as on the CPU); the pass still checks x for NaN/Inf.
    const int64_t row = row0 + ty + i * (BM / TM);
    const bool valid = row < N;
    const int64_t k = bi;
    const int64_t D8 = D & ~int64_t(7);
    acc_t part = 0;
    bool finite = true;
    if (valid && tx < 8) {
      auto term = [&](int64_t d) {
        const acc_t raw = static_cast<acc_t>(x[row * D + d]);
        finite = finite && isfinite(raw);
        const acc_t diff = (raw - mu[d]) - (static_cast<acc_t>(e[k * D + d]) - mu[d]);
        part = add_rn(part, mul_rn(diff, diff));
      };
      for (int64_t d = tx; d < D8; d += 8) term(d);
      if (tx == 0)
        for (int64_t d = D8; d < D; ++d) term(d);
    }
    acc_t dist = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) dist = add_rn(dist, __shfl_sync(0xffffffffu, part, (threadIdx.x & 16) | j));
    if (!finite) flags[kXNotFinite] = 1;
    if (tx == 0 && valid) {
      out_idx[row] = k;
      out_dist[row] = DIRECT ? v : dist;
    }
  }
}

std::tuple<at::Tensor, at::Tensor> nearest_code_cuda(const at::Tensor& x_in, const at::Tensor& codebook_in) {
  check_inputs(x_in, codebook_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor codebook = codebook_in.contiguous();
  const int64_t N = x.size(0), D = x.size(1), K = codebook.size(0);
  at::Tensor indices = at::empty({N}, x.options().dtype(at::kLong));
  at::Tensor dist2 = at::empty({N}, x.options().dtype(dist_dtype(x.scalar_type())));
  at::Tensor norms = at::empty({K}, dist2.options());
  at::Tensor mu = at::empty({D}, dist2.options());
  at::Tensor flags = at::zeros({2}, x.options().dtype(at::kInt));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "nearest_code_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const bool direct = D <= kDirectMaxDim;
    if (direct) {
      mu.zero_();  // direct differences need no centring
    } else if (D > 0) {  // a grid of 0 blocks is a launch error
      code_mean_kernel<scalar_t, acc_t><<<(D + 255) / 256, 256, 0, stream>>>(codebook.data_ptr<scalar_t>(), K, D,
                                                                            mu.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    code_norms_kernel<scalar_t, acc_t><<<(K + 255) / 256, 256, 0, stream>>>(
        codebook.data_ptr<scalar_t>(), mu.data_ptr<acc_t>(), K, D, norms.data_ptr<acc_t>(), flags.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (N > 0) {
      const int64_t blocks = (N + BM - 1) / BM;
      TORCH_CHECK(blocks <= INT_MAX, "nearest_code: too many rows for one launch (N = ", N, ")");
      auto kernel = direct ? nearest_code_kernel<scalar_t, acc_t, true> : nearest_code_kernel<scalar_t, acc_t, false>;
      kernel<<<static_cast<unsigned>(blocks), THREADS, 0, stream>>>(
          x.data_ptr<scalar_t>(), codebook.data_ptr<scalar_t>(), mu.data_ptr<acc_t>(), norms.data_ptr<acc_t>(), N, K, D,
          indices.data_ptr<int64_t>(), dist2.data_ptr<acc_t>(), flags.data_ptr<int>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  // The NaN/Inf errors need the flags on the host: one synchronisation per call. A stream being
  // captured into a CUDA graph cannot synchronise, so the check is skipped there.
  if (at::cuda::currentStreamCaptureStatusMayInitCtx() == at::cuda::CaptureStatus::None) {
    const at::Tensor host_flags = flags.cpu();
    const int* f = host_flags.data_ptr<int>();
    TORCH_CHECK_VALUE(f[kCodebookNotFinite] == 0, "nearest_code: codebook contains NaN or Inf");
    TORCH_CHECK_VALUE(f[kXNotFinite] == 0, "nearest_code: x contains NaN or Inf");
  }
  return {indices, dist2};
}

}  // namespace

TORCH_LIBRARY_IMPL(vqaudio, CUDA, m) {
  m.impl("nearest_code", &nearest_code_cuda);
}

}  // namespace vqaudio
