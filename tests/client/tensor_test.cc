// Request and response tensors: shapes, raw little-endian encodings, and decoding every float type.
#include "client/tensor.h"

#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/numerics/fp8.h"

namespace fp8serve::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(TensorTest, WireTypes) {
  EXPECT_EQ(ParseWireType("FP16").value(), WireType::kFp16);
  EXPECT_EQ(ParseWireType("bf16").value(), WireType::kBf16);
  EXPECT_EQ(ParseWireType("fp32").value(), WireType::kFp32);
  EXPECT_FALSE(ParseWireType("fp8").ok());
  EXPECT_STREQ(WireTypeName(WireType::kBf16), "BF16");
  EXPECT_EQ(WireTypeSize(WireType::kFp16), 2u);
}

TEST(TensorTest, ElementCount) {
  const int64_t ok[] = {3, 4};
  EXPECT_EQ(ElementCount(ok).value(), 12);
  const int64_t negative[] = {-1, 4};
  EXPECT_FALSE(ElementCount(negative).ok());
  const int64_t huge[] = {int64_t{1} << 40, int64_t{1} << 40};
  EXPECT_FALSE(ElementCount(huge).ok());
}

TEST(TensorTest, MakeInferRequestCarriesRawFp32) {
  const std::vector<float> x = {1.0f, -2.5f, 3.25f, 0.0f, 5.0f, 6.0f};
  auto req = MakeInferRequest("m", "in", x, 2, 3);
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->model_name(), "m");
  ASSERT_EQ(req->inputs_size(), 1);
  EXPECT_EQ(req->inputs(0).name(), "in");
  EXPECT_EQ(req->inputs(0).datatype(), "FP32");
  EXPECT_THAT(req->inputs(0).shape(), ElementsAre(2, 3));
  ASSERT_EQ(req->raw_input_contents_size(), 1);
  ASSERT_EQ(req->raw_input_contents(0).size(), x.size() * 4);
  EXPECT_EQ(std::memcmp(req->raw_input_contents(0).data(), x.data(), x.size() * 4), 0);
  // The shape must hold the buffer exactly.
  EXPECT_THAT(std::string(MakeInferRequest("m", "in", x, 2, 4).status().message()), HasSubstr("[2,4] holds 8"));
}

TEST(TensorTest, Fp16AndBf16RoundToNearestEven) {
  const std::vector<float> x = {1.0f, 1.0f + 1.0f / 4096, 65504.0f, 1e-8f, -3.14159f};
  for (WireType w : {WireType::kFp16, WireType::kBf16}) {
    inference::ModelInferRequest req;
    const int64_t shape[] = {static_cast<int64_t>(x.size())};
    ASSERT_TRUE(AddInput(req, "x", x, shape, w).ok());
    EXPECT_EQ(req.inputs(0).datatype(), WireTypeName(w));
    const std::string& raw = req.raw_input_contents(0);
    ASSERT_EQ(raw.size(), x.size() * 2);
    for (size_t i = 0; i < x.size(); ++i) {
      uint16_t h;
      std::memcpy(&h, raw.data() + 2 * i, 2);
      EXPECT_EQ(h, w == WireType::kFp16 ? FloatToF16(x[i]) : FloatToBf16(x[i])) << i;
    }
  }
  inference::ModelInferRequest req;
  const uint16_t bits[] = {0x3c00, 0xc000};
  const int64_t shape[] = {2};
  EXPECT_FALSE(AddInput16(req, "x", bits, shape, WireType::kFp32).ok());
  ASSERT_TRUE(AddInput16(req, "x", bits, shape, WireType::kBf16).ok());
  EXPECT_EQ(req.raw_input_contents(0), std::string("\x00\x3c\x00\xc0", 4));
}

inference::ModelInferResponse Response(const std::string& datatype, std::vector<int64_t> shape, std::string raw) {
  inference::ModelInferResponse r;
  auto* o = r.add_outputs();
  o->set_name("logits");
  o->set_datatype(datatype);
  for (int64_t d : shape) o->add_shape(d);
  r.add_raw_output_contents(std::move(raw));
  return r;
}

TEST(TensorTest, OutputTensorDecodesEveryFloatType) {
  const std::vector<float> v = {1.5f, -2.0f, 0.25f, 8.0f, 3.0f, -0.5f};  // exact in FP16 and BF16
  std::string f32(reinterpret_cast<const char*>(v.data()), v.size() * 4), f16, bf16;
  for (float x : v) {
    const uint16_t h = FloatToF16(x), b = FloatToBf16(x);
    f16.append(reinterpret_cast<const char*>(&h), 2);
    bf16.append(reinterpret_cast<const char*>(&b), 2);
  }
  for (const auto& [type, raw] : {std::pair{"FP32", f32}, std::pair{"FP16", f16}, std::pair{"BF16", bf16}}) {
    auto t = OutputTensor(Response(type, {2, 3}, raw), "logits");
    ASSERT_TRUE(t.ok()) << type << ": " << t.status();
    EXPECT_EQ(t->values(), v) << type;
    EXPECT_EQ(t->rows(), 2);
    EXPECT_EQ(t->cols(), 3);
    EXPECT_THAT(t->row(1), ElementsAre(8.0f, 3.0f, -0.5f));
    EXPECT_EQ(t->at(0, 1), -2.0f);
  }
  // Typed contents, and the first output when no name is given.
  inference::ModelInferResponse typed;
  auto* o = typed.add_outputs();
  o->set_name("y");
  o->set_datatype("FP32");
  o->add_shape(3);
  for (float x : {1.0f, 2.0f, 3.0f}) o->mutable_contents()->add_fp32_contents(x);
  auto t = OutputTensor(typed);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->rows(), 1);
  EXPECT_THAT(t->row(0), ElementsAre(1.0f, 2.0f, 3.0f));
}

TEST(TensorTest, OutputTensorRefusesWhatDoesNotAddUp) {
  EXPECT_EQ(OutputTensor(inference::ModelInferResponse()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(OutputTensor(Response("FP32", {2, 3}, std::string(24, '\0')), "probs").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(OutputTensor(Response("FP32", {2, 3}, std::string(20, '\0'))).status().message()),
              HasSubstr("20 bytes, want 24"));
  EXPECT_FALSE(OutputTensor(Response("INT8", {2}, std::string(2, '\0'))).ok());
}

}  // namespace
}  // namespace fp8serve::client
