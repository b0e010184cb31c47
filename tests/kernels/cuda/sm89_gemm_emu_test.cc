// The mma.sync FP8 GEMM's own code (kernels/cuda/sm89_fp8_gemm.cuh), run on the CPU under the host
// emulation in tests/kernels/cuda/emu: every CTA as its 128 threads, the kernel's PTX (cp.async with
// zero fill, ldmatrix, mma.sync) replaced by host functions written from the PTX ISA. Built twice:
// with Hopper's MMA path (FP8 fragments widened to FP16 in registers, two m16n8k16 MMAs per k32
// step: what serves one-row batches on an H100/H200) as sm89_gemm_emu_test, and with Ada's (the FP8
// m16n8k32 MMA) as sm89_gemm_emu_ada_test. Launches are planned by the real launcher's code
// (PrepareSm89Launch, DispatchSm89Instance) and checked against the CPU reference with the GPU
// test's bound and checks (gemm_cases.h), on fresh random inputs with the outputs poisoned first.
// Not covered: timing, the hardware itself, and the tensor cores' internal rounding.
#include "tests/kernels/cuda/emu/emu_runtime.h"  // first: the kernel compiles against it

#include <cuda_bf16.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/gemm_config.h"
#include "kernels/cuda/sm89_fp8_gemm.cuh"
#include "kernels/cuda/sm89_params.h"
#include "tests/kernels/cuda/emu/emu_gemm_harness.h"
#include "tests/kernels/cuda/gemm_cases.h"

namespace fp8serve::cuda {
namespace {

using namespace gemm_test;  // the problems and their checks (gemm_cases.h), the host harness

constexpr const char* kPath = sm89::kMmaPath == sm89::MmaPath::kWidened ? "widened (Hopper)" : "fp8 (Ada)";

// The traits whose heuristic configs the path serves: an H100 for the widened path, an RTX 4090-like
// Ada part (compute capability 8.9, 128 SMs, 99 KB of shared memory per block) for the FP8 one.
DeviceTraits Device() {
  DeviceTraits t;
  if (sm89::kMmaPath == sm89::MmaPath::kFp8) {
    t.cc_major = 8;
    t.cc_minor = 9;
    t.num_sms = 128;
    t.smem_per_block_optin = 99 * 1024;
  }
  return t;
}

// A forced mma.sync config: BLOCK_M and K splits, the grid every tile x split.
GemmConfig ForcedSm89Config(const Problem& p, int block_m, int k_splits) {
  GemmConfig c;
  c.kernel = GemmKernel::kSm89MmaSync;
  c.block_m = block_m;
  c.block_n = kSm89BlockN;
  c.stages = kSm89Stages;
  c.k_splits = k_splits;
  c.grid = CeilDiv(p.c.m, block_m) * (p.w.n_pad / kSm89BlockN) * k_splits;
  c.smem_bytes = Sm89SmemBytes(block_m, kSm89BlockN, kSm89Stages);
  return c;
}

// Plans the launch with the launcher's code and runs the instance it picks on the emulated GPU.
absl::StatusOr<GemmRun> RunEmulated(const Problem& p, const HostOperands& ops, GemmOutput out, const GemmConfig& config,
                                    bool late_copies) {
  return RunOnHost(p, ops, out, config, WeightLayout::kRowMajor, [&](const Fp8GemmArgs& args) -> absl::Status {
    if (absl::Status st = CheckFp8GemmArgs(args); !st.ok()) return st;  // (LaunchFp8Gemm's checks)
    absl::StatusOr<Sm89Launch> launch = PrepareSm89Launch(args, config);
    if (!launch.ok()) return launch.status();
    emu::LaunchOptions options;
    options.threads = sm89::kNumThreads;
    options.late_copies = late_copies;
    return DispatchSm89Instance(*launch, [&](auto instance) {
      using I = decltype(instance);
      emu::Launch(static_cast<unsigned>(launch->grid), 1, launch->smem_bytes, options,
                  [&] { sm89_fp8_gemm_kernel<I::BLOCK_M, I::kBFormat, I::kOutput>(launch->params); });
      return absl::OkStatus();
    });
  });
}

GemmRun RunAndCheck(const Problem& p, const HostOperands& ops, GemmOutput out, const GemmConfig& config,
                    bool late_copies = false) {
  const std::string what = absl::StrCat(CaseName(p.c), " ", GemmOutputName(out), late_copies ? " late-copies" : "",
                                        " [", DescribeGemmConfig(config), "] ", kPath);
  return CheckRun(p, out, RunEmulated(p, ops, out, config, late_copies), what);
}

// Every instance (BLOCK_M 16, 32, 64 x E4M3, E5M2 weights x every output) on M, N and K tails,
// without and with split-K (the last CTA of a tile sums the splits in split order and resets the
// tile's counter).
TEST(Sm89GemmEmu, EveryInstanceMatchesReference) {
  for (Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
    const GemmCase c{37, 200, 300, format, ScaleGranularity::kBlock128, true, true, 8};
    const Problem p = MakeProblem(c, SeedOf(c));
    const HostOperands ops(p);
    for (int block_m : kSm89BlockMs) {
      for (GemmOutput out : {GemmOutput::kF32, GemmOutput::kBF16, GemmOutput::kE4M3}) {
        RunAndCheck(p, ops, out, ForcedSm89Config(p, block_m, 1));
      }
      RunAndCheck(p, ops, GemmOutput::kE4M3, ForcedSm89Config(p, block_m, 3));
    }
  }
}

// The GPU test's sweep shapes (fp8_gemm_test.cc) with the heuristic's mma.sync config for the
// path's device: the bundled model's layers at M = 1, 7, 64, 65 with every output; per-tensor scales
// and N = 1000; long K with split-K at one and seven rows.
TEST(Sm89GemmEmu, SweepShapesMatchReference) {
  using F = Fp8Format;
  using S = ScaleGranularity;
  std::vector<GemmCase> cases;
  for (int m : {1, 7, 64, 65}) {
    cases.push_back({m, 256, 784, F::kE4M3, S::kPerChannel, true, true, 0});
    cases.push_back({m, 10, 256, F::kE4M3, S::kPerChannel, false, true, 0});
  }
  cases.push_back({1, 1000, 784, F::kE4M3, S::kPerTensor, false, true, 0});
  cases.push_back({1, 200, 16384, F::kE5M2, S::kPerTensor, false, true, 0});
  cases.push_back({7, 256, 4096, F::kE4M3, S::kPerChannel, false, true, 0});
  for (const GemmCase& c : cases) {
    const Problem p = MakeProblem(c, SeedOf(c));
    const HostOperands ops(p);
    // (the long-K cases, the slow ones here, with FP32 output only)
    const bool long_k = c.k > 1024;
    for (GemmOutput out : {GemmOutput::kF32, GemmOutput::kBF16, GemmOutput::kE4M3}) {
      if (long_k && out != GemmOutput::kF32) continue;
      const GemmShape shape{c.m, p.w.n_pad, p.w.k_pad, c.format, out};
      absl::StatusOr<GemmConfig> config = SelectGemmConfigFor(GemmKernel::kSm89MmaSync, shape, Device());
      ASSERT_TRUE(config.ok()) << config.status();
      RunAndCheck(p, ops, out, *config);
    }
  }
}

// When the cp.async copies land (at issue, or as late as each wait allows) changes no bit.
TEST(Sm89GemmEmu, CopyTimingChangesNoBit) {
  const GemmCase c{50, 256, 640, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, true, true, 0};
  const Problem p = MakeProblem(c, SeedOf(c) + 3);
  const HostOperands ops(p);
  for (const GemmConfig& config : {ForcedSm89Config(p, 16, 1), ForcedSm89Config(p, 64, 2)}) {
    const GemmRun early = RunAndCheck(p, ops, GemmOutput::kE4M3, config);
    ExpectSameBits(early, RunAndCheck(p, ops, GemmOutput::kE4M3, config, true), DescribeGemmConfig(config));
  }
}

// The launcher's checks (PrepareSm89Launch), host code: what the kernel cannot run is
// INVALID_ARGUMENT naming the fault.
TEST(Sm89Plan, RefusesWhatTheKernelCannotRun) {
  const GemmCase c{20, 256, 512, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, true, true, 0};
  const Problem p = MakeProblem(c, SeedOf(c));
  const HostOperands ops(p);
  struct Bad {
    const char* says;
    GemmConfig config;
  };
  const GemmConfig ok = ForcedSm89Config(p, 32, 1);
  std::vector<Bad> bad;
  auto with = [&](const char* says, auto edit) {
    GemmConfig config = ok;
    edit(config);
    bad.push_back({says, config});
  };
  with("sm90_wgmma config", [](GemmConfig& g) { g.kernel = GemmKernel::kSm90Wgmma; });
  with("stages", [](GemmConfig& g) { g.stages = 3; });
  with("without clusters", [](GemmConfig& g) { g.cluster_m = 2; });
  with("no sm89 kernel instance for block_m 48", [](GemmConfig& g) { g.block_m = 48; });
  with("tiles_m * tiles_n * k_splits", [](GemmConfig& g) { g.grid += 1; });
  for (const Bad& b : bad) ExpectRefused(RunEmulated(p, ops, GemmOutput::kF32, b.config, false), b.says, b.says);
}

}  // namespace
}  // namespace fp8serve::cuda
