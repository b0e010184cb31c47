// IDX files (the MNIST / Fashion-MNIST container), plain or gzip-compressed, as Debian's
// dataset-fashion-mnist package ships them: a big-endian magic (0x0000 type ndim), ndim
// big-endian uint32 dimensions, then the data. Only unsigned-byte data (type 0x08) is supported.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fp8serve {

struct IdxArray {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;
};

absl::StatusOr<IdxArray> ReadIdx(const std::string& path);

// Images [n, rows, cols] as float rows of rows*cols pixels scaled by 1/255, the models' input
// convention. `limit` > 0 keeps the first `limit` images.
absl::StatusOr<std::vector<float>> ReadIdxImagesAsFloat(const std::string& path, int* num_images, int* pixels,
                                                        int limit = 0);
absl::StatusOr<std::vector<int>> ReadIdxLabels(const std::string& path, int limit = 0);

}  // namespace fp8serve
