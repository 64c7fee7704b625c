// The nearest-code micro-kernel compiled for the base instruction set (chosen at run time).
#include <cstdint>

#include "kernels.h"


#define VQ_ISA base
#define VQ_VEC_BYTES 16
#include "microkernel.h"

namespace vqaudio {
namespace cpu {
namespace base {

Kernel<float> kernel_f32() { return {"base", kMR, kWf * kNV, &f32<false>, &f32<true>}; }
Kernel<double> kernel_f64() { return {"base", kMR, kWd * kNV, &f64<false>, &f64<true>}; }

}  // namespace base
}  // namespace cpu
}  // namespace vqaudio
