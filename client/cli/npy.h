// NumPy .npy files (format versions 1.0-3.0), read without NumPy: the magic "\x93NUMPY", a version,
// a little-endian header length, a Python dict literal {'descr': '<f4', 'fortran_order': False,
// 'shape': (N, 784), } padded with spaces, then the data. fp8serve-client reads float32 and float16
// arrays in C order, which is what np.save writes by default.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace fp8serve::client {

struct NpyArray {
  std::string descr;           // as in the header: "<f4" or "<f2"
  std::vector<int64_t> shape;  // () for a scalar
  std::vector<float> values;   // every element as FP32 (float16 converts exactly)
  bool float16 = false;        // the file held float16
};

// `name` only labels errors.
absl::StatusOr<NpyArray> ParseNpy(std::string_view bytes, const std::string& name = "npy");
absl::StatusOr<NpyArray> ReadNpy(const std::string& path);

// A version 1.0 .npy file of float32 values in C order (tests and tools write inputs with it).
std::string EncodeNpyF32(std::span<const int64_t> shape, std::span<const float> values);

}  // namespace fp8serve::client
