#include "kernels/numerics/fp8.h"

#include <cmath>

namespace fp8serve {

const char* Fp8FormatName(Fp8Format f) { return f == Fp8Format::kE4M3 ? "e4m3" : "e5m2"; }

std::optional<Fp8Format> ParseFp8Format(std::string_view name) {
  auto eq = [&](std::string_view want) {
    if (name.size() != want.size()) return false;
    for (size_t i = 0; i < name.size(); ++i) {
      char c = name[i];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      if (c != want[i]) return false;
    }
    return true;
  };
  if (eq("e4m3") || eq("e4m3fn") || eq("f8_e4m3")) return Fp8Format::kE4M3;
  if (eq("e5m2") || eq("f8_e5m2")) return Fp8Format::kE5M2;
  return std::nullopt;
}

float Bf16ToFloat(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

uint16_t FloatToBf16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float F16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    const float v = static_cast<float>(mant) * 0x1p-24f;  // subnormal: exact
    return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(v));
  }
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t FloatToF16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x1ffu));
  if (a >= 0x38800000u) {  // >= 2^-14: normal in f16
    const uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
    const uint32_t code = (r >> 13) - (112u << 10);
    return static_cast<uint16_t>(sign | (code >= 0x7c00u ? 0x7c00u : code));
  }
  const float t = std::bit_cast<float>(a) * 0x1p24f + 8388608.0f;
  return static_cast<uint16_t>(sign | (std::bit_cast<uint32_t>(t) - 0x4b000000u));
}

}  // namespace fp8serve
