// The wgmma shared-memory matrix descriptor (plain integer arithmetic): shared by the device code
// (sm90_utils.cuh) and the kernels' host emulation, whose wgmma decodes what this encodes.
#pragma once

#include <cstdint>

#include "kernels/cuda/host_device.h"

namespace fp8serve::cuda::sm90 {

// Shared-memory matrix descriptor of a K-major operand whose rows are 128 bytes, written by TMA
// with 128-byte swizzle (16-byte chunk c of row r stored at chunk c ^ (r % 8)), the tile base
// 1024-byte aligned. Bit fields (PTX ISA, "matrix descriptor"):
//   [0, 14)   start address >> 4
//   [16, 30)  leading-dimension byte offset >> 4: unused by swizzled K-major layouts whose K extent
//             per instruction (32 bytes) lies inside one swizzle row; set to 1 by convention
//   [32, 46)  stride-dimension byte offset >> 4: 8 rows x 128 bytes = 1024 between 8-row groups
//   [49, 52)  base offset: 0, since every swizzle atom starts 1024-byte aligned
//   [62, 64)  swizzle mode: 1 = 128-byte
// NOTES: the k-th 32-byte K step of a row is addressed by adding 32 * k bytes to the start address
// (+2 * k in the descriptor's low field): the hardware applies the swizzle XOR to the final
// address bits [4, 7) using bits [7, 10), which the +32 * k (< 128) leaves untouched.
FP8SERVE_HOST_DEVICE constexpr uint64_t MakeSmemDescSw128(uint32_t smem_addr) {
  constexpr uint64_t kLbo = 1;            // 16 bytes >> 4 (ignored)
  constexpr uint64_t kSbo = 1024 >> 4;    // 8 rows x 128 bytes
  constexpr uint64_t kSwizzle128B = 1;
  return static_cast<uint64_t>((smem_addr & 0x3FFFFu) >> 4) | (kLbo << 16) | (kSbo << 32) | (kSwizzle128B << 62);
}

}  // namespace fp8serve::cuda::sm90
