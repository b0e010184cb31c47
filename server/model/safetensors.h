// safetensors files: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor
// name to {dtype, shape, data_offsets: [begin, end]} (offsets relative to the data section), an
// optional "__metadata__" object of strings, then the raw little-endian data.
//
// The reader memory-maps the file and checks everything before handing out a byte: the header
// length, the JSON, each dtype, each shape against its byte range, ranges inside the data section,
// and that the ranges neither overlap nor leave holes. Every error names the file and, where there
// is one, the tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fp8serve {

enum class DType : uint8_t { kF8E4M3, kF8E5M2, kBF16, kF16, kF32 };

const char* DTypeName(DType d);  // safetensors spelling: "F8_E4M3", "F32", ...
std::optional<DType> ParseDType(std::string_view name);
size_t DTypeSize(DType d);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  size_t begin = 0;  // offsets into the data section
  size_t end = 0;

  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Opens and validates `path`. The mapping lives as long as the returned object.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in header order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* Find(std::string_view name) const;
  std::span<const uint8_t> Data(const TensorInfo& t) const { return {data_ + t.begin, t.end - t.begin}; }

  // The tensor converted to FP32 (F32, BF16 and F16; FP8 decodes without scale), or an error naming
  // the file and tensor when its dtype is not a float type.
  absl::StatusOr<std::vector<float>> ReadAsFloat(const TensorInfo& t) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: the bytes must be shape x dtype size long (little-endian, as in memory here).
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::span<const uint8_t> bytes;
};

// Writes a safetensors file atomically (a temporary file in the same folder, then rename), so a
// reader never sees a half-written model. The data section is 8-byte aligned.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata);

template <typename T>
std::span<const uint8_t> AsBytes(const std::vector<T>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(T)};
}

}  // namespace fp8serve
