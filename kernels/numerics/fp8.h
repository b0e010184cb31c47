// FP8 E4M3 and E5M2: exact decode and round-to-nearest-even encode.
//
// E4M3 is the OCP "fn" variant used by Hopper's tensor cores: 4 exponent bits (bias 7), 3 mantissa
// bits, no infinities, one NaN per sign (S.1111.111), largest finite value 448. E5M2 follows IEEE
// conventions: 5 exponent bits (bias 15), 2 mantissa bits, infinities and NaNs, largest finite 57344.
//
// Encode rounds to nearest, ties to even, with subnormals. Overflow either saturates to the largest
// finite value (what the GPU's cvt.rn.satfinite does; +-inf saturates too) or follows the
// non-saturating rule (E4M3 -> NaN, E5M2 -> +-inf), which is what ml_dtypes' casts do. Any NaN input
// encodes to the canonical NaN of the format with the sign kept (E4M3 0x7F, E5M2 0x7E).
//
// Pure C++ with no dependencies, so the CPU reference, the tools and the tests share one definition.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace fp8serve {

enum class Fp8Format : uint8_t { kE4M3, kE5M2 };
enum class Overflow : uint8_t { kSaturate, kNonSaturating };

inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE5M2Max = 57344.0f;

constexpr float Fp8MaxFinite(Fp8Format f) { return f == Fp8Format::kE4M3 ? kE4M3Max : kE5M2Max; }
const char* Fp8FormatName(Fp8Format f);                    // "e4m3" / "e5m2"
std::optional<Fp8Format> ParseFp8Format(std::string_view name);    // accepts e4m3, e5m2 (any case)

namespace detail {

// One template for both formats: kExp/kMant bits, exponent bias, the largest finite code, the
// canonical NaN code and the code non-saturating overflow produces.
template <int kMant, int kBias, uint32_t kMaxCode, uint32_t kNanCode, uint32_t kOverflowCode>
constexpr uint8_t EncodeFp8(float x, Overflow overflow) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint8_t>(sign | kNanCode);

  // Floats at or above the target's smallest normal 2^(1-bias) keep their exponent; below it the
  // target is subnormal with a fixed step of 2^(1-bias-mant).
  constexpr uint32_t kMinNormalBits = static_cast<uint32_t>(127 + 1 - kBias) << 23;
  uint32_t code;
  if (a >= kMinNormalBits) {
    constexpr int kShift = 23 - kMant;
    // Round to nearest even on the dropped bits; a carry out of the mantissa bumps the exponent,
    // which is exactly the right result (1.111|1 -> 10.000).
    const uint32_t rounded = a + ((1u << (kShift - 1)) - 1u) + ((a >> kShift) & 1u);
    code = (rounded >> kShift) - (static_cast<uint32_t>(127 - kBias) << kMant);
    if (code > kMaxCode) {
      return static_cast<uint8_t>(sign | (overflow == Overflow::kSaturate ? kMaxCode : kOverflowCode));
    }
  } else {
    // Scale so one subnormal step is 1.0 (exact: a power of two), then let the FPU round to the
    // nearest even integer by adding 2^23. A result of 2^mant is the smallest normal's code.
    constexpr float kInvStep = static_cast<float>(1u << (kBias - 1 + kMant));
    const float t = std::bit_cast<float>(a) * kInvStep + 8388608.0f;
    code = std::bit_cast<uint32_t>(t) - 0x4b000000u;
  }
  return static_cast<uint8_t>(sign | code);
}

template <int kMant, int kBias, bool kHasInf>
constexpr float DecodeFp8(uint8_t c) {
  const uint32_t sign = static_cast<uint32_t>(c & 0x80u) << 24;
  constexpr int kExpBits = 7 - kMant;
  const uint32_t exp = (c >> kMant) & ((1u << kExpBits) - 1u);
  const uint32_t mant = c & ((1u << kMant) - 1u);
  constexpr uint32_t kExpMax = (1u << kExpBits) - 1u;
  if constexpr (kHasInf) {
    if (exp == kExpMax) return std::bit_cast<float>(sign | (mant == 0 ? 0x7f800000u : 0x7fc00000u));
  } else {
    if (exp == kExpMax && mant == (1u << kMant) - 1u) return std::bit_cast<float>(sign | 0x7fc00000u);
  }
  if (exp == 0) {
    // Subnormal: mant * 2^(1-bias-mant), exact in FP32.
    constexpr float kStep = 1.0f / static_cast<float>(1u << (kBias - 1 + kMant));
    const float v = static_cast<float>(mant) * kStep;
    return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(v));
  }
  return std::bit_cast<float>(sign | ((exp - kBias + 127u) << 23) | (mant << (23 - kMant)));
}

template <typename Fn>
constexpr std::array<float, 256> MakeTable(Fn fn) {
  std::array<float, 256> t{};
  for (int i = 0; i < 256; ++i) t[i] = fn(static_cast<uint8_t>(i));
  return t;
}

inline constexpr std::array<float, 256> kE4M3Table = MakeTable(DecodeFp8<3, 7, false>);
inline constexpr std::array<float, 256> kE5M2Table = MakeTable(DecodeFp8<2, 15, true>);

}  // namespace detail

constexpr uint8_t EncodeE4M3(float x, Overflow o = Overflow::kSaturate) {
  return detail::EncodeFp8<3, 7, 0x7e, 0x7f, 0x7f>(x, o);
}
constexpr uint8_t EncodeE5M2(float x, Overflow o = Overflow::kSaturate) {
  return detail::EncodeFp8<2, 15, 0x7b, 0x7e, 0x7c>(x, o);
}
inline float DecodeE4M3(uint8_t c) { return detail::kE4M3Table[c]; }
inline float DecodeE5M2(uint8_t c) { return detail::kE5M2Table[c]; }

inline uint8_t EncodeFp8(Fp8Format f, float x, Overflow o = Overflow::kSaturate) {
  return f == Fp8Format::kE4M3 ? EncodeE4M3(x, o) : EncodeE5M2(x, o);
}
inline const std::array<float, 256>& Fp8DecodeTable(Fp8Format f) {
  return f == Fp8Format::kE4M3 ? detail::kE4M3Table : detail::kE5M2Table;
}
inline float DecodeFp8(Fp8Format f, uint8_t c) { return Fp8DecodeTable(f)[c]; }

// Rounds x to the nearest E4M3 value, saturating: DecodeE4M3(EncodeE4M3(x)) up to NaN payloads,
// computed without a table or branches so that loops over it vectorize. Every decision is an
// integer compare on the magnitude's bits (for non-negative floats integer order is float order),
// which GCC if-converts; float compares would stay branches under -ftrapping-math.
// Tested against the encode/decode pair on every rounding boundary.
inline float RoundToE4M3(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t sign = u & 0x80000000u;
  const uint32_t mag = u & 0x7fffffffu;
  const uint32_t a = mag < 0x43e00000u ? mag : 0x43e00000u;  // saturate at 448 (inf too)
  // Normal range: round the mantissa to 3 bits, ties to even.
  const uint32_t normal = (a + 0x7ffffu + ((a >> 20) & 1u)) & 0xfff00000u;
  // Subnormal range (< 2^-6): multiples of 2^-9. Adding 2^14 puts the value where one ulp is 2^-9,
  // so the FPU's round-to-nearest-even does the rounding.
  const uint32_t sub = std::bit_cast<uint32_t>((std::bit_cast<float>(a) + 16384.0f) - 16384.0f);
  uint32_t r = a < 0x3c800000u ? sub : normal;
  r = mag > 0x7f800000u ? (mag | 0x00400000u) : r;  // NaN stays (quiet) NaN
  return std::bit_cast<float>(r | sign);
}

// Bulk conversions for the 16-bit float formats safetensors files carry.
float Bf16ToFloat(uint16_t h);
uint16_t FloatToBf16(float x);  // round to nearest even, NaN kept
float F16ToFloat(uint16_t h);
uint16_t FloatToF16(float x);   // round to nearest even, overflow to inf, NaN kept

}  // namespace fp8serve
