// Register-blocked nearest-code micro-kernels, one set per instruction set (see microkernel.h).
#pragma once

#include <cstdint>

namespace vqaudio {
namespace cpu {

// Computes, for MR rows of x (row-major [MR, D], rows past the real count zero-filled), the
// minimum over all codes of ||e_k||^2 - 2 x.e_k and its lowest index. The codebook is packed in
// panels of NR codes, scaled by -2 (exact): panels[(p * D + d) * NR + j] = -2 e[p * NR + j][d];
// norms[p * NR + j] = ||e||^2, +inf for padding codes (which therefore never win).
template <typename T>
using RowBlockFn = void (*)(const T* x, int64_t D, const T* panels, const T* norms, int64_t npanels,
                            T* best_val, int64_t* best_idx);

template <typename T>
struct Kernel {
  const char* isa;
  int MR;  // rows per call
  int NR;  // codes per panel
  RowBlockFn<T> fn;
  // The same sweep on direct differences (microkernel.h, DIRECT): panels hold +e, norms are 0
  // (+inf for padding) and best_val is min_k ||x - e_k||^2 itself.
  RowBlockFn<T> direct;
};

#define VQ_DECLARE_ISA(ns)         \
  namespace ns {                   \
  Kernel<float> kernel_f32();      \
  Kernel<double> kernel_f64();     \
  }
VQ_DECLARE_ISA(base)
VQ_DECLARE_ISA(avx2)
VQ_DECLARE_ISA(avx512)
#undef VQ_DECLARE_ISA

// The fastest kernel this CPU supports, or the one named by VQAUDIO_CPU_ISA (base|avx2|avx512).
Kernel<float> select_f32();
Kernel<double> select_f64();
const char* selected_isa();

}  // namespace cpu
}  // namespace vqaudio
