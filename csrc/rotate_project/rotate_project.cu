// CUDA kernels of rotation sampling and the fused rotate-and-project: one thread per rotation or
// pose, the per-pose math shared with the CPU kernels through rotate_project_math.h.
#include "rotate_project/rotate_project_launch.h"
#include "rotate_project/rotate_project_math.h"

namespace fastlift {

namespace {
constexpr int kThreads = 256;

unsigned int blocks_for(int64_t n) { return static_cast<unsigned int>((n + kThreads - 1) / kThreads); }

__global__ void sample_rotations_kernel(double* __restrict__ R, double* __restrict__ params, int64_t n,
                                        double az_lo, double az_width, double el_lo, double el_width,
                                        uint64_t seed, uint64_t offset, bool haar) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  double P[4];
  sample_rotation(seed, offset + static_cast<uint64_t>(i), az_lo, az_width, el_lo, el_width, haar, R + 9 * i, P);
  const int np = haar ? 4 : 2;
  for (int k = 0; k < np; ++k) params[np * i + k] = P[k];
}

template <typename T>
__global__ void rotate_project_forward_kernel(const T* __restrict__ Y, const T* __restrict__ R, T* __restrict__ x2d,
                                              T* __restrict__ yrot, int64_t N, int64_t J, int64_t root,
                                              bool transpose, T c, T m, bool renorm, int64_t head, T eps) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  rotate_project_pose_forward<T, T>(Y + n * J * 3, R + n * 9, x2d + n * J * 2, yrot + n * J * 3, J, root,
                                    transpose, c, m, renorm, head, eps);
}

template <typename T>
__global__ void rotate_project_backward_kernel(const T* __restrict__ g2, const T* __restrict__ g3,
                                               const T* __restrict__ Y, const T* __restrict__ R, T* __restrict__ gY,
                                               T* __restrict__ gR, int64_t N, int64_t J, int64_t root,
                                               bool transpose, T c, T m, bool renorm, int64_t head, T eps) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  rotate_project_pose_backward<T, T>(g2 ? g2 + n * J * 2 : nullptr, g3 ? g3 + n * J * 3 : nullptr, Y + n * J * 3,
                                     R + n * 9, gY + n * J * 3, gR + n * 9, J, root, transpose, c, m, renorm, head,
                                     eps);
}
}  // namespace

cudaError_t sample_rotations_launch(double* R, double* params, int64_t n, double az_lo, double az_width,
                                    double el_lo, double el_width, uint64_t seed, uint64_t offset, bool haar,
                                    cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  sample_rotations_kernel<<<blocks_for(n), kThreads, 0, stream>>>(R, params, n, az_lo, az_width, el_lo, el_width,
                                                                  seed, offset, haar);
  return cudaGetLastError();
}

template <typename T>
cudaError_t rotate_project_forward_launch(const T* Y, const T* R, T* x2d, T* yrot, int64_t N, int64_t J,
                                          int64_t root, bool transpose, T c, T min_depth, bool renormalize,
                                          int64_t head, T eps, cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  rotate_project_forward_kernel<T><<<blocks_for(N), kThreads, 0, stream>>>(Y, R, x2d, yrot, N, J, root, transpose,
                                                                           c, min_depth, renormalize, head, eps);
  return cudaGetLastError();
}

template <typename T>
cudaError_t rotate_project_backward_launch(const T* grad_x2d, const T* grad_yrot, const T* Y, const T* R, T* gY,
                                           T* gR, int64_t N, int64_t J, int64_t root, bool transpose, T c,
                                           T min_depth, bool renormalize, int64_t head, T eps,
                                           cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  rotate_project_backward_kernel<T><<<blocks_for(N), kThreads, 0, stream>>>(
      grad_x2d, grad_yrot, Y, R, gY, gR, N, J, root, transpose, c, min_depth, renormalize, head, eps);
  return cudaGetLastError();
}

#define FASTLIFT_INSTANTIATE(T)                                                                                  \
  template cudaError_t rotate_project_forward_launch<T>(const T*, const T*, T*, T*, int64_t, int64_t, int64_t,  \
                                                        bool, T, T, bool, int64_t, T, cudaStream_t);            \
  template cudaError_t rotate_project_backward_launch<T>(const T*, const T*, const T*, const T*, T*, T*,        \
                                                         int64_t, int64_t, int64_t, bool, T, T, bool, int64_t,  \
                                                         T, cudaStream_t);
FASTLIFT_INSTANTIATE(float)
FASTLIFT_INSTANTIATE(double)
#undef FASTLIFT_INSTANTIATE

}  // namespace fastlift
