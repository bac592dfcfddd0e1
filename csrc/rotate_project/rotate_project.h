// fastlift_C::sample_rotations / rotate_project_forward / rotate_project_backward: declarations of
// the per-device implementations. The schemas are defined in rotate_project_cpu.cpp; the CUDA
// implementations are registered from rotate_project_cuda.cpp when built with CUDA.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

#include <tuple>

namespace fastlift {

// Returns float64 (R (n, 3, 3), params (n, 2) or (n, 4) with haar) on like's device.
std::tuple<at::Tensor, at::Tensor> sample_rotations_cpu(int64_t n, double az_lo, double az_width,
                                                        double el_lo, double el_width, int64_t seed,
                                                        int64_t offset, bool haar,
                                                        const at::Tensor& like);

// Y (N, J, 3), R (N, 3, 3) contiguous, same float dtype. Returns (x2d (N, J, 2), Y_rot (N, J, 3)).
std::tuple<at::Tensor, at::Tensor> rotate_project_forward_cpu(const at::Tensor& Y, const at::Tensor& R,
                                                              double c, int64_t root, bool transpose,
                                                              double min_depth, bool renormalize,
                                                              int64_t head, double eps);
// Returns (grad_Y (N, J, 3), grad_R (N, 3, 3)).
// grad_x2d / grad_yrot may be None (zero).
std::tuple<at::Tensor, at::Tensor> rotate_project_backward_cpu(
    const std::optional<at::Tensor>& grad_x2d, const std::optional<at::Tensor>& grad_yrot, const at::Tensor& Y, const at::Tensor& R,
    double c, int64_t root, bool transpose, double min_depth, bool renormalize, int64_t head, double eps);

}  // namespace fastlift
