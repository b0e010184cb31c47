// The CPU reference against an independent double-precision evaluation of the contract, and the
// fast OpenBLAS forward against the reference on random models of several shapes.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/mlp_fast.h"
#include "kernels/cpu/mlp_reference.h"

namespace fp8serve {
namespace {

std::vector<float> Normal(size_t n, std::mt19937& rng, float stddev = 1.0f) {
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// A random FP32 layer with He-like initialization (realistic magnitudes, never zeros).
MlpLayer FloatLayer(int in, int out, std::mt19937& rng) {
  MlpLayer l;
  l.quantized = false;
  l.in = in;
  l.out = out;
  l.f32 = Normal(static_cast<size_t>(in) * out, rng, std::sqrt(2.0f / in));
  l.bias = Normal(out, rng, 0.1f);
  return l;
}

MlpWeights RandomMlp(const std::vector<int>& widths, Fp8Format f, ScaleGranularity g, uint32_t seed) {
  std::mt19937 rng(seed);
  MlpWeights m;
  for (size_t i = 0; i + 1 < widths.size(); ++i) m.layers.push_back(QuantizeLayer(FloatLayer(widths[i], widths[i + 1], rng), f, g));
  return m;
}

// The contract evaluated in double from the quantized operands: the only rounding left is the
// activation quantization itself, which is recomputed with the same quantizer.
std::vector<double> ContractInDouble(const MlpLayer& l, const std::vector<float>& x, int rows, bool relu) {
  const int K = l.in, N = l.out, groups = CeilDiv(K, 128);
  std::vector<uint8_t> qx(x.size());
  std::vector<float> sx(static_cast<size_t>(rows) * groups);
  QuantizeActivations(x.data(), rows, K, qx.data(), sx.data());
  std::vector<double> y(static_cast<size_t>(rows) * N);
  for (int m = 0; m < rows; ++m) {
    for (int n = 0; n < N; ++n) {
      double acc = 0;
      for (int k = 0; k < K; ++k) {
        acc += static_cast<double>(DecodeE4M3(qx[m * K + k])) * sx[m * groups + k / 128] *
               DecodeFp8(l.format, l.fp8[static_cast<size_t>(n) * K + k]) *
               WeightScaleAt(l.scales.data(), l.granularity, K, n, k);
      }
      acc += l.bias.empty() ? 0.0 : l.bias[n];
      y[m * N + n] = relu && acc < 0 ? 0.0 : acc;
    }
  }
  return y;
}

struct LayerCase {
  int in, out, rows;
  Fp8Format format;
  ScaleGranularity granularity;
};

class ReferenceLayerTest : public ::testing::TestWithParam<LayerCase> {};

TEST_P(ReferenceLayerTest, MatchesTheContractInDouble) {
  const LayerCase c = GetParam();
  std::mt19937 rng(c.in * 31 + c.out);
  MlpLayer l = QuantizeLayer(FloatLayer(c.in, c.out, rng), c.format, c.granularity);
  // Random positive scales per group, so a wrong block index shows up as a wrong answer.
  std::uniform_real_distribution<float> sd(0.25f, 4.0f);
  for (float& s : l.scales) s = sd(rng) * 0.01f;
  const std::vector<float> x = Normal(static_cast<size_t>(c.rows) * c.in, rng);
  std::vector<float> y(static_cast<size_t>(c.rows) * c.out, std::numeric_limits<float>::quiet_NaN());
  const Activation relu = Activation::kRelu;
  ReferenceLayer(l, x.data(), c.rows, &relu, y.data());
  const std::vector<double> want = ContractInDouble(l, x, c.rows, true);
  double max_abs = 0;
  for (double v : want) max_abs = std::max(max_abs, std::fabs(v));
  ASSERT_GT(max_abs, 0.0);
  for (size_t i = 0; i < y.size(); ++i) {
    // FP32 summation of K products: error well under 1e-5 of the output's scale.
    ASSERT_NEAR(y[i], want[i], 1e-5 * max_abs + 1e-6 * std::fabs(want[i])) << "element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ReferenceLayerTest,
    ::testing::Values(LayerCase{784, 256, 3, Fp8Format::kE4M3, ScaleGranularity::kPerChannel},
                      LayerCase{784, 256, 2, Fp8Format::kE4M3, ScaleGranularity::kBlock128},
                      LayerCase{300, 130, 4, Fp8Format::kE4M3, ScaleGranularity::kBlock128},
                      LayerCase{129, 257, 1, Fp8Format::kE5M2, ScaleGranularity::kBlock128},
                      LayerCase{256, 10, 7, Fp8Format::kE4M3, ScaleGranularity::kPerTensor},
                      LayerCase{5, 3, 2, Fp8Format::kE5M2, ScaleGranularity::kPerChannel}));

TEST(ReferenceTest, HandComputedLayer) {
  // x = [1, 0.5]: amax 1, s = 1/448, x/s = [448, 224] are exact E4M3 values. W = [[1, 2]] * 0.5.
  MlpLayer l;
  l.in = 2;
  l.out = 1;
  l.granularity = ScaleGranularity::kPerTensor;
  l.fp8 = {EncodeE4M3(1.0f), EncodeE4M3(2.0f)};
  l.scales = {0.5f};
  l.bias = {0.25f};
  const float x[2] = {1.0f, 0.5f};
  float y = 0;
  ReferenceLayer(l, x, 1, nullptr, &y);
  EXPECT_NEAR(y, 0.5f * (1.0f + 1.0f) + 0.25f, 1e-6f);
  const Activation relu = Activation::kRelu;
  l.bias = {-5.0f};
  ReferenceLayer(l, x, 1, &relu, &y);
  EXPECT_EQ(y, 0.0f);
}

struct ModelCase {
  std::vector<int> widths;
  int rows;
  ScaleGranularity granularity;
};

class FastForwardTest : public ::testing::TestWithParam<ModelCase> {};

TEST_P(FastForwardTest, AgreesWithReference) {
  const ModelCase c = GetParam();
  const MlpWeights mlp = RandomMlp(c.widths, Fp8Format::kE4M3, c.granularity, 1234 + c.rows);
  std::mt19937 rng(c.rows);
  const std::vector<float> x = Normal(static_cast<size_t>(c.rows) * mlp.input_dim(), rng);
  const std::vector<float> x_copy = x;
  const size_t n_out = static_cast<size_t>(c.rows) * mlp.output_dim();
  std::vector<float> ref(n_out, std::numeric_limits<float>::quiet_NaN());
  std::vector<float> fast(n_out, std::numeric_limits<float>::quiet_NaN());
  ReferenceForward(mlp, x.data(), c.rows, ref.data());
  FastMlp(mlp).Forward(x.data(), c.rows, fast.data());
  EXPECT_EQ(x, x_copy) << "the input must not be modified";

  // Both forwards quantize the same activations; they differ in FP32 rounding only, which can at
  // most flip an E4M3 rounding of a hidden value now and then. Bound the logits' relative error
  // and require the same predicted class on nearly every row.
  double num = 0, den = 0;
  int same_argmax = 0;
  const int classes = mlp.output_dim();
  for (int r = 0; r < c.rows; ++r) {
    for (int k = 0; k < classes; ++k) {
      const size_t i = static_cast<size_t>(r) * classes + k;
      ASSERT_TRUE(std::isfinite(fast[i])) << i;
      num += (fast[i] - ref[i]) * (fast[i] - ref[i]);
      den += ref[i] * ref[i];
    }
    const float* fr = fast.data() + r * classes;
    const float* rr = ref.data() + r * classes;
    same_argmax += (std::max_element(fr, fr + classes) - fr) == (std::max_element(rr, rr + classes) - rr);
  }
  EXPECT_LT(std::sqrt(num / den), 2e-3) << "relative error of the logits";
  EXPECT_GE(same_argmax, c.rows - std::max(1, c.rows / 100)) << "rows with the same predicted class";
}

INSTANTIATE_TEST_SUITE_P(
    Models, FastForwardTest,
    ::testing::Values(ModelCase{{784, 256, 10}, 1, ScaleGranularity::kPerChannel},
                      ModelCase{{784, 256, 10}, 64, ScaleGranularity::kBlock128},
                      ModelCase{{784, 512, 256, 10}, 33, ScaleGranularity::kPerChannel},
                      ModelCase{{130, 257, 33}, 7, ScaleGranularity::kBlock128},
                      ModelCase{{100, 15, 7, 3}, 200, ScaleGranularity::kPerTensor},
                      ModelCase{{1000, 129}, 5, ScaleGranularity::kPerChannel}));

TEST(FastForwardTest, SingleLayerMatchesClosely) {
  // One layer: no requantization in between, so only summation order and scale rounding differ.
  const MlpWeights mlp = RandomMlp({300, 77}, Fp8Format::kE4M3, ScaleGranularity::kBlock128, 5);
  std::mt19937 rng(5);
  const std::vector<float> x = Normal(9 * 300, rng);
  std::vector<float> ref(9 * 77), fast(9 * 77);
  ReferenceForward(mlp, x.data(), 9, ref.data());
  FastMlp(mlp).Forward(x.data(), 9, fast.data());
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(fast[i], ref[i], 1e-4f * (1.0f + std::fabs(ref[i]))) << i;
}

TEST(FastForwardTest, Fp32BaselineIsAPlainForward) {
  std::mt19937 rng(9);
  MlpWeights mlp;
  mlp.layers = {FloatLayer(50, 20, rng), FloatLayer(20, 4, rng)};
  const std::vector<float> x = Normal(3 * 50, rng);
  std::vector<float> ref(12), fast(12);
  ReferenceForward(mlp, x.data(), 3, ref.data());
  FastMlp(mlp, FastMlp::Options{.emulate_activation_quant = false}).Forward(x.data(), 3, fast.data());
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(fast[i], ref[i], 1e-4f * (1.0f + std::fabs(ref[i])));
}

// A NaN in one row makes that row's output NaN and leaves every other row exactly as if it had
// been computed alone: rows of a batch never contaminate each other.
TEST(ForwardIsolationTest, NanRowDoesNotTouchOtherRows) {
  const MlpWeights mlp = RandomMlp({784, 256, 10}, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, 77);
  std::mt19937 rng(77);
  std::vector<float> x = Normal(4 * 784, rng);
  x[2 * 784 + 5] = std::numeric_limits<float>::quiet_NaN();
  x[3 * 784 + 9] = std::numeric_limits<float>::infinity();
  std::vector<float> batch(40);
  ReferenceForward(mlp, x.data(), 4, batch.data());
  std::vector<float> alone(10);
  ReferenceForward(mlp, x.data(), 1, alone.data());
  for (int k = 0; k < 10; ++k) EXPECT_EQ(batch[k], alone[k]);
  for (int k = 0; k < 10; ++k) EXPECT_TRUE(std::isnan(batch[20 + k])) << "NaN input row gives NaN logits";
  ReferenceForward(mlp, x.data() + 784, 1, alone.data());
  for (int k = 0; k < 10; ++k) EXPECT_EQ(batch[10 + k], alone[k]);

  FastMlp fast(mlp);
  std::vector<float> fb(40), fa(10);
  fast.Forward(x.data(), 4, fb.data());
  fast.Forward(x.data() + 784, 1, fa.data());
  for (int k = 0; k < 10; ++k) EXPECT_NEAR(fb[10 + k], fa[k], 1e-5f * (1 + std::fabs(fa[k])));
  for (int k = 0; k < 10; ++k) EXPECT_TRUE(std::isnan(fb[20 + k]));
}

}  // namespace
}  // namespace fp8serve
