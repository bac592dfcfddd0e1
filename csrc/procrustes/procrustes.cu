// CUDA kernels of the fused similarity Procrustes alignment: one thread per pose, the pose's math
// (two passes over the joints, the 3x3 SVD in registers, the aligned output; the hand-written
// backward) shared with the CPU kernel through procrustes_math.h.
#include "procrustes/procrustes_launch.h"
#include "procrustes/procrustes_math.h"

namespace fastlift {

namespace {
constexpr int kThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    procrustes_forward_kernel(const T* __restrict__ pred, const T* __restrict__ target,
                              const T* __restrict__ w, int64_t w_stride, T* __restrict__ aligned,
                              T* __restrict__ R, T* __restrict__ s, T* __restrict__ t,
                              T* __restrict__ V, T* __restrict__ sig, int64_t N, int64_t J,
                              bool scale, bool allow_reflection) {
  using namespace procrustes;
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  const int64_t jc = J * 3;
  const PoseRef<T, T> x{pred + n * jc, target + n * jc, w ? w + n * w_stride : nullptr, nullptr,
                        aligned + n * jc, nullptr, nullptr};
  PoseStats<T> st;
  pose_stats(x, J, st);
  zero_degenerate(st, T(DegenerateTol<T>::rel * DegenerateTol<T>::rel));
  T r[9], v[9], sg[3], scale_n, tn[3];
  solve_similarity(st.m, st.var_p, scale, allow_reflection, r, scale_n, v, sg);
  pose_apply(x, J, st, r, scale_n, tn);
  for (int k = 0; k < 9; ++k) R[n * 9 + k] = r[k];
  for (int k = 0; k < 3; ++k) t[n * 3 + k] = tn[k];
  s[n] = scale_n;
  if (V != nullptr) {
    for (int k = 0; k < 9; ++k) V[n * 9 + k] = v[k];
    for (int k = 0; k < 3; ++k) sig[n * 3 + k] = sg[k];
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    procrustes_backward_kernel(const T* __restrict__ grad_aligned, const T* __restrict__ grad_R,
                               const T* __restrict__ grad_s, const T* __restrict__ grad_t,
                               const T* __restrict__ pred, const T* __restrict__ target,
                               const T* __restrict__ w, int64_t w_stride, const T* __restrict__ R,
                               const T* __restrict__ s, const T* __restrict__ V,
                               const T* __restrict__ sig, T* __restrict__ grad_pred,
                               T* __restrict__ grad_target, int64_t N, int64_t J, bool scale) {
  using namespace procrustes;
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  const int64_t jc = J * 3;
  const PoseRef<T, T> x{pred + n * jc,
                        target + n * jc,
                        w ? w + n * w_stride : nullptr,
                        grad_aligned ? grad_aligned + n * jc : nullptr,
                        nullptr,
                        grad_pred + n * jc,
                        grad_target + n * jc};
  PoseGradStats<T> st;
  pose_grad_stats(x, J, st);
  T r[9], v[9], gr[9], gt[3], sg[3], gm[9], gvar;
  for (int k = 0; k < 9; ++k) {
    r[k] = R[n * 9 + k];
    v[k] = V[n * 9 + k];
    gr[k] = grad_R ? grad_R[n * 9 + k] : T(0);
  }
  for (int k = 0; k < 3; ++k) {
    gt[k] = grad_t ? grad_t[n * 3 + k] : T(0);
    sg[k] = sig[n * 3 + k];
  }
  const T sn = s[n];
  const T gs = grad_s ? grad_s[n] : T(0);
  similarity_backward(st.g, gr, gs, gt, st.mu_p, r, sn, v, sg, scale, gm, gvar);
  pose_grad_apply(x, J, st, r, sn, gt, gm, gvar);
}

unsigned int blocks_for(int64_t N) { return static_cast<unsigned int>((N + kThreads - 1) / kThreads); }
}  // namespace

template <typename T>
cudaError_t procrustes_forward_launch(const T* pred, const T* target, const T* w, int64_t w_stride,
                                      T* aligned, T* R, T* s, T* t, T* V, T* sig, int64_t N,
                                      int64_t J, bool scale, bool allow_reflection,
                                      cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  procrustes_forward_kernel<T><<<blocks_for(N), kThreads, 0, stream>>>(
      pred, target, w, w_stride, aligned, R, s, t, V, sig, N, J, scale, allow_reflection);
  return cudaGetLastError();
}

template <typename T>
cudaError_t procrustes_backward_launch(const T* grad_aligned, const T* grad_R, const T* grad_s,
                                       const T* grad_t, const T* pred, const T* target, const T* w,
                                       int64_t w_stride, const T* R, const T* s, const T* V,
                                       const T* sig, T* grad_pred, T* grad_target, int64_t N,
                                       int64_t J, bool scale, cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  procrustes_backward_kernel<T><<<blocks_for(N), kThreads, 0, stream>>>(
      grad_aligned, grad_R, grad_s, grad_t, pred, target, w, w_stride, R, s, V, sig, grad_pred,
      grad_target, N, J, scale);
  return cudaGetLastError();
}

#define FASTLIFT_INSTANTIATE(T)                                                                  \
  template cudaError_t procrustes_forward_launch<T>(const T*, const T*, const T*, int64_t, T*,  \
                                                    T*, T*, T*, T*, T*, int64_t, int64_t, bool, \
                                                    bool, cudaStream_t);                         \
  template cudaError_t procrustes_backward_launch<T>(                                            \
      const T*, const T*, const T*, const T*, const T*, const T*, const T*, int64_t, const T*,   \
      const T*, const T*, const T*, T*, T*, int64_t, int64_t, bool, cudaStream_t);
FASTLIFT_INSTANTIATE(float)
FASTLIFT_INSTANTIATE(double)
#undef FASTLIFT_INSTANTIATE

}  // namespace fastlift
