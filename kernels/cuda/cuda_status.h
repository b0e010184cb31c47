// CUDA errors as absl::Status values that name the call, the file and the line. Library code
// never exits on a CUDA error: it returns, and the caller decides (a server fails one model's load
// or one batch, not the process).
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fp8serve {

absl::Status CudaError(cudaError_t err, const char* expr, const char* file, int line);

// Number of usable CUDA devices, or why there are none (no driver, driver too old, no device).
absl::StatusOr<int> CudaDeviceCount();

}  // namespace fp8serve

#define FP8SERVE_CUDA_RETURN_IF_ERROR(expr)                                        \
  do {                                                                             \
    const cudaError_t fp8serve_cuda_err_ = (expr);                                 \
    if (fp8serve_cuda_err_ != cudaSuccess)                                         \
      return ::fp8serve::CudaError(fp8serve_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// The status of one CUDA call as a value (OK on cudaSuccess), for code that collects errors.
#define FP8SERVE_CUDA_STATUS(expr)                                                              \
  ([&]() -> ::absl::Status {                                                                    \
    const cudaError_t fp8serve_cuda_err_ = (expr);                                              \
    return fp8serve_cuda_err_ == cudaSuccess                                                    \
               ? ::absl::OkStatus()                                                             \
               : ::fp8serve::CudaError(fp8serve_cuda_err_, #expr, __FILE__, __LINE__);          \
  }())
