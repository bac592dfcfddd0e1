// C++ CPU kernels of the fused reprojection cycle loss (steps 5 and 6 of the cycle in one op):
// forward one pass over (x, Y_relift, R, Y_rot, weights) to the two losses, x_back never stored;
// backward one pass to the gradients. float runs kLanes poses per step, one per SIMD lane
// (rotate_project_lanes.h); float64 runs the same per-pose math on scalars.
//
// The reduction is deterministic whatever the thread count: fixed blocks of kBlockPoses poses,
// each summed in float lanes and rounded to double, block sums added in order in double.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "cycle_loss/cycle_reproject.h"
#include "cycle_loss/cycle_reproject_math.h"
#include "rotate_project/rotate_project_lanes.h"

namespace fastlift {

namespace {
constexpr const char* kOp = "fastlift cycle_reprojection_loss";
constexpr int64_t kBlockPoses = 64;  // a multiple of kLanes

void check(const at::Tensor& t, const char* name, int64_t N, int64_t d1, int64_t d2, at::ScalarType dt) {
  TORCH_CHECK(t.device().is_cpu(), kOp, ": ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == dt, kOp, ": ", name, " must be ", dt, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), kOp, ": ", name, " must be contiguous");
  const bool ok = d2 > 0 ? (t.dim() == 3 && t.size(0) == N && t.size(1) == d1 && t.size(2) == d2)
                         : (t.dim() == 2 && t.size(0) == N && t.size(1) == d1);
  TORCH_CHECK(ok, kOp, ": ", name, " has the wrong shape ", t.sizes());
}

ReprojectArgs check_inputs(const at::Tensor& x, const at::Tensor& yl, const at::Tensor& R, const at::Tensor& yr,
                           const std::optional<at::Tensor>& w, bool l1, double c, int64_t root, bool transpose,
                           double min_depth, bool renorm, int64_t head, double eps) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == 2, kOp, ": x must have shape (N, J, 2), got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, kOp,
              ": inputs must be float32 or float64, got ", x.scalar_type());
  const int64_t N = x.size(0), J = x.size(1);
  const auto dt = x.scalar_type();
  check(x, "x", N, J, 2, dt);
  check(yl, "Y_relift", N, J, 3, dt);
  check(R, "R", N, 3, 3, dt);
  check(yr, "Y_rot", N, J, 3, dt);
  if (w.has_value()) check(*w, "weights", N, J, 0, dt);
  TORCH_CHECK(root >= 0 && root < J, kOp, ": root must be a joint index in [0, ", J, ")");
  TORCH_CHECK(!renorm || (head >= 0 && head < J && head != root), kOp, ": bad head index");
  TORCH_CHECK(c > 0 && min_depth > 0 && eps > 0, kOp, ": c, min_depth and eps must be positive");
  return ReprojectArgs{J, root, head, transpose, renorm, l1, c, min_depth, eps};
}

// Poses [n, n + kLanes) of every input into lane-major scratch (W only with weights).
template <typename JT>
FASTLIFT_SIMD void load_lanes(const float* x, const float* yl, const float* R, const float* yr, const float* w,
                              JT J, int64_t n, vf* X, vf* YL, vf* RS, vf* YR, vf* W) {
  lanes::to_lanes(x + n * 2 * J, 2 * J, 2 * J, X);
  lanes::to_lanes(yl + n * 3 * J, 3 * J, 3 * J, YL);
  lanes::to_lanes(yr + n * 3 * J, 3 * J, 3 * J, YR);
  lanes::to_lanes(R + n * 9, 9, 9, RS);
  if (w) lanes::to_lanes(w + n * J, J, J, W);
}

// Sums of poses [n0, n1) in kLanes lanes (full steps) plus scalar tail poses; out[3] in double.
template <typename JT>
FASTLIFT_SIMD void forward_block_impl(const float* x, const float* yl, const float* R, const float* yr,
                                      const float* w, const ReprojectArgs& a, JT J, int64_t n0, int64_t n1,
                                      double* out) {
  lanes::LaneBuffer buf(12 * J + 9);
  vf *X = buf.data(), *YL = X + 2 * J, *YR = YL + 3 * J, *W = YR + 3 * J, *XB = W + J, *RS = XB + 2 * J;
  vf acc[3] = {vf{}, vf{}, vf{}};
  int64_t n = n0;
  for (; n + kLanes <= n1; n += kLanes) {
    load_lanes(x, yl, R, yr, w, J, n, X, YL, RS, YR, W);
    cycle_reproject_pose_forward<vf, float>(X, YL, RS, YR, w ? W : nullptr, a, J, XB, acc);
  }
  double o[3] = {0, 0, 0};
  for (int i = 0; i < 3; ++i)
    for (int l = 0; l < kLanes; ++l) o[i] += double(acc[i][l]);
  float* xb = reinterpret_cast<float*>(XB);
  for (; n < n1; ++n) {
    float s[3] = {0, 0, 0};
    cycle_reproject_pose_forward<float, float>(x + n * 2 * J, yl + n * 3 * J, R + n * 9, yr + n * 3 * J,
                                               w ? w + n * J : nullptr, a, J, xb, s);
    for (int i = 0; i < 3; ++i) o[i] += double(s[i]);
  }
  for (int i = 0; i < 3; ++i) out[i] = o[i];
}

template <typename JT>
FASTLIFT_SIMD void backward_range_impl(const float* x, const float* yl, const float* R, const float* yr,
                                       const float* w, const ReprojectArgs& a, JT J, float k2, float k3,
                                       float* gyl, float* gR, float* gyr, float* gx, int64_t n0, int64_t n1,
                                       bool stream) {
  lanes::LaneBuffer buf(24 * J + 18);
  vf *X = buf.data(), *YL = X + 2 * J, *YR = YL + 3 * J, *W = YR + 3 * J, *XB = W + J, *G2 = XB + 2 * J;
  vf *GYL = G2 + 2 * J, *GYR = GYL + 3 * J, *GX = GYR + 3 * J, *RS = GX + 2 * J, *GR = RS + 9;
  int64_t n = n0;
  for (; n + kLanes <= n1; n += kLanes) {
    load_lanes(x, yl, R, yr, w, J, n, X, YL, RS, YR, W);
    cycle_reproject_pose_backward<vf, float>(X, YL, RS, YR, w ? W : nullptr, a, J, k2, k3, GYL, GR,
                                             gyr ? GYR : nullptr, gx ? GX : nullptr, XB, G2);
    lanes::store_rows(GYL, 3 * J, gyl + n * 3 * J, stream);
    lanes::store_rows(GR, 9, gR + n * 9, stream);
    if (gyr) lanes::store_rows(GYR, 3 * J, gyr + n * 3 * J, stream);
    if (gx) lanes::store_rows(GX, 2 * J, gx + n * 2 * J, stream);
  }
  if (stream) lanes::stream_fence();
  float* xb = reinterpret_cast<float*>(XB);
  float* g2 = reinterpret_cast<float*>(G2);
  for (; n < n1; ++n)
    cycle_reproject_pose_backward<float, float>(x + n * 2 * J, yl + n * 3 * J, R + n * 9, yr + n * 3 * J,
                                                w ? w + n * J : nullptr, a, J, k2, k3, gyl + n * 3 * J, gR + n * 9,
                                                gyr ? gyr + n * 3 * J : nullptr, gx ? gx + n * 2 * J : nullptr,
                                                xb, g2);
}

// One instantiation per ISA clone; J = 17 (h36m17) is a compile-time constant.
FASTLIFT_CLONES void forward_block_float(const float* x, const float* yl, const float* R, const float* yr,
                                         const float* w, const ReprojectArgs& a, int64_t n0, int64_t n1,
                                         double* out) {
  if (a.J == 17)
    forward_block_impl(x, yl, R, yr, w, a, std::integral_constant<int64_t, 17>(), n0, n1, out);
  else
    forward_block_impl(x, yl, R, yr, w, a, a.J, n0, n1, out);
}
FASTLIFT_CLONES void backward_range_float(const float* x, const float* yl, const float* R, const float* yr,
                                          const float* w, const ReprojectArgs& a, float k2, float k3, float* gyl,
                                          float* gR, float* gyr, float* gx, int64_t n0, int64_t n1, bool stream) {
  if (a.J == 17)
    backward_range_impl(x, yl, R, yr, w, a, std::integral_constant<int64_t, 17>(), k2, k3, gyl, gR, gyr, gx, n0, n1,
                        stream);
  else
    backward_range_impl(x, yl, R, yr, w, a, a.J, k2, k3, gyl, gR, gyr, gx, n0, n1, stream);
}

// The raw pointers of one call: inputs, and the gradients (gyr / gx nullptr where not wanted).
template <typename T>
struct ReprojectData {
  const T *x, *yl, *R, *yr, *w;
  T *gyl, *gR, *gyr, *gx;
  int64_t J;
  ReprojectData(const at::Tensor& x_, const at::Tensor& yl_, const at::Tensor& R_, const at::Tensor& yr_,
                const std::optional<at::Tensor>& w_, at::Tensor& gyl_, at::Tensor& gR_, at::Tensor& gyr_,
                at::Tensor& gx_, bool need_x, bool need_y_rot)
      : x(x_.data_ptr<T>()), yl(yl_.data_ptr<T>()), R(R_.data_ptr<T>()), yr(yr_.data_ptr<T>()),
        w(w_.has_value() ? w_->data_ptr<T>() : nullptr), gyl(gyl_.data_ptr<T>()), gR(gR_.data_ptr<T>()),
        gyr(need_y_rot ? gyr_.data_ptr<T>() : nullptr), gx(need_x ? gx_.data_ptr<T>() : nullptr), J(x_.size(1)) {}
  int64_t out_bytes(int64_t N) const {
    return int64_t(sizeof(T)) * N * (3 * J + 9 + (gyr ? 3 * J : 0) + (gx ? 2 * J : 0));
  }
  // Pose n on scalars: its gradients, and its loss sums added to acc when acc is not nullptr.
  // scratch: 4 J elements.
  void backward_pose(int64_t n, const ReprojectArgs& a, T k2, T k3, T* scratch, T* acc = nullptr) const {
    cycle_reproject_pose_backward<T, T>(x + n * 2 * J, yl + n * 3 * J, R + n * 9, yr + n * 3 * J,
                                        w ? w + n * J : nullptr, a, J, k2, k3, gyl + n * 3 * J, gR + n * 9,
                                        gyr ? gyr + n * 3 * J : nullptr, gx ? gx + n * 2 * J : nullptr, scratch,
                                        scratch + 2 * J, acc);
  }
};

// Loss and gradient in one pass (the loss is a graph's end, so its gradient is known in the forward,
// up to the scalar the backward brings): poses [n0, n1) of one reduction block, loaded into lanes
// once; the backward math writes the gradients of k2 * sum_2d + k3 * sum_3d and adds the loss sums
// (out[0..1]) from the residuals it computes anyway.
template <typename JT>
FASTLIFT_SIMD void forward_grad_block_impl(const float* x, const float* yl, const float* R, const float* yr,
                                           const float* w, const ReprojectArgs& a, JT J, float k2, float k3,
                                           float* gyl, float* gR, float* gyr, float* gx, int64_t n0, int64_t n1,
                                           bool stream, vf* buf, double* out) {
  vf *X = buf, *YL = X + 2 * J, *YR = YL + 3 * J, *W = YR + 3 * J, *XB = W + J, *G2 = XB + 2 * J;
  vf *GYL = G2 + 2 * J, *GYR = GYL + 3 * J, *GX = GYR + 3 * J, *RS = GX + 2 * J, *GR = RS + 9;
  vf acc[3] = {vf{}, vf{}, vf{}};
  int64_t n = n0;
  for (; n + kLanes <= n1; n += kLanes) {
    load_lanes(x, yl, R, yr, w, J, n, X, YL, RS, YR, W);
    cycle_reproject_pose_backward<vf, float>(X, YL, RS, YR, w ? W : nullptr, a, J, k2, k3, GYL, GR,
                                             gyr ? GYR : nullptr, gx ? GX : nullptr, XB, G2, acc);
    lanes::store_rows(GYL, 3 * J, gyl + n * 3 * J, stream);
    lanes::store_rows(GR, 9, gR + n * 9, stream);
    if (gyr) lanes::store_rows(GYR, 3 * J, gyr + n * 3 * J, stream);
    if (gx) lanes::store_rows(GX, 2 * J, gx + n * 2 * J, stream);
  }
  double o[2] = {0, 0};
  for (int i = 0; i < 2; ++i)
    for (int l = 0; l < kLanes; ++l) o[i] += double(acc[i][l]);
  float* xb = reinterpret_cast<float*>(XB);
  float* g2 = reinterpret_cast<float*>(G2);
  for (; n < n1; ++n) {
    float s[3] = {0, 0, 0};
    cycle_reproject_pose_backward<float, float>(x + n * 2 * J, yl + n * 3 * J, R + n * 9, yr + n * 3 * J,
                                                w ? w + n * J : nullptr, a, J, k2, k3, gyl + n * 3 * J, gR + n * 9,
                                                gyr ? gyr + n * 3 * J : nullptr, gx ? gx + n * 2 * J : nullptr,
                                                xb, g2, s);
    for (int i = 0; i < 2; ++i) o[i] += double(s[i]);
  }
  out[0] = o[0];
  out[1] = o[1];
}
FASTLIFT_CLONES void forward_grad_range_float(const float* x, const float* yl, const float* R, const float* yr,
                                              const float* w, const ReprojectArgs& a, float k2, float k3,
                                              float* gyl, float* gR, float* gyr, float* gx, int64_t N, int64_t b0,
                                              int64_t b1, bool stream, double* part) {
  lanes::LaneBuffer buf(24 * a.J + 18);
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t n0 = b * kBlockPoses, n1 = std::min(N, n0 + kBlockPoses);
    if (a.J == 17)
      forward_grad_block_impl(x, yl, R, yr, w, a, std::integral_constant<int64_t, 17>(), k2, k3, gyl, gR, gyr, gx,
                              n0, n1, stream, buf.data(), part + 2 * b);
    else
      forward_grad_block_impl(x, yl, R, yr, w, a, a.J, k2, k3, gyl, gR, gyr, gx, n0, n1, stream, buf.data(),
                              part + 2 * b);
  }
  if (stream) lanes::stream_fence();
}

// Sum of the kept weights (w > 0; NaN and negative weights count as 0, as in the losses), in
// double over fixed blocks: the same for any thread count.
template <typename T>
double kept_weight_sum(const T* w, int64_t count) {
  constexpr int64_t kBlock = 4096;
  const int64_t nb = (count + kBlock - 1) / kBlock;
  std::vector<double> part(static_cast<size_t>(nb));
  at::parallel_for(0, nb, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double s = 0;
      for (int64_t i = b * kBlock; i < std::min(count, (b + 1) * kBlock); ++i) s += w[i] > T(0) ? double(w[i]) : 0.0;
      part[b] = s;
    }
  });
  double tot = 0;
  for (double s : part) tot += s;
  return tot;
}
}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> cycle_reproject_loss_forward_cpu(
    const at::Tensor& x, const at::Tensor& y_relift, const at::Tensor& R, const at::Tensor& y_rot,
    const std::optional<at::Tensor>& weights, bool l1, double c, int64_t root, bool transpose, double min_depth,
    bool renormalize, int64_t head, double eps) {
  const ReprojectArgs a =
      check_inputs(x, y_relift, R, y_rot, weights, l1, c, root, transpose, min_depth, renormalize, head, eps);
  const int64_t N = x.size(0), J = a.J;
  const int64_t nblocks = (N + kBlockPoses - 1) / kBlockPoses;
  std::vector<double> part(static_cast<size_t>(3 * nblocks));
  const int64_t grain = std::max<int64_t>(1, 256 / std::max<int64_t>(J, 1));
  if (x.scalar_type() == at::kFloat) {
    const float* w = weights.has_value() ? weights->data_ptr<float>() : nullptr;
    const float *xp = x.data_ptr<float>(), *ylp = y_relift.data_ptr<float>(), *Rp = R.data_ptr<float>(),
                *yrp = y_rot.data_ptr<float>();
    at::parallel_for(0, nblocks, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        forward_block_float(xp, ylp, Rp, yrp, w, a, b * kBlockPoses, std::min(N, (b + 1) * kBlockPoses),
                            part.data() + 3 * b);
    });
  } else {
    const double* w = weights.has_value() ? weights->data_ptr<double>() : nullptr;
    const double *xp = x.data_ptr<double>(), *ylp = y_relift.data_ptr<double>(), *Rp = R.data_ptr<double>(),
                 *yrp = y_rot.data_ptr<double>();
    at::parallel_for(0, nblocks, grain, [&](int64_t b0, int64_t b1) {
      std::vector<double> xb(static_cast<size_t>(2 * J));
      for (int64_t b = b0; b < b1; ++b) {
        double s[3] = {0, 0, 0};
        for (int64_t n = b * kBlockPoses; n < std::min(N, (b + 1) * kBlockPoses); ++n)
          cycle_reproject_pose_forward<double, double>(xp + n * 2 * J, ylp + n * 3 * J, Rp + n * 9, yrp + n * 3 * J,
                                                       w ? w + n * J : nullptr, a, J, xb.data(), s);
        for (int i = 0; i < 3; ++i) part[3 * b + i] = s[i];
      }
    });
  }
  double tot[3] = {0, 0, 0};
  for (int64_t b = 0; b < nblocks; ++b)
    for (int i = 0; i < 3; ++i) tot[i] += part[3 * b + i];
  if (weights.has_value() == false) tot[2] = double(N) * double(J);  // exact count
  const double den = std::max(tot[2], double(std::numeric_limits<float>::min()));
  const auto opts = x.options();
  return {at::full({}, tot[0] / (2 * den), opts), at::full({}, tot[1] / (3 * den), opts), at::full({}, tot[2], opts)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> cycle_reproject_loss_backward_cpu(
    const at::Tensor& grad_2d, const at::Tensor& grad_3d, const at::Tensor& x, const at::Tensor& y_relift,
    const at::Tensor& R, const at::Tensor& y_rot, const std::optional<at::Tensor>& weights, const at::Tensor& wsum,
    bool l1, double c, int64_t root, bool transpose, double min_depth, bool renormalize, int64_t head, double eps,
    bool need_x, bool need_y_rot) {
  const ReprojectArgs a =
      check_inputs(x, y_relift, R, y_rot, weights, l1, c, root, transpose, min_depth, renormalize, head, eps);
  TORCH_CHECK(grad_2d.numel() == 1 && grad_3d.numel() == 1 && wsum.numel() == 1, kOp,
              " backward: grad_2d, grad_3d and wsum must be scalars");
  const int64_t N = x.size(0), J = a.J;
  auto [gx, gyl, gR, gyr] = reproject_gradient_buffers(x, y_relift, R, y_rot, need_x, need_y_rot);
  const double den = std::max(wsum.item<double>(), double(std::numeric_limits<float>::min()));
  const double k2 = grad_2d.item<double>() / (2 * den), k3 = grad_3d.item<double>() / (3 * den);
  if (x.scalar_type() == at::kFloat) {
    const ReprojectData<float> d(x, y_relift, R, y_rot, weights, gyl, gR, gyr, gx, need_x, need_y_rot);
    const int64_t steps = (N + kLanes - 1) / kLanes;
    const bool stream = lanes::use_streaming_stores(d.out_bytes(N), {d.gyl, d.gR, d.gyr, d.gx});
    at::parallel_for(0, steps, std::max<int64_t>(1, 1024 / std::max<int64_t>(J, 1)), [&](int64_t s0, int64_t s1) {
      backward_range_float(d.x, d.yl, d.R, d.yr, d.w, a, float(k2), float(k3), d.gyl, d.gR, d.gyr, d.gx,
                           s0 * kLanes, std::min(N, s1 * kLanes), stream);
    });
  } else {
    const ReprojectData<double> d(x, y_relift, R, y_rot, weights, gyl, gR, gyr, gx, need_x, need_y_rot);
    at::parallel_for(0, N, std::max<int64_t>(1, 8192 / std::max<int64_t>(J, 1)), [&](int64_t n0, int64_t n1) {
      std::vector<double> scratch(static_cast<size_t>(4 * J));
      for (int64_t n = n0; n < n1; ++n) d.backward_pose(n, a, k2, k3, scratch.data());
    });
  }
  return {gx, gyl, gR, gyr};
}


std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
cycle_reproject_loss_forward_grad_cpu(const at::Tensor& x, const at::Tensor& y_relift, const at::Tensor& R,
                                      const at::Tensor& y_rot, const std::optional<at::Tensor>& weights, bool l1,
                                      double c, int64_t root, bool transpose, double min_depth, bool renormalize,
                                      int64_t head, double eps, double w_2d, double w_3d, bool need_x,
                                      bool need_y_rot) {
  const ReprojectArgs a =
      check_inputs(x, y_relift, R, y_rot, weights, l1, c, root, transpose, min_depth, renormalize, head, eps);
  const int64_t N = x.size(0), J = a.J;
  auto [gx, gyl, gR, gyr] = reproject_gradient_buffers(x, y_relift, R, y_rot, need_x, need_y_rot);
  // The mean's denominator first (one pass over the weights only): every gradient carries it.
  double W = double(N) * double(J);
  if (weights.has_value())
    W = x.scalar_type() == at::kFloat ? kept_weight_sum(weights->data_ptr<float>(), N * J)
                                      : kept_weight_sum(weights->data_ptr<double>(), N * J);
  const double den = std::max(W, double(std::numeric_limits<float>::min()));
  const double k2 = w_2d / (2 * den), k3 = w_3d / (3 * den);
  const int64_t nblocks = (N + kBlockPoses - 1) / kBlockPoses;
  std::vector<double> part(static_cast<size_t>(2 * nblocks));
  const int64_t grain = std::max<int64_t>(1, 256 / std::max<int64_t>(J, 1));
  if (x.scalar_type() == at::kFloat) {
    const ReprojectData<float> d(x, y_relift, R, y_rot, weights, gyl, gR, gyr, gx, need_x, need_y_rot);
    const bool stream = lanes::use_streaming_stores(d.out_bytes(N), {d.gyl, d.gR, d.gyr, d.gx});
    at::parallel_for(0, nblocks, grain, [&](int64_t b0, int64_t b1) {
      forward_grad_range_float(d.x, d.yl, d.R, d.yr, d.w, a, float(k2), float(k3), d.gyl, d.gR, d.gyr, d.gx, N, b0,
                               b1, stream, part.data());
    });
  } else {
    const ReprojectData<double> d(x, y_relift, R, y_rot, weights, gyl, gR, gyr, gx, need_x, need_y_rot);
    at::parallel_for(0, nblocks, grain, [&](int64_t b0, int64_t b1) {
      std::vector<double> scratch(static_cast<size_t>(4 * J));
      for (int64_t b = b0; b < b1; ++b) {
        double s[3] = {0, 0, 0};
        for (int64_t n = b * kBlockPoses; n < std::min(N, (b + 1) * kBlockPoses); ++n)
          d.backward_pose(n, a, k2, k3, scratch.data(), s);
        part[2 * b] = s[0];
        part[2 * b + 1] = s[1];
      }
    });
  }
  double tot[2] = {0, 0};
  for (int64_t b = 0; b < nblocks; ++b)
    for (int i = 0; i < 2; ++i) tot[i] += part[2 * b + i];
  const auto opts = x.options();
  return {at::full({}, tot[0] / (2 * den), opts), at::full({}, tot[1] / (3 * den), opts), at::full({}, W, opts),
          gx, gyl, gR, gyr};
}

}  // namespace fastlift

TORCH_LIBRARY_FRAGMENT(fastlift_C, m) {
  m.def(
      "cycle_reproject_loss_forward(Tensor x, Tensor y_relift, Tensor R, Tensor y_rot, Tensor? weights, bool l1, "
      "float c, int root, bool transpose, float min_depth, bool renormalize, int head, float eps) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "cycle_reproject_loss_backward(Tensor grad_2d, Tensor grad_3d, Tensor x, Tensor y_relift, Tensor R, "
      "Tensor y_rot, Tensor? weights, Tensor wsum, bool l1, float c, int root, bool transpose, float min_depth, "
      "bool renormalize, int head, float eps, bool need_x, bool need_y_rot) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "cycle_reproject_loss_forward_grad(Tensor x, Tensor y_relift, Tensor R, Tensor y_rot, Tensor? weights, "
      "bool l1, float c, int root, bool transpose, float min_depth, bool renormalize, int head, float eps, "
      "float w_2d, float w_3d, bool need_x, bool need_y_rot) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastlift_C, CPU, m) {
  m.impl("cycle_reproject_loss_forward", &fastlift::cycle_reproject_loss_forward_cpu);
  m.impl("cycle_reproject_loss_backward", &fastlift::cycle_reproject_loss_backward_cpu);
  m.impl("cycle_reproject_loss_forward_grad", &fastlift::cycle_reproject_loss_forward_grad_cpu);
}
