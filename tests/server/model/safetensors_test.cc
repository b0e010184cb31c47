#include "server/model/safetensors.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fp8serve {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A fresh directory per test, so files from one case can never satisfy another.
std::string MakeTempDir() {
  std::string tmpl = ::testing::TempDir();
  if (!tmpl.empty() && tmpl.back() != '/') tmpl += '/';
  tmpl += "safetensors_test_XXXXXX";
  char* dir = mkdtemp(tmpl.data());
  EXPECT_NE(dir, nullptr) << std::strerror(errno);
  return tmpl;
}

std::string LeLength(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// The raw file bytes: 8-byte little-endian header length, header JSON, data section.
std::string RawFile(const std::string& header, const std::string& data) { return LeLength(header.size()) + header + data; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  return names;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir(); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string WriteRaw(const std::string& name, const std::string& bytes) {
    const std::string p = Path(name);
    WriteFile(p, bytes);
    return p;
  }

  std::string dir_;
};

// ---------------------------------------------------------------------------------------------
// Malformed files: every one is rejected with InvalidArgument and a message naming the file, the
// tensor (where there is one) and the fault.

struct BadFileCase {
  std::string name;
  std::string bytes;
  std::vector<std::string> want;  // substrings of the message besides the path
};
void PrintTo(const BadFileCase& c, std::ostream* os) { *os << c.name; }

std::string Entry(const std::string& name, const std::string& body) { return absl::StrCat("\"", name, "\":{", body, "}"); }

std::vector<BadFileCase> BadFileCases() {
  const std::string f32x4 = R"("dtype":"F32","shape":[4],"data_offsets":[0,16])";
  const std::string good = RawFile(absl::StrCat("{", Entry("a", f32x4), "}"), std::string(16, '\x01'));
  return {
      {"EmptyFile", "", {"truncated: 0 bytes", "8-byte header length"}},
      {"ShorterThanLength", std::string(5, '\0'), {"truncated: 5 bytes"}},
      // A valid file cut short inside its data section.
      {"TruncatedData", good.substr(0, good.size() - 3), {"tensor 'a'", "data_offsets [0, 16]", "run past the data section (13 bytes)", "truncated"}},
      // The same file cut inside its header.
      {"TruncatedHeader", good.substr(0, 20), {"header length", "runs past the end of the file (12 bytes follow"}},
      {"HeaderLengthPastEof", LeLength(1000) + "{}", {"header length 1000 runs past the end of the file (2 bytes follow"}},
      {"HeaderLengthOver100MB", LeLength(uint64_t{200} << 20) + "{}", {"header length 209715200 exceeds the 104857600-byte limit"}},
      {"HeaderLengthHuge", LeLength(~uint64_t{0}) + "{}", {"exceeds the 104857600-byte limit"}},
      {"BadJson", RawFile(R"({"a":{"dtype":"F32",)", ""), {"header is not valid JSON"}},
      {"EmptyHeader", RawFile("", ""), {"header is not valid JSON"}},
      {"HeaderIsArray", RawFile("[1,2,3]", ""), {"header JSON is not an object"}},
      {"HeaderIsString", RawFile(R"("a")", ""), {"header JSON is not an object"}},
      {"EntryNotObject", RawFile(R"({"a":[1,2]})", ""), {"tensor 'a'", "entry is not an object"}},
      {"UnknownDtypeI64", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"I64","shape":[1],"data_offsets":[0,8])"), "}"), std::string(8, '\0')),
       {"tensor 'w'", "unsupported dtype 'I64'", "supported: F8_E4M3, F8_E5M2, BF16, F16, F32"}},
      {"UnknownDtypeFnuz", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"F8_E4M3FNUZ","shape":[1],"data_offsets":[0,1])"), "}"), "x"),
       {"tensor 'w'", "unsupported dtype 'F8_E4M3FNUZ'"}},
      {"DtypeLowercase", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"f32","shape":[1],"data_offsets":[0,4])"), "}"), "abcd"),
       {"tensor 'w'", "unsupported dtype 'f32'"}},
      {"MissingDtype", RawFile(absl::StrCat("{", Entry("w", R"("shape":[1],"data_offsets":[0,4])"), "}"), "abcd"), {"tensor 'w'", "missing string 'dtype'"}},
      {"DtypeNotString", RawFile(absl::StrCat("{", Entry("w", R"("dtype":4,"shape":[1],"data_offsets":[0,4])"), "}"), "abcd"), {"tensor 'w'", "missing string 'dtype'"}},
      {"MissingShape", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"F32","data_offsets":[0,4])"), "}"), "abcd"), {"tensor 'w'", "missing array 'shape'"}},
      {"ShapeNotArray", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"F32","shape":1,"data_offsets":[0,4])"), "}"), "abcd"), {"tensor 'w'", "missing array 'shape'"}},
      {"MissingDataOffsets", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"F32","shape":[1])"), "}"), "abcd"),
       {"tensor 'w'", "'data_offsets' must be two non-negative integers"}},
      {"DataOffsetsThree", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"F32","shape":[1],"data_offsets":[0,4,8])"), "}"), "abcd"),
       {"tensor 'w'", "'data_offsets' must be two non-negative integers"}},
      {"DataOffsetNegative", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"F32","shape":[1],"data_offsets":[-4,0])"), "}"), "abcd"),
       {"tensor 'w'", "'data_offsets' must be two non-negative integers"}},
      {"NegativeDim", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"F32","shape":[2,-1],"data_offsets":[0,4])"), "}"), "abcd"),
       {"tensor 'w'", "shape entries must be non-negative integers"}},
      {"FractionalDim", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"F32","shape":[1.5],"data_offsets":[0,4])"), "}"), "abcd"),
       {"tensor 'w'", "shape entries must be non-negative integers"}},
      {"AbsurdShape", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4])"), "}"), "abcd"),
       {"tensor 'w'", "shape is absurdly large"}},
      {"DataOffsetsReversed", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"F32","shape":[1],"data_offsets":[8,4])"), "}"), std::string(8, '\0')),
       {"tensor 'w'", "data_offsets [8, 4] are reversed"}},
      {"DataOffsetsOutOfRange", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"F32","shape":[2],"data_offsets":[4,12])"), "}"), std::string(8, '\0')),
       {"tensor 'w'", "data_offsets [4, 12] run past the data section (8 bytes)"}},
      {"OverlappingRanges",
       RawFile(absl::StrCat("{", Entry("a", R"("dtype":"F32","shape":[2],"data_offsets":[0,8])"), ",",
                            Entry("b", R"("dtype":"F32","shape":[2],"data_offsets":[4,12])"), "}"),
               std::string(12, '\0')),
       {"tensor 'b'", "data_offsets [4, 12] overlap tensor 'a' [0, 8]"}},
      // Two tensors claiming the very same bytes.
      {"AliasedRanges",
       RawFile(absl::StrCat("{", Entry("a", R"("dtype":"F32","shape":[1],"data_offsets":[0,4])"), ",",
                            Entry("b", R"("dtype":"F32","shape":[1],"data_offsets":[0,4])"), "}"),
               std::string(4, '\0')),
       {"overlap tensor '"}},
      // A zero-size tensor placed inside another tensor's bytes is still an overlap.
      {"EmptyTensorInsideAnother",
       RawFile(absl::StrCat("{", Entry("a", R"("dtype":"F32","shape":[2],"data_offsets":[0,8])"), ",",
                            Entry("z", R"("dtype":"F32","shape":[0],"data_offsets":[4,4])"), "}"),
               std::string(8, '\0')),
       {"tensor 'z'", "overlap tensor 'a'"}},
      {"HoleBetweenTensors",
       RawFile(absl::StrCat("{", Entry("a", R"("dtype":"F32","shape":[1],"data_offsets":[0,4])"), ",",
                            Entry("b", R"("dtype":"F32","shape":[1],"data_offsets":[8,12])"), "}"),
               std::string(12, '\0')),
       {"tensor 'b'", "starts at 8 but the previous tensor ends at 4", "hole"}},
      {"HoleAtStart", RawFile(absl::StrCat("{", Entry("a", R"("dtype":"F32","shape":[1],"data_offsets":[4,8])"), "}"), std::string(8, '\0')),
       {"tensor 'a'", "starts at 4 but the previous tensor ends at 0", "hole"}},
      {"TrailingBytes", RawFile(absl::StrCat("{", Entry("a", R"("dtype":"F32","shape":[1],"data_offsets":[0,4])"), "}"), std::string(9, '\0')),
       {"data section is 9 bytes but tensors cover 4"}},
      {"DataWithNoTensors", RawFile("{}", "xyz"), {"data section is 3 bytes but tensors cover 0"}},
      {"ShapeSizeMismatch", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"F32","shape":[3],"data_offsets":[0,8])"), "}"), std::string(8, '\0')),
       {"tensor 'w'", "shape [3] of F32 needs 12 bytes but data_offsets span 8"}},
      {"ShapeSizeMismatchBf16", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"BF16","shape":[2,2],"data_offsets":[0,4])"), "}"), std::string(4, '\0')),
       {"tensor 'w'", "shape [2, 2] of BF16 needs 8 bytes but data_offsets span 4"}},
      {"MetadataNotObject", RawFile(R"({"__metadata__":["a"]})", ""), {"__metadata__ is not an object"}},
      {"MetadataValueNotString", RawFile(R"({"__metadata__":{"format":"x","n":1}})", ""), {"__metadata__ value 'n' is not a string"}},
      {"MetadataValueNested", RawFile(R"({"__metadata__":{"o":{"k":"v"}}})", ""), {"__metadata__ value 'o' is not a string"}},
  };
}

class BadFileTest : public SafetensorsTest, public ::testing::WithParamInterface<BadFileCase> {};

TEST_P(BadFileTest, IsRejectedWithFileTensorAndFault) {
  const BadFileCase& c = GetParam();
  const std::string path = WriteRaw(c.name + ".safetensors", c.bytes);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok()) << c.name << " was accepted";
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  EXPECT_THAT(f.status().message(), HasSubstr(path));
  for (const std::string& w : c.want) EXPECT_THAT(f.status().message(), HasSubstr(w));
}

INSTANTIATE_TEST_SUITE_P(Malformed, BadFileTest, ::testing::ValuesIn(BadFileCases()),
                         [](const ::testing::TestParamInfo<BadFileCase>& info) { return info.param.name; });

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  const std::string path = Path("does_not_exist.safetensors");
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound) << f.status();
  EXPECT_THAT(f.status().message(), AllOf(HasSubstr(path), HasSubstr("cannot open")));
}

TEST_F(SafetensorsTest, DirectoryIsNotARegularFile) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(dir_);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  EXPECT_THAT(f.status().message(), AllOf(HasSubstr(dir_), HasSubstr("not a regular file")));
}

// shape [2^62] of F32 is 2^64 bytes, which wraps to 0 in uint64: the reader must not accept it with
// an empty byte range, or numel() and ReadAsFloat() see 2^62 elements backed by nothing.
TEST_F(SafetensorsTest, RejectsShapeWhoseByteSizeOverflows) {
  const std::string path = WriteRaw(
      "overflow.safetensors", RawFile(absl::StrCat("{", Entry("w", R"("dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0])"), "}"), ""));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok()) << "accepted a tensor of " << (*f)->tensors()[0].numel() << " elements in 0 bytes";
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), AllOf(HasSubstr(path), HasSubstr("tensor 'w'")));
}

TEST_F(SafetensorsTest, AcceptsHeaderPaddedWithSpacesAndEmptyFile) {
  // What the reference writer produces for no tensors: "{}" padded to 8 bytes.
  const std::string path = WriteRaw("empty.safetensors", RawFile("{}      ", ""));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_THAT((*f)->tensors(), IsEmpty());
  EXPECT_THAT((*f)->metadata(), IsEmpty());
  EXPECT_EQ((*f)->path(), path);
}

// ---------------------------------------------------------------------------------------------
// Writer -> reader round trips.

struct Written {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<uint8_t> PatternBytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + 37 * i);
  return b;
}

TEST_F(SafetensorsTest, RoundTripsEveryDtypeAndShape) {
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {2, 0, 3}, {7}, {3, 5}, {2, 3, 4}};
  std::vector<Written> written;
  uint8_t seed = 1;
  for (DType d : {DType::kF8E4M3, DType::kF8E5M2, DType::kBF16, DType::kF16, DType::kF32}) {
    for (const auto& shape : shapes) {
      size_t n = 1;
      for (int64_t s : shape) n *= static_cast<size_t>(s);
      written.push_back({absl::StrCat(DTypeName(d), "/", written.size()), d, shape, PatternBytes(n * DTypeSize(d), seed++)});
    }
  }
  std::vector<TensorToWrite> tensors;
  for (const Written& w : written) tensors.push_back({w.name, w.dtype, w.shape, w.bytes});
  const std::string path = Path("all.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, {}).ok());

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), written.size());
  EXPECT_THAT((*f)->metadata(), IsEmpty());
  for (const Written& w : written) {
    SCOPED_TRACE(w.name);
    const TensorInfo* t = (*f)->Find(w.name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->name, w.name);
    EXPECT_EQ(t->dtype, w.dtype);
    EXPECT_EQ(t->shape, w.shape);
    EXPECT_EQ(t->numel() * static_cast<int64_t>(DTypeSize(w.dtype)), static_cast<int64_t>(w.bytes.size()));
    const std::span<const uint8_t> data = (*f)->Data(*t);
    EXPECT_EQ(std::vector<uint8_t>(data.begin(), data.end()), w.bytes);
  }
  EXPECT_EQ((*f)->Find("absent"), nullptr);
}

TEST_F(SafetensorsTest, TensorsComeBackInHeaderOrder) {
  // Names deliberately out of alphabetical order: the header documents tensors() as header order.
  const std::vector<float> v = {1.0f};
  const std::string path = Path("order.safetensors");
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"zeta", DType::kF32, {1}, AsBytes(v)},
                                {"alpha", DType::kF32, {1}, AsBytes(v)},
                                {"mid", DType::kF32, {1}, AsBytes(v)}},
                               {})
                  .ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  std::vector<std::string> names;
  for (const TensorInfo& t : (*f)->tensors()) names.push_back(t.name);
  EXPECT_THAT(names, ElementsAre("zeta", "alpha", "mid"));
}

TEST_F(SafetensorsTest, MetadataRoundTrips) {
  const std::map<std::string, std::string> meta = {
      {"format", "fp8serve.mlp.v1"}, {"empty", ""}, {"quoted", "a \"b\" \\ c\n\td"}, {"unicode", "h\xC3\xA9llo"}};
  const std::vector<float> v = {1.0f, 2.0f};
  const std::string path = Path("meta.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"v", DType::kF32, {2}, AsBytes(v)}}, meta).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata(), meta);
  // __metadata__ is not a tensor.
  ASSERT_EQ((*f)->tensors().size(), 1u);
  EXPECT_EQ((*f)->Find("__metadata__"), nullptr);
}

TEST_F(SafetensorsTest, ReadAsFloatDecodesEveryDtype) {
  const std::vector<float> f32 = {1.5f, -0.0f, std::numeric_limits<float>::infinity(), 3.0e-41f /* subnormal */};
  // BF16: 1.0, -2.5, +inf, smallest subnormal 2^-133.
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC020, 0x7F80, 0x0001};
  // F16: 1.0, -2.5, 65504 (max), smallest subnormal 2^-24.
  const std::vector<uint16_t> f16 = {0x3C00, 0xC100, 0x7BFF, 0x0001};
  // E4M3: 1.0, -448 (max), 2^-9 (smallest subnormal), 0.
  const std::vector<uint8_t> e4m3 = {0x38, 0xFE, 0x01, 0x00};
  // E5M2: 1.0, 57344 (max), -inf, 2^-16 (smallest subnormal).
  const std::vector<uint8_t> e5m2 = {0x3C, 0x7B, 0xFC, 0x01};
  const std::string path = Path("values.safetensors");
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"f32", DType::kF32, {2, 2}, AsBytes(f32)},
                                {"bf16", DType::kBF16, {4}, AsBytes(bf16)},
                                {"f16", DType::kF16, {4}, AsBytes(f16)},
                                {"e4m3", DType::kF8E4M3, {4}, AsBytes(e4m3)},
                                {"e5m2", DType::kF8E5M2, {4}, AsBytes(e5m2)}},
                               {})
                  .ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const auto read = [&](const std::string& name) {
    const TensorInfo* t = (*f)->Find(name);
    EXPECT_NE(t, nullptr) << name;
    absl::StatusOr<std::vector<float>> v = (*f)->ReadAsFloat(*t);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *v : std::vector<float>{};
  };
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> got_f32 = read("f32");
  ASSERT_EQ(got_f32.size(), 4u);
  EXPECT_EQ(std::memcmp(got_f32.data(), f32.data(), 16), 0);  // bit-exact, -0 included
  EXPECT_THAT(read("bf16"), ElementsAre(1.0f, -2.5f, inf, std::ldexp(1.0f, -133)));
  EXPECT_THAT(read("f16"), ElementsAre(1.0f, -2.5f, 65504.0f, std::ldexp(1.0f, -24)));
  EXPECT_THAT(read("e4m3"), ElementsAre(1.0f, -448.0f, std::ldexp(1.0f, -9), 0.0f));
  EXPECT_THAT(read("e5m2"), ElementsAre(1.0f, 57344.0f, -inf, std::ldexp(1.0f, -16)));
}

TEST_F(SafetensorsTest, ReadAsFloatOfScalarAndEmpty) {
  const std::vector<uint16_t> scalar = {0x4040};  // BF16 3.0
  const std::string path = Path("scalar.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"s", DType::kBF16, {}, AsBytes(scalar)}, {"e", DType::kF16, {0, 4}, {}}}, {}).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<std::vector<float>> s = (*f)->ReadAsFloat(*(*f)->Find("s"));
  ASSERT_TRUE(s.ok());
  EXPECT_THAT(*s, ElementsAre(3.0f));
  absl::StatusOr<std::vector<float>> e = (*f)->ReadAsFloat(*(*f)->Find("e"));
  ASSERT_TRUE(e.ok());
  EXPECT_THAT(*e, IsEmpty());
}

TEST_F(SafetensorsTest, DataSectionIsEightByteAligned) {
  // Names of every length mod 8 push the JSON through every residue before padding.
  for (int len = 1; len <= 16; ++len) {
    SCOPED_TRACE(len);
    const std::vector<uint8_t> b = {1, 2, 3};
    const std::string path = Path(absl::StrCat("align", len, ".safetensors"));
    ASSERT_TRUE(WriteSafetensors(path, {{std::string(len, 'n'), DType::kF8E4M3, {3}, b}}, {}).ok());
    const std::string raw = ReadFile(path);
    ASSERT_GE(raw.size(), 8u);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(raw[i]);
    EXPECT_EQ((8 + header_len) % 8, 0u);
    EXPECT_EQ(raw.size(), 8 + header_len + 3);
    EXPECT_EQ(raw.substr(8 + header_len), "\x01\x02\x03");
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(reinterpret_cast<uintptr_t>((*f)->Data((*f)->tensors()[0]).data()) % 8, 0u);
  }
}

TEST_F(SafetensorsTest, WriteOverwritesExistingFileAndLeavesNoTemporaries) {
  const std::string path = Path("model.safetensors");
  const std::vector<float> a = {1.0f}, b = {2.0f, 3.0f};
  ASSERT_TRUE(WriteSafetensors(path, {{"a", DType::kF32, {1}, AsBytes(a)}}, {}).ok());
  ASSERT_TRUE(WriteSafetensors(path, {{"b", DType::kF32, {2}, AsBytes(b)}}, {}).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 1u);
  EXPECT_EQ((*f)->tensors()[0].name, "b");
  EXPECT_THAT(ListDir(dir_), ElementsAre("model.safetensors"));
}

TEST_F(SafetensorsTest, WriteRejectsBytesShapeMismatch) {
  const std::string path = Path("bad.safetensors");
  const std::vector<float> five(5);
  const absl::Status st = WriteSafetensors(path, {{"w", DType::kF32, {2, 3}, AsBytes(five)}}, {});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), AllOf(HasSubstr(path), HasSubstr("tensor 'w'"), HasSubstr("shape [2, 3] of F32 needs 24 bytes, got 20")));
  EXPECT_THAT(ListDir(dir_), IsEmpty());
}

TEST_F(SafetensorsTest, WriteRejectsNegativeDimension) {
  const std::string path = Path("bad.safetensors");
  const absl::Status st = WriteSafetensors(path, {{"w", DType::kF16, {-1, 2}, {}}}, {});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), AllOf(HasSubstr(path), HasSubstr("tensor 'w'"), HasSubstr("negative dimension")));
  EXPECT_THAT(ListDir(dir_), IsEmpty());
}

TEST_F(SafetensorsTest, WriteRejectsDuplicateNames) {
  const std::string path = Path("dup.safetensors");
  const std::vector<float> v = {1.0f};
  const absl::Status st =
      WriteSafetensors(path, {{"w", DType::kF32, {1}, AsBytes(v)}, {"x", DType::kF32, {1}, AsBytes(v)}, {"w", DType::kF32, {1}, AsBytes(v)}}, {});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), AllOf(HasSubstr(path), HasSubstr("tensor 'w'"), HasSubstr("duplicate tensor name")));
  EXPECT_THAT(ListDir(dir_), IsEmpty());
}

// "__metadata__" is reserved by the format; a tensor of that name makes a file no reader accepts.
TEST_F(SafetensorsTest, WriteRejectsTensorNamedMetadata) {
  const std::string path = Path("reserved.safetensors");
  const std::vector<float> v = {1.0f};
  const absl::Status st = WriteSafetensors(path, {{"__metadata__", DType::kF32, {1}, AsBytes(v)}}, {});
  EXPECT_FALSE(st.ok()) << "wrote a file whose tensor is named __metadata__; reading it back gives: "
                        << SafetensorsFile::Open(path).status();
}

// A shape whose element count overflows must not be written as if it were small.
TEST_F(SafetensorsTest, WriteRejectsShapeWhoseByteSizeOverflows) {
  const std::string path = Path("huge.safetensors");
  const absl::Status st = WriteSafetensors(path, {{"w", DType::kF32, {int64_t{1} << 32, int64_t{1} << 32}, {}}}, {});
  EXPECT_FALSE(st.ok()) << "wrote a [2^32, 2^32] F32 tensor from 0 bytes";
  EXPECT_THAT(st.message(), HasSubstr("tensor 'w'"));
}

TEST_F(SafetensorsTest, WriteIntoMissingDirectoryFailsCleanly) {
  const std::string path = Path("no/such/dir/model.safetensors");
  const std::vector<float> v = {1.0f};
  const absl::Status st = WriteSafetensors(path, {{"w", DType::kF32, {1}, AsBytes(v)}}, {});
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), AllOf(HasSubstr(path), HasSubstr("No such file or directory")));
  EXPECT_THAT(ListDir(dir_), IsEmpty());
}

TEST_F(SafetensorsTest, WriteOverADirectoryFailsAndRemovesTemporary) {
  // The final rename cannot replace a non-empty directory, so this fails after the data is written
  // (root can write anywhere, so a read-only folder would not test the failure path).
  const std::string path = Path("model.safetensors");
  std::filesystem::create_directory(path);
  WriteFile(path + "/keep", "x");
  const std::vector<float> v = {1.0f};
  const absl::Status st = WriteSafetensors(path, {{"w", DType::kF32, {1}, AsBytes(v)}}, {});
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), AllOf(HasSubstr(path), HasSubstr("write failed")));
  EXPECT_THAT(ListDir(dir_), ElementsAre("model.safetensors"));  // no leftover .tmp file
  EXPECT_TRUE(std::filesystem::is_directory(path));
}

// ---------------------------------------------------------------------------------------------
// Interoperability: the reference implementation reads what we write.

constexpr char kPythonCheck[] = R"PY(
import sys
import numpy as np
import safetensors
from safetensors import safe_open
from safetensors.numpy import load_file

all_path, float_path = sys.argv[1], sys.argv[2]

# numpy has no FP8/BF16 dtypes, so the all-dtype file goes through the Rust parser directly.
with open(all_path, "rb") as fh:
    entries = {name: t for name, t in safetensors.deserialize(fh.read())}
want = {"e4m3": ("F8_E4M3", [2], b"\x38\x7e"), "e5m2": ("F8_E5M2", [2], b"\x3c\x7b"),
        "bf16": ("BF16", [], b"\x80\x3f"), "empty": ("F32", [0, 3], b"")}
for name, (dtype, shape, data) in want.items():
    got = entries[name]
    assert got["dtype"] == dtype, (name, got["dtype"])
    assert list(got["shape"]) == shape, (name, got["shape"])
    assert bytes(got["data"]) == data, (name, bytes(got["data"]))
with safe_open(all_path, framework="np") as f:
    assert f.metadata() == {"format": "fp8serve.mlp.v1", "note": "x"}, f.metadata()

t = load_file(float_path)
assert t["w"].dtype == np.float32 and t["w"].shape == (2, 3), (t["w"].dtype, t["w"].shape)
assert t["w"][1, 2] == np.float32(-6.5), t["w"]
assert t["h"].dtype == np.float16 and t["h"].tolist() == [1.0, -2.5], t["h"]
print("ok")
)PY";

TEST_F(SafetensorsTest, ReferenceImplementationReadsOurFiles) {
  const char* src = std::getenv("FP8SERVE_SOURCE_DIR");
  if (src == nullptr) GTEST_SKIP() << "FP8SERVE_SOURCE_DIR is not set (run through ctest), cannot find .venv/bin/python";
  const std::string python = std::string(src) + "/.venv/bin/python";
  if (!std::filesystem::exists(python)) GTEST_SKIP() << python << " does not exist; create the venv with safetensors to run this";

  const std::vector<uint8_t> e4m3 = {0x38, 0x7e}, e5m2 = {0x3c, 0x7b};
  const std::vector<uint16_t> bf16 = {0x3f80};
  const std::string all_path = Path("all.safetensors");
  ASSERT_TRUE(WriteSafetensors(all_path,
                               {{"e4m3", DType::kF8E4M3, {2}, e4m3},
                                {"e5m2", DType::kF8E5M2, {2}, e5m2},
                                {"bf16", DType::kBF16, {}, AsBytes(bf16)},
                                {"empty", DType::kF32, {0, 3}, {}}},
                               {{"format", "fp8serve.mlp.v1"}, {"note", "x"}})
                  .ok());
  const std::vector<float> w = {1, 2, 3, 4, 5, -6.5f};
  const std::vector<uint16_t> h = {0x3C00, 0xC100};
  const std::string float_path = Path("float.safetensors");
  ASSERT_TRUE(WriteSafetensors(float_path, {{"w", DType::kF32, {2, 3}, AsBytes(w)}, {"h", DType::kF16, {2}, AsBytes(h)}}, {}).ok());

  const std::string script = Path("check.py"), log = Path("check.log");
  WriteFile(script, kPythonCheck);
  const std::string cmd = absl::StrCat("'", python, "' '", script, "' '", all_path, "' '", float_path, "' > '", log, "' 2>&1");
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << cmd << "\n" << ReadFile(log);
  EXPECT_THAT(ReadFile(log), HasSubstr("ok"));
}

}  // namespace
}  // namespace fp8serve
