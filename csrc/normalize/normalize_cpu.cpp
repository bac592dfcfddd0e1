// C++ CPU kernels of the fused 2D normalisation (root-centre, scale head-root to 1/c).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "normalize/normalize.h"
#include "normalize/normalize_math.h"

namespace fastlift {

namespace {
void check_pose_tensor(const at::Tensor& t, const char* name, int64_t last) {
  TORCH_CHECK(t.dim() == 3 && t.size(2) == last, "fastlift normalize_2d: ", name,
              " must have shape (N, J, ", last, "), got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), "fastlift normalize_2d: ", name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "fastlift normalize_2d: ", name, " must be float32 or float64, got ", t.scalar_type());
}

int64_t grain_for(int64_t J) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, J)); }
}  // namespace

std::tuple<at::Tensor, at::Tensor> normalize_2d_forward_cpu(const at::Tensor& x, int64_t root,
                                                            int64_t head, double c, double eps) {
  check_pose_tensor(x, "keypoints", 2);
  const int64_t N = x.size(0), J = x.size(1);
  TORCH_CHECK(root >= 0 && root < J && head >= 0 && head < J && root != head,
              "fastlift normalize_2d: root and head must be distinct joint indices in [0, ", J, ")");
  at::Tensor y = at::empty_like(x);
  at::Tensor scale = at::empty({N}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "normalize_2d_forward_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    scalar_t* sp = scale.data_ptr<scalar_t>();
    at::parallel_for(0, N, grain_for(J), [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        sp[n] = normalize_2d_pose_forward<scalar_t>(xp + n * J * 2, yp + n * J * 2, J, root, head,
                                                    scalar_t(c), scalar_t(eps));
      }
    });
  });
  return {y, scale};
}

at::Tensor normalize_2d_backward_cpu(const at::Tensor& grad_y, const at::Tensor& grad_scale,
                                     const at::Tensor& x, const at::Tensor& scale, int64_t root,
                                     int64_t head, double c, double eps) {
  check_pose_tensor(x, "keypoints", 2);
  check_pose_tensor(grad_y, "grad_y", 2);
  const int64_t N = x.size(0), J = x.size(1);
  TORCH_CHECK(grad_y.sizes() == x.sizes() && grad_scale.numel() == N && scale.numel() == N,
              "fastlift normalize_2d backward: shape mismatch");
  at::Tensor gx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "normalize_2d_backward_cpu", [&] {
    const scalar_t* gyp = grad_y.data_ptr<scalar_t>();
    const scalar_t* gsp = grad_scale.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* sp = scale.data_ptr<scalar_t>();
    scalar_t* gxp = gx.data_ptr<scalar_t>();
    at::parallel_for(0, N, grain_for(J), [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        normalize_2d_pose_backward<scalar_t>(gyp + n * J * 2, gsp[n], xp + n * J * 2, sp[n],
                                             gxp + n * J * 2, J, root, head, scalar_t(c),
                                             scalar_t(eps));
      }
    });
  });
  return gx;
}

}  // namespace fastlift

TORCH_LIBRARY_FRAGMENT(fastlift_C, m) {
  m.def("normalize_2d_forward(Tensor x, int root, int head, float c, float eps) -> (Tensor, Tensor)");
  m.def(
      "normalize_2d_backward(Tensor grad_y, Tensor grad_scale, Tensor x, Tensor scale, int root, "
      "int head, float c, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastlift_C, CPU, m) {
  m.impl("normalize_2d_forward", &fastlift::normalize_2d_forward_cpu);
  m.impl("normalize_2d_backward", &fastlift::normalize_2d_backward_cpu);
}
