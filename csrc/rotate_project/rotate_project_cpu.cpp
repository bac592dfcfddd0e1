// C++ CPU kernels of random rotation sampling and the fused rotate-and-project (forward and
// backward each one pass over the poses; the backward recomputes the rotation from the saved
// inputs Y and R in registers instead of reading saved intermediates).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "rotate_project/rotate_project.h"
#include "rotate_project/rotate_project_lanes.h"
#include "rotate_project/rotate_project_math.h"

namespace fastlift {

namespace {
constexpr const char* kOp = "fastlift rotate_project";

void check_tensor(const at::Tensor& t, const char* name, int64_t d1, int64_t d2, at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu(), kOp, ": ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.dim() == 3 && (d1 < 0 || t.size(1) == d1) && t.size(2) == d2, kOp, ": ", name,
              " must have shape (N, ", d1 < 0 ? std::string("J") : std::to_string(d1), ", ", d2,
              "), got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), kOp, ": ", name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == dtype, kOp, ": ", name, " must be ", dtype, ", got ", t.scalar_type());
}

void check_args(const at::Tensor& Y, const at::Tensor& R, int64_t root, bool renorm, int64_t head,
                double c, double min_depth, double eps) {
  TORCH_CHECK(Y.scalar_type() == at::kFloat || Y.scalar_type() == at::kDouble, kOp,
              ": Y must be float32 or float64, got ", Y.scalar_type());
  check_tensor(Y, "Y", -1, 3, Y.scalar_type());
  check_tensor(R, "R", 3, 3, Y.scalar_type());
  TORCH_CHECK(R.size(0) == Y.size(0), kOp, ": R must have one matrix per pose");
  const int64_t J = Y.size(1);
  TORCH_CHECK(root >= 0 && root < J, kOp, ": root must be a joint index in [0, ", J, ")");
  TORCH_CHECK(!renorm || (head >= 0 && head < J && head != root), kOp,
              ": head must be a joint index in [0, ", J, ") other than root");
  TORCH_CHECK(c > 0 && min_depth > 0 && eps > 0, kOp, ": c, min_depth and eps must be positive");
}

// Poses per task: enough work to amortise the scheduling, small enough to balance the threads.
int64_t grain_for(int64_t J) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, J)); }

}  // namespace

std::tuple<at::Tensor, at::Tensor> sample_rotations_cpu(int64_t n, double az_lo, double az_width,
                                                        double el_lo, double el_width, int64_t seed,
                                                        int64_t offset, bool haar,
                                                        const at::Tensor& like) {
  TORCH_CHECK(n >= 0 && seed >= 0 && offset >= 0, "fastlift sample_rotations: n, seed and offset must be >= 0");
  const auto opts = like.options().dtype(at::kDouble);
  at::Tensor R = at::empty({n, 3, 3}, opts);
  const int64_t np = haar ? 4 : 2;
  at::Tensor params = at::empty({n, np}, opts);
  double* Rp = R.data_ptr<double>();
  double* pp = params.data_ptr<double>();
  at::parallel_for(0, n, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      double P[4];
      sample_rotation(static_cast<uint64_t>(seed), static_cast<uint64_t>(offset) + static_cast<uint64_t>(i),
                      az_lo, az_width, el_lo, el_width, haar, Rp + 9 * i, P);
      for (int64_t k = 0; k < np; ++k) pp[np * i + k] = P[k];
    }
  });
  return {R, params};
}

std::tuple<at::Tensor, at::Tensor> rotate_project_forward_cpu(const at::Tensor& Y, const at::Tensor& R,
                                                              double c, int64_t root, bool transpose,
                                                              double min_depth, bool renormalize,
                                                              int64_t head, double eps) {
  check_args(Y, R, root, renormalize, head, c, min_depth, eps);
  const int64_t N = Y.size(0), J = Y.size(1);
  at::Tensor x2d = at::empty({N, J, 2}, Y.options());
  at::Tensor yrot = at::empty_like(Y);
  if (Y.scalar_type() == at::kFloat) {
    const lanes::RPArgs a{J, root, head, transpose, renormalize, float(c), float(min_depth), float(eps)};
    const float* Yp = Y.data_ptr<float>();
    const float* Rp = R.data_ptr<float>();
    float* xp = x2d.data_ptr<float>();
    float* yp = yrot.data_ptr<float>();
    const bool stream = lanes::use_streaming_stores(int64_t(sizeof(float)) * N * J * 5, {xp, yp});
    at::parallel_for(0, (N + kLanes - 1) / kLanes, grain_for(J) / kLanes + 1, [&](int64_t b0, int64_t b1) {
      lanes::forward_lanes(Yp, Rp, xp, yp, b0 * kLanes, std::min(N, b1 * kLanes), a, stream);
    });
    return {x2d, yrot};
  }
  const double* Yp = Y.data_ptr<double>();
  const double* Rp = R.data_ptr<double>();
  double* xp = x2d.data_ptr<double>();
  double* yp = yrot.data_ptr<double>();
  at::parallel_for(0, N, grain_for(J), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      rotate_project_pose_forward<double, double>(Yp + n * J * 3, Rp + n * 9, xp + n * J * 2, yp + n * J * 3, J,
                                                  root, transpose, c, min_depth, renormalize, head, eps);
  });
  return {x2d, yrot};
}

std::tuple<at::Tensor, at::Tensor> rotate_project_backward_cpu(
    const std::optional<at::Tensor>& grad_x2d, const std::optional<at::Tensor>& grad_yrot, const at::Tensor& Y,
    const at::Tensor& R, double c, int64_t root, bool transpose, double min_depth, bool renormalize,
    int64_t head, double eps) {
  check_args(Y, R, root, renormalize, head, c, min_depth, eps);
  const int64_t N = Y.size(0), J = Y.size(1);
  const bool has2 = grad_x2d.has_value() && grad_x2d->defined();
  const bool has3 = grad_yrot.has_value() && grad_yrot->defined();
  if (has2) check_tensor(*grad_x2d, "grad_x2d", J, 2, Y.scalar_type());
  if (has3) check_tensor(*grad_yrot, "grad_yrot", J, 3, Y.scalar_type());
  TORCH_CHECK((!has2 || grad_x2d->size(0) == N) && (!has3 || grad_yrot->size(0) == N), kOp,
              " backward: batch size mismatch");
  at::Tensor gY = at::empty_like(Y);
  at::Tensor gR = at::empty_like(R);
  if (Y.scalar_type() == at::kFloat) {
    const float* g2 = has2 ? grad_x2d->data_ptr<float>() : nullptr;
    const float* g3 = has3 ? grad_yrot->data_ptr<float>() : nullptr;
    const float* Yp = Y.data_ptr<float>();
    const float* Rp = R.data_ptr<float>();
    float* gYp = gY.data_ptr<float>();
    float* gRp = gR.data_ptr<float>();
    const lanes::RPArgs a{J, root, head, transpose, renormalize, float(c), float(min_depth), float(eps)};
    const bool stream = lanes::use_streaming_stores(int64_t(sizeof(float)) * N * (3 * J + 9), {gYp, gRp});
    at::parallel_for(0, (N + kLanes - 1) / kLanes, grain_for(J) / kLanes + 1, [&](int64_t b0, int64_t b1) {
      lanes::backward_lanes(g2, g3, Yp, Rp, gYp, gRp, b0 * kLanes, std::min(N, b1 * kLanes), a, stream);
    });
    return {gY, gR};
  }
  const double* g2 = has2 ? grad_x2d->data_ptr<double>() : nullptr;
  const double* g3 = has3 ? grad_yrot->data_ptr<double>() : nullptr;
  const double* Yp = Y.data_ptr<double>();
  const double* Rp = R.data_ptr<double>();
  double* gYp = gY.data_ptr<double>();
  double* gRp = gR.data_ptr<double>();
  at::parallel_for(0, N, grain_for(J), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      rotate_project_pose_backward<double, double>(g2 ? g2 + n * J * 2 : nullptr, g3 ? g3 + n * J * 3 : nullptr,
                                                   Yp + n * J * 3, Rp + n * 9, gYp + n * J * 3, gRp + n * 9, J,
                                                   root, transpose, c, min_depth, renormalize, head, eps);
  });
  return {gY, gR};
}

}  // namespace fastlift

TORCH_LIBRARY_FRAGMENT(fastlift_C, m) {
  m.def(
      "sample_rotations(int n, float az_lo, float az_width, float el_lo, float el_width, int seed, "
      "int offset, bool haar, Tensor like) -> (Tensor, Tensor)");
  m.def(
      "rotate_project_forward(Tensor Y, Tensor R, float c, int root, bool transpose, float min_depth, "
      "bool renormalize, int head, float eps) -> (Tensor, Tensor)");
  m.def(
      "rotate_project_backward(Tensor? grad_x2d, Tensor? grad_yrot, Tensor Y, Tensor R, float c, int root, "
      "bool transpose, float min_depth, bool renormalize, int head, float eps) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastlift_C, CPU, m) {
  m.impl("sample_rotations", &fastlift::sample_rotations_cpu);
  m.impl("rotate_project_forward", &fastlift::rotate_project_forward_cpu);
  m.impl("rotate_project_backward", &fastlift::rotate_project_backward_cpu);
}
