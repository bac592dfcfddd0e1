// Tensor glue of the CUDA normalisation kernels; built only against a CUDA build of torch.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "normalize/normalize_launch.h"

namespace fastlift {

namespace {
void check_cuda_pose(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "fastlift normalize_2d: ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.dim() == 3 && t.size(2) == 2 && t.is_contiguous(), "fastlift normalize_2d: ", name,
              " must be a contiguous (N, J, 2) tensor, got ", t.sizes());
}
}  // namespace

std::tuple<at::Tensor, at::Tensor> normalize_2d_forward_cuda(const at::Tensor& x, int64_t root,
                                                             int64_t head, double c, double eps) {
  check_cuda_pose(x, "keypoints");
  const int64_t N = x.size(0), J = x.size(1);
  TORCH_CHECK(root >= 0 && root < J && head >= 0 && head < J && root != head,
              "fastlift normalize_2d: root and head must be distinct joint indices in [0, ", J, ")");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  at::Tensor scale = at::empty({N}, x.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "normalize_2d_forward_cuda", [&] {
    const cudaError_t err = normalize_2d_forward_launch<scalar_t>(
        x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(), N, J, root,
        head, scalar_t(c), scalar_t(eps), stream);
    TORCH_CHECK(err == cudaSuccess, "fastlift normalize_2d_forward_cuda: ", cudaGetErrorString(err));
  });
  return {y, scale};
}

at::Tensor normalize_2d_backward_cuda(const at::Tensor& grad_y, const at::Tensor& grad_scale,
                                      const at::Tensor& x, const at::Tensor& scale, int64_t root,
                                      int64_t head, double c, double eps) {
  check_cuda_pose(x, "keypoints");
  check_cuda_pose(grad_y, "grad_y");
  const int64_t N = x.size(0), J = x.size(1);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor gx = at::empty_like(x);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "normalize_2d_backward_cuda", [&] {
    const cudaError_t err = normalize_2d_backward_launch<scalar_t>(
        grad_y.data_ptr<scalar_t>(), grad_scale.contiguous().data_ptr<scalar_t>(),
        x.data_ptr<scalar_t>(), scale.contiguous().data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(),
        N, J, root, head, scalar_t(c), scalar_t(eps), stream);
    TORCH_CHECK(err == cudaSuccess, "fastlift normalize_2d_backward_cuda: ", cudaGetErrorString(err));
  });
  return gx;
}

}  // namespace fastlift

TORCH_LIBRARY_IMPL(fastlift_C, CUDA, m) {
  m.impl("normalize_2d_forward", &fastlift::normalize_2d_forward_cuda);
  m.impl("normalize_2d_backward", &fastlift::normalize_2d_backward_cuda);
}
