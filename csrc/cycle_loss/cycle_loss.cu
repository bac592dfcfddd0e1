// CUDA kernels of the fused cycle losses: one thread per pose (per joint for the plain loss's
// backward), the math shared with the CPU kernels through cycle_loss_math.h and
// cycle_reproject_math.h.
#include <float.h>

#include "cycle_loss/cycle_loss_launch.h"
#include "cycle_loss/cycle_loss_math.h"

namespace fastlift {

namespace {
constexpr int kThreads = 256;

unsigned int blocks_for(int64_t n) { return static_cast<unsigned int>((n + kThreads - 1) / kThreads); }

// Block-wide sum of 3 doubles into partials[3 * blockIdx.x + i].
__device__ void block_sums(double a0, double a1, double a2, double* partials) {
  __shared__ double s[3][kThreads];
  s[0][threadIdx.x] = a0;
  s[1][threadIdx.x] = a1;
  s[2][threadIdx.x] = a2;
  __syncthreads();
  for (int k = kThreads / 2; k > 0; k >>= 1) {
    if (threadIdx.x < k)
      for (int i = 0; i < 3; ++i) s[i][threadIdx.x] += s[i][threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x < 3) partials[3 * blockIdx.x + threadIdx.x] = s[threadIdx.x][0];
}

// One block: adds the partials in block order; out = (l2, l3, wsum).
template <typename T>
__global__ void finish_kernel(const double* __restrict__ partials, int64_t nblocks, double count, bool has_w,
                              T* __restrict__ out) {
  __shared__ double tot[3];
  if (threadIdx.x < 3) {
    double s = 0;
    for (int64_t b = 0; b < nblocks; ++b) s += partials[3 * b + threadIdx.x];
    tot[threadIdx.x] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const double w = has_w ? tot[2] : count;
    const double den = w > double(FLT_MIN) ? w : double(FLT_MIN);  // 0/0 (nothing included) is 0
    out[0] = T(tot[0] / (2 * den));
    out[1] = T(tot[1] / (3 * den));
    out[2] = T(w);
  }
}

template <typename T>
__device__ void coefficients(const T* g2, const T* g3, const T* wsum, T* k2, T* k3) {
  const double w = double(*wsum);
  const double den = w > double(FLT_MIN) ? w : double(FLT_MIN);
  *k2 = T(double(*g2) / (2 * den));
  *k3 = T(double(*g3) / (3 * den));
}

template <typename T>
__global__ void loss_forward_kernel(const T* __restrict__ x, const T* __restrict__ xb, const T* __restrict__ yr,
                                    const T* __restrict__ yl, const T* __restrict__ w, int64_t N, int64_t J, bool l1,
                                    double* __restrict__ partials) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  double acc[3] = {0, 0, 0};
  if (n < N)
    for (int64_t j = 0; j < J; ++j) cycle_loss_joint_forward<T, double>(x, xb, yr, yl, w, n * J + j, l1, acc);
  block_sums(acc[0], acc[1], acc[2], partials);
}

template <typename T>
__global__ void loss_backward_kernel(const T* __restrict__ g2, const T* __restrict__ g3, const T* __restrict__ wsum,
                                     const T* __restrict__ x, const T* __restrict__ xb, const T* __restrict__ yr,
                                     const T* __restrict__ yl, const T* __restrict__ w, int64_t K, bool l1,
                                     T* __restrict__ gxb, T* __restrict__ gyl) {
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k >= K) return;
  T k2, k3;
  coefficients(g2, g3, wsum, &k2, &k3);
  cycle_loss_joint_backward<T>(x, xb, yr, yl, w, k, l1, k2, k3, gxb, gyl);
}

template <typename T>
__global__ void reproject_forward_kernel(const T* __restrict__ x, const T* __restrict__ yl, const T* __restrict__ R,
                                         const T* __restrict__ yr, const T* __restrict__ w, int64_t N,
                                         ReprojectArgs a, double* __restrict__ partials) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  T acc[3] = {0, 0, 0};
  if (n < N) {
    const int64_t J = a.J;
    T xb[2 * kCudaMaxJointsRenorm];  // used by the re-normalising path only (J checked by the glue)
    cycle_reproject_pose_forward<T, T>(x + n * J * 2, yl + n * J * 3, R + n * 9, yr + n * J * 3,
                                       w ? w + n * J : nullptr, a, J, xb, acc);
  }
  block_sums(double(acc[0]), double(acc[1]), double(acc[2]), partials);
}

// Pose n's gradients (and its loss sums into acc, when not nullptr) with k2, k3 known.
template <typename T>
__device__ void pose_gradient(int64_t n, const T* __restrict__ x, const T* __restrict__ yl, const T* __restrict__ R,
                              const T* __restrict__ yr, const T* __restrict__ w, const ReprojectArgs& a, T k2, T k3,
                              T* __restrict__ gyl, T* __restrict__ gR, T* __restrict__ gyr, T* __restrict__ gx,
                              T* acc) {
  const int64_t J = a.J;
  T xb[2 * kCudaMaxJointsRenorm], g2buf[2 * kCudaMaxJointsRenorm];  // J checked by the glue
  cycle_reproject_pose_backward<T, T>(x + n * J * 2, yl + n * J * 3, R + n * 9, yr + n * J * 3,
                                      w ? w + n * J : nullptr, a, J, k2, k3, gyl + n * J * 3, gR + n * 9,
                                      gyr ? gyr + n * J * 3 : nullptr, gx ? gx + n * J * 2 : nullptr, xb, g2buf, acc);
}

template <typename T>
__global__ void reproject_backward_kernel(const T* __restrict__ g2, const T* __restrict__ g3,
                                          const T* __restrict__ wsum, const T* __restrict__ x,
                                          const T* __restrict__ yl, const T* __restrict__ R,
                                          const T* __restrict__ yr, const T* __restrict__ w, int64_t N,
                                          ReprojectArgs a, T* __restrict__ gyl, T* __restrict__ gR,
                                          T* __restrict__ gyr, T* __restrict__ gx) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  T k2, k3;
  coefficients(g2, g3, wsum, &k2, &k3);
  pose_gradient(n, x, yl, R, yr, w, a, k2, k3, gyl, gR, gyr, gx, static_cast<T*>(nullptr));
}

// Sum of the kept weights (w > 0) into partials slot 2 of each block (the finishing block then
// gives wsum): the one-pass op needs the mean's denominator before any gradient.
template <typename T>
__global__ void kept_weight_kernel(const T* __restrict__ w, int64_t K, double* __restrict__ partials) {
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const double v = k < K && w[k] > T(0) ? double(w[k]) : 0.0;
  block_sums(0.0, 0.0, v, partials);
}

// The loss and its gradient in one pass: the backward math with the loss sums accumulated from
// its residuals; k2 = w2 / (2 W), k3 = w3 / (3 W) with W = *wsum (device).
template <typename T>
__global__ void reproject_forward_grad_kernel(double w2, double w3, const T* __restrict__ wsum,
                                              const T* __restrict__ x, const T* __restrict__ yl,
                                              const T* __restrict__ R, const T* __restrict__ yr,
                                              const T* __restrict__ w, int64_t N, ReprojectArgs a,
                                              T* __restrict__ gyl, T* __restrict__ gR, T* __restrict__ gyr,
                                              T* __restrict__ gx, double* __restrict__ partials) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  T acc[3] = {0, 0, 0};
  if (n < N) {
    const double W = double(*wsum);
    const double den = W > double(FLT_MIN) ? W : double(FLT_MIN);
    pose_gradient(n, x, yl, R, yr, w, a, T(w2 / (2 * den)), T(w3 / (3 * den)), gyl, gR, gyr, gx, acc);
  }
  block_sums(double(acc[0]), double(acc[1]), double(acc[2]), partials);
}
}  // namespace

int64_t cycle_loss_partials(int64_t N) { return 3 * (N > 0 ? (N + kThreads - 1) / kThreads : 1); }

template <typename T>
cudaError_t cycle_loss_forward_launch(const T* x, const T* xb, const T* yr, const T* yl, const T* w, int64_t N,
                                      int64_t J, bool l1, double* partials, T* out, cudaStream_t stream) {
  const int64_t nb = N > 0 ? blocks_for(N) : 1;
  loss_forward_kernel<T><<<static_cast<unsigned int>(nb), kThreads, 0, stream>>>(x, xb, yr, yl, w, N, J, l1,
                                                                                  partials);
  finish_kernel<T><<<1, 32, 0, stream>>>(partials, nb, double(N) * double(J), w != nullptr, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t cycle_loss_backward_launch(const T* grad_2d, const T* grad_3d, const T* wsum, const T* x, const T* xb,
                                       const T* yr, const T* yl, const T* w, int64_t N, int64_t J, bool l1, T* gxb,
                                       T* gyl, cudaStream_t stream) {
  const int64_t K = N * J;
  if (K == 0) return cudaSuccess;
  loss_backward_kernel<T><<<blocks_for(K), kThreads, 0, stream>>>(grad_2d, grad_3d, wsum, x, xb, yr, yl, w, K, l1,
                                                                  gxb, gyl);
  return cudaGetLastError();
}

template <typename T>
cudaError_t cycle_reproject_forward_launch(const T* x, const T* yl, const T* R, const T* yr, const T* w, int64_t N,
                                           const ReprojectArgs& a, double* partials, T* out, cudaStream_t stream) {
  const int64_t nb = N > 0 ? blocks_for(N) : 1;
  reproject_forward_kernel<T><<<static_cast<unsigned int>(nb), kThreads, 0, stream>>>(x, yl, R, yr, w, N, a,
                                                                                       partials);
  finish_kernel<T><<<1, 32, 0, stream>>>(partials, nb, double(N) * double(a.J), w != nullptr, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t cycle_reproject_backward_launch(const T* grad_2d, const T* grad_3d, const T* wsum, const T* x,
                                            const T* yl, const T* R, const T* yr, const T* w, int64_t N,
                                            const ReprojectArgs& a, T* gyl, T* gR, T* gyr, T* gx,
                                            cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  reproject_backward_kernel<T><<<blocks_for(N), kThreads, 0, stream>>>(grad_2d, grad_3d, wsum, x, yl, R, yr, w, N,
                                                                       a, gyl, gR, gyr, gx);
  return cudaGetLastError();
}

template <typename T>
cudaError_t cycle_reproject_forward_grad_launch(const T* x, const T* yl, const T* R, const T* yr, const T* w,
                                                int64_t N, const ReprojectArgs& a, double w_2d, double w_3d,
                                                double* partials, T* out, T* gyl, T* gR, T* gyr, T* gx,
                                                cudaStream_t stream) {
  const int64_t K = N * a.J;
  // out[3..5]: the weight pass's (0, 0, wsum); out[0..2]: (l2, l3, wsum) of the loss pass
  if (w && K > 0) {
    const unsigned int nbw = blocks_for(K);
    kept_weight_kernel<T><<<nbw, kThreads, 0, stream>>>(w, K, partials);
    finish_kernel<T><<<1, 32, 0, stream>>>(partials, nbw, double(K), true, out + 3);
  } else {
    finish_kernel<T><<<1, 32, 0, stream>>>(partials, 0, double(K), false, out + 3);
  }
  const int64_t nb = N > 0 ? blocks_for(N) : 1;
  reproject_forward_grad_kernel<T><<<static_cast<unsigned int>(nb), kThreads, 0, stream>>>(
      w_2d, w_3d, out + 5, x, yl, R, yr, w, N, a, gyl, gR, gyr, gx, partials);
  finish_kernel<T><<<1, 32, 0, stream>>>(partials, nb, double(K), w != nullptr, out);
  return cudaGetLastError();
}

#define FASTLIFT_INSTANTIATE(T)                                                                                   \
  template cudaError_t cycle_loss_forward_launch<T>(const T*, const T*, const T*, const T*, const T*, int64_t,   \
                                                    int64_t, bool, double*, T*, cudaStream_t);                    \
  template cudaError_t cycle_loss_backward_launch<T>(const T*, const T*, const T*, const T*, const T*, const T*, \
                                                     const T*, const T*, int64_t, int64_t, bool, T*, T*,          \
                                                     cudaStream_t);                                               \
  template cudaError_t cycle_reproject_forward_launch<T>(const T*, const T*, const T*, const T*, const T*,       \
                                                         int64_t, const ReprojectArgs&, double*, T*,              \
                                                         cudaStream_t);                                           \
  template cudaError_t cycle_reproject_backward_launch<T>(const T*, const T*, const T*, const T*, const T*,      \
                                                          const T*, const T*, const T*, int64_t,                  \
                                                          const ReprojectArgs&, T*, T*, T*, T*, cudaStream_t);  \
  template cudaError_t cycle_reproject_forward_grad_launch<T>(const T*, const T*, const T*, const T*, const T*,  \
                                                              int64_t, const ReprojectArgs&, double, double,      \
                                                              double*, T*, T*, T*, T*, T*, cudaStream_t);
FASTLIFT_INSTANTIATE(float)
FASTLIFT_INSTANTIATE(double)
#undef FASTLIFT_INSTANTIATE

}  // namespace fastlift
