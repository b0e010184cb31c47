// Weight and activation quantizers against the contract, computed independently in the test.
#include "kernels/numerics/quantize.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace fp8serve {
namespace {

std::vector<float> RandomMatrix(int rows, int cols, uint32_t seed, float spread_log2 = 6.0f) {
  // Magnitudes spread over 2^-spread..2^spread so that groups differ in scale, both signs.
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> e(-spread_log2, spread_log2);
  std::bernoulli_distribution neg(0.5);
  std::vector<float> m(static_cast<size_t>(rows) * cols);
  for (float& v : m) v = std::exp2(e(rng)) * (neg(rng) ? -1.0f : 1.0f);
  return m;
}

struct WeightCase {
  int rows, cols;
  Fp8Format format;
  ScaleGranularity granularity;
};

class WeightQuantTest : public ::testing::TestWithParam<WeightCase> {};

TEST_P(WeightQuantTest, ScalesAndCodesFollowTheContract) {
  const WeightCase c = GetParam();
  const std::vector<float> w = RandomMatrix(c.rows, c.cols, 11 + c.rows);
  const QuantizedWeights q = QuantizeWeights(w.data(), c.rows, c.cols, c.format, c.granularity);
  ASSERT_EQ(q.scales.size(), NumWeightScales(c.granularity, c.rows, c.cols));
  ASSERT_EQ(q.data.size(), w.size());

  // Independent amax per scale group.
  std::vector<float> amax(q.scales.size(), 0.0f);
  for (int r = 0; r < c.rows; ++r) {
    for (int k = 0; k < c.cols; ++k) {
      size_t g = 0;
      if (c.granularity == ScaleGranularity::kPerChannel) g = r;
      if (c.granularity == ScaleGranularity::kBlock128) g = static_cast<size_t>(r / 128) * CeilDiv(c.cols, 128) + k / 128;
      amax[g] = std::max(amax[g], std::fabs(w[static_cast<size_t>(r) * c.cols + k]));
    }
  }
  const float fmax = Fp8MaxFinite(c.format);
  for (size_t g = 0; g < amax.size(); ++g) EXPECT_EQ(q.scales[g], amax[g] / fmax) << "group " << g;

  std::vector<float> dq(w.size());
  DequantizeWeights(q, dq.data());
  // Half an ulp of the format, relative: 2^-4 for E4M3, 2^-3 for E5M2 (normals); subnormals: half a step.
  const float rel = c.format == Fp8Format::kE4M3 ? 0x1p-4f : 0x1p-3f;
  const float sub_step = c.format == Fp8Format::kE4M3 ? 0x1p-9f : 0x1p-16f;
  int max_codes = 0;
  for (int r = 0; r < c.rows; ++r) {
    for (int k = 0; k < c.cols; ++k) {
      const size_t i = static_cast<size_t>(r) * c.cols + k;
      const float s = WeightScaleAt(q.scales.data(), c.granularity, c.cols, r, k);
      ASSERT_EQ(q.data[i], EncodeFp8(c.format, w[i] / s)) << r << "," << k;
      EXPECT_LE(std::fabs(dq[i] - w[i]), std::max(rel * std::fabs(w[i]), 0.5f * sub_step * s) * 1.0001f) << r << "," << k;
      max_codes += (q.data[i] & 0x7f) == (c.format == Fp8Format::kE4M3 ? 0x7e : 0x7b);
    }
  }
  EXPECT_GE(max_codes, static_cast<int>(q.scales.size())) << "each group's amax maps to the largest code";
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, WeightQuantTest,
    ::testing::Values(WeightCase{1, 1, Fp8Format::kE4M3, ScaleGranularity::kPerTensor},
                      WeightCase{256, 784, Fp8Format::kE4M3, ScaleGranularity::kPerChannel},
                      WeightCase{256, 784, Fp8Format::kE4M3, ScaleGranularity::kBlock128},
                      WeightCase{130, 257, Fp8Format::kE4M3, ScaleGranularity::kBlock128},
                      WeightCase{130, 257, Fp8Format::kE5M2, ScaleGranularity::kBlock128},
                      WeightCase{10, 256, Fp8Format::kE5M2, ScaleGranularity::kPerChannel},
                      WeightCase{33, 100, Fp8Format::kE5M2, ScaleGranularity::kPerTensor}));

TEST(WeightQuantTest, ZeroGroupsGetUnitScale) {
  std::vector<float> w(200 * 300, 0.0f);
  w[5] = 2.0f;  // only block (0, 0) and row 0 are non-zero
  const QuantizedWeights b = QuantizeWeights(w.data(), 200, 300, Fp8Format::kE4M3, ScaleGranularity::kBlock128);
  EXPECT_EQ(b.scales[0], 2.0f / 448.0f);
  for (size_t g = 1; g < b.scales.size(); ++g) EXPECT_EQ(b.scales[g], 1.0f);
  const QuantizedWeights ch = QuantizeWeights(w.data(), 200, 300, Fp8Format::kE4M3, ScaleGranularity::kPerChannel);
  EXPECT_EQ(ch.scales[1], 1.0f);
  EXPECT_EQ(std::count(ch.data.begin(), ch.data.end(), 0), static_cast<long>(w.size()) - 1);
}

TEST(ActivationQuantTest, OneScalePerRowAndGroup) {
  for (int cols : {1, 127, 128, 129, 300, 784}) {
    const int rows = 5;
    const std::vector<float> x = RandomMatrix(rows, cols, 3 + cols, 10.0f);
    const int groups = CeilDiv(cols, 128);
    std::vector<uint8_t> q(x.size(), 0xAA);
    std::vector<float> s(static_cast<size_t>(rows) * groups, std::numeric_limits<float>::quiet_NaN());
    QuantizeActivations(x.data(), rows, cols, q.data(), s.data());
    for (int r = 0; r < rows; ++r) {
      for (int g = 0; g < groups; ++g) {
        float amax = 0;
        for (int k = g * 128; k < std::min(cols, g * 128 + 128); ++k) amax = std::max(amax, std::fabs(x[r * cols + k]));
        const float want_s = amax / 448.0f;
        ASSERT_EQ(s[r * groups + g], want_s) << "cols " << cols << " row " << r << " group " << g;
        for (int k = g * 128; k < std::min(cols, g * 128 + 128); ++k) {
          ASSERT_EQ(q[r * cols + k], EncodeE4M3(x[r * cols + k] / want_s)) << cols << " " << r << " " << k;
        }
      }
    }
  }
}

TEST(ActivationQuantTest, ZeroAndNanGroups) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> x(256, 0.0f);
  x[130] = nan;
  x[131] = -3.0f;
  std::vector<uint8_t> q(256);
  std::vector<float> s(2);
  QuantizeActivations(x.data(), 1, 256, q.data(), s.data());
  EXPECT_EQ(s[0], 1.0f) << "an all-zero group uses scale 1";
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(s[1], 3.0f / 448.0f) << "amax ignores NaN";
  EXPECT_EQ(q[130], 0x7f) << "NaN stays NaN";
  EXPECT_EQ(q[131], 0xfe) << "-3 is -amax -> -448";
}

// A NaN quotient's code takes the dividend's sign, whatever sign the platform's division gives its
// NaN (x86's default NaN from inf / inf is negative, the GPU's positive): -NaN, and +-inf in a
// group whose amax is infinite (scale inf, so inf / inf).
TEST(ActivationQuantTest, NanCodesKeepTheInputsSign) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> x(256, 1.0f);
  x[5] = -nan;
  x[6] = nan;
  x[128] = inf;
  x[129] = -inf;
  x[130] = -2.0f;
  std::vector<uint8_t> q(256);
  std::vector<float> s(2);
  QuantizeActivations(x.data(), 1, 256, q.data(), s.data());
  EXPECT_EQ(q[5], 0xff) << "-NaN";
  EXPECT_EQ(q[6], 0x7f) << "+NaN";
  ASSERT_EQ(s[1], inf) << "an infinite amax gives an infinite scale";
  EXPECT_EQ(q[128], 0x7f) << "inf / inf";
  EXPECT_EQ(q[129], 0xff) << "-inf / inf";
  EXPECT_EQ(q[130], 0x80) << "-2 / inf is -0";
  EXPECT_EQ(EncodeE4M3Quotient(-nan, 2.0f), 0xff);
  EXPECT_EQ(EncodeE4M3Quotient(-0.0f, 2.0f), 0x80);
  EXPECT_EQ(EncodeE4M3Quotient(-896.0f, 2.0f), 0xfe);
}

// The fast forward's in-place quantize-dequantize must produce exactly decode(q) * s.
TEST(ActivationQuantTest, QuantDequantMatchesQuantize) {
  for (int cols : {1, 100, 128, 300, 784, 1000}) {
    const int rows = 17;
    std::vector<float> x = RandomMatrix(rows, cols, 99 + cols, 20.0f);
    x[3] = 0.0f;
    x[4] = -0.0f;
    x[5] = 1e-30f;
    const int groups = CeilDiv(cols, 128);
    std::vector<uint8_t> q(x.size());
    std::vector<float> s(static_cast<size_t>(rows) * groups);
    QuantizeActivations(x.data(), rows, cols, q.data(), s.data());
    std::vector<float> y = x;
    QuantDequantActivations(y.data(), rows, cols);
    for (int r = 0; r < rows; ++r) {
      for (int k = 0; k < cols; ++k) {
        const size_t i = static_cast<size_t>(r) * cols + k;
        const float want = DecodeE4M3(q[i]) * s[r * groups + k / 128];
        ASSERT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(want)) << "cols " << cols << " at " << r << "," << k;
      }
    }
  }
}

TEST(GranularityTest, Names) {
  EXPECT_EQ(ParseGranularity("block"), ScaleGranularity::kBlock128);
  EXPECT_EQ(ParseGranularity("channel"), ScaleGranularity::kPerChannel);
  EXPECT_EQ(ParseGranularity("tensor"), ScaleGranularity::kPerTensor);
  EXPECT_FALSE(ParseGranularity("row").has_value());
  EXPECT_EQ(NumWeightScales(ScaleGranularity::kBlock128, 257, 129), 3u * 2u);
}

}  // namespace
}  // namespace fp8serve
