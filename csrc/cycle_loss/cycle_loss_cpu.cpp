// C++ CPU kernels of the fused cycle-consistency losses: one pass over the four pose tensors (and
// the weights) gives both losses; one pass writes both gradients.
//
// The reduction is deterministic whatever the thread count: poses are cut into fixed blocks of
// kBlockPoses, each block is summed in 16 float lanes (vectorised) and rounded to double, and the
// block sums are added in block order in double.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cfloat>
#include <limits>
#include <vector>

#include "cycle_loss/cycle_loss.h"
#include "cycle_loss/cycle_loss_math.h"

namespace fastlift {

namespace {
constexpr const char* kOp = "fastlift cycle_consistency_loss";
constexpr int64_t kBlockPoses = 64;
constexpr int kLanes = 16;

void check_pose(const at::Tensor& t, const char* name, int64_t N, int64_t J, int64_t k,
                at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu(), kOp, ": ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, kOp, ": ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), kOp, ": ", name, " must be contiguous");
  if (k > 0) {
    TORCH_CHECK(t.dim() == 3 && t.size(0) == N && t.size(1) == J && t.size(2) == k, kOp, ": ", name,
                " must have shape (", N, ", ", J, ", ", k, "), got ", t.sizes());
  } else {
    TORCH_CHECK(t.dim() == 2 && t.size(0) == N && t.size(1) == J, kOp, ": ", name,
                " must have shape (", N, ", ", J, "), got ", t.sizes());
  }
}

void check_inputs(const at::Tensor& x, const at::Tensor& x_back, const at::Tensor& y_rot,
                  const at::Tensor& y_relift, const std::optional<at::Tensor>& weights) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == 2, kOp, ": x must have shape (N, J, 2), got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, kOp,
              ": inputs must be float32 or float64, got ", x.scalar_type());
  const int64_t N = x.size(0), J = x.size(1);
  const auto dt = x.scalar_type();
  check_pose(x, "x", N, J, 2, dt);
  check_pose(x_back, "x_back", N, J, 2, dt);
  check_pose(y_rot, "y_rot", N, J, 3, dt);
  check_pose(y_relift, "y_relift", N, J, 3, dt);
  if (weights.has_value()) check_pose(*weights, "weights", N, J, 0, dt);
}

// Sum over i < len of f(a_i - b_i), in kLanes independent float lanes (the loop vectorises).
template <typename T, bool L1>
double flat_sum(const T* __restrict__ a, const T* __restrict__ b, int64_t len) {
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const T d = a[i + l] - b[i + l];
      acc[l] += L1 ? std::abs(d) : d * d;
    }
  }
  double s = 0;
  for (; i < len; ++i) s += double(cycle_loss_elem<T>(a[i] - b[i], L1));
  for (int l = 0; l < kLanes; ++l) s += double(acc[l]);
  return s;
}

// Weighted sums over joints [k0, k1): 2D, 3D and weight, in kLanes lanes of joints.
template <typename T, bool L1>
void weighted_sums(const T* __restrict__ x, const T* __restrict__ xb, const T* __restrict__ yr,
                   const T* __restrict__ yl, const T* __restrict__ w, int64_t k0, int64_t k1, double* out) {
  T a2[kLanes] = {}, a3[kLanes] = {}, aw[kLanes] = {};
  int64_t k = k0;
  for (; k + kLanes <= k1; k += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const int64_t q = k + l;
      const T wq = w[q];
      const bool keep = wq > T(0);
      const T wk = keep ? wq : T(0);
      T e2 = 0, e3 = 0;
      for (int i = 0; i < 2; ++i) {
        const T d = keep ? x[2 * q + i] - xb[2 * q + i] : T(0);
        e2 += L1 ? std::abs(d) : d * d;
      }
      for (int i = 0; i < 3; ++i) {
        const T d = keep ? yr[3 * q + i] - yl[3 * q + i] : T(0);
        e3 += L1 ? std::abs(d) : d * d;
      }
      a2[l] += wk * e2;
      a3[l] += wk * e3;
      aw[l] += wk;
    }
  }
  double acc[3] = {0, 0, 0};
  for (; k < k1; ++k) cycle_loss_joint_forward<T, double>(x, xb, yr, yl, w, k, L1, acc);
  for (int l = 0; l < kLanes; ++l) {
    acc[0] += double(a2[l]);
    acc[1] += double(a3[l]);
    acc[2] += double(aw[l]);
  }
  out[0] = acc[0];
  out[1] = acc[1];
  out[2] = acc[2];
}

template <typename T, bool L1>
void forward_impl(const T* x, const T* xb, const T* yr, const T* yl, const T* w, int64_t N, int64_t J,
                  double* tot) {
  const int64_t nblocks = (N + kBlockPoses - 1) / kBlockPoses;
  std::vector<double> part(static_cast<size_t>(3 * nblocks));
  at::parallel_for(0, nblocks, std::max<int64_t>(1, 256 / std::max<int64_t>(J, 1)), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n0 = b * kBlockPoses, n1 = std::min(N, n0 + kBlockPoses);
      double* o = part.data() + 3 * b;
      if (w == nullptr) {
        o[0] = flat_sum<T, L1>(x + n0 * J * 2, xb + n0 * J * 2, (n1 - n0) * J * 2);
        o[1] = flat_sum<T, L1>(yr + n0 * J * 3, yl + n0 * J * 3, (n1 - n0) * J * 3);
        o[2] = double((n1 - n0) * J);
      } else {
        weighted_sums<T, L1>(x, xb, yr, yl, w, n0 * J, n1 * J, o);
      }
    }
  });
  tot[0] = tot[1] = tot[2] = 0;
  for (int64_t b = 0; b < nblocks; ++b)
    for (int i = 0; i < 3; ++i) tot[i] += part[3 * b + i];
}

template <typename T, bool L1>
void backward_impl(const T* x, const T* xb, const T* yr, const T* yl, const T* w, int64_t N, int64_t J,
                   T k2, T k3, T* gxb, T* gyl) {
  const int64_t K = N * J;
  at::parallel_for(0, K, 8192, [&](int64_t k0, int64_t k1) {
    if (w == nullptr) {
      for (int64_t i = 2 * k0; i < 2 * k1; ++i) gxb[i] = k2 * cycle_loss_elem_grad<T>(xb[i] - x[i], L1);
      for (int64_t i = 3 * k0; i < 3 * k1; ++i) gyl[i] = k3 * cycle_loss_elem_grad<T>(yl[i] - yr[i], L1);
    } else {
      for (int64_t k = k0; k < k1; ++k) cycle_loss_joint_backward<T>(x, xb, yr, yl, w, k, L1, k2, k3, gxb, gyl);
    }
  });
}
}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> cycle_loss_forward_cpu(
    const at::Tensor& x, const at::Tensor& x_back, const at::Tensor& y_rot, const at::Tensor& y_relift,
    const std::optional<at::Tensor>& weights, bool l1) {
  check_inputs(x, x_back, y_rot, y_relift, weights);
  const int64_t N = x.size(0), J = x.size(1);
  at::Tensor l2 = at::empty({}, x.options()), l3 = at::empty({}, x.options()), ws = at::empty({}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cycle_loss_forward_cpu", [&] {
    const scalar_t* w = weights.has_value() ? weights->data_ptr<scalar_t>() : nullptr;
    double tot[3];
    auto run = [&](auto l1c) {
      forward_impl<scalar_t, decltype(l1c)::value>(x.data_ptr<scalar_t>(), x_back.data_ptr<scalar_t>(),
                                                   y_rot.data_ptr<scalar_t>(), y_relift.data_ptr<scalar_t>(),
                                                   w, N, J, tot);
    };
    if (l1) run(std::true_type()); else run(std::false_type());
    // 0/0 (nothing included) is 0: the numerator is then 0 too.
    const double den = std::max(tot[2], double(std::numeric_limits<scalar_t>::min()));
    l2.fill_(scalar_t(tot[0] / (2 * den)));
    l3.fill_(scalar_t(tot[1] / (3 * den)));
    ws.fill_(scalar_t(tot[2]));
  });
  return {l2, l3, ws};
}

std::tuple<at::Tensor, at::Tensor> cycle_loss_backward_cpu(
    const at::Tensor& grad_2d, const at::Tensor& grad_3d, const at::Tensor& x, const at::Tensor& x_back,
    const at::Tensor& y_rot, const at::Tensor& y_relift, const std::optional<at::Tensor>& weights,
    const at::Tensor& wsum, bool l1) {
  check_inputs(x, x_back, y_rot, y_relift, weights);
  TORCH_CHECK(grad_2d.numel() == 1 && grad_3d.numel() == 1 && wsum.numel() == 1, kOp,
              " backward: grad_2d, grad_3d and wsum must be scalars");
  const int64_t N = x.size(0), J = x.size(1);
  at::Tensor gxb = at::empty_like(x_back), gyl = at::empty_like(y_relift);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cycle_loss_backward_cpu", [&] {
    const double den = std::max(wsum.item<double>(), double(std::numeric_limits<scalar_t>::min()));
    const scalar_t k2 = scalar_t(grad_2d.item<double>() / (2 * den));
    const scalar_t k3 = scalar_t(grad_3d.item<double>() / (3 * den));
    const scalar_t* w = weights.has_value() ? weights->data_ptr<scalar_t>() : nullptr;
    auto run = [&](auto l1c) {
      backward_impl<scalar_t, decltype(l1c)::value>(
          x.data_ptr<scalar_t>(), x_back.data_ptr<scalar_t>(), y_rot.data_ptr<scalar_t>(),
          y_relift.data_ptr<scalar_t>(), w, N, J, k2, k3, gxb.data_ptr<scalar_t>(), gyl.data_ptr<scalar_t>());
    };
    if (l1) run(std::true_type()); else run(std::false_type());
  });
  return {gxb, gyl};
}

}  // namespace fastlift

TORCH_LIBRARY_FRAGMENT(fastlift_C, m) {
  m.def(
      "cycle_loss_forward(Tensor x, Tensor x_back, Tensor y_rot, Tensor y_relift, Tensor? weights, "
      "bool l1) -> (Tensor, Tensor, Tensor)");
  m.def(
      "cycle_loss_backward(Tensor grad_2d, Tensor grad_3d, Tensor x, Tensor x_back, Tensor y_rot, "
      "Tensor y_relift, Tensor? weights, Tensor wsum, bool l1) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastlift_C, CPU, m) {
  m.impl("cycle_loss_forward", &fastlift::cycle_loss_forward_cpu);
  m.impl("cycle_loss_backward", &fastlift::cycle_loss_backward_cpu);
}
