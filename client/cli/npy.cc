#include "client/cli/npy.h"

#include <cctype>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/numerics/fp8.h"

namespace fp8serve::client {

namespace {

constexpr std::string_view kMagic = "\x93NUMPY";

// A cursor over the header's dict literal. Only what np.save writes is accepted: string keys,
// and values that are strings, True/False or tuples of integers.
class HeaderParser {
 public:
  explicit HeaderParser(std::string_view s) : s_(s) {}

  void SkipSpace() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool Eat(char c) {
    SkipSpace();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool String(std::string* out) {
    SkipSpace();
    if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) return false;
    const char q = s_[i_++];
    const size_t end = s_.find(q, i_);
    if (end == std::string_view::npos) return false;
    *out = std::string(s_.substr(i_, end - i_));
    i_ = end + 1;
    return true;
  }
  bool Word(std::string* out) {
    SkipSpace();
    const size_t start = i_;
    while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '_')) ++i_;
    *out = std::string(s_.substr(start, i_ - start));
    return !out->empty();
  }
  bool Tuple(std::vector<int64_t>* out) {
    if (!Eat('(')) return false;
    while (!Eat(')')) {
      std::string w;
      int64_t v;
      if (!Word(&w)) return false;
      if (!w.empty() && (w.back() == 'L')) w.pop_back();  // Python 2 longs
      if (!absl::SimpleAtoi(w, &v) || v < 0) return false;
      out->push_back(v);
      if (!Eat(',')) {
        if (!Eat(')')) return false;
        break;
      }
    }
    return true;
  }

 private:
  std::string_view s_;
  size_t i_ = 0;
};

}  // namespace

absl::StatusOr<NpyArray> ParseNpy(std::string_view bytes, const std::string& name) {
  auto bad = [&name](const std::string& why) { return absl::InvalidArgumentError(absl::StrCat(name, ": ", why)); };
  if (bytes.size() < 10 || bytes.substr(0, 6) != kMagic) return bad("not a .npy file (no \\x93NUMPY magic)");
  const int major = static_cast<uint8_t>(bytes[6]);
  size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return bad("truncated header");
    header_len = 0;
    for (int k = 0; k < 4; ++k) header_len |= static_cast<size_t>(static_cast<uint8_t>(bytes[8 + k])) << (8 * k);
    offset = 12;
  } else {
    return bad(absl::StrCat("unsupported .npy version ", major));
  }
  if (header_len > bytes.size() - offset) return bad("truncated header");
  HeaderParser p(bytes.substr(offset, header_len));
  const size_t data_offset = offset + header_len;

  NpyArray a;
  bool have_descr = false, have_order = false, have_shape = false, fortran = false;
  if (!p.Eat('{')) return bad("header is not a dict");
  while (!p.Eat('}')) {
    std::string key;
    if (!p.String(&key) || !p.Eat(':')) return bad("malformed header dict");
    if (key == "descr") {
      if (!p.String(&a.descr)) return bad("'descr' is not a string (structured arrays are not supported)");
      have_descr = true;
    } else if (key == "fortran_order") {
      std::string w;
      if (!p.Word(&w) || (w != "True" && w != "False")) return bad("'fortran_order' is not True or False");
      fortran = w == "True";
      have_order = true;
    } else if (key == "shape") {
      if (!p.Tuple(&a.shape)) return bad("'shape' is not a tuple of integers");
      have_shape = true;
    } else {
      return bad(absl::StrCat("unexpected header key '", key, "'"));
    }
    if (!p.Eat(',')) {
      if (!p.Eat('}')) return bad("malformed header dict");
      break;
    }
  }
  if (!have_descr || !have_order || !have_shape) return bad("header lacks descr, fortran_order or shape");
  if (fortran) return bad("Fortran-order array; save it in C order (np.ascontiguousarray)");

  size_t item;
  if (a.descr == "<f4" || a.descr == "=f4") {
    item = 4;
  } else if (a.descr == "<f2" || a.descr == "=f2") {
    item = 2;
    a.float16 = true;
  } else if (a.descr.size() == 3 && a.descr[0] == '>') {
    return bad(absl::StrCat("big-endian data (", a.descr, ") is not supported; use astype('<f4')"));
  } else {
    return bad(absl::StrCat("dtype ", a.descr, " is not supported: float32 (<f4) or float16 (<f2) only"));
  }
  uint64_t n = 1;
  for (int64_t d : a.shape) {
    if (d != 0 && n > std::numeric_limits<uint64_t>::max() / 8 / static_cast<uint64_t>(d))
      return bad("shape overflows");
    n *= static_cast<uint64_t>(d);
  }
  const uint64_t have = bytes.size() - data_offset;
  if (have != n * item) {
    return bad(absl::StrCat("shape (", absl::StrJoin(a.shape, ", "), ") needs ", n * item,
                            " bytes of data, the file has ", have));
  }
  a.values.resize(n);
  const char* data = bytes.data() + data_offset;
  if (item == 4) {
    if (n > 0) std::memcpy(a.values.data(), data, n * 4);  // an empty array's data() may be null
  } else {
    for (uint64_t k = 0; k < n; ++k) {
      uint16_t h;
      std::memcpy(&h, data + 2 * k, 2);
      a.values[k] = F16ToFloat(h);
    }
  }
  return a;
}

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseNpy(ss.str(), path);
}

std::string EncodeNpyF32(std::span<const int64_t> shape, std::span<const float> values) {
  std::string dict = absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", absl::StrJoin(shape, ", "),
                                  shape.size() == 1 ? ",), }" : "), }");
  // Pad so the data starts on a 64-byte boundary, ending the header with a newline, as NumPy does.
  const size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out(kMagic);
  out.push_back(1);
  out.push_back(0);
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>(dict.size() >> 8));
  out += dict;
  out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  return out;
}

}  // namespace fp8serve::client
