// Host version of kernels/cuda/fp16_widen.cuh for the fused kernel's emulation test (see
// tests/kernels/cuda/emu/emu_runtime.h).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "kernels/numerics/fp8.h"
#include "tests/kernels/cuda/emu/emu_runtime.h"

namespace fp8serve::cuda {

// cvt.rn.f16x2.e4m3x2 / e5m2x2 on bytes 0-1 (lo) and 2-3 (hi), the lower byte in the lower half.
// Every FP8 value is an FP16 value: the conversion must be exact.
template <Fp8Format kFormat>
inline void WidenFp8x4(uint32_t x, uint32_t& lo, uint32_t& hi) {
  uint16_t h[4];
  for (int i = 0; i < 4; ++i) {
    const uint8_t code = static_cast<uint8_t>(x >> (8 * i));
    const float f = kFormat == Fp8Format::kE4M3 ? DecodeE4M3(code) : DecodeE5M2(code);
    const __half v = __float2half_rn(f);
    if (!(__half2float(v) == f) && !std::isnan(f)) emu::Fail("an FP8 value that is not an FP16 value");
    std::memcpy(&h[i], static_cast<const void*>(&v), 2);
  }
  lo = h[0] | (static_cast<uint32_t>(h[1]) << 16);
  hi = h[2] | (static_cast<uint32_t>(h[3]) << 16);
}

// mma.sync.m16n8k16 f16 x f16 -> f32. Fragments (g = lane / 4, t = lane % 4; half h of a register is
// element +h): A a0 = A[g][2t..], a1 = A[g+8][2t..], a2 = A[g][8+2t..], a3 = A[g+8][8+2t..];
// B b0 = B[2t..][g], b1 = B[8+2t..][g]; C/D as in m16n8k32.
inline void MmaM16N8K16F16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                           uint32_t b1) {
  const auto half_of = [](uint64_t reg, int h) {
    const uint16_t bits = static_cast<uint16_t>(reg >> (16 * h));
    __half v;
    std::memcpy(static_cast<void*>(&v), &bits, 2);
    return __half2float(v);
  };
  const auto& x = emu::ShareFragments(a0, a1, a2, a3, b0, b1);
  // This lane's operands only: A rows g and g + 8 (A[r][k]: half k % 2 of register (r >= 8) + 2 (k /
  // 8) of lane 4 (r % 8) + (k % 8) / 2), B columns 2t and 2t + 1 (B[k][n]: half k % 2 of register
  // 4 + k / 8 of lane 4 n + (k % 8) / 2).
  const int g = emu::Lane() / 4, t = emu::Lane() % 4;
  float A[2][16], B[2][16];
  for (int k = 0; k < 16; ++k) {
    for (int h = 0; h < 2; ++h) A[h][k] = half_of(x[4 * g + (k % 8) / 2][h + 2 * (k / 8)], k % 2);
    for (int c = 0; c < 2; ++c) B[c][k] = half_of(x[4 * (2 * t + c) + (k % 8) / 2][4 + k / 8], k % 2);
  }
  emu::AccumulateLaneFragment(d, A, B);
}

}  // namespace fp8serve::cuda
