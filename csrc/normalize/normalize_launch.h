// Pointer-level CUDA launchers of the fused 2D normalisation (defined in normalize.cu).
// Needs only CUDA's headers, so nvcc compiles normalize.cu without a CUDA build of torch.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

namespace fastlift {

template <typename T>
cudaError_t normalize_2d_forward_launch(const T* x, T* y, T* scale, int64_t N, int64_t J,
                                        int64_t root, int64_t head, T c, T eps, cudaStream_t stream);

template <typename T>
cudaError_t normalize_2d_backward_launch(const T* grad_y, const T* grad_scale, const T* x,
                                         const T* scale, T* grad_x, int64_t N, int64_t J,
                                         int64_t root, int64_t head, T c, T eps,
                                         cudaStream_t stream);

}  // namespace fastlift
