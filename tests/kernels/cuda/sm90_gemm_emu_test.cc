// The Hopper GEMM's own code (kernels/cuda/sm90_fp8_gemm.cuh), run on the CPU under the host
// emulation in tests/kernels/cuda/emu: every CTA as 256 or 384 threads (the producer warpgroup and
// one or two consumer warpgroups), the kernel's PTX (TMA, mbarriers, wgmma, clusters, named
// barriers) replaced by host functions written from the PTX ISA. Launches are planned by the real
// launcher's code (PrepareSm90Launch, DispatchSm90Instance); the tensor maps hold what that plan
// says they describe. Outputs are checked against the CPU reference with the GPU test's bound and
// checks (gemm_cases.h), on fresh random inputs, with the outputs poisoned first. No GPU needed:
// this runs on every machine and in CI, so a change to the kernel's pipeline, indexing, multicast,
// split-K, epilogue or main-loop variants is caught before it reaches a GPU.
//
// Covered: both tile heights and the wide tile, E4M3 and E5M2 weights, every output, every scale
// granularity, split-K, clusters of 2 and 4 with multicast (a CTA below the matrix included), tiled
// B, paired loads, ordered consumers, the main-loop variants (the same bits as the default), and
// the asynchronous parts run both ways (TMA landing at issue or later in random order; wgmma
// computed at issue or at its wait). Not covered: timing, the hardware itself, and the tensor
// cores' internal rounding (the emulated wgmma sums in FP32 in k order).
#include "tests/kernels/cuda/emu/emu_runtime.h"  // first: the kernel compiles against it

#include <cuda_bf16.h>
// The kernel's body is compiled for sm_90a only (its #if): here, for the emulation.
#define __CUDA_ARCH_FEAT_SM90_ALL 1

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/gemm_config.h"
#include "kernels/cuda/sm90_fp8_gemm.cuh"
#include "kernels/cuda/sm90_params.h"
#include "tests/kernels/cuda/emu/emu_gemm_harness.h"
#include "tests/kernels/cuda/gemm_cases.h"

namespace fp8serve::cuda {
namespace {

using namespace gemm_test;  // the problems and their checks (gemm_cases.h), the host harness

// An H100's traits: what the plan checks grids and shared memory against.
DeviceTraits Hopper() { return DeviceTraits{}; }

struct EmuMode {
  bool async_tma = false;
  bool late_wgmma = false;
};

// Plans the launch with the launcher's code and runs the instance it picks on the emulated GPU, with
// the outputs poisoned first (RunOnHost).
absl::StatusOr<GemmRun> RunEmulated(const Problem& p, const HostOperands& ops, GemmOutput out, const GemmConfig& config,
                                    WeightLayout layout = WeightLayout::kRowMajor, EmuMode mode = {},
                                    bool promote = true) {
  return RunOnHost(p, ops, out, config, layout, [&](const Fp8GemmArgs& args) -> absl::Status {
    absl::StatusOr<Sm90Launch> launch = PrepareSm90Launch(args, config, Hopper(), promote);
    if (!launch.ok()) return launch.status();
    const CUtensorMap tmap_a = sm90::EncodeEmuOperandMap(launch->a);
    const CUtensorMap tmap_b = sm90::EncodeEmuOperandMap(launch->b);
    emu::LaunchOptions options;
    options.threads = launch->threads;
    options.async_tma = mode.async_tma;
    options.late_wgmma = mode.late_wgmma;
    return DispatchSm90Instance(*launch, [&](auto instance) {
      using I = decltype(instance);
      if (I::kThreads != launch->threads) return absl::InternalError("the plan's thread count is not the instance's");
      emu::Launch(static_cast<unsigned>(launch->grid), launch->params.sched.cluster_size, launch->smem_bytes, options,
                  [&] {
                    sm90_fp8_gemm_kernel<I::BLOCK_M, I::BLOCK_N, I::kBFormat, I::kOutput, I::kPromote, I::kLoop>(
                        tmap_a, tmap_b, launch->params);
                  });
      return absl::OkStatus();
    });
  });
}

// Runs one config and checks it against the reference; returns the run for bit comparisons.
GemmRun RunAndCheck(const Problem& p, const HostOperands& ops, GemmOutput out, const GemmConfig& config,
                    WeightLayout layout = WeightLayout::kRowMajor, EmuMode mode = {}) {
  const std::string what = absl::StrCat(CaseName(p.c), " ", GemmOutputName(out), " ", WeightLayoutName(layout),
                                        mode.async_tma ? " async-tma" : "", mode.late_wgmma ? " late-wgmma" : "",
                                        " [", DescribeGemmConfig(config), "]");
  return CheckRun(p, out, RunEmulated(p, ops, out, config, layout, mode), what);
}

// The pipeline from the simplest case up: one group and one tile; then persistent CTAs walking
// several tiles with stage counts that do not divide the group count (phases flip mid-tile and
// carry across tiles), grouped rasterization and paired loads; rows past m from TMA's zero fill.
TEST(Sm90GemmEmu, PipelineMatchesReference) {
  struct Forced {
    GemmCase c;
    int block_m, stages, grid, raster_group;
    bool pair;
    GemmOutput out;
  };
  const Forced cases[] = {
      {{1, 128, 128, Fp8Format::kE4M3, ScaleGranularity::kPerTensor, false, false, 0}, 64, 2, 1, 1, false,
       GemmOutput::kF32},
      {{100, 300, 640, Fp8Format::kE4M3, ScaleGranularity::kBlock128, true, true, 0}, 64, 3, 2, 2, false,
       GemmOutput::kE4M3},
      {{130, 256, 640, Fp8Format::kE5M2, ScaleGranularity::kPerChannel, false, true, 8}, 128, 2, 1, 1, false,
       GemmOutput::kBF16},
      {{200, 384, 512, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, true, true, 0}, 128, 3, 3, 2, true,
       GemmOutput::kF32},
      {{70, 256, 896, Fp8Format::kE5M2, ScaleGranularity::kBlock128, false, true, 0}, 64, 4, 1, 1, true,
       GemmOutput::kE4M3},
  };
  for (const Forced& f : cases) {
    const Problem p = MakeProblem(f.c, SeedOf(f.c));
    const HostOperands ops(p);
    RunAndCheck(p, ops, f.out, ForcedSm90Config(f.block_m, f.stages, f.grid, f.raster_group, 1, f.pair));
  }
}

// Split-K: the last consumer warp of each 16 rows sums the splits in split order and resets its
// counter; every output, both tile heights.
TEST(Sm90GemmEmu, SplitKMatchesReference) {
  const GemmCase c{72, 256, 1024, Fp8Format::kE4M3, ScaleGranularity::kBlock128, true, true, 0};
  const Problem p = MakeProblem(c, SeedOf(c) + 1);
  const HostOperands ops(p);
  RunAndCheck(p, ops, GemmOutput::kE4M3, ForcedSm90Config(64, 3, 5, 1, 3));
  RunAndCheck(p, ops, GemmOutput::kBF16, ForcedSm90Config(128, 2, 2, 1, 2));
  RunAndCheck(p, ops, GemmOutput::kF32, ForcedSm90Config(64, 4, 3, 2, 8, true));
}

// Clusters: multicast A across the CTAs of an M-tile, B across those of an N-tile, each CTA
// releasing its stages to every producer that writes into them; tiles_m not a multiple of
// cluster_m (a CTA below the matrix loads and computes, and stores nothing); one cluster walking
// several cluster tiles. The same bits as without a cluster.
TEST(Sm90GemmEmu, ClustersGiveTheUnclusteredBits) {
  const GemmCase c{129, 512, 384, Fp8Format::kE4M3, ScaleGranularity::kBlock128, true, true, 0};
  const Problem p = MakeProblem(c, SeedOf(c) + 17);
  const HostOperands ops(p);
  const GemmRun plain = RunAndCheck(p, ops, GemmOutput::kE4M3, ForcedSm90Config(64, 3, 2, 1, 1));
  struct Shape {
    int cm, cn, clusters;
  };
  for (const Shape s : {Shape{2, 1, 1}, Shape{1, 2, 2}, Shape{2, 2, 1}}) {
    GemmConfig config = ForcedSm90Config(64, 3, s.cm * s.cn * s.clusters, 2, 1);
    config.cluster_m = s.cm;
    config.cluster_n = s.cn;
    const GemmRun run = RunAndCheck(p, ops, GemmOutput::kE4M3, config);
    ExpectSameBits(plain, run, DescribeGemmConfig(config));
  }
  // BLOCK_M 128 (two consumer warpgroups) in a 2 x 2 cluster, BF16
  GemmConfig config = ForcedSm90Config(128, 4, 4, 1, 1, true);
  config.cluster_m = 2;
  config.cluster_n = 2;
  RunAndCheck(p, ops, GemmOutput::kBF16, config);
}

// Weights in the tiled streaming layout: the same bits as row-major, plain and in a cluster.
TEST(Sm90GemmEmu, TiledWeightsGiveTheRowMajorBits) {
  const GemmCase c{65, 384, 512, Fp8Format::kE5M2, ScaleGranularity::kPerChannel, true, true, 0};
  const Problem p = MakeProblem(c, SeedOf(c) + 3);
  const HostOperands ops(p);
  GemmConfig clustered = ForcedSm90Config(64, 3, 2, 1, 1);
  clustered.cluster_m = 2;
  for (const GemmConfig& config : {ForcedSm90Config(128, 3, 2, 2, 1), ForcedSm90Config(64, 2, 1, 1, 2), clustered}) {
    for (GemmOutput out : {GemmOutput::kE4M3, GemmOutput::kF32}) {
      const GemmRun row_major = RunAndCheck(p, ops, out, config);
      const GemmRun tiled = RunAndCheck(p, ops, out, config, WeightLayout::kTiled128);
      ExpectSameBits(row_major, tiled, DescribeGemmConfig(config));
    }
  }
}

// The wide tile (128 x 192): N not a multiple of 192 (the last tile reaches past n and stores
// nothing there), tiles straddling the 128-column scale blocks, ordered consumers, clusters; the
// same bits as the 128-wide tile (each element's products and promotions are the same).
TEST(Sm90GemmEmu, WideTilesGiveThe128WideBits) {
  const GemmCase c{150, 640, 512, Fp8Format::kE4M3, ScaleGranularity::kBlock128, true, true, 0};
  const Problem p = MakeProblem(c, SeedOf(c) + 5);
  const HostOperands ops(p);
  const GemmShape shape{c.m, p.w.n_pad, p.w.k_pad, c.format, GemmOutput::kBF16};
  for (GemmOutput out : {GemmOutput::kBF16, GemmOutput::kF32}) {
    const GemmConfig narrow = ForcedSm90Config(128, 3, 2, 2, 1);
    const GemmRun base = RunAndCheck(p, ops, out, narrow);
    absl::StatusOr<GemmConfig> wide = WithSm90BlockN(narrow, shape, Hopper(), kSm90WideBlockN);
    ASSERT_TRUE(wide.ok()) << wide.status();
    wide->grid = 2;
    wide->stages = 3;
    wide->smem_bytes = Sm90SmemBytes(128, kSm90WideBlockN, 3);
    ExpectSameBits(base, RunAndCheck(p, ops, out, *wide), "wide");
    GemmConfig ordered = *wide;
    ordered.ordered_consumers = true;
    ExpectSameBits(base, RunAndCheck(p, ops, out, ordered, WeightLayout::kRowMajor, {true, true}), "wide, ordered");
    if (out == GemmOutput::kBF16) {  // the +yield loop's instance (E4M3 weights, BF16 output)
      GemmConfig yield = *wide;
      yield.main_loop = Sm90MainLoop::kYieldFfma;
      ExpectSameBits(base, RunAndCheck(p, ops, out, yield), "wide, yield");
    }
  }
  // Wide tiles in a 2 x 1 cluster (E5M2 weights, per-channel scales)
  const GemmCase e{200, 384, 384, Fp8Format::kE5M2, ScaleGranularity::kPerChannel, false, true, 0};
  const Problem q = MakeProblem(e, SeedOf(e));
  const HostOperands qops(q);
  const GemmShape qshape{e.m, q.w.n_pad, q.w.k_pad, e.format, GemmOutput::kF32};
  absl::StatusOr<GemmConfig> wide = WithSm90BlockN(ForcedSm90Config(128, 3, 2, 1, 1), qshape, Hopper(), kSm90WideBlockN);
  ASSERT_TRUE(wide.ok()) << wide.status();
  absl::StatusOr<GemmConfig> mc = WithSm90Cluster(*wide, qshape, Hopper(), 2, 1);
  ASSERT_TRUE(mc.ok()) << mc.status();
  mc->grid = 2;
  RunAndCheck(q, qops, GemmOutput::kF32, *mc);
}

// The opt-in main-loop variants (Sm90MainLoop) give the default's bits: split-K (the cross-bank
// variants keep the workspace's pairs swapped), a cluster, both tile heights.
TEST(Sm90GemmEmu, MainLoopVariantsGiveTheDefaultBits) {
  const GemmCase c{100, 256, 1152, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, true, true, 0};
  const Problem p = MakeProblem(c, SeedOf(c) + 9);
  const HostOperands ops(p);
  GemmConfig clustered = ForcedSm90Config(128, 3, 2, 1, 1);
  clustered.cluster_n = 2;
  for (const GemmConfig& base : {ForcedSm90Config(64, 3, 3, 2, 3), clustered, ForcedSm90Config(128, 4, 1, 1, 1, true)}) {
    const GemmRun def = RunAndCheck(p, ops, GemmOutput::kBF16, base);
    for (const Sm90MainLoop loop : kSm90OptInMainLoops) {
      GemmConfig config = base;
      config.main_loop = loop;
      ExpectSameBits(def, RunAndCheck(p, ops, GemmOutput::kBF16, config), DescribeGemmConfig(config));
    }
  }
}

// When TMA boxes land (at issue, or later in random order) and when wgmmas compute (at issue, or
// when waited for) changes no bit: the kernel waits for everything it reads. Under late wgmmas a
// stage handed back before its wgmmas were waited for would be overwritten under them (the
// emulation fails the run when a TMA box lands on shared memory an unfinished wgmma reads).
TEST(Sm90GemmEmu, AsyncTimingChangesNoBit) {
  const GemmCase c{96, 512, 768, Fp8Format::kE4M3, ScaleGranularity::kBlock128, true, true, 0};
  const Problem p = MakeProblem(c, SeedOf(c) + 11);
  const HostOperands ops(p);
  GemmConfig clustered = ForcedSm90Config(64, 2, 4, 1, 1);
  clustered.cluster_m = 2;
  clustered.cluster_n = 2;
  for (const GemmConfig& config : {ForcedSm90Config(128, 2, 1, 1, 1), ForcedSm90Config(64, 3, 2, 1, 2), clustered}) {
    const GemmRun early = RunAndCheck(p, ops, GemmOutput::kE4M3, config);
    for (const EmuMode mode : {EmuMode{true, false}, EmuMode{false, true}, EmuMode{true, true}}) {
      ExpectSameBits(early, RunAndCheck(p, ops, GemmOutput::kE4M3, config, WeightLayout::kRowMajor, mode),
                     DescribeGemmConfig(config));
    }
  }
}

// The GPU test's sweep shapes (fp8_gemm_test.cc) that the emulation runs in seconds: the bundled
// model's layers at M = 1, 7, 64, 65 and 1000; K not a multiple of 128 and N not a multiple of 64,
// E5M2 and block scales, strided output rows; a long K. Each with the heuristic's sm90 config (an
// H100's traits) and every output.
TEST(Sm90GemmEmu, SweepShapesMatchReference) {
  using F = Fp8Format;
  using S = ScaleGranularity;
  std::vector<GemmCase> cases;
  for (int m : {1, 7, 64, 65, 1000}) {
    cases.push_back({m, 256, 784, F::kE4M3, S::kPerChannel, true, true, 0});
    cases.push_back({m, 10, 256, F::kE4M3, S::kPerChannel, false, true, 0});
  }
  for (int m : {7, 65}) cases.push_back({m, 200, 300, F::kE5M2, S::kBlock128, true, true, m == 65 ? 16 : 0});
  cases.push_back({64, 1000, 784, F::kE4M3, S::kPerTensor, false, true, 0});
  cases.push_back({7, 256, 4096, F::kE4M3, S::kPerChannel, false, true, 0});
  for (const GemmCase& c : cases) {
    const Problem p = MakeProblem(c, SeedOf(c));
    const HostOperands ops(p);
    for (GemmOutput out : {GemmOutput::kF32, GemmOutput::kBF16, GemmOutput::kE4M3}) {
      const GemmShape shape{c.m, p.w.n_pad, p.w.k_pad, c.format, out};
      absl::StatusOr<GemmConfig> base = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, shape, Hopper());
      ASSERT_TRUE(base.ok()) << base.status();
      absl::StatusOr<GemmConfig> tuned = TuneSm90Config(*base, shape, Hopper());
      ASSERT_TRUE(tuned.ok()) << tuned.status();
      RunAndCheck(p, ops, out, *tuned);
    }
  }
}

// The launcher's checks (PrepareSm90Launch), which are host code: bad configs and arguments are
// INVALID_ARGUMENT naming the fault, another GPU FAILED_PRECONDITION, before anything runs.
TEST(Sm90Plan, RefusesWhatTheKernelCannotRun) {
  const GemmCase c{65, 256, 512, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, true, true, 0};
  const Problem p = MakeProblem(c, SeedOf(c));
  const HostOperands ops(p);
  struct Bad {
    const char* says;
    GemmConfig config;
    GemmOutput out = GemmOutput::kF32;
  };
  std::vector<Bad> bad;
  const GemmConfig ok = ForcedSm90Config(64, 3, 2, 1, 1);
  auto with = [&](const char* says, auto edit, GemmOutput out = GemmOutput::kF32) {
    GemmConfig config = ok;
    edit(config);
    bad.push_back({says, config, out});
  };
  with("not for the sm90 kernel", [](GemmConfig& g) { g.kernel = GemmKernel::kSm89MmaSync; });
  with("block_m must be 64 or 128", [](GemmConfig& g) { g.block_m = 96; });
  with("stages outside", [](GemmConfig& g) { g.stages = 1; });
  with("paired loads need 3", [](GemmConfig& g) {
    g.stages = 2;
    g.pair_loads = true;
  });
  with("k_splits outside", [](GemmConfig& g) { g.k_splits = 5; });
  with("grid outside", [](GemmConfig& g) { g.grid = 133; });
  with("smem_bytes below", [](GemmConfig& g) { g.smem_bytes -= 1; });
  with("ordered consumers", [](GemmConfig& g) { g.ordered_consumers = true; });
  with("whole clusters", [](GemmConfig& g) {
    g.cluster_m = 2;
    g.grid = 3;
  });
  with("E4M3 weights and BF16 output", [](GemmConfig& g) { g.main_loop = Sm90MainLoop::kCrossBank; });
  with("", [](GemmConfig& g) { g.block_n = kSm90WideBlockN; }, GemmOutput::kE4M3);
  for (const Bad& b : bad) ExpectRefused(RunEmulated(p, ops, b.out, b.config), b.says, b.says);
  // Split-K without a workspace, misaligned A, another compute capability
  GemmRun r = EmptyRun(p, GemmOutput::kF32);
  std::vector<float> d(static_cast<size_t>(c.m) * r.ldd);
  RunPointers ptr;
  ptr.a = ops.a.get();
  ptr.a_scales = ops.a_scales.get<float>();
  ptr.b = ops.b.get();
  ptr.b_scales = ops.b_scales.get<float>();
  ptr.d = d.data();
  const Fp8GemmArgs args = ArgsFor(p, GemmOutput::kF32, r, ptr);
  absl::StatusOr<Sm90Launch> split = PrepareSm90Launch(args, ForcedSm90Config(64, 3, 2, 1, 2), Hopper(), true);
  EXPECT_EQ(split.status().code(), absl::StatusCode::kInvalidArgument) << split.status();
  EXPECT_NE(split.status().message().find("workspace"), absl::string_view::npos) << split.status();
  Fp8GemmArgs shifted = args;
  shifted.a = args.a + 8;
  absl::StatusOr<Sm90Launch> misaligned = PrepareSm90Launch(shifted, ok, Hopper(), true);
  EXPECT_NE(misaligned.status().message().find("16-byte aligned"), absl::string_view::npos) << misaligned.status();
  // A padded width near 2^31 overflowed the tile count (tests/fuzz/gemm_plan_fuzz): refused up front.
  Fp8GemmArgs huge = args;
  huge.n = huge.n_store = huge.ldd = 2147483520;
  absl::StatusOr<Sm90Launch> too_wide = PrepareSm90Launch(huge, ok, Hopper(), true);
  EXPECT_EQ(too_wide.status().code(), absl::StatusCode::kInvalidArgument) << too_wide.status();
  EXPECT_NE(too_wide.status().message().find("a dimension above 1073741824"), absl::string_view::npos) << too_wide.status();
  DeviceTraits ada;
  ada.cc_minor = 9;
  ada.cc_major = 8;
  EXPECT_EQ(PrepareSm90Launch(args, ok, ada, true).status().code(), absl::StatusCode::kFailedPrecondition);
  // The plan itself: the boxes each CTA of a 2 x 2 cluster loads, and the grid's unit stride
  GemmConfig cluster = ForcedSm90Config(128, 3, 4, 1, 1);
  cluster.cluster_m = cluster.cluster_n = 2;
  absl::StatusOr<Sm90Launch> planned = PrepareSm90Launch(args, cluster, Hopper(), true);
  ASSERT_TRUE(planned.ok()) << planned.status();
  EXPECT_EQ(planned->a.box_rows, 64);
  EXPECT_EQ(planned->b.box_rows, 64);
  EXPECT_EQ(planned->threads, 384);
  EXPECT_EQ(planned->params.sched.unit_stride, 1);
}

}  // namespace
}  // namespace fp8serve::cuda
