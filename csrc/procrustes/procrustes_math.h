// Per-pose math of the fused similarity Procrustes alignment, shared by the CPU and CUDA kernels.
// Must compile with nvcc alone (no torch headers).
//
// For one pose: prediction p_j, target q_j (j < J, xyz interleaved), weights w_j >= 0 (uniform when
// absent), a_j = w_j / sum(w). The alignment minimises sum_j w_j |s R p_j + t - q_j|^2 over
// rotations R (det +1; or any orthogonal R when reflections are allowed), scales s and shifts t:
//
//   mu_p = sum a_j p_j,  mu_q = sum a_j q_j,  pc_j = p_j - mu_p,  qc_j = q_j - mu_q
//   M     = sum a_j qc_j pc_j^T                 (3x3 cross-covariance; R maximises tr(R^T M))
//   var_p = sum a_j |pc_j|^2
//   M = U diag(sig) V^T  with U, V rotations and sig_1 >= sig_2 >= |sig_3| (sig_3 carries the sign
//                        of det M: the "signed" SVD, so U V^T is the best rotation)
//   R = U D V^T,  D = diag(1, 1, d), d = -1 only if reflections are allowed and sig_3 < 0
//   s = tr(D diag(sig)) / var_p     (1 without scale),   t = mu_q - s R mu_p
//   aligned_j = s R p_j + t = mu_q + s R pc_j
//
// The 3x3 SVD is branch-free (McAdams et al. 2011 style): one-sided cyclic Jacobi on B = M V with
// exact Givens angles expressed as quaternions and accumulated into V's quaternion (4 sweeps in
// float, 5 in double), column sort by norm, then QR of B by quaternion Givens rotations, which
// gives U and the signed singular values (the last one keeps the sign: det U = det V = +1).
// One-sided Jacobi orthogonalises the columns of B directly instead of diagonalising M^T M, so the
// float32 kernels keep the accuracy of the cross-covariance (no squared condition number).
//
// Degenerate inputs: a point set whose spread is below ~64 ulp of its distance to the origin (all
// points equal, zero target, all weights zero) is a single point. M is then taken as zero, which
// gives R = I (and U = V = I, sig = 0); a degenerate prediction also gets s = 0 (with scale), so the
// aligned points collapse onto the target centroid. Rank-1 M (collinear points) leaves the roll
// about the line free: R is then whichever rotation the SVD returns; every roll fits equally well
// (and a collinear prediction's aligned points do not depend on it).
//
// The math is written once over a lane type V: a scalar (float/double: one pose per CUDA thread,
// or the scalar CPU loops) or the CPU's SIMD pack (one pose per SIMD lane, procrustes_simd.h).
// Lane primitives: lane_sqrt, lane_rsqrt, lane_abs, lane_select(mask, a, b), comparisons.
#pragma once
#include <math.h>
#include <stdint.h>

#include "common.h"

// FASTLIFT_HD (common.h), with inlining forced on the host: the CPU kernel compiles its block loop
// once per instruction set (target attributes), and only inlined code is compiled for it.
#if defined(__GNUC__) && !defined(__CUDACC__)
#define FASTLIFT_PROC_HD FASTLIFT_HD __attribute__((always_inline))
#else
#define FASTLIFT_PROC_HD FASTLIFT_HD
#endif

namespace fastlift {
namespace procrustes {

// ----------------------------------------------------------------------------- scalar lanes
FASTLIFT_PROC_HD float lane_sqrt(float x) { return sqrtf(x); }
FASTLIFT_PROC_HD double lane_sqrt(double x) { return sqrt(x); }
FASTLIFT_PROC_HD float lane_rsqrt(float x) {
#if defined(__CUDA_ARCH__)
  return rsqrtf(x);
#else
  return 1.0f / sqrtf(x);
#endif
}
FASTLIFT_PROC_HD double lane_rsqrt(double x) {
#if defined(__CUDA_ARCH__)
  return rsqrt(x);
#else
  return 1.0 / sqrt(x);
#endif
}
FASTLIFT_PROC_HD float lane_abs(float x) { return fabsf(x); }
FASTLIFT_PROC_HD double lane_abs(double x) { return fabs(x); }
FASTLIFT_PROC_HD float lane_select(bool c, float a, float b) { return c ? a : b; }
FASTLIFT_PROC_HD double lane_select(bool c, double a, double b) { return c ? a : b; }

// Scalar type of a lane type and the constants of the SVD for it.
template <typename V>
struct LaneTraits {
  using scalar = V;
};

template <typename S>
struct SvdConsts;
template <>
struct SvdConsts<float> {
  static constexpr int sweeps = 4;
  static constexpr float tiny = 1e-36f;    // below this squared norm a Jacobi rotation is skipped
  static constexpr float qr_eps = 1e-18f;  // QR Givens: pivot columns shorter than this are skipped
  static constexpr float grad_eps = 1e-6f;
};
template <>
struct SvdConsts<double> {
  static constexpr int sweeps = 5;
  static constexpr double tiny = 1e-300;
  static constexpr double qr_eps = 1e-150;
  static constexpr double grad_eps = 1e-9;
};

// Relative spread below which a point set counts as a single point (see above), by storage dtype.
template <typename T>
struct DegenerateTol;
template <>
struct DegenerateTol<float> {
  static constexpr double rel = 64 * 1.1920929e-07;
};
template <>
struct DegenerateTol<double> {
  static constexpr double rel = 64 * 2.220446049250313e-16;
};

// ----------------------------------------------------------------------------- SVD of 3x3
// Matrices are row-major V[9]: m[3 * row + col].

// One exact Jacobi rotation of columns P and Q of b (one-sided: zeroes b_P . b_Q), accumulated
// into the quaternion q (w, x, y, z) as a rotation about AXIS (the remaining index).
template <int P, int Q, int AXIS, typename V>
FASTLIFT_PROC_HD void jacobi_rotation(V b[9], V q[4]) {
  using S = typename LaneTraits<V>::scalar;
  const V alpha = b[P] * b[P] + b[3 + P] * b[3 + P] + b[6 + P] * b[6 + P];
  const V beta = b[Q] * b[Q] + b[3 + Q] * b[3 + Q] + b[6 + Q] * b[6 + Q];
  const V gamma = b[P] * b[Q] + b[3 + P] * b[3 + Q] + b[6 + P] * b[6 + Q];
  // tan(2 theta) = 2 gamma / (alpha - beta), |theta| <= pi/4. (x', y') = (|x|, sign(x) y) points at
  // 2 theta; adding its length to x' halves the angle twice: (rho + a, bb) points at theta / 2.
  const V x = alpha - beta;
  const V y = gamma + gamma;
  const V r = lane_sqrt(x * x + y * y);
  const V a = r + lane_abs(x);
  const V bb = lane_select(x < V(S(0)), V(S(0)) - y, y);
  const V rho = lane_sqrt(a * a + bb * bb);
  V ch = rho + a;
  V sh = bb;
  const V n2 = ch * ch + sh * sh;
  const auto ok = n2 > V(SvdConsts<S>::tiny);
  const V inv = lane_rsqrt(lane_select(ok, n2, V(S(1))));
  ch = lane_select(ok, ch * inv, V(S(1)));
  sh = lane_select(ok, sh * inv, V(S(0)));
  const V c = ch * ch - sh * sh;
  const V s = V(S(2)) * ch * sh;
  for (int row = 0; row < 3; ++row) {
    const V bp = b[3 * row + P], bq = b[3 * row + Q];
    b[3 * row + P] = c * bp + s * bq;
    b[3 * row + Q] = c * bq - s * bp;
  }
  // q <- q (x) (ch, sh e_AXIS)
  const V w = q[0], qx = q[1], qy = q[2], qz = q[3];
  if (AXIS == 0) {
    q[0] = ch * w - sh * qx;
    q[1] = ch * qx + sh * w;
    q[2] = ch * qy + sh * qz;
    q[3] = ch * qz - sh * qy;
  } else if (AXIS == 1) {
    q[0] = ch * w - sh * qy;
    q[1] = ch * qx - sh * qz;
    q[2] = ch * qy + sh * w;
    q[3] = ch * qz + sh * qx;
  } else {
    q[0] = ch * w - sh * qz;
    q[1] = ch * qx + sh * qy;
    q[2] = ch * qy - sh * qx;
    q[3] = ch * qz + sh * w;
  }
}

// Swap columns I and J of m, negating the new column J (keeps the determinant), where c holds.
template <int I, int J, typename V, typename Mask>
FASTLIFT_PROC_HD void cond_neg_swap_cols(Mask c, V m[9]) {
  using S = typename LaneTraits<V>::scalar;
  for (int row = 0; row < 3; ++row) {
    const V mi = m[3 * row + I], mj = m[3 * row + J];
    m[3 * row + I] = lane_select(c, mj, mi);
    m[3 * row + J] = lane_select(c, V(S(0)) - mi, mj);
  }
}

template <int I, int J, typename V>
FASTLIFT_PROC_HD void sort_step(V b[9], V v[9], V n[3]) {
  const auto c = n[I] < n[J];
  cond_neg_swap_cols<I, J>(c, b);
  cond_neg_swap_cols<I, J>(c, v);
  const V ni = n[I];
  n[I] = lane_select(c, n[J], ni);
  n[J] = lane_select(c, ni, n[J]);
}

// QR Givens rotation of rows P and Q of b zeroing b[Q][COL] against the pivot b[P][COL]; the
// pivot becomes non-negative. U accumulates the transposed rotations (on its columns P, Q).
template <int P, int Q, int COL, typename V>
FASTLIFT_PROC_HD void qr_rotation(V b[9], V u[9]) {
  using S = typename LaneTraits<V>::scalar;
  const V a1 = b[3 * P + COL], a2 = b[3 * Q + COL];
  const V rho = lane_sqrt(a1 * a1 + a2 * a2);
  const V eps = V(SvdConsts<S>::qr_eps);
  const V sh0 = lane_select(rho > eps, a2, V(S(0)));
  const V ch0 = lane_abs(a1) + lane_select(rho > eps, rho, eps);
  const auto neg = a1 < V(S(0));  // rotate by more than pi/2: (a2, rho - a1) is the same half angle
  V ch = lane_select(neg, sh0, ch0);
  V sh = lane_select(neg, ch0, sh0);
  const V inv = lane_rsqrt(ch * ch + sh * sh);
  ch = ch * inv;
  sh = sh * inv;
  const V c = ch * ch - sh * sh;
  const V s = V(S(2)) * ch * sh;
  for (int k = 0; k < 3; ++k) {
    const V bp = b[3 * P + k], bq = b[3 * Q + k];
    b[3 * P + k] = c * bp + s * bq;
    b[3 * Q + k] = c * bq - s * bp;
    const V up = u[3 * k + P], uq = u[3 * k + Q];
    u[3 * k + P] = c * up + s * uq;
    u[3 * k + Q] = c * uq - s * up;
  }
}

// Signed SVD a = u diag(sig) v^T of a 3x3 matrix with entries of magnitude <= ~1 (callers scale):
// u, v rotations, sig[0] >= sig[1] >= |sig[2]|, sig[2] < 0 iff det a < 0. a = 0 gives u = v = I.
template <typename V>
FASTLIFT_PROC_HD void svd3_signed(const V a[9], V u[9], V sig[3], V v[9]) {
  using S = typename LaneTraits<V>::scalar;
  const V zero(S(0)), one(S(1)), two(S(2));
  V b[9];
  for (int k = 0; k < 9; ++k) b[k] = a[k];
  V q[4] = {one, zero, zero, zero};
#if defined(__GNUC__) && !defined(__CUDACC__) && !defined(__clang__)
#pragma GCC unroll 1  // the sweep body is large; unrolling it only costs compile time
#endif
  for (int sweep = 0; sweep < SvdConsts<S>::sweeps; ++sweep) {
    jacobi_rotation<0, 1, 2>(b, q);
    jacobi_rotation<1, 2, 0>(b, q);
    jacobi_rotation<2, 0, 1>(b, q);
  }
  // V from the (renormalised) quaternion, then B = A V again so that B and V agree exactly.
  const V w = q[0], x = q[1], y = q[2], z = q[3];
  const V k = one / (w * w + x * x + y * y + z * z);
  const V ww = w * w * k, xx = x * x * k, yy = y * y * k, zz = z * z * k;
  const V xy = two * x * y * k, xz = two * x * z * k, yz = two * y * z * k;
  const V wx = two * w * x * k, wy = two * w * y * k, wz = two * w * z * k;
  v[0] = ww + xx - yy - zz;
  v[1] = xy - wz;
  v[2] = xz + wy;
  v[3] = xy + wz;
  v[4] = ww - xx + yy - zz;
  v[5] = yz - wx;
  v[6] = xz - wy;
  v[7] = yz + wx;
  v[8] = ww - xx - yy + zz;
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c)
      b[3 * r + c] = a[3 * r] * v[c] + a[3 * r + 1] * v[3 + c] + a[3 * r + 2] * v[6 + c];
  // Columns by decreasing norm, so that the smallest singular value (and its sign) comes last.
  V n[3];
  for (int c = 0; c < 3; ++c) n[c] = b[c] * b[c] + b[3 + c] * b[3 + c] + b[6 + c] * b[6 + c];
  sort_step<0, 1>(b, v, n);
  sort_step<0, 2>(b, v, n);
  sort_step<1, 2>(b, v, n);
  // QR: B = U R with U = Q1^T Q2^T Q3^T; R is diagonal up to the Jacobi residual.
  for (int i = 0; i < 9; ++i) u[i] = (i % 4 == 0) ? one : zero;
  qr_rotation<0, 1, 0>(b, u);
  qr_rotation<0, 2, 0>(b, u);
  qr_rotation<1, 2, 1>(b, u);
  sig[0] = b[0];
  sig[1] = b[4];
  sig[2] = b[8];
}

// ----------------------------------------------------------------------------- the similarity
// From the (already degenerate-checked) cross-covariance m and var_p: the rotation r, scale s and
// what the backward needs: v (the SVD's right rotation) and sig_t, the signed singular values
// with the reflection applied (sig_t[2] = d sig[2]), so that r = (r v) diag(1) v^T and
// tr(r^T m) = sum(sig_t).
template <typename V>
FASTLIFT_PROC_HD void solve_similarity(const V m[9], const V& var_p, bool with_scale, bool allow_reflection,
                                       V r[9], V& s, V v[9], V sig_t[3]) {
  using S = typename LaneTraits<V>::scalar;
  const V zero(S(0)), one(S(1));
  V mx = lane_abs(m[0]);
  for (int k = 1; k < 9; ++k) {
    const V ak = lane_abs(m[k]);
    mx = lane_select(ak > mx, ak, mx);
  }
  const auto nz = mx > zero;
  const V inv = lane_select(nz, one / lane_select(nz, mx, one), zero);
  V a[9], u[9], sig[3];
  for (int k = 0; k < 9; ++k) a[k] = m[k] * inv;
  svd3_signed(a, u, sig, v);
  V d = one;
  if (allow_reflection) d = lane_select(sig[2] < zero, V(S(-1)), one);
  for (int i = 0; i < 3; ++i) u[3 * i + 2] = u[3 * i + 2] * d;
  sig_t[0] = sig[0] * mx;
  sig_t[1] = sig[1] * mx;
  sig_t[2] = sig[2] * d * mx;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      r[3 * i + j] = u[3 * i] * v[3 * j] + u[3 * i + 1] * v[3 * j + 1] + u[3 * i + 2] * v[3 * j + 2];
  if (with_scale) {
    const V tau = sig_t[0] + sig_t[1] + sig_t[2];
    const auto pos = var_p > zero;
    s = lane_select(pos, tau / lane_select(pos, var_p, one), zero);
  } else {
    s = one;
  }
}

// ----------------------------------------------------------------------------- per-pose passes
// The joint loops read poses through an accessor x: x.p(j, c), x.q(j, c), x.gy(j, c) and x.w(j)
// return lane values, x.put_aligned / put_gp / put_gq(j, c, value) store them. PoseRef below is
// one pose in memory (a CUDA thread); the CPU kernel's accessor reads L transposed poses at once.
// Two passes over the joints (centroids, then centred sums): no cancellation for poses far from
// the origin. Centring goes through the pose's first joint o (pc_j = (p_j - o) - (mu - o)): the
// differences to o are exact for nearby points, so pc keeps full relative precision even when the
// centroid itself (5 m from the camera, say) cannot be represented to a fraction of the spread.

template <typename T, typename C>
struct PoseRef {
  const T* P;
  const T* Q;
  const T* W;  // nullptr: uniform weights
  const T* GY;  // nullptr: a zero gradient
  T* OUT;
  T* GP;
  T* GQ;
  FASTLIFT_PROC_HD C p(int64_t j, int c) const { return C(P[3 * j + c]); }
  FASTLIFT_PROC_HD C q(int64_t j, int c) const { return C(Q[3 * j + c]); }
  FASTLIFT_PROC_HD C gy(int64_t j, int c) const { return GY ? C(GY[3 * j + c]) : C(0); }
  FASTLIFT_PROC_HD C w(int64_t j) const { return W ? C(W[j]) : C(1); }
  FASTLIFT_PROC_HD void put_aligned(int64_t j, int c, C v) const { OUT[3 * j + c] = T(v); }
  FASTLIFT_PROC_HD void put_gp(int64_t j, int c, C v) const { GP[3 * j + c] = T(v); }
  FASTLIFT_PROC_HD void put_gq(int64_t j, int c, C v) const { GQ[3 * j + c] = T(v); }
};

template <typename V>
struct PoseStats {
  V mu_p[3], mu_q[3];  // centroids
  V o_p[3], o_q[3];    // first joints
  V d_p[3], d_q[3];    // centroid - first joint
  V m[9], var_p, var_q, sum_w, inv_w;
};

// Weighted centroids, M = sum a_j qc_j pc_j^T, var_p and var_q of one pose (per lane).
template <typename V, typename X>
FASTLIFT_PROC_HD void pose_stats(const X& x, int64_t J, PoseStats<V>& st) {
  using S = typename LaneTraits<V>::scalar;
  const V zero(S(0)), one(S(1));
  V sw = zero, sp[3] = {zero, zero, zero}, sq[3] = {zero, zero, zero};
  for (int c = 0; c < 3; ++c) {
    st.o_p[c] = x.p(0, c);
    st.o_q[c] = x.q(0, c);
  }
  for (int64_t j = 0; j < J; ++j) {
    const V wj = x.w(j);
    sw = sw + wj;
    for (int c = 0; c < 3; ++c) {
      sp[c] = sp[c] + wj * (x.p(j, c) - st.o_p[c]);
      sq[c] = sq[c] + wj * (x.q(j, c) - st.o_q[c]);
    }
  }
  const auto pos = sw > zero;
  st.sum_w = sw;
  st.inv_w = lane_select(pos, one / lane_select(pos, sw, one), zero);
  for (int c = 0; c < 3; ++c) {
    st.d_p[c] = sp[c] * st.inv_w;
    st.d_q[c] = sq[c] * st.inv_w;
    st.mu_p[c] = st.o_p[c] + st.d_p[c];
    st.mu_q[c] = st.o_q[c] + st.d_q[c];
  }
  V m[9], var_p = zero, var_q = zero;
  for (int k = 0; k < 9; ++k) m[k] = zero;
  for (int64_t j = 0; j < J; ++j) {
    const V aj = x.w(j) * st.inv_w;
    V pc[3], qc[3], ap[3];
    for (int c = 0; c < 3; ++c) {
      pc[c] = (x.p(j, c) - st.o_p[c]) - st.d_p[c];
      qc[c] = (x.q(j, c) - st.o_q[c]) - st.d_q[c];
      ap[c] = aj * pc[c];
    }
    var_p = var_p + ap[0] * pc[0] + ap[1] * pc[1] + ap[2] * pc[2];
    var_q = var_q + aj * (qc[0] * qc[0] + qc[1] * qc[1] + qc[2] * qc[2]);
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 3; ++c) m[3 * r + c] = m[3 * r + c] + qc[r] * ap[c];
  }
  for (int k = 0; k < 9; ++k) st.m[k] = m[k];
  st.var_p = var_p;
  st.var_q = var_q;
}

// Degenerate sets (see the top of this file): M := 0, and var_p := 0 for a collapsed prediction
// (so that s = 0). tol2 = (DegenerateTol<storage dtype>::rel)^2.
template <typename V>
FASTLIFT_PROC_HD void zero_degenerate(PoseStats<V>& st, typename LaneTraits<V>::scalar tol2) {
  using S = typename LaneTraits<V>::scalar;
  const V zero(S(0)), t(tol2);
  const V mp2 = st.mu_p[0] * st.mu_p[0] + st.mu_p[1] * st.mu_p[1] + st.mu_p[2] * st.mu_p[2];
  const V mq2 = st.mu_q[0] * st.mu_q[0] + st.mu_q[1] * st.mu_q[1] + st.mu_q[2] * st.mu_q[2];
  const auto ok_p = st.var_p > t * (st.var_p + mp2);
  const auto ok_q = st.var_q > t * (st.var_q + mq2);
  const auto ok = ok_p && ok_q;
  for (int k = 0; k < 9; ++k) st.m[k] = lane_select(ok, st.m[k], zero);
  st.var_p = lane_select(ok_p, st.var_p, zero);
}

// Status bits of invalid input (reported by the CPU kernel): non-finite pred or target values,
// negative or non-finite weights.
enum : int { kBadPred = 1, kBadTarget = 2, kBadWeights = 4 };

template <typename C>
FASTLIFT_PROC_HD int stats_status(const C mu_p[3], C var_p, const C mu_q[3], C var_q, C sum_w) {
  int status = 0;
  if (!isfinite(mu_p[0] + mu_p[1] + mu_p[2] + var_p)) status |= kBadPred;
  if (!isfinite(mu_q[0] + mu_q[1] + mu_q[2] + var_q)) status |= kBadTarget;
  if (!isfinite(sum_w)) status |= kBadWeights;
  return status;
}

// aligned_j = mu_q + s r (p_j - mu_p) through x.put_aligned, and t = mu_q - s r mu_p.
template <typename V, typename X>
FASTLIFT_PROC_HD void pose_apply(const X& x, int64_t J, const PoseStats<V>& st, const V r[9], const V& s,
                                 V t[3]) {
  V sr[9];
  for (int k = 0; k < 9; ++k) sr[k] = s * r[k];
  for (int i = 0; i < 3; ++i)
    t[i] = st.mu_q[i] - (sr[3 * i] * st.mu_p[0] + sr[3 * i + 1] * st.mu_p[1] + sr[3 * i + 2] * st.mu_p[2]);
  for (int64_t j = 0; j < J; ++j) {
    V pc[3];
    for (int c = 0; c < 3; ++c) pc[c] = (x.p(j, c) - st.o_p[c]) - st.d_p[c];
    for (int i = 0; i < 3; ++i)
      x.put_aligned(j, i, st.mu_q[i] + sr[3 * i] * pc[0] + sr[3 * i + 1] * pc[1] + sr[3 * i + 2] * pc[2]);
  }
}

// ----------------------------------------------------------------------------- backward
// Per-pose sums of the backward: centroids (as in the forward), sum_j gy_j and G = sum_j gy_j pc_j^T.
template <typename V>
struct PoseGradStats {
  V mu_p[3], o_p[3], o_q[3], d_p[3], d_q[3], inv_w, sum_gy[3], g[9];
};

template <typename V, typename X>
FASTLIFT_PROC_HD void pose_grad_stats(const X& x, int64_t J, PoseGradStats<V>& st) {
  using S = typename LaneTraits<V>::scalar;
  const V zero(S(0)), one(S(1));
  V sw = zero, sp[3] = {zero, zero, zero}, sq[3] = {zero, zero, zero};
  for (int c = 0; c < 3; ++c) {
    st.o_p[c] = x.p(0, c);
    st.o_q[c] = x.q(0, c);
  }
  for (int64_t j = 0; j < J; ++j) {
    const V wj = x.w(j);
    sw = sw + wj;
    for (int c = 0; c < 3; ++c) {
      sp[c] = sp[c] + wj * (x.p(j, c) - st.o_p[c]);
      sq[c] = sq[c] + wj * (x.q(j, c) - st.o_q[c]);
    }
  }
  const auto pos = sw > zero;
  st.inv_w = lane_select(pos, one / lane_select(pos, sw, one), zero);
  for (int c = 0; c < 3; ++c) {
    st.d_p[c] = sp[c] * st.inv_w;
    st.d_q[c] = sq[c] * st.inv_w;
    st.mu_p[c] = st.o_p[c] + st.d_p[c];
  }
  V sg[3] = {zero, zero, zero}, g[9];
  for (int k = 0; k < 9; ++k) g[k] = zero;
  for (int64_t j = 0; j < J; ++j) {
    V pc[3];
    for (int c = 0; c < 3; ++c) pc[c] = (x.p(j, c) - st.o_p[c]) - st.d_p[c];
    for (int r = 0; r < 3; ++r) {
      const V gr = x.gy(j, r);
      sg[r] = sg[r] + gr;
      for (int c = 0; c < 3; ++c) g[3 * r + c] = g[3 * r + c] + gr * pc[c];
    }
  }
  for (int c = 0; c < 3; ++c) st.sum_gy[c] = sg[c];
  for (int k = 0; k < 9; ++k) st.g[k] = g[k];
}

// The 3x3 part of the backward. Inputs: G = sum_j gy_j pc_j^T, the incoming gradients of R (gr),
// s (gs) and t (gt), mu_p, and the forward's r, s, v, sig_t. Outputs gm = dL/dM, and gvar = dL/dvar_p.
//
// R depends on M through the SVD: with US = R V (= U D), A = US^T dM V, the rotation's tangent is
// dR = US Z V^T, Z_kl = (A_kl - A_lk) / (sig_k + sig_l). Its adjoint is
// gM = US (F o (X - X^T)) V^T, X = US^T gR V, F_kl = 1 / (sig_k + sig_l), the sums clamped below at
// grad_eps * sig_1 (they vanish only when the rotation is not unique: repeated singular values
// are harmless here). The scale s = tr(R^T M) / var_p has dtau/dM = R (R is optimal).
template <typename V>
FASTLIFT_PROC_HD void similarity_backward(const V g[9], const V gr[9], const V& gs, const V gt[3],
                                          const V mu_p[3], const V r[9], const V& s, const V v[9],
                                          const V sig_t[3], bool with_scale, V gm[9], V& gvar) {
  using S = typename LaneTraits<V>::scalar;
  const V zero(S(0)), one(S(1));
  // aligned = s R pc + mu_q and t = mu_q - s R mu_p: the gradient of the product sR.
  V gsr[9];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) gsr[3 * i + j] = g[3 * i + j] - gt[i] * mu_p[j];
  V grt[9];
  V gs_tot = gs;
  for (int k = 0; k < 9; ++k) {
    grt[k] = gr[k] + s * gsr[k];
    gs_tot = gs_tot + gsr[k] * r[k];
  }
  const V tau = sig_t[0] + sig_t[1] + sig_t[2];
  const auto live = sig_t[0] > zero;  // M was zero (degenerate): no gradient through M
  V gtau = zero;
  gvar = zero;
  if (with_scale) {
    const auto tpos = tau > zero;
    const V k = lane_select(tpos, s / lane_select(tpos, tau, one), zero);  // 1 / var_p
    gtau = lane_select(live, gs_tot * k, zero);
    gvar = zero - gtau * s;
  }
  // US = R V
  V us[9];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      us[3 * i + j] = r[3 * i] * v[j] + r[3 * i + 1] * v[3 + j] + r[3 * i + 2] * v[6 + j];
  // X = US^T grt V
  V tmp[9], x[9];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      tmp[3 * i + j] = us[i] * grt[j] + us[3 + i] * grt[3 + j] + us[6 + i] * grt[6 + j];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      x[3 * i + j] = tmp[3 * i] * v[j] + tmp[3 * i + 1] * v[3 + j] + tmp[3 * i + 2] * v[6 + j];
  const V floor_ = V(SvdConsts<S>::grad_eps) * sig_t[0];
  V f[3];  // f[0]: (0,1), f[1]: (0,2), f[2]: (1,2)
  const V sums[3] = {sig_t[0] + sig_t[1], sig_t[0] + sig_t[2], sig_t[1] + sig_t[2]};
  for (int k = 0; k < 3; ++k) {
    const V den = lane_select(sums[k] > floor_, sums[k], floor_);
    f[k] = lane_select(live, one / lane_select(live, den, one), zero);
  }
  V kk[9];
  kk[0] = zero;
  kk[4] = zero;
  kk[8] = zero;
  kk[1] = f[0] * (x[1] - x[3]);
  kk[3] = zero - kk[1];
  kk[2] = f[1] * (x[2] - x[6]);
  kk[6] = zero - kk[2];
  kk[5] = f[2] * (x[5] - x[7]);
  kk[7] = zero - kk[5];
  // gm = gtau R + US K V^T
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      tmp[3 * i + j] = us[3 * i] * kk[j] + us[3 * i + 1] * kk[3 + j] + us[3 * i + 2] * kk[6 + j];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      gm[3 * i + j] = gtau * r[3 * i + j] + tmp[3 * i] * v[3 * j] + tmp[3 * i + 1] * v[3 * j + 1] +
                      tmp[3 * i + 2] * v[3 * j + 2];
}

// Per-joint gradients, given the pose's sums st and the 3x3 results:
//   gp_j = s R^T (gy_j - a_j e) + a_j (2 gvar pc_j + gm^T qc_j),  gq_j = a_j (gm pc_j + e),
// with e = sum_j gy_j + gt (the gradient of mu_q) and a_j = w_j / sum(w).
template <typename V, typename X>
FASTLIFT_PROC_HD void pose_grad_apply(const X& x, int64_t J, const PoseGradStats<V>& st, const V r[9],
                                      const V& s, const V gt[3], const V gm[9], const V& gvar) {
  using S = typename LaneTraits<V>::scalar;
  V e[3], h[3], srt[9];
  for (int i = 0; i < 3; ++i) e[i] = st.sum_gy[i] + gt[i];
  for (int i = 0; i < 3; ++i) h[i] = s * (r[i] * e[0] + r[3 + i] * e[1] + r[6 + i] * e[2]);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) srt[3 * i + j] = s * r[3 * j + i];
  const V gv2 = V(S(2)) * gvar;
  for (int64_t j = 0; j < J; ++j) {
    const V aj = x.w(j) * st.inv_w;
    V pc[3], qc[3], g[3];
    for (int c = 0; c < 3; ++c) {
      pc[c] = (x.p(j, c) - st.o_p[c]) - st.d_p[c];
      qc[c] = (x.q(j, c) - st.o_q[c]) - st.d_q[c];
      g[c] = x.gy(j, c);
    }
    for (int i = 0; i < 3; ++i) {
      x.put_gp(j, i, srt[3 * i] * g[0] + srt[3 * i + 1] * g[1] + srt[3 * i + 2] * g[2] +
                         aj * (gv2 * pc[i] + gm[i] * qc[0] + gm[3 + i] * qc[1] + gm[6 + i] * qc[2] - h[i]));
      x.put_gq(j, i, aj * (gm[3 * i] * pc[0] + gm[3 * i + 1] * pc[1] + gm[3 * i + 2] * pc[2] + e[i]));
    }
  }
}

}  // namespace procrustes
}  // namespace fastlift
