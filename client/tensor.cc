#include "client/tensor.h"

#include <cstring>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/numerics/fp8.h"

namespace fp8serve::client {

namespace {

std::string ShapeText(std::span<const int64_t> shape) { return absl::StrCat("[", absl::StrJoin(shape, ","), "]"); }

inference::ModelInferRequest::InferInputTensor* NewInput(inference::ModelInferRequest& req, const std::string& name,
                                                         std::span<const int64_t> shape, WireType wire) {
  auto* in = req.add_inputs();
  in->set_name(name);
  in->set_datatype(WireTypeName(wire));
  for (int64_t d : shape) in->add_shape(d);
  return in;
}

absl::Status CheckCount(std::span<const int64_t> shape, size_t have) {
  absl::StatusOr<int64_t> n = ElementCount(shape);
  if (!n.ok()) return n.status();
  if (static_cast<uint64_t>(*n) != have) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape ", ShapeText(shape), " holds ", *n, " values, the buffer ", have));
  }
  return absl::OkStatus();
}

}  // namespace

const char* WireTypeName(WireType t) {
  switch (t) {
    case WireType::kFp32: return "FP32";
    case WireType::kFp16: return "FP16";
    case WireType::kBf16: return "BF16";
  }
  return "?";
}

absl::StatusOr<WireType> ParseWireType(std::string_view name) {
  const std::string n = absl::AsciiStrToLower(std::string(name));
  if (n == "fp32") return WireType::kFp32;
  if (n == "fp16") return WireType::kFp16;
  if (n == "bf16") return WireType::kBf16;
  return absl::InvalidArgumentError(absl::StrCat("unknown wire type '", std::string(name), "' (fp32, fp16 or bf16)"));
}

size_t WireTypeSize(WireType t) { return t == WireType::kFp32 ? 4 : 2; }

absl::StatusOr<int64_t> ElementCount(std::span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat("negative dimension in shape ", ShapeText(shape)));
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) {
      return absl::InvalidArgumentError(absl::StrCat("shape ", ShapeText(shape), " overflows"));
    }
    n *= d;
  }
  return n;
}

absl::Status AddInput(inference::ModelInferRequest& req, const std::string& name, std::span<const float> values,
                      std::span<const int64_t> shape, WireType wire) {
  if (absl::Status st = CheckCount(shape, values.size()); !st.ok()) return st;
  NewInput(req, name, shape, wire);
  std::string* raw = req.add_raw_input_contents();
  if (wire == WireType::kFp32) {
    raw->assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    return absl::OkStatus();
  }
  raw->resize(values.size() * 2);
  char* out = raw->data();
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t h = wire == WireType::kFp16 ? FloatToF16(values[i]) : FloatToBf16(values[i]);
    std::memcpy(out + 2 * i, &h, 2);  // the protocol's raw bytes are little-endian, as is the host
  }
  return absl::OkStatus();
}

absl::Status AddInput16(inference::ModelInferRequest& req, const std::string& name, std::span<const uint16_t> bits,
                        std::span<const int64_t> shape, WireType wire) {
  if (wire == WireType::kFp32) return absl::InvalidArgumentError("AddInput16 takes FP16 or BF16 bits, not FP32");
  if (absl::Status st = CheckCount(shape, bits.size()); !st.ok()) return st;
  NewInput(req, name, shape, wire);
  req.add_raw_input_contents()->assign(reinterpret_cast<const char*>(bits.data()), bits.size() * 2);
  return absl::OkStatus();
}

absl::StatusOr<inference::ModelInferRequest> MakeInferRequest(const std::string& model, const std::string& input,
                                                              std::span<const float> values, int64_t rows,
                                                              int64_t width, WireType wire) {
  inference::ModelInferRequest req;
  req.set_model_name(model);
  const int64_t shape[2] = {rows, width};
  if (absl::Status st = AddInput(req, input, values, shape, wire); !st.ok()) return st;
  return req;
}

FloatTensor::FloatTensor(std::string name, std::vector<int64_t> shape, std::vector<float> values)
    : name_(std::move(name)), shape_(std::move(shape)), values_(std::move(values)) {}

int64_t FloatTensor::rows() const { return shape_.size() >= 2 ? shape_[0] : 1; }
int64_t FloatTensor::cols() const {
  const int64_t r = rows();
  return r > 0 ? static_cast<int64_t>(values_.size()) / r : 0;
}
std::span<const float> FloatTensor::row(int64_t r) const {
  const size_t c = static_cast<size_t>(cols());
  return std::span<const float>(values_).subspan(static_cast<size_t>(r) * c, c);
}

absl::StatusOr<FloatTensor> OutputTensor(const inference::ModelInferResponse& resp, std::string_view name) {
  int index = -1;
  for (int i = 0; i < resp.outputs_size(); ++i) {
    if (name.empty() || resp.outputs(i).name() == name) {
      index = i;
      break;
    }
  }
  if (index < 0) {
    return absl::NotFoundError(name.empty() ? std::string("the response has no outputs")
                                            : absl::StrCat("the response has no output '", std::string(name), "'"));
  }
  const auto& out = resp.outputs(index);
  std::vector<int64_t> shape(out.shape().begin(), out.shape().end());
  absl::StatusOr<int64_t> n = ElementCount(shape);
  if (!n.ok()) return n.status();
  const std::string where = absl::StrCat("output '", out.name(), "' ", out.datatype(), " ", ShapeText(shape));
  std::vector<float> values(static_cast<size_t>(*n));
  if (index < resp.raw_output_contents_size()) {
    const std::string& raw = resp.raw_output_contents(index);
    absl::StatusOr<WireType> type = ParseWireType(out.datatype());
    if (!type.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": not a float datatype"));
    if (raw.size() != values.size() * WireTypeSize(*type)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", raw.size(), " bytes, want ", values.size() * WireTypeSize(*type)));
    }
    if (*type == WireType::kFp32) {
      std::memcpy(values.data(), raw.data(), raw.size());
    } else {
      for (size_t i = 0; i < values.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, raw.data() + 2 * i, 2);
        values[i] = *type == WireType::kFp16 ? F16ToFloat(h) : Bf16ToFloat(h);
      }
    }
  } else {
    const auto& typed = out.contents().fp32_contents();
    if (out.datatype() != "FP32" || static_cast<size_t>(typed.size()) != values.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": no raw contents and ", typed.size(), " typed FP32 values"));
    }
    std::copy(typed.begin(), typed.end(), values.begin());
  }
  return FloatTensor(out.name(), std::move(shape), std::move(values));
}

}  // namespace fp8serve::client
