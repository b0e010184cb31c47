// Host API of the FP8 GEMMs: D = epilogue(A . B^T) with the numeric contract's fine-grained scaling.
//
//   A  [m, k]  E4M3 activations, with 1x128 scales a_scales [m, k/128]
//   B  [n, k]  E4M3 or E5M2 weights (nn.Linear layout), with b_scales [n/128, k/128] (per-tensor
//              and 128x128-block scales both take this form) and optional col_scales [n]
//              (per-channel scales, applied once in the epilogue)
//   For each 128-K group g the tensor cores' partial sum P_g is promoted to FP32:
//       acc += (a_scales[m, g] * b_scales[n/128, g]) * P_g
//   then   v = acc * col_scales[n] (when given) + bias[n] (when given), ReLU when asked, and v is
//   written as FP32, BF16 or E4M3 requantized with fresh 1x128 scales d_scales [m, n/128].
// Shapes follow gemm_config.h's device layout: n and k multiples of 128 (zero padded), m anything.
//
// The kernels live in sm90_fp8_gemm.cuh (wgmma) and sm89_fp8_gemm.cuh (mma.sync); LaunchFp8Gemm
// validates the arguments and dispatches on GemmConfig::kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/gemm_config.h"

namespace fp8serve::cuda {

struct Fp8GemmArgs {
  int m = 0;
  int n = 0;  // padded, multiple of 128
  int k = 0;  // padded, multiple of 128
  const uint8_t* a = nullptr;          // [m, k] row-major E4M3
  const float* a_scales = nullptr;     // [m, k/128]
  const uint8_t* b = nullptr;          // [n, k] E4M3 / E5M2 in b_layout
  Fp8Format b_format = Fp8Format::kE4M3;
  WeightLayout b_layout = WeightLayout::kRowMajor;  // kTiled128: sm90 kernel only (gemm_config.h)
  const float* b_scales = nullptr;     // [n/128, k/128]
  const float* col_scales = nullptr;   // [n] or nullptr
  const float* bias = nullptr;         // [n] or nullptr
  bool relu = false;
  GemmOutput output = GemmOutput::kF32;
  void* d = nullptr;                   // [m, ldd]: uint8_t E4M3 codes, __nv_bfloat16 or float
  int ldd = 0;                         // elements per output row, >= n_store
  int n_store = 0;                     // output columns written: n for E4M3 (ldd >= n), 1..n for BF16/F32
  float* d_scales = nullptr;           // [m, n/128] for kE4M3 output
  void* workspace = nullptr;           // GemmWorkspaceBytes(shape, config) bytes, zeroed once at allocation
};

inline GemmShape ShapeOf(const Fp8GemmArgs& a) { return GemmShape{a.m, a.n, a.k, a.b_format, a.output, a.b_layout}; }

// Checks `args` against the device layout and fp8_gemm.h's rules (shape, pointers, output columns):
// INVALID_ARGUMENT naming the fault. Every launcher runs it.
absl::Status CheckFp8GemmArgs(const Fp8GemmArgs& args);

// Checks `args` against the layout and `config`, then launches on `stream` (asynchronous; safe to
// capture into a CUDA graph). INVALID_ARGUMENT for bad arguments, the CUDA error otherwise.
absl::Status LaunchFp8Gemm(const Fp8GemmArgs& args, const GemmConfig& config, cudaStream_t stream);

// The two kernels' launchers (called by LaunchFp8Gemm after validation).
absl::Status LaunchSm90Fp8Gemm(const Fp8GemmArgs& args, const GemmConfig& config, cudaStream_t stream);
absl::Status LaunchSm89Fp8Gemm(const Fp8GemmArgs& args, const GemmConfig& config, cudaStream_t stream);

// Test only: the sm90 kernel with promotion turned off, i.e. the wgmma accumulator carries the whole
// K and the scales are applied once at the end as a_scales[m, 0] * b_scales[n/128, 0]. Exact only when
// every group's scales are equal; it exists so a test can show the error that promotion removes.
absl::Status LaunchSm90Fp8GemmNoPromotionForTest(const Fp8GemmArgs& args, const GemmConfig& config,
                                                 cudaStream_t stream);

// Writes the kTiled128 form of the row-major device weights `row_major` [n, k] (multiples of 128)
// into `tiled` (n * k bytes, 16-byte aligned, not overlapping), on `stream`.
absl::Status TileWeights128Async(const uint8_t* row_major, int n, int k, uint8_t* tiled, cudaStream_t stream);

// The device's traits for SelectGemmConfig.
absl::StatusOr<DeviceTraits> QueryDeviceTraits(int device);

}  // namespace fp8serve::cuda
