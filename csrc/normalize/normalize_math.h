// Per-pose math of the fused 2D normalisation, shared by the CPU and CUDA kernels.
//
// For one pose x (J x 2, interleaved x/y), root r = x[root], head h = x[head]:
//   d = |h - r|,  s = 1 / (c * max(d, eps)),  y_j = (x_j - r) * s.
// Must compile with nvcc alone (no torch headers).
#pragma once
#include <math.h>

#include "common.h"

namespace fastlift {

template <typename T>
FASTLIFT_HD T normalize_2d_pose_forward(const T* x, T* y, int64_t J, int64_t root, int64_t head, T c,
                                        T eps) {
  const T rx = x[2 * root], ry = x[2 * root + 1];
  const T dx = x[2 * head] - rx, dy = x[2 * head + 1] - ry;
  const T d = sqrt(dx * dx + dy * dy);
  const T s = T(1) / (c * (d > eps ? d : eps));
  for (int64_t j = 0; j < J; ++j) {
    y[2 * j] = (x[2 * j] - rx) * s;
    y[2 * j + 1] = (x[2 * j + 1] - ry) * s;
  }
  return s;
}

// gx = dL/dx given gy = dL/dy (J x 2) and gs = dL/ds, with s the saved forward scale.
template <typename T>
FASTLIFT_HD void normalize_2d_pose_backward(const T* gy, T gs, const T* x, T s, T* gx, int64_t J,
                                            int64_t root, int64_t head, T c, T eps) {
  const T rx = x[2 * root], ry = x[2 * root + 1];
  T sum_gx = 0, sum_gy = 0;  // sum of gy over joints (flows to the root through centring)
  T g_scale = gs;            // dL/ds
  for (int64_t j = 0; j < J; ++j) {
    const T gjx = gy[2 * j], gjy = gy[2 * j + 1];
    gx[2 * j] = gjx * s;
    gx[2 * j + 1] = gjy * s;
    sum_gx += gjx;
    sum_gy += gjy;
    g_scale += gjx * (x[2 * j] - rx) + gjy * (x[2 * j + 1] - ry);
  }
  gx[2 * root] -= sum_gx * s;
  gx[2 * root + 1] -= sum_gy * s;
  const T dx = x[2 * head] - rx, dy = x[2 * head + 1] - ry;
  const T d = sqrt(dx * dx + dy * dy);
  if (d > eps) {
    // ds/dd = -s / d; dd/dh = (h - r) / d = -dd/dr. Below eps the distance is clamped: no gradient.
    const T k = -g_scale * s / (d * d);
    gx[2 * head] += k * dx;
    gx[2 * head + 1] += k * dy;
    gx[2 * root] -= k * dx;
    gx[2 * root + 1] -= k * dy;
  }
}

}  // namespace fastlift
