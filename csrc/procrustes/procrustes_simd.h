// The CPU kernel's lane type: L poses side by side in one SIMD pack (GCC/Clang vector extensions),
// with the lane primitives procrustes_math.h is written against. Host compilers only.
#pragma once
#include <math.h>
#include <string.h>

#include <utility>

#include "procrustes/procrustes_math.h"

namespace fastlift {
namespace procrustes {

#if defined(__GNUC__)

template <typename T>
struct MaskInt;
template <>
struct MaskInt<float> {
  using type = int32_t;
};
template <>
struct MaskInt<double> {
  using type = int64_t;
};

template <typename T, int L>
struct PackMask {
  typedef typename MaskInt<T>::type mvec __attribute__((vector_size(sizeof(T) * L)));
  mvec m;
};

template <typename T, int L>
struct Pack {
  typedef T vec __attribute__((vector_size(sizeof(T) * L)));
  vec v;
  Pack() = default;
  FASTLIFT_PROC_HD Pack(T x) : v(vec{} + x) {}  // broadcast
  FASTLIFT_PROC_HD static Pack of(vec x) {
    Pack p;
    p.v = x;
    return p;
  }
  FASTLIFT_PROC_HD static Pack load(const T* src) {
    Pack p;
    memcpy(&p.v, src, sizeof(vec));
    return p;
  }
  FASTLIFT_PROC_HD void store(T* dst) const { memcpy(dst, &v, sizeof(vec)); }
};

#define FASTLIFT_PACK_BINOP(op)                                                          \
  template <typename T, int L>                                                           \
  FASTLIFT_PROC_HD Pack<T, L> operator op(const Pack<T, L>& a, const Pack<T, L>& b) {    \
    return Pack<T, L>::of(a.v op b.v);                                                   \
  }
FASTLIFT_PACK_BINOP(+)
FASTLIFT_PACK_BINOP(-)
FASTLIFT_PACK_BINOP(*)
FASTLIFT_PACK_BINOP(/)
#undef FASTLIFT_PACK_BINOP

#define FASTLIFT_PACK_CMP(op)                                                              \
  template <typename T, int L>                                                             \
  FASTLIFT_PROC_HD PackMask<T, L> operator op(const Pack<T, L>& a, const Pack<T, L>& b) {  \
    PackMask<T, L> r;                                                                      \
    r.m = (a.v op b.v);                                                                    \
    return r;                                                                              \
  }
FASTLIFT_PACK_CMP(<)
FASTLIFT_PACK_CMP(>)
#undef FASTLIFT_PACK_CMP

template <typename T, int L>
FASTLIFT_PROC_HD PackMask<T, L> operator&&(const PackMask<T, L>& a, const PackMask<T, L>& b) {
  PackMask<T, L> r;
  r.m = a.m & b.m;
  return r;
}

template <typename T, int L>
FASTLIFT_PROC_HD Pack<T, L> lane_select(const PackMask<T, L>& c, const Pack<T, L>& a, const Pack<T, L>& b) {
  return Pack<T, L>::of(c.m ? a.v : b.v);
}

template <typename T, int L>
FASTLIFT_PROC_HD Pack<T, L> lane_abs(const Pack<T, L>& a) {
  return Pack<T, L>::of(a.v < 0 ? -a.v : a.v);
}

template <typename T, int L>
FASTLIFT_PROC_HD Pack<T, L> lane_sqrt(const Pack<T, L>& a) {
  Pack<T, L> r;
  for (int i = 0; i < L; ++i) r.v[i] = __builtin_sqrt(a.v[i]);  // vectorised (-fno-math-errno)
  return r;
}

template <int L>
FASTLIFT_PROC_HD Pack<float, L> lane_sqrt(const Pack<float, L>& a) {
  Pack<float, L> r;
  for (int i = 0; i < L; ++i) r.v[i] = __builtin_sqrtf(a.v[i]);
  return r;
}

template <typename T, int L>
FASTLIFT_PROC_HD Pack<T, L> lane_rsqrt(const Pack<T, L>& a) {
  return Pack<T, L>(T(1)) / lane_sqrt(a);
}

template <typename T, int L>
struct LaneTraits<Pack<T, L>> {
  using scalar = T;
};


// In-register transpose of an L x L tile held as L packs (rows[i] = row i): log2(L) stages, each
// swapping the off-diagonal blocks of size D between rows i and i + D (two 2-input shuffles per
// pair; vpermt2ps/pd on AVX-512). Far cheaper than moving the L * L scalars one by one.
// Rows x (= row i) and y (= row i + D) exchange their off-diagonal blocks of size D.
template <typename T, int L, int D, size_t... K>
FASTLIFT_PROC_HD void transpose_pair(Pack<T, L>& x, Pack<T, L>& y, std::index_sequence<K...>) {
  const auto a = x.v, b = y.v;
#if defined(__clang__)
  x.v = __builtin_shufflevector(a, b, (((K & D) == 0) ? int(K) : int(L + K - D))...);
  y.v = __builtin_shufflevector(a, b, (((K & D) == 0) ? int(K + D) : int(L + K))...);
#else
  using M = typename PackMask<T, L>::mvec;
  using I = typename MaskInt<T>::type;
  x.v = __builtin_shuffle(a, b, M{(((K & D) == 0) ? I(K) : I(L + K - D))...});
  y.v = __builtin_shuffle(a, b, M{(((K & D) == 0) ? I(K + D) : I(L + K))...});
#endif
}

template <typename T, int L, int D>
FASTLIFT_PROC_HD void transpose_stage(Pack<T, L> rows[L]) {
  for (int i = 0; i < L; ++i) {
    if (i & D) continue;
    transpose_pair<T, L, D>(rows[i], rows[i + D], std::make_index_sequence<L>());
  }
}

template <typename T, int L, int D>
FASTLIFT_PROC_HD void transpose_stages(Pack<T, L> rows[L]) {
  transpose_stage<T, L, D>(rows);
  if constexpr (D > 1) transpose_stages<T, L, D / 2>(rows);
}

template <typename T, int L>
FASTLIFT_PROC_HD void transpose_tile(Pack<T, L> rows[L]) {
  static_assert(L >= 2 && (L & (L - 1)) == 0, "tile size must be a power of two");
  transpose_stages<T, L, L / 2>(rows);
}

#endif  // __GNUC__

}  // namespace procrustes
}  // namespace fastlift
