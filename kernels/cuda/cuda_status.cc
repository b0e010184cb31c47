#include "kernels/cuda/cuda_status.h"

#include "absl/strings/str_cat.h"

namespace fp8serve {

absl::Status CudaError(cudaError_t err, const char* expr, const char* file, int line) {
  const std::string msg =
      absl::StrCat(file, ":", line, ": ", expr, " failed: ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
  switch (err) {
    case cudaErrorMemoryAllocation: return absl::ResourceExhaustedError(msg);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorDevicesUnavailable: return absl::UnavailableError(msg);
    case cudaErrorInvalidValue:
    case cudaErrorInvalidConfiguration: return absl::InvalidArgumentError(msg);
    default: return absl::InternalError(msg);
  }
}

absl::StatusOr<int> CudaDeviceCount() {
  int n = 0;
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&n));
  if (n == 0) return absl::UnavailableError("the CUDA driver reports no devices");
  return n;
}

}  // namespace fp8serve
