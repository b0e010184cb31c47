// FP8 encode/decode: exhaustive over every code, every tie, overflow in both modes, NaN, and the
// table-free RoundToE4M3 against the encode/decode pair. (The cross-check against ml_dtypes on
// millions of random floats is tests/python/fp8_crosscheck.py.)
#include "kernels/numerics/fp8.h"

#include <cmath>
#include <limits>
#include <random>

#include "gtest/gtest.h"

namespace fp8serve {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

bool IsNanCode(Fp8Format f, uint8_t c) {
  return f == Fp8Format::kE4M3 ? (c & 0x7f) == 0x7f : (c & 0x7f) > 0x7c;
}
bool IsInfCode(Fp8Format f, uint8_t c) { return f == Fp8Format::kE5M2 && (c & 0x7f) == 0x7c; }
uint8_t MaxCode(Fp8Format f) { return f == Fp8Format::kE4M3 ? 0x7e : 0x7b; }

class Fp8FormatTest : public ::testing::TestWithParam<Fp8Format> {};

TEST_P(Fp8FormatTest, EveryCodeDecodesAndEncodesBack) {
  const Fp8Format f = GetParam();
  int nan_codes = 0;
  for (int i = 0; i < 256; ++i) {
    const uint8_t c = static_cast<uint8_t>(i);
    const float v = DecodeFp8(f, c);
    if (IsNanCode(f, c)) {
      ++nan_codes;
      EXPECT_TRUE(std::isnan(v)) << "code " << i;
      EXPECT_EQ(std::signbit(v), (c & 0x80) != 0) << "code " << i;
      // Any NaN encodes to the canonical NaN of its sign.
      const uint8_t canonical = (c & 0x80) | (f == Fp8Format::kE4M3 ? 0x7f : 0x7e);
      EXPECT_EQ(EncodeFp8(f, v, Overflow::kSaturate), canonical) << "code " << i;
      EXPECT_EQ(EncodeFp8(f, v, Overflow::kNonSaturating), canonical) << "code " << i;
      continue;
    }
    if (IsInfCode(f, c)) {
      EXPECT_TRUE(std::isinf(v)) << "code " << i;
      EXPECT_EQ(EncodeFp8(f, v, Overflow::kNonSaturating), c);
      EXPECT_EQ(EncodeFp8(f, v, Overflow::kSaturate), (c & 0x80) | MaxCode(f)) << "saturation maps inf to max";
      continue;
    }
    EXPECT_TRUE(std::isfinite(v)) << "code " << i;
    EXPECT_EQ(EncodeFp8(f, v, Overflow::kSaturate), c) << "code " << i << " value " << v;
    EXPECT_EQ(EncodeFp8(f, v, Overflow::kNonSaturating), c) << "code " << i << " value " << v;
  }
  EXPECT_EQ(nan_codes, f == Fp8Format::kE4M3 ? 2 : 6);
}

TEST_P(Fp8FormatTest, PositiveCodesAreStrictlyIncreasing) {
  const Fp8Format f = GetParam();
  for (int c = 1; c <= MaxCode(f); ++c) {
    EXPECT_LT(DecodeFp8(f, static_cast<uint8_t>(c - 1)), DecodeFp8(f, static_cast<uint8_t>(c))) << c;
    EXPECT_EQ(DecodeFp8(f, static_cast<uint8_t>(c | 0x80)), -DecodeFp8(f, static_cast<uint8_t>(c))) << c;
  }
}

// The midpoint between neighbours goes to the even code; a hair either side goes to the nearer one.
TEST_P(Fp8FormatTest, TiesRoundToEven) {
  const Fp8Format f = GetParam();
  for (int c = 0; c < MaxCode(f); ++c) {
    const float lo = DecodeFp8(f, static_cast<uint8_t>(c)), hi = DecodeFp8(f, static_cast<uint8_t>(c + 1));
    const float mid = (lo + hi) / 2;  // exact: both have few mantissa bits
    ASSERT_GT(mid, lo);
    ASSERT_LT(mid, hi);
    const uint8_t even = static_cast<uint8_t>(c % 2 == 0 ? c : c + 1);
    for (float sign : {1.0f, -1.0f}) {
      const uint8_t s = sign < 0 ? 0x80 : 0;
      EXPECT_EQ(EncodeFp8(f, sign * mid), s | even) << "tie between codes " << c << " and " << c + 1;
      EXPECT_EQ(EncodeFp8(f, sign * std::nextafter(mid, 0.0f)), s | c) << c;
      EXPECT_EQ(EncodeFp8(f, sign * std::nextafter(mid, kInf)), s | (c + 1)) << c;
    }
  }
}

TEST_P(Fp8FormatTest, OverflowSaturatesOrNot) {
  const Fp8Format f = GetParam();
  const float max = Fp8MaxFinite(f);
  const uint8_t over = f == Fp8Format::kE4M3 ? 0x7f : 0x7c;  // NaN for E4M3, inf for E5M2
  // Between max and the next (nonexistent) step: below the midpoint rounds to max in both modes.
  const float next_step = f == Fp8Format::kE4M3 ? 480.0f : 65536.0f;
  const float mid = (max + next_step) / 2;
  // The tie goes to the even neighbour: E4M3's max (1.110b x 2^8) is even, so it stays finite;
  // E5M2's max (1.11b x 2^15) is odd, so the tie rounds up to the overflow value.
  EXPECT_EQ(EncodeFp8(f, mid, Overflow::kNonSaturating), f == Fp8Format::kE4M3 ? MaxCode(f) : over);
  EXPECT_EQ(EncodeFp8(f, mid, Overflow::kSaturate), MaxCode(f));
  EXPECT_EQ(EncodeFp8(f, std::nextafter(mid, 0.0f), Overflow::kNonSaturating), MaxCode(f));
  EXPECT_EQ(EncodeFp8(f, std::nextafter(mid, kInf), Overflow::kNonSaturating), over);
  EXPECT_EQ(EncodeFp8(f, std::nextafter(mid, kInf), Overflow::kSaturate), MaxCode(f));
  for (float v : {1e6f, 3e38f, kInf}) {
    EXPECT_EQ(EncodeFp8(f, v, Overflow::kSaturate), MaxCode(f)) << v;
    EXPECT_EQ(EncodeFp8(f, -v, Overflow::kSaturate), 0x80 | MaxCode(f)) << v;
    EXPECT_EQ(EncodeFp8(f, v, Overflow::kNonSaturating), over) << v;
    EXPECT_EQ(EncodeFp8(f, -v, Overflow::kNonSaturating), 0x80 | over) << v;
  }
}

TEST_P(Fp8FormatTest, NanAndTinyValues) {
  const Fp8Format f = GetParam();
  const uint8_t nan = f == Fp8Format::kE4M3 ? 0x7f : 0x7e;
  EXPECT_EQ(EncodeFp8(f, kNaN), nan);
  EXPECT_EQ(EncodeFp8(f, -kNaN), 0x80 | nan);
  EXPECT_EQ(EncodeFp8(f, std::bit_cast<float>(0x7f800001u)), nan) << "signalling NaN";
  EXPECT_EQ(EncodeFp8(f, 0.0f), 0x00);
  EXPECT_EQ(EncodeFp8(f, -0.0f), 0x80);
  EXPECT_EQ(EncodeFp8(f, 1e-40f), 0x00) << "FP32 subnormal";
  EXPECT_EQ(EncodeFp8(f, -1e-40f), 0x80);
  const float min_sub = DecodeFp8(f, 0x01);
  EXPECT_EQ(EncodeFp8(f, min_sub / 2), 0x00) << "tie with zero goes to zero (even)";
  EXPECT_EQ(EncodeFp8(f, std::nextafter(min_sub / 2, 1.0f)), 0x01);
}

INSTANTIATE_TEST_SUITE_P(Formats, Fp8FormatTest, ::testing::Values(Fp8Format::kE4M3, Fp8Format::kE5M2),
                         [](const auto& info) { return std::string(Fp8FormatName(info.param)); });

TEST(Fp8Test, KnownValues) {
  EXPECT_EQ(DecodeE4M3(0x7e), 448.0f);
  EXPECT_EQ(DecodeE4M3(0x38), 1.0f);
  EXPECT_EQ(DecodeE4M3(0x08), 0x1p-6f);
  EXPECT_EQ(DecodeE4M3(0x07), 7 * 0x1p-9f);
  EXPECT_EQ(DecodeE4M3(0x01), 0x1p-9f);
  EXPECT_EQ(DecodeE4M3(0xb8), -1.0f);
  EXPECT_EQ(DecodeE5M2(0x7b), 57344.0f);
  EXPECT_EQ(DecodeE5M2(0x3c), 1.0f);
  EXPECT_EQ(DecodeE5M2(0x04), 0x1p-14f);
  EXPECT_EQ(DecodeE5M2(0x01), 0x1p-16f);
  EXPECT_EQ(DecodeE5M2(0x7c), kInf);
  EXPECT_EQ(DecodeE5M2(0xfc), -kInf);
  EXPECT_EQ(EncodeE4M3(464.0f, Overflow::kNonSaturating), 0x7e);
  EXPECT_EQ(EncodeE4M3(465.0f, Overflow::kNonSaturating), 0x7f);
  EXPECT_EQ(EncodeE5M2(61439.0f, Overflow::kNonSaturating), 0x7b);
  EXPECT_EQ(EncodeE5M2(61440.0f, Overflow::kNonSaturating), 0x7c);
  static_assert(EncodeE4M3(1.0f) == 0x38, "encode is constexpr");
}

TEST(Fp8Test, ParseNames) {
  EXPECT_EQ(ParseFp8Format("E4M3"), Fp8Format::kE4M3);
  EXPECT_EQ(ParseFp8Format("f8_e5m2"), Fp8Format::kE5M2);
  EXPECT_FALSE(ParseFp8Format("e3m4").has_value());
  EXPECT_STREQ(Fp8FormatName(Fp8Format::kE5M2), "e5m2");
}

bool SameFloat(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b);
}

// RoundToE4M3 must equal DecodeE4M3(EncodeE4M3(x)) for every float. Sweep every combination of
// sign, exponent and top 11 mantissa bits (which include every rounding boundary) with several
// low-bit patterns, then random floats.
TEST(Fp8Test, RoundToE4M3MatchesEncodeDecode) {
  const uint32_t lows[] = {0x000, 0x001, 0x7ff, 0x800, 0x801, 0xfff};
  size_t checked = 0;
  for (uint32_t hi = 0; hi < (1u << 20); ++hi) {
    for (uint32_t lo : lows) {
      const float x = std::bit_cast<float>((hi << 12) | lo);
      const float want = DecodeE4M3(EncodeE4M3(x));
      const float got = RoundToE4M3(x);
      ASSERT_TRUE(SameFloat(got, want)) << std::hex << std::bit_cast<uint32_t>(x) << ": " << got << " vs " << want;
      ++checked;
    }
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 2'000'000; ++i) {
    const float x = std::bit_cast<float>(static_cast<uint32_t>(rng()));
    ASSERT_TRUE(SameFloat(RoundToE4M3(x), DecodeE4M3(EncodeE4M3(x)))) << std::hex << std::bit_cast<uint32_t>(x);
    ++checked;
  }
  EXPECT_GT(checked, 8'000'000u);
}

TEST(Fp8Test, SixteenBitFloats) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float b = Bf16ToFloat(static_cast<uint16_t>(h));
    const float f = F16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(b)) {
      EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(b))));
    } else {
      EXPECT_EQ(FloatToBf16(b), h) << h;
    }
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(f))));
    } else {
      EXPECT_EQ(FloatToF16(f), h) << h;
    }
  }
  EXPECT_EQ(F16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(F16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToFloat(0x0001), 0x1p-24f);
  EXPECT_EQ(FloatToF16(65520.0f), 0x7c00) << "rounds up to inf";
  EXPECT_EQ(FloatToF16(65519.0f), 0x7bff);
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(FloatToBf16(1.0f + 0x1p-8f), 0x3f80) << "tie to even";
  EXPECT_EQ(FloatToBf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
}

}  // namespace
}  // namespace fp8serve
