#include "server/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/numerics/fp8.h"
#include "nlohmann/json.hpp"

namespace fp8serve {

namespace {

// The same cap the reference implementation uses: a larger header is a corrupt or hostile file.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

absl::Status FileError(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}
absl::Status TensorError(const std::string& path, const std::string& tensor, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", tensor, "': ", what));
}

std::string ShapeString(const std::vector<int64_t>& shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

}  // namespace

const char* DTypeName(DType d) {
  switch (d) {
    case DType::kF8E4M3: return "F8_E4M3";
    case DType::kF8E5M2: return "F8_E5M2";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kF32: return "F32";
  }
  return "?";
}

std::optional<DType> ParseDType(std::string_view name) {
  for (DType d : {DType::kF8E4M3, DType::kF8E5M2, DType::kBF16, DType::kF16, DType::kF32}) {
    if (DTypeName(d) == name) return d;
  }
  return std::nullopt;
}

size_t DTypeSize(DType d) {
  switch (d) {
    case DType::kF8E4M3:
    case DType::kF8E5M2: return 1;
    case DType::kBF16:
    case DType::kF16: return 2;
    case DType::kF32: return 4;
  }
  return 0;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(map_, map_size_);
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  for (const TensorInfo& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = absl::StrCat(path, ": cannot open: ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return FileError(path, "not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    close(fd);
    return FileError(path, absl::StrCat("truncated: ", size, " bytes, shorter than the 8-byte header length"));
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return FileError(path, absl::StrCat("mmap failed: ", std::strerror(errno)));
  f->map_ = map;
  f->map_size_ = size;
  const auto* bytes = static_cast<const uint8_t*>(map);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxHeaderBytes) {
    return FileError(path, absl::StrCat("header length ", header_len, " exceeds the ", kMaxHeaderBytes, "-byte limit"));
  }
  if (header_len > size - 8) {
    return FileError(path, absl::StrCat("header length ", header_len, " runs past the end of the file (",
                                        size - 8, " bytes follow the length)"));
  }
  const char* hdr = reinterpret_cast<const char*>(bytes + 8);
  // ordered_json keeps the header's order, which tensors() promises.
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(hdr, hdr + header_len, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return FileError(path, "header is not valid JSON");
  if (!j.is_object()) return FileError(path, "header JSON is not an object");

  f->data_ = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;

  for (const auto& [name, entry] : j.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return FileError(path, "__metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) return FileError(path, absl::StrCat("__metadata__ value '", k, "' is not a string"));
        f->metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) return TensorError(path, name, "entry is not an object");
    TensorInfo t;
    t.name = name;
    const auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end() || !dtype_it->is_string()) return TensorError(path, name, "missing string 'dtype'");
    const std::string dtype_name = dtype_it->get<std::string>();
    const std::optional<DType> dtype = ParseDType(dtype_name);
    if (!dtype) {
      return TensorError(path, name, absl::StrCat("unsupported dtype '", dtype_name,
                                                  "' (supported: F8_E4M3, F8_E5M2, BF16, F16, F32)"));
    }
    t.dtype = *dtype;

    const auto shape_it = entry.find("shape");
    if (shape_it == entry.end() || !shape_it->is_array()) return TensorError(path, name, "missing array 'shape'");
    uint64_t numel = 1;
    for (const auto& d : *shape_it) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) {
        return TensorError(path, name, "shape entries must be non-negative integers");
      }
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > (uint64_t{1} << 62) / dim) return TensorError(path, name, "shape is absurdly large");
      numel *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }

    const auto off_it = entry.find("data_offsets");
    if (off_it == entry.end() || !off_it->is_array() || off_it->size() != 2 || !(*off_it)[0].is_number_unsigned() ||
        !(*off_it)[1].is_number_unsigned()) {
      return TensorError(path, name, "'data_offsets' must be two non-negative integers");
    }
    const uint64_t begin = (*off_it)[0].get<uint64_t>(), end = (*off_it)[1].get<uint64_t>();
    if (begin > end) return TensorError(path, name, absl::StrCat("data_offsets [", begin, ", ", end, "] are reversed"));
    if (end > data_size) {
      return TensorError(path, name, absl::StrCat("data_offsets [", begin, ", ", end, "] run past the data section (",
                                                   data_size, " bytes): the file is truncated or corrupt"));
    }
    uint64_t want = 0;
    if (__builtin_mul_overflow(numel, DTypeSize(t.dtype), &want)) return TensorError(path, name, "shape is absurdly large");
    if (end - begin != want) {
      return TensorError(path, name, absl::StrCat("shape ", ShapeString(t.shape), " of ", dtype_name, " needs ", want,
                                                  " bytes but data_offsets span ", end - begin));
    }
    t.begin = begin;
    t.end = end;
    f->tensors_.push_back(std::move(t));
  }

  // Ranges must tile the data section: no overlap (two tensors sharing bytes) and no holes.
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : f->tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo* t : by_offset) {
    if (t->begin < cursor) {
      return TensorError(path, t->name, absl::StrCat("data_offsets [", t->begin, ", ", t->end, "] overlap tensor '",
                                                     prev->name, "' [", prev->begin, ", ", prev->end, "]"));
    }
    if (t->begin > cursor) {
      return TensorError(path, t->name, absl::StrCat("starts at ", t->begin, " but the previous tensor ends at ", cursor,
                                                     ": the data section has a hole"));
    }
    cursor = t->end;
    prev = t;
  }
  if (cursor != data_size) {
    return FileError(path, absl::StrCat("data section is ", data_size, " bytes but tensors cover ", cursor));
  }
  return f;
}

absl::StatusOr<std::vector<float>> SafetensorsFile::ReadAsFloat(const TensorInfo& t) const {
  const std::span<const uint8_t> b = Data(t);
  const size_t n = static_cast<size_t>(t.numel());
  std::vector<float> out(n);
  switch (t.dtype) {
    case DType::kF32: std::memcpy(out.data(), b.data(), n * 4); break;
    case DType::kBF16:
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, b.data() + 2 * i, 2);
        out[i] = t.dtype == DType::kBF16 ? Bf16ToFloat(h) : F16ToFloat(h);
      }
      break;
    case DType::kF8E4M3:
    case DType::kF8E5M2: {
      const Fp8Format fmt = t.dtype == DType::kF8E4M3 ? Fp8Format::kE4M3 : Fp8Format::kE5M2;
      for (size_t i = 0; i < n; ++i) out[i] = DecodeFp8(fmt, b[i]);
      break;
    }
  }
  return out;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    if (t.name == "__metadata__") return TensorError(path, t.name, "name is reserved for the metadata");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return TensorError(path, t.name, "negative dimension");
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) {
        return TensorError(path, t.name, "shape is absurdly large");
      }
    }
    uint64_t want = 0;
    if (__builtin_mul_overflow(numel, DTypeSize(t.dtype), &want) || want != t.bytes.size()) {
      return TensorError(path, t.name, absl::StrCat("shape ", ShapeString(t.shape), " of ", DTypeName(t.dtype), " needs ",
                                                    numel * DTypeSize(t.dtype), " bytes, got ", t.bytes.size()));
    }
    if (header.contains(t.name)) return TensorError(path, t.name, "duplicate tensor name");
    header[t.name] = {{"dtype", DTypeName(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // align the data section to 8 bytes

  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  std::FILE* out = std::fopen(tmp.c_str(), "wb");
  if (out == nullptr) return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot create: ", std::strerror(errno)));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(json.size()) >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, out) == 8 && std::fwrite(json.data(), 1, json.size(), out) == json.size();
  for (const TensorToWrite& t : tensors) {
    if (t.bytes.empty()) continue;  // an empty tensor's span may hold a null pointer, which fwrite must not see
    ok = ok && std::fwrite(t.bytes.data(), 1, t.bytes.size(), out) == t.bytes.size();
  }
  ok = (std::fflush(out) == 0) && ok;
  ok = (fsync(fileno(out)) == 0) && ok;
  ok = (std::fclose(out) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat(path, ": write failed: ", std::strerror(err)));
  }
  return absl::OkStatus();
}

}  // namespace fp8serve
