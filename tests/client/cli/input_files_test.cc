// The CLI's readers: .npy headers (v1-v3, float32/float16, the faults np.save never writes), CSV,
// IDX (plain and gzip), labels, format detection; and the classification helpers.
#include "client/cli/input_files.h"

#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "client/cli/classification.h"
#include "client/cli/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/numerics/fp8.h"

namespace fp8serve::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Npy(const std::string& dict, const std::string& data, int major = 1) {
  std::string header = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  const size_t n = header.size();
  out.push_back(static_cast<char>(n & 0xff));
  out.push_back(static_cast<char>((n >> 8) & 0xff));
  if (major != 1) out.append(2, '\0');
  return out + header + data;
}

std::string Floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/fp8serve_client_inputs_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  std::string WriteGz(const std::string& name, const std::string& bytes) {
    const std::string path = dir_ + "/" + name;
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
    return path;
  }
  std::string dir_;
};

TEST(NpyTest, ReadsWhatNumpyWrites) {
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  auto a = ParseNpy(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", Floats(v)));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->shape, ElementsAre(2, 3));
  EXPECT_EQ(a->values, v);
  EXPECT_FALSE(a->float16);
  // Version 2 header, a 1-D shape, keys in another order.
  a = ParseNpy(Npy("{'shape': (6,), 'fortran_order': False, 'descr': '<f4'}", Floats(v), 2));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->shape, ElementsAre(6));
  // float16.
  std::string half;
  for (float x : v) {
    const uint16_t h = FloatToF16(x);
    half.append(reinterpret_cast<const char*>(&h), 2);
  }
  a = ParseNpy(Npy("{'descr': '<f2', 'fortran_order': False, 'shape': (3, 2), }", half));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->float16);
  EXPECT_EQ(a->values, v);
  // Our own writer round-trips.
  const int64_t shape[] = {3, 2};
  a = ParseNpy(EncodeNpyF32(shape, v));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->shape, ElementsAre(3, 2));
  EXPECT_EQ(a->values, v);
  EXPECT_EQ(EncodeNpyF32(shape, v).size() % 64, (v.size() * 4) % 64);  // data 64-byte aligned
}

TEST(NpyTest, RefusesWhatItCannotRead) {
  const std::string d6 = Floats({1, 2, 3, 4, 5, 6});
  const struct {
    std::string bytes, want;
  } cases[] = {
      {"not numpy at all", "no \\x93NUMPY magic"},
      {Npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", d6), "Fortran-order"},
      {Npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", d6), "big-endian"},
      {Npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", d6), "<f8 is not supported"},
      {Npy("{'descr': '<i4', 'fortran_order': False, 'shape': (6,), }", d6), "<i4 is not supported"},
      {Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }", d6),
       "needs 32 bytes of data, the file has 24"},
      {Npy("{'descr': '<f4', 'fortran_order': False}", d6), "lacks"},
      {Npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,)}", d6), "structured"},
      {Npy("['descr']", d6), "not a dict"},
      {Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", d6).substr(0, 40), "truncated header"},
      {Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", d6, 9), "version 9"},
  };
  for (const auto& c : cases) {
    auto a = ParseNpy(c.bytes, "x.npy");
    ASSERT_FALSE(a.ok()) << c.want;
    EXPECT_THAT(std::string(a.status().message()), HasSubstr(c.want));
    EXPECT_THAT(std::string(a.status().message()), HasSubstr("x.npy"));
  }
}

TEST(CsvTest, RowsHeadersAndFaults) {
  auto r = ParseCsvRows("a,b,c\n1,2,3\n\n# comment\n4;5 6\n", "t.csv");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rows, 2);
  EXPECT_EQ(r->width, 3);
  EXPECT_THAT(r->values, ElementsAre(1, 2, 3, 4, 5, 6));
  EXPECT_EQ(ParseCsvRows("1,2\n3,4\n5,6\n", "t", 2)->rows, 2);
  EXPECT_THAT(std::string(ParseCsvRows("1,2,3\n4,5\n", "t.csv").status().message()), HasSubstr("t.csv:2: 2 values"));
  EXPECT_THAT(std::string(ParseCsvRows("1,2\n3,x\n", "t.csv").status().message()), HasSubstr("t.csv:2"));
  EXPECT_FALSE(ParseCsvRows("\n# nothing\n", "t").ok());
  // Found by tests/fuzz/input_files_fuzz: a separators-only row counted as a row of width 0, and
  // the next row then set the width, so 2 rows x 1 came with 1 value.
  EXPECT_THAT(std::string(ParseCsvRows(",\n7\n", "t.csv").status().message()), HasSubstr("t.csv:1: a row without values"));
  EXPECT_THAT(std::string(ParseCsvRows("x\n ; \n7\n", "t.csv").status().message()),
              HasSubstr("t.csv:2: a row without values"));
  EXPECT_THAT(std::string(ParseCsvRows("x\ny\n1\n", "t.csv").status().message()), HasSubstr("t.csv:2: not a number"));
}

TEST_F(FileTest, DetectsFormatsByContentAndReadsRows) {
  const std::vector<float> v = {1, 2, 3, 4};
  const int64_t shape[] = {2, 2};
  const std::string npy = Write("data.bin", EncodeNpyF32(shape, v));  // the name says nothing
  EXPECT_EQ(DetectInputFormat(npy).value(), InputFormat::kNpy);
  auto rows = ReadInputRows(npy, 0, 0.5f);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->rows, 2);
  EXPECT_THAT(rows->values, ElementsAre(0.5f, 1, 1.5f, 2));

  // IDX images [3, 2, 2], plain and gzip: pixels / 255, one row per image; --limit keeps the first.
  std::string idx = std::string("\x00\x00\x08\x03", 4);
  for (uint32_t d : {3u, 2u, 2u}) {
    for (int k = 3; k >= 0; --k) idx.push_back(static_cast<char>((d >> (8 * k)) & 0xff));
  }
  for (int i = 0; i < 12; ++i) idx.push_back(static_cast<char>(i * 20));
  for (const std::string& path : {Write("images", idx), WriteGz("images.gz", idx)}) {
    EXPECT_EQ(DetectInputFormat(path).value(), InputFormat::kIdx);
    rows = ReadInputRows(path, 2);
    ASSERT_TRUE(rows.ok()) << rows.status();
    EXPECT_EQ(rows->rows, 2);
    EXPECT_EQ(rows->width, 4);
    EXPECT_FLOAT_EQ(rows->values[5], 100.0f / 255.0f);
  }
  const std::string csv = Write("rows.csv", "1,2,3\n4,5,6\n");
  EXPECT_EQ(DetectInputFormat(csv).value(), InputFormat::kCsv);
  EXPECT_EQ(ReadInputRows(csv)->width, 3);

  // A 3-D .npy is not rows; a missing file and a directory are named.
  const int64_t cube[] = {1, 2, 2};
  EXPECT_THAT(std::string(ReadInputRows(Write("cube.npy", EncodeNpyF32(cube, v))).status().message()),
              HasSubstr("3 dimensions"));
  // An empty array (found by tests/fuzz/input_files_fuzz, which saw memcpy from a null pointer).
  const int64_t none[] = {0, 784};
  EXPECT_THAT(std::string(ReadInputRows(Write("none.npy", EncodeNpyF32(none, {}))).status().message()),
              HasSubstr("the array has shape (0, 784): no values to send"));
  EXPECT_THAT(std::string(ReadInputRows(dir_ + "/missing.npy").status().message()), HasSubstr("missing.npy"));
  EXPECT_FALSE(ReadInputRows(dir_).ok());
  EXPECT_FALSE(ReadInputRows(Write("empty", "")).ok());
}

TEST_F(FileTest, ReadsLabels) {
  std::string idx = std::string("\x00\x00\x08\x01\x00\x00\x00\x04", 8) + std::string("\x07\x02\x01\x00", 4);
  EXPECT_THAT(ReadLabels(WriteGz("labels.gz", idx)).value(), ElementsAre(7, 2, 1, 0));
  EXPECT_THAT(ReadLabels(Write("labels.csv", "label\n3\n1, 4\n"), 2).value(), ElementsAre(3, 1));
  EXPECT_THAT(std::string(ReadLabels(Write("bad.csv", "1\n2.5\n")).status().message()), HasSubstr("bad.csv:2"));
}

TEST(ClassificationTest, SoftmaxTopKAndNames) {
  const std::vector<float> p = Softmax(std::vector<float>{1000.0f, 1000.0f, 0.0f});  // no overflow
  EXPECT_NEAR(p[0], 0.5f, 1e-6);
  EXPECT_NEAR(p[2], 0.0f, 1e-6);
  const auto top = TopK(std::vector<float>{0.1f, 0.5f, 0.5f, 0.3f}, 3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].first, 1);  // ties: lower index first
  EXPECT_EQ(top[1].first, 2);
  EXPECT_EQ(top[2].first, 3);
  EXPECT_EQ(TopK(std::vector<float>{1, 2}, 5).size(), 2u);
  EXPECT_EQ(ClassNames("fashion")->at(9), "Ankle boot");
  EXPECT_THAT(ClassNames("cat, dog").value(), ElementsAre("cat", "dog"));
  EXPECT_FALSE(ClassNames("solo").ok());
  EXPECT_EQ(ClassLabel({}, 4), "4");
}

TEST(ClassificationTest, ConfusionMatrix) {
  ConfusionMatrix m(3);
  for (auto [label, pred] : {std::pair{0, 0}, {0, 1}, {1, 1}, {2, 2}, {2, 2}, {2, 0}}) m.Add(label, pred);
  EXPECT_EQ(m.total(), 6);
  EXPECT_EQ(m.correct(), 4);
  EXPECT_DOUBLE_EQ(m.accuracy(), 4.0 / 6.0);
  EXPECT_EQ(m.at(2, 0), 1);
  const std::string text = m.Format({"a", "b", "c"});
  EXPECT_THAT(text, HasSubstr("2 c"));
  EXPECT_THAT(text, HasSubstr("0.6667"));  // recall of class 2
}

}  // namespace
}  // namespace fp8serve::client
