// Launcher of the weight re-layout (device code in weight_layout.cuh; layout in gemm_config.h).
#include "kernels/cuda/weight_layout.cuh"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/fp8_gemm.h"

namespace fp8serve::cuda {

absl::Status TileWeights128Async(const uint8_t* row_major, int n, int k, uint8_t* tiled, cudaStream_t stream) {
  if (absl::Status st = CheckTileWeights128(row_major, n, k, tiled); !st.ok()) return st;
  if (reinterpret_cast<uintptr_t>(row_major) % 16 != 0 || reinterpret_cast<uintptr_t>(tiled) % 16 != 0) {
    return absl::InvalidArgumentError("tiling weights: both buffers must be 16-byte aligned");
  }
  const size_t bytes = static_cast<size_t>(n) * k;
  const uintptr_t s = reinterpret_cast<uintptr_t>(row_major), d = reinterpret_cast<uintptr_t>(tiled);
  if (s < d + bytes && d < s + bytes) return absl::InvalidArgumentError("tiling weights: buffers overlap");
  constexpr int kThreads = 256;
  const size_t chunks = bytes / 16;
  const size_t blocks = (chunks + kThreads - 1) / kThreads;
  if (blocks > 0x7FFFFFFFu) return absl::InvalidArgumentError("tiling weights: too large");
  tile_weights_128_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      reinterpret_cast<const uint4*>(row_major), n, k, reinterpret_cast<uint4*>(tiled));
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace fp8serve::cuda
