// Host-only SIMD element type of the CPU kernels: vf = 8 float lanes (GCC/Clang vector extension;
// one AVX2 register, two SSE registers in the baseline build). The per-pose math of
// rotate_project_math.h is written once for an element type E (float and double on either device,
// vf on the host): the CPU kernels run it on vf, i.e. on 8 poses at once, one pose per lane.
// Helpers here are the vf overloads of the branch-free primitives that math uses.
#pragma once
#if !defined(__CUDACC__)
#include <math.h>
#include <stdint.h>
#include <string.h>

// vf values cross only always_inline functions; the ABI note about AVX vectors does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fastlift {

constexpr int kLanes = 8;
typedef float vf __attribute__((vector_size(4 * kLanes)));
typedef int32_t vi __attribute__((vector_size(4 * kLanes)));

#define FASTLIFT_SIMD inline __attribute__((always_inline))

FASTLIFT_SIMD vf vf_splat(float a) { return vf{} + a; }
FASTLIFT_SIMD vf fl_select(vi mask, vf a, vf b) { return mask ? a : b; }
FASTLIFT_SIMD vf fl_max(vf a, vf b) { return a > b ? a : b; }
FASTLIFT_SIMD vf fl_abs(vf a) {
  vi i;
  memcpy(&i, &a, sizeof(i));
  i &= 0x7fffffff;
  memcpy(&a, &i, sizeof(a));
  return a;
}
FASTLIFT_SIMD vf fl_sqrt(vf a) {
  vf r;
  for (int l = 0; l < kLanes; ++l) r[l] = sqrtf(a[l]);  // sqrtps (-fno-math-errno)
  return r;
}

// exp(x) for x <= 0 (below -87: exp(-87)), Cephes expf (about 1 ulp); same as the float overload.
FASTLIFT_SIMD vf fl_exp_nonpos(vf x) {
  x = x < -87.0f ? vf_splat(-87.0f) : x;
  const vf sh = x * 1.44269504088896341f + 12582912.0f;
  const vf fn = sh - 12582912.0f;  // round(x / ln 2)
  vf r = x - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  vf p = vf_splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  vi n;
  memcpy(&n, &sh, sizeof(n));
  n = (n - 0x4B400000 + 127) << 23;  // the integer round(x / ln 2), moved into an exponent
  vf scale;
  memcpy(&scale, &n, sizeof(scale));
  return p * scale;
}

// log1p(e) for e in [0, 1]. When every lane has e <= 1/50 (the common case: depth more than 4 units
// above the floor), the series e - e^2/2 + e^3/3 - e^4/4 (error below 7e-10) replaces the division
// and the longer series.
FASTLIFT_SIMD vf fl_log1p_unit(vf e) {
  const vi small = e <= 0.02f;
  bool all_small = true;
  for (int l = 0; l < kLanes; ++l) all_small = all_small && small[l];
  if (all_small) return e * (1.0f - e * (0.5f - e * (1.0f / 3.0f - e * 0.25f)));
  const vf s = e / (2.0f + e), s2 = s * s;
  vf p = vf_splat(1.0f / 15.0f);
  p = p * s2 + 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
}

}  // namespace fastlift
#endif
