// Tensor glue of the CUDA Procrustes kernels; built only against a CUDA build of torch.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "procrustes/procrustes_launch.h"

namespace fastlift {

namespace {
constexpr const char* kOp = "fastlift procrustes_align";

void check_cuda(const at::Tensor& t, const char* name, at::IntArrayRef shape, at::ScalarType dtype,
                const at::Device& device) {
  TORCH_CHECK(t.is_cuda() && t.device() == device, kOp, ": ", name, " must be a CUDA tensor on ",
              device, ", got ", t.device());
  TORCH_CHECK(t.sizes() == shape, kOp, ": ", name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, kOp, ": ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), kOp, ": ", name, " must be contiguous");
}

void check_poses(const at::Tensor& pred, const at::Tensor& target) {
  TORCH_CHECK(pred.is_cuda(), kOp, ": pred must be a CUDA tensor, got ", pred.device());
  TORCH_CHECK(pred.scalar_type() == at::kFloat || pred.scalar_type() == at::kDouble, kOp,
              ": pred must be float32 or float64, got ", pred.scalar_type());
  TORCH_CHECK(pred.dim() == 3 && pred.size(2) == 3, kOp, ": pred must have shape (N, J, 3), got ",
              pred.sizes());
  check_cuda(pred, "pred", pred.sizes(), pred.scalar_type(), pred.device());
  check_cuda(target, "target", pred.sizes(), pred.scalar_type(), pred.device());
}

bool present(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// Weights pointer and per-pose stride (0 for a shared (J,) vector); nullptr for uniform weights.
template <typename T>
const T* weights_ptr(const std::optional<at::Tensor>& weights, const at::Tensor& pred, int64_t* stride) {
  *stride = 0;
  if (!weights.has_value() || !weights->defined()) return nullptr;
  const at::Tensor& w = *weights;
  const int64_t N = pred.size(0), J = pred.size(1);
  if (w.dim() == 1) {
    check_cuda(w, "weights", {J}, pred.scalar_type(), pred.device());
  } else {
    check_cuda(w, "weights", {N, J}, pred.scalar_type(), pred.device());
    *stride = J;
  }
  return w.data_ptr<T>();
}
}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
procrustes_align_forward_cuda(const at::Tensor& pred, const at::Tensor& target,
                              const std::optional<at::Tensor>& weights, bool scale,
                              bool allow_reflection, bool need_aux) {
  check_poses(pred, target);
  const int64_t N = pred.size(0), J = pred.size(1);
  const c10::cuda::CUDAGuard guard(pred.device());
  at::Tensor aligned = at::empty_like(pred);
  at::Tensor R = at::empty({N, 3, 3}, pred.options());
  at::Tensor s = at::empty({N}, pred.options());
  at::Tensor t = at::empty({N, 3}, pred.options());
  at::Tensor V = at::empty({need_aux ? N : 0, 3, 3}, pred.options());
  at::Tensor sig = at::empty({need_aux ? N : 0, 3}, pred.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(pred.scalar_type(), "procrustes_align_forward_cuda", [&] {
    int64_t w_stride = 0;
    const scalar_t* w = weights_ptr<scalar_t>(weights, pred, &w_stride);
    const cudaError_t err = procrustes_forward_launch<scalar_t>(
        pred.data_ptr<scalar_t>(), target.data_ptr<scalar_t>(), w, w_stride,
        aligned.data_ptr<scalar_t>(), R.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
        t.data_ptr<scalar_t>(), need_aux ? V.data_ptr<scalar_t>() : nullptr,
        need_aux ? sig.data_ptr<scalar_t>() : nullptr, N, J, scale, allow_reflection, stream);
    TORCH_CHECK(err == cudaSuccess, "fastlift procrustes_align_forward_cuda: ", cudaGetErrorString(err));
  });
  return {aligned, R, s, t, V, sig};
}

std::tuple<at::Tensor, at::Tensor> procrustes_align_backward_cuda(
    const std::optional<at::Tensor>& grad_aligned, const std::optional<at::Tensor>& grad_R,
    const std::optional<at::Tensor>& grad_s, const std::optional<at::Tensor>& grad_t,
    const at::Tensor& pred, const at::Tensor& target,
    const std::optional<at::Tensor>& weights, const at::Tensor& R, const at::Tensor& s,
    const at::Tensor& V, const at::Tensor& sig, bool scale) {
  check_poses(pred, target);
  const int64_t N = pred.size(0), J = pred.size(1);
  const auto dt = pred.scalar_type();
  const auto dev = pred.device();
  const bool has_gy = present(grad_aligned), has_gR = present(grad_R), has_gs = present(grad_s),
             has_gt = present(grad_t);
  if (has_gy) check_cuda(*grad_aligned, "grad_aligned", pred.sizes(), dt, dev);
  if (has_gR) check_cuda(*grad_R, "grad_R", {N, 3, 3}, dt, dev);
  if (has_gs) check_cuda(*grad_s, "grad_s", {N}, dt, dev);
  if (has_gt) check_cuda(*grad_t, "grad_t", {N, 3}, dt, dev);
  check_cuda(R, "R", {N, 3, 3}, dt, dev);
  check_cuda(s, "s", {N}, dt, dev);
  TORCH_CHECK(V.size(0) == N, kOp,
              " backward: the forward was run with need_aux=False, so it saved no SVD factors");
  check_cuda(V, "V", {N, 3, 3}, dt, dev);
  check_cuda(sig, "sig", {N, 3}, dt, dev);
  const c10::cuda::CUDAGuard guard(dev);
  at::Tensor gp = at::empty_like(pred);
  at::Tensor gq = at::empty_like(target);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dt, "procrustes_align_backward_cuda", [&] {
    int64_t w_stride = 0;
    const scalar_t* w = weights_ptr<scalar_t>(weights, pred, &w_stride);
    const cudaError_t err = procrustes_backward_launch<scalar_t>(
        has_gy ? grad_aligned->data_ptr<scalar_t>() : nullptr,
        has_gR ? grad_R->data_ptr<scalar_t>() : nullptr, has_gs ? grad_s->data_ptr<scalar_t>() : nullptr,
        has_gt ? grad_t->data_ptr<scalar_t>() : nullptr, pred.data_ptr<scalar_t>(), target.data_ptr<scalar_t>(), w,
        w_stride, R.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), V.data_ptr<scalar_t>(),
        sig.data_ptr<scalar_t>(), gp.data_ptr<scalar_t>(), gq.data_ptr<scalar_t>(), N, J, scale,
        stream);
    TORCH_CHECK(err == cudaSuccess, "fastlift procrustes_align_backward_cuda: ", cudaGetErrorString(err));
  });
  return {gp, gq};
}

}  // namespace fastlift

TORCH_LIBRARY_IMPL(fastlift_C, CUDA, m) {
  m.impl("procrustes_align_forward", &fastlift::procrustes_align_forward_cuda);
  m.impl("procrustes_align_backward", &fastlift::procrustes_align_backward_cuda);
}
