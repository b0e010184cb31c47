// Host API of the 1x128 activation quantizer (device code in act_quant.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fp8serve::cuda {

// x [rows, cols] FP32 on the device -> q [rows, cols] E4M3 codes and scales [rows, ceil(cols/128)],
// asynchronously on `stream`. Bit-identical to fp8serve::QuantizeActivations on the CPU.
absl::Status QuantizeActivations1x128(const float* x, int rows, int cols, uint8_t* q, float* scales,
                                      cudaStream_t stream);
// The same into the GEMMs' padded layout: q rows are ldq bytes apart, with cols <= ldq <=
// CeilDiv(cols, 128) * 128, and the padding columns written as zero codes.
absl::Status QuantizeActivations1x128(const float* x, int rows, int cols, uint8_t* q, int ldq, float* scales,
                                      cudaStream_t stream);

// The launch (act_quant.cuh): one warp per (row, 128-column group), kActQuantThreads per block.
inline constexpr int kActQuantThreads = 256;
inline long long ActQuantBlocks(int rows, int cols) {
  const long long warps = static_cast<long long>(rows) * ((cols + 127) / 128);
  return (warps * 32 + kActQuantThreads - 1) / kActQuantThreads;
}

// The arguments' checks: INVALID_ARGUMENT naming the fault.
inline absl::Status CheckActQuantArgs(int rows, int cols, int ldq) {
  if (rows < 0 || cols <= 0) return absl::InvalidArgumentError(absl::StrCat("bad shape [", rows, ", ", cols, "]"));
  if (ldq < cols || ldq > (cols + 127) / 128 * 128) {
    return absl::InvalidArgumentError(absl::StrCat("ldq ", ldq, " outside [", cols, ", ", (cols + 127) / 128 * 128, "]"));
  }
  return absl::OkStatus();
}

}  // namespace fp8serve::cuda
