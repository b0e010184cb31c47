// The small kernels' own code (kernels/cuda/act_quant.cuh, weight_layout.cuh), run on the CPU under
// the host emulation in tests/kernels/cuda/emu, launched as their launchers launch them
// (ActQuantBlocks, TileWeightsBlocks): the activation quantizer against the CPU's
// QuantizeActivations bit for bit, with the GPU test's checks (act_quant_cases.h: random rows, the
// padded layout, every E4M3 rounding boundary and special values), and the weight re-layout against
// the host's TileWeights128. Outputs are poisoned before each run. (On the CPU the quantizer's
// reciprocal is an IEEE one instead of rcp.approx: the window logic that must turn either into the
// division's codes runs the same; requant_window_test proves it for any reciprocal that close.)
#include "tests/kernels/cuda/emu/emu_runtime.h"  // first: the kernels compile against it

#include <cstring>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/cuda/act_quant.cuh"
#include "kernels/cuda/act_quant.h"
#include "kernels/cuda/gemm_config.h"
#include "kernels/cuda/weight_layout.cuh"
#include "kernels/cuda/weight_layout.h"
#include "tests/kernels/cuda/act_quant_cases.h"

namespace fp8serve {
namespace {

using namespace act_quant_test;  // Quantized and the checks (act_quant_cases.h)

absl::StatusOr<Quantized> QuantizeEmulated(const std::vector<float>& x, int rows, int cols, int ldq, int poison_code) {
  if (absl::Status st = cuda::CheckActQuantArgs(rows, cols, ldq); !st.ok()) return st;
  Quantized out;
  out.q.assign(static_cast<size_t>(rows) * ldq, static_cast<uint8_t>(poison_code));
  out.s.assign(static_cast<size_t>(rows) * CeilDiv(cols, 128), std::nanf(""));
  emu::LaunchOptions options;
  options.threads = cuda::kActQuantThreads;
  emu::Launch(static_cast<unsigned>(cuda::ActQuantBlocks(rows, cols)), 1, 0, options, [&] {
    cuda::quantize_act_1x128_kernel(x.data(), rows, cols, out.q.data(), ldq, out.s.data());
  });
  return out;
}

TEST(ActQuantEmu, BitIdenticalToCpu) {
  CheckBitIdentical(QuantizeEmulated, {{1, 784}, {7, 300}, {64, 256}, {65, 129}});
}

TEST(ActQuantEmu, PaddedLayoutZeroesThePadding) { CheckPaddedLayout(QuantizeEmulated); }

TEST(ActQuantEmu, BitIdenticalOnRoundingBoundaries) { CheckRoundingBoundaries(QuantizeEmulated); }

// The re-layout kernel against the host's: every 16-byte chunk where the tiled layout puts it.
TEST(TileWeightsEmu, MatchesTheHostLayout) {
  for (auto [n, k] : {std::pair{128, 128}, {256, 384}, {384, 1024}}) {
    std::mt19937 rng(static_cast<uint32_t>(n * 31 + k));
    std::vector<uint8_t> w(static_cast<size_t>(n) * k);
    for (uint8_t& b : w) b = static_cast<uint8_t>(rng());
    std::vector<uint8_t> want(w.size()), got(w.size(), 0xA5);
    ASSERT_TRUE(cuda::TileWeights128(w.data(), n, k, want.data()).ok());
    // (vectors' storage is 16-byte aligned, as the launcher requires)
    ASSERT_TRUE(cuda::CheckTileWeights128Async(w.data(), n, k, got.data()).ok());
    emu::LaunchOptions options;
    options.threads = cuda::kTileWeightsThreads;
    emu::Launch(static_cast<unsigned>(cuda::TileWeightsBlocks(n, k)), 1, 0, options, [&] {
      cuda::tile_weights_128_kernel(reinterpret_cast<const uint4*>(w.data()), n, k, reinterpret_cast<uint4*>(got.data()));
    });
    EXPECT_EQ(got, want) << n << "x" << k;
  }
}

}  // namespace
}  // namespace fp8serve
