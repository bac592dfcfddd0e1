// Tensor glue of the CUDA rotation-sampling and rotate-and-project kernels; built only against a
// CUDA build of torch.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>

#include "rotate_project/rotate_project_launch.h"

namespace fastlift {

namespace {
constexpr const char* kOp = "fastlift rotate_project (cuda)";

void check_cuda(const at::Tensor& t, const char* name, int64_t d1, int64_t d2, at::ScalarType dt) {
  TORCH_CHECK(t.is_cuda(), kOp, ": ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.dim() == 3 && (d1 < 0 || t.size(1) == d1) && t.size(2) == d2 && t.is_contiguous(), kOp, ": ", name,
              " must be a contiguous (N, ", d1, ", ", d2, ") tensor, got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dt, kOp, ": ", name, " must be ", dt, ", got ", t.scalar_type());
}

void check_args(const at::Tensor& Y, const at::Tensor& R, int64_t root, bool renorm, int64_t head) {
  TORCH_CHECK(Y.scalar_type() == at::kFloat || Y.scalar_type() == at::kDouble, kOp, ": Y must be float32/64");
  check_cuda(Y, "Y", -1, 3, Y.scalar_type());
  check_cuda(R, "R", 3, 3, Y.scalar_type());
  TORCH_CHECK(R.size(0) == Y.size(0) && R.device() == Y.device(), kOp, ": R must match Y (one matrix per pose)");
  const int64_t J = Y.size(1);
  TORCH_CHECK(root >= 0 && root < J, kOp, ": root must be a joint index in [0, ", J, ")");
  TORCH_CHECK(!renorm || (head >= 0 && head < J && head != root), kOp, ": bad head index");
}
}  // namespace

std::tuple<at::Tensor, at::Tensor> sample_rotations_cuda(int64_t n, double az_lo, double az_width, double el_lo,
                                                         double el_width, int64_t seed, int64_t offset, bool haar,
                                                         const at::Tensor& like) {
  TORCH_CHECK(n >= 0 && seed >= 0 && offset >= 0, "fastlift sample_rotations: n, seed and offset must be >= 0");
  const c10::cuda::CUDAGuard guard(like.device());
  const auto opts = like.options().dtype(at::kDouble);
  at::Tensor R = at::empty({n, 3, 3}, opts);
  at::Tensor params = at::empty({n, haar ? 4 : 2}, opts);
  const cudaError_t err = sample_rotations_launch(R.data_ptr<double>(), params.data_ptr<double>(), n, az_lo, az_width,
                                                  el_lo, el_width, static_cast<uint64_t>(seed),
                                                  static_cast<uint64_t>(offset), haar,
                                                  c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "fastlift sample_rotations_cuda: ", cudaGetErrorString(err));
  return {R, params};
}

std::tuple<at::Tensor, at::Tensor> rotate_project_forward_cuda(const at::Tensor& Y, const at::Tensor& R, double c,
                                                               int64_t root, bool transpose, double min_depth,
                                                               bool renormalize, int64_t head, double eps) {
  check_args(Y, R, root, renormalize, head);
  const int64_t N = Y.size(0), J = Y.size(1);
  const c10::cuda::CUDAGuard guard(Y.device());
  at::Tensor x2d = at::empty({N, J, 2}, Y.options());
  at::Tensor yrot = at::empty_like(Y);
  AT_DISPATCH_FLOATING_TYPES(Y.scalar_type(), "rotate_project_forward_cuda", [&] {
    const cudaError_t err = rotate_project_forward_launch<scalar_t>(
        Y.data_ptr<scalar_t>(), R.data_ptr<scalar_t>(), x2d.data_ptr<scalar_t>(), yrot.data_ptr<scalar_t>(), N, J,
        root, transpose, scalar_t(c), scalar_t(min_depth), renormalize, head, scalar_t(eps),
        c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "fastlift rotate_project_forward_cuda: ", cudaGetErrorString(err));
  });
  return {x2d, yrot};
}

std::tuple<at::Tensor, at::Tensor> rotate_project_backward_cuda(
    const std::optional<at::Tensor>& grad_x2d, const std::optional<at::Tensor>& grad_yrot, const at::Tensor& Y,
    const at::Tensor& R, double c, int64_t root, bool transpose, double min_depth, bool renormalize, int64_t head,
    double eps) {
  check_args(Y, R, root, renormalize, head);
  const int64_t N = Y.size(0), J = Y.size(1);
  const bool has2 = grad_x2d.has_value() && grad_x2d->defined();
  const bool has3 = grad_yrot.has_value() && grad_yrot->defined();
  if (has2) check_cuda(*grad_x2d, "grad_x2d", J, 2, Y.scalar_type());
  if (has3) check_cuda(*grad_yrot, "grad_yrot", J, 3, Y.scalar_type());
  const c10::cuda::CUDAGuard guard(Y.device());
  at::Tensor gY = at::empty_like(Y);
  at::Tensor gR = at::empty_like(R);
  AT_DISPATCH_FLOATING_TYPES(Y.scalar_type(), "rotate_project_backward_cuda", [&] {
    const cudaError_t err = rotate_project_backward_launch<scalar_t>(
        has2 ? grad_x2d->data_ptr<scalar_t>() : nullptr, has3 ? grad_yrot->data_ptr<scalar_t>() : nullptr,
        Y.data_ptr<scalar_t>(), R.data_ptr<scalar_t>(), gY.data_ptr<scalar_t>(), gR.data_ptr<scalar_t>(), N, J,
        root, transpose, scalar_t(c), scalar_t(min_depth), renormalize, head, scalar_t(eps),
        c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "fastlift rotate_project_backward_cuda: ", cudaGetErrorString(err));
  });
  return {gY, gR};
}

}  // namespace fastlift

TORCH_LIBRARY_IMPL(fastlift_C, CUDA, m) {
  m.impl("sample_rotations", &fastlift::sample_rotations_cuda);
  m.impl("rotate_project_forward", &fastlift::rotate_project_forward_cuda);
  m.impl("rotate_project_backward", &fastlift::rotate_project_backward_cuda);
}
