// Device code: re-lays row-major [n, k] weights (multiples of 128) into the kTiled128 layout of
// gemm_config.h, where each 128 x 128 block is one contiguous 16 KB run. One thread moves one 16-byte
// chunk: consecutive threads write consecutive chunks of the tiled array (coalesced stores) and read
// 8 chunks of one source row piece, then the next row's (128-byte coalesced loads per 8 threads).
#pragma once

#include <cstdint>

namespace fp8serve::cuda {

__global__ void tile_weights_128_kernel(const uint4* __restrict__ src, int n, int k, uint4* __restrict__ dst) {
  const size_t chunk = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // 16-byte chunk of dst
  const size_t chunks = static_cast<size_t>(n) * k / 16;
  if (chunk >= chunks) return;
  // dst chunk -> (block, row in block, 16-byte column in the row)
  const size_t block = chunk / (128 * 8);
  const int r = static_cast<int>(chunk / 8 % 128);
  const int c16 = static_cast<int>(chunk % 8);
  const int groups = k / 128;
  const size_t t = block / groups;
  const int g = static_cast<int>(block % groups);
  const size_t row = t * 128 + r;
  dst[chunk] = src[(row * k + static_cast<size_t>(g) * 128) / 16 + c16];
}

}  // namespace fp8serve::cuda
