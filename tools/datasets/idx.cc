#include "tools/datasets/idx.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace fp8serve {

absl::StatusOr<IdxArray> ReadIdx(const std::string& path) {
  // gzopen reads plain files transparently, so one path handles both.
  gzFile gz = gzopen(path.c_str(), "rb");
  if (gz == nullptr) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(gz, buf, sizeof(buf))) > 0) bytes.insert(bytes.end(), buf, buf + n);
  int errnum = Z_OK;
  const std::string zmsg = gzerror(gz, &errnum);  // points into gz: copy it before gzclose frees it
  gzclose(gz);
  if (n < 0 || errnum != Z_OK) {  // a truncated stream reports Z_BUF_ERROR: reject it too
    return absl::InvalidArgumentError(absl::StrCat(path, ": gzip error: ", zmsg));
  }
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not an IDX file (bad magic)"));
  }
  if (bytes[2] != 0x08) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": IDX data type 0x", absl::Hex(bytes[2]),
                                                   " is not unsigned byte (0x08)"));
  }
  const int ndim = bytes[3];
  if (ndim < 1 || bytes.size() < 4 + 4 * static_cast<size_t>(ndim)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated IDX header"));
  }
  IdxArray a;
  uint64_t total = 1;
  for (int i = 0; i < ndim; ++i) {
    const uint8_t* p = bytes.data() + 4 + 4 * i;
    const uint32_t d = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    a.dims.push_back(d);
    if (__builtin_mul_overflow(total, uint64_t{d}, &total)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": IDX dimensions overflow: the header is corrupt"));
    }
  }
  const size_t header = 4 + 4 * static_cast<size_t>(ndim);
  if (bytes.size() - header != total) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": IDX dimensions promise ", total, " bytes of data but the file holds ", bytes.size() - header));
  }
  a.data.assign(bytes.begin() + header, bytes.end());
  return a;
}

absl::StatusOr<std::vector<float>> ReadIdxImagesAsFloat(const std::string& path, int* num_images, int* pixels,
                                                        int limit) {
  absl::StatusOr<IdxArray> a = ReadIdx(path);
  if (!a.ok()) return a.status();
  if (a->dims.size() != 3) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected images [n, rows, cols], got ", a->dims.size(), " dims"));
  }
  int n = static_cast<int>(a->dims[0]);
  if (limit > 0 && limit < n) n = limit;
  const uint64_t px64 = uint64_t{a->dims[1]} * a->dims[2];
  if (px64 == 0 || px64 > (1u << 24)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": images of ", a->dims[1], "x", a->dims[2], " pixels are not supported"));
  }
  const int px = static_cast<int>(px64);
  std::vector<float> out(static_cast<size_t>(n) * px);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(a->data[i]) / 255.0f;
  *num_images = n;
  *pixels = px;
  return out;
}

absl::StatusOr<std::vector<int>> ReadIdxLabels(const std::string& path, int limit) {
  absl::StatusOr<IdxArray> a = ReadIdx(path);
  if (!a.ok()) return a.status();
  if (a->dims.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected labels [n], got ", a->dims.size(), " dims"));
  }
  size_t n = a->data.size();
  if (limit > 0 && static_cast<size_t>(limit) < n) n = static_cast<size_t>(limit);
  return std::vector<int>(a->data.begin(), a->data.begin() + static_cast<std::ptrdiff_t>(n));
}

}  // namespace fp8serve
