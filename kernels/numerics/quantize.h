// Quantizers for the numeric contract (see README "Numeric contract").
//
// Weights, [rows = out, cols = in] row-major, quantize with one FP32 scale per tensor, per output
// channel (row), or per 128x128 block. The scale is amax / max_finite of the chosen FP8 format, so the
// largest magnitude maps to the format's largest value; the stored FP8 times the scale is the weight.
//
// Activations quantize dynamically to E4M3 with one scale per row and 128-column group (1x128):
// s = amax / 448 with amax = max |x| over the group (NaNs ignored, as fmaxf does on CPU and GPU),
// q = E4M3_satfinite(x / s) rounded to nearest even. A group whose s is not positive (all zeros, or
// all NaN) uses s = 1. These exact steps are what every GPU kernel must reproduce.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "kernels/numerics/fp8.h"

namespace fp8serve {

inline constexpr int kQuantBlock = 128;  // K-group of activations, and the weight block edge

constexpr int CeilDiv(int a, int b) { return (a + b - 1) / b; }

enum class ScaleGranularity : uint8_t { kPerTensor, kPerChannel, kBlock128 };
const char* GranularityName(ScaleGranularity g);  // "tensor" / "channel" / "block"
std::optional<ScaleGranularity> ParseGranularity(std::string_view name);

// Number of scales a [rows, cols] weight has at granularity g.
size_t NumWeightScales(ScaleGranularity g, int rows, int cols);

// The scale of weight element (row, col).
inline float WeightScaleAt(const float* scales, ScaleGranularity g, int cols, int row, int col) {
  switch (g) {
    case ScaleGranularity::kPerTensor: return scales[0];
    case ScaleGranularity::kPerChannel: return scales[row];
    case ScaleGranularity::kBlock128:
      return scales[static_cast<size_t>(row / kQuantBlock) * CeilDiv(cols, kQuantBlock) + col / kQuantBlock];
  }
  return 0.0f;
}

struct QuantizedWeights {
  int rows = 0;
  int cols = 0;
  Fp8Format format = Fp8Format::kE4M3;
  ScaleGranularity granularity = ScaleGranularity::kPerChannel;
  std::vector<uint8_t> data;   // [rows, cols]
  std::vector<float> scales;   // NumWeightScales(granularity, rows, cols)
};

// Quantizes w [rows, cols] (row-major, finite values). Saturating encode, so a weight can never
// become inf or NaN. A scale group of all zeros gets scale 1.
QuantizedWeights QuantizeWeights(const float* w, int rows, int cols, Fp8Format format,
                                 ScaleGranularity granularity);

// Writes the dequantized weights (fp8 * scale) into out [rows, cols].
void DequantizeWeights(const QuantizedWeights& q, float* out);
void DequantizeWeights(const uint8_t* data, const float* scales, int rows, int cols, Fp8Format format,
                       ScaleGranularity granularity, float* out);

// The 1x128 activation scale of a group, given its amax (see the header comment).
inline float ActivationScale(float amax) {
  const float s = amax / kE4M3Max;
  return s > 0.0f ? s : 1.0f;
}

// The code of x in a group of scale s: EncodeE4M3(x / s), where a NaN quotient (x NaN, or x
// infinite in a group whose scale is infinite) keeps x's sign. The sign of a NaN that a division
// makes is the platform's (x86's default NaN is negative, the GPU's positive), so the contract
// takes it from x: every platform then gives the same code. For a quotient that is not NaN the sign
// is x's anyway (s > 0), so this is exactly EncodeE4M3(x / s) there.
inline uint8_t EncodeE4M3Quotient(float x, float s) { return EncodeE4M3(std::copysign(x / s, x)); }

// x [rows, cols] -> q [rows, cols] E4M3 codes and scales [rows, CeilDiv(cols, 128)].
void QuantizeActivations(const float* x, int rows, int cols, uint8_t* q, float* scales);

// In place x <- DecodeE4M3(q) * s with the same q and s as QuantizeActivations: the fast CPU
// forward emulates the quantization this way before an FP32 GEMM. Vectorizable, no tables.
void QuantDequantActivations(float* x, int rows, int cols);
// The same from x into y (y may equal x): saves the copy when the input must stay untouched.
void QuantDequantActivations(const float* x, int rows, int cols, float* y);

}  // namespace fp8serve
