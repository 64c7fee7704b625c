// The nearest-code micro-kernel compiled for the avx2 instruction set (chosen at run time).
#include <cstdint>

#include "kernels.h"

#pragma GCC target("avx2,fma")
#define VQ_ISA avx2
#define VQ_VEC_BYTES 32
#include "microkernel.h"

namespace vqaudio {
namespace cpu {
namespace avx2 {

Kernel<float> kernel_f32() { return {"avx2", kMR, kWf * kNV, &f32<false>, &f32<true>}; }
Kernel<double> kernel_f64() { return {"avx2", kMR, kWd * kNV, &f64<false>, &f64<true>}; }

}  // namespace avx2
}  // namespace cpu
}  // namespace vqaudio
