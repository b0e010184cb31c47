// GPU: the FP8 GEMMs (fp8_gemm.h) against the CPU reference (kernels/cpu/mlp_reference.h).
//
// Every case runs each kernel forced (sm89 mma.sync everywhere, sm90 wgmma on compute capability
// 9.0) and the heuristic's own choice, with each output (FP32, BF16, E4M3 requantized), on fresh
// random inputs of realistic magnitudes in gemm_config.h's padded device layout. Output buffers are
// poisoned before every launch, so an element a kernel skips cannot pass by luck, and the columns
// past n_store must still hold the poison afterwards. The bound is derived in cuda_test_util.h;
// each case prints max(|gpu - ref| / L1) so the log shows the margin. Skips loudly without a GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <iterator>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "kernels/cpu/mlp_reference.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/gemm_config.h"
#include "kernels/numerics/quantize.h"
#include "tests/kernels/cuda/cuda_test_util.h"
#include "tests/kernels/cuda/gemm_cases.h"

namespace fp8serve::cuda {
namespace {

using gpu_test::DeviceBuffer;
using gpu_test::GpuFixture;
using namespace gemm_test;  // the problems and their checks (gemm_cases.h)

struct DeviceOperands {
  DeviceBuffer a, a_scales, b, b_scales, col_scales, bias;
  DeviceBuffer b_tiled;                            // B in kTiled128, after TileOnDevice()
  WeightLayout b_layout = WeightLayout::kRowMajor;  // which of the two RunGemm passes
};

// Fills ops->b_tiled from ops->b with the library's device re-layout.
absl::Status TileOnDevice(const Problem& p, DeviceOperands* ops, cudaStream_t stream) {
  if (absl::Status st = ops->b_tiled.Allocate(ops->b.bytes()); !st.ok()) return st;
  if (absl::Status st = TileWeights128Async(ops->b.get<uint8_t>(), p.w.n_pad, p.w.k_pad, ops->b_tiled.get<uint8_t>(),
                                            stream);
      !st.ok()) {
    return st;
  }
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

absl::Status Upload(const Problem& p, DeviceOperands* d) {
  for (absl::Status st : {d->a.Upload(p.a.padded), d->a_scales.Upload(p.a.scales), d->b.Upload(p.w.w),
                          d->b_scales.Upload(p.w.b_scales), d->col_scales.Upload(p.w.col_scales),
                          d->bias.Upload(p.w.bias)}) {
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

enum class Launcher { kDispatch, kNoPromotion };

// Poisons the outputs, launches, waits and reads back. `workspace` (when given) is reused across
// calls, as DeviceMlp does; it is grown and zeroed when too small.
absl::StatusOr<GemmRun> RunGemm(const Problem& p, const DeviceOperands& ops, GemmOutput out, const GemmConfig& config,
                                cudaStream_t stream, Launcher launcher = Launcher::kDispatch,
                                DeviceBuffer* workspace = nullptr) {
  const int m = p.c.m;
  GemmRun r = EmptyRun(p, out);
  DeviceBuffer d, d_scales, local_ws;
  for (absl::Status st : {d.Allocate(static_cast<size_t>(m) * r.ldd * OutputBytes(out)),
                          d.Fill(out == GemmOutput::kE4M3 ? kPoisonCode : kPoisonFloat)}) {
    if (!st.ok()) return st;
  }
  if (out == GemmOutput::kE4M3) {
    for (absl::Status st : {d_scales.Allocate(static_cast<size_t>(m) * (p.w.n_pad / kGemmBlockK) * sizeof(float)),
                            d_scales.Fill(kPoisonFloat)}) {
      if (!st.ok()) return st;
    }
  }
  Fp8GemmArgs args = ArgsFor(p, out, r, PointersTo(ops, ops.b_layout, d, d_scales));
  const size_t ws_bytes = GemmWorkspaceBytes(ShapeOf(args), config);
  DeviceBuffer* ws = workspace != nullptr ? workspace : &local_ws;
  if (ws->bytes() < ws_bytes) {
    for (absl::Status st : {ws->Allocate(ws_bytes), ws->Fill(0)}) {
      if (!st.ok()) return st;
    }
  }
  args.workspace = ws_bytes > 0 ? ws->get() : nullptr;

  absl::Status st = launcher == Launcher::kDispatch ? LaunchFp8Gemm(args, config, stream)
                                                    : LaunchSm90Fp8GemmNoPromotionForTest(args, config, stream);
  if (!st.ok()) return st;
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  if (absl::Status s = d.Download(&r.d); !s.ok()) return s;
  if (out == GemmOutput::kE4M3) {
    if (absl::Status s = d_scales.Download(&r.d_scales); !s.ok()) return s;
  }
  return r;
}


struct KernelChoice {
  std::string label;
  absl::StatusOr<GemmConfig> config;
};

// Whether the environment's FP8SERVE_GEMM_KERNELS (a comma-separated list of "heuristic",
// "sm89_mma_sync", "sm90_wgmma"; unset = all) selects `label`. tools/device/gpu_check.sh runs the
// kernels in separate processes with it, so a kernel that faults (a trap leaves the CUDA context
// unusable) cannot hide the other kernel's results.
bool KernelSelected(const std::string& label) {
  const char* env = std::getenv("FP8SERVE_GEMM_KERNELS");
  if (env == nullptr || *env == '\0') return true;
  for (absl::string_view name : absl::StrSplit(env, ',')) {
    if (name == label) return true;
  }
  return false;
}

// The first line of every test that forces the sm90 kernel: it skips (loudly) off compute
// capability 9.0, or when FP8SERVE_GEMM_KERNELS leaves the kernel out.
#define FP8SERVE_SKIP_UNLESS_SM90_WGMMA()                                  \
  do {                                                                     \
    if (!IsSm90()) GTEST_SKIP() << "needs compute capability 9.0";         \
    if (!KernelSelected(GemmKernelName(GemmKernel::kSm90Wgmma))) {         \
      GTEST_SKIP() << "sm90_wgmma not in FP8SERVE_GEMM_KERNELS";           \
    }                                                                      \
  } while (0)

// The heuristic's choice and each kernel forced; sm90 only where it can run (compute capability 9.0).
std::vector<KernelChoice> KernelChoices(const GemmShape& shape, const DeviceTraits& traits) {
  std::vector<KernelChoice> v;
  if (KernelSelected("heuristic")) v.push_back({"heuristic", SelectGemmConfig(shape, traits)});
  if (KernelSelected(GemmKernelName(GemmKernel::kSm89MmaSync))) {
    v.push_back({GemmKernelName(GemmKernel::kSm89MmaSync), SelectGemmConfigFor(GemmKernel::kSm89MmaSync, shape, traits)});
  }
  if (traits.cc_major == 9 && traits.cc_minor == 0 && KernelSelected(GemmKernelName(GemmKernel::kSm90Wgmma))) {
    v.push_back({GemmKernelName(GemmKernel::kSm90Wgmma), SelectGemmConfigFor(GemmKernel::kSm90Wgmma, shape, traits)});
  }
  return v;
}

constexpr GemmOutput kOutputs[] = {GemmOutput::kF32, GemmOutput::kBF16, GemmOutput::kE4M3};

// Every kernel choice x every output of one case against the reference.
void RunAndCheck(const GemmCase& c, const DeviceTraits& traits, cudaStream_t stream) {
  const Problem p = MakeProblem(c, SeedOf(c));
  DeviceOperands ops;
  FP8SERVE_ASSERT_OK(Upload(p, &ops));
  if (!(traits.cc_major == 9 && traits.cc_minor == 0)) {
    std::printf("  (sm90_wgmma not run: compute capability %d.%d)\n", traits.cc_major, traits.cc_minor);
  }
  for (GemmOutput out : kOutputs) {
    const GemmShape shape{c.m, p.w.n_pad, p.w.k_pad, c.format, out};
    for (const KernelChoice& kc : KernelChoices(shape, traits)) {
      ASSERT_TRUE(kc.config.ok()) << kc.label << " for " << CaseName(c) << ": " << kc.config.status();
      absl::StatusOr<GemmRun> run = RunGemm(p, ops, out, *kc.config, stream);
      ASSERT_TRUE(run.ok()) << kc.label << " " << DescribeGemmConfig(*kc.config) << ": " << run.status();
      const CheckResult cr = CheckOutput(p, out, *run);
      const std::string rel = std::isnan(cr.max_rel_l1) ? "-" : absl::StrFormat("%.3e", cr.max_rel_l1);
      std::printf("%-44s %-13s %-4s max|d|/L1 %9s  bound used %5.3f  %s  [%s]\n", CaseName(c).c_str(), kc.label.c_str(),
                  GemmOutputName(out), rel.c_str(), cr.worst, cr.failures == 0 ? "ok" : "FAIL",
                  DescribeGemmConfig(*kc.config).c_str());
      EXPECT_EQ(cr.failures, 0) << CaseName(c) << " " << kc.label << " " << GemmOutputName(out) << " ["
                                << DescribeGemmConfig(*kc.config) << "]" << cr.first;
    }
  }
  std::fflush(stdout);
}

std::vector<GemmCase> SweepCases() {
  using F = Fp8Format;
  using S = ScaleGranularity;
  std::vector<GemmCase> v;
  for (int m : {1, 7, 64, 65, 1000, 4096}) {
    v.push_back({m, 256, 784, F::kE4M3, S::kPerChannel, true, true, 0});  // the bundled model's hidden layer
    v.push_back({m, 10, 256, F::kE4M3, S::kPerChannel, false, true, 0});  // and its logits layer
  }
  // K not a multiple of 128, N not a multiple of 64, E5M2 and block scales, strided output rows.
  for (int m : {7, 65, 1000}) v.push_back({m, 200, 300, F::kE5M2, S::kBlock128, true, true, m == 65 ? 16 : 0});
  for (int m : {1, 64, 1000}) v.push_back({m, 1000, 784, F::kE4M3, S::kPerTensor, false, true, 0});
  v.push_back({4096, 1000, 300, F::kE4M3, S::kBlock128, true, false, 16});
  v.push_back({4096, 512, 1024, F::kE5M2, S::kPerChannel, true, true, 0});
  // Large K: many promotions, split-K for small M.
  v.push_back({7, 256, 4096, F::kE4M3, S::kPerChannel, false, true, 0});
  v.push_back({65, 256, 4096, F::kE5M2, S::kBlock128, true, true, 0});
  v.push_back({1000, 1024, 4096, F::kE4M3, S::kBlock128, false, true, 0});
  v.push_back({1, 200, 16384, F::kE5M2, S::kPerTensor, false, true, 0});
  v.push_back({64, 200, 16384, F::kE4M3, S::kPerChannel, false, false, 0});
  v.push_back({7, 10, 16384, F::kE4M3, S::kBlock128, false, true, 0});
  return v;
}

class Fp8GemmGpuTest : public GpuFixture<::testing::TestWithParam<GemmCase>> {};

TEST_P(Fp8GemmGpuTest, MatchesReference) { RunAndCheck(GetParam(), traits_, stream_); }

INSTANTIATE_TEST_SUITE_P(Shapes, Fp8GemmGpuTest, ::testing::ValuesIn(SweepCases()),
                         [](const ::testing::TestParamInfo<GemmCase>& info) { return CaseName(info.param); });

// A few small cases for the compute-sanitizer runs (tools/device/gpu_check.sh filters on this
// suite): every kernel, every output, M and N tails, padding, a strided output.
class Fp8GemmGpuSmoke : public GpuFixture<::testing::Test> {};

TEST_F(Fp8GemmGpuSmoke, SmallShapes) {
  for (const GemmCase& c : {GemmCase{7, 200, 300, Fp8Format::kE5M2, ScaleGranularity::kBlock128, true, true, 16},
                            GemmCase{65, 10, 256, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, false, true, 0},
                            GemmCase{130, 256, 784, Fp8Format::kE4M3, ScaleGranularity::kPerTensor, true, true, 0}}) {
    RunAndCheck(c, traits_, stream_);
    if (HasFatalFailure()) return;
  }
}

// The multicast cluster path under compute-sanitizer (gpu_check.sh runs the Smoke suites there): a
// 2x2 cluster over 3 x 4 tiles, one CTA pair below the matrix, one cluster walking every unit.
TEST_F(Fp8GemmGpuSmoke, Sm90Clusters) {
  FP8SERVE_SKIP_UNLESS_SM90_WGMMA();
  const GemmCase c{129, 512, 640, Fp8Format::kE4M3, ScaleGranularity::kBlock128, true, true, 0};
  const Problem p = MakeProblem(c, SeedOf(c) + 17);
  DeviceOperands ops;
  FP8SERVE_ASSERT_OK(Upload(p, &ops));
  for (const auto& [cm, cn] : {std::pair{2, 1}, std::pair{2, 2}}) {
    GemmConfig config = ForcedSm90Config(64, 3, cm * cn, 1, 1);
    config.cluster_m = cm;
    config.cluster_n = cn;
    absl::StatusOr<GemmRun> run = RunGemm(p, ops, GemmOutput::kE4M3, config, stream_);
    ASSERT_TRUE(run.ok()) << DescribeGemmConfig(config) << ": " << run.status();
    const CheckResult cr = CheckOutput(p, GemmOutput::kE4M3, *run);
    EXPECT_EQ(cr.failures, 0) << DescribeGemmConfig(config) << cr.first;
  }
}

// The wide tile under compute-sanitizer: 2 x 4 wide tiles, the last reaching past n_pad (memcheck
// sees any read of the column scales or bias past n), plain and in 2x1 clusters (with and without
// ordered consumers), with block and per-channel scales.
TEST_F(Fp8GemmGpuSmoke, Sm90WideTile) {
  FP8SERVE_SKIP_UNLESS_SM90_WGMMA();
  // Block scales (each chunk's scale block) and per-channel scales (column scales read in the
  // epilogue, where the last tile's columns past n must read nothing)
  for (const ScaleGranularity g : {ScaleGranularity::kBlock128, ScaleGranularity::kPerChannel}) {
    const GemmCase c{129, 600, 640, Fp8Format::kE4M3, g, true, true, 8};
    const Problem p = MakeProblem(c, SeedOf(c) + 29);
    DeviceOperands ops;
    FP8SERVE_ASSERT_OK(Upload(p, &ops));
    const GemmShape shape{c.m, p.w.n_pad, p.w.k_pad, c.format, GemmOutput::kBF16};
    absl::StatusOr<GemmConfig> wide = SelectSm90WideTileConfig(shape, traits_);
    ASSERT_TRUE(wide.ok()) << wide.status();
    absl::StatusOr<GemmConfig> mc = WithSm90Cluster(*wide, shape, traits_, 2, 1);
    ASSERT_TRUE(mc.ok()) << mc.status();
    GemmConfig ordered = *mc;
    ordered.ordered_consumers = true;
    for (const GemmConfig& config : {*wide, *mc, ordered}) {
      for (const GemmOutput out : {GemmOutput::kBF16, GemmOutput::kF32}) {
        absl::StatusOr<GemmRun> run = RunGemm(p, ops, out, config, stream_);
        ASSERT_TRUE(run.ok()) << DescribeGemmConfig(config) << ": " << run.status();
        const CheckResult cr = CheckOutput(p, out, *run);
        EXPECT_EQ(cr.failures, 0) << CaseName(c) << " " << DescribeGemmConfig(config) << " " << GemmOutputName(out)
                                  << cr.first;
      }
    }
  }
}

// The 128-wide tile's main-loop variants (Sm90MainLoop) under compute-sanitizer: split-K over 2 x 3
// tiles of 64 rows (the cross-bank variants' swapped workspace pairs) and a one-CTA walk over 128-row
// tiles with a 2x1 cluster (one accumulator, consumers holding one stage).
TEST_F(Fp8GemmGpuSmoke, Sm90MainLoopVariants) {
  FP8SERVE_SKIP_UNLESS_SM90_WGMMA();
  const GemmCase c{100, 384, 1280, Fp8Format::kE4M3, ScaleGranularity::kBlock128, true, true, 0};
  const Problem p = MakeProblem(c, SeedOf(c) + 31);
  DeviceOperands ops;
  FP8SERVE_ASSERT_OK(Upload(p, &ops));
  const GemmConfig split = ForcedSm90Config(64, 3, 5, 1, 3);
  GemmConfig clustered = ForcedSm90Config(128, 3, 2, 1, 1);
  clustered.cluster_m = 2;
  DeviceBuffer workspace;
  for (GemmConfig config : {split, clustered}) {
    for (const Sm90MainLoop loop : kSm90OptInMainLoops) {
      config.main_loop = loop;
      absl::StatusOr<GemmRun> run =
          RunGemm(p, ops, GemmOutput::kBF16, config, stream_, Launcher::kDispatch, &workspace);
      ASSERT_TRUE(run.ok()) << DescribeGemmConfig(config) << ": " << run.status();
      const CheckResult cr = CheckOutput(p, GemmOutput::kBF16, *run);
      EXPECT_EQ(cr.failures, 0) << DescribeGemmConfig(config) << cr.first;
    }
  }
}

// The wgmma pipeline's bookkeeping, from the simplest case up: one 128-K group and one tile (the
// descriptors, the swizzle and the k32 steps and nothing else), then configs forced to exercise the
// persistent loop: one or three CTAs walking many tiles, stage counts that do not divide the group
// count (phases flip mid-tile and carry across tiles), and grouped rasterization. Rows past m come
// from TMA's zero fill in every case.
class Fp8GemmGpuSm90Pipeline : public GpuFixture<::testing::Test> {};

TEST_F(Fp8GemmGpuSm90Pipeline, PhasesCarryAcrossTilesAndStages) {
  FP8SERVE_SKIP_UNLESS_SM90_WGMMA();
  struct Forced {
    GemmCase c;
    int block_m, grid, stages, raster_group;
  };
  const Forced cases[] = {
      {{64, 128, 128, Fp8Format::kE4M3, ScaleGranularity::kPerTensor, false, false, 0}, 64, 1, 2, 1},
      {{63, 128, 640, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, false, true, 0}, 64, 1, 3, 1},
      {{129, 384, 640, Fp8Format::kE5M2, ScaleGranularity::kBlock128, true, true, 0}, 128, 1, 3, 1},
      {{300, 512, 640, Fp8Format::kE4M3, ScaleGranularity::kBlock128, true, true, 0}, 64, 3, 3, 2},
      {{300, 512, 896, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, false, true, 0}, 128, 3, 4, 2},
  };
  for (const Forced& f : cases) {
    const Problem p = MakeProblem(f.c, SeedOf(f.c) + 7);
    DeviceOperands ops;
    FP8SERVE_ASSERT_OK(Upload(p, &ops));
    // Each config also with paired loads (3 stages or more; odd group counts end on a single one)
    for (int pass = 0; pass < 2 * static_cast<int>(std::size(kOutputs)); ++pass) {
      const GemmOutput out = kOutputs[pass / 2];
      const bool pair = pass % 2 == 1;
      if (pair && f.stages < 3) continue;
      const GemmConfig config = ForcedSm90Config(f.block_m, f.stages, f.grid, f.raster_group, 1, pair);
      absl::StatusOr<GemmRun> run = RunGemm(p, ops, out, config, stream_);
      ASSERT_TRUE(run.ok()) << CaseName(f.c) << " [" << DescribeGemmConfig(config) << "]: " << run.status();
      const CheckResult cr = CheckOutput(p, out, *run);
      std::printf("%-44s sm90 forced  %-4s failures %ld  [%s]\n", CaseName(f.c).c_str(), GemmOutputName(out),
                  cr.failures, DescribeGemmConfig(config).c_str());
      EXPECT_EQ(cr.failures, 0) << CaseName(f.c) << " " << GemmOutputName(out) << " [" << DescribeGemmConfig(config)
                                << "]" << cr.first;
    }
  }
}

// Split-K in the wgmma kernel, forced: split counts that do not divide the group count (so splits
// own different numbers of groups, down to one), M tails (rows past m are neither stored nor
// summed), persistent grids smaller than the (tile, split) units (one CTA walks several splits,
// sometimes of the same tile), and every output, E4M3 requantized after the reduction included.
// Each config runs twice on one workspace: the bits must match (the reduction adds the splits in
// split order, whichever arrives last) and the counters must be back at zero for the second run.
TEST_F(Fp8GemmGpuSm90Pipeline, SplitKReducesInSplitOrder) {
  FP8SERVE_SKIP_UNLESS_SM90_WGMMA();
  struct Forced {
    GemmCase c;
    int block_m, k_splits, grid, stages;
  };
  const Forced cases[] = {
      // 7 groups in 2 splits (3 + 4), one unit per CTA
      {{1, 256, 784, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, true, true, 0}, 64, 2, 4, 4},
      // 10 groups in 3 splits, 18 units on 5 CTAs
      {{65, 384, 1280, Fp8Format::kE4M3, ScaleGranularity::kBlock128, false, true, 0}, 64, 3, 5, 3},
      // 13 groups in 7 splits (1 or 2 groups each), two consumer warpgroups, 28 units on 11 CTAs
      {{130, 256, 1664, Fp8Format::kE5M2, ScaleGranularity::kPerTensor, true, true, 0}, 128, 7, 11, 4},
      // 16 groups in 3 splits, N tail and strided output rows, one unit per CTA
      {{130, 200, 2048, Fp8Format::kE5M2, ScaleGranularity::kBlock128, false, true, 16}, 64, 3, 18, 2},
      // one tile: 128 groups in 7 splits of 18 or 19
      {{1, 128, 16384, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, false, false, 0}, 64, 7, 7, 8},
      // one CTA walks every split of every tile in turn
      {{65, 256, 896, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, true, true, 0}, 128, 3, 1, 3},
  };
  for (const Forced& f : cases) {
    const Problem p = MakeProblem(f.c, SeedOf(f.c) + 11);
    DeviceOperands ops;
    FP8SERVE_ASSERT_OK(Upload(p, &ops));
    DeviceBuffer workspace;
    for (int pass = 0; pass < 2 * static_cast<int>(std::size(kOutputs)); ++pass) {
      const GemmOutput out = kOutputs[pass / 2];
      const bool pair = pass % 2 == 1;  // paired loads too (3 stages or more)
      if (pair && f.stages < 3) continue;
      const GemmConfig config = ForcedSm90Config(f.block_m, f.stages, f.grid, 2, f.k_splits, pair);
      absl::StatusOr<GemmRun> first = RunGemm(p, ops, out, config, stream_, Launcher::kDispatch, &workspace);
      ASSERT_TRUE(first.ok()) << CaseName(f.c) << " [" << DescribeGemmConfig(config) << "]: " << first.status();
      absl::StatusOr<GemmRun> second = RunGemm(p, ops, out, config, stream_, Launcher::kDispatch, &workspace);
      ASSERT_TRUE(second.ok()) << CaseName(f.c) << " [" << DescribeGemmConfig(config) << "]: " << second.status();
      const bool same = first->d == second->d && first->d_scales == second->d_scales;
      const CheckResult cr = CheckOutput(p, out, *first), cr2 = CheckOutput(p, out, *second);
      std::printf("%-44s sm90 split-K %-4s failures %ld/%ld  deterministic: %s  [%s]\n", CaseName(f.c).c_str(),
                  GemmOutputName(out), cr.failures, cr2.failures, same ? "yes" : "NO", DescribeGemmConfig(config).c_str());
      EXPECT_EQ(cr.failures, 0) << CaseName(f.c) << " " << GemmOutputName(out) << " [" << DescribeGemmConfig(config)
                                << "]" << cr.first;
      EXPECT_EQ(cr2.failures, 0) << CaseName(f.c) << " " << GemmOutputName(out) << " second launch" << cr2.first;
      EXPECT_TRUE(same) << CaseName(f.c) << " " << GemmOutputName(out) << " [" << DescribeGemmConfig(config)
                        << "]: two launches differ";
    }
  }
  std::fflush(stdout);
}

// Thread-block clusters with TMA multicast, forced: each cluster shape (2x1 shares B tiles, 1x2
// shares A tiles, 2x2 both) on tiles_m that the cluster does not divide (the CTA below the matrix
// loads, computes and stores nothing), M tails, one cluster walking every cluster tile (phases
// carry across units while other CTAs keep multicasting into this one), stage counts that do not
// divide the group count, paired loads, E5M2 weights and every output. A cluster changes which CTA
// loads which bytes, not the arithmetic of a tile: the bits must equal the unclustered launch's.
TEST_F(Fp8GemmGpuSm90Pipeline, ClustersMulticastGiveTheUnclusteredBits) {
  FP8SERVE_SKIP_UNLESS_SM90_WGMMA();
  struct Forced {
    GemmCase c;
    int block_m, stages, clusters;  // clusters: the grid in whole clusters
  };
  const Forced cases[] = {
      // one M-tile: with cluster_m 2 half of every cluster is below the matrix
      {{64, 256, 256, Fp8Format::kE4M3, ScaleGranularity::kPerTensor, false, false, 0}, 64, 2, 1},
      // 3 x 4 tiles of 64 rows, one cluster walks them all; 5 groups on 3 stages
      {{129, 512, 640, Fp8Format::kE5M2, ScaleGranularity::kBlock128, true, true, 0}, 64, 3, 1},
      // 3 x 2 tiles of 128 rows, M tail, strided output rows; 7 groups on 4 stages, 3 clusters
      {{300, 256, 896, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, false, true, 16}, 128, 4, 3},
      // 8 x 8 tiles, 32 groups on 6 stages, 5 clusters (uneven units per cluster)
      {{1000, 1024, 4096, Fp8Format::kE4M3, ScaleGranularity::kBlock128, true, true, 0}, 128, 6, 5},
  };
  for (const Forced& f : cases) {
    const Problem p = MakeProblem(f.c, SeedOf(f.c) + 13);
    DeviceOperands ops;
    FP8SERVE_ASSERT_OK(Upload(p, &ops));
    for (const GemmOutput out : kOutputs) {
      const GemmConfig plain = ForcedSm90Config(f.block_m, f.stages, 1, 2, 1);
      absl::StatusOr<GemmRun> want = RunGemm(p, ops, out, plain, stream_);
      ASSERT_TRUE(want.ok()) << CaseName(f.c) << " [" << DescribeGemmConfig(plain) << "]: " << want.status();
      for (const auto& [cm, cn] : {std::pair{2, 1}, std::pair{1, 2}, std::pair{2, 2}}) {
        if ((p.w.n_pad / kSm90BlockN) % cn != 0) continue;
        for (const bool pair : {false, true}) {
          if (pair && f.stages < 3) continue;
          GemmConfig config = ForcedSm90Config(f.block_m, f.stages, f.clusters * cm * cn, 2, 1, pair);
          config.cluster_m = cm;
          config.cluster_n = cn;
          absl::StatusOr<GemmRun> run = RunGemm(p, ops, out, config, stream_);
          ASSERT_TRUE(run.ok()) << CaseName(f.c) << " [" << DescribeGemmConfig(config) << "]: " << run.status();
          const CheckResult cr = CheckOutput(p, out, *run);
          const bool same = run->d == want->d && run->d_scales == want->d_scales;
          std::printf("%-44s sm90 cluster %-4s failures %ld  same bits as 1x1: %s  [%s]\n", CaseName(f.c).c_str(),
                      GemmOutputName(out), cr.failures, same ? "yes" : "NO", DescribeGemmConfig(config).c_str());
          EXPECT_EQ(cr.failures, 0) << CaseName(f.c) << " " << GemmOutputName(out) << " ["
                                    << DescribeGemmConfig(config) << "]" << cr.first;
          EXPECT_TRUE(same) << CaseName(f.c) << " " << GemmOutputName(out) << " [" << DescribeGemmConfig(config)
                            << "]: differs from the unclustered launch";
        }
      }
    }
  }
  std::fflush(stdout);
}

// Weights in the tiled streaming layout (gemm_config.h): the device re-layout equals the host's
// TileWeights128 byte for byte, and the wgmma kernel reading tiled B gives the bits it gives on
// row-major B, under the heuristic's config (split-K for the long-K case), forced pipelines with
// paired loads, and clusters (where each CTA loads part of a 16 KB block). The sm89 kernel refuses it.
TEST_F(Fp8GemmGpuSm90Pipeline, TiledWeightsGiveTheRowMajorBits) {
  FP8SERVE_SKIP_UNLESS_SM90_WGMMA();
  const GemmCase cases[] = {
      {7, 256, 16384, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, false, true, 0},
      {129, 512, 640, Fp8Format::kE5M2, ScaleGranularity::kBlock128, true, true, 0},
      {300, 200, 896, Fp8Format::kE4M3, ScaleGranularity::kBlock128, false, true, 16},
      {1000, 1024, 4096, Fp8Format::kE4M3, ScaleGranularity::kPerTensor, true, true, 0},
  };
  for (const GemmCase& c : cases) {
    const Problem p = MakeProblem(c, SeedOf(c) + 19);
    DeviceOperands ops;
    FP8SERVE_ASSERT_OK(Upload(p, &ops));
    FP8SERVE_ASSERT_OK(TileOnDevice(p, &ops, stream_));
    std::vector<uint8_t> want(p.w.w.size()), got;
    FP8SERVE_ASSERT_OK(TileWeights128(p.w.w.data(), p.w.n_pad, p.w.k_pad, want.data()));
    ASSERT_NE(want, p.w.w) << CaseName(c) << ": tiled and row-major must differ for the test to mean anything";
    FP8SERVE_ASSERT_OK(ops.b_tiled.Download(&got));
    ASSERT_EQ(got, want) << CaseName(c) << ": the device re-layout differs from TileWeights128";

    const GemmShape shape{c.m, p.w.n_pad, p.w.k_pad, c.format, GemmOutput::kF32};
    absl::StatusOr<GemmConfig> base = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, shape, traits_);
    ASSERT_TRUE(base.ok()) << base.status();
    absl::StatusOr<GemmConfig> mc = WithSm90Cluster(ForcedSm90Config(128, 4, 2, 2, 1), shape, traits_, 2, 1);
    ASSERT_TRUE(mc.ok()) << mc.status();
    const std::vector<GemmConfig> configs = {*base, ForcedSm90Config(64, 3, 3, 2, 1, true), *mc};
    for (const GemmOutput out : kOutputs) {
      for (const GemmConfig& config : configs) {
        ops.b_layout = WeightLayout::kRowMajor;
        DeviceBuffer workspace;
        absl::StatusOr<GemmRun> row_major = RunGemm(p, ops, out, config, stream_, Launcher::kDispatch, &workspace);
        ASSERT_TRUE(row_major.ok()) << CaseName(c) << " [" << DescribeGemmConfig(config) << "]: " << row_major.status();
        ops.b_layout = WeightLayout::kTiled128;
        absl::StatusOr<GemmRun> tiled = RunGemm(p, ops, out, config, stream_, Launcher::kDispatch, &workspace);
        ASSERT_TRUE(tiled.ok()) << CaseName(c) << " [" << DescribeGemmConfig(config) << "]: " << tiled.status();
        const CheckResult cr = CheckOutput(p, out, *tiled);
        const bool same = tiled->d == row_major->d && tiled->d_scales == row_major->d_scales;
        std::printf("%-44s sm90 tiled B %-4s failures %ld  same bits as row-major: %s  [%s]\n", CaseName(c).c_str(),
                    GemmOutputName(out), cr.failures, same ? "yes" : "NO", DescribeGemmConfig(config).c_str());
        EXPECT_EQ(cr.failures, 0) << CaseName(c) << " " << GemmOutputName(out) << " [" << DescribeGemmConfig(config)
                                  << "]" << cr.first;
        EXPECT_TRUE(same) << CaseName(c) << " " << GemmOutputName(out) << " [" << DescribeGemmConfig(config)
                          << "]: tiled B differs from row-major B";
      }
    }
    // The mma.sync kernel reads row-major weights only
    absl::StatusOr<GemmConfig> sm89 = SelectGemmConfigFor(GemmKernel::kSm89MmaSync, shape, traits_);
    ASSERT_TRUE(sm89.ok()) << sm89.status();
    ops.b_layout = WeightLayout::kTiled128;
    absl::StatusOr<GemmRun> refused = RunGemm(p, ops, GemmOutput::kF32, *sm89, stream_);
    ExpectRefused(refused, "row-major");
  }
  std::fflush(stdout);
}

// The wide tile (128 x 192, WithSm90BlockN), forced: N not a multiple of 192 (the last tile reaches
// past n_pad, its extra columns read TMA's zeros and no scale or bias), tiles that start mid-way
// through a 128-column scale block (odd N-tiles: every chunk must take its own block's scale; the
// block-scaled cases have different scales per block), K tails, a long K (many promotions), M
// tails, one CTA walking every tile (phases carrying across tiles on 3 stages), strided output rows,
// 2x1 / 1x2 / 2x2 clusters, BF16 and FP32 output. Each element's arithmetic is the 128-wide tile's
// (same products, same order), so the bits must equal the 128-wide launch's.
TEST_F(Fp8GemmGpuSm90Pipeline, WideTilesGiveThe128WideBits) {
  FP8SERVE_SKIP_UNLESS_SM90_WGMMA();
  struct Forced {
    GemmCase c;
    int stages, grid;  // for the 128-wide reference launch and the first wide launch
  };
  const Forced cases[] = {
      // one row; 2 wide tiles over n_pad 256 (the second mostly past it); K tail
      {{1, 200, 300, Fp8Format::kE5M2, ScaleGranularity::kBlock128, true, true, 16}, 3, 2},
      // 2 x 4 wide tiles (odd tiles start at 64 mod 128); one CTA walks them all
      {{129, 640, 896, Fp8Format::kE4M3, ScaleGranularity::kBlock128, true, true, 0}, 3, 1},
      // 3 x 6 wide tiles over n_pad 1024, per-channel scales, 32 groups
      {{300, 1000, 4096, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, false, true, 0}, 4, 5},
      // 128 groups: promotion at every one of them, per-tensor scales
      {{257, 384, 16384, Fp8Format::kE4M3, ScaleGranularity::kPerTensor, true, false, 0}, 4, 3},
  };
  for (const Forced& f : cases) {
    const Problem p = MakeProblem(f.c, SeedOf(f.c) + 23);
    DeviceOperands ops;
    FP8SERVE_ASSERT_OK(Upload(p, &ops));
    for (const GemmOutput out : {GemmOutput::kF32, GemmOutput::kBF16}) {
      const GemmShape shape{f.c.m, p.w.n_pad, p.w.k_pad, f.c.format, out};
      const GemmConfig narrow = ForcedSm90Config(128, f.stages, f.grid, 2, 1);
      absl::StatusOr<GemmRun> want = RunGemm(p, ops, out, narrow, stream_);
      ASSERT_TRUE(want.ok()) << CaseName(f.c) << " [" << DescribeGemmConfig(narrow) << "]: " << want.status();
      absl::StatusOr<GemmConfig> wide = WithSm90BlockN(narrow, shape, traits_, kSm90WideBlockN);
      ASSERT_TRUE(wide.ok()) << wide.status();
      std::vector<GemmConfig> configs;
      GemmConfig forced = *wide;  // the narrow launch's grid and a 3-stage pipeline
      forced.grid = std::min(f.grid, wide->grid);
      forced.stages = 3;
      forced.smem_bytes = Sm90SmemBytes(128, kSm90WideBlockN, 3);
      configs.push_back(forced);
      configs.push_back(*wide);
      GemmConfig paired = *wide;  // two groups' loads back to back (consumers hold one stage here)
      paired.pair_loads = true;
      configs.push_back(paired);
      for (const auto& [cm, cn] : {std::pair{2, 1}, std::pair{1, 2}, std::pair{2, 2}}) {
        if (Sm90TilesN(p.w.n_pad, kSm90WideBlockN) % cn != 0) continue;
        absl::StatusOr<GemmConfig> mc = WithSm90Cluster(*wide, shape, traits_, cm, cn);
        ASSERT_TRUE(mc.ok()) << mc.status();
        configs.push_back(*mc);
      }
      // Each also with ordered consumers (the two warpgroups issue in turn), and, where its instance
      // exists (E4M3 weights, BF16 output), the +yield loop (its SASS edited by ffma_yield.py
      // where gpu_check.sh ran it)
      for (size_t i = 0, plain_configs = configs.size(); i < plain_configs; ++i) {
        GemmConfig ordered = configs[i];
        ordered.ordered_consumers = true;
        configs.push_back(ordered);
        if (f.c.format == Fp8Format::kE4M3 && out == GemmOutput::kBF16) {
          GemmConfig yield = configs[i];
          yield.main_loop = Sm90MainLoop::kYieldFfma;
          configs.push_back(yield);
        }
      }
      for (const GemmConfig& config : configs) {
        absl::StatusOr<GemmRun> run = RunGemm(p, ops, out, config, stream_);
        ASSERT_TRUE(run.ok()) << CaseName(f.c) << " [" << DescribeGemmConfig(config) << "]: " << run.status();
        const CheckResult cr = CheckOutput(p, out, *run);
        const bool same = run->d == want->d;
        const std::string rel = std::isnan(cr.max_rel_l1) ? "-" : absl::StrFormat("%.3e", cr.max_rel_l1);
        std::printf("%-44s sm90 wide    %-4s max|d|/L1 %9s  failures %ld  same bits as 128-wide: %s  [%s]\n",
                    CaseName(f.c).c_str(), GemmOutputName(out), rel.c_str(), cr.failures, same ? "yes" : "NO",
                    DescribeGemmConfig(config).c_str());
        EXPECT_EQ(cr.failures, 0) << CaseName(f.c) << " " << GemmOutputName(out) << " ["
                                  << DescribeGemmConfig(config) << "]" << cr.first;
        EXPECT_TRUE(same) << CaseName(f.c) << " " << GemmOutputName(out) << " [" << DescribeGemmConfig(config)
                          << "]: differs from the 128-wide launch";
      }
    }
  }
  std::fflush(stdout);
}

// The wgmma launcher refuses wide-tile configs it has no instance for, before any launch: E4M3
// output (the tile straddles 1x128 groups), 64-row tiles, split-K, tiled B, other widths.
TEST_F(Fp8GemmGpuSm90Pipeline, WideTileConfigsAreChecked) {
  if (!IsSm90()) GTEST_SKIP() << "needs compute capability 9.0";
  const GemmCase c{65, 384, 512, Fp8Format::kE4M3, ScaleGranularity::kBlock128, false, true, 0};
  const Problem p = MakeProblem(c, SeedOf(c));
  DeviceOperands ops;
  FP8SERVE_ASSERT_OK(Upload(p, &ops));
  FP8SERVE_ASSERT_OK(TileOnDevice(p, &ops, stream_));
  const GemmShape shape{c.m, p.w.n_pad, p.w.k_pad, c.format, GemmOutput::kBF16};
  absl::StatusOr<GemmConfig> wide = WithSm90BlockN(ForcedSm90Config(128, 3, 2, 1, 1), shape, traits_, kSm90WideBlockN);
  ASSERT_TRUE(wide.ok()) << wide.status();
  struct Bad {
    GemmOutput out;
    int block_m, block_n, k_splits;
    WeightLayout layout;
    const char* says;
  };
  for (const Bad& b : {Bad{GemmOutput::kE4M3, 128, kSm90WideBlockN, 1, WeightLayout::kRowMajor, "E4M3"},
                       Bad{GemmOutput::kBF16, 64, kSm90WideBlockN, 1, WeightLayout::kRowMajor, "block_m 128"},
                       Bad{GemmOutput::kBF16, 128, kSm90WideBlockN, 2, WeightLayout::kRowMajor, "split"},
                       Bad{GemmOutput::kF32, 128, kSm90WideBlockN, 1, WeightLayout::kTiled128, "row-major"},
                       Bad{GemmOutput::kF32, 128, 256, 1, WeightLayout::kRowMajor, "block_n must be"}}) {
    GemmConfig config = *wide;
    config.block_m = b.block_m;
    config.block_n = b.block_n;
    config.k_splits = b.k_splits;
    ops.b_layout = b.layout;
    absl::StatusOr<GemmRun> run = RunGemm(p, ops, b.out, config, stream_);
    ExpectRefused(run, b.says, b.says);
  }
  // Ordered consumers are the wide tile's
  GemmConfig ordered_narrow = ForcedSm90Config(128, 3, 2, 1, 1);
  ordered_narrow.ordered_consumers = true;
  absl::StatusOr<GemmRun> unordered = RunGemm(p, ops, GemmOutput::kBF16, ordered_narrow, stream_);
  ExpectRefused(unordered, "ordered consumers");
  // Shared memory sized for the 128-wide tile's stages is too little for the wide one's
  GemmConfig small = *wide;
  small.smem_bytes = Sm90SmemBytes(128, kSm90BlockN, small.stages);
  ops.b_layout = WeightLayout::kRowMajor;
  absl::StatusOr<GemmRun> cramped = RunGemm(p, ops, GemmOutput::kBF16, small, stream_);
  ExpectRefused(cramped, "smem_bytes");
  // The no-promotion test variant has 128-wide tiles only
  ops.b_layout = WeightLayout::kRowMajor;
  absl::StatusOr<GemmRun> unpromoted = RunGemm(p, ops, GemmOutput::kF32, *wide, stream_, Launcher::kNoPromotion);
  ExpectRefused(unpromoted, "");
}

// The 128-wide tile's main-loop variants (Sm90MainLoop: split-K pairs swapped so the promotion's
// registers change banks, one accumulator, both, and the default loop with its promotion FFMAs'
// scheduling flags edited in the SASS by tools/device/ffma_yield.py, where gpu_check.sh has run it
// on the library) give the default loop's bits: the same products,
// summed in the same order. Forced over what the variants touch: split-K (the swapped workspace
// pairs, read back in split order; odd split counts, one CTA walking several splits), both BLOCK_Ms,
// M and N tails, one CTA walking every tile (one-accumulator consumers hold one stage, so phases
// carry differently), paired loads and a 2x1 cluster. Their instances take E4M3 weights and BF16
// output; anything else is refused before a launch.
TEST_F(Fp8GemmGpuSm90Pipeline, MainLoopVariantsGiveTheDefaultBits) {
  FP8SERVE_SKIP_UNLESS_SM90_WGMMA();
  struct Forced {
    GemmCase c;
    int block_m, k_splits, grid, stages;
    bool pair;
    int cluster_m;
  };
  const Forced cases[] = {
      // 7 groups in 2 splits, one row
      {{1, 256, 784, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, true, true, 0}, 64, 2, 4, 4, false, 1},
      // 13 groups in 7 splits on 11 CTAs, two consumer warpgroups, N tail, strided output rows
      {{130, 200, 1664, Fp8Format::kE4M3, ScaleGranularity::kBlock128, true, true, 16}, 128, 7, 11, 4, true, 1},
      // one CTA walks every split of every tile
      {{65, 256, 896, Fp8Format::kE4M3, ScaleGranularity::kPerTensor, false, true, 0}, 128, 3, 1, 3, false, 1},
      // no split: 3 x 4 tiles on one CTA, 5 groups on 3 stages, paired loads
      {{300, 512, 640, Fp8Format::kE4M3, ScaleGranularity::kBlock128, true, true, 0}, 128, 1, 1, 3, true, 1},
      // 128 groups of promotion, 64-row tiles on 5 CTAs
      {{257, 384, 16384, Fp8Format::kE4M3, ScaleGranularity::kPerTensor, true, false, 0}, 64, 1, 5, 4, false, 1},
      // a 2x1 cluster (tiles_m 3: one CTA of the last cluster below the matrix)
      {{300, 256, 896, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, false, true, 0}, 128, 1, 4, 4, false, 2},
  };
  for (const Forced& f : cases) {
    const Problem p = MakeProblem(f.c, SeedOf(f.c) + 29);
    DeviceOperands ops;
    FP8SERVE_ASSERT_OK(Upload(p, &ops));
    DeviceBuffer workspace;
    GemmConfig base = ForcedSm90Config(f.block_m, f.stages, f.grid, 2, f.k_splits, f.pair);
    base.cluster_m = f.cluster_m;
    absl::StatusOr<GemmRun> want =
        RunGemm(p, ops, GemmOutput::kBF16, base, stream_, Launcher::kDispatch, &workspace);
    ASSERT_TRUE(want.ok()) << CaseName(f.c) << " [" << DescribeGemmConfig(base) << "]: " << want.status();
    for (const Sm90MainLoop loop : kSm90OptInMainLoops) {
      GemmConfig config = base;
      config.main_loop = loop;
      // Twice on one workspace: the split-K counters must be back at zero after the first
      for (int launch = 0; launch < 2; ++launch) {
        absl::StatusOr<GemmRun> run =
            RunGemm(p, ops, GemmOutput::kBF16, config, stream_, Launcher::kDispatch, &workspace);
        ASSERT_TRUE(run.ok()) << CaseName(f.c) << " [" << DescribeGemmConfig(config) << "]: " << run.status();
        const CheckResult cr = CheckOutput(p, GemmOutput::kBF16, *run);
        const bool same = run->d == want->d;
        std::printf("%-44s sm90 loop    bf16 failures %ld  same bits as the default loop: %s  [%s]\n",
                    CaseName(f.c).c_str(), cr.failures, same ? "yes" : "NO", DescribeGemmConfig(config).c_str());
        EXPECT_EQ(cr.failures, 0) << CaseName(f.c) << " [" << DescribeGemmConfig(config) << "]" << cr.first;
        EXPECT_TRUE(same) << CaseName(f.c) << " [" << DescribeGemmConfig(config) << "] launch " << launch
                          << ": differs from the default loop";
      }
    }
  }
  // Refused: instances exist for E4M3 weights and BF16 output on the 128-wide tile only
  const GemmCase c{65, 384, 512, Fp8Format::kE5M2, ScaleGranularity::kBlock128, false, true, 0};
  const Problem e5 = MakeProblem(c, SeedOf(c));
  DeviceOperands ops;
  FP8SERVE_ASSERT_OK(Upload(e5, &ops));
  GemmConfig config = ForcedSm90Config(64, 3, 2, 1, 1);
  config.main_loop = Sm90MainLoop::kCrossBank;
  for (const GemmOutput out : kOutputs) {
    absl::StatusOr<GemmRun> run = RunGemm(e5, ops, out, config, stream_);
    ExpectRefused(run, "E4M3 weights and BF16 output", GemmOutputName(out));
  }
  const GemmCase c4{65, 384, 512, Fp8Format::kE4M3, ScaleGranularity::kBlock128, false, true, 0};
  const Problem e4 = MakeProblem(c4, SeedOf(c4));
  DeviceOperands ops4;
  FP8SERVE_ASSERT_OK(Upload(e4, &ops4));
  for (const GemmOutput out : {GemmOutput::kE4M3, GemmOutput::kF32}) {
    absl::StatusOr<GemmRun> run = RunGemm(e4, ops4, out, config, stream_);
    ExpectRefused(run, "", GemmOutputName(out));
  }
  const GemmShape shape{c4.m, e4.w.n_pad, e4.w.k_pad, c4.format, GemmOutput::kBF16};
  absl::StatusOr<GemmConfig> wide = WithSm90BlockN(ForcedSm90Config(128, 3, 2, 1, 1), shape, traits_, kSm90WideBlockN);
  ASSERT_TRUE(wide.ok()) << wide.status();
  wide->main_loop = Sm90MainLoop::kOneAccumulator;
  absl::StatusOr<GemmRun> run = RunGemm(e4, ops4, GemmOutput::kBF16, *wide, stream_);
  ExpectRefused(run, "128-column tile");
  std::fflush(stdout);
}

// The wgmma launcher refuses split-K configs it cannot run, before any launch.
TEST_F(Fp8GemmGpuSm90Pipeline, SplitKConfigsAreChecked) {
  if (!IsSm90()) GTEST_SKIP() << "needs compute capability 9.0";
  const GemmCase c{7, 256, 512, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, false, true, 0};
  const Problem p = MakeProblem(c, SeedOf(c));
  DeviceOperands ops;
  FP8SERVE_ASSERT_OK(Upload(p, &ops));
  const GemmShape shape{c.m, p.w.n_pad, p.w.k_pad, c.format, GemmOutput::kF32};
  absl::StatusOr<GemmConfig> base = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, shape, traits_);
  ASSERT_TRUE(base.ok()) << base.status();
  GemmConfig too_many = *base;
  too_many.k_splits = p.w.k_pad / kGemmBlockK + 1;  // a split without a group
  absl::StatusOr<GemmRun> run = RunGemm(p, ops, GemmOutput::kF32, too_many, stream_);
  ExpectRefused(run, "k_splits");
  GemmConfig split = *base;
  split.k_splits = 2;
  absl::StatusOr<GemmRun> unpromoted = RunGemm(p, ops, GemmOutput::kF32, split, stream_, Launcher::kNoPromotion);
  ExpectRefused(unpromoted, "");
  // Paired loads with two stages would deadlock (a consumer holds both): refused
  GemmConfig paired = ForcedSm90Config(64, 2, 1, 1, 1, true);
  absl::StatusOr<GemmRun> two = RunGemm(p, ops, GemmOutput::kF32, paired, stream_);
  ExpectRefused(two, "paired");
  // Clusters: not with split-K, only whole clusters, cluster_n dividing the N-tiles (this problem has
  // 2, `three` has 3), dimensions 1..2
  const GemmCase three{7, 384, 512, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, false, true, 0};
  const Problem p3 = MakeProblem(three, SeedOf(three));
  DeviceOperands ops3;
  FP8SERVE_ASSERT_OK(Upload(p3, &ops3));
  struct BadCluster {
    int cluster_m, cluster_n, grid, k_splits;
    bool three_tiles;
    const char* says;
  };
  for (const BadCluster& b :
       {BadCluster{2, 1, 2, 2, false, "split-K"}, BadCluster{2, 1, 3, 1, false, "whole clusters"},
        BadCluster{1, 2, 2, 1, true, "N-tiles"}, BadCluster{3, 1, 3, 1, false, "cluster dimensions"}}) {
    GemmConfig config = ForcedSm90Config(64, 3, b.grid, 1, b.k_splits);
    config.cluster_m = b.cluster_m;
    config.cluster_n = b.cluster_n;
    absl::StatusOr<GemmRun> refused = b.three_tiles ? RunGemm(p3, ops3, GemmOutput::kF32, config, stream_)
                                                    : RunGemm(p, ops, GemmOutput::kF32, config, stream_);
    ExpectRefused(refused, b.says, DescribeGemmConfig(config));
  }
}

// The same launch twice gives the same bits: no races, and split-K reduces in a fixed order and
// leaves its counters ready for the next launch (the workspace is shared between the two runs).
class Fp8GemmGpuDeterminism : public GpuFixture<::testing::Test> {};

TEST_F(Fp8GemmGpuDeterminism, SameLaunchSameBits) {
  for (const GemmCase& c : {GemmCase{7, 256, 16384, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, false, true, 0},
                            GemmCase{1000, 1024, 4096, Fp8Format::kE4M3, ScaleGranularity::kBlock128, true, true, 0}}) {
    const Problem p = MakeProblem(c, SeedOf(c) + 1);
    DeviceOperands ops;
    FP8SERVE_ASSERT_OK(Upload(p, &ops));
    for (GemmOutput out : {GemmOutput::kF32, GemmOutput::kE4M3}) {
      const GemmShape shape{c.m, p.w.n_pad, p.w.k_pad, c.format, out};
      for (const KernelChoice& kc : KernelChoices(shape, traits_)) {
        ASSERT_TRUE(kc.config.ok()) << kc.label << ": " << kc.config.status();
        DeviceBuffer workspace;
        absl::StatusOr<GemmRun> first = RunGemm(p, ops, out, *kc.config, stream_, Launcher::kDispatch, &workspace);
        absl::StatusOr<GemmRun> second = RunGemm(p, ops, out, *kc.config, stream_, Launcher::kDispatch, &workspace);
        ASSERT_TRUE(first.ok()) << first.status();
        ASSERT_TRUE(second.ok()) << second.status();
        const bool same = first->d == second->d && first->d_scales == second->d_scales;
        std::printf("%-44s %-13s %-4s deterministic: %s  [%s]\n", CaseName(c).c_str(), kc.label.c_str(), GemmOutputName(out),
                    same ? "yes" : "NO", DescribeGemmConfig(*kc.config).c_str());
        EXPECT_TRUE(same) << CaseName(c) << " " << kc.label << " " << GemmOutputName(out) << " ["
                          << DescribeGemmConfig(*kc.config) << "]: two launches differ";
        // The second result is also checked, so a deterministic but wrong reuse of the workspace fails too.
        const CheckResult cr = CheckOutput(p, out, *second);
        EXPECT_EQ(cr.failures, 0) << CaseName(c) << " " << kc.label << " second launch" << cr.first;
      }
    }
  }
}

// One split-K workspace serves a model's every layer and batch size (DeviceMlp shares it), so a
// launch must never find its tile counters where an earlier launch of another shape wrote partial
// sums. Larger M first: its partials cover the most bytes.
TEST_F(Fp8GemmGpuDeterminism, OneWorkspaceServesEveryShape) {
  std::vector<GemmCase> cases;
  for (int m : {64, 17, 16, 7, 1}) cases.push_back({m, 256, 784, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, true, true, 0});
  cases.push_back({3, 1000, 4096, Fp8Format::kE5M2, ScaleGranularity::kBlock128, false, true, 0});
  cases.push_back({2, 256, 784, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, true, true, 0});
  DeviceBuffer workspace;
  size_t bytes = 0;
  for (const GemmCase& c : cases) {
    const int n_pad = CeilDiv(c.n, kGemmBlockK) * kGemmBlockK, k_pad = CeilDiv(c.k, kGemmBlockK) * kGemmBlockK;
    const GemmShape shape{c.m, n_pad, k_pad, c.format, GemmOutput::kE4M3};
    absl::StatusOr<GemmConfig> config = SelectGemmConfigFor(GemmKernel::kSm89MmaSync, shape, traits_);
    ASSERT_TRUE(config.ok()) << config.status();
    bytes = std::max(bytes, GemmWorkspaceBytes(shape, *config));
  }
  ASSERT_GT(bytes, 0u) << "no case splits K: the test would not test anything";
  // Allocated and zeroed once, like DeviceMlp's.
  FP8SERVE_ASSERT_OK(workspace.Allocate(bytes));
  FP8SERVE_ASSERT_OK(workspace.Fill(0));
  for (const GemmCase& c : cases) {
    const Problem p = MakeProblem(c, SeedOf(c) + 3);
    DeviceOperands ops;
    FP8SERVE_ASSERT_OK(Upload(p, &ops));
    const GemmShape shape{c.m, p.w.n_pad, p.w.k_pad, c.format, GemmOutput::kE4M3};
    absl::StatusOr<GemmConfig> config = SelectGemmConfigFor(GemmKernel::kSm89MmaSync, shape, traits_);
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<GemmRun> run =
        RunGemm(p, ops, GemmOutput::kE4M3, *config, stream_, Launcher::kDispatch, &workspace);
    ASSERT_TRUE(run.ok()) << CaseName(c) << ": " << run.status();
    const CheckResult cr = CheckOutput(p, GemmOutput::kE4M3, *run);
    std::printf("%-44s shared workspace  failures %ld  [%s]\n", CaseName(c).c_str(), cr.failures,
                DescribeGemmConfig(*config).c_str());
    EXPECT_EQ(cr.failures, 0) << CaseName(c) << " [" << DescribeGemmConfig(*config) << "]" << cr.first;
  }
}

// The same for the wgmma kernel's split-K, with the heuristic's configs (every case splits on an
// H100/H200) and all three outputs: larger M first, then smaller ones and other N and K.
TEST_F(Fp8GemmGpuDeterminism, OneWorkspaceServesEveryShapeSm90) {
  FP8SERVE_SKIP_UNLESS_SM90_WGMMA();
  std::vector<GemmCase> cases;
  // K long enough for the heuristic to split (at least 2 x kSm90MinGroupsPerSplit groups).
  for (int m : {130, 65, 64, 17, 1}) cases.push_back({m, 256, 2100, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, true, true, 0});
  cases.push_back({3, 1000, 4096, Fp8Format::kE5M2, ScaleGranularity::kBlock128, false, true, 0});
  cases.push_back({2, 256, 2100, Fp8Format::kE4M3, ScaleGranularity::kPerChannel, true, true, 0});
  size_t bytes = 0;
  int split_cases = 0;
  for (const GemmCase& c : cases) {
    const int n_pad = CeilDiv(c.n, kGemmBlockK) * kGemmBlockK, k_pad = CeilDiv(c.k, kGemmBlockK) * kGemmBlockK;
    const GemmShape shape{c.m, n_pad, k_pad, c.format, GemmOutput::kE4M3};
    absl::StatusOr<GemmConfig> config = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, shape, traits_);
    ASSERT_TRUE(config.ok()) << config.status();
    bytes = std::max(bytes, GemmWorkspaceBytes(shape, *config));
    split_cases += config->k_splits > 1 ? 1 : 0;
  }
  ASSERT_GE(split_cases, 2) << "too few cases split K: the test would not test the shared workspace";
  // Allocated and zeroed once, like DeviceMlp's.
  DeviceBuffer workspace;
  FP8SERVE_ASSERT_OK(workspace.Allocate(bytes));
  FP8SERVE_ASSERT_OK(workspace.Fill(0));
  for (const GemmCase& c : cases) {
    const Problem p = MakeProblem(c, SeedOf(c) + 5);
    DeviceOperands ops;
    FP8SERVE_ASSERT_OK(Upload(p, &ops));
    for (GemmOutput out : kOutputs) {
      const GemmShape shape{c.m, p.w.n_pad, p.w.k_pad, c.format, out};
      absl::StatusOr<GemmConfig> config = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, shape, traits_);
      ASSERT_TRUE(config.ok()) << config.status();
      absl::StatusOr<GemmRun> run = RunGemm(p, ops, out, *config, stream_, Launcher::kDispatch, &workspace);
      ASSERT_TRUE(run.ok()) << CaseName(c) << ": " << run.status();
      const CheckResult cr = CheckOutput(p, out, *run);
      std::printf("%-44s sm90 shared workspace %-4s failures %ld  [%s]\n", CaseName(c).c_str(), GemmOutputName(out),
                  cr.failures, DescribeGemmConfig(*config).c_str());
      EXPECT_EQ(cr.failures, 0) << CaseName(c) << " " << GemmOutputName(out) << " [" << DescribeGemmConfig(*config)
                                << "]" << cr.first;
    }
  }
}

// Promotion: K = 16384 with every 1x128 group of a row at the same scale (each group holds the
// row's max |x|), per-tensor weights, and every product positive. Then the sm90 kernel without
// promotion (scales applied once, at the end) computes mathematically the same GEMM, and only the
// accumulator's precision tells the two apart. All-positive products make the truncation errors
// add up instead of cancelling: promoted every 128 of K the error stays within kGemmTol (see the
// bound in cuda_test_util.h), while one accumulator carrying all 512 MMA steps truncates a sum that
// grows to L1 each step, an expected loss of about sum_i 2^-14 (i/512) L1 ~ 2^-6 L1, 16x the bound.
class Fp8GemmGpuPromotion : public GpuFixture<::testing::Test> {};

TEST_F(Fp8GemmGpuPromotion, PromotionBoundsTheError) {
  if (!IsSm90()) {
    std::printf("*** sm90 promotion test not run: compute capability %d.%d\n", traits_.cc_major, traits_.cc_minor);
    GTEST_SKIP() << "needs compute capability 9.0";
  }
  if (!KernelSelected(GemmKernelName(GemmKernel::kSm90Wgmma))) {
    GTEST_SKIP() << "sm90_wgmma not in FP8SERVE_GEMM_KERNELS";
  }
  GemmCase c{128, 256, 16384, Fp8Format::kE4M3, ScaleGranularity::kPerTensor, false, false, 0};
  std::mt19937 rng(16384);
  std::uniform_real_distribution<float> uniform(0.25f, 1.0f);
  MlpLayer f;
  f.quantized = false;
  f.in = c.k;
  f.out = c.n;
  f.f32.resize(static_cast<size_t>(c.n) * c.k);
  for (float& w : f.f32) w = 2.0f * uniform(rng) / std::sqrt(static_cast<float>(c.k));
  Problem p;
  p.c = c;
  p.x.resize(static_cast<size_t>(c.m) * c.k);
  for (int m = 0; m < c.m; ++m) {
    const float row = m % 3 == 1 ? 1e-3f : m % 3 == 2 ? 1e3f : 1.0f;
    for (int k = 0; k < c.k; ++k) p.x[static_cast<size_t>(m) * c.k + k] = row * (k % 128 == 0 ? 1.0f : uniform(rng));
  }
  FinishProblem(f, &p);
  // The premise: one activation scale per row and one weight scale.
  const int G = p.w.k_pad / kGemmBlockK;
  for (int m = 0; m < c.m; ++m) {
    for (int g = 1; g < G; ++g) {
      ASSERT_EQ(p.a.scales[static_cast<size_t>(m) * G + g], p.a.scales[static_cast<size_t>(m) * G]) << "row " << m;
    }
  }
  DeviceOperands ops;
  FP8SERVE_ASSERT_OK(Upload(p, &ops));
  const GemmShape shape{c.m, p.w.n_pad, p.w.k_pad, c.format, GemmOutput::kF32};
  absl::StatusOr<GemmConfig> config = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, shape, traits_);
  ASSERT_TRUE(config.ok()) << config.status();
  // One split: the whole K in one accumulation chain on both sides (the variant without promotion
  // does not split, and a split would also shorten the chain that promotion has to tame).
  config->k_splits = 1;
  config->grid = std::min(config->grid, CeilDiv(c.m, config->block_m) * (p.w.n_pad / config->block_n));
  absl::StatusOr<GemmRun> promoted = RunGemm(p, ops, GemmOutput::kF32, *config, stream_, Launcher::kDispatch);
  absl::StatusOr<GemmRun> unpromoted = RunGemm(p, ops, GemmOutput::kF32, *config, stream_, Launcher::kNoPromotion);
  ASSERT_TRUE(promoted.ok()) << promoted.status();
  ASSERT_TRUE(unpromoted.ok()) << unpromoted.status();
  const CheckResult with = CheckF32(p, *promoted), without = CheckF32(p, *unpromoted);
  std::printf("promotion test K=%d [%s]: max|d|/L1 promoted %.3e (bound used %.3f), without promotion %.3e "
              "(%.1fx the promoted error, %.1fx kGemmTol)\n",
              c.k, DescribeGemmConfig(*config).c_str(), with.max_rel_l1, with.worst, without.max_rel_l1,
              without.max_rel_l1 / std::max(with.max_rel_l1, 1e-30), without.max_rel_l1 / gpu_test::kGemmTol);
  std::fflush(stdout);
  EXPECT_EQ(with.failures, 0) << "promoted kernel outside the bound:" << with.first;
  EXPECT_GT(without.max_rel_l1, gpu_test::kGemmTol)
      << "the kernel without promotion stays within the bound, so this test cannot tell promotion apart";
}

// Bad arguments are refused before anything touches a device, so this runs on every machine.
TEST(Fp8GemmArgsTest, BadArgumentsAreInvalidArgumentWithTheReason) {
  // Addresses are never dereferenced: validation comes first.
  uint8_t* const fake = reinterpret_cast<uint8_t*>(uintptr_t{4096});
  float* const fake_f = reinterpret_cast<float*>(uintptr_t{8192});
  Fp8GemmArgs good;
  good.m = 7;
  good.n = 256;
  good.k = 896;
  good.a = good.b = fake;
  good.a_scales = good.b_scales = fake_f;
  good.d = fake;
  good.d_scales = fake_f;
  good.output = GemmOutput::kE4M3;
  good.ldd = good.n_store = 256;
  ASSERT_TRUE(CheckFp8GemmArgs(good).ok()) << CheckFp8GemmArgs(good);
  struct Case {
    const char* why;
    void (*mutate)(Fp8GemmArgs&);
  };
  const Case cases[] = {
      {"empty shape", [](Fp8GemmArgs& a) { a.m = 0; }},
      {"multiples of 128", [](Fp8GemmArgs& a) { a.k = 784; }},
      {"multiples of 128", [](Fp8GemmArgs& a) { a.n = 200; }},
      {"A or its scales are null", [](Fp8GemmArgs& a) { a.a_scales = nullptr; }},
      {"B or its scales are null", [](Fp8GemmArgs& a) { a.b = nullptr; }},
      {"D is null", [](Fp8GemmArgs& a) { a.d = nullptr; }},
      {"needs d_scales", [](Fp8GemmArgs& a) { a.d_scales = nullptr; }},
      {"n_store must equal n", [](Fp8GemmArgs& a) { a.n_store = 10; }},
      {"outside [1, 256]", [](Fp8GemmArgs& a) { a.output = GemmOutput::kF32; a.n_store = 257; }},
      {"ldd 10 < n_store 12", [](Fp8GemmArgs& a) { a.output = GemmOutput::kBF16; a.n_store = 12; a.ldd = 10; }},
  };
  const DeviceTraits h100{9, 0, 132, 227 * 1024};
  for (const Case& c : cases) {
    Fp8GemmArgs a = good;
    c.mutate(a);
    const absl::Status st = CheckFp8GemmArgs(a);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.why;
    EXPECT_NE(st.message().find(c.why), std::string_view::npos) << st.message();
    // LaunchFp8Gemm refuses the same arguments with the same status, before any CUDA call.
    absl::StatusOr<GemmConfig> config = SelectGemmConfig(GemmShape{8, 256, 896}, h100);
    ASSERT_TRUE(config.ok());
    EXPECT_EQ(LaunchFp8Gemm(a, *config, nullptr), st) << c.why;
  }
  // A split-K config (the mma.sync kernel's) without its workspace.
  absl::StatusOr<GemmConfig> split = SelectGemmConfigFor(GemmKernel::kSm89MmaSync, GemmShape{1, 256, 16384}, h100);
  ASSERT_TRUE(split.ok());
  ASSERT_GT(split->k_splits, 1);
  Fp8GemmArgs a = good;
  a.m = 1;
  a.k = 16384;
  const absl::Status st = LaunchFp8Gemm(a, *split, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("workspace"), std::string_view::npos) << st.message();
}

}  // namespace
}  // namespace fp8serve::cuda
