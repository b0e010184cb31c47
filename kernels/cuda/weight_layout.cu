// Launcher of the weight re-layout (device code in weight_layout.cuh; layout in gemm_config.h).
#include "kernels/cuda/weight_layout.cuh"

#include <cstdint>

#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/weight_layout.h"

namespace fp8serve::cuda {

absl::Status TileWeights128Async(const uint8_t* row_major, int n, int k, uint8_t* tiled, cudaStream_t stream) {
  if (absl::Status st = CheckTileWeights128Async(row_major, n, k, tiled); !st.ok()) return st;
  tile_weights_128_kernel<<<static_cast<unsigned>(TileWeightsBlocks(n, k)), kTileWeightsThreads, 0, stream>>>(
      reinterpret_cast<const uint4*>(row_major), n, k, reinterpret_cast<uint4*>(tiled));
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace fp8serve::cuda
