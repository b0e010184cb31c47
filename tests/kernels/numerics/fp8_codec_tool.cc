// Test helper for tests/python/fp8_crosscheck.py: reads little-endian float32 values on stdin and
// writes, for each, four bytes: E4M3 saturating, E4M3 non-saturating, E5M2 saturating, E5M2
// non-saturating. With the argument "decode" it instead writes the 256 decoded float32 values of
// E4M3, then of E5M2.
#include <cstdio>
#include <cstring>
#include <vector>

#include "kernels/numerics/fp8.h"

int main(int argc, char** argv) {
  using namespace fp8serve;
  if (argc > 1 && std::strcmp(argv[1], "decode") == 0) {
    for (Fp8Format f : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
      std::fwrite(Fp8DecodeTable(f).data(), sizeof(float), 256, stdout);
    }
    return 0;
  }
  std::vector<float> in(1 << 16);
  std::vector<uint8_t> out(4 * in.size());
  size_t n;
  while ((n = std::fread(in.data(), sizeof(float), in.size(), stdin)) > 0) {
    for (size_t i = 0; i < n; ++i) {
      out[4 * i + 0] = EncodeE4M3(in[i], Overflow::kSaturate);
      out[4 * i + 1] = EncodeE4M3(in[i], Overflow::kNonSaturating);
      out[4 * i + 2] = EncodeE5M2(in[i], Overflow::kSaturate);
      out[4 * i + 3] = EncodeE5M2(in[i], Overflow::kNonSaturating);
    }
    if (std::fwrite(out.data(), 1, 4 * n, stdout) != 4 * n) return 1;
  }
  return 0;
}
