// Typed helpers between C++ buffers and the protocol's tensors: a float, FP16 or BF16 buffer and a
// shape become an input of a ModelInferRequest (raw little-endian bytes, as tritonclient sends
// them), and an output of a ModelInferResponse becomes a FloatTensor whatever its wire datatype.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "grpc_service.pb.h"

namespace fp8serve::client {

// The element types the FP8 MLP server accepts on the wire.
enum class WireType { kFp32, kFp16, kBf16 };
const char* WireTypeName(WireType t);  // the protocol's datatype string: "FP32", "FP16", "BF16"
absl::StatusOr<WireType> ParseWireType(std::string_view name);  // fp32|fp16|bf16, any case
size_t WireTypeSize(WireType t);

// Elements a shape holds; an error for a negative dimension or an overflow.
absl::StatusOr<int64_t> ElementCount(std::span<const int64_t> shape);

// Appends input `name` with `shape` to `req`, converting `values` to `wire` (round to nearest even
// for FP16/BF16). values.size() must equal the shape's element count.
absl::Status AddInput(inference::ModelInferRequest& req, const std::string& name, std::span<const float> values,
                      std::span<const int64_t> shape, WireType wire = WireType::kFp32);
// The same for a buffer already in FP16 or BF16 (bit patterns, host order): sent unchanged.
absl::Status AddInput16(inference::ModelInferRequest& req, const std::string& name, std::span<const uint16_t> bits,
                        std::span<const int64_t> shape, WireType wire);

// A one-input request for a batching model: `rows` rows of `width` values, shape [rows, width].
absl::StatusOr<inference::ModelInferRequest> MakeInferRequest(const std::string& model, const std::string& input,
                                                              std::span<const float> values, int64_t rows,
                                                              int64_t width, WireType wire = WireType::kFp32);

// An output tensor decoded to FP32, row-major. For a rank-2 output [rows, cols]; a rank-1 output
// reads as one row.
class FloatTensor {
 public:
  FloatTensor() = default;
  FloatTensor(std::string name, std::vector<int64_t> shape, std::vector<float> values);

  const std::string& name() const { return name_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<float>& values() const { return values_; }
  int64_t rows() const;
  int64_t cols() const;
  std::span<const float> row(int64_t r) const;
  float at(int64_t r, int64_t c) const { return values_[static_cast<size_t>(r * cols() + c)]; }

 private:
  std::string name_;
  std::vector<int64_t> shape_;
  std::vector<float> values_;
};

// Output `name` of `resp` (the first output when `name` is empty), from raw_output_contents or the
// typed fp32_contents, FP32/FP16/BF16. An error when it is absent or its bytes disagree with its shape.
absl::StatusOr<FloatTensor> OutputTensor(const inference::ModelInferResponse& resp, std::string_view name = {});

}  // namespace fp8serve::client
