// Host API of the 1x128 activation quantizer (device code in act_quant.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace fp8serve::cuda {

// x [rows, cols] FP32 on the device -> q [rows, cols] E4M3 codes and scales [rows, ceil(cols/128)],
// asynchronously on `stream`. Bit-identical to fp8serve::QuantizeActivations on the CPU.
absl::Status QuantizeActivations1x128(const float* x, int rows, int cols, uint8_t* q, float* scales,
                                      cudaStream_t stream);
// The same into the GEMMs' padded layout: q rows are ldq bytes apart, with cols <= ldq <=
// CeilDiv(cols, 128) * 128, and the padding columns written as zero codes.
absl::Status QuantizeActivations1x128(const float* x, int rows, int cols, uint8_t* q, int ldq, float* scales,
                                      cudaStream_t stream);

}  // namespace fp8serve::cuda
