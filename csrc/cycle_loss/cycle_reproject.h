// fastlift_C::cycle_reproject_loss_forward / _backward: declarations of the per-device
// implementations (schemas in cycle_reproject_cpu.cpp; CUDA ones registered from
// cycle_loss_cuda.cpp when built with CUDA).
#pragma once
#include <ATen/Functions.h>
#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace fastlift {

// (grad_x or empty, grad_y_relift, grad_R, grad_y_rot or empty), uninitialised, on the inputs'
// device: the gradient outputs of every backward and one-pass op, CPU and CUDA.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> reproject_gradient_buffers(
    const at::Tensor& x, const at::Tensor& yl, const at::Tensor& R, const at::Tensor& yr, bool need_x,
    bool need_y_rot) {
  return {need_x ? at::empty_like(x) : at::empty({0}, x.options()), at::empty_like(yl), at::empty_like(R),
          need_y_rot ? at::empty_like(yr) : at::empty({0}, yr.options())};
}

// x (N, J, 2), y_relift (N, J, 3), R (N, 3, 3), y_rot (N, J, 3), weights None or (N, J); contiguous,
// one dtype. Returns 0-dim (loss_2d, loss_3d, wsum).
std::tuple<at::Tensor, at::Tensor, at::Tensor> cycle_reproject_loss_forward_cpu(
    const at::Tensor& x, const at::Tensor& y_relift, const at::Tensor& R, const at::Tensor& y_rot,
    const std::optional<at::Tensor>& weights, bool l1, double c, int64_t root, bool transpose, double min_depth,
    bool renormalize, int64_t head, double eps);
// Returns (grad_x or empty, grad_y_relift, grad_R, grad_y_rot or empty).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> cycle_reproject_loss_backward_cpu(
    const at::Tensor& grad_2d, const at::Tensor& grad_3d, const at::Tensor& x, const at::Tensor& y_relift,
    const at::Tensor& R, const at::Tensor& y_rot, const std::optional<at::Tensor>& weights, const at::Tensor& wsum,
    bool l1, double c, int64_t root, bool transpose, double min_depth, bool renormalize, int64_t head, double eps,
    bool need_x, bool need_y_rot);
// The loss and its gradient in one pass: the gradients of w_2d loss_2d + w_3d loss_3d (scaled by the
// backward's incoming scalar later). Returns (loss_2d, loss_3d, wsum, grad_x or empty,
// grad_y_relift, grad_R, grad_y_rot or empty).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
cycle_reproject_loss_forward_grad_cpu(const at::Tensor& x, const at::Tensor& y_relift, const at::Tensor& R,
                                      const at::Tensor& y_rot, const std::optional<at::Tensor>& weights, bool l1,
                                      double c, int64_t root, bool transpose, double min_depth, bool renormalize,
                                      int64_t head, double eps, double w_2d, double w_3d, bool need_x,
                                      bool need_y_rot);

}  // namespace fastlift
