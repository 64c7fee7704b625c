// The nearest-code micro-kernel, written once with GCC/Clang vector extensions and compiled once per
// instruction set: each isa_*.cpp sets `#pragma GCC target(...)`, defines VQ_ISA (namespace) and
// VQ_VEC_BYTES, then includes this file. No standard headers here: they must not be compiled under
// the target pragma.
//
// For MR rows and one panel of NR = W * NV codes, the MR x NV vector accumulators stay in registers
// while d runs over D (one broadcast of x[r][d] and NV aligned loads per step, MR * NV FMAs); they
// start at ||e||^2 and the panel holds -2e, so they end at val = ||e||^2 - 2 x.e, which is folded
// into a running per-lane (min, index) pair. Codes reach a lane in
// increasing order and the comparison is strict, so each lane keeps its lowest index among equal
// values; the final cross-lane reduction breaks ties to the lowest index too. Every code's value is
// computed by the same sequence of operations, so duplicated codebook rows tie exactly and resolve to
// the lowest k, as in the reference. ||x||^2 is added by the caller to the winner only.
//
// DIRECT (small D, see nearest_code.h): the panel holds +e and the accumulators start at 0 (+inf
// for padding codes) and add (x - e)^2 per d, so each lane holds the squared distance itself, summed
// in order of d: no cancellation, and a row exactly between two codes ties exactly.

namespace vqaudio {
namespace cpu {
namespace VQ_ISA {

template <typename T, int W, int NV, int MR, bool DIRECT>
static void row_block(const T* __restrict x, int64_t D, const T* __restrict panels, const T* __restrict norms,
                      int64_t npanels, T* __restrict best_val, int64_t* __restrict best_idx) {
  typedef T vt __attribute__((vector_size(W * sizeof(T))));
  typedef decltype(vt{} < vt{}) vi;  // the comparison mask type doubles as the index vector
  typedef __typeof__(vi{}[0]) I;
  constexpr int NR = W * NV;

  vi lane;
  for (int l = 0; l < W; ++l) lane[l] = static_cast<I>(l);
  vt minv[MR];
  vi mini[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    minv[r] = vt{} + __builtin_inf();
    mini[r] = vi{};
  }

  for (int64_t p = 0; p < npanels; ++p) {
    const T* b = panels + p * D * NR;
    // Accumulators start at ||e||^2 and the panels hold -2e, so after the loop over d each lane
    // holds ||e||^2 - 2 x.e with no extra epilogue arithmetic.
    vt nv[NV], acc[MR][NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) nv[v] = *reinterpret_cast<const vt*>(norms + p * NR + v * W);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[r][v] = nv[v];

    for (int64_t d = 0; d < D; ++d) {
      vt bv[NV];
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) bv[v] = *reinterpret_cast<const vt*>(b + d * NR + v * W);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const vt a = x[r * D + d] - vt{};  // broadcast (x - 0 folds to x; 0 + x would not)
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) {
          if constexpr (DIRECT) {
            const vt diff = a - bv[v];
            acc[r][v] += diff * diff;
          } else {
            acc[r][v] += bv[v] * a;
          }
        }
      }
    }

#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const vi idx = lane + static_cast<I>(p * NR + v * W);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const vi less = acc[r][v] < minv[r];
        minv[r] = less ? acc[r][v] : minv[r];
        mini[r] = less ? idx : mini[r];
      }
    }
  }

  for (int r = 0; r < MR; ++r) {
    T best = minv[r][0];
    I arg = mini[r][0];
    for (int l = 1; l < W; ++l) {
      const T v = minv[r][l];
      const I i = mini[r][l];
      if (v < best || (v == best && i < arg)) {
        best = v;
        arg = i;
      }
    }
    best_val[r] = best;
    best_idx[r] = static_cast<int64_t>(arg);
  }
}

// Register budgets: 16 vector registers below AVX-512 (MR * NV accumulators + NV loads + 1
// broadcast), 32 with AVX-512.
#if VQ_VEC_BYTES == 64
constexpr int kMR = 6, kNV = 4;
#else
constexpr int kMR = 4, kNV = 2;
#endif
constexpr int kWf = VQ_VEC_BYTES / 4;
constexpr int kWd = VQ_VEC_BYTES / 8;

template <bool DIRECT>
static void f32(const float* x, int64_t D, const float* panels, const float* norms, int64_t npanels,
                float* best_val, int64_t* best_idx) {
  row_block<float, kWf, kNV, kMR, DIRECT>(x, D, panels, norms, npanels, best_val, best_idx);
}

template <bool DIRECT>
static void f64(const double* x, int64_t D, const double* panels, const double* norms, int64_t npanels,
                double* best_val, int64_t* best_idx) {
  row_block<double, kWd, kNV, kMR, DIRECT>(x, D, panels, norms, npanels, best_val, best_idx);
}

}  // namespace VQ_ISA
}  // namespace cpu
}  // namespace vqaudio
