// C++ CPU kernels of the fused batched similarity Procrustes alignment (forward and hand-written
// backward).
//
// Poses are processed in blocks of L: the per-joint passes (centroids, cross-covariance, aligned
// output; the backward's sums and per-joint gradients) and the 3x3 part (SVD, rotation, scale; the
// backward's 3x3 adjoint) run on L poses at once, one pose per SIMD lane (procrustes_simd.h), on
// the block's poses transposed to lanes in registers (L x L tile transposes). A block stays in L1
// between the passes, so each pose is read once from memory; the next block is prefetched while
// the 3x3 part runs. The extension is built without -march flags, so the block loop is compiled
// for x86-64-v4 (AVX-512: L = 32 float / 16 double, two registers per value to hide the latency of
// the Jacobi chain), x86-64-v3 (AVX2 + FMA: 16 / 8) and the baseline (SSE2: 4 / 2), and chosen at
// run time (FASTLIFT_CPU_ISA=avx512|avx2|base forces a lower one, for tests).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FASTLIFT_STREAM_STORES 1
#else
#define FASTLIFT_STREAM_STORES 0
#endif

#include "procrustes/procrustes.h"
#include "procrustes/procrustes_math.h"
#include "procrustes/procrustes_simd.h"

// GCC >= 12: target("arch=x86-64-vN") and __builtin_cpu_supports("x86-64-vN").
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && __GNUC__ >= 12
#define FASTLIFT_X86_DISPATCH 1
#define FASTLIFT_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#define FASTLIFT_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#else
#define FASTLIFT_X86_DISPATCH 0
#endif

namespace fastlift {

namespace {
using namespace procrustes;
constexpr const char* kOp = "fastlift procrustes_align";

// Instruction-set level of the block loop: 4 (x86-64-v4), 3 (x86-64-v3) or 1 (baseline), capped
// by FASTLIFT_CPU_ISA.
int cpu_level() {
  static const int hw = [] {
#if FASTLIFT_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return 4;
    if (__builtin_cpu_supports("x86-64-v3")) return 3;
#endif
    return 1;
  }();
  const char* env = std::getenv("FASTLIFT_CPU_ISA");
  if (env == nullptr || *env == 0) return hw;
  if (std::strcmp(env, "base") == 0) return 1;
  if (std::strcmp(env, "avx2") == 0) return std::min(hw, 3);
  return hw;
}

// First pose (per kind: pred, target, weights) with a non-finite or invalid value; N when none.
struct BadInput {
  std::atomic<int64_t> first[3];
  explicit BadInput(int64_t n) {
    for (auto& f : first) f.store(n);
  }
  void record(int status, int64_t n) {
    for (int k = 0; k < 3; ++k) {
      if (!(status & (1 << k))) continue;
      int64_t cur = first[k].load();
      while (n < cur && !first[k].compare_exchange_weak(cur, n)) {
      }
    }
  }
};

// L poses transposed to lanes: element (j, c) of lane l at buf[(3 j + c) L + l].
template <typename C, int L>
struct Lanes {
  using P = Pack<C, L>;
  const C* P_;
  const C* Q_;
  const C* GY_;
  const C* W_;        // per-pose weights, transposed (w_lanes) or shared (J,) vector
  bool w_lanes;
  C* OUT_;
  C* GQ_;
  FASTLIFT_PROC_HD P p(int64_t j, int c) const { return P::load(P_ + (3 * j + c) * L); }
  FASTLIFT_PROC_HD P q(int64_t j, int c) const { return P::load(Q_ + (3 * j + c) * L); }
  FASTLIFT_PROC_HD P gy(int64_t j, int c) const { return GY_ ? P::load(GY_ + (3 * j + c) * L) : P(C(0)); }
  FASTLIFT_PROC_HD P w(int64_t j) const {
    if (!W_) return P(C(1));
    return w_lanes ? P::load(W_ + j * L) : P(W_[j]);
  }
  FASTLIFT_PROC_HD void put_aligned(int64_t j, int c, const P& v) const { v.store(OUT_ + (3 * j + c) * L); }
  FASTLIFT_PROC_HD void put_gp(int64_t j, int c, const P& v) const { v.store(OUT_ + (3 * j + c) * L); }
  FASTLIFT_PROC_HD void put_gq(int64_t j, int c, const P& v) const { v.store(GQ_ + (3 * j + c) * L); }
};

// Copies nb poses of `width` values each (src + n * width) to lanes (dst[k L + l]); lanes nb..L-1
// get zeros (a zero pose is degenerate: R = I, no NaN). Whole L x L tiles go through registers.
template <typename T, typename C, int L>
FASTLIFT_PROC_HD void to_lanes(const T* src, int64_t width, int64_t nb, C* dst) {
  if (src == nullptr) {  // an absent (zero) gradient
    for (int64_t k = 0; k < width * L; ++k) dst[k] = C(0);
    return;
  }
  int64_t k0 = 0;
  if (std::is_same<T, C>::value) {
    using P = Pack<C, L>;
    for (; k0 + L <= width; k0 += L) {
      P rows[L];
      for (int l = 0; l < L; ++l) rows[l] = l < nb ? P::load(reinterpret_cast<const C*>(src) + l * width + k0) : P(C(0));
      transpose_tile(rows);
      for (int k = 0; k < L; ++k) rows[k].store(dst + (k0 + k) * L);
    }
  }
  for (int64_t l = 0; l < nb; ++l) {
    const T* s = src + l * width;
    for (int64_t k = k0; k < width; ++k) dst[k * L + l] = C(s[k]);
  }
  for (int64_t l = nb; l < L; ++l)
    for (int64_t k = k0; k < width; ++k) dst[k * L + l] = C(0);
}

template <typename T, typename C, int L>
FASTLIFT_PROC_HD void from_lanes(const C* src, int64_t width, int64_t nb, T* dst) {
  int64_t k0 = 0;
  if (std::is_same<T, C>::value) {
    using P = Pack<C, L>;
    for (; k0 + L <= width; k0 += L) {
      P rows[L];
      for (int k = 0; k < L; ++k) rows[k] = P::load(src + (k0 + k) * L);
      transpose_tile(rows);
      for (int l = 0; l < nb; ++l) rows[l].store(reinterpret_cast<C*>(dst) + l * width + k0);
    }
  }
  for (int64_t l = 0; l < nb; ++l) {
    T* d = dst + l * width;
    for (int64_t k = k0; k < width; ++k) d[k] = T(src[k * L + l]);
  }
}

// Writes a full block's output (L poses of `width` values, contiguous in dst) with non-temporal
// stores, through `stage`: large outputs are not read back soon, and streaming them skips the
// read-for-ownership of every output line (about a quarter of the memory traffic of the op).
template <typename T, typename C, int L>
FASTLIFT_PROC_HD void from_lanes_stream(const C* src, int64_t width, T* stage, T* dst) {
  from_lanes<T, C, L>(src, width, L, stage);
#if FASTLIFT_STREAM_STORES
  const int64_t n = width * L;
  if (std::is_same<T, float>::value) {
    float* d = reinterpret_cast<float*>(dst);
    const float* s = reinterpret_cast<const float*>(stage);
    for (int64_t k = 0; k + 4 <= n; k += 4) _mm_stream_ps(d + k, _mm_loadu_ps(s + k));
    for (int64_t k = n & ~int64_t(3); k < n; ++k) d[k] = s[k];
  } else {
    double* d = reinterpret_cast<double*>(dst);
    const double* s = reinterpret_cast<const double*>(stage);
    for (int64_t k = 0; k + 2 <= n; k += 2) _mm_stream_pd(d + k, _mm_loadu_pd(s + k));
    for (int64_t k = n & ~int64_t(1); k < n; ++k) d[k] = s[k];
  }
#else
  for (int64_t k = 0; k < width * L; ++k) dst[k] = stage[k];
#endif
}

// Prefetches the poses of a block ahead into L2 while this block computes (the 3x3 part hides the
// memory latency that the bursty block-by-block access pattern otherwise exposes). Into L2, not
// L1: the block's scratch already fills much of L1 (measured: 20 % faster than L1 prefetches).
template <typename T>
FASTLIFT_PROC_HD void prefetch_poses(const T* base, int64_t count) {
  const char* b = reinterpret_cast<const char*>(base);
  for (int64_t off = 0; off < count * int64_t(sizeof(T)); off += 64) __builtin_prefetch(b + off, 0, 2);
}

constexpr int kPrefetchBlocks = 2;  // how many blocks ahead

// Per-thread scratch of a block: the transposed poses.
template <typename C>
struct Scratch {
  std::vector<C> p, q, gy, w, out, gq, stage;
  Scratch(int64_t J, int L, bool backward, bool weights)
      : p(J * 3 * L), q(J * 3 * L), gy(backward ? J * 3 * L : 0), w(weights ? J * L : 0),
        out(J * 3 * L), gq(backward ? J * 3 * L : 0), stage(J * 3 * L) {}
};

template <typename T>
struct FwdArgs {
  const T* p;
  const T* q;
  const T* w;  // nullptr: uniform weights
  int64_t w_stride;  // 0 when one weight vector is shared by all poses
  int64_t N, J;
  bool scale, refl;
  T *aligned, *R, *s, *t;
  T *V, *sig;  // nullptr when the backward's tensors are not requested
  bool stream;  // non-temporal stores for the aligned output (large outputs)
};

template <typename T, typename C, int L>
FASTLIFT_PROC_HD void forward_block(const FwdArgs<T>& a, int64_t n0, int64_t n_end, Scratch<C>& sc,
                                   BadInput* bad) {
  using P = Pack<C, L>;
  const int64_t nb = std::min<int64_t>(L, n_end - n0);
  const int64_t jc = a.J * 3;
  const int64_t ahead = n0 + kPrefetchBlocks * L;
  const int64_t next = std::min<int64_t>(L, a.N - ahead) * jc;
  if (next > 0) {
    prefetch_poses(a.p + ahead * jc, next);
    prefetch_poses(a.q + ahead * jc, next);
  }
  to_lanes<T, C, L>(a.p + n0 * jc, jc, nb, sc.p.data());
  to_lanes<T, C, L>(a.q + n0 * jc, jc, nb, sc.q.data());
  Lanes<C, L> x{sc.p.data(), sc.q.data(), nullptr, nullptr, false, sc.out.data(), nullptr};
  int w_status = 0;
  if (a.w) {
    if (a.w_stride) {
      to_lanes<T, C, L>(a.w + n0 * a.w_stride, a.J, nb, sc.w.data());
      x.W_ = sc.w.data();
      x.w_lanes = true;
    } else {
      x.W_ = sc.w.data();  // shared (J,) vector, converted to C
      for (int64_t j = 0; j < a.J; ++j) sc.w[j] = C(a.w[j]);
    }
    if (!x.w_lanes) {
      for (int64_t j = 0; j < a.J; ++j)
        if (!(sc.w[j] >= C(0))) w_status = kBadWeights;
    }
  }
  PoseStats<P> st;
  pose_stats(x, a.J, st);
  {
    alignas(64) C buf[9][L];
    for (int c = 0; c < 3; ++c) {
      st.mu_p[c].store(buf[c]);
      st.mu_q[c].store(buf[3 + c]);
    }
    st.var_p.store(buf[6]);
    st.var_q.store(buf[7]);
    st.sum_w.store(buf[8]);
    for (int64_t l = 0; l < nb; ++l) {
      const C mp[3] = {buf[0][l], buf[1][l], buf[2][l]}, mq[3] = {buf[3][l], buf[4][l], buf[5][l]};
      int status = stats_status<C>(mp, buf[6][l], mq, buf[7][l], buf[8][l]) | w_status;
      if (x.w_lanes) {
        for (int64_t j = 0; j < a.J; ++j)
          if (!(sc.w[j * L + l] >= C(0))) status |= kBadWeights;
      }
      if (status) bad->record(status, n0 + l);
    }
  }
  zero_degenerate(st, C(DegenerateTol<T>::rel * DegenerateTol<T>::rel));
  P r[9], v[9], sig[3], s, t[3];
  solve_similarity(st.m, st.var_p, a.scale, a.refl, r, s, v, sig);
  pose_apply(x, a.J, st, r, s, t);
  T* out = a.aligned + n0 * jc;
  if (FASTLIFT_STREAM_STORES && a.stream && nb == L && (reinterpret_cast<uintptr_t>(out) & 15) == 0)
    from_lanes_stream<T, C, L>(sc.out.data(), jc, sc.stage.data(), out);
  else
    from_lanes<T, C, L>(sc.out.data(), jc, nb, out);
  alignas(64) C rb[9 * L], tb[3 * L], sb[L];
  for (int k = 0; k < 9; ++k) r[k].store(rb + k * L);
  for (int k = 0; k < 3; ++k) t[k].store(tb + k * L);
  s.store(sb);
  from_lanes<T, C, L>(rb, 9, nb, a.R + n0 * 9);
  from_lanes<T, C, L>(tb, 3, nb, a.t + n0 * 3);
  from_lanes<T, C, L>(sb, 1, nb, a.s + n0);
  if (a.V) {
    alignas(64) C vb[9 * L], gb[3 * L];
    for (int k = 0; k < 9; ++k) v[k].store(vb + k * L);
    for (int k = 0; k < 3; ++k) sig[k].store(gb + k * L);
    from_lanes<T, C, L>(vb, 9, nb, a.V + n0 * 9);
    from_lanes<T, C, L>(gb, 3, nb, a.sig + n0 * 3);
  }
}

template <typename T, int L>
FASTLIFT_PROC_HD void forward_poses(const FwdArgs<T>& a, int64_t n_begin, int64_t n_end, BadInput* bad) {
  Scratch<T> sc(a.J, L, false, a.w != nullptr);
  for (int64_t n0 = n_begin; n0 < n_end; n0 += L) forward_block<T, T, L>(a, n0, n_end, sc, bad);
#if FASTLIFT_STREAM_STORES
  if (a.stream) _mm_sfence();  // the streamed stores are visible before the caller goes on
#endif
}

#if FASTLIFT_X86_DISPATCH
FASTLIFT_TARGET_V4 void forward_v4(const FwdArgs<float>& a, int64_t b, int64_t e, BadInput* bad) {
  forward_poses<float, 16>(a, b, e, bad);
}
FASTLIFT_TARGET_V4 void forward_v4(const FwdArgs<double>& a, int64_t b, int64_t e, BadInput* bad) {
  forward_poses<double, 8>(a, b, e, bad);
}
FASTLIFT_TARGET_V3 void forward_v3(const FwdArgs<float>& a, int64_t b, int64_t e, BadInput* bad) {
  forward_poses<float, 8>(a, b, e, bad);
}
FASTLIFT_TARGET_V3 void forward_v3(const FwdArgs<double>& a, int64_t b, int64_t e, BadInput* bad) {
  forward_poses<double, 4>(a, b, e, bad);
}
#endif
void forward_base(const FwdArgs<float>& a, int64_t b, int64_t e, BadInput* bad) { forward_poses<float, 4>(a, b, e, bad); }
void forward_base(const FwdArgs<double>& a, int64_t b, int64_t e, BadInput* bad) { forward_poses<double, 2>(a, b, e, bad); }

template <typename T>
void forward_dispatch(const FwdArgs<T>& a, int64_t b, int64_t e, BadInput* bad) {
#if FASTLIFT_X86_DISPATCH
  const int level = cpu_level();
  if (level >= 4) return forward_v4(a, b, e, bad);
  if (level >= 3) return forward_v3(a, b, e, bad);
#endif
  forward_base(a, b, e, bad);
}

// Pointer to pose n of an array of `width` values per pose, or nullptr for an absent array.
template <typename T>
FASTLIFT_PROC_HD const T* at_pose(const T* base, int64_t n, int64_t width) {
  return base ? base + n * width : nullptr;
}

template <typename T>
struct BwdArgs {
  const T *gy, *gR, *gs, *gt;  // nullptr: a zero gradient
  const T *p, *q, *w;
  int64_t w_stride;
  int64_t N, J;
  const T *R, *s, *V, *sig;
  bool scale;
  T *gp, *gq;
};

template <typename T, typename C, int L>
FASTLIFT_PROC_HD void backward_block(const BwdArgs<T>& a, int64_t n0, int64_t n_end, Scratch<C>& sc) {
  using P = Pack<C, L>;
  const int64_t nb = std::min<int64_t>(L, n_end - n0);
  const int64_t jc = a.J * 3;
  const int64_t ahead = n0 + kPrefetchBlocks * L;
  const int64_t next = std::min<int64_t>(L, a.N - ahead) * jc;
  if (next > 0) {
    prefetch_poses(a.p + ahead * jc, next);
    prefetch_poses(a.q + ahead * jc, next);
    if (a.gy) prefetch_poses(a.gy + ahead * jc, next);
  }
  to_lanes<T, C, L>(a.p + n0 * jc, jc, nb, sc.p.data());
  to_lanes<T, C, L>(a.q + n0 * jc, jc, nb, sc.q.data());
  if (a.gy) to_lanes<T, C, L>(a.gy + n0 * jc, jc, nb, sc.gy.data());
  Lanes<C, L> x{sc.p.data(), sc.q.data(), a.gy ? sc.gy.data() : nullptr, nullptr, false, sc.out.data(),
                sc.gq.data()};
  if (a.w) {
    if (a.w_stride) {
      to_lanes<T, C, L>(a.w + n0 * a.w_stride, a.J, nb, sc.w.data());
      x.w_lanes = true;
    } else {
      for (int64_t j = 0; j < a.J; ++j) sc.w[j] = C(a.w[j]);
    }
    x.W_ = sc.w.data();
  }
  PoseGradStats<P> st;
  pose_grad_stats(x, a.J, st);
  alignas(64) C gr[9 * L], rr[9 * L], vv[9 * L], gt[3 * L], sg[3 * L], gs[L], ss[L];
  to_lanes<T, C, L>(at_pose(a.gR, n0, 9), 9, nb, gr);
  to_lanes<T, C, L>(a.R + n0 * 9, 9, nb, rr);
  to_lanes<T, C, L>(a.V + n0 * 9, 9, nb, vv);
  to_lanes<T, C, L>(at_pose(a.gt, n0, 3), 3, nb, gt);
  to_lanes<T, C, L>(a.sig + n0 * 3, 3, nb, sg);
  to_lanes<T, C, L>(at_pose(a.gs, n0, 1), 1, nb, gs);
  to_lanes<T, C, L>(a.s + n0, 1, nb, ss);
  P GR[9], R[9], Vm[9], GT[3], SG[3], gm[9], gvar;
  for (int k = 0; k < 9; ++k) {
    GR[k] = P::load(gr + k * L);
    R[k] = P::load(rr + k * L);
    Vm[k] = P::load(vv + k * L);
  }
  for (int k = 0; k < 3; ++k) {
    GT[k] = P::load(gt + k * L);
    SG[k] = P::load(sg + k * L);
  }
  const P S = P::load(ss);
  similarity_backward(st.g, GR, P::load(gs), GT, st.mu_p, R, S, Vm, SG, a.scale, gm, gvar);
  pose_grad_apply(x, a.J, st, R, S, GT, gm, gvar);
  from_lanes<T, C, L>(sc.out.data(), jc, nb, a.gp + n0 * jc);
  from_lanes<T, C, L>(sc.gq.data(), jc, nb, a.gq + n0 * jc);
}

template <typename T, int L>
FASTLIFT_PROC_HD void backward_poses(const BwdArgs<T>& a, int64_t n_begin, int64_t n_end) {
  Scratch<T> sc(a.J, L, true, a.w != nullptr);
  for (int64_t n0 = n_begin; n0 < n_end; n0 += L) backward_block<T, T, L>(a, n0, n_end, sc);
}

#if FASTLIFT_X86_DISPATCH
FASTLIFT_TARGET_V4 void backward_v4(const BwdArgs<float>& a, int64_t b, int64_t e) { backward_poses<float, 16>(a, b, e); }
FASTLIFT_TARGET_V4 void backward_v4(const BwdArgs<double>& a, int64_t b, int64_t e) { backward_poses<double, 8>(a, b, e); }
FASTLIFT_TARGET_V3 void backward_v3(const BwdArgs<float>& a, int64_t b, int64_t e) { backward_poses<float, 8>(a, b, e); }
FASTLIFT_TARGET_V3 void backward_v3(const BwdArgs<double>& a, int64_t b, int64_t e) { backward_poses<double, 4>(a, b, e); }
#endif
void backward_base(const BwdArgs<float>& a, int64_t b, int64_t e) { backward_poses<float, 4>(a, b, e); }
void backward_base(const BwdArgs<double>& a, int64_t b, int64_t e) { backward_poses<double, 2>(a, b, e); }

template <typename T>
void backward_dispatch(const BwdArgs<T>& a, int64_t b, int64_t e) {
#if FASTLIFT_X86_DISPATCH
  const int level = cpu_level();
  if (level >= 4) return backward_v4(a, b, e);
  if (level >= 3) return backward_v3(a, b, e);
#endif
  backward_base(a, b, e);
}

// ----------------------------------------------------------------------------- tensor checks
void check_tensor(const at::Tensor& t, const char* name, at::IntArrayRef shape, at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu(), kOp, ": ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.sizes() == shape, kOp, ": ", name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, kOp, ": ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), kOp, ": ", name, " must be contiguous");
}

void check_poses(const at::Tensor& pred, const at::Tensor& target) {
  TORCH_CHECK(pred.scalar_type() == at::kFloat || pred.scalar_type() == at::kDouble, kOp,
              ": pred must be float32 or float64, got ", pred.scalar_type());
  TORCH_CHECK(pred.dim() == 3 && pred.size(2) == 3, kOp, ": pred must have shape (N, J, 3), got ",
              pred.sizes());
  check_tensor(pred, "pred", pred.sizes(), pred.scalar_type());
  check_tensor(target, "target", pred.sizes(), pred.scalar_type());
}

// Weights pointer and per-pose stride (0 for a shared (J,) vector).
template <typename T>
const T* weights_ptr(const std::optional<at::Tensor>& weights, const at::Tensor& pred, int64_t* stride) {
  *stride = 0;
  if (!weights.has_value() || !weights->defined()) return nullptr;
  const at::Tensor& w = *weights;
  const int64_t N = pred.size(0), J = pred.size(1);
  if (w.dim() == 1) {
    check_tensor(w, "weights", {J}, pred.scalar_type());
  } else {
    check_tensor(w, "weights", {N, J}, pred.scalar_type());
    *stride = J;
  }
  return w.data_ptr<T>();
}

// Outputs at least this large are written with non-temporal stores (beyond the caches anyway).
constexpr size_t kStreamBytes = size_t(8) << 20;

bool present(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// Poses [0, N) in chunks handed out dynamically to at::parallel_for's threads: on a shared machine
// a thread that is descheduled does not hold up the others (a static split would wait for it).
// Chunks are multiples of 32 poses (of every lane count, so blocks stay full) of ~16K values.
template <typename F>
void for_each_chunk(int64_t N, int64_t J, const F& fn) {
  constexpr int64_t kAlign = 32;
  const int64_t chunk = kAlign * std::max<int64_t>(1, 16384 / (std::max<int64_t>(1, J) * 3 * kAlign));
  const int64_t chunks = (N + chunk - 1) / chunk;
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), chunks);
  if (workers <= 1) {
    if (N > 0) fn(0, N);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1))
      fn(c * chunk, std::min(N, (c + 1) * chunk));
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
procrustes_align_forward_cpu(const at::Tensor& pred, const at::Tensor& target,
                             const std::optional<at::Tensor>& weights, bool scale,
                             bool allow_reflection, bool need_aux) {
  check_poses(pred, target);
  const int64_t N = pred.size(0), J = pred.size(1);
  at::Tensor aligned = at::empty_like(pred);
  at::Tensor R = at::empty({N, 3, 3}, pred.options());
  at::Tensor s = at::empty({N}, pred.options());
  at::Tensor t = at::empty({N, 3}, pred.options());
  at::Tensor V = at::empty({need_aux ? N : 0, 3, 3}, pred.options());
  at::Tensor sig = at::empty({need_aux ? N : 0, 3}, pred.options());
  BadInput bad(N);
  AT_DISPATCH_FLOATING_TYPES(pred.scalar_type(), "procrustes_align_forward_cpu", [&] {
    FwdArgs<scalar_t> a;
    a.p = pred.data_ptr<scalar_t>();
    a.q = target.data_ptr<scalar_t>();
    a.w = weights_ptr<scalar_t>(weights, pred, &a.w_stride);
    a.N = N;
    a.J = J;
    a.scale = scale;
    a.refl = allow_reflection;
    a.aligned = aligned.data_ptr<scalar_t>();
    a.R = R.data_ptr<scalar_t>();
    a.s = s.data_ptr<scalar_t>();
    a.t = t.data_ptr<scalar_t>();
    a.V = need_aux ? V.data_ptr<scalar_t>() : nullptr;
    a.sig = need_aux ? sig.data_ptr<scalar_t>() : nullptr;
    a.stream = aligned.nbytes() >= kStreamBytes;
    for_each_chunk(N, J, [&](int64_t n0, int64_t n1) { forward_dispatch(a, n0, n1, &bad); });
  });
  static const char* const names[3] = {"pred", "target", "weights"};
  for (int k = 0; k < 3; ++k) {
    const int64_t n = bad.first[k].load();
    TORCH_CHECK(n >= N, "fastlift.ops.procrustes_align: ", names[k],
                k == 2 ? " must be finite and non-negative" : " contains NaN or infinite values",
                " (first at pose ", n, ")");
  }
  return {aligned, R, s, t, V, sig};
}

std::tuple<at::Tensor, at::Tensor> procrustes_align_backward_cpu(
    const std::optional<at::Tensor>& grad_aligned, const std::optional<at::Tensor>& grad_R,
    const std::optional<at::Tensor>& grad_s, const std::optional<at::Tensor>& grad_t,
    const at::Tensor& pred, const at::Tensor& target,
    const std::optional<at::Tensor>& weights, const at::Tensor& R, const at::Tensor& s,
    const at::Tensor& V, const at::Tensor& sig, bool scale) {
  check_poses(pred, target);
  const int64_t N = pred.size(0), J = pred.size(1);
  const auto dt = pred.scalar_type();
  const bool has_gy = present(grad_aligned), has_gR = present(grad_R), has_gs = present(grad_s),
             has_gt = present(grad_t);
  if (has_gy) check_tensor(*grad_aligned, "grad_aligned", pred.sizes(), dt);
  if (has_gR) check_tensor(*grad_R, "grad_R", {N, 3, 3}, dt);
  if (has_gs) check_tensor(*grad_s, "grad_s", {N}, dt);
  if (has_gt) check_tensor(*grad_t, "grad_t", {N, 3}, dt);
  check_tensor(R, "R", {N, 3, 3}, dt);
  check_tensor(s, "s", {N}, dt);
  TORCH_CHECK(V.size(0) == N, kOp,
              " backward: the forward was run with need_aux=False, so it saved no SVD factors");
  check_tensor(V, "V", {N, 3, 3}, dt);
  check_tensor(sig, "sig", {N, 3}, dt);
  at::Tensor gp = at::empty_like(pred);
  at::Tensor gq = at::empty_like(target);
  AT_DISPATCH_FLOATING_TYPES(dt, "procrustes_align_backward_cpu", [&] {
    BwdArgs<scalar_t> a;
    a.gy = has_gy ? grad_aligned->data_ptr<scalar_t>() : nullptr;
    a.gR = has_gR ? grad_R->data_ptr<scalar_t>() : nullptr;
    a.gs = has_gs ? grad_s->data_ptr<scalar_t>() : nullptr;
    a.gt = has_gt ? grad_t->data_ptr<scalar_t>() : nullptr;
    a.p = pred.data_ptr<scalar_t>();
    a.q = target.data_ptr<scalar_t>();
    a.w = weights_ptr<scalar_t>(weights, pred, &a.w_stride);
    a.N = N;
    a.J = J;
    a.R = R.data_ptr<scalar_t>();
    a.s = s.data_ptr<scalar_t>();
    a.V = V.data_ptr<scalar_t>();
    a.sig = sig.data_ptr<scalar_t>();
    a.scale = scale;
    a.gp = gp.data_ptr<scalar_t>();
    a.gq = gq.data_ptr<scalar_t>();
    for_each_chunk(N, J, [&](int64_t n0, int64_t n1) { backward_dispatch(a, n0, n1); });
  });
  return {gp, gq};
}

}  // namespace fastlift

TORCH_LIBRARY_FRAGMENT(fastlift_C, m) {
  m.def(
      "procrustes_align_forward(Tensor pred, Tensor target, Tensor? weights, bool scale, "
      "bool allow_reflection, bool need_aux) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "procrustes_align_backward(Tensor? grad_aligned, Tensor? grad_R, Tensor? grad_s, Tensor? grad_t, "
      "Tensor pred, Tensor target, Tensor? weights, Tensor R, Tensor s, Tensor V, Tensor sig, "
      "bool scale) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastlift_C, CPU, m) {
  m.impl("procrustes_align_forward", &fastlift::procrustes_align_forward_cpu);
  m.impl("procrustes_align_backward", &fastlift::procrustes_align_backward_cpu);
}
