// FP8SERVE_HOST_DEVICE marks functions that both the kernels and host code (launchers, host tests)
// call: __host__ __device__ under nvcc, nothing for the host compiler.
#pragma once

#if defined(__CUDACC__)
#define FP8SERVE_HOST_DEVICE __host__ __device__
#else
#define FP8SERVE_HOST_DEVICE
#endif
