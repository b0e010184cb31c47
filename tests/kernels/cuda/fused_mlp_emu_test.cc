// The fused MLP kernel's own code (kernels/cuda/fused_mlp.cuh), run on the CPU under the host
// emulation in tests/kernels/cuda/emu: every CTA as 256 threads, the kernel's PTX replaced by
// host functions written from the PTX ISA. The launches are the ones the real launcher plans
// (PrepareFusedLaunch), and the logits are checked against the CPU reference with the GPU test's
// bound (forward_bound.h). No GPU needed: this runs on every machine and in CI, so a change to the
// kernel's indexing, fragments, pipeline or numerics is caught before it reaches a GPU.
// It covers plain and cluster launches (2, 4 and 8 CTAs per row block: split tiles, partial sums
// and requantized tiles handed over by st.async, the folded last layer) with every MMA kind:
// mma.sync (FP8, and widened to FP16) and wgmma (A from registers, B through its 128-byte-swizzle
// descriptor); timing, and the hardware itself, need the GPU tests (fused_mlp_test.cc).
#include "tests/kernels/cuda/emu/emu_runtime.h"  // first: the kernel compiles against it

#include <cstdio>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cuda/fused_mlp.cuh"
#include "kernels/cuda/fused_mlp.h"
#include "kernels/cuda/fused_mlp_params.h"
#include "tests/kernels/cuda/cuda_test_util.h"
#include "tests/kernels/cuda/forward_bound.h"
#include "tests/kernels/cuda/fused_mlp_cases.h"

namespace fp8serve::cuda {
namespace {

using fused_test::CheckLogits;
using fused_test::CheckResult;
using fused_test::MakeMlp;
using fused_test::MlpCase;
using fused_test::ModelCases;
using fused_test::RandomInputs;
using gpu_test::BoundedForward;

// Instance kFusedInstances[kWhich] with the MMA kind kWgmma / kWiden, on the emulated GPU
template <int kWhich, bool kWgmma, bool kWiden>
void RunInstance(const FusedLaunch& launch, bool late_copies) {
  constexpr FusedInstance kInst = kFusedInstances[kWhich];
  const unsigned grid = static_cast<unsigned>(launch.plan.row_blocks * launch.plan.cluster);
  emu::LaunchOptions options;
  options.threads = kFusedNumThreads;
  options.late_copies = late_copies;
  options.mbarriers_complete_once = true;
  emu::Launch(grid, launch.plan.cluster, launch.plan.smem_bytes, options,
              [&] { fused_mlp_kernel<kInst.block_m, kInst.stages, kWgmma, kWiden>(launch.params); });
}

template <bool kWgmma, bool kWiden>
void RunInstanceOf(const FusedLaunch& launch, bool late_copies) {
  static_assert(kFusedNumInstances == 4, "one case per instance");
  switch (launch.instance) {
    case 0: return RunInstance<0, kWgmma, kWiden>(launch, late_copies);
    case 1: return RunInstance<1, kWgmma, kWiden>(launch, late_copies);
    case 2: return RunInstance<2, kWgmma, kWiden>(launch, late_copies);
    case 3: return RunInstance<3, kWgmma, kWiden>(launch, late_copies);
  }
  FAIL() << "no instance " << launch.instance;
}

void RunLaunch(const FusedLaunch& launch, bool late_copies) {
  switch (launch.plan.mma) {
    case FusedMma::kWgmma: return RunInstanceOf<true, false>(launch, late_copies);
    case FusedMma::kMmaSyncF16: return RunInstanceOf<false, true>(launch, late_copies);
    default: return RunInstanceOf<false, false>(launch, late_copies);
  }
}

// A model's padded layers on the host, and the fused arguments over them
struct HostModel {
  explicit HostModel(const MlpWeights& mlp) : mlp(mlp) {
    for (const MlpLayer& l : mlp.layers) layers.push_back(gpu_test::PadLayer(l));
  }
  FusedMlpArgs Args(const float* x, int rows, float* y) const {
    FusedMlpArgs args;
    args.m = rows;
    args.x = x;
    args.y = y;
    args.relu = mlp.activation == Activation::kRelu;
    args.num_layers = static_cast<int>(layers.size());
    for (int i = 0; i < args.num_layers; ++i) {
      const gpu_test::PaddedLayer& p = layers[i];
      const auto or_null = [](const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); };
      args.layers[i] = FusedMlpLayer{p.n,          p.k,      p.n_pad,
                                     p.k_pad,      p.w.data(), p.format,
                                     p.b_scales.data(), or_null(p.col_scales), or_null(p.bias)};
    }
    return args;
  }
  const MlpWeights& mlp;
  std::vector<gpu_test::PaddedLayer> layers;
};

struct EmuRun {
  std::vector<float> y;
  FusedPlan plan;
};

// One emulated forward of `rows` rows; y starts as NaN (a logit never written fails the check).
EmuRun Forward(const HostModel& model, const std::vector<float>& x, int rows, FusedMma mma, int block_m,
               bool late_copies, int cluster = 1, bool fold = true, std::vector<uint64_t>* trace = nullptr) {
  EmuRun run;
  run.y.assign(static_cast<size_t>(rows) * model.mlp.output_dim(), std::nanf(""));
  FusedMlpArgs args = model.Args(x.data(), rows, run.y.data());
  args.cluster_size = cluster;
  args.fold_last_layer = fold;
  args.mma = mma;
  args.block_m = block_m;
  const DeviceTraits h100;  // compute capability 9.0, 132 SMs: the widened kind is allowed
  absl::StatusOr<FusedLaunch> launch = PrepareFusedLaunch(args, h100);
  if (!launch.ok()) {
    ADD_FAILURE() << launch.status();
    return run;
  }
  run.plan = launch->plan;
  if (trace != nullptr) {  // (sized by the plan, so set after it)
    trace->assign(static_cast<size_t>(run.plan.row_blocks * run.plan.cluster) * kFusedTraceSlots, 0);
    launch->params.trace = trace->data();
  }
  RunLaunch(*launch, late_copies);
  return run;
}

struct EmuCase {
  MlpCase model;
  FusedMma mma;
};
void PrintTo(const EmuCase& c, std::ostream* os) { *os << c.model.name << " " << FusedMmaName(c.mma); }

class FusedMlpEmuTest : public ::testing::TestWithParam<EmuCase> {};

// Every model, every MMA kind: batches that fill one row block partly, exactly and over, with
// the automatic row block; then 65 rows with each row block forced, with copies landing late.
TEST_P(FusedMlpEmuTest, MatchesReference) {
  const EmuCase& c = GetParam();
  const MlpWeights mlp = MakeMlp(c.model, static_cast<uint32_t>(std::hash<std::string>{}(c.model.name)));
  const HostModel model(mlp);
  struct Shape {
    int rows, block_m;
    bool late;
  };
  for (const Shape s : {Shape{1, 0, false}, Shape{7, 0, false}, Shape{33, 0, true}, Shape{65, 32, true},
                        Shape{65, 64, false}}) {
    const std::vector<float> x = RandomInputs(s.rows, mlp.input_dim(), 11 * s.rows + 3);
    const EmuRun run = Forward(model, x, s.rows, c.mma, s.block_m, s.late);
    const CheckResult cr = CheckLogits(gpu_test::ReferenceWithBounds(mlp, x, s.rows), run.y, s.rows, mlp.output_dim());
    std::printf("%-28s %-12s batch %3d  BLOCK_M %2d stages %d  %s copies  max|d|/L1 %.3e  bound used %5.3f  %s\n",
                c.model.name.c_str(), FusedMmaName(c.mma), s.rows, run.plan.block_m, run.plan.stages,
                s.late ? "late " : "early", cr.max_rel_l1, cr.worst, cr.failures == 0 ? "ok" : "FAIL");
    EXPECT_EQ(cr.failures, 0) << c.model.name << " batch " << s.rows << " BLOCK_M " << run.plan.block_m << cr.first;
  }
}

// When the copies land (at issue, or as late as each wait allows) changes no bit: the kernel waits
// for everything it reads.
TEST(FusedMlpEmu, CopyTimingChangesNoBit) {
  const MlpCase c = ModelCases()[1];  // three layers
  const MlpWeights mlp = MakeMlp(c, 17);
  const HostModel model(mlp);
  const int rows = 20;
  const std::vector<float> x = RandomInputs(rows, mlp.input_dim(), 5);
  for (FusedMma mma : {FusedMma::kMmaSync, FusedMma::kMmaSyncF16, FusedMma::kWgmma}) {
    const EmuRun early = Forward(model, x, rows, mma, 0, false);
    const EmuRun late = Forward(model, x, rows, mma, 0, true);
    ASSERT_EQ(early.y.size(), late.y.size());
    EXPECT_EQ(0, std::memcmp(early.y.data(), late.y.data(), early.y.size() * sizeof(float))) << FusedMmaName(mma);
  }
}

// Cluster launches: every model at 2, 4 and 8 CTAs per row block (split tiles, partial sums and
// requantized tiles handed over between CTAs), the last layer folded at 2 and 8 and not at 4, the
// three MMA kinds in turn, two row blocks (the second cluster's CTAs find their rows).
class FusedMlpEmuClusterTest : public ::testing::TestWithParam<MlpCase> {};

TEST_P(FusedMlpEmuClusterTest, MatchesReference) {
  const MlpCase& c = GetParam();
  const MlpWeights mlp = MakeMlp(c, static_cast<uint32_t>(std::hash<std::string>{}(c.name)) + 1);
  const HostModel model(mlp);
  const int rows = 19;
  const std::vector<float> x = RandomInputs(rows, mlp.input_dim(), 23);
  const BoundedForward ref = gpu_test::ReferenceWithBounds(mlp, x, rows);
  for (int cluster : {2, 4, 8}) {
    const bool fold = cluster != 4;
    const FusedMma mma = cluster == 2 ? FusedMma::kMmaSync : cluster == 4 ? FusedMma::kMmaSyncF16 : FusedMma::kWgmma;
    const EmuRun run = Forward(model, x, rows, mma, 0, cluster == 8, cluster, fold);
    const CheckResult cr = CheckLogits(ref, run.y, rows, mlp.output_dim());
    std::printf("%-28s %-12s batch %3d  cluster %d%-20s  max|d|/L1 %.3e  bound used %5.3f  %s\n", c.name.c_str(),
                FusedMmaName(mma), rows, run.plan.cluster,
                run.plan.layers[mlp.layers.size() - 1].folded ? " (last layer folded)" : "", cr.max_rel_l1, cr.worst,
                cr.failures == 0 ? "ok" : "FAIL");
    EXPECT_EQ(cr.failures, 0) << c.name << " cluster " << cluster << cr.first;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, FusedMlpEmuClusterTest, ::testing::ValuesIn(ModelCases()),
                         [](const ::testing::TestParamInfo<MlpCase>& info) { return info.param.name; });

// A cluster of 8 run twice, with the copies landing early and late: the same bits.
TEST(FusedMlpEmu, ClusterCopyTimingChangesNoBit) {
  const MlpWeights mlp = MakeMlp(ModelCases()[0], 29);
  const HostModel model(mlp);
  const std::vector<float> x = RandomInputs(9, mlp.input_dim(), 31);
  const EmuRun early = Forward(model, x, 9, FusedMma::kMmaSync, 0, false, 8);
  const EmuRun late = Forward(model, x, 9, FusedMma::kMmaSync, 0, true, 8);
  ASSERT_EQ(early.y.size(), late.y.size());
  EXPECT_EQ(0, std::memcmp(early.y.data(), late.y.data(), early.y.size() * sizeof(float)));
}

// The timeline (FusedMlpArgs::trace) of a cluster launch with a split layer: every CTA's events in
// order (setup, quantized, started, each layer it works in, exit; on the CPU the clock is the
// process's CPU time, which only grows).
TEST(FusedMlpEmu, TimelineEventsComeInOrder) {
  const MlpCase c = ModelCases()[1];
  const MlpWeights mlp = MakeMlp(c, 4);
  const HostModel model(mlp);
  const int rows = 20;
  const std::vector<float> x = RandomInputs(rows, mlp.input_dim(), 41);
  std::vector<uint64_t> t;
  const EmuRun run = Forward(model, x, rows, FusedMma::kMmaSync, 0, false, 4, true, &t);
  const int ctas = static_cast<int>(run.plan.row_blocks) * run.plan.cluster;
  ASSERT_GT(ctas, 0);
  int layer_events = 0;
  for (int cta = 0; cta < ctas; ++cta) {
    const uint64_t* s = &t[static_cast<size_t>(cta) * kFusedTraceSlots];
    EXPECT_EQ(s[kFusedTraceRank], static_cast<uint64_t>(cta % run.plan.cluster)) << "CTA " << cta;
    std::vector<uint64_t> order = {s[kFusedTraceSetup], s[kFusedTraceQuantized], s[kFusedTraceStarted]};
    for (int l = 0; l < static_cast<int>(mlp.layers.size()); ++l) {
      const uint64_t* e = s + kFusedTraceLayer0 + kFusedTraceEventsPerLayer * l;
      if (e[1] == 0) continue;  // no chunk of this layer (its chunk events stay zero)
      ++layer_events;
      for (int i = 0; i < kFusedTraceEventsPerLayer; ++i) order.push_back(e[i]);
    }
    order.push_back(s[kFusedTraceExit]);
    for (size_t i = 1; i < order.size(); ++i) EXPECT_LE(order[i - 1], order[i]) << "CTA " << cta << " event " << i;
  }
  EXPECT_GE(layer_events, ctas) << "every CTA works in some layer";
}

std::vector<EmuCase> EmuCases() {
  std::vector<EmuCase> cases;
  for (const MlpCase& m : ModelCases()) {
    for (FusedMma mma : {FusedMma::kMmaSync, FusedMma::kMmaSyncF16, FusedMma::kWgmma}) cases.push_back({m, mma});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Models, FusedMlpEmuTest, ::testing::ValuesIn(EmuCases()),
                         [](const ::testing::TestParamInfo<EmuCase>& info) {
                           return absl::StrCat(info.param.model.name, "_", FusedMmaName(info.param.mma));
                         });

}  // namespace
}  // namespace fp8serve::cuda
