// Device code: dynamic 1x128 E4M3 quantization of activations, the contract's step 1
// (kernels/numerics/quantize.h). One warp per (row, 128-column group): each lane holds four
// columns, the group's amax is a warp-shuffle max, and every lane converts its values with the
// hardware's round-to-nearest-even, saturating cvt.
#pragma once

#include <cuda_fp8.h>
#include <cstdint>

#include "kernels/cuda/requant.cuh"

namespace fp8serve::cuda {

// NOTES: fmaxf ignores NaN exactly like the CPU's `a > m ? a : m`, so the scale of a group that
// holds a NaN is the amax of its other values on both sides; the NaN itself encodes to NaN.
// q rows are ldq bytes apart (cols <= ldq <= groups * 128): columns cols..ldq are written as zero
// codes, the padding the GEMMs' 128-aligned K expects.
__global__ void quantize_act_1x128_kernel(const float* __restrict__ x, int rows, int cols, uint8_t* __restrict__ q,
                                          int ldq, float* __restrict__ scales) {
  constexpr int kGroup = 128;
  const int groups = (cols + kGroup - 1) / kGroup;
  const int warp = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) / 32);
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (warp >= rows * groups) return;
  const int row = warp / groups, g = warp % groups;
  const int c0 = g * kGroup;
  const float* xr = x + static_cast<size_t>(row) * cols;

  float v[4];
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int c = c0 + i * 32 + lane;
    v[i] = c < cols ? xr[c] : 0.0f;
    amax = fmaxf(amax, fabsf(v[i]));
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));

  // An IEEE division for the scale (nvcc's default -prec-div=true) and the division's codes
  // (requant.cuh), so s and the codes of x / s match the CPU bit for bit.
  const float s = E4M3GroupScale(amax);
  if (lane == 0) scales[static_cast<size_t>(row) * groups + g] = s;
  uint16_t codes[2];
  E4M3Requant(s).Pairs<2>(v, codes);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int c = c0 + i * 32 + lane;
    if (c < cols) {
      q[static_cast<size_t>(row) * ldq + c] = static_cast<uint8_t>(codes[i / 2] >> (8 * (i % 2)));
    } else if (c < ldq) {
      q[static_cast<size_t>(row) * ldq + c] = 0;
    }
  }
}

}  // namespace fp8serve::cuda
