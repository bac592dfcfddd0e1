// fastlift_C::procrustes_align_forward / procrustes_align_backward: declarations of the per-device
// implementations. The schemas are defined in procrustes_cpu.cpp; the CUDA implementations are
// registered from procrustes_cuda.cpp when the extension is built with CUDA.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace fastlift {

// pred, target: (N, J, 3) contiguous float32/float64 of one dtype; weights: (N, J) or (J,) of that
// dtype, or none. Returns (aligned (N, J, 3), R (N, 3, 3), s (N,), t (N, 3), V (N, 3, 3), sig (N, 3));
// V and sig (the SVD's right rotation and signed singular values, for the backward) are (0, 3, 3)
// and (0, 3) when need_aux is false.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
procrustes_align_forward_cpu(const at::Tensor& pred, const at::Tensor& target,
                             const std::optional<at::Tensor>& weights, bool scale,
                             bool allow_reflection, bool need_aux);

// Gradients (grad_pred, grad_target) given those of aligned, R, s and t.
// Absent gradients (None) are zeros.
std::tuple<at::Tensor, at::Tensor> procrustes_align_backward_cpu(
    const std::optional<at::Tensor>& grad_aligned, const std::optional<at::Tensor>& grad_R,
    const std::optional<at::Tensor>& grad_s, const std::optional<at::Tensor>& grad_t,
    const at::Tensor& pred, const at::Tensor& target,
    const std::optional<at::Tensor>& weights, const at::Tensor& R, const at::Tensor& s,
    const at::Tensor& V, const at::Tensor& sig, bool scale);

}  // namespace fastlift
