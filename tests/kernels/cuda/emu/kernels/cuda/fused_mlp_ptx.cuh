// Host version of kernels/cuda/fused_mlp_ptx.cuh for the fused kernel's emulation test (see
// tests/kernels/cuda/emu/emu_runtime.h): the same functions, each doing what its PTX instruction is
// defined to do.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/numerics/fp8.h"
#include "tests/kernels/cuda/emu/emu_runtime.h"

namespace fp8serve::cuda::fused_detail {

inline uint32_t SmemAddr(const void* p) {
  const uint8_t* base = emu::SmemBase();
  const uint8_t* q = static_cast<const uint8_t*>(p);
  if (q < base || q > base + emu::CurrentCta()->smem.size()) emu::Fail("SmemAddr of a non-shared address");
  return static_cast<uint32_t>(q - base);
}

inline uint8_t* DynamicSmem() { return emu::SmemBase(); }

// cp.async: the copy is recorded in the open group; it lands at issue, or (late copies) when a
// wait retires its group.
inline void CpAsync16(uint32_t dst, const void* src) {
  emu::CheckSmem(dst, 16, 16);
  if (reinterpret_cast<uintptr_t>(src) % 16 != 0) emu::Fail("cp.async 16 from a misaligned address");
  emu::tl_open.push_back({dst, src, 16});
  if (!emu::CurrentCta()->late) emu::Land(emu::tl_open.back());
}
inline void CpAsync4(uint32_t dst, const void* src) {
  emu::CheckSmem(dst, 4, 4);
  if (reinterpret_cast<uintptr_t>(src) % 4 != 0) emu::Fail("cp.async 4 from a misaligned address");
  emu::tl_open.push_back({dst, src, 4});
  if (!emu::CurrentCta()->late) emu::Land(emu::tl_open.back());
}
inline void CpAsyncCommit() {
  emu::tl_groups.push_back(std::move(emu::tl_open));
  emu::tl_open.clear();
}
template <int kPending>
inline void CpAsyncWait() {
  while (static_cast<int>(emu::tl_groups.size()) > kPending) {
    if (emu::CurrentCta()->late) {
      for (const emu::Copy& c : emu::tl_groups.front()) emu::Land(c);
    }
    emu::tl_groups.erase(emu::tl_groups.begin());
  }
}

// ldmatrix.m8n8.x4.b16: lanes 8j..8j+7 give the row addresses of matrix j; lane (g, t) = (lane / 4,
// lane % 4) receives bytes 4t..4t+3 of row g of each matrix, register j from matrix j.
inline void LdMatrixX4(uint32_t addr, uint32_t (&r)[4]) {
  emu::CheckSmem(addr, 16, 16);
  auto& x = emu::CurrentCta()->exchange[emu::Warp()];
  x[emu::Lane()][0] = addr;
  emu::WarpSync();
  const int g = emu::Lane() / 4, t = emu::Lane() % 4;
  for (int j = 0; j < 4; ++j) {
    const uint32_t row = static_cast<uint32_t>(x[8 * j + g][0]);
    std::memcpy(&r[j], emu::SmemBase() + row + 4 * t, 4);
  }
  emu::WarpSync();
}

// mma.sync.m16n8k32 with E4M3 A (row) and E4M3/E5M2 B (col), FP32 accumulate. Fragments (g = lane
// / 4, t = lane % 4; byte i of a register is element +i): A a0 = A[g][4t..], a1 = A[g+8][4t..],
// a2 = A[g][16+4t..], a3 = A[g+8][16+4t..]; B b0 = B[4t..][g], b1 = B[16+4t..][g]; C/D c0, c1 =
// D[g][2t, 2t+1], c2, c3 = D[g+8][2t, 2t+1].
template <bool kE5M2>
inline void MmaFp8(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const auto& x = emu::ShareFragments(a[0], a[1], a[2], a[3], b0, b1);
  float A[16][32], B[32][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int reg = 0; reg < 4; ++reg) {
      for (int byte = 0; byte < 4; ++byte) {
        const uint8_t code = static_cast<uint8_t>(x[l][reg] >> (8 * byte));
        A[g + 8 * (reg & 1)][4 * t + byte + 16 * (reg >> 1)] = DecodeE4M3(code);
      }
    }
    for (int reg = 0; reg < 2; ++reg) {
      for (int byte = 0; byte < 4; ++byte) {
        const uint8_t code = static_cast<uint8_t>(x[l][4 + reg] >> (8 * byte));
        B[4 * t + byte + 16 * reg][g] = kE5M2 ? DecodeE5M2(code) : DecodeE4M3(code);
      }
    }
  }
  emu::WarpSync();
  emu::AccumulateFragment(d, A, B);
}

inline uint64_t GlobalTimerNs() { return 0; }
inline uint32_t SmId() { return 0; }

}  // namespace fp8serve::cuda::fused_detail
