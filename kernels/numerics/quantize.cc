#include "kernels/numerics/quantize.h"

#include <algorithm>
#include <cmath>

namespace fp8serve {

const char* GranularityName(ScaleGranularity g) {
  switch (g) {
    case ScaleGranularity::kPerTensor: return "tensor";
    case ScaleGranularity::kPerChannel: return "channel";
    case ScaleGranularity::kBlock128: return "block";
  }
  return "?";
}

std::optional<ScaleGranularity> ParseGranularity(std::string_view name) {
  if (name == "tensor" || name == "per-tensor") return ScaleGranularity::kPerTensor;
  if (name == "channel" || name == "per-channel") return ScaleGranularity::kPerChannel;
  if (name == "block" || name == "block128" || name == "128x128") return ScaleGranularity::kBlock128;
  return std::nullopt;
}

size_t NumWeightScales(ScaleGranularity g, int rows, int cols) {
  switch (g) {
    case ScaleGranularity::kPerTensor: return 1;
    case ScaleGranularity::kPerChannel: return static_cast<size_t>(rows);
    case ScaleGranularity::kBlock128:
      return static_cast<size_t>(CeilDiv(rows, kQuantBlock)) * CeilDiv(cols, kQuantBlock);
  }
  return 0;
}

namespace {

// max |x| over n values, ignoring NaN like fmaxf. Computed on the bit patterns: for non-negative
// floats integer order is float order, so an integer max reduction (which vectorizes, unlike a
// float one under IEEE semantics) gives the same answer. NaN patterns (above +inf's) count as 0.
inline float AbsMax(const float* x, size_t n) {
  int32_t m = 0;
  for (size_t i = 0; i < n; ++i) {
    int32_t b = std::bit_cast<int32_t>(x[i]) & 0x7fffffff;
    b = b > 0x7f800000 ? 0 : b;
    m = b > m ? b : m;
  }
  return std::bit_cast<float>(m);
}

float AbsMax2D(const float* w, int cols, int r0, int r1, int c0, int c1) {
  float m = 0.0f;
  for (int r = r0; r < r1; ++r) m = std::max(m, AbsMax(w + static_cast<size_t>(r) * cols + c0, c1 - c0));
  return m;
}

void EncodeRun(const float* w, size_t n, float scale, Fp8Format f, uint8_t* out) {
  if (f == Fp8Format::kE4M3) {
    for (size_t i = 0; i < n; ++i) out[i] = EncodeE4M3(w[i] / scale);
  } else {
    for (size_t i = 0; i < n; ++i) out[i] = EncodeE5M2(w[i] / scale);
  }
}

float WeightScale(float amax, Fp8Format f) {
  const float s = amax / Fp8MaxFinite(f);
  return s > 0.0f && std::isfinite(s) ? s : 1.0f;
}

}  // namespace

QuantizedWeights QuantizeWeights(const float* w, int rows, int cols, Fp8Format format,
                                 ScaleGranularity granularity) {
  QuantizedWeights q;
  q.rows = rows;
  q.cols = cols;
  q.format = format;
  q.granularity = granularity;
  q.data.resize(static_cast<size_t>(rows) * cols);
  q.scales.resize(NumWeightScales(granularity, rows, cols));
  switch (granularity) {
    case ScaleGranularity::kPerTensor: {
      q.scales[0] = WeightScale(AbsMax(w, q.data.size()), format);
      EncodeRun(w, q.data.size(), q.scales[0], format, q.data.data());
      break;
    }
    case ScaleGranularity::kPerChannel: {
      for (int r = 0; r < rows; ++r) {
        const float* row = w + static_cast<size_t>(r) * cols;
        q.scales[r] = WeightScale(AbsMax(row, cols), format);
        EncodeRun(row, cols, q.scales[r], format, q.data.data() + static_cast<size_t>(r) * cols);
      }
      break;
    }
    case ScaleGranularity::kBlock128: {
      const int kb = CeilDiv(cols, kQuantBlock);
      for (int rb = 0; rb < CeilDiv(rows, kQuantBlock); ++rb) {
        const int r0 = rb * kQuantBlock, r1 = std::min(rows, r0 + kQuantBlock);
        for (int cb = 0; cb < kb; ++cb) {
          const int c0 = cb * kQuantBlock, c1 = std::min(cols, c0 + kQuantBlock);
          const float s = WeightScale(AbsMax2D(w, cols, r0, r1, c0, c1), format);
          q.scales[static_cast<size_t>(rb) * kb + cb] = s;
          for (int r = r0; r < r1; ++r) {
            const size_t off = static_cast<size_t>(r) * cols + c0;
            EncodeRun(w + off, c1 - c0, s, format, q.data.data() + off);
          }
        }
      }
      break;
    }
  }
  return q;
}

void DequantizeWeights(const uint8_t* data, const float* scales, int rows, int cols, Fp8Format format,
                       ScaleGranularity granularity, float* out) {
  const auto& table = Fp8DecodeTable(format);
  for (int r = 0; r < rows; ++r) {
    const size_t off = static_cast<size_t>(r) * cols;
    for (int c = 0; c < cols; ++c) {
      out[off + c] = table[data[off + c]] * WeightScaleAt(scales, granularity, cols, r, c);
    }
  }
}

void DequantizeWeights(const QuantizedWeights& q, float* out) {
  DequantizeWeights(q.data.data(), q.scales.data(), q.rows, q.cols, q.format, q.granularity, out);
}

void QuantizeActivations(const float* x, int rows, int cols, uint8_t* q, float* scales) {
  const int groups = CeilDiv(cols, kQuantBlock);
  for (int r = 0; r < rows; ++r) {
    for (int g = 0; g < groups; ++g) {
      const int c0 = g * kQuantBlock, n = std::min(cols - c0, kQuantBlock);
      const size_t off = static_cast<size_t>(r) * cols + c0;
      const float s = ActivationScale(AbsMax(x + off, n));
      scales[static_cast<size_t>(r) * groups + g] = s;
      for (int i = 0; i < n; ++i) q[off + i] = EncodeE4M3Quotient(x[off + i], s);
    }
  }
}

// NOTES: this runs before every FP8 layer of the fast CPU forward, on every activation, so it is
// compiled twice: for AVX2 (8-wide division and blends) and for baseline x86-64, picked at load time
// by the CPU's features. Both compute the same bits.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target_clones("avx2", "default")))
#endif
void QuantDequantActivations(const float* x, int rows, int cols, float* y) {
  const int groups = CeilDiv(cols, kQuantBlock);
  for (int r = 0; r < rows; ++r) {
    for (int g = 0; g < groups; ++g) {
      const int c0 = g * kQuantBlock, n = std::min(cols - c0, kQuantBlock);
      const size_t off = static_cast<size_t>(r) * cols + c0;
      const float* src = x + off;
      float* dst = y + off;  // may be src itself: each element is read before it is written
      const float s = ActivationScale(AbsMax(src, n));
      for (int i = 0; i < n; ++i) dst[i] = RoundToE4M3(src[i] / s) * s;
    }
  }
}

void QuantDequantActivations(float* x, int rows, int cols) { QuantDequantActivations(x, rows, cols, x); }

}  // namespace fp8serve
