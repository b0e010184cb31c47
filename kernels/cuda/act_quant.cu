#include "kernels/cuda/act_quant.cuh"
#include "kernels/cuda/act_quant.h"
#include "kernels/cuda/cuda_status.h"

#include "absl/strings/str_cat.h"

namespace fp8serve::cuda {

absl::Status QuantizeActivations1x128(const float* x, int rows, int cols, uint8_t* q, float* scales,
                                      cudaStream_t stream) {
  return QuantizeActivations1x128(x, rows, cols, q, cols, scales, stream);
}

absl::Status QuantizeActivations1x128(const float* x, int rows, int cols, uint8_t* q, int ldq, float* scales,
                                      cudaStream_t stream) {
  if (rows < 0 || cols <= 0) return absl::InvalidArgumentError(absl::StrCat("bad shape [", rows, ", ", cols, "]"));
  if (ldq < cols || ldq > (cols + 127) / 128 * 128) {
    return absl::InvalidArgumentError(absl::StrCat("ldq ", ldq, " outside [", cols, ", ", (cols + 127) / 128 * 128, "]"));
  }
  if (rows == 0) return absl::OkStatus();
  constexpr int kThreads = 256;  // 8 warps, 8 groups per block
  const long long warps = static_cast<long long>(rows) * ((cols + 127) / 128);
  const long long blocks = (warps * 32 + kThreads - 1) / kThreads;
  quantize_act_1x128_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, rows, cols, q, ldq, scales);
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace fp8serve::cuda
