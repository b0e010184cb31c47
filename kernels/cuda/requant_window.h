// The window test behind the kernels' E4M3 requantization (requant.cuh), in plain C++ so that the
// host tests run the very code the kernels run.
//
// The contract's code of a value v in a group with scale s is E4M3(RN(v / s)): the IEEE quotient
// rounded to FP32, then rounded to nearest-even E4M3 with saturation. The kernels first try
// q = v * r with r = rcp.approx(s), and keep its code only when every float within
// kRequantWindow representable steps of q (in magnitude, same sign) gets the same code: the
// conversion is monotonic in magnitude, so then RN(v / s), which lies inside that window, gets it
// too. Otherwise they divide.
//
// The bound: rcp.approx.f32 is within 1 ulp of 1/s (PTX ISA), so r = (1/s)(1 + e1) with
// |e1| <= 2^-23, and q = RN(v r) = (v/s)(1 + e1)(1 + e2) with |e2| <= 2^-24: |q - v/s| < 1.6 x 2^-23
// |v/s|, which is at most 4 units in the last place of v/s (an ulp is at least 2^-24 of the value),
// and RN(v / s) is within half a unit of v/s. Counted in representable floats, a step down across a
// power of two halves the unit, so the two are at most 2 x (4 + 1/2) = 9 floats apart: a window of
// 16 holds RN(v / s) with room to spare. The bound needs 1/s normal and v/s free of overflow,
// hence RequantFastScale; where v/s is an FP32 subnormal both it and q are far below E4M3's
// smallest code (2^-9), and the window agrees on a zero of v's sign. Infinite quotients saturate
// like their window's finite end; a NaN's window ends in infinity and NaN, so NaN is divided.
#pragma once

#include <cstdint>

#include "kernels/cuda/host_device.h"

namespace fp8serve::cuda {

// Representable floats on each side of q that the window spans.
inline constexpr uint32_t kRequantWindow = 16;

// Whether scale s takes the reciprocal path: s and 1/s normal, with room for the largest quotient.
FP8SERVE_HOST_DEVICE inline bool RequantFastScale(float s) { return s >= 0x1p-125f && s <= 0x1p125f; }

// The ends of q's window: kRequantWindow floats below (stopping at zero) and above (stopping at
// infinity) q in magnitude, as bit patterns with q's sign.
FP8SERVE_HOST_DEVICE inline void RequantWindowBits(uint32_t q, uint32_t& lo, uint32_t& hi) {
  constexpr uint32_t kInf = 0x7f800000u;
  const uint32_t sign = q & 0x80000000u, a = q & 0x7fffffffu;
  lo = sign | ((a > kRequantWindow ? a : kRequantWindow) - kRequantWindow);  // a max and a subtraction
  hi = sign | ((a < kInf - kRequantWindow ? a : kInf - kRequantWindow) + kRequantWindow);
}

}  // namespace fp8serve::cuda
