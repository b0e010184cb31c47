// Host version of kernels/cuda/sm89_ptx.cuh for the mma.sync GEMM's emulation test (see
// tests/kernels/cuda/emu/emu_runtime.h): the same functions, each doing what its PTX instruction is
// defined to do (emu_warp_ops.h). The MMA path is the test's choice: FP8SERVE_EMU_SM89_WIDENED 1
// runs Hopper's (FP8 fragments widened to FP16, two m16n8k16 MMAs per k32 step), 0 Ada's (the FP8
// m16n8k32 MMA).
#pragma once

#include <cstdint>

#include "kernels/cuda/fp16_widen.cuh"
#include "kernels/numerics/fp8.h"
#include "tests/kernels/cuda/emu/emu_runtime.h"
#include "tests/kernels/cuda/emu/emu_warp_ops.h"

#ifndef FP8SERVE_EMU_SM89_WIDENED
#error "the sm89 emulation needs FP8SERVE_EMU_SM89_WIDENED (1: Hopper's MMA path, 0: Ada's)"
#endif

namespace fp8serve::cuda::sm89 {

enum class MmaPath { kFp8, kWidened, kNone };
inline constexpr MmaPath kMmaPath = FP8SERVE_EMU_SM89_WIDENED ? MmaPath::kWidened : MmaPath::kFp8;

inline uint8_t* DynamicSmem() { return emu::SmemBase(); }

inline uint32_t smem_u32(const void* p) { return emu::SharedOffset(p); }

// cp.async.cg 16 with a source size: src_bytes of 16 read, the rest zeros (0: nothing read)
inline void cp_async_16(uint32_t dst, const void* src, int src_bytes) { emu::CpAsync(dst, src, 16, src_bytes); }
inline void cp_async_commit() { emu::CpAsyncCommit(); }
template <int N>
inline void cp_async_wait() {
  emu::CpAsyncWait<N>();
}
inline void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) { emu::LdMatrixX4(addr, r); }
template <Fp8Format kBFormat>
inline void mma_m16n8k32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  emu::MmaFp8<kBFormat == Fp8Format::kE5M2>(d, a, b0, b1);
}

}  // namespace fp8serve::cuda::sm89
