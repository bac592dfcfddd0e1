// Tensor glue of the CUDA cycle-loss kernels (plain and fused reprojection); built only against a
// CUDA build of torch. Losses and their coefficients stay on the device (no host sync).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cycle_loss/cycle_loss_launch.h"
#include "cycle_loss/cycle_reproject.h"

namespace fastlift {

namespace {
constexpr const char* kOp = "fastlift cycle loss (cuda)";

void check_cuda(const at::Tensor& t, const char* name, int64_t N, int64_t d1, int64_t d2, at::ScalarType dt) {
  TORCH_CHECK(t.is_cuda(), kOp, ": ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.scalar_type() == dt, kOp, ": ", name, " must be ", dt, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), kOp, ": ", name, " must be contiguous");
  const bool ok = d2 > 0 ? (t.dim() == 3 && t.size(0) == N && t.size(1) == d1 && t.size(2) == d2)
                         : (t.dim() == 2 && t.size(0) == N && t.size(1) == d1);
  TORCH_CHECK(ok, kOp, ": ", name, " has the wrong shape ", t.sizes());
}

void check_scalar(const at::Tensor& t, const char* name, at::ScalarType dt) {
  TORCH_CHECK(t.is_cuda() && t.numel() == 1 && t.scalar_type() == dt, kOp, ": ", name, " must be a CUDA ", dt,
              " scalar");
}

template <typename T>
const T* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

ReprojectArgs reproject_args(const at::Tensor& x, const at::Tensor& yl, const at::Tensor& R, const at::Tensor& yr,
                             const std::optional<at::Tensor>& w, bool l1, double c, int64_t root, bool transpose,
                             double min_depth, bool renorm, int64_t head, double eps) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == 2, kOp, ": x must have shape (N, J, 2)");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, kOp, ": inputs must be float32/64");
  const int64_t N = x.size(0), J = x.size(1);
  check_cuda(x, "x", N, J, 2, x.scalar_type());
  check_cuda(yl, "Y_relift", N, J, 3, x.scalar_type());
  check_cuda(R, "R", N, 3, 3, x.scalar_type());
  check_cuda(yr, "Y_rot", N, J, 3, x.scalar_type());
  if (w.has_value()) check_cuda(*w, "weights", N, J, 0, x.scalar_type());
  TORCH_CHECK(root >= 0 && root < J, kOp, ": root must be a joint index in [0, ", J, ")");
  TORCH_CHECK(!renorm || (head >= 0 && head < J && head != root), kOp, ": bad head index");
  TORCH_CHECK(!renorm || J <= kCudaMaxJointsRenorm, kOp, ": renormalize=True supports at most ",
              kCudaMaxJointsRenorm, " joints on CUDA (use rotate_project + cycle_consistency_loss)");
  return ReprojectArgs{J, root, head, transpose, renorm, l1, c, min_depth, eps};
}
}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> cycle_loss_forward_cuda(const at::Tensor& x, const at::Tensor& x_back,
                                                                       const at::Tensor& y_rot,
                                                                       const at::Tensor& y_relift,
                                                                       const std::optional<at::Tensor>& weights,
                                                                       bool l1) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == 2, kOp, ": x must have shape (N, J, 2)");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, kOp, ": inputs must be float32/64");
  const int64_t N = x.size(0), J = x.size(1);
  check_cuda(x, "x", N, J, 2, x.scalar_type());
  check_cuda(x_back, "x_back", N, J, 2, x.scalar_type());
  check_cuda(y_rot, "y_rot", N, J, 3, x.scalar_type());
  check_cuda(y_relift, "y_relift", N, J, 3, x.scalar_type());
  if (weights.has_value()) check_cuda(*weights, "weights", N, J, 0, x.scalar_type());
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor partials = at::empty({cycle_loss_partials(N)}, x.options().dtype(at::kDouble));
  at::Tensor out = at::empty({3}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cycle_loss_forward_cuda", [&] {
    const cudaError_t err = cycle_loss_forward_launch<scalar_t>(
        x.data_ptr<scalar_t>(), x_back.data_ptr<scalar_t>(), y_rot.data_ptr<scalar_t>(), y_relift.data_ptr<scalar_t>(),
        ptr_or_null<scalar_t>(weights), N, J, l1, partials.data_ptr<double>(), out.data_ptr<scalar_t>(),
        c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "fastlift cycle_loss_forward_cuda: ", cudaGetErrorString(err));
  });
  return {out[0].clone(), out[1].clone(), out[2].clone()};
}

std::tuple<at::Tensor, at::Tensor> cycle_loss_backward_cuda(const at::Tensor& grad_2d, const at::Tensor& grad_3d,
                                                            const at::Tensor& x, const at::Tensor& x_back,
                                                            const at::Tensor& y_rot, const at::Tensor& y_relift,
                                                            const std::optional<at::Tensor>& weights,
                                                            const at::Tensor& wsum, bool l1) {
  const int64_t N = x.size(0), J = x.size(1);
  const auto dt = x.scalar_type();
  check_cuda(x, "x", N, J, 2, dt);
  check_cuda(x_back, "x_back", N, J, 2, dt);
  check_cuda(y_rot, "y_rot", N, J, 3, dt);
  check_cuda(y_relift, "y_relift", N, J, 3, dt);
  if (weights.has_value()) check_cuda(*weights, "weights", N, J, 0, dt);
  check_scalar(grad_2d, "grad_2d", dt);
  check_scalar(grad_3d, "grad_3d", dt);
  check_scalar(wsum, "wsum", dt);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor gxb = at::empty_like(x_back), gyl = at::empty_like(y_relift);
  AT_DISPATCH_FLOATING_TYPES(dt, "cycle_loss_backward_cuda", [&] {
    const cudaError_t err = cycle_loss_backward_launch<scalar_t>(
        grad_2d.data_ptr<scalar_t>(), grad_3d.data_ptr<scalar_t>(), wsum.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
        x_back.data_ptr<scalar_t>(), y_rot.data_ptr<scalar_t>(), y_relift.data_ptr<scalar_t>(),
        ptr_or_null<scalar_t>(weights), N, J, l1, gxb.data_ptr<scalar_t>(), gyl.data_ptr<scalar_t>(),
        c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "fastlift cycle_loss_backward_cuda: ", cudaGetErrorString(err));
  });
  return {gxb, gyl};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cycle_reproject_loss_forward_cuda(
    const at::Tensor& x, const at::Tensor& y_relift, const at::Tensor& R, const at::Tensor& y_rot,
    const std::optional<at::Tensor>& weights, bool l1, double c, int64_t root, bool transpose, double min_depth,
    bool renormalize, int64_t head, double eps) {
  const ReprojectArgs a =
      reproject_args(x, y_relift, R, y_rot, weights, l1, c, root, transpose, min_depth, renormalize, head, eps);
  const int64_t N = x.size(0);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor partials = at::empty({cycle_loss_partials(N)}, x.options().dtype(at::kDouble));
  at::Tensor out = at::empty({3}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cycle_reproject_loss_forward_cuda", [&] {
    const cudaError_t err = cycle_reproject_forward_launch<scalar_t>(
        x.data_ptr<scalar_t>(), y_relift.data_ptr<scalar_t>(), R.data_ptr<scalar_t>(), y_rot.data_ptr<scalar_t>(),
        ptr_or_null<scalar_t>(weights), N, a, partials.data_ptr<double>(), out.data_ptr<scalar_t>(),
        c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "fastlift cycle_reproject_loss_forward_cuda: ", cudaGetErrorString(err));
  });
  return {out[0].clone(), out[1].clone(), out[2].clone()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> cycle_reproject_loss_backward_cuda(
    const at::Tensor& grad_2d, const at::Tensor& grad_3d, const at::Tensor& x, const at::Tensor& y_relift,
    const at::Tensor& R, const at::Tensor& y_rot, const std::optional<at::Tensor>& weights, const at::Tensor& wsum,
    bool l1, double c, int64_t root, bool transpose, double min_depth, bool renormalize, int64_t head, double eps,
    bool need_x, bool need_y_rot) {
  const ReprojectArgs a =
      reproject_args(x, y_relift, R, y_rot, weights, l1, c, root, transpose, min_depth, renormalize, head, eps);
  const auto dt = x.scalar_type();
  check_scalar(grad_2d, "grad_2d", dt);
  check_scalar(grad_3d, "grad_3d", dt);
  check_scalar(wsum, "wsum", dt);
  const int64_t N = x.size(0);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor gx, gyl, gR, gyr;  // named (not a structured binding): the dispatch lambda captures them (C++17)
  std::tie(gx, gyl, gR, gyr) = reproject_gradient_buffers(x, y_relift, R, y_rot, need_x, need_y_rot);
  AT_DISPATCH_FLOATING_TYPES(dt, "cycle_reproject_loss_backward_cuda", [&] {
    const cudaError_t err = cycle_reproject_backward_launch<scalar_t>(
        grad_2d.data_ptr<scalar_t>(), grad_3d.data_ptr<scalar_t>(), wsum.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
        y_relift.data_ptr<scalar_t>(), R.data_ptr<scalar_t>(), y_rot.data_ptr<scalar_t>(),
        ptr_or_null<scalar_t>(weights), N, a, gyl.data_ptr<scalar_t>(), gR.data_ptr<scalar_t>(),
        need_y_rot ? gyr.data_ptr<scalar_t>() : nullptr, need_x ? gx.data_ptr<scalar_t>() : nullptr,
        c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "fastlift cycle_reproject_loss_backward_cuda: ", cudaGetErrorString(err));
  });
  return {gx, gyl, gR, gyr};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
cycle_reproject_loss_forward_grad_cuda(const at::Tensor& x, const at::Tensor& y_relift, const at::Tensor& R,
                                       const at::Tensor& y_rot, const std::optional<at::Tensor>& weights, bool l1,
                                       double c, int64_t root, bool transpose, double min_depth, bool renormalize,
                                       int64_t head, double eps, double w_2d, double w_3d, bool need_x,
                                       bool need_y_rot) {
  const ReprojectArgs a =
      reproject_args(x, y_relift, R, y_rot, weights, l1, c, root, transpose, min_depth, renormalize, head, eps);
  const int64_t N = x.size(0);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor partials = at::empty({cycle_loss_partials(N * a.J)}, x.options().dtype(at::kDouble));
  at::Tensor out = at::empty({6}, x.options());
  at::Tensor gx, gyl, gR, gyr;  // named (not a structured binding): the dispatch lambda captures them (C++17)
  std::tie(gx, gyl, gR, gyr) = reproject_gradient_buffers(x, y_relift, R, y_rot, need_x, need_y_rot);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cycle_reproject_loss_forward_grad_cuda", [&] {
    const cudaError_t err = cycle_reproject_forward_grad_launch<scalar_t>(
        x.data_ptr<scalar_t>(), y_relift.data_ptr<scalar_t>(), R.data_ptr<scalar_t>(), y_rot.data_ptr<scalar_t>(),
        ptr_or_null<scalar_t>(weights), N, a, w_2d, w_3d, partials.data_ptr<double>(), out.data_ptr<scalar_t>(),
        gyl.data_ptr<scalar_t>(), gR.data_ptr<scalar_t>(), need_y_rot ? gyr.data_ptr<scalar_t>() : nullptr,
        need_x ? gx.data_ptr<scalar_t>() : nullptr, c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "fastlift cycle_reproject_loss_forward_grad_cuda: ", cudaGetErrorString(err));
  });
  return {out[0].clone(), out[1].clone(), out[2].clone(), gx, gyl, gR, gyr};
}

}  // namespace fastlift

TORCH_LIBRARY_IMPL(fastlift_C, CUDA, m) {
  m.impl("cycle_loss_forward", &fastlift::cycle_loss_forward_cuda);
  m.impl("cycle_loss_backward", &fastlift::cycle_loss_backward_cuda);
  m.impl("cycle_reproject_loss_forward", &fastlift::cycle_reproject_loss_forward_cuda);
  m.impl("cycle_reproject_loss_backward", &fastlift::cycle_reproject_loss_backward_cuda);
  m.impl("cycle_reproject_loss_forward_grad", &fastlift::cycle_reproject_loss_forward_grad_cuda);
}
