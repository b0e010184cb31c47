// Device code: the instructions the mma.sync FP8 GEMM (sm89_fp8_gemm.cuh) is built from, one thin
// wrapper per PTX instruction (cp.async with zero fill, ldmatrix, the FP8 mma.sync; fp16_widen.cuh
// has the widened FP16 form), the dynamic shared memory, and which MMA path the compiled target
// takes. Kept apart so the kernel's host emulation test can put host versions in their place.
#pragma once

#include <cstdint>

#include "kernels/cuda/fp16_widen.cuh"
#include "kernels/numerics/fp8.h"

namespace fp8serve::cuda::sm89 {

// How a k32 step multiplies: the FP8 mma.sync (sm_89), two FP16 mma.sync on widened fragments
// (sm_90, which has no FP8 mma.sync), or not at all (targets without FP8 tensor cores; the
// launchers never run the kernel there). The host compiler's pass never runs device code.
enum class MmaPath { kFp8, kWidened, kNone };
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
inline constexpr MmaPath kMmaPath = MmaPath::kWidened;
#elif defined(__CUDA_ARCH__) && (__CUDA_ARCH__ < 890)
inline constexpr MmaPath kMmaPath = MmaPath::kNone;
#else
inline constexpr MmaPath kMmaPath = MmaPath::kFp8;
#endif

// The dynamic shared memory (the launcher sizes it)
__device__ __forceinline__ uint8_t* DynamicSmem() {
  extern __shared__ __align__(1024) uint8_t sm89_smem[];
  return sm89_smem;
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1; src_bytes = 0 writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += A(16x32 E4M3) . B(32x8, E4M3 or E5M2), FP32 accumulate: the native FP8 tensor-core MMA.
template <Fp8Format kBFormat>
__device__ __forceinline__ void mma_m16n8k32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (kBFormat == Fp8Format::kE4M3) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e5m2.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

}  // namespace fp8serve::cuda::sm89
