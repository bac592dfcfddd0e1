// Pointer-level CUDA launchers of rotation sampling and the fused rotate-and-project (defined in
// rotate_project.cu). Needs only CUDA's headers, so nvcc compiles the .cu without a CUDA torch.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

namespace fastlift {

// R (n, 9) and params (n, 2 or 4 with haar), float64.
cudaError_t sample_rotations_launch(double* R, double* params, int64_t n, double az_lo, double az_width,
                                    double el_lo, double el_width, uint64_t seed, uint64_t offset, bool haar,
                                    cudaStream_t stream);

template <typename T>
cudaError_t rotate_project_forward_launch(const T* Y, const T* R, T* x2d, T* yrot, int64_t N, int64_t J,
                                          int64_t root, bool transpose, T c, T min_depth, bool renormalize,
                                          int64_t head, T eps, cudaStream_t stream);

// grad_x2d / grad_yrot may be nullptr (zero).
template <typename T>
cudaError_t rotate_project_backward_launch(const T* grad_x2d, const T* grad_yrot, const T* Y, const T* R, T* gY,
                                           T* gR, int64_t N, int64_t J, int64_t root, bool transpose, T c,
                                           T min_depth, bool renormalize, int64_t head, T eps,
                                           cudaStream_t stream);

}  // namespace fastlift
