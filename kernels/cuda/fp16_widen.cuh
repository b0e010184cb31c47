// Device helpers for FP8 products on FP16 tensor-core MMAs, where mma.sync has no FP8 form
// (Hopper: its FP8 tensor cores are reached through wgmma). Every E4M3 and E5M2 value is an FP16
// value and every product of two is exact in FP32, so a widened MMA differs from an FP8 one only in
// the FP32 summation order. Used by the sm89 GEMM on sm_90 and by the fused MLP's widened kind.
#pragma once

#include <cstdint>

#include "kernels/numerics/fp8.h"

namespace fp8serve::cuda {

// Four FP8 codes (one b32 fragment register) -> two f16x2, exactly: lo holds bytes 0-1, hi bytes
// 2-3, each with the lower byte in the lower half.
template <Fp8Format kFormat>
__device__ __forceinline__ void WidenFp8x4(uint32_t x, uint32_t& lo, uint32_t& hi) {
  if constexpr (kFormat == Fp8Format::kE4M3) {
    asm("{\n.reg .b16 l, h;\nmov.b32 {l, h}, %2;\ncvt.rn.f16x2.e4m3x2 %0, l;\ncvt.rn.f16x2.e4m3x2 %1, h;\n}\n"
        : "=r"(lo), "=r"(hi)
        : "r"(x));
  } else {
    asm("{\n.reg .b16 l, h;\nmov.b32 {l, h}, %2;\ncvt.rn.f16x2.e5m2x2 %0, l;\ncvt.rn.f16x2.e5m2x2 %1, h;\n}\n"
        : "=r"(lo), "=r"(hi)
        : "r"(x));
  }
}

// d += A(16x16 f16) . B(16x8 f16), FP32 accumulate (mma.sync m16n8k16 fragments).
__device__ __forceinline__ void MmaM16N8K16F16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

}  // namespace fp8serve::cuda
