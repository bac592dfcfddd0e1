// fastlift_C::normalize_2d_forward / normalize_2d_backward: declarations of the per-device
// implementations. The schemas are defined in normalize_cpu.cpp; the CUDA implementations are
// registered from normalize_cuda.cpp when the extension is built with CUDA.
#pragma once
#include <ATen/core/Tensor.h>

#include <tuple>

namespace fastlift {

// x: (N, J, 2) contiguous float32/float64. Returns (y (N, J, 2), scale (N,)).
std::tuple<at::Tensor, at::Tensor> normalize_2d_forward_cpu(const at::Tensor& x, int64_t root,
                                                            int64_t head, double c, double eps);
at::Tensor normalize_2d_backward_cpu(const at::Tensor& grad_y, const at::Tensor& grad_scale,
                                     const at::Tensor& x, const at::Tensor& scale, int64_t root,
                                     int64_t head, double c, double eps);

}  // namespace fastlift
