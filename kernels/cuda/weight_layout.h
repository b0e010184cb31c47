// The launch of the weight re-layout (weight_layout.cuh) and its checks, plain C++: shared by the
// launcher (weight_layout.cu) and the kernel's host emulation test.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/gemm_config.h"

namespace fp8serve::cuda {

// One thread per 16-byte chunk of the tiled array, kTileWeightsThreads per block.
inline constexpr int kTileWeightsThreads = 256;
inline size_t TileWeightsBlocks(int n, int k) {
  const size_t chunks = static_cast<size_t>(n) * k / 16;
  return (chunks + kTileWeightsThreads - 1) / kTileWeightsThreads;
}

// TileWeights128Async's checks (beyond CheckTileWeights128): 16-byte aligned, non-overlapping
// buffers and a grid that fits: INVALID_ARGUMENT naming the fault.
inline absl::Status CheckTileWeights128Async(const uint8_t* row_major, int n, int k, const uint8_t* tiled) {
  if (absl::Status st = CheckTileWeights128(row_major, n, k, tiled); !st.ok()) return st;
  if (reinterpret_cast<uintptr_t>(row_major) % 16 != 0 || reinterpret_cast<uintptr_t>(tiled) % 16 != 0) {
    return absl::InvalidArgumentError("tiling weights: both buffers must be 16-byte aligned");
  }
  const size_t bytes = static_cast<size_t>(n) * k;
  const uintptr_t s = reinterpret_cast<uintptr_t>(row_major), d = reinterpret_cast<uintptr_t>(tiled);
  if (s < d + bytes && d < s + bytes) return absl::InvalidArgumentError("tiling weights: buffers overlap");
  if (TileWeightsBlocks(n, k) > 0x7FFFFFFFu) return absl::InvalidArgumentError("tiling weights: too large");
  return absl::OkStatus();
}

}  // namespace fp8serve::cuda
