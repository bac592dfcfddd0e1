// Per-pose math of random rotation sampling and the fused rotate-and-project, shared by the CPU
// and CUDA kernels (fastlift/ops/rotation.py and fastlift/ops/projection.py hold the contracts).
//
// Sampling: Philox 4x32-10 of key (seed lo, seed hi) and counter (k lo, k hi, 0, 0), k = offset + i;
//   u = (w >> 8) * 2^-24; azimuth = a0 + u0 * A, elevation = e0 + u1 * E in float64 (A, E are
//   float32-exact, so u * A is exact and the angle is one correctly rounded add: bit-identical on
//   every backend, FMA or not); R = R_x(elevation) R_y(azimuth), or Shoemake's unit quaternion for
//   the Haar measure. Matrices in float64.
// Rotate-project, per pose (M = R, or R^T with transpose), joint j:
//   p_j = Y_j - Y_root,  q_j = M p_j (= Y_rot_j),  t_j = q_jz + c - m,
//   Z_s = m + softplus(t_j),  x2d_j = (q_jx, q_jy) / Z_s,
//   then optionally normalize_2d's math on x2d (root-centre, head-root distance 1/c).
// Must compile with nvcc alone (no torch headers).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common.h"
#include "rotate_project/simd.h"  // host-only SIMD overloads (empty under nvcc)

// Everything here is force-inlined: on the host the CPU kernels' ISA clones (AVX-512, AVX2,
// baseline) must each get their own copy, never a call into baseline code.
#if defined(__CUDACC__)
#define FASTLIFT_HDI __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define FASTLIFT_HDI inline __attribute__((always_inline))
#else
#define FASTLIFT_HDI inline
#endif

namespace fastlift {

// ------------------------------------------------------------------------------------------------
// Philox 4x32-10 (Salmon et al. 2011), counter-based.
struct Philox4 {
  uint32_t w[4];
};

FASTLIFT_HDI void philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

FASTLIFT_HDI Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                  uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    if (r) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c0, &hi0, &lo0);
    philox_mulhilo(0xCD9E8D57u, c2, &hi1, &lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  Philox4 out;
  out.w[0] = c0;
  out.w[1] = c1;
  out.w[2] = c2;
  out.w[3] = c3;
  return out;
}

FASTLIFT_HDI double uniform24(uint32_t w) { return static_cast<double>(w >> 8) * (1.0 / 16777216.0); }

// Sample i of the stream (seed, offset): R (9 doubles, row-major) and params (2: azimuth,
// elevation; or 4: quaternion w, x, y, z with haar).
FASTLIFT_HDI void sample_rotation(uint64_t seed, uint64_t k, double a0, double aw, double e0, double ew,
                                 bool haar, double* R, double* params) {
  const Philox4 r = philox4x32_10(static_cast<uint32_t>(k), static_cast<uint32_t>(k >> 32), 0u, 0u,
                                  static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  const double u0 = uniform24(r.w[0]), u1 = uniform24(r.w[1]);
  if (haar) {
    const double u2 = uniform24(r.w[2]);
    const double a = sqrt(1.0 - u0), b = sqrt(u0);
    const double t1 = 6.283185307179586 * u1, t2 = 6.283185307179586 * u2;
    const double qw = b * cos(t2), qx = a * sin(t1), qy = a * cos(t1), qz = b * sin(t2);
    params[0] = qw;
    params[1] = qx;
    params[2] = qy;
    params[3] = qz;
    R[0] = 1 - 2 * (qy * qy + qz * qz);
    R[1] = 2 * (qx * qy - qw * qz);
    R[2] = 2 * (qx * qz + qw * qy);
    R[3] = 2 * (qx * qy + qw * qz);
    R[4] = 1 - 2 * (qx * qx + qz * qz);
    R[5] = 2 * (qy * qz - qw * qx);
    R[6] = 2 * (qx * qz - qw * qy);
    R[7] = 2 * (qy * qz + qw * qx);
    R[8] = 1 - 2 * (qx * qx + qy * qy);
    return;
  }
  const double az = a0 + u0 * aw;  // u0 * aw is exact: one rounding, FMA or not
  const double el = e0 + u1 * ew;
  params[0] = az;
  params[1] = el;
  const double ct = cos(az), st = sin(az), cp = cos(el), sp = sin(el);
  R[0] = ct;
  R[1] = 0;
  R[2] = st;
  R[3] = sp * st;
  R[4] = cp;
  R[5] = -sp * ct;
  R[6] = -cp * st;
  R[7] = sp;
  R[8] = cp * ct;
}

// ------------------------------------------------------------------------------------------------
// Branch-free scalar primitives. The per-pose math below is written for an element type E: float
// or double (one pose; CPU and CUDA), or, on the host, the SIMD type vf of simd.h (kLanes poses at
// once, one per lane), whose overloads of these primitives live there.

template <typename T>
FASTLIFT_HDI T fl_select(bool mask, T a, T b) {
  return mask ? a : b;
}
template <typename T>
FASTLIFT_HDI T fl_max(T a, T b) {
  return a > b ? a : b;
}
FASTLIFT_HDI float fl_abs(float a) { return fabsf(a); }
FASTLIFT_HDI double fl_abs(double a) { return fabs(a); }
FASTLIFT_HDI float fl_sqrt(float a) { return sqrtf(a); }
FASTLIFT_HDI double fl_sqrt(double a) { return sqrt(a); }

// exp(x) for x <= 0. Host float: Cephes expf (about 1 ulp; x below -87 gives exp(-87)), the same
// code as the SIMD overload so the CPU's vector and tail paths agree. Device and double: libm.
FASTLIFT_HDI float fl_exp_nonpos(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  x = x < -87.0f ? -87.0f : x;
  const float sh = x * 1.44269504088896341f + 12582912.0f;
  const float fn = sh - 12582912.0f;  // round(x / ln 2)
  float r = x - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  int32_t n;
  memcpy(&n, &sh, sizeof(n));
  n = (n - 0x4B400000 + 127) * (1 << 23);
  float scale;
  memcpy(&scale, &n, sizeof(scale));
  return p * scale;
#endif
}
FASTLIFT_HDI double fl_exp_nonpos(double x) { return exp(x); }

// log1p(e) for e in [0, 1]. Host float: for e <= 1/50 the series to e^4 (error < 7e-10), else
// 2 atanh(s), s = e / (2 + e) <= 1/3, odd series to s^15.
FASTLIFT_HDI float fl_log1p_unit(float e) {
#if defined(__CUDA_ARCH__)
  return log1pf(e);
#else
  if (e <= 0.02f) return e * (1.0f - e * (0.5f - e * (1.0f / 3.0f - e * 0.25f)));  // as simd.h
  const float s = e / (2.0f + e), s2 = s * s;
  float p = 1.0f / 15.0f;
  p = p * s2 + 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
#endif
}
FASTLIFT_HDI double fl_log1p_unit(double e) { return log1p(e); }

// Soft depth floor: Z_s = m + softplus(t) = m + max(t, 0) + log1p(exp(-|t|)), t = Z - m.
template <typename E, typename S>
FASTLIFT_HDI E soft_floor(E t, S m) {
  const E e = fl_exp_nonpos(-fl_abs(t));
  return fl_max(t, E{} + S(0)) + fl_log1p_unit(e) + m;
}
// Its inverse 1 / Z_s and derivative dZ_s/dt = sigmoid(t) = 1 / (1 + e) or e / (1 + e), e = exp(-|t|),
// with one division: r = 1 / (Z_s (1 + e)).
template <typename E, typename S>
FASTLIFT_HDI void soft_floor_grad(E t, S m, E* inv_zs, E* sig) {
  const E e = fl_exp_nonpos(-fl_abs(t));
  const E zs = fl_max(t, E{} + S(0)) + fl_log1p_unit(e) + m;
  const E ep1 = e + S(1);
  const E r = S(1) / (zs * ep1);
  *inv_zs = r * ep1;
  const E inv = r * zs;
  *sig = fl_select(t >= S(0), inv, e * inv);
}

// ------------------------------------------------------------------------------------------------
// Rotate-and-project of one pose (or one pose per lane). M = R, or R^T with transpose.
template <typename E>
FASTLIFT_HDI void load_rotation(const E* R, bool transpose, E* M) {
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b) M[3 * a + b] = transpose ? R[3 * b + a] : R[3 * a + b];
}

// Back through q = M p for one joint: gp = M^T gq, and dL/dM += gq p^T (G row-major, 3 x 3).
template <typename E>
FASTLIFT_HDI void rotate_joint_backward(const E* M, E gq0, E gq1, E gq2, E p0, E p1, E p2, E* G, E* gp) {
  gp[0] = M[0] * gq0 + M[3] * gq1 + M[6] * gq2;
  gp[1] = M[1] * gq0 + M[4] * gq1 + M[7] * gq2;
  gp[2] = M[2] * gq0 + M[5] * gq1 + M[8] * gq2;
  G[0] = G[0] + gq0 * p0;
  G[1] = G[1] + gq0 * p1;
  G[2] = G[2] + gq0 * p2;
  G[3] = G[3] + gq1 * p0;
  G[4] = G[4] + gq1 * p1;
  G[5] = G[5] + gq1 * p2;
  G[6] = G[6] + gq2 * p0;
  G[7] = G[7] + gq2 * p1;
  G[8] = G[8] + gq2 * p2;
}

// yrot may be nullptr (not written).
template <typename E, typename S>
FASTLIFT_HDI void rotate_project_pose_forward(const E* __restrict__ Y, const E* __restrict__ R,
                                             E* __restrict__ x2d, E* __restrict__ yrot, int64_t J,
                                             int64_t root, bool transpose, S c, S m, bool renorm,
                                             int64_t head, S eps) {
  E M[9];
  load_rotation(R, transpose, M);
  const E r0 = Y[3 * root], r1 = Y[3 * root + 1], r2 = Y[3 * root + 2];
  const S cm = c - m;
  for (int64_t j = 0; j < J; ++j) {
    const E p0 = Y[3 * j] - r0, p1 = Y[3 * j + 1] - r1, p2 = Y[3 * j + 2] - r2;
    const E q0 = M[0] * p0 + M[1] * p1 + M[2] * p2;
    const E q1 = M[3] * p0 + M[4] * p1 + M[5] * p2;
    const E q2 = M[6] * p0 + M[7] * p1 + M[8] * p2;
    if (yrot) {
      yrot[3 * j] = q0;
      yrot[3 * j + 1] = q1;
      yrot[3 * j + 2] = q2;
    }
    const E u = S(1) / soft_floor(q2 + cm, m);
    x2d[2 * j] = q0 * u;
    x2d[2 * j + 1] = q1 * u;
  }
  if (renorm) {  // normalize_2d's math, in place: y_j = (x_j - x_root) s
    const E rx = x2d[2 * root], ry = x2d[2 * root + 1];
    const E dx = x2d[2 * head] - rx, dy = x2d[2 * head + 1] - ry;
    const E s = S(1) / (fl_max(fl_sqrt(dx * dx + dy * dy), E{} + eps) * c);
    for (int64_t j = 0; j < J; ++j) {
      x2d[2 * j] = (x2d[2 * j] - rx) * s;
      x2d[2 * j + 1] = (x2d[2 * j + 1] - ry) * s;
    }
  }
}

// Backward of one pose: gY (J x 3) and gR (3 x 3) from g2 = dL/dx2d (J x 2) and g3 = dL/dY_rot
// (either may be nullptr: zero). Recomputes the rotation and projection from Y and R.
template <typename E, typename S>
FASTLIFT_HDI void rotate_project_pose_backward(const E* __restrict__ g2, const E* __restrict__ g3,
                                              const E* __restrict__ Y, const E* __restrict__ R,
                                              E* __restrict__ gY, E* __restrict__ gR, int64_t J,
                                              int64_t root, bool transpose, S c, S m, bool renorm,
                                              int64_t head, S eps) {
  E M[9];
  load_rotation(R, transpose, M);
  const E r0 = Y[3 * root], r1 = Y[3 * root + 1], r2 = Y[3 * root + 2];
  const S cm = c - m;
  const E zero = E{} + S(0);
  // Re-normalisation y_j = (x_j - x_root) s, s = 1 / (c max(d, eps)): dL/dx_j = s g_j, minus
  // s sum_j g_j at the root, plus k (x_head - x_root) at the head and minus it at the root, with
  // k = -s g_s / d^2 (0 where d <= eps), g_s = sum_j g_j . (x_j - x_root).
  E s = zero + S(1), sum0 = zero, sum1 = zero, kx = zero, ky = zero;
  if (renorm && g2) {
    auto project = [&](int64_t j, E* x0, E* x1) {
      const E p0 = Y[3 * j] - r0, p1 = Y[3 * j + 1] - r1, p2 = Y[3 * j + 2] - r2;
      const E u = S(1) / soft_floor(M[6] * p0 + M[7] * p1 + M[8] * p2 + cm, m);
      *x0 = (M[0] * p0 + M[1] * p1 + M[2] * p2) * u;
      *x1 = (M[3] * p0 + M[4] * p1 + M[5] * p2) * u;
    };
    E xr0, xr1, xh0, xh1;
    project(root, &xr0, &xr1);
    project(head, &xh0, &xh1);
    const E dx = xh0 - xr0, dy = xh1 - xr1;
    E g_s = zero;
    for (int64_t j = 0; j < J; ++j) {
      E x0, x1;
      project(j, &x0, &x1);
      const E a0 = g2[2 * j], a1 = g2[2 * j + 1];
      sum0 = sum0 + a0;
      sum1 = sum1 + a1;
      g_s = g_s + (a0 * (x0 - xr0) + a1 * (x1 - xr1));
    }
    const E d2 = dx * dx + dy * dy, d = fl_sqrt(d2);
    s = S(1) / (fl_max(d, zero + eps) * c);
    const E k = fl_select(d > eps, -g_s * s / d2, zero);
    kx = k * dx;
    ky = k * dy;
  }
  E G[9];  // dL/dM
  for (int i = 0; i < 9; ++i) G[i] = zero;
  E s0 = zero, s1 = zero, s2 = zero;  // sum over joints of dL/dp_j
  for (int64_t j = 0; j < J; ++j) {
    const E p0 = Y[3 * j] - r0, p1 = Y[3 * j + 1] - r1, p2 = Y[3 * j + 2] - r2;
    const E q0 = M[0] * p0 + M[1] * p1 + M[2] * p2;
    const E q1 = M[3] * p0 + M[4] * p1 + M[5] * p2;
    const E q2 = M[6] * p0 + M[7] * p1 + M[8] * p2;
    E gq0 = g3 ? g3[3 * j] : zero, gq1 = g3 ? g3[3 * j + 1] : zero, gq2 = g3 ? g3[3 * j + 2] : zero;
    if (g2) {
      E a0 = g2[2 * j], a1 = g2[2 * j + 1];  // dL/d(projection)
      if (renorm) {
        a0 = a0 * s;
        a1 = a1 * s;
        if (j == root) {
          a0 = a0 - (sum0 * s + kx);
          a1 = a1 - (sum1 * s + ky);
        }
        if (j == head) {
          a0 = a0 + kx;
          a1 = a1 + ky;
        }
      }
      E u, sig;
      soft_floor_grad(q2 + cm, m, &u, &sig);
      const E b0 = a0 * u, b1 = a1 * u;  // through (q0, q1) / Z_s
      gq0 = gq0 + b0;
      gq1 = gq1 + b1;
      gq2 = gq2 - (b0 * q0 + b1 * q1) * u * sig;
    }
    E gp[3];
    rotate_joint_backward(M, gq0, gq1, gq2, p0, p1, p2, G, gp);
    gY[3 * j] = gp[0];
    gY[3 * j + 1] = gp[1];
    gY[3 * j + 2] = gp[2];
    s0 = s0 + gp[0];
    s1 = s1 + gp[1];
    s2 = s2 + gp[2];
  }
  gY[3 * root] = gY[3 * root] - s0;
  gY[3 * root + 1] = gY[3 * root + 1] - s1;
  gY[3 * root + 2] = gY[3 * root + 2] - s2;
  load_rotation(G, transpose, gR);  // dL/dR: G, transposed back with transpose
}

}  // namespace fastlift
