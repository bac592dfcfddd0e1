// Pointer-level CUDA launchers of the fused similarity Procrustes alignment (defined in
// procrustes.cu). Needs only CUDA's headers, so nvcc compiles procrustes.cu without a CUDA build
// of torch. All pointers are contiguous device arrays of one dtype; w may be nullptr (uniform
// weights) and has w_stride = J per pose, or 0 for one (J,) vector shared by all poses; V and sig
// may be nullptr (not needed by a backward); absent gradients (nullptr) are zeros.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

namespace fastlift {

template <typename T>
cudaError_t procrustes_forward_launch(const T* pred, const T* target, const T* w, int64_t w_stride,
                                      T* aligned, T* R, T* s, T* t, T* V, T* sig, int64_t N,
                                      int64_t J, bool scale, bool allow_reflection,
                                      cudaStream_t stream);

template <typename T>
cudaError_t procrustes_backward_launch(const T* grad_aligned, const T* grad_R, const T* grad_s,
                                       const T* grad_t, const T* pred, const T* target, const T* w,
                                       int64_t w_stride, const T* R, const T* s, const T* V,
                                       const T* sig, T* grad_pred, T* grad_target, int64_t N,
                                       int64_t J, bool scale, cudaStream_t stream);

}  // namespace fastlift
