// Host versions of the warp-level PTX the mma.sync kernels share (the fused MLP kernel's mma.sync
// kinds and the sm89 GEMM): cp.async groups, ldmatrix and the FP8 mma.sync, each doing what its
// instruction is defined to do (see emu_runtime.h).
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/numerics/fp8.h"
#include "tests/kernels/cuda/emu/emu_runtime.h"

namespace fp8serve::emu {

// cp.async of `bytes` (4, 8 or 16) from `src`, of which the first `src_bytes` are read and the rest
// written as zeros (src_bytes 0 reads nothing). The copy is recorded in the open group; it lands at
// issue, or (late copies) when a wait retires its group.
inline void CpAsync(uint32_t dst, const void* src, int bytes, int src_bytes) {
  CheckSmem(dst, bytes, bytes);
  if (src_bytes < 0 || src_bytes > bytes) Fail("cp.async with a source size outside [0, bytes]");
  if (src_bytes > 0 && reinterpret_cast<uintptr_t>(src) % static_cast<uintptr_t>(bytes) != 0) {
    Fail("cp.async from a misaligned address");
  }
  tl_open.push_back({dst, src_bytes > 0 ? src : nullptr, bytes, src_bytes});
  if (!CurrentCta()->late) Land(tl_open.back());
}
inline void CpAsyncCommit() {
  tl_groups.push_back(std::move(tl_open));
  tl_open.clear();
}
template <int kPending>
inline void CpAsyncWait() {
  while (static_cast<int>(tl_groups.size()) > kPending) {
    if (CurrentCta()->late) {
      for (const Copy& c : tl_groups.front()) Land(c);
    }
    tl_groups.erase(tl_groups.begin());
  }
}

// ldmatrix.m8n8.x4.b16: lanes 8j..8j+7 give the row addresses of matrix j; lane (g, t) = (lane / 4,
// lane % 4) receives bytes 4t..4t+3 of row g of each matrix, register j from matrix j.
inline void LdMatrixX4(uint32_t addr, uint32_t (&r)[4]) {
  CheckSmem(addr, 16, 16);
  auto& x = ExchangeTable();
  x[Lane()][0] = addr;
  WarpSync();
  const int g = Lane() / 4, t = Lane() % 4;
  for (int j = 0; j < 4; ++j) {
    const uint32_t row = static_cast<uint32_t>(x[8 * j + g][0]);
    std::memcpy(&r[j], SmemBase() + row + 4 * t, 4);
  }
}

// The warp's 16 x 32 E4M3 A operand from every lane's four fragment registers (table columns 0-3,
// as ShareFragments leaves them): the m16n8k32 layout, which wgmma's register A uses per warp too.
inline void DecodeFragmentA(const uint64_t (&x)[32][8], float (&A)[16][32]) {
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int reg = 0; reg < 4; ++reg) {
      for (int byte = 0; byte < 4; ++byte) {
        const uint8_t code = static_cast<uint8_t>(x[l][reg] >> (8 * byte));
        A[g + 8 * (reg & 1)][4 * t + byte + 16 * (reg >> 1)] = DecodeE4M3(code);
      }
    }
  }
}

// mma.sync.m16n8k32 with E4M3 A (row) and E4M3/E5M2 B (col), FP32 accumulate. Fragments (g = lane
// / 4, t = lane % 4; byte i of a register is element +i): A a0 = A[g][4t..], a1 = A[g+8][4t..],
// a2 = A[g][16+4t..], a3 = A[g+8][16+4t..]; B b0 = B[4t..][g], b1 = B[16+4t..][g]; C/D c0, c1 =
// D[g][2t, 2t+1], c2, c3 = D[g+8][2t, 2t+1].
template <bool kE5M2>
inline void MmaFp8(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const auto& x = ShareFragments(a[0], a[1], a[2], a[3], b0, b1);
  // This lane's operands only: A rows g and g + 8, B columns 2t and 2t + 1. A[r][k] is byte k % 4 of
  // register (r >= 8) + 2 (k / 16) of lane 4 (r % 8) + (k % 16) / 4; B[k][n] byte k % 4 of register
  // 4 + k / 16 of lane 4 n + (k % 16) / 4.
  const int g = Lane() / 4, t = Lane() % 4;
  const auto code = [&](int lane, int reg, int k) { return static_cast<uint8_t>(x[lane][reg] >> (8 * (k % 4))); };
  float A[2][32], B[2][32];
  for (int k = 0; k < 32; ++k) {
    for (int h = 0; h < 2; ++h) A[h][k] = DecodeE4M3(code(4 * g + (k % 16) / 4, h + 2 * (k / 16), k));
    for (int c = 0; c < 2; ++c) {
      const uint8_t b = code(4 * (2 * t + c) + (k % 16) / 4, 4 + k / 16, k);
      B[c][k] = kE5M2 ? DecodeE5M2(b) : DecodeE4M3(b);
    }
  }
  AccumulateLaneFragment(d, A, B);
}

}  // namespace fp8serve::emu
