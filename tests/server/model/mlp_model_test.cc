#include "server/model/mlp_model.h"

#include <stdlib.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/mlp_weights.h"
#include "kernels/numerics/fp8.h"
#include "kernels/numerics/quantize.h"
#include "server/model/safetensors.h"

namespace fp8serve {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

std::string MakeTempDir() {
  std::string tmpl = ::testing::TempDir();
  if (!tmpl.empty() && tmpl.back() != '/') tmpl += '/';
  tmpl += "mlp_model_test_XXXXXX";
  EXPECT_NE(mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
  return tmpl;
}

std::vector<float> RandomFloats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

MlpLayer FloatLayer(int out, int in, bool bias, uint32_t seed) {
  MlpLayer l;
  l.quantized = false;
  l.out = out;
  l.in = in;
  l.f32 = RandomFloats(static_cast<size_t>(out) * in, seed);
  if (bias) l.bias = RandomFloats(out, seed + 1000);
  return l;
}

std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> out;
  for (float x : v) out.push_back(FloatToBf16(x));
  return out;
}

// Collects tensors for a hand-made file; owns the bytes so the spans stay valid until Write.
class FileBuilder {
 public:
  FileBuilder& Add(const std::string& name, DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
    storage_.push_back(std::move(bytes));
    tensors_.push_back({name, dtype, std::move(shape), storage_.back()});
    return *this;
  }
  FileBuilder& F32(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v) {
    const std::span<const uint8_t> b = AsBytes(v);
    return Add(name, DType::kF32, std::move(shape), {b.begin(), b.end()});
  }
  // An F32 tensor of the given shape filled with `value`.
  FileBuilder& F32Fill(const std::string& name, std::vector<int64_t> shape, float value) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return F32(name, std::move(shape), std::vector<float>(n, value));
  }
  FileBuilder& Bf16(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v) {
    const std::vector<uint16_t> h = ToBf16(v);
    const std::span<const uint8_t> b = AsBytes(h);
    return Add(name, DType::kBF16, std::move(shape), {b.begin(), b.end()});
  }
  FileBuilder& Fp8(const std::string& name, DType dtype, std::vector<int64_t> shape) {
    return Add(name, dtype, shape, std::vector<uint8_t>(static_cast<size_t>(shape[0] * shape[1]), 0x38));
  }
  void Write(const std::string& path, const std::map<std::string, std::string>& metadata) const {
    const absl::Status st = WriteSafetensors(path, tensors_, metadata);
    ASSERT_TRUE(st.ok()) << st;
  }

 private:
  std::deque<std::vector<uint8_t>> storage_;
  std::vector<TensorToWrite> tensors_;
};

const std::map<std::string, std::string> kMeta = {{"format", kMlpFormatV1}};

class MlpModelTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir(); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Writes `b` and loads it with LoadMlpModel, expecting InvalidArgument naming the file and `want`.
  void ExpectMlpError(const FileBuilder& b, const std::map<std::string, std::string>& meta,
                      const std::vector<std::string>& want) {
    const std::string path = Path(absl::StrCat("case", ++count_, ".safetensors"));
    b.Write(path, meta);
    absl::StatusOr<MlpModel> m = LoadMlpModel(path);
    ASSERT_FALSE(m.ok()) << "accepted " << path;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
    EXPECT_THAT(m.status().message(), HasSubstr(path));
    for (const std::string& w : want) EXPECT_THAT(m.status().message(), HasSubstr(w));
  }
  void ExpectCheckpointError(const FileBuilder& b, const std::vector<std::string>& want) {
    const std::string path = Path(absl::StrCat("case", ++count_, ".safetensors"));
    b.Write(path, {});
    absl::StatusOr<MlpModel> m;
    // A malformed name must come back as an error, never as an exception.
    ASSERT_NO_THROW(m = LoadFloatCheckpoint(path));
    ASSERT_FALSE(m.ok()) << "accepted " << path;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
    EXPECT_THAT(m.status().message(), HasSubstr(path));
    for (const std::string& w : want) EXPECT_THAT(m.status().message(), HasSubstr(w));
  }

  std::string dir_;
  int count_ = 0;
};

// ---------------------------------------------------------------------------------------------
// LoadMlpModel: metadata.

TEST_F(MlpModelTest, RejectsMissingFormat) {
  FileBuilder b;
  b.F32Fill("layers.0.weight", {2, 3}, 1.0f);
  ExpectMlpError(b, {}, {"__metadata__ has no \"format\"", "fp8serve.mlp.v1"});
  ExpectMlpError(b, {{"activation", "relu"}}, {"__metadata__ has no \"format\""});
}

TEST_F(MlpModelTest, RejectsWrongFormat) {
  FileBuilder b;
  b.F32Fill("layers.0.weight", {2, 3}, 1.0f);
  ExpectMlpError(b, {{"format", "fp8serve.mlp.v2"}}, {"__metadata__ format 'fp8serve.mlp.v2' is not 'fp8serve.mlp.v1'"});
  ExpectMlpError(b, {{"format", "pt"}}, {"format 'pt'"});
}

TEST_F(MlpModelTest, RejectsUnsupportedActivation) {
  FileBuilder b;
  b.F32Fill("layers.0.weight", {2, 3}, 1.0f);
  ExpectMlpError(b, {{"format", kMlpFormatV1}, {"activation", "gelu"}}, {"__metadata__ activation 'gelu' is not supported"});
  ExpectMlpError(b, {{"format", kMlpFormatV1}, {"activation", "ReLU"}}, {"activation 'ReLU'"});
}

TEST_F(MlpModelTest, ActivationDefaultsToReluAndAcceptsIdentity) {
  FileBuilder b;
  b.F32Fill("layers.0.weight", {2, 3}, 1.0f);
  const std::vector<std::pair<std::map<std::string, std::string>, Activation>> cases = {
      {{{"format", kMlpFormatV1}}, Activation::kRelu},
      {{{"format", kMlpFormatV1}, {"activation", "relu"}}, Activation::kRelu},
      {{{"format", kMlpFormatV1}, {"activation", "identity"}}, Activation::kIdentity},
      {{{"format", kMlpFormatV1}, {"activation", "none"}}, Activation::kIdentity},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = Path(absl::StrCat("act", i, ".safetensors"));
    b.Write(path, cases[i].first);
    absl::StatusOr<MlpModel> m = LoadMlpModel(path);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->weights.activation, cases[i].second) << i;
    EXPECT_EQ(m->metadata, cases[i].first);
  }
}

// ---------------------------------------------------------------------------------------------
// LoadMlpModel: layer structure.

TEST_F(MlpModelTest, RejectsNoLayers) {
  ExpectMlpError(FileBuilder(), kMeta, {"no layers", "layers.0.weight"});
}

TEST_F(MlpModelTest, RejectsMissingMiddleLayer) {
  FileBuilder b;
  b.F32Fill("layers.0.weight", {4, 3}, 1.0f).F32Fill("layers.2.weight", {2, 4}, 1.0f);
  ExpectMlpError(b, kMeta, {"layer 1 is missing", "no tensor layers.1.weight", "layers up to 2"});
}

TEST_F(MlpModelTest, RejectsMissingFirstLayer) {
  FileBuilder b;
  b.F32Fill("layers.1.weight", {2, 4}, 1.0f);
  ExpectMlpError(b, kMeta, {"layer 0 is missing", "no tensor layers.0.weight"});
}

TEST_F(MlpModelTest, RejectsBiasOrScaleOfLayerWithoutWeight) {
  FileBuilder bias;
  bias.F32Fill("layers.0.weight", {4, 3}, 1.0f).F32Fill("layers.1.bias", {2}, 0.0f);
  ExpectMlpError(bias, kMeta, {"layer 1 is missing", "no tensor layers.1.weight"});
  FileBuilder scale;
  scale.F32Fill("layers.0.weight", {4, 3}, 1.0f).F32Fill("layers.1.weight_scale", {}, 1.0f);
  ExpectMlpError(scale, kMeta, {"layer 1 is missing", "no tensor layers.1.weight"});
}

TEST_F(MlpModelTest, RejectsUnexpectedTensorNames) {
  for (const std::string name : {"foo", "layers.0.gamma", "layers.01.weight", "layers.0.weight.extra", "layer.0.weight",
                                 "0.weight", "layers.-1.weight", "layers.1234567.weight", "model.layers.0.weight"}) {
    SCOPED_TRACE(name);
    FileBuilder b;
    b.F32Fill("layers.0.weight", {2, 3}, 1.0f).F32Fill(name, {2}, 0.0f);
    ExpectMlpError(b, kMeta, {absl::StrCat("tensor '", name, "'"), "unexpected tensor"});
  }
}

TEST_F(MlpModelTest, RejectsShapesThatDoNotChain) {
  FileBuilder b;
  b.F32Fill("layers.0.weight", {4, 3}, 1.0f).F32Fill("layers.1.weight", {2, 5}, 1.0f);
  ExpectMlpError(b, kMeta, {"shapes do not chain: layer 0 has 4 outputs but layer 1 takes 5 inputs"});
}

TEST_F(MlpModelTest, RejectsWeightThatIsNotRank2WithPositiveSizes) {
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{12}, {2, 2, 3}, {}, {0, 3}, {3, 0}}) {
    SCOPED_TRACE(shape.size());
    FileBuilder b;
    b.F32Fill("layers.0.weight", shape, 1.0f);
    ExpectMlpError(b, kMeta, {"tensor 'layers.0.weight'", "is not [out, in] with sizes in 1..2^20"});
  }
  FileBuilder b;
  b.F32Fill("layers.0.weight", {12}, 1.0f);
  ExpectMlpError(b, kMeta, {"weight shape [12]"});
}

TEST_F(MlpModelTest, RejectsFp8WeightWithoutScale) {
  FileBuilder b;
  b.Fp8("layers.0.weight", DType::kF8E4M3, {4, 3});
  ExpectMlpError(b, kMeta, {"layer 0", "FP8 weight layers.0.weight has no layers.0.weight_scale"});
}

TEST_F(MlpModelTest, RejectsScaleOnFloatWeight) {
  FileBuilder b;
  b.Bf16("layers.0.weight", {2, 2}, {1, 2, 3, 4}).F32Fill("layers.0.weight_scale", {}, 1.0f);
  ExpectMlpError(b, kMeta, {"tensor 'layers.0.weight_scale'", "only allowed with FP8 weights"});
}

TEST_F(MlpModelTest, RejectsScaleThatIsNotF32) {
  FileBuilder b;
  b.Fp8("layers.0.weight", DType::kF8E5M2, {4, 3}).Bf16("layers.0.weight_scale", {4}, {1, 1, 1, 1});
  ExpectMlpError(b, kMeta, {"tensor 'layers.0.weight_scale'", "weight_scale must be F32, not BF16"});
}

TEST_F(MlpModelTest, RejectsScaleShapeMatchingNoGranularity) {
  // For [200, 300]: tensor [], channel [200], block [2, 3].
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{3}, {300}, {1}, {2, 2}, {3, 2}, {200, 1}, {1, 2, 3}}) {
    SCOPED_TRACE(shape.size());
    FileBuilder b;
    b.Fp8("layers.0.weight", DType::kF8E4M3, {200, 300}).F32Fill("layers.0.weight_scale", shape, 1.0f);
    ExpectMlpError(b, kMeta, {"tensor 'layers.0.weight_scale'", "matches no granularity for weight [200, 300]",
                              "want [] (tensor), [200] (channel) or [2, 3] (128x128 block)"});
  }
  FileBuilder b;
  b.Fp8("layers.0.weight", DType::kF8E4M3, {200, 300}).F32Fill("layers.0.weight_scale", {2, 2}, 1.0f);
  ExpectMlpError(b, kMeta, {"scale shape [2, 2]"});
}

TEST_F(MlpModelTest, RejectsNonFiniteOrNonPositiveScales) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (float bad : {nan, inf, -inf, 0.0f, -0.0f, -1.0f}) {
    SCOPED_TRACE(bad);
    std::vector<float> scales = {0.5f, 1.0f, bad, 2.0f};
    FileBuilder b;
    b.Fp8("layers.0.weight", DType::kF8E4M3, {4, 3}).F32("layers.0.weight_scale", {4}, scales);
    ExpectMlpError(b, kMeta, {"tensor 'layers.0.weight_scale'", "scale #2 is ", "finite and positive"});
  }
  FileBuilder b;
  b.Fp8("layers.0.weight", DType::kF8E4M3, {4, 3}).F32("layers.0.weight_scale", {}, {nan});
  ExpectMlpError(b, kMeta, {"scale #0 is nan"});
}

TEST_F(MlpModelTest, RejectsBadBias) {
  FileBuilder shape;
  shape.F32Fill("layers.0.weight", {4, 3}, 1.0f).F32Fill("layers.0.bias", {5}, 0.0f);
  ExpectMlpError(shape, kMeta, {"tensor 'layers.0.bias'", "bias shape [5] does not match [4]"});
  FileBuilder rank;
  rank.F32Fill("layers.0.weight", {4, 3}, 1.0f).F32Fill("layers.0.bias", {1, 4}, 0.0f);
  ExpectMlpError(rank, kMeta, {"tensor 'layers.0.bias'", "bias shape [1, 4] does not match [4]"});
  FileBuilder fp8;
  fp8.F32Fill("layers.0.weight", {4, 3}, 1.0f).Add("layers.0.bias", DType::kF8E4M3, {4}, {0, 0, 0, 0});
  ExpectMlpError(fp8, kMeta, {"tensor 'layers.0.bias'", "bias must be F32, BF16 or F16, not F8_E4M3"});
}

TEST_F(MlpModelTest, MissingFileIsNotFound) {
  const std::string path = Path("missing.safetensors");
  absl::StatusOr<MlpModel> m = LoadMlpModel(path);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(m.status().message(), HasSubstr(path));
}

// ---------------------------------------------------------------------------------------------
// SaveMlpModel -> LoadMlpModel.

void ExpectLayersEqual(const MlpLayer& got, const MlpLayer& want) {
  EXPECT_EQ(got.in, want.in);
  EXPECT_EQ(got.out, want.out);
  EXPECT_EQ(got.quantized, want.quantized);
  if (want.quantized) {
    EXPECT_EQ(got.format, want.format);
    EXPECT_EQ(got.granularity, want.granularity);
    EXPECT_EQ(got.fp8, want.fp8);
    EXPECT_EQ(got.scales, want.scales);
    EXPECT_EQ(got.scales.size(), NumWeightScales(want.granularity, want.out, want.in));
  } else {
    EXPECT_EQ(got.f32, want.f32);
    EXPECT_TRUE(got.fp8.empty());
    EXPECT_TRUE(got.scales.empty());
  }
  EXPECT_EQ(got.bias, want.bias);
}

class RoundTripTest : public MlpModelTest, public ::testing::WithParamInterface<std::tuple<Fp8Format, ScaleGranularity>> {};

TEST_P(RoundTripTest, EveryFieldSurvives) {
  const auto [format, granularity] = GetParam();
  MlpWeights w;
  w.activation = Activation::kIdentity;
  // Odd sizes so block scales have partial blocks at both edges; the last layer stays FP32.
  w.layers.push_back(QuantizeLayer(FloatLayer(300, 257, /*bias=*/true, 1), format, granularity));
  w.layers.push_back(QuantizeLayer(FloatLayer(200, 300, /*bias=*/false, 2), format, granularity));
  w.layers.push_back(QuantizeLayer(FloatLayer(130, 200, /*bias=*/true, 3), format, granularity));
  w.layers.push_back(FloatLayer(10, 130, /*bias=*/true, 4));
  const std::string path = Path("model.safetensors");
  const absl::Status st = SaveMlpModel(path, w, {{"source", "unit test"}, {"format", "ignored"}});
  ASSERT_TRUE(st.ok()) << st;

  absl::StatusOr<MlpModel> m = LoadMlpModel(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->weights.activation, Activation::kIdentity);
  EXPECT_THAT(m->metadata, UnorderedElementsAre(Pair("format", kMlpFormatV1), Pair("activation", "identity"),
                                                Pair("source", "unit test")));
  ASSERT_EQ(m->weights.layers.size(), w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    SCOPED_TRACE(i);
    ExpectLayersEqual(m->weights.layers[i], w.layers[i]);
  }
  EXPECT_EQ(m->weights.input_dim(), 257);
  EXPECT_EQ(m->weights.output_dim(), 10);
}

INSTANTIATE_TEST_SUITE_P(
    FormatsAndGranularities, RoundTripTest,
    ::testing::Combine(::testing::Values(Fp8Format::kE4M3, Fp8Format::kE5M2),
                       ::testing::Values(ScaleGranularity::kPerTensor, ScaleGranularity::kPerChannel, ScaleGranularity::kBlock128)),
    [](const auto& info) {
      return absl::StrCat(Fp8FormatName(std::get<0>(info.param)), "_", GranularityName(std::get<1>(info.param)));
    });

TEST_F(MlpModelTest, SavedFileHasTheDocumentedTensors) {
  MlpWeights w;
  w.layers.push_back(QuantizeLayer(FloatLayer(130, 257, true, 5), Fp8Format::kE4M3, ScaleGranularity::kBlock128));
  w.layers.push_back(FloatLayer(3, 130, false, 6));
  const std::string path = Path("model.safetensors");
  ASSERT_TRUE(SaveMlpModel(path, w).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const auto expect = [&](const std::string& name, DType dtype, std::vector<int64_t> shape) {
    const TensorInfo* t = (*f)->Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dtype, dtype) << name;
    EXPECT_EQ(t->shape, shape) << name;
  };
  EXPECT_EQ((*f)->tensors().size(), 4u);
  expect("layers.0.weight", DType::kF8E4M3, {130, 257});
  expect("layers.0.weight_scale", DType::kF32, {2, 3});
  expect("layers.0.bias", DType::kF32, {130});
  expect("layers.1.weight", DType::kF32, {3, 130});
  EXPECT_EQ((*f)->metadata().at("activation"), "relu");
}

TEST_F(MlpModelTest, LoadsBf16WeightAndF16Bias) {
  const std::vector<float> w = {1.0f, -2.0f, 0.5f, 3.0f, 0.25f, -0.125f};  // exact in BF16
  const std::vector<uint16_t> bias = {FloatToF16(0.5f), FloatToF16(-1.5f)};
  FileBuilder b;
  b.Bf16("layers.0.weight", {2, 3}, w);
  const std::span<const uint8_t> bias_bytes = AsBytes(bias);
  b.Add("layers.0.bias", DType::kF16, {2}, {bias_bytes.begin(), bias_bytes.end()});
  const std::string path = Path("bf16.safetensors");
  b.Write(path, kMeta);
  absl::StatusOr<MlpModel> m = LoadMlpModel(path);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->weights.layers.size(), 1u);
  const MlpLayer& l = m->weights.layers[0];
  EXPECT_FALSE(l.quantized);
  EXPECT_EQ(l.out, 2);
  EXPECT_EQ(l.in, 3);
  EXPECT_EQ(l.f32, w);
  EXPECT_THAT(l.bias, ElementsAre(0.5f, -1.5f));
}

TEST_F(MlpModelTest, LoadsHandMadeFp8LayerAtEveryGranularity) {
  // [200, 300]: one scale, 200 scales, or 2x3 block scales, with the FP8 bytes kept verbatim.
  const std::vector<std::pair<std::vector<int64_t>, ScaleGranularity>> cases = {
      {{}, ScaleGranularity::kPerTensor}, {{200}, ScaleGranularity::kPerChannel}, {{2, 3}, ScaleGranularity::kBlock128}};
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(i);
    FileBuilder b;
    b.Fp8("layers.0.weight", DType::kF8E5M2, {200, 300}).F32Fill("layers.0.weight_scale", cases[i].first, 0.25f);
    const std::string path = Path(absl::StrCat("g", i, ".safetensors"));
    b.Write(path, kMeta);
    absl::StatusOr<MlpModel> m = LoadMlpModel(path);
    ASSERT_TRUE(m.ok()) << m.status();
    const MlpLayer& l = m->weights.layers.at(0);
    EXPECT_TRUE(l.quantized);
    EXPECT_EQ(l.format, Fp8Format::kE5M2);
    EXPECT_EQ(l.granularity, cases[i].second);
    EXPECT_EQ(l.scales.size(), NumWeightScales(cases[i].second, 200, 300));
    EXPECT_EQ(l.fp8, std::vector<uint8_t>(200 * 300, 0x38));
    EXPECT_TRUE(l.bias.empty());
  }
}

// ---------------------------------------------------------------------------------------------
// LoadFloatCheckpoint.

TEST_F(MlpModelTest, CheckpointWithOurNaming) {
  const std::vector<float> w0 = RandomFloats(12, 7), b0 = RandomFloats(4, 8), w1 = RandomFloats(8, 9);
  FileBuilder b;
  b.F32("layers.1.weight", {2, 4}, w1).F32("layers.0.bias", {4}, b0).F32("layers.0.weight", {4, 3}, w0);
  const std::string path = Path("ours.safetensors");
  b.Write(path, {});
  absl::StatusOr<MlpModel> m = LoadFloatCheckpoint(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->weights.activation, Activation::kRelu);
  ASSERT_EQ(m->weights.layers.size(), 2u);
  const MlpLayer& l0 = m->weights.layers[0];
  const MlpLayer& l1 = m->weights.layers[1];
  EXPECT_FALSE(l0.quantized);
  EXPECT_EQ(l0.out, 4);
  EXPECT_EQ(l0.in, 3);
  EXPECT_EQ(l0.f32, w0);
  EXPECT_EQ(l0.bias, b0);
  EXPECT_EQ(l1.out, 2);
  EXPECT_EQ(l1.in, 4);
  EXPECT_EQ(l1.f32, w1);
  EXPECT_TRUE(l1.bias.empty());
}

TEST_F(MlpModelTest, CheckpointWithSequentialNamingComesBackInIndexOrder) {
  // Indices skip the activation modules; 10 sorts before 2 as a string but must come last.
  const std::vector<float> w0 = RandomFloats(12, 1), b0 = RandomFloats(4, 2), w2 = RandomFloats(20, 3),
                           b2 = RandomFloats(5, 4), w10 = RandomFloats(10, 5);
  for (const std::string prefix : {"", "net.", "model.net."}) {
    SCOPED_TRACE(prefix);
    FileBuilder b;
    b.F32(prefix + "10.weight", {2, 5}, w10)
        .F32(prefix + "2.bias", {5}, b2)
        .F32(prefix + "0.weight", {4, 3}, w0)
        .F32(prefix + "2.weight", {5, 4}, w2)
        .F32(prefix + "0.bias", {4}, b0);
    const std::string path = Path(absl::StrCat("seq", prefix.size(), ".safetensors"));
    b.Write(path, {{"activation", "identity"}});
    absl::StatusOr<MlpModel> m = LoadFloatCheckpoint(path);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->weights.activation, Activation::kIdentity);
    ASSERT_EQ(m->weights.layers.size(), 3u);
    EXPECT_EQ(m->weights.layers[0].f32, w0);
    EXPECT_EQ(m->weights.layers[0].bias, b0);
    EXPECT_EQ(m->weights.layers[1].f32, w2);
    EXPECT_EQ(m->weights.layers[1].bias, b2);
    EXPECT_EQ(m->weights.layers[2].f32, w10);
    EXPECT_TRUE(m->weights.layers[2].bias.empty());
    EXPECT_EQ(m->weights.input_dim(), 3);
    EXPECT_EQ(m->weights.output_dim(), 2);
  }
}

TEST_F(MlpModelTest, CheckpointConvertsBf16ToF32) {
  const std::vector<float> w = {1.0f, -2.0f, 0.5f, 3.0f, 0.25f, -0.125f};
  FileBuilder b;
  b.Bf16("0.weight", {2, 3}, w).Bf16("0.bias", {2}, {1.5f, -0.75f});
  const std::string path = Path("bf16.safetensors");
  b.Write(path, {});
  absl::StatusOr<MlpModel> m = LoadFloatCheckpoint(path);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->weights.layers.size(), 1u);
  EXPECT_EQ(m->weights.layers[0].f32, w);
  EXPECT_THAT(m->weights.layers[0].bias, ElementsAre(1.5f, -0.75f));
}

TEST_F(MlpModelTest, CheckpointRejectsMixedNaming) {
  FileBuilder b;
  b.F32Fill("layers.0.weight", {4, 3}, 1.0f).F32Fill("2.weight", {2, 4}, 1.0f);
  ExpectCheckpointError(b, {"mixes layers.{i}.* names with nn.Sequential {j}.* names"});
}

TEST_F(MlpModelTest, CheckpointRejectsSeveralPrefixes) {
  FileBuilder b;
  b.F32Fill("encoder.0.weight", {4, 3}, 1.0f).F32Fill("decoder.2.weight", {2, 4}, 1.0f);
  ExpectCheckpointError(b, {"tensors under several prefixes: decoder., encoder."});
  FileBuilder bare;
  bare.F32Fill("0.weight", {4, 3}, 1.0f).F32Fill("net.2.weight", {2, 4}, 1.0f);
  ExpectCheckpointError(bare, {"several prefixes"});
}

TEST_F(MlpModelTest, CheckpointRejectsNonFiniteWeights) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (float bad : {nan, inf, -inf}) {
    SCOPED_TRACE(bad);
    FileBuilder b;
    b.F32("0.weight", {2, 2}, {1.0f, bad, 0.0f, 1.0f});
    ExpectCheckpointError(b, {"tensor '0.weight'", "contains NaN or inf"});
  }
  FileBuilder bf16;
  bf16.F32Fill("layers.0.weight", {2, 2}, 1.0f).Bf16("layers.1.weight", {1, 2}, {inf, 1.0f});
  ExpectCheckpointError(bf16, {"tensor 'layers.1.weight'", "contains NaN or inf"});
}

TEST_F(MlpModelTest, CheckpointRejectsStructuralFaults) {
  FileBuilder gap;
  gap.F32Fill("layers.0.weight", {4, 3}, 1.0f).F32Fill("layers.2.weight", {2, 4}, 1.0f);
  ExpectCheckpointError(gap, {"layer 1 is missing", "layers.1.weight"});

  FileBuilder orphan_bias;
  orphan_bias.F32Fill("0.weight", {4, 3}, 1.0f).F32Fill("2.bias", {2}, 0.0f);
  ExpectCheckpointError(orphan_bias, {"tensor '2.bias'", "bias without a matching weight"});

  FileBuilder fp8;
  fp8.Fp8("0.weight", DType::kF8E4M3, {4, 3});
  ExpectCheckpointError(fp8, {"tensor '0.weight'", "expected a float weight, found F8_E4M3"});

  FileBuilder rank;
  rank.F32Fill("0.weight", {12}, 1.0f);
  ExpectCheckpointError(rank, {"tensor '0.weight'", "weight shape [12] is not [out, in]"});

  FileBuilder chain;
  chain.F32Fill("0.weight", {4, 3}, 1.0f).F32Fill("2.weight", {2, 5}, 1.0f);
  ExpectCheckpointError(chain, {"shapes do not chain: layer 0 has 4 outputs but layer 1 takes 5 inputs"});

  FileBuilder bias;
  bias.F32Fill("0.weight", {4, 3}, 1.0f).F32Fill("0.bias", {3}, 0.0f);
  ExpectCheckpointError(bias, {"tensor '0.bias'", "bias shape [3] does not match [4]"});

  FileBuilder unexpected;
  unexpected.F32Fill("0.weight", {4, 3}, 1.0f).F32Fill("0.running_mean", {4}, 0.0f);
  ExpectCheckpointError(unexpected, {"tensor '0.running_mean'", "unexpected tensor in a float checkpoint"});

  FileBuilder scale;
  scale.F32Fill("layers.0.weight", {4, 3}, 1.0f).F32Fill("layers.0.weight_scale", {}, 1.0f);
  ExpectCheckpointError(scale, {"tensor 'layers.0.weight_scale'", "already quantized"});

  ExpectCheckpointError(FileBuilder(), {"no layers"});
}

TEST_F(MlpModelTest, CheckpointRejectsHugeLayerIndex) {
  FileBuilder big;
  big.F32Fill("0.weight", {4, 3}, 1.0f).F32Fill("1000002.weight", {2, 4}, 1.0f);
  ExpectCheckpointError(big, {"tensor '1000002.weight'", "layer index is not a plain number"});
}

// An index too long for int64 is a corrupt name like any other: an error, not an exception.
TEST_F(MlpModelTest, CheckpointRejectsIndexOverflowingInt64) {
  FileBuilder seq;
  seq.F32Fill("99999999999999999999.weight", {4, 3}, 1.0f);
  ExpectCheckpointError(seq, {"tensor '99999999999999999999.weight'"});
  FileBuilder ours;
  ours.F32Fill("layers.99999999999999999999.weight", {4, 3}, 1.0f);
  ExpectCheckpointError(ours, {"tensor 'layers.99999999999999999999.weight'"});
}

// [2^31, 2^31] F32 is 2^64 bytes, which wraps to 0: a 100-byte file must not make the loader try
// to allocate 2^62 floats (an exception that takes the process down).
TEST_F(MlpModelTest, CheckpointRejectsWeightWhoseByteSizeOverflows) {
  const std::string header = R"({"0.weight":{"dtype":"F32","shape":[2147483648,2147483648],"data_offsets":[0,0]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  bytes += header;
  const std::string path = Path("wrap.safetensors");
  std::ofstream(path, std::ios::binary) << bytes;
  absl::StatusOr<MlpModel> m;
  ASSERT_NO_THROW(m = LoadFloatCheckpoint(path));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_THAT(m.status().message(), AllOf(HasSubstr(path), HasSubstr("tensor '0.weight'")));
}

TEST_F(MlpModelTest, CheckpointMissingFileIsNotFound) {
  const std::string path = Path("missing.safetensors");
  absl::StatusOr<MlpModel> m = LoadFloatCheckpoint(path);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(m.status().message(), HasSubstr(path));
}

TEST_F(MlpModelTest, CheckpointRejectsUnsupportedActivation) {
  FileBuilder b;
  b.F32Fill("0.weight", {4, 3}, 1.0f);
  const std::string path = Path("act.safetensors");
  b.Write(path, {{"activation", "tanh"}});
  absl::StatusOr<MlpModel> m = LoadFloatCheckpoint(path);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), AllOf(HasSubstr(path), HasSubstr("activation 'tanh' is not supported")));
}

}  // namespace
}  // namespace fp8serve
