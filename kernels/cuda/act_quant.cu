#include "kernels/cuda/act_quant.cuh"
#include "kernels/cuda/act_quant.h"
#include "kernels/cuda/cuda_status.h"

namespace fp8serve::cuda {

absl::Status QuantizeActivations1x128(const float* x, int rows, int cols, uint8_t* q, float* scales,
                                      cudaStream_t stream) {
  return QuantizeActivations1x128(x, rows, cols, q, cols, scales, stream);
}

absl::Status QuantizeActivations1x128(const float* x, int rows, int cols, uint8_t* q, int ldq, float* scales,
                                      cudaStream_t stream) {
  if (absl::Status st = CheckActQuantArgs(rows, cols, ldq); !st.ok()) return st;
  if (rows == 0) return absl::OkStatus();
  quantize_act_1x128_kernel<<<static_cast<unsigned>(ActQuantBlocks(rows, cols)), kActQuantThreads, 0, stream>>>(
      x, rows, cols, q, ldq, scales);
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace fp8serve::cuda
