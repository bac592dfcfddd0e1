// Host-only float drivers of the fused rotate-and-project: kLanes poses per step, one per SIMD lane.
// No torch headers (the CPU kernels and standalone benchmarks include it).
#pragma once
#include <stdint.h>

#include <initializer_list>
#include <type_traits>
#include <vector>
#if defined(__x86_64__) || defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "rotate_project/rotate_project_math.h"
#include "rotate_project/simd.h"

namespace fastlift {
namespace lanes {
// The float kernels run kLanes poses at once, one per SIMD lane (simd.h): a block's poses are
// transposed into lane-major scratch (structure of arrays, in L1), the shared per-pose math runs on
// vf, the results are transposed back. Remaining poses (N % kLanes) and float64 run it on scalars.
// Compiled for AVX-512, AVX2+FMA and the baseline ISA; the loader picks one (GCC target_clones).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FASTLIFT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTLIFT_CLONES
#endif

#if defined(__clang__)
#define FASTLIFT_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define FASTLIFT_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, vi{__VA_ARGS__})
#endif

// In-register 8 x 8 transpose: r[l][e] -> r[e][l] (unpack, shuffle, 128-bit permute: 24 shuffles).
FASTLIFT_SIMD void transpose8(vf* r) {
  const vf t0 = FASTLIFT_SHUFFLE(r[0], r[1], 0, 8, 1, 9, 4, 12, 5, 13);
  const vf t1 = FASTLIFT_SHUFFLE(r[0], r[1], 2, 10, 3, 11, 6, 14, 7, 15);
  const vf t2 = FASTLIFT_SHUFFLE(r[2], r[3], 0, 8, 1, 9, 4, 12, 5, 13);
  const vf t3 = FASTLIFT_SHUFFLE(r[2], r[3], 2, 10, 3, 11, 6, 14, 7, 15);
  const vf t4 = FASTLIFT_SHUFFLE(r[4], r[5], 0, 8, 1, 9, 4, 12, 5, 13);
  const vf t5 = FASTLIFT_SHUFFLE(r[4], r[5], 2, 10, 3, 11, 6, 14, 7, 15);
  const vf t6 = FASTLIFT_SHUFFLE(r[6], r[7], 0, 8, 1, 9, 4, 12, 5, 13);
  const vf t7 = FASTLIFT_SHUFFLE(r[6], r[7], 2, 10, 3, 11, 6, 14, 7, 15);
  const vf u0 = FASTLIFT_SHUFFLE(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);
  const vf u1 = FASTLIFT_SHUFFLE(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
  const vf u2 = FASTLIFT_SHUFFLE(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);
  const vf u3 = FASTLIFT_SHUFFLE(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
  const vf u4 = FASTLIFT_SHUFFLE(t4, t6, 0, 1, 8, 9, 4, 5, 12, 13);
  const vf u5 = FASTLIFT_SHUFFLE(t4, t6, 2, 3, 10, 11, 6, 7, 14, 15);
  const vf u6 = FASTLIFT_SHUFFLE(t5, t7, 0, 1, 8, 9, 4, 5, 12, 13);
  const vf u7 = FASTLIFT_SHUFFLE(t5, t7, 2, 3, 10, 11, 6, 7, 14, 15);
  r[0] = FASTLIFT_SHUFFLE(u0, u4, 0, 1, 2, 3, 8, 9, 10, 11);
  r[1] = FASTLIFT_SHUFFLE(u1, u5, 0, 1, 2, 3, 8, 9, 10, 11);
  r[2] = FASTLIFT_SHUFFLE(u2, u6, 0, 1, 2, 3, 8, 9, 10, 11);
  r[3] = FASTLIFT_SHUFFLE(u3, u7, 0, 1, 2, 3, 8, 9, 10, 11);
  r[4] = FASTLIFT_SHUFFLE(u0, u4, 4, 5, 6, 7, 12, 13, 14, 15);
  r[5] = FASTLIFT_SHUFFLE(u1, u5, 4, 5, 6, 7, 12, 13, 14, 15);
  r[6] = FASTLIFT_SHUFFLE(u2, u6, 4, 5, 6, 7, 12, 13, 14, 15);
  r[7] = FASTLIFT_SHUFFLE(u3, u7, 4, 5, 6, 7, 12, 13, 14, 15);
}

// dst[e][l] = src[l * stride + e] for e < len, l < kLanes: 8 x 8 tiles in registers, the last
// len % 8 elements one by one (never reading past a row). Rows that are contiguous (stride == len,
// len <= kStageMax) are first copied to an L1 stage with one sequential memcpy: the tile loads then
// hit L1 instead of stalling on memory one tile at a time (about 20% faster on the fused kernels).
constexpr int64_t kStageMax = 3 * 64;
FASTLIFT_SIMD void to_lanes(const float* __restrict__ src_mem, int64_t stride, int64_t len, vf* __restrict__ dst) {
  alignas(64) float stage[kLanes * kStageMax];
  const float* src = src_mem;
  if (stride == len && len <= kStageMax) {
    memcpy(stage, src_mem, sizeof(float) * kLanes * len);
    src = stage;
  }
  int64_t e = 0;
  for (; e + kLanes <= len; e += kLanes) {
    vf r[kLanes];
    for (int l = 0; l < kLanes; ++l) memcpy(&r[l], src + l * stride + e, sizeof(vf));
    transpose8(r);
    for (int l = 0; l < kLanes; ++l) dst[e + l] = r[l];
  }
  for (; e < len; ++e) {
    vf v;
    for (int l = 0; l < kLanes; ++l) v[l] = src[l * stride + e];
    dst[e] = v;
  }
}
// dst[l * stride + e] = src[e][l]: the inverse of to_lanes.
FASTLIFT_SIMD void from_lanes(const vf* __restrict__ src, int64_t len, float* __restrict__ dst, int64_t stride) {
  int64_t e = 0;
  for (; e + kLanes <= len; e += kLanes) {
    vf r[kLanes];
    for (int l = 0; l < kLanes; ++l) r[l] = src[e + l];
    transpose8(r);
    for (int l = 0; l < kLanes; ++l) memcpy(dst + l * stride + e, &r[l], sizeof(vf));
  }
  for (; e < len; ++e) {
    const vf v = src[e];
    for (int l = 0; l < kLanes; ++l) dst[l * stride + e] = v[l];
  }
}

// Outputs larger than this (bytes, per call) are written with non-temporal stores: they bypass
// the caches and skip the read-for-ownership of each destination line, which measured 12% off the
// fused cycle loss's backward at 65536 poses. Smaller outputs (a training batch) stay in cache for
// the op that reads them next.
constexpr int64_t kStreamBytes = int64_t(8) << 20;  // the same threshold as procrustes_cpu.cpp
// True when every non-null destination is 16-byte aligned (each block of kLanes rows of a
// contiguous output then starts 16-byte aligned: kLanes * 4 * len is a multiple of 32) and the
// call writes at least kStreamBytes.
inline bool use_streaming_stores(int64_t out_bytes, std::initializer_list<const void*> dsts) {
#if defined(__x86_64__) || defined(__SSE__)
  if (out_bytes < kStreamBytes) return false;
  for (const void* p : dsts)
    if (p && (reinterpret_cast<uintptr_t>(p) & 15)) return false;
  return true;
#else
  (void)out_bytes;
  (void)dsts;
  return false;
#endif
}
// from_lanes into kLanes contiguous rows (stride == len) with non-temporal stores: transposed into
// an aligned L1 stage, then streamed out. dst must be 16-byte aligned. Call stream_fence() before
// the rows are read by another thread (at the end of each parallel task).
FASTLIFT_SIMD void from_lanes_stream(const vf* __restrict__ src, int64_t len, float* __restrict__ dst) {
#if defined(__x86_64__) || defined(__SSE__)
  alignas(64) float stage[kLanes * kStageMax];
  if (len <= kStageMax) {
    from_lanes(src, len, stage, len);
    for (int64_t i = 0; i < kLanes * len; i += 4) _mm_stream_ps(dst + i, _mm_load_ps(stage + i));
    return;
  }
#endif
  from_lanes(src, len, dst, len);
}
inline void stream_fence() {
#if defined(__x86_64__) || defined(__SSE__)
  _mm_sfence();
#endif
}
// Writes one block's kLanes rows of len floats: streamed or through the caches.
FASTLIFT_SIMD void store_rows(const vf* src, int64_t len, float* dst, bool stream) {
  if (stream)
    from_lanes_stream(src, len, dst);
  else
    from_lanes(src, len, dst, len);
}

// Lane-major scratch of n vf values, 32-byte aligned (allocated once per task, reused per block).
struct LaneBuffer {
  explicit LaneBuffer(int64_t n) : raw(static_cast<size_t>(n * kLanes + kLanes)) {}
  vf* data() {
    const uintptr_t p = reinterpret_cast<uintptr_t>(raw.data());
    return reinterpret_cast<vf*>((p + sizeof(vf) - 1) / sizeof(vf) * sizeof(vf));
  }
  std::vector<float> raw;
};

struct RPArgs {
  int64_t J, root, head;
  bool transpose, renorm;
  float c, m, eps;
};

template <typename JT>
FASTLIFT_SIMD void forward_lanes_impl(const float* Y, const float* R, float* x2d, float* yrot, int64_t begin,
                                      int64_t end, JT J, const RPArgs& a, bool stream) {
  LaneBuffer buf(8 * J + 9);
  vf *YS = buf.data(), *XS = YS + 3 * J, *QS = XS + 2 * J, *RS = QS + 3 * J;
  int64_t n = begin;
  for (; n + kLanes <= end; n += kLanes) {
    to_lanes(Y + n * 3 * J, 3 * J, 3 * J, YS);
    to_lanes(R + n * 9, 9, 9, RS);
    rotate_project_pose_forward<vf, float>(YS, RS, XS, QS, J, a.root, a.transpose, a.c, a.m, a.renorm,
                                           a.head, a.eps);
    store_rows(XS, 2 * J, x2d + n * 2 * J, stream);
    store_rows(QS, 3 * J, yrot + n * 3 * J, stream);
  }
  if (stream) stream_fence();
  for (; n < end; ++n)
    rotate_project_pose_forward<float, float>(Y + n * 3 * J, R + n * 9, x2d + n * 2 * J, yrot + n * 3 * J, J,
                                              a.root, a.transpose, a.c, a.m, a.renorm, a.head, a.eps);
}

template <typename JT>
FASTLIFT_SIMD void backward_lanes_impl(const float* g2, const float* g3, const float* Y, const float* R,
                                       float* gY, float* gR, int64_t begin, int64_t end, JT J,
                                       const RPArgs& a, bool stream) {
  LaneBuffer buf(11 * J + 18);
  vf *G2 = buf.data(), *G3 = G2 + 2 * J, *YS = G3 + 3 * J, *GY = YS + 3 * J, *RS = GY + 3 * J, *GR = RS + 9;
  int64_t n = begin;
  for (; n + kLanes <= end; n += kLanes) {
    if (g2) to_lanes(g2 + n * 2 * J, 2 * J, 2 * J, G2);
    if (g3) to_lanes(g3 + n * 3 * J, 3 * J, 3 * J, G3);
    to_lanes(Y + n * 3 * J, 3 * J, 3 * J, YS);
    to_lanes(R + n * 9, 9, 9, RS);
    rotate_project_pose_backward<vf, float>(g2 ? G2 : nullptr, g3 ? G3 : nullptr, YS, RS, GY, GR, J, a.root,
                                            a.transpose, a.c, a.m, a.renorm, a.head, a.eps);
    store_rows(GY, 3 * J, gY + n * 3 * J, stream);
    store_rows(GR, 9, gR + n * 9, stream);
  }
  if (stream) stream_fence();
  for (; n < end; ++n)
    rotate_project_pose_backward<float, float>(g2 ? g2 + n * 2 * J : nullptr, g3 ? g3 + n * 3 * J : nullptr,
                                               Y + n * 3 * J, R + n * 9, gY + n * 3 * J, gR + n * 9, J,
                                               a.root, a.transpose, a.c, a.m, a.renorm, a.head, a.eps);
}

// One instantiation per ISA clone; J = 17 (h36m17) is a compile-time constant.
[[maybe_unused]] static FASTLIFT_CLONES void forward_lanes(const float* Y, const float* R, float* x2d, float* yrot, int64_t begin,
                                   int64_t end, const RPArgs& a, bool stream) {
  if (a.J == 17)
    forward_lanes_impl(Y, R, x2d, yrot, begin, end, std::integral_constant<int64_t, 17>(), a, stream);
  else
    forward_lanes_impl(Y, R, x2d, yrot, begin, end, a.J, a, stream);
}
[[maybe_unused]] static FASTLIFT_CLONES void backward_lanes(const float* g2, const float* g3, const float* Y, const float* R, float* gY,
                                    float* gR, int64_t begin, int64_t end, const RPArgs& a, bool stream) {
  if (a.J == 17)
    backward_lanes_impl(g2, g3, Y, R, gY, gR, begin, end, std::integral_constant<int64_t, 17>(), a, stream);
  else
    backward_lanes_impl(g2, g3, Y, R, gY, gR, begin, end, a.J, a, stream);
}

}  // namespace lanes
}  // namespace fastlift
