#include "tools/datasets/idx.h"

#include <stdlib.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fp8serve {
namespace {

using ::testing::AllOf;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::Le;

// IDX bytes: magic 0x00 0x00 type ndim, big-endian uint32 dims, then the data.
std::string IdxBytes(uint8_t type, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::string s = {'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>((d >> shift) & 0xff));
  }
  s.append(data.begin(), data.end());
  return s;
}

std::vector<uint8_t> Iota(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + 3);
  return v;
}

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir();
    if (!dir_.empty() && dir_.back() != '/') dir_ += '/';
    dir_ += "idx_test_XXXXXX";
    ASSERT_NE(mkdtemp(dir_.data()), nullptr) << std::strerror(errno);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string WritePlain(const std::string& name, const std::string& bytes) {
    const std::string path = dir_ + "/" + name;
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(out.good()) << path;
    return path;
  }
  std::string WriteGzip(const std::string& name, const std::string& bytes) {
    const std::string path = dir_ + "/" + name;
    gzFile gz = gzopen(path.c_str(), "wb");
    EXPECT_NE(gz, nullptr) << path;
    if (gz == nullptr) return path;
    EXPECT_EQ(gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
    EXPECT_EQ(gzclose(gz), Z_OK);
    return path;
  }
  static std::string ReadAll(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  std::string dir_;
};

void ExpectInvalid(const absl::Status& st, const std::string& path, const std::string& fault) {
  ASSERT_FALSE(st.ok()) << path << " was accepted";
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(st.message(), AllOf(HasSubstr(path), HasSubstr(fault)));
}

TEST_F(IdxTest, ReadsPlainAndGzip) {
  const std::vector<uint8_t> data = Iota(2 * 3 * 5);
  const std::string bytes = IdxBytes(0x08, {2, 3, 5}, data);
  for (const std::string& path : {WritePlain("a.idx", bytes), WriteGzip("a.idx.gz", bytes)}) {
    SCOPED_TRACE(path);
    absl::StatusOr<IdxArray> a = ReadIdx(path);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_THAT(a->dims, ElementsAre(2u, 3u, 5u));
    EXPECT_EQ(a->data, data);
  }
}

TEST_F(IdxTest, ReadsGzipLargerThanOneReadBuffer) {
  // More than the reader's 64 KiB chunk, so the data arrives over several gzread calls.
  const std::vector<uint8_t> data = Iota(300 * 28 * 28);
  const std::string path = WriteGzip("big.idx.gz", IdxBytes(0x08, {300, 28, 28}, data));
  absl::StatusOr<IdxArray> a = ReadIdx(path);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->dims, ElementsAre(300u, 28u, 28u));
  EXPECT_EQ(a->data, data);
}

TEST_F(IdxTest, ReadsEmptyArray) {
  const std::string path = WritePlain("empty.idx", IdxBytes(0x08, {0}, {}));
  absl::StatusOr<std::vector<int>> labels = ReadIdxLabels(path);
  ASSERT_TRUE(labels.ok()) << labels.status();
  EXPECT_TRUE(labels->empty());
}

TEST_F(IdxTest, ImagesAsFloatScaleBy255) {
  const std::vector<uint8_t> data = {0, 255, 51, 102, 1, 2, 3, 4, 10, 20, 30, 40};  // 3 images of 2x2
  const std::string bytes = IdxBytes(0x08, {3, 2, 2}, data);
  for (const std::string& path : {WritePlain("img.idx", bytes), WriteGzip("img.idx.gz", bytes)}) {
    SCOPED_TRACE(path);
    int n = -1, px = -1;
    absl::StatusOr<std::vector<float>> x = ReadIdxImagesAsFloat(path, &n, &px);
    ASSERT_TRUE(x.ok()) << x.status();
    EXPECT_EQ(n, 3);
    EXPECT_EQ(px, 4);
    ASSERT_EQ(x->size(), data.size());
    for (size_t i = 0; i < data.size(); ++i) EXPECT_FLOAT_EQ((*x)[i], data[i] / 255.0f) << i;
    EXPECT_EQ((*x)[0], 0.0f);
    EXPECT_EQ((*x)[1], 1.0f);
  }
}

TEST_F(IdxTest, ImagesLimit) {
  const std::vector<uint8_t> data = Iota(4 * 3 * 2);
  const std::string path = WriteGzip("img.idx.gz", IdxBytes(0x08, {4, 3, 2}, data));
  struct Case {
    int limit;
    int want;
  };
  for (const Case c : {Case{0, 4}, Case{1, 1}, Case{3, 3}, Case{4, 4}, Case{100, 4}, Case{-1, 4}}) {
    SCOPED_TRACE(c.limit);
    int n = -1, px = -1;
    absl::StatusOr<std::vector<float>> x = ReadIdxImagesAsFloat(path, &n, &px, c.limit);
    ASSERT_TRUE(x.ok()) << x.status();
    EXPECT_EQ(n, c.want);
    EXPECT_EQ(px, 6);
    ASSERT_EQ(x->size(), static_cast<size_t>(c.want) * 6);
    // The first images, in order.
    for (size_t i = 0; i < x->size(); ++i) EXPECT_FLOAT_EQ((*x)[i], data[i] / 255.0f);
  }
}

TEST_F(IdxTest, LabelsAndLimit) {
  const std::vector<uint8_t> data = {7, 2, 1, 0, 4, 1, 9};
  const std::string bytes = IdxBytes(0x08, {7}, data);
  for (const std::string& path : {WritePlain("l.idx", bytes), WriteGzip("l.idx.gz", bytes)}) {
    SCOPED_TRACE(path);
    absl::StatusOr<std::vector<int>> all = ReadIdxLabels(path);
    ASSERT_TRUE(all.ok()) << all.status();
    EXPECT_THAT(*all, ElementsAre(7, 2, 1, 0, 4, 1, 9));
    absl::StatusOr<std::vector<int>> three = ReadIdxLabels(path, 3);
    ASSERT_TRUE(three.ok()) << three.status();
    EXPECT_THAT(*three, ElementsAre(7, 2, 1));
    absl::StatusOr<std::vector<int>> more = ReadIdxLabels(path, 50);
    ASSERT_TRUE(more.ok()) << more.status();
    EXPECT_EQ(more->size(), 7u);
  }
}

TEST_F(IdxTest, LabelsAbove127StayPositive) {
  const std::string path = WritePlain("l.idx", IdxBytes(0x08, {2}, {200, 255}));
  absl::StatusOr<std::vector<int>> l = ReadIdxLabels(path);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_THAT(*l, ElementsAre(200, 255));
}

TEST_F(IdxTest, WrongRankForImagesOrLabels) {
  const std::string labels = WritePlain("l.idx", IdxBytes(0x08, {4}, {1, 2, 3, 4}));
  const std::string images = WritePlain("i.idx", IdxBytes(0x08, {1, 2, 2}, {1, 2, 3, 4}));
  int n = 0, px = 0;
  ExpectInvalid(ReadIdxImagesAsFloat(labels, &n, &px).status(), labels, "expected images [n, rows, cols], got 1 dims");
  ExpectInvalid(ReadIdxLabels(images).status(), images, "expected labels [n], got 3 dims");
}

TEST_F(IdxTest, BadMagic) {
  const std::vector<std::string> bad = {
      std::string("\x01\x00\x08\x01\x00\x00\x00\x01\x05", 9),  // first byte set
      std::string("\x00\x02\x08\x01\x00\x00\x00\x01\x05", 9),  // second byte set
      std::string("\x00\x00", 2),                              // too short to hold a magic
      std::string(),                                           // empty
      "P5\n28 28\n255\n",                                      // some other file
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    SCOPED_TRACE(i);
    const std::string path = WritePlain("bad" + std::to_string(i), bad[i]);
    ExpectInvalid(ReadIdx(path).status(), path, "not an IDX file (bad magic)");
  }
}

TEST_F(IdxTest, NonUnsignedByteType) {
  // 0x09 signed byte, 0x0B short, 0x0C int, 0x0D float, 0x0E double.
  for (int type : {0x09, 0x0B, 0x0C, 0x0D, 0x0E}) {
    SCOPED_TRACE(type);
    const std::string path = WriteGzip("t.idx.gz", IdxBytes(static_cast<uint8_t>(type), {2}, {0, 0, 0, 0, 0, 0, 0, 0}));
    ExpectInvalid(ReadIdx(path).status(), path, "is not unsigned byte (0x08)");
  }
  const std::string path = WritePlain("float.idx", IdxBytes(0x0D, {1}, {0, 0, 0, 0}));
  ExpectInvalid(ReadIdx(path).status(), path, "IDX data type 0xd is not unsigned byte");
}

TEST_F(IdxTest, TruncatedHeader) {
  std::string three_dims = IdxBytes(0x08, {2, 3, 4}, {});
  three_dims.resize(10);  // magic + 1.5 dims
  const std::string path = WritePlain("hdr.idx", three_dims);
  ExpectInvalid(ReadIdx(path).status(), path, "truncated IDX header");
  const std::string zero_dims = WritePlain("zero.idx", IdxBytes(0x08, {}, {}));
  ExpectInvalid(ReadIdx(zero_dims).status(), zero_dims, "truncated IDX header");
}

TEST_F(IdxTest, TruncatedOrOverlongData) {
  const std::vector<uint8_t> data = Iota(24);
  std::string bytes = IdxBytes(0x08, {2, 3, 4}, data);
  const std::string short_plain = WritePlain("short.idx", bytes.substr(0, bytes.size() - 4));
  ExpectInvalid(ReadIdx(short_plain).status(), short_plain, "IDX dimensions promise 24 bytes of data but the file holds 20");
  const std::string short_gz = WriteGzip("short.idx.gz", bytes.substr(0, bytes.size() - 1));
  ExpectInvalid(ReadIdx(short_gz).status(), short_gz, "promise 24 bytes of data but the file holds 23");
  const std::string long_plain = WritePlain("long.idx", bytes + "xy");
  ExpectInvalid(ReadIdx(long_plain).status(), long_plain, "promise 24 bytes of data but the file holds 26");
  int n = 0, px = 0;
  ExpectInvalid(ReadIdxImagesAsFloat(short_gz, &n, &px).status(), short_gz, "promise 24 bytes");
  const std::string labels = WritePlain("labels.idx", IdxBytes(0x08, {10}, {1, 2, 3}));
  ExpectInvalid(ReadIdxLabels(labels).status(), labels, "promise 10 bytes of data but the file holds 3");
}

TEST_F(IdxTest, TruncatedGzipStream) {
  const std::vector<uint8_t> data = Iota(5000);
  const std::string gz = ReadAll(WriteGzip("full.gz", IdxBytes(0x08, {5000}, data)));
  ASSERT_GT(gz.size(), 40u);
  const std::string path = WritePlain("cut.gz", gz.substr(0, gz.size() / 2));
  const absl::Status st = ReadIdx(path).status();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(st.message(), HasSubstr(path));
}

TEST_F(IdxTest, GzipChecksumMismatch) {
  const std::string gz = ReadAll(WriteGzip("full.gz", IdxBytes(0x08, {16}, Iota(16))));
  std::string bad = gz;
  bad[bad.size() - 8] ^= 0x5a;  // first byte of the CRC-32 trailer
  const std::string path = WritePlain("crc.gz", bad);
  // zlib's own reason, read before gzclose frees it (the fuzzer found it read after: ASan reports
  // that, and without ASan the message could be anything).
  ExpectInvalid(ReadIdx(path).status(), path, "incorrect data check");
}

// Dimensions whose product wraps around 2^64 must not pass for a small (here empty) data section:
// 65536^4 = 2^64 reads as 0 bytes.
TEST_F(IdxTest, DimensionProductOverflowIsRejected) {
  const std::string path = WritePlain("wrap.idx", IdxBytes(0x08, {65536, 65536, 65536, 65536}, {}));
  absl::StatusOr<IdxArray> a = ReadIdx(path);
  EXPECT_FALSE(a.ok()) << "accepted dims 65536^4 with " << a->data.size() << " data bytes";
  if (!a.ok()) {
    EXPECT_THAT(a.status().message(), HasSubstr(path));
  }
}

TEST_F(IdxTest, MissingFile) {
  const std::string path = dir_ + "/no-such-file.gz";
  for (const absl::Status& st : {ReadIdx(path).status(), ReadIdxLabels(path).status()}) {
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
    EXPECT_THAT(st.message(), AllOf(HasSubstr(path), HasSubstr("cannot open")));
  }
  int n = 0, px = 0;
  EXPECT_EQ(ReadIdxImagesAsFloat(path, &n, &px).status().code(), absl::StatusCode::kNotFound);
}

TEST(IdxFashionMnistTest, TestLabels) {
  const std::string path = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present (Debian package dataset-fashion-mnist)";
  absl::StatusOr<std::vector<int>> labels = ReadIdxLabels(path);
  ASSERT_TRUE(labels.ok()) << labels.status();
  ASSERT_EQ(labels->size(), 10000u);
  EXPECT_THAT(*labels, Each(AllOf(::testing::Ge(0), Le(9))));
  // Every class is present (the test split is balanced: 1000 each).
  for (int c = 0; c < 10; ++c) EXPECT_EQ(std::count(labels->begin(), labels->end(), c), 1000) << c;
  absl::StatusOr<std::vector<int>> first = ReadIdxLabels(path, 5);
  ASSERT_TRUE(first.ok());
  EXPECT_THAT(*first, ElementsAreArray(labels->begin(), labels->begin() + 5));
}

TEST(IdxFashionMnistTest, TestImages) {
  const std::string path = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present (Debian package dataset-fashion-mnist)";
  int n = 0, px = 0;
  absl::StatusOr<std::vector<float>> x = ReadIdxImagesAsFloat(path, &n, &px, 16);
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ(n, 16);
  EXPECT_EQ(px, 28 * 28);
  ASSERT_EQ(x->size(), 16u * 28 * 28);
  EXPECT_THAT(*x, Each(AllOf(::testing::Ge(0.0f), Le(1.0f))));
  EXPECT_GT(*std::max_element(x->begin(), x->end()), 0.5f);  // not all blank
}

}  // namespace
}  // namespace fp8serve
