// fastlift_C::cycle_loss_forward / cycle_loss_backward: declarations of the per-device
// implementations. The schemas are defined in cycle_loss_cpu.cpp; the CUDA implementations are
// registered from cycle_loss_cuda.cpp when built with CUDA.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace fastlift {

// x, x_back (N, J, 2), y_rot, y_relift (N, J, 3), weights None or (N, J); contiguous, one dtype.
// Returns 0-dim (loss_2d, loss_3d, wsum): wsum = sum of the included weights (N J without weights).
std::tuple<at::Tensor, at::Tensor, at::Tensor> cycle_loss_forward_cpu(
    const at::Tensor& x, const at::Tensor& x_back, const at::Tensor& y_rot, const at::Tensor& y_relift,
    const std::optional<at::Tensor>& weights, bool l1);
// Returns (grad_x_back (N, J, 2), grad_y_relift (N, J, 3)); grad_2d, grad_3d, wsum are 0-dim.
std::tuple<at::Tensor, at::Tensor> cycle_loss_backward_cpu(
    const at::Tensor& grad_2d, const at::Tensor& grad_3d, const at::Tensor& x, const at::Tensor& x_back,
    const at::Tensor& y_rot, const at::Tensor& y_relift, const std::optional<at::Tensor>& weights,
    const at::Tensor& wsum, bool l1);

}  // namespace fastlift
