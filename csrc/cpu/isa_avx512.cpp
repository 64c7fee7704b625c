// The nearest-code micro-kernel compiled for the avx512 instruction set (chosen at run time).
#include <cstdint>

#include "kernels.h"

#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,fma")
#define VQ_ISA avx512
#define VQ_VEC_BYTES 64
#include "microkernel.h"

namespace vqaudio {
namespace cpu {
namespace avx512 {

Kernel<float> kernel_f32() { return {"avx512", kMR, kWf * kNV, &f32<false>, &f32<true>}; }
Kernel<double> kernel_f64() { return {"avx512", kMR, kWd * kNV, &f64<false>, &f64<true>}; }

}  // namespace avx512
}  // namespace cpu
}  // namespace vqaudio
