// CUDA kernels of the fused 2D normalisation: one thread per pose, the pose's math shared with the
// CPU kernel through normalize_math.h.
#include "normalize/normalize_launch.h"
#include "normalize/normalize_math.h"

namespace fastlift {

namespace {
constexpr int kThreads = 256;

template <typename T>
__global__ void normalize_2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                            T* __restrict__ scale, int64_t N, int64_t J,
                                            int64_t root, int64_t head, T c, T eps) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  scale[n] = normalize_2d_pose_forward<T>(x + n * J * 2, y + n * J * 2, J, root, head, c, eps);
}

template <typename T>
__global__ void normalize_2d_backward_kernel(const T* __restrict__ grad_y,
                                             const T* __restrict__ grad_scale,
                                             const T* __restrict__ x, const T* __restrict__ scale,
                                             T* __restrict__ grad_x, int64_t N, int64_t J,
                                             int64_t root, int64_t head, T c, T eps) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  normalize_2d_pose_backward<T>(grad_y + n * J * 2, grad_scale[n], x + n * J * 2, scale[n],
                                grad_x + n * J * 2, J, root, head, c, eps);
}

unsigned int blocks_for(int64_t N) { return static_cast<unsigned int>((N + kThreads - 1) / kThreads); }
}  // namespace

template <typename T>
cudaError_t normalize_2d_forward_launch(const T* x, T* y, T* scale, int64_t N, int64_t J,
                                        int64_t root, int64_t head, T c, T eps,
                                        cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  normalize_2d_forward_kernel<T><<<blocks_for(N), kThreads, 0, stream>>>(x, y, scale, N, J, root,
                                                                         head, c, eps);
  return cudaGetLastError();
}

template <typename T>
cudaError_t normalize_2d_backward_launch(const T* grad_y, const T* grad_scale, const T* x,
                                         const T* scale, T* grad_x, int64_t N, int64_t J,
                                         int64_t root, int64_t head, T c, T eps,
                                         cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  normalize_2d_backward_kernel<T><<<blocks_for(N), kThreads, 0, stream>>>(
      grad_y, grad_scale, x, scale, grad_x, N, J, root, head, c, eps);
  return cudaGetLastError();
}

template cudaError_t normalize_2d_forward_launch<float>(const float*, float*, float*, int64_t,
                                                        int64_t, int64_t, int64_t, float, float,
                                                        cudaStream_t);
template cudaError_t normalize_2d_forward_launch<double>(const double*, double*, double*, int64_t,
                                                         int64_t, int64_t, int64_t, double, double,
                                                         cudaStream_t);
template cudaError_t normalize_2d_backward_launch<float>(const float*, const float*, const float*,
                                                         const float*, float*, int64_t, int64_t,
                                                         int64_t, int64_t, float, float,
                                                         cudaStream_t);
template cudaError_t normalize_2d_backward_launch<double>(const double*, const double*,
                                                          const double*, const double*, double*,
                                                          int64_t, int64_t, int64_t, int64_t,
                                                          double, double, cudaStream_t);

}  // namespace fastlift
