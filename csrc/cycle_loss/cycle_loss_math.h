// Per-joint math of the fused cycle-consistency losses, shared by the CPU and CUDA kernels
// (fastlift/ops/cycle_loss.py holds the contract):
//   loss_2d = sum_{n,j,k} w_nj f(x - x_back) / (2 W),  loss_3d = sum w_nj f(Y_rot - Y_relift) / (3 W),
//   W = sum of the included weights, f(e) = e^2 or |e|; joints with !(w > 0) are skipped (never read).
// Must compile with nvcc alone (no torch headers).
#pragma once
#include <math.h>
#include <stdint.h>

#include "common.h"

namespace fastlift {

template <typename T>
FASTLIFT_HD T cycle_loss_elem(T d, bool l1) {
  return l1 ? fabs(d) : d * d;
}

// d f(d) / d d (the sign of 0 is 0, as torch's abs).
template <typename T>
FASTLIFT_HD T cycle_loss_elem_grad(T d, bool l1) {
  return l1 ? T((d > T(0)) - (d < T(0))) : T(2) * d;
}

// Joint k (of the flattened N * J): adds w f(.) of its 2 + 3 coordinates to acc[0], acc[1] and w
// to acc[2]. w == nullptr means unit weights. Accumulates in A (float or double).
template <typename T, typename A>
FASTLIFT_HD void cycle_loss_joint_forward(const T* x, const T* xb, const T* yr, const T* yl, const T* w,
                                          int64_t k, bool l1, A* acc) {
  const T wk = w ? w[k] : T(1);
  if (!(wk > T(0))) return;
  const T e2 = cycle_loss_elem<T>(x[2 * k] - xb[2 * k], l1) + cycle_loss_elem<T>(x[2 * k + 1] - xb[2 * k + 1], l1);
  const T e3 = cycle_loss_elem<T>(yr[3 * k] - yl[3 * k], l1) +
               cycle_loss_elem<T>(yr[3 * k + 1] - yl[3 * k + 1], l1) +
               cycle_loss_elem<T>(yr[3 * k + 2] - yl[3 * k + 2], l1);
  acc[0] += A(wk * e2);
  acc[1] += A(wk * e3);
  acc[2] += A(wk);
}

// Joint k: gradients of (g2 loss_2d + g3 loss_3d) with respect to x_back and Y_relift, given
// k2 = g2 / (2 W) and k3 = g3 / (3 W). Excluded joints get 0.
template <typename T>
FASTLIFT_HD void cycle_loss_joint_backward(const T* x, const T* xb, const T* yr, const T* yl, const T* w,
                                           int64_t k, bool l1, T k2, T k3, T* gxb, T* gyl) {
  const T wk = w ? w[k] : T(1);
  const bool keep = wk > T(0);
  const T a2 = keep ? k2 * wk : T(0), a3 = keep ? k3 * wk : T(0);
  for (int i = 0; i < 2; ++i)
    gxb[2 * k + i] = keep ? a2 * cycle_loss_elem_grad<T>(xb[2 * k + i] - x[2 * k + i], l1) : T(0);
  for (int i = 0; i < 3; ++i)
    gyl[3 * k + i] = keep ? a3 * cycle_loss_elem_grad<T>(yl[3 * k + i] - yr[3 * k + i], l1) : T(0);
}

}  // namespace fastlift
