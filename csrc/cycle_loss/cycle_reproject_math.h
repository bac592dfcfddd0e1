// Per-pose math of the fused reprojection cycle loss (fastlift/ops/cycle_loss.py,
// cycle_reprojection_loss): the cycle's steps 5 and 6 without materialising x_back,
//   x_back = P(R^T Y_relift) (rotate_project_pose_forward, transpose by default),
//   loss_2d = sum w f(x - x_back) / (2 W),  loss_3d = sum w f(Y_rot~ - Y_relift~) / (3 W),
// with ~ the root-relative pose (Y - Y_root): the 3D term is compared root-relative (method.md,
// step 5), so the root joint's coordinates are always read.
// Written for an element type E (float/double, or the CPU's SIMD vf: one pose per lane).
// Must compile with nvcc alone (no torch headers).
#pragma once
#include "cycle_loss/cycle_loss_math.h"
#include "rotate_project/rotate_project_math.h"

namespace fastlift {

struct ReprojectArgs {
  int64_t J, root, head;
  bool transpose, renorm, l1;
  double c, m, eps;
};

// f and f' of the loss, branch-free for any E (|d| via fl_abs; sign via selects).
template <typename E, typename S>
FASTLIFT_HDI E cyc_f(E d, bool l1) {
  return l1 ? fl_abs(d) : d * d;
}
template <typename E, typename S>
FASTLIFT_HDI E cyc_df(E d, bool l1) {
  const E zero = E{} + S(0);
  return l1 ? fl_select(d > S(0), zero + S(1), fl_select(d < S(0), zero - S(1), zero)) : d * S(2);
}

// Adds the pose's weighted sums to acc[0] (2D), acc[1] (3D), acc[2] (weight). w: J weights or
// nullptr; joints with !(w > 0) excluded (their x / Y_rot never enter the sums). xb: 2 J scratch.
// J: the joint count (a.J), possibly as a compile-time constant (std::integral_constant).
template <typename E, typename S, typename JT>
FASTLIFT_HDI void cycle_reproject_pose_forward(const E* __restrict__ x, const E* __restrict__ yl,
                                               const E* __restrict__ R, const E* __restrict__ yr,
                                               const E* __restrict__ w, const ReprojectArgs& a, JT J,
                                               E* __restrict__ xb, E* acc) {
  const E zero = E{} + S(0);
  if (!a.renorm) {  // one fused loop: project joint j, compare, accumulate (xb unused)
    E M[9];
    load_rotation(R, a.transpose, M);
    const E r0 = yl[3 * a.root], r1 = yl[3 * a.root + 1], r2 = yl[3 * a.root + 2];
    const E t[3] = {yr[3 * a.root], yr[3 * a.root + 1], yr[3 * a.root + 2]};
    const S cm = S(a.c) - S(a.m);
    for (int64_t j = 0; j < J; ++j) {
      const E p0 = yl[3 * j] - r0, p1 = yl[3 * j + 1] - r1, p2 = yl[3 * j + 2] - r2;
      const E u = S(1) / soft_floor(M[6] * p0 + M[7] * p1 + M[8] * p2 + cm, S(a.m));
      const E d0 = x[2 * j] - (M[0] * p0 + M[1] * p1 + M[2] * p2) * u;
      const E d1 = x[2 * j + 1] - (M[3] * p0 + M[4] * p1 + M[5] * p2) * u;
      const E p[3] = {p0, p1, p2};
      E e3 = zero;
      if (w) {
        const auto keep = w[j] > S(0);
        const E wk = fl_select(keep, w[j], zero);
        for (int i = 0; i < 3; ++i) e3 = e3 + cyc_f<E, S>(fl_select(keep, (yr[3 * j + i] - t[i]) - p[i], zero), a.l1);
        const E e2 = cyc_f<E, S>(fl_select(keep, d0, zero), a.l1) + cyc_f<E, S>(fl_select(keep, d1, zero), a.l1);
        acc[0] = acc[0] + wk * e2;
        acc[1] = acc[1] + wk * e3;
        acc[2] = acc[2] + wk;
      } else {
        for (int i = 0; i < 3; ++i) e3 = e3 + cyc_f<E, S>((yr[3 * j + i] - t[i]) - p[i], a.l1);
        acc[0] = acc[0] + (cyc_f<E, S>(d0, a.l1) + cyc_f<E, S>(d1, a.l1));
        acc[1] = acc[1] + e3;
        acc[2] = acc[2] + S(1);
      }
    }
    return;
  }
  rotate_project_pose_forward<E, S>(yl, R, xb, static_cast<E*>(nullptr), J, a.root, a.transpose, S(a.c),
                                    S(a.m), a.renorm, a.head, S(a.eps));
  E dr[3];  // Y_rot_root - Y_relift_root: the 3D difference of joint j is (yr_j - yl_j) - dr
  for (int i = 0; i < 3; ++i) dr[i] = yr[3 * a.root + i] - yl[3 * a.root + i];
  for (int64_t j = 0; j < J; ++j) {
    E e2 = zero, e3 = zero, wk = zero + S(1);
    if (w) {
      const auto keep = w[j] > S(0);
      wk = fl_select(keep, w[j], zero);
      for (int i = 0; i < 2; ++i) e2 = e2 + cyc_f<E, S>(fl_select(keep, x[2 * j + i] - xb[2 * j + i], zero), a.l1);
      for (int i = 0; i < 3; ++i)
        e3 = e3 + cyc_f<E, S>(fl_select(keep, (yr[3 * j + i] - yl[3 * j + i]) - dr[i], zero), a.l1);
    } else {
      for (int i = 0; i < 2; ++i) e2 = e2 + cyc_f<E, S>(x[2 * j + i] - xb[2 * j + i], a.l1);
      for (int i = 0; i < 3; ++i) e3 = e3 + cyc_f<E, S>((yr[3 * j + i] - yl[3 * j + i]) - dr[i], a.l1);
    }
    acc[0] = acc[0] + wk * e2;
    acc[1] = acc[1] + wk * e3;
    acc[2] = acc[2] + wk;
  }
}

// Gradients of g2 loss_2d + g3 loss_3d given k2 = g2 / (2 W), k3 = g3 / (3 W): gyl (J x 3), gR
// (3 x 3), and, where not nullptr, gyr = -dL/dY_relift's 3D part and gx = -dL/dx_back. With acc
// (not nullptr) it also adds the pose's sums to acc[0..2] as cycle_reproject_pose_forward does,
// from the residuals it computes anyway: the loss and its gradient in one pass (f is even, so
// the residual's sign does not matter).
// xb, g2buf: 2 J scratch each. The soft floor is recomputed from Y_relift and R (the step is bound
// by memory traffic, not by this arithmetic: saving it from the forward measured no faster).
template <typename E, typename S, typename JT>
FASTLIFT_HDI void cycle_reproject_pose_backward(const E* __restrict__ x, const E* __restrict__ yl,
                                                const E* __restrict__ R, const E* __restrict__ yr,
                                                const E* __restrict__ w, const ReprojectArgs& a, JT J, S k2,
                                                S k3, E* __restrict__ gyl, E* __restrict__ gR,
                                                E* __restrict__ gyr, E* __restrict__ gx, E* __restrict__ xb,
                                                E* __restrict__ g2buf, E* acc = nullptr) {
  const E zero = E{} + S(0);
  if (!a.renorm) {  // one fused loop per joint: projection, loss gradient, back through the projection
    E M[9], G[9];
    load_rotation(R, a.transpose, M);
    for (int i = 0; i < 9; ++i) G[i] = zero;
    const E r0 = yl[3 * a.root], r1 = yl[3 * a.root + 1], r2 = yl[3 * a.root + 2];
    const E t[3] = {yr[3 * a.root], yr[3 * a.root + 1], yr[3 * a.root + 2]};
    const S cm = S(a.c) - S(a.m);
    E s0 = zero, s1 = zero, s2 = zero;
    E h[3] = {zero, zero, zero};  // sum over joints of the 3D term's gradient (flows to the roots)
    for (int64_t j = 0; j < J; ++j) {
      const E p0 = yl[3 * j] - r0, p1 = yl[3 * j + 1] - r1, p2 = yl[3 * j + 2] - r2;
      const E q0 = M[0] * p0 + M[1] * p1 + M[2] * p2;
      const E q1 = M[3] * p0 + M[4] * p1 + M[5] * p2;
      const E q2 = M[6] * p0 + M[7] * p1 + M[8] * p2;
      E u, sig;
      soft_floor_grad(q2 + cm, S(a.m), &u, &sig);
      const auto keep = w ? (w[j] > S(0)) : (zero == zero);
      const E wk = w ? fl_select(keep, w[j], zero) : zero + S(1);
      const E a2 = wk * k2, a3 = wk * k3;
      const E r0 = q0 * u - x[2 * j], r1 = q1 * u - x[2 * j + 1];
      const E g0 = fl_select(keep, a2 * cyc_df<E, S>(r0, a.l1), zero);
      const E g1 = fl_select(keep, a2 * cyc_df<E, S>(r1, a.l1), zero);
      if (acc) {
        acc[0] = acc[0] + wk * (cyc_f<E, S>(fl_select(keep, r0, zero), a.l1) +
                                cyc_f<E, S>(fl_select(keep, r1, zero), a.l1));
        acc[2] = acc[2] + wk;
      }
      if (gx) {
        gx[2 * j] = -g0;
        gx[2 * j + 1] = -g1;
      }
      const E b0 = g0 * u, b1 = g1 * u;
      const E gq0 = b0, gq1 = b1, gq2 = -(b0 * q0 + b1 * q1) * u * sig;
      E gp[3];
      rotate_joint_backward(M, gq0, gq1, gq2, p0, p1, p2, G, gp);
      s0 = s0 + gp[0];
      s1 = s1 + gp[1];
      s2 = s2 + gp[2];
      const E p[3] = {p0, p1, p2};
      for (int i = 0; i < 3; ++i) {
        const E r = p[i] - (yr[3 * j + i] - t[i]);
        const E g = fl_select(keep, a3 * cyc_df<E, S>(r, a.l1), zero);
        if (acc) acc[1] = acc[1] + wk * cyc_f<E, S>(fl_select(keep, r, zero), a.l1);
        gyl[3 * j + i] = gp[i] + g;
        h[i] = h[i] + g;
        if (gyr) gyr[3 * j + i] = -g;
      }
    }
    gyl[3 * a.root] = gyl[3 * a.root] - (s0 + h[0]);
    gyl[3 * a.root + 1] = gyl[3 * a.root + 1] - (s1 + h[1]);
    gyl[3 * a.root + 2] = gyl[3 * a.root + 2] - (s2 + h[2]);
    if (gyr)
      for (int i = 0; i < 3; ++i) gyr[3 * a.root + i] = gyr[3 * a.root + i] + h[i];
    load_rotation(G, a.transpose, gR);  // dL/dR: G, transposed back with transpose
    return;
  }
  rotate_project_pose_forward<E, S>(yl, R, xb, static_cast<E*>(nullptr), J, a.root, a.transpose, S(a.c),
                                    S(a.m), a.renorm, a.head, S(a.eps));
  for (int64_t j = 0; j < J; ++j) {
    const auto keep = w ? (w[j] > S(0)) : (zero == zero);
    const E wk = w ? fl_select(keep, w[j], zero) : zero + S(1);
    const E a2 = w ? fl_select(keep, w[j] * k2, zero) : zero + k2;
    E e2 = zero;
    for (int i = 0; i < 2; ++i) {
      // where a2 == 0 the difference may be NaN (excluded joint): select, never multiply
      const E g = fl_select(a2 != S(0), a2 * cyc_df<E, S>(xb[2 * j + i] - x[2 * j + i], a.l1), zero);
      g2buf[2 * j + i] = g;
      if (gx) gx[2 * j + i] = -g;
      if (acc) e2 = e2 + cyc_f<E, S>(fl_select(keep, x[2 * j + i] - xb[2 * j + i], zero), a.l1);
    }
    if (acc) {
      acc[0] = acc[0] + wk * e2;
      acc[2] = acc[2] + wk;
    }
  }
  rotate_project_pose_backward<E, S>(g2buf, static_cast<const E*>(nullptr), yl, R, gyl, gR, J, a.root,
                                     a.transpose, S(a.c), S(a.m), a.renorm, a.head, S(a.eps));
  E dr[3], h[3];  // dr = Y_relift_root - Y_rot_root; h = sum of the 3D term's gradient (to the roots)
  for (int i = 0; i < 3; ++i) {
    dr[i] = yl[3 * a.root + i] - yr[3 * a.root + i];
    h[i] = zero;
  }
  for (int64_t j = 0; j < J; ++j) {
    const auto keep = w ? (w[j] > S(0)) : (zero == zero);
    const E wk = w ? fl_select(keep, w[j], zero) : zero + S(1);
    const E a3 = w ? fl_select(keep, w[j] * k3, zero) : zero + k3;
    for (int i = 0; i < 3; ++i) {
      const E r = (yl[3 * j + i] - yr[3 * j + i]) - dr[i];
      if (acc) acc[1] = acc[1] + wk * cyc_f<E, S>(fl_select(keep, r, zero), a.l1);
      const E g = fl_select(a3 != S(0), a3 * cyc_df<E, S>(r, a.l1), zero);
      gyl[3 * j + i] = gyl[3 * j + i] + g;
      h[i] = h[i] + g;
      if (gyr) gyr[3 * j + i] = -g;
    }
  }
  for (int i = 0; i < 3; ++i) {
    gyl[3 * a.root + i] = gyl[3 * a.root + i] - h[i];
    if (gyr) gyr[3 * a.root + i] = gyr[3 * a.root + i] + h[i];
  }
}

}  // namespace fastlift
