// Helpers shared by the C++ and CUDA kernels. Must compile with nvcc alone (no torch headers).
#pragma once

#if defined(__CUDACC__)
#define FASTLIFT_HD __host__ __device__ __forceinline__
#else
#define FASTLIFT_HD inline
#endif
