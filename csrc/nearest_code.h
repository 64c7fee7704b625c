// Shared declarations of the vqaudio::nearest_code op (CPU and CUDA kernels).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace vqaudio {

// Shape, dtype and device checks of the op contract. NaN/Inf checks happen inside the kernels,
// fused with the passes that read the data, so no N x D temporary is allocated for them.
void check_inputs(const at::Tensor& x, const at::Tensor& codebook);

// Up to this many dimensions both kernels compare direct differences sum_d (x_d - e_d)^2 instead of
// the ||e||^2 - 2 x.e expansion: for small D the expansion's rounding is large next to the gaps
// between codes and breaks exact ties (a row halfway between two codes of a float16/bfloat16 grid),
// while the direct sum, on uncentred values, keeps them and costs little more there.
constexpr int64_t kDirectMaxDim = 4;

// float64 stays float64; float32, float16 and bfloat16 are accumulated and reported in float32.
at::ScalarType dist_dtype(at::ScalarType input);

std::tuple<at::Tensor, at::Tensor> nearest_code_cpu(const at::Tensor& x, const at::Tensor& codebook);

// Rows of a [B, T, D] tensor with any strides (e.g. the transposed view of channels-first latents
// [B, D, T]): row n = (n / T, n % T) starts at (n / T) * sb + (n % T) * st; its elements are sd apart.
struct RowLayout {
  int64_t T, sb, st, sd;
  int64_t offset(int64_t n) const { return (n / T) * sb + (n % T) * st; }
};

// The CPU search on such rows, read in place: indices (int64) and dist2 (dist_dtype), contiguous
// with B * T elements. x and codebook must have passed check_inputs' dtype/device/D checks.
void nearest_code_rows_cpu(const at::Tensor& x, const at::Tensor& codebook, at::Tensor& indices, at::Tensor& dist2);

}  // namespace vqaudio
