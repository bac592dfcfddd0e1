// Pointer-level CUDA launchers of the fused cycle losses (defined in cycle_loss.cu). Needs only
// CUDA's headers. Reductions: per-block partial sums in double, then one finishing block adds them
// in block order (deterministic, no atomics, no host sync); the losses stay on the device.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include "cycle_loss/cycle_reproject_math.h"

namespace fastlift {

constexpr int64_t kCudaMaxJointsRenorm = 64;  // per-thread scratch of the re-normalising fused path

// Number of double partials (3 per block) the forward launchers need in `partials`.
int64_t cycle_loss_partials(int64_t N);

// out: l2, l3, wsum (3 T). w may be nullptr.
template <typename T>
cudaError_t cycle_loss_forward_launch(const T* x, const T* xb, const T* yr, const T* yl, const T* w, int64_t N,
                                      int64_t J, bool l1, double* partials, T* out, cudaStream_t stream);
// g = (grad_2d, grad_3d, wsum) device scalars.
template <typename T>
cudaError_t cycle_loss_backward_launch(const T* grad_2d, const T* grad_3d, const T* wsum, const T* x, const T* xb,
                                       const T* yr, const T* yl, const T* w, int64_t N, int64_t J, bool l1, T* gxb,
                                       T* gyl, cudaStream_t stream);

template <typename T>
cudaError_t cycle_reproject_forward_launch(const T* x, const T* yl, const T* R, const T* yr, const T* w, int64_t N,
                                           const ReprojectArgs& a, double* partials, T* out, cudaStream_t stream);
// gyr / gx may be nullptr (not needed).
template <typename T>
cudaError_t cycle_reproject_backward_launch(const T* grad_2d, const T* grad_3d, const T* wsum, const T* x,
                                            const T* yl, const T* R, const T* yr, const T* w, int64_t N,
                                            const ReprojectArgs& a, T* gyl, T* gR, T* gyr, T* gx,
                                            cudaStream_t stream);
// The loss and the gradients of w_2d loss_2d + w_3d loss_3d in one pass over the inputs (after a
// pass over the weights only, when given). partials: cycle_loss_partials(N * J) doubles; out: 6 T,
// out[0..2] = (l2, l3, wsum), out[3..5] scratch. gyr / gx may be nullptr.
template <typename T>
cudaError_t cycle_reproject_forward_grad_launch(const T* x, const T* yl, const T* R, const T* yr, const T* w,
                                                int64_t N, const ReprojectArgs& a, double w_2d, double w_3d,
                                                double* partials, T* out, T* gyl, T* gR, T* gyr, T* gx,
                                                cudaStream_t stream);

}  // namespace fastlift
