// The 1x128 activation quantizer's checks against the CPU's QuantizeActivations, shared by the GPU
// test (act_quant_test.cc) and the kernel's host emulation (small_kernels_emu_test.cc): each takes
// the function that runs the kernel (over outputs poisoned with a code and NaN scales) and requires
// bit-identical codes and scales.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/numerics/fp8.h"
#include "kernels/numerics/quantize.h"

namespace fp8serve::act_quant_test {

struct Quantized {
  std::vector<uint8_t> q;  // [rows, ldq]
  std::vector<float> s;    // [rows, CeilDiv(cols, 128)]
};

// Runs the kernel on x [rows, cols] into rows ldq bytes apart, over outputs poisoned with
// `poison_code` and NaN scales.
using QuantizeFn =
    std::function<absl::StatusOr<Quantized>(const std::vector<float>& x, int rows, int cols, int ldq, int poison_code)>;

inline std::vector<float> RandomRows(int rows, int cols, float sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> x(static_cast<size_t>(rows) * cols);
  for (float& v : x) v = normal(rng);
  return x;
}

// Random rows of each shape: the kernel's codes and scales equal the CPU's.
inline void CheckBitIdentical(const QuantizeFn& quantize, const std::vector<std::pair<int, int>>& shapes) {
  for (auto [rows, cols] : shapes) {
    const std::vector<float> x = RandomRows(rows, cols, 3.0f, 42u + rows);
    std::vector<uint8_t> want_q(x.size());
    std::vector<float> want_s(static_cast<size_t>(rows) * CeilDiv(cols, 128));
    QuantizeActivations(x.data(), rows, cols, want_q.data(), want_s.data());
    absl::StatusOr<Quantized> got = quantize(x, rows, cols, /*ldq=*/cols, 0xAA);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->q, want_q) << rows << "x" << cols;
    EXPECT_EQ(got->s, want_s) << rows << "x" << cols;
  }
}

// The GEMMs' padded layout: rows ldq = CeilDiv(cols, 128) * 128 bytes apart, padding written as
// zero codes over a poisoned buffer, values and scales as the CPU's.
inline void CheckPaddedLayout(const QuantizeFn& quantize) {
  for (auto [rows, cols] : {std::pair{1, 784}, {65, 300}, {3, 10}}) {
    const int ldq = CeilDiv(cols, 128) * 128;
    const std::vector<float> x = RandomRows(rows, cols, 2.0f, 7u + rows);
    std::vector<uint8_t> want_q(x.size());
    std::vector<float> want_s(static_cast<size_t>(rows) * CeilDiv(cols, 128));
    QuantizeActivations(x.data(), rows, cols, want_q.data(), want_s.data());
    absl::StatusOr<Quantized> got = quantize(x, rows, cols, ldq, 0x7F);
    ASSERT_TRUE(got.ok()) << got.status();
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < ldq; ++c) {
        const uint8_t want = c < cols ? want_q[static_cast<size_t>(r) * cols + c] : 0;
        ASSERT_EQ(got->q[static_cast<size_t>(r) * ldq + c], want) << "row " << r << " col " << c << " of " << cols;
      }
    }
    EXPECT_EQ(got->s, want_s) << rows << "x" << cols;
  }
}

// The quantizer's codes come from a reciprocal where that provably gives the division's code
// (kernels/cuda/requant.cuh); these rows put x / s on and around every E4M3 rounding boundary (the
// midpoints between adjacent codes, where ties go to even, and the saturation point), stepped
// through the neighbouring floats, for scales over many binades, plus zeros of both signs,
// subnormals, infinities and NaN: the cases where a reciprocal and a division could disagree.
inline void CheckRoundingBoundaries(const QuantizeFn& quantize) {
  std::vector<float> boundaries;
  for (int c = 0; c < 0x7e; ++c) boundaries.push_back(0.5f * (DecodeE4M3(c) + DecodeE4M3(c + 1)));
  boundaries.push_back(kE4M3Max);
  constexpr int kSteps = 6;  // floats on each side of a boundary
  std::vector<float> values;
  for (float b : boundaries) {
    for (int sign : {1, -1}) {
      for (int k = -kSteps; k <= kSteps; ++k) values.push_back(sign * b);  // stepped by k below
    }
  }
  const int per_row_groups = static_cast<int>((values.size() + 126) / 127);
  const int cols = per_row_groups * 128;
  std::vector<float> x;
  // Scales over many binades, one subnormal (which divides) and one near the top of FP32
  const float amaxes[] = {1e-37f, 0x1p-40f, 0x1.3p-12f, 0.0371f, 1.0f, 3.1f, 448.0f, 0x1.9p20f, 0x1p60f, 3e38f};
  for (float amax : amaxes) {
    float s = amax / kE4M3Max;
    s = s > 0.0f ? s : 1.0f;
    std::vector<float> row(static_cast<size_t>(cols), 0.0f);
    size_t next = 0;
    for (int g = 0; g < per_row_groups; ++g) {
      row[static_cast<size_t>(g) * 128] = amax;  // every group's amax, so its scale is s
      for (int i = 1; i < 128 && next < values.size(); ++i, ++next) {
        // values[next] = +-boundary; step it k floats through the neighbours of boundary x s
        const int k = static_cast<int>(next % (2 * kSteps + 1)) - kSteps;
        float v = values[next] * s;
        for (int j = 0; j < (k < 0 ? -k : k); ++j) v = std::nextafter(v, k < 0 ? 0.0f : v * 2.0f);
        row[static_cast<size_t>(g) * 128 + i] = std::fabs(v) <= amax ? v : std::copysign(amax, v);
      }
    }
    x.insert(x.end(), row.begin(), row.end());
  }
  // A row of special values (its groups' scales come from their finite values)
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::denorm_min(), -1e-40f, 1e-38f, -3.0f, 5.0f,
                            nan, -nan, 1e30f, -1e-30f};
  std::vector<float> row(static_cast<size_t>(cols), 0.0f);
  for (size_t i = 0; i < row.size(); ++i) row[i] = specials[i % (sizeof(specials) / sizeof(specials[0]))];
  row[static_cast<size_t>(cols) - 1] = inf;  // the last group: an infinite amax
  row[static_cast<size_t>(cols) - 2] = -inf;
  x.insert(x.end(), row.begin(), row.end());

  const int rows = static_cast<int>(x.size() / static_cast<size_t>(cols));
  std::vector<uint8_t> want_q(x.size());
  std::vector<float> want_s(static_cast<size_t>(rows) * per_row_groups);
  QuantizeActivations(x.data(), rows, cols, want_q.data(), want_s.data());
  absl::StatusOr<Quantized> got = quantize(x, rows, cols, cols, 0x55);
  ASSERT_TRUE(got.ok()) << got.status();
  int mismatches = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (got->q[i] != want_q[i] && ++mismatches <= 10) {
      ADD_FAILURE() << "row " << i / cols << " col " << i % cols << ": x " << std::hexfloat << x[i] << " scale "
                    << want_s[(i / cols) * per_row_groups + (i % cols) / 128] << ": kernel code 0x" << std::hex
                    << int(got->q[i]) << ", CPU 0x" << int(want_q[i]);
    }
  }
  EXPECT_EQ(mismatches, 0);
  for (size_t i = 0; i < want_s.size(); ++i) {
    // NaN scales cannot occur (amax ignores NaN); compare bits
    EXPECT_EQ(std::memcmp(&got->s[i], &want_s[i], sizeof(float)), 0) << "scale " << i;
  }
  std::printf("%d rows x %d columns on rounding boundaries and special values: %d mismatches\n", rows, cols, mismatches);
}

}  // namespace fp8serve::act_quant_test
