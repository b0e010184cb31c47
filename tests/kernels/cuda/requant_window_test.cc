// The fast E4M3 requantization (kernels/cuda/requant.cuh) against IEEE division, on the host: the
// window code the kernels run (requant_window.h), the CPU's E4M3 encoder in place of the GPU's cvt
// (the GPU tests check that the two agree), and every reciprocal rcp.approx.f32 may return (the
// floats within one ulp of 1/s; the test also takes the next ones out, which only makes it
// stricter). Wherever the window accepts the product's code, it must be the division's code, for
// random groups, for quotients placed on and around every E4M3 rounding boundary, and for zeros,
// subnormals, infinities, NaN and extreme scales. No GPU needed.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/requant_window.h"
#include "kernels/numerics/fp8.h"

namespace fp8serve::cuda {
namespace {

// What the contract asks for: E4M3(RN(v / s)).
uint8_t DivisionCode(float v, float s) { return EncodeE4M3(v / s); }

// The kernel's reciprocal path for one value with reciprocal r: true and the code when the window
// accepts it (E4M3Requant::Pairs keeps the window's code only then).
bool WindowCode(float v, float s, float r, uint8_t* code) {
  if (!RequantFastScale(s)) return false;
  uint32_t lo = 0, hi = 0;
  RequantWindowBits(std::bit_cast<uint32_t>(v * r), lo, hi);
  const uint8_t clo = EncodeE4M3(std::bit_cast<float>(lo)), chi = EncodeE4M3(std::bit_cast<float>(hi));
  if (clo != chi) return false;
  *code = clo;
  return true;
}

// Reciprocals of s that rcp.approx.f32 may return (within 1 ulp of 1/s: the correctly rounded one
// and its neighbours), plus the floats two steps out.
std::vector<float> Reciprocals(float s) {
  const float rn = static_cast<float>(1.0 / static_cast<double>(s));
  std::vector<float> r = {rn};
  float up = rn, down = rn;
  for (int i = 0; i < 2; ++i) {
    up = std::nextafter(up, std::numeric_limits<float>::infinity());
    down = std::nextafter(down, 0.0f);
    r.push_back(up);
    r.push_back(down);
  }
  return r;
}

struct Tally {
  long long checked = 0, accepted = 0, wrong = 0;
  // Checks v / s with every reciprocal; reports the first few mismatches.
  void Check(float v, float s) {
    const uint8_t want = DivisionCode(v, s);
    for (float r : Reciprocals(s)) {
      ++checked;
      uint8_t got = 0;
      if (!WindowCode(v, s, r, &got)) continue;
      ++accepted;
      if (got != want) {
        if (++wrong <= 10) {
          ADD_FAILURE() << "v " << std::hexfloat << v << " s " << s << " r " << r << ": window code 0x" << std::hex
                        << int(got) << ", division 0x" << int(want);
        }
      }
    }
  }
  double AcceptedFraction() const { return checked == 0 ? 0.0 : static_cast<double>(accepted) / checked; }
};

// The contract's scale of a group with this amax.
float GroupScale(float amax) {
  const float s = amax / kE4M3Max;
  return s > 0.0f ? s : 1.0f;
}

TEST(RequantWindow, RandomGroupsMatchDivision) {
  std::mt19937 rng(20261127);
  std::uniform_real_distribution<float> log_amax(-20.0f, 20.0f), unit(-1.0f, 1.0f);
  Tally t;
  for (int g = 0; g < 200000; ++g) {
    const float amax = std::exp2(log_amax(rng));
    const float s = GroupScale(amax);
    t.Check(amax, s);   // the group's largest value (code 448)
    t.Check(-amax, s);
    for (int i = 0; i < 30; ++i) {
      // Values across the group's range, many of them small against its amax
      const float v = unit(rng) * amax * std::exp2(-static_cast<float>(rng() % 24));
      t.Check(v, s);
    }
  }
  std::printf("random groups: %lld checks, %.5f%% taken by the window, %lld wrong\n", t.checked,
              100.0 * t.AcceptedFraction(), t.wrong);
  EXPECT_EQ(t.wrong, 0);
  EXPECT_GT(t.AcceptedFraction(), 0.999);  // the division stays the rare path
}

TEST(RequantWindow, QuotientsOnAndAroundEveryRoundingBoundary) {
  // Every boundary between two adjacent E4M3 magnitudes (the midpoints, where ties go to even) and
  // the saturation point, reached as v / s for several scales, with v stepped through the floats
  // around it: the cases where the product's code and the division's could differ.
  std::vector<float> boundaries;
  for (int c = 0; c < 0x7e; ++c) boundaries.push_back(0.5f * (DecodeE4M3(c) + DecodeE4M3(c + 1)));
  boundaries.push_back(kE4M3Max);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> log_amax(-30.0f, 30.0f);
  Tally t;
  for (int trial = 0; trial < 60; ++trial) {
    const float s = GroupScale(std::exp2(log_amax(rng)));
    for (float b : boundaries) {
      const float center = b * s;
      float lo = center, hi = center;
      for (int step = 0; step < 40; ++step) {
        t.Check(lo, s);
        t.Check(-hi, s);
        t.Check(hi, s);
        t.Check(-lo, s);
        lo = std::nextafter(lo, 0.0f);
        hi = std::nextafter(hi, std::numeric_limits<float>::infinity());
      }
    }
  }
  std::printf("boundaries: %lld checks, %.3f%% taken by the window, %lld wrong\n", t.checked,
              100.0 * t.AcceptedFraction(), t.wrong);
  EXPECT_EQ(t.wrong, 0);
  EXPECT_LT(t.AcceptedFraction(), 1.0);  // near a boundary the window must hand some values to the division
}

TEST(RequantWindow, SpecialValuesAndExtremeScales) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const float denorm = std::numeric_limits<float>::denorm_min(), fmax = std::numeric_limits<float>::max();
  const std::vector<float> values = {0.0f, -0.0f, denorm, -denorm, 1e-40f, -1e-38f, 1e-30f, 1.0f, -1.0f, 3.0e38f,
                                     fmax, -fmax, inf, -inf, nan, -nan};
  const std::vector<float> scales = {1.0f, 0x1p-125f, 0x1p125f, std::nextafter(0x1p-125f, 0.0f), 0x1p-126f,
                                     denorm, 1e-30f, 1e30f, 448.0f, 1.0f / 448.0f, fmax, GroupScale(fmax)};
  Tally t;
  for (float s : scales) {
    for (float v : values) t.Check(v, s);
  }
  std::printf("special values: %lld checks, %lld taken by the window, %lld wrong\n", t.checked, t.accepted, t.wrong);
  EXPECT_EQ(t.wrong, 0);
  // Scales outside the fast range always divide
  uint8_t code = 0;
  EXPECT_FALSE(WindowCode(1.0f, denorm, 1.0f / denorm, &code));
  EXPECT_FALSE(WindowCode(1.0f, 0x1p126f, 0x1p-126f, &code));
  // NaN is divided (its window's ends are NaN and infinity); an infinity saturates to 448 either way
  EXPECT_FALSE(WindowCode(nan, 1.0f, 1.0f, &code));
  ASSERT_TRUE(WindowCode(-inf, 1.0f, 1.0f, &code));
  EXPECT_EQ(code, EncodeE4M3(-kE4M3Max));
  // A zero keeps its sign: E4M3 +0 is 0x00, -0 is 0x80
  ASSERT_TRUE(WindowCode(-0.0f, 1.0f, 1.0f, &code));
  EXPECT_EQ(code, 0x80);
  ASSERT_TRUE(WindowCode(0.0f, 1.0f, 1.0f, &code));
  EXPECT_EQ(code, 0x00);
}

}  // namespace
}  // namespace fp8serve::cuda
