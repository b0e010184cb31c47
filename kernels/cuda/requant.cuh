// Device code: the contract's E4M3 codes of v / s (IEEE quotient rounded to FP32, then
// round-to-nearest-even E4M3 with saturation), bit for bit the CPU's QuantizeActivations, for every
// kernel that requantizes: the activation quantizer, the GEMM epilogues and the fused MLP.
//
// NOTES: a correctly rounded division compiles to a reciprocal, five FMAs and a guarded call to a
// slow path, and the guard makes each division its own branch region: a run of them executes one
// after another, ~50 cycles each, on the critical path of every epilogue. Here the codes come from
// q = v * rcp.approx(s), kept only where requant_window.h proves them equal to the division's; the
// rare rest (about 2^-15 of values, and NaN / infinity) is divided, in one branch per call.
#pragma once

#include <cuda_fp8.h>

#include <cstdint>

#include "kernels/cuda/requant_window.h"
#include "kernels/numerics/fp8.h"

namespace fp8serve::cuda {

// E4M3 codes of (x, y), x's in the low byte.
__device__ __forceinline__ uint16_t CvtE4M3x2(float x, float y) {
  return static_cast<uint16_t>(__nv_cvt_float2_to_fp8x2(make_float2(x, y), __NV_SATFINITE, __NV_E4M3));
}

// The contract's 1x128 scale of a group with this amax: amax / 448 as an IEEE division (bit for bit
// the CPU's), 1 for an all-zero group.
__device__ __forceinline__ float E4M3GroupScale(float amax) {
  const float s = __fdiv_rn(amax, kE4M3Max);
  return s > 0.0f ? s : 1.0f;
}

// Requantizes values of one 1x128 group (scale s) to E4M3 codes, exactly as IEEE divisions would.
class E4M3Requant {
 public:
  __device__ __forceinline__ explicit E4M3Requant(float s) : s_(s), fast_(RequantFastScale(s)) {
#if defined(__CUDA_ARCH__)
    asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(r_) : "f"(s));
#else
    // A host build of the kernels (the fused kernel's emulation test): any reciprocal close enough
    // for the window check gives the same codes, which Pairs() verifies or recomputes.
    r_ = 1.0f / s;
#endif
  }

  // codes[i] = the codes of (v[2i] / s, v[2i + 1] / s), the first in the low byte.
  template <int kPairs>
  __device__ __forceinline__ void Pairs(const float (&v)[2 * kPairs], uint16_t (&codes)[kPairs]) const {
    bool exact = fast_;
#pragma unroll
    for (int i = 0; i < kPairs; ++i) {
      uint32_t lo0, hi0, lo1, hi1;
      RequantWindowBits(__float_as_uint(__fmul_rn(v[2 * i], r_)), lo0, hi0);
      RequantWindowBits(__float_as_uint(__fmul_rn(v[2 * i + 1], r_)), lo1, hi1);
      const uint16_t lo = CvtE4M3x2(__uint_as_float(lo0), __uint_as_float(lo1));
      const uint16_t hi = CvtE4M3x2(__uint_as_float(hi0), __uint_as_float(hi1));
      exact = exact && lo == hi;
      codes[i] = lo;
    }
    if (!exact) {
#pragma unroll
      for (int i = 0; i < kPairs; ++i) codes[i] = QuotientCodes(v[2 * i], v[2 * i + 1]);
    }
  }

  // The codes of one row of an mma-style accumulator (acc[mt][nt] = {row g: c, c + 1; row g + 8:
  // c, c + 1}): the kN column pairs of m-tile mt, half h (0: row g, 1: row g + 8).
  template <int kM, int kN>
  __device__ __forceinline__ void FragmentRow(const float (&acc)[kM][kN][4], int mt, int h,
                                              uint16_t (&codes)[kN]) const {
    float v[2 * kN];
#pragma unroll
    for (int nt = 0; nt < kN; ++nt) v[2 * nt] = acc[mt][nt][2 * h], v[2 * nt + 1] = acc[mt][nt][2 * h + 1];
    Pairs<kN>(v, codes);
  }

  __device__ __forceinline__ uint16_t Pair(float x, float y) const {
    const float v[2] = {x, y};
    uint16_t c[1];
    Pairs<1>(v, c);
    return c[0];
  }

 private:
  // The codes of (x / s, y / s) by IEEE divisions, x's in the low byte. A NaN quotient's code keeps
  // the dividend's sign (the contract's EncodeE4M3Quotient): the GPU's division returns a positive
  // NaN whatever the dividend's sign, so the sign is set here rather than trusted to the conversion.
  __device__ __forceinline__ uint16_t QuotientCodes(float x, float y) const {
    const float qx = __fdiv_rn(x, s_), qy = __fdiv_rn(y, s_);
    uint32_t c = CvtE4M3x2(qx, qy);
    if (isnan(qx)) c = (c & 0xff00u) | (signbit(x) ? 0xffu : 0x7fu);
    if (isnan(qy)) c = (c & 0x00ffu) | (signbit(y) ? 0xff00u : 0x7f00u);
    return static_cast<uint16_t>(c);
  }

  float s_;
  bool fast_;
  float r_;
};

}  // namespace fp8serve::cuda
