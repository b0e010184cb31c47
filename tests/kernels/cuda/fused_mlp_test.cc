// GPU: whole forwards against fp8serve::ReferenceForward: the fused kernel launched directly
// (fused_mlp.h), and DeviceMlp::Forward (device_mlp.h) on its fused path, its per-layer chain and
// kAuto, on random models of several shapes and formats and on the bundled model.
//
// Each logit is checked against the bound carried through the layers on the host
// (ReferenceWithBounds, forward_bound.h). Skips loudly without a GPU, except the test of
// FusedMlpSupported's answers, which needs none.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kernels/cpu/mlp_reference.h"
#include "kernels/cuda/device_mlp.h"
#include "kernels/cuda/fused_mlp.h"
#include "kernels/mlp_weights.h"
#include "kernels/numerics/quantize.h"
#include "server/model/mlp_model.h"
#include "tests/kernels/cuda/cuda_test_util.h"
#include "tests/kernels/cuda/forward_bound.h"
#include "tests/kernels/cuda/fused_mlp_cases.h"
#include "tests/kernels/cuda/fused_plan_check.h"

namespace fp8serve::cuda {
namespace {

using gpu_test::BoundedForward;
using gpu_test::DeviceBuffer;
using gpu_test::GpuFixture;
using gpu_test::ReferenceWithBounds;
using fused_test::CheckLogits;
using fused_test::CheckResult;
using fused_test::LayerSpec;
using fused_test::MakeMlp;
using fused_test::MlpCase;
using fused_test::ModelCases;
using fused_test::PixelInputs;
using fused_test::RandomInputs;
using F = Fp8Format;
using S = ScaleGranularity;

constexpr int kBatches[] = {1, 7, 64, 65, 1000};

// The padded layers uploaded once, for launching the fused kernel directly.
struct DeviceLayers {
  std::vector<DeviceBuffer> w, b_scales, col_scales, bias;
  std::vector<gpu_test::PaddedLayer> host;
};

absl::Status UploadLayers(const MlpWeights& mlp, DeviceLayers* d) {
  for (const MlpLayer& l : mlp.layers) {
    d->host.push_back(gpu_test::PadLayer(l));
    const gpu_test::PaddedLayer& p = d->host.back();
    d->w.emplace_back();
    d->b_scales.emplace_back();
    d->col_scales.emplace_back();
    d->bias.emplace_back();
    for (absl::Status st : {d->w.back().Upload(p.w), d->b_scales.back().Upload(p.b_scales),
                            d->col_scales.back().Upload(p.col_scales), d->bias.back().Upload(p.bias)}) {
      if (!st.ok()) return st;
    }
  }
  return absl::OkStatus();
}

FusedMlpArgs FusedArgsFor(const MlpWeights& mlp, const DeviceLayers& d, const float* x, int rows, float* y) {
  FusedMlpArgs args;
  args.m = rows;
  args.x = x;
  args.y = y;
  args.relu = mlp.activation == Activation::kRelu;
  args.num_layers = static_cast<int>(mlp.layers.size());
  for (int i = 0; i < args.num_layers && i < kFusedMaxLayers; ++i) {
    const gpu_test::PaddedLayer& p = d.host[i];
    args.layers[i] = FusedMlpLayer{p.n, p.k, p.n_pad, p.k_pad, d.w[i].get<uint8_t>(), p.format, d.b_scales[i].get<float>(),
                                   d.col_scales[i].get<float>(), d.bias[i].get<float>()};
  }
  return args;
}

enum class Path { kFusedDirect, kDeviceFused, kDeviceChain, kDeviceAuto };
const char* PathName(Path p) {
  switch (p) {
    case Path::kFusedDirect: return "LaunchFusedMlp";
    case Path::kDeviceFused: return "DeviceMlp/fused";
    case Path::kDeviceChain: return "DeviceMlp/chain";
    case Path::kDeviceAuto: return "DeviceMlp/auto";
  }
  return "?";
}

// One model: uploaded both ways, then every batch through every path.
class MlpRunner {
 public:
  MlpRunner(const MlpWeights& mlp, const DeviceTraits& traits, cudaStream_t stream)
      : mlp_(mlp), traits_(traits), stream_(stream) {}

  absl::Status Init(int max_rows) {
    if (absl::Status st = UploadLayers(mlp_, &layers_); !st.ok()) return st;
    absl::StatusOr<std::unique_ptr<DeviceMlp>> dm = DeviceMlp::Upload(mlp_, 0);
    if (!dm.ok()) return dm.status();
    device_mlp_ = std::move(*dm);
    absl::StatusOr<std::unique_ptr<DeviceWorkspace>> ws = device_mlp_->AllocateWorkspace(max_rows);
    if (!ws.ok()) return ws.status();
    workspace_ = std::move(*ws);
    for (absl::Status st : {x_.Allocate(static_cast<size_t>(max_rows) * mlp_.input_dim() * sizeof(float)),
                            y_.Allocate(static_cast<size_t>(max_rows) * mlp_.output_dim() * sizeof(float))}) {
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  }

  const DeviceMlp& device_mlp() const { return *device_mlp_; }

  // Runs `path` on x [rows, input_dim] with a poisoned output; returns the logits.
  absl::StatusOr<std::vector<float>> Run(Path path, const std::vector<float>& x, int rows) {
    FP8SERVE_CUDA_RETURN_IF_ERROR(cudaMemcpy(x_.get(), x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice));
    if (absl::Status st = y_.Fill(0xFF); !st.ok()) return st;
    float* y = y_.get<float>();
    absl::Status st;
    switch (path) {
      case Path::kFusedDirect: {
        const FusedMlpArgs args = FusedArgsFor(mlp_, layers_, x_.get<float>(), rows, y);
        std::string why;
        if (!FusedMlpSupported(args, traits_, &why)) return absl::FailedPreconditionError("FusedMlpSupported: " + why);
        st = LaunchFusedMlp(args, traits_, stream_);
        break;
      }
      case Path::kDeviceFused: st = device_mlp_->Forward(x_.get<float>(), rows, y, *workspace_, stream_, ForwardPath::kFused); break;
      case Path::kDeviceChain: st = device_mlp_->Forward(x_.get<float>(), rows, y, *workspace_, stream_, ForwardPath::kChain); break;
      case Path::kDeviceAuto: st = device_mlp_->Forward(x_.get<float>(), rows, y, *workspace_, stream_, ForwardPath::kAuto); break;
    }
    if (!st.ok()) return st;
    FP8SERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    std::vector<float> out(static_cast<size_t>(rows) * mlp_.output_dim());
    FP8SERVE_CUDA_RETURN_IF_ERROR(cudaMemcpy(out.data(), y, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
    return out;
  }

 private:
  const MlpWeights& mlp_;
  DeviceTraits traits_;
  cudaStream_t stream_;
  DeviceLayers layers_;
  std::unique_ptr<DeviceMlp> device_mlp_;
  std::unique_ptr<DeviceWorkspace> workspace_;
  DeviceBuffer x_, y_;
};

std::string Arch(const MlpWeights& mlp) {
  std::string s = std::to_string(mlp.input_dim());
  for (const MlpLayer& l : mlp.layers) absl::StrAppend(&s, "-", l.out);
  return s;
}

// Every batch through every path, each against the bounded reference; kAuto must give the same
// bits as the path it names.
void CheckModel(const std::string& name, const MlpWeights& mlp, const DeviceTraits& traits, cudaStream_t stream,
                const std::vector<int>& batches, bool pixels) {
  MlpRunner runner(mlp, traits, stream);
  FP8SERVE_ASSERT_OK(runner.Init(*std::max_element(batches.begin(), batches.end())));
  const ForwardPath auto_path = runner.device_mlp().auto_path();
  std::printf("%s (%s): DeviceMlp auto path %s%s%s\n", name.c_str(), Arch(mlp).c_str(), ForwardPathName(auto_path),
              runner.device_mlp().fused_unsupported_reason().empty() ? "" : "; fused unsupported: ",
              runner.device_mlp().fused_unsupported_reason().c_str());
  EXPECT_TRUE(auto_path == ForwardPath::kFused) << name << ": the fused kernel should take this model, auto path is "
                                                << ForwardPathName(auto_path) << ": "
                                                << runner.device_mlp().fused_unsupported_reason();
  for (int rows : batches) {
    const std::vector<float> x = pixels ? PixelInputs(rows, mlp.input_dim(), 7 * rows + 1)
                                        : RandomInputs(rows, mlp.input_dim(), 11 * rows + 3);
    const BoundedForward ref = ReferenceWithBounds(mlp, x, rows);
    // The per-layer chain above must be ReferenceForward itself.
    std::vector<float> direct(static_cast<size_t>(rows) * mlp.output_dim());
    ReferenceForward(mlp, x.data(), rows, direct.data());
    ASSERT_EQ(0, std::memcmp(direct.data(), ref.y.data(), direct.size() * sizeof(float))) << "reference chain mismatch";

    std::vector<float> auto_out, named_out;
    for (Path path : {Path::kFusedDirect, Path::kDeviceFused, Path::kDeviceChain, Path::kDeviceAuto}) {
      absl::StatusOr<std::vector<float>> y = runner.Run(path, x, rows);
      ASSERT_TRUE(y.ok()) << name << " batch " << rows << " " << PathName(path) << ": " << y.status();
      const CheckResult cr = CheckLogits(ref, *y, rows, mlp.output_dim());
      std::printf("%-28s batch %4d  %-16s max|d|/L1 %.3e  bound used %5.3f  argmax rows %4d  %s\n", name.c_str(), rows,
                  PathName(path), cr.max_rel_l1, cr.worst, cr.argmax_checked, cr.failures == 0 ? "ok" : "FAIL");
      EXPECT_EQ(cr.failures, 0) << name << " batch " << rows << " " << PathName(path) << cr.first;
      if (path == Path::kDeviceAuto) auto_out = *y;
      if ((path == Path::kDeviceFused && auto_path == ForwardPath::kFused) ||
          (path == Path::kDeviceChain && auto_path == ForwardPath::kChain)) {
        named_out = *y;
      }
    }
    ASSERT_EQ(auto_out.size(), named_out.size()) << name << ": auto path " << ForwardPathName(auto_path);
    EXPECT_EQ(0, std::memcmp(auto_out.data(), named_out.data(), auto_out.size() * sizeof(float)))
        << name << " batch " << rows << ": kAuto differs from " << ForwardPathName(auto_path);
  }
  std::fflush(stdout);
}

class FusedMlpGpuTest : public GpuFixture<::testing::TestWithParam<MlpCase>> {};

TEST_P(FusedMlpGpuTest, MatchesReference) {
  const MlpCase& c = GetParam();
  const MlpWeights mlp = MakeMlp(c, static_cast<uint32_t>(std::hash<std::string>{}(c.name)));
  CheckModel(c.name, mlp, traits_, stream_, std::vector<int>(std::begin(kBatches), std::end(kBatches)), false);
}

INSTANTIATE_TEST_SUITE_P(Models, FusedMlpGpuTest, ::testing::ValuesIn(ModelCases()),
                         [](const ::testing::TestParamInfo<MlpCase>& info) { return info.param.name; });

// The bundled model file, through the project's own loader.
class FusedMlpGpuBundled : public GpuFixture<::testing::Test> {};

std::string BundledModelPath() {
  const char* root = std::getenv("FP8SERVE_SOURCE_DIR");
  const std::string rel = "models/fashion_mlp/1/model.safetensors";
  if (root != nullptr && std::filesystem::exists(std::string(root) + "/" + rel)) return std::string(root) + "/" + rel;
  return rel;  // the device script runs in the repository root
}

// Declares `model` (absl::StatusOr<MlpModel>) loaded from the bundled model, or skips the test
// loudly when the file is not there; a macro, since GTEST_SKIP and ASSERT return from the test body.
#define FP8SERVE_LOAD_BUNDLED_MODEL_OR_SKIP(model)                                                               \
  const std::string model##_path = BundledModelPath();                                                      \
  if (!std::filesystem::exists(model##_path)) {                                                             \
    std::fprintf(stderr, "*** BUNDLED MODEL TEST SKIPPED: %s not found (set FP8SERVE_SOURCE_DIR)\n",        \
                 model##_path.c_str());                                                                     \
    GTEST_SKIP() << model##_path << " not found";                                                           \
  }                                                                                                         \
  absl::StatusOr<MlpModel> model = LoadMlpModel(model##_path);                                              \
  ASSERT_TRUE(model.ok()) << model.status()

TEST_F(FusedMlpGpuBundled, MatchesReference) {
  FP8SERVE_LOAD_BUNDLED_MODEL_OR_SKIP(model);
  CheckModel("bundled_fashion_mlp", model->weights, traits_, stream_,
             std::vector<int>(std::begin(kBatches), std::end(kBatches)), true);
}

// Small runs for the compute-sanitizer (tools/device/gpu_check.sh filters on this suite).
class FusedMlpGpuSmoke : public GpuFixture<::testing::Test> {};

TEST_F(FusedMlpGpuSmoke, SmallBatches) {
  const MlpCase c = ModelCases()[0];
  CheckModel(c.name, MakeMlp(c, 1), traits_, stream_, {7, 65}, false);
  if (HasFatalFailure()) return;
  const MlpCase d = ModelCases()[3];
  CheckModel(d.name, MakeMlp(d, 2), traits_, stream_, {7}, false);
}

// Models the fused kernel does not take: DeviceMlp says why, runs them on the chain, and refuses
// kFused.
class FusedMlpGpuFallback : public GpuFixture<::testing::Test> {};

TEST_F(FusedMlpGpuFallback, UnsupportedModelsRunOnTheChain) {
  const std::vector<MlpCase> cases = {
      {"too_wide_784_2048_10", {784, 2048, 10}, {{F::kE4M3, S::kPerChannel}, {F::kE4M3, S::kPerChannel}}},
      {"too_deep_6_layers",
       {64, 64, 64, 64, 64, 64, 10},
       std::vector<LayerSpec>(6, LayerSpec{F::kE4M3, S::kPerTensor})},
  };
  for (const MlpCase& c : cases) {
    const MlpWeights mlp = MakeMlp(c, 5);
    absl::StatusOr<std::unique_ptr<DeviceMlp>> dm = DeviceMlp::Upload(mlp, 0);
    ASSERT_TRUE(dm.ok()) << c.name << ": " << dm.status();
    std::printf("%s: auto path %s, fused unsupported: %s\n", c.name.c_str(), ForwardPathName((*dm)->auto_path()),
                (*dm)->fused_unsupported_reason().c_str());
    EXPECT_TRUE((*dm)->auto_path() == ForwardPath::kChain) << c.name << ": auto path " << ForwardPathName((*dm)->auto_path());
    EXPECT_FALSE((*dm)->fused_unsupported_reason().empty()) << c.name;

    constexpr int kRows = 65;
    absl::StatusOr<std::unique_ptr<DeviceWorkspace>> ws = (*dm)->AllocateWorkspace(kRows);
    ASSERT_TRUE(ws.ok()) << ws.status();
    const std::vector<float> x = RandomInputs(kRows, mlp.input_dim(), 9);
    DeviceBuffer dx, dy;
    FP8SERVE_ASSERT_OK(dx.Upload(x));
    FP8SERVE_ASSERT_OK(dy.Allocate(static_cast<size_t>(kRows) * mlp.output_dim() * sizeof(float)));
    const absl::Status fused = (*dm)->Forward(dx.get<float>(), kRows, dy.get<float>(), **ws, stream_, ForwardPath::kFused);
    EXPECT_FALSE(fused.ok()) << c.name << ": kFused accepted a model the fused kernel does not take";
    std::printf("%s: Forward(kFused) -> %s\n", c.name.c_str(), fused.ToString().c_str());

    FP8SERVE_ASSERT_OK(dy.Fill(0xFF));
    FP8SERVE_ASSERT_OK((*dm)->Forward(dx.get<float>(), kRows, dy.get<float>(), **ws, stream_, ForwardPath::kChain));
    FP8SERVE_ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaStreamSynchronize(stream_)));
    std::vector<float> y;
    FP8SERVE_ASSERT_OK(dy.Download(&y));
    const CheckResult cr = CheckLogits(ReferenceWithBounds(mlp, x, kRows), y, kRows, mlp.output_dim());
    std::printf("%-28s batch %4d  %-16s max|d|/L1 %.3e  bound used %5.3f  %s\n", c.name.c_str(), kRows, "DeviceMlp/chain",
                cr.max_rel_l1, cr.worst, cr.failures == 0 ? "ok" : "FAIL");
    EXPECT_EQ(cr.failures, 0) << c.name << cr.first;
  }
}

// DeviceMlp with the chain's weights in the tiled streaming layout (DeviceMlpOptions): the chain
// gives the bits it gives on row-major weights, at several batch sizes; the row-major copy stays
// exactly when the fused kernel takes the model (and the fused path still runs). At one row the
// heuristic runs row-major weights through the mma.sync kernel (kHopperMmaSyncMaxM) and tiled ones
// through wgmma, which sums K in another FP32 order: there both are held to the bound only.
class DeviceMlpGpuTiledWeights : public GpuFixture<::testing::Test> {};

TEST_F(DeviceMlpGpuTiledWeights, ChainGivesTheRowMajorBits) {
  if (!IsSm90()) GTEST_SKIP() << "tiled weights are read by the sm90 GEMM only";
  const std::vector<MlpCase> cases = {
      ModelCases()[0],
      {"chain_only_784_2048_10", {784, 2048, 10}, {{F::kE4M3, S::kBlock128}, {F::kE5M2, S::kPerChannel}}},
  };
  constexpr int kMaxRows = 1000;
  for (const MlpCase& c : cases) {
    const MlpWeights mlp = MakeMlp(c, 23);
    absl::StatusOr<std::unique_ptr<DeviceMlp>> row_major = DeviceMlp::Upload(mlp, 0);
    ASSERT_TRUE(row_major.ok()) << c.name << ": " << row_major.status();
    absl::StatusOr<std::unique_ptr<DeviceMlp>> tiled =
        DeviceMlp::Upload(mlp, 0, DeviceMlpOptions{WeightLayout::kTiled128});
    ASSERT_TRUE(tiled.ok()) << c.name << ": " << tiled.status();
    EXPECT_EQ((*tiled)->chain_weights(), WeightLayout::kTiled128);
    EXPECT_EQ((*tiled)->auto_path(), (*row_major)->auto_path()) << c.name;
    size_t codes = 0;
    for (const MlpLayer& l : mlp.layers) {
      codes += static_cast<size_t>((l.out + 127) / 128 * 128) * ((l.in + 127) / 128 * 128);
    }
    const bool fused = (*row_major)->auto_path() == ForwardPath::kFused;
    EXPECT_EQ((*tiled)->weight_bytes(), (*row_major)->weight_bytes() + (fused ? codes : 0))
        << c.name << ": the row-major copy must stay exactly when the fused kernel takes the model";

    absl::StatusOr<std::unique_ptr<DeviceWorkspace>> ws = (*row_major)->AllocateWorkspace(kMaxRows);
    ASSERT_TRUE(ws.ok()) << ws.status();
    const std::vector<float> x = RandomInputs(kMaxRows, mlp.input_dim(), 29);
    DeviceBuffer dx, dy;
    FP8SERVE_ASSERT_OK(dx.Upload(x));
    FP8SERVE_ASSERT_OK(dy.Allocate(static_cast<size_t>(kMaxRows) * mlp.output_dim() * sizeof(float)));
    auto run = [&](const DeviceMlp& dm, int rows, ForwardPath path) -> absl::StatusOr<std::vector<float>> {
      if (absl::Status st = dy.Fill(0xFF); !st.ok()) return st;
      if (absl::Status st = dm.Forward(dx.get<float>(), rows, dy.get<float>(), **ws, stream_, path); !st.ok()) {
        return st;
      }
      FP8SERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
      std::vector<float> y;
      if (absl::Status st = dy.Download(&y); !st.ok()) return st;
      y.resize(static_cast<size_t>(rows) * mlp.output_dim());
      return y;
    };
    for (int rows : {1, 65, kMaxRows}) {
      absl::StatusOr<std::vector<float>> want = run(**row_major, rows, ForwardPath::kChain);
      ASSERT_TRUE(want.ok()) << want.status();
      absl::StatusOr<std::vector<float>> got = run(**tiled, rows, ForwardPath::kChain);
      ASSERT_TRUE(got.ok()) << got.status();
      const CheckResult cr = CheckLogits(ReferenceWithBounds(mlp, x, rows), *got, rows, mlp.output_dim());
      const bool same = std::memcmp(want->data(), got->data(), want->size() * sizeof(float)) == 0;
      const bool same_kernel = rows > kHopperMmaSyncMaxM;
      std::printf("%-28s batch %4d  tiled chain weights  bound used %5.3f  same bits as row-major: %s%s\n",
                  c.name.c_str(), rows, cr.worst, same ? "yes" : "NO",
                  same_kernel ? "" : " (row-major runs mma.sync here: bound only)");
      EXPECT_EQ(cr.failures, 0) << c.name << " batch " << rows << cr.first;
      if (same_kernel) {
        EXPECT_TRUE(same) << c.name << " batch " << rows << ": tiled chain weights changed the logits";
      }
      if (fused) {
        absl::StatusOr<std::vector<float>> f = run(**tiled, rows, ForwardPath::kFused);
        ASSERT_TRUE(f.ok()) << c.name << ": the fused path lost its weights: " << f.status();
        const CheckResult fr = CheckLogits(ReferenceWithBounds(mlp, x, rows), *f, rows, mlp.output_dim());
        EXPECT_EQ(fr.failures, 0) << c.name << " fused batch " << rows << fr.first;
      }
    }
  }
}

// FusedMlpSupported and the launcher's argument checks are host logic: they answer without a GPU.
// Pointers are never dereferenced, so stand-ins do (aligned as the kernel requires).
alignas(16) uint8_t g_stand_in_codes[16];
alignas(16) float g_stand_in_scales[4];

FusedMlpLayer StandInLayer(int n, int k) {
  return FusedMlpLayer{n, k, gpu_test::PadTo128(n), gpu_test::PadTo128(k), g_stand_in_codes, Fp8Format::kE4M3,
                       g_stand_in_scales, nullptr, g_stand_in_scales};
}

// The bundled model's shape (784-256-10) at batch 64, with stand-in pointers.
FusedMlpArgs StandInBundledArgs() {
  FusedMlpArgs args;
  args.m = 64;
  args.x = g_stand_in_scales;
  args.y = g_stand_in_scales;
  args.num_layers = 2;
  args.layers[0] = StandInLayer(256, 784);
  args.layers[1] = StandInLayer(10, 256);
  return args;
}

TEST(FusedMlpSupport, SaysWhyItRejects) {
  const auto layer = StandInLayer;
  const DeviceTraits h100;  // the defaults describe an H100/H200

  // The bundled model's shape is what the fused kernel is for.
  FusedMlpArgs args = StandInBundledArgs();
  std::string why;
  EXPECT_TRUE(FusedMlpSupported(args, h100, &why)) << why;

  args.num_layers = kFusedMaxLayers + 1;  // more layers than the kernel holds
  why.clear();
  EXPECT_FALSE(FusedMlpSupported(args, h100, &why));
  EXPECT_FALSE(why.empty());
  std::printf("%d layers: %s\n", args.num_layers, why.c_str());

  args.num_layers = 2;
  args.layers[0] = layer(2 * kFusedMaxWidth, 784);  // a hidden layer wider than the kernel holds
  args.layers[1] = layer(10, 2 * kFusedMaxWidth);
  why.clear();
  EXPECT_FALSE(FusedMlpSupported(args, h100, &why));
  EXPECT_FALSE(why.empty());
  std::printf("width %d: %s\n", 2 * kFusedMaxWidth, why.c_str());

  args.layers[0] = layer(256, 784);
  args.layers[1] = layer(10, 256);
  DeviceTraits old = h100;  // no FP8 tensor cores
  old.cc_major = 8;
  old.cc_minor = 0;
  why.clear();
  EXPECT_FALSE(FusedMlpSupported(args, old, &why));
  EXPECT_FALSE(why.empty());
  std::printf("compute capability 8.0: %s\n", why.c_str());
}

// ---------------------------------------------------------------------------------------------
// The cluster plan (no GPU needed): every plan the launcher would run, replayed against the
// protocol (fused_plan_check.h, shared with the gemm_plan_fuzz target).

void CheckPlan(const FusedMlpArgs& args, const FusedPlan& plan, const DeviceTraits& device, const std::string& what) {
  EXPECT_EQ(FusedPlanProblem(args, plan, device), "") << what;
}

TEST(FusedMlpPlan, HandOversAddUpForEveryShapeBatchAndClusterSize) {
  const std::vector<std::vector<int>> models = {
      {784, 256, 10}, {784, 512, 256, 10}, {300, 200, 10}, {100, 200, 72, 10}, {784, 2048 / 2, 10},
      {1024, 1024, 1024, 1024, 1024}, {128, 10}, {1000, 300, 700, 129}, {200, 900, 10},
  };
  const DeviceTraits h100;
  DeviceTraits small = h100;  // fewer SMs: the automatic cluster size shrinks with the row blocks
  small.num_sms = 16;
  int checked = 0, refused = 0, folded = 0;
  for (const std::vector<int>& widths : models) {
    FusedMlpArgs args;
    args.x = g_stand_in_scales;
    args.y = g_stand_in_scales;
    args.num_layers = static_cast<int>(widths.size()) - 1;
    for (int i = 0; i < args.num_layers; ++i) args.layers[i] = StandInLayer(widths[i + 1], widths[i]);
    for (const DeviceTraits* device : {&h100, static_cast<const DeviceTraits*>(&small)}) {
      for (int m : {1, 7, 16, 64, 65, 1000, 2048}) {
        for (int combo = 0; combo < 20; ++combo) {
          constexpr int kClusterChoices[] = {0, 1, 2, 4, 8};
          const int cluster = kClusterChoices[combo % 5];
          args.fold_last_layer = combo >= 10;
          args.m = m;
          args.cluster_size = cluster;
          args.mma = combo % 10 < 4 ? FusedMma::kAuto : combo % 10 < 8 ? FusedMma::kWgmma : FusedMma::kMmaSyncF16;
          args.block_m = (m + combo) % 4 == 0 ? 0 : 16 << ((m + combo) % 3);  // auto, and each row block forced
          std::string what = absl::StrCat(widths[0]);
          for (size_t i = 1; i < widths.size(); ++i) absl::StrAppend(&what, "-", widths[i]);
          absl::StrAppend(&what, " m ", m, " cluster ", cluster, " ", FusedMmaName(args.mma), " BLOCK_M ",
                          args.block_m, args.fold_last_layer ? " fold" : "", " on ", device->num_sms, " SMs");
          const absl::StatusOr<FusedPlan> plan = PlanFusedMlp(args, *device);
          if (!plan.ok()) {
            // Only a shared-memory limit may refuse a supported model
            EXPECT_NE(plan.status().message().find("shared memory"), std::string::npos) << what << ": " << plan.status();
            ++refused;
            continue;
          }
          EXPECT_EQ(plan->mma, args.mma == FusedMma::kAuto ? FusedMma::kMmaSync : args.mma) << what;
          if (plan->layers[args.num_layers - 1].folded) ++folded;
          if (!args.fold_last_layer) {
            EXPECT_FALSE(plan->layers[args.num_layers - 1].folded) << what;
          }
          if (args.block_m != 0) {
            EXPECT_EQ(plan->block_m, args.block_m) << what;
          }
          CheckPlan(args, *plan, *device, what);
          if (::testing::Test::HasFatalFailure()) return;
          ++checked;
        }
      }
    }
  }
  std::printf("%d plans checked (%d with a folded last layer), %d refused for shared memory\n", checked, folded,
              refused);
  EXPECT_GT(checked, 2000);
  EXPECT_GT(folded, 100);
}

// The bundled model at batch 64 on an H100/H200: what the launcher runs (printed for the reader).
TEST(FusedMlpPlan, BundledModelAtBatch64) {
  const absl::StatusOr<FusedPlan> plan = PlanFusedMlp(StandInBundledArgs(), DeviceTraits{});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->cluster, 8);
  EXPECT_EQ(plan->block_m, 16);
  EXPECT_EQ(plan->row_blocks, 4);
  std::printf("784-256-10, batch 64: BLOCK_M %d, %d stages, %lld row blocks x cluster %d, %zu bytes of shared memory\n",
              plan->block_m, plan->stages, plan->row_blocks, plan->cluster, plan->smem_bytes);
  for (int i = 0; i < 2; ++i) {
    const FusedLayerPlan& l = plan->layers[i];
    std::printf("  layer %d, parts %d:", i, l.parts);
    for (int r = 0; r < plan->cluster; ++r) {
      if (l.work[r].tile < 0) {
        std::printf("  r%d -", r);
      } else {
        std::printf("  r%d t%d g%d-%d", r, l.work[r].tile, l.work[r].group_begin, l.work[r].group_end);
      }
    }
    std::printf("\n");
  }
  CheckPlan(StandInBundledArgs(), *plan, DeviceTraits{}, "bundled 784-256-10 m 64");
}

// The same with the last layer folded: 256 -> 10's two K groups are worked by ranks 0 and 4, which
// own the two tiles of layer 0; rank 4 sends its partial to rank 0, and no activation is copied.
TEST(FusedMlpPlan, BundledModelFoldedAtBatch64) {
  FusedMlpArgs args = StandInBundledArgs();
  args.fold_last_layer = true;
  const absl::StatusOr<FusedPlan> plan = PlanFusedMlp(args, DeviceTraits{});
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->cluster, 8);
  const FusedLayerPlan& l1 = plan->layers[1];
  EXPECT_TRUE(l1.folded);
  EXPECT_EQ(l1.parts, 2);
  for (int r = 0; r < 8; ++r) {
    const FusedRankWork& w = l1.work[r];
    if (r == 0 || r == 4) {
      EXPECT_EQ(w.tile, 0) << "rank " << r;
      EXPECT_EQ(w.group_begin, r / 4) << "rank " << r;
      EXPECT_EQ(w.group_end, r / 4 + 1) << "rank " << r;
    } else {
      EXPECT_EQ(w.tile, -1) << "rank " << r;
    }
    EXPECT_EQ(plan->layers[0].receivers[r], 0u) << "rank " << r;
    EXPECT_EQ(plan->layers[0].act_bytes[r], 0u) << "rank " << r;
  }
  EXPECT_EQ(l1.partial_owner[4], 0);
  EXPECT_EQ(l1.partial_slot[4], 0);
  EXPECT_EQ(l1.partial_bytes[0], 16u * 128 * 4);
  EXPECT_EQ(plan->last_send[4], 1);  // rank 4's last store into another CTA: its layer-1 partial
  EXPECT_EQ(plan->last_send[0], -1);
  CheckPlan(args, *plan, DeviceTraits{}, "bundled 784-256-10 m 64 folded");
}

// ---------------------------------------------------------------------------------------------
// The cluster variant (compute capability 9.0): LaunchFusedMlp with the cluster size forced to 1,
// 2, 4 and 8 (the tests above run the launcher's automatic choice), on every batch, each against
// the bounded reference; and every launch twice: the owner adds the partial sums in a fixed order,
// so a cluster gives the same bits on every run. The forced sizes cover split layers (a tile's K
// groups over 2 to 8 CTAs), round-robin layers (tiles >= cluster) and CTAs idle in a layer. Each
// runs with every MMA kind: mma.sync, wgmma (whose warpgroups cover 64 rows: at BLOCK_M 16 and 32
// some of its warps hold no rows of the block and must write nothing) and mma.sync widened to FP16
// by the kernel.

void CheckClusterSizes(const std::string& name, const MlpWeights& mlp, const DeviceTraits& traits, cudaStream_t stream,
                       const std::vector<int>& clusters, bool pixels,
                       const std::vector<int>& batches = std::vector<int>(std::begin(kBatches), std::end(kBatches)),
                       const std::vector<int>& block_ms = {16, 32, 64}) {
  const int max_rows = *std::max_element(batches.begin(), batches.end());
  DeviceLayers layers;
  FP8SERVE_ASSERT_OK(UploadLayers(mlp, &layers));
  DeviceBuffer dx, dy;
  FP8SERVE_ASSERT_OK(dx.Allocate(static_cast<size_t>(max_rows) * mlp.input_dim() * sizeof(float)));
  FP8SERVE_ASSERT_OK(dy.Allocate(static_cast<size_t>(max_rows) * mlp.output_dim() * sizeof(float)));
  for (int rows : batches) {
    const std::vector<float> x = pixels ? PixelInputs(rows, mlp.input_dim(), 7 * rows + 1)
                                        : RandomInputs(rows, mlp.input_dim(), 11 * rows + 3);
    const BoundedForward ref = ReferenceWithBounds(mlp, x, rows);
    FP8SERVE_ASSERT_OK(
        FP8SERVE_CUDA_STATUS(cudaMemcpy(dx.get(), x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice)));
    // Every cluster size with each MMA kind (mma.sync, and Hopper's wgmma) and each row block (the
    // launcher would pick 16 for all of these batches on an H100)
    for (int combo = 0; combo < 2 * static_cast<int>(clusters.size()); ++combo) {
      // ... and with the last layer folded where that applies
      const int cluster = clusters[static_cast<size_t>(combo) / 2];
      const bool fold = combo % 2 == 1;
      for (FusedMma mma : {FusedMma::kMmaSync, FusedMma::kWgmma, FusedMma::kMmaSyncF16}) {
        for (int block_m : block_ms) {
          FusedMlpArgs args = FusedArgsFor(mlp, layers, dx.get<float>(), rows, dy.get<float>());
          args.cluster_size = cluster;
          args.mma = mma;
          args.block_m = block_m;
          args.fold_last_layer = fold;
          const std::string what = absl::StrFormat("%s batch %d cluster %d %s BLOCK_M %d%s", name, rows, cluster,
                                                   FusedMmaName(mma), block_m, fold ? " folded" : "");
          const absl::StatusOr<FusedPlan> plan = PlanFusedMlp(args, traits);
          if (!plan.ok()) {
            // Only shared memory may refuse a combination (a wide model with a big row block)
            EXPECT_NE(plan.status().message().find("shared memory"), std::string::npos) << what << ": " << plan.status();
            std::printf("%s: not run (%s)\n", what.c_str(), std::string(plan.status().message()).c_str());
            continue;
          }
          if (fold && !plan->layers[mlp.layers.size() - 1].folded) continue;  // the same plan as unfolded
          std::vector<float> first;
          for (int run = 0; run < 2; ++run) {
            FP8SERVE_ASSERT_OK(dy.Fill(run == 0 ? 0xFF : 0x7F));  // a different poison each run
            FP8SERVE_ASSERT_OK(LaunchFusedMlp(args, traits, stream));
            FP8SERVE_ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaStreamSynchronize(stream)));
            std::vector<float> y(static_cast<size_t>(rows) * mlp.output_dim());
            FP8SERVE_ASSERT_OK(
                FP8SERVE_CUDA_STATUS(cudaMemcpy(y.data(), dy.get(), y.size() * sizeof(float), cudaMemcpyDeviceToHost)));
            if (run == 0) {
              const CheckResult cr = CheckLogits(ref, y, rows, mlp.output_dim());
              std::printf("%-60s max|d|/L1 %.3e  bound used %5.3f  argmax rows %4d  %s\n", what.c_str(),
                          cr.max_rel_l1, cr.worst, cr.argmax_checked, cr.failures == 0 ? "ok" : "FAIL");
              EXPECT_EQ(cr.failures, 0) << what << cr.first;
              first = std::move(y);
            } else {
              EXPECT_EQ(0, std::memcmp(first.data(), y.data(), y.size() * sizeof(float))) << what << ": two runs differ";
            }
          }
        }
      }
    }
  }
  std::fflush(stdout);
}

const std::vector<int> kClusterSizes = {1, 2, 4, 8};

// Skips a test (loudly) on a GPU without thread-block clusters; a macro, since GTEST_SKIP returns
// from the test body.
#define FP8SERVE_SKIP_WITHOUT_CLUSTERS()                                                                    \
  do {                                                                                                   \
    if (!IsSm90()) {                                                                                     \
      std::fprintf(stderr,                                                                               \
                   "*** CLUSTER TEST SKIPPED: compute capability %d.%d has no thread-block clusters here\n", \
                   traits_.cc_major, traits_.cc_minor);                                                  \
      GTEST_SKIP() << "clusters need compute capability 9.0";                                            \
    }                                                                                                    \
  } while (0)

// The cluster hand-overs and the wgmma kernel on one small batch: cheap enough for the
// compute-sanitizer runs of gpu_check.sh, which take the Smoke suites.
TEST_F(FusedMlpGpuSmoke, ClustersAndWgmma) {
  FP8SERVE_SKIP_WITHOUT_CLUSTERS();
  const MlpCase c = ModelCases()[1];  // three layers: a split layer, then round-robin ones
  // 65 rows: 5 row blocks of 16 (the last partial), 2 of 64 (the second partial); cluster 4, with
  // and without the last layer folded (SmallBatches covers the launcher's own choice)
  CheckClusterSizes(c.name, MakeMlp(c, 3), traits_, stream_, {4}, false, {65}, {16, 64});
}

// The benchmark's timeline (FusedMlpArgs::trace): every CTA's events in the order the kernel passes
// them, on a cluster launch where some CTAs split a tile's K groups and others own it, with each MMA
// kind. A slot written out of place (or never) breaks the order.
TEST_F(FusedMlpGpuSmoke, TimelineEventsComeInOrder) {
  FP8SERVE_SKIP_WITHOUT_CLUSTERS();
  const MlpCase c = ModelCases()[1];
  const MlpWeights mlp = MakeMlp(c, 4);
  DeviceLayers layers;
  FP8SERVE_ASSERT_OK(UploadLayers(mlp, &layers));
  constexpr int kRows = 20;
  const std::vector<float> x = RandomInputs(kRows, mlp.input_dim(), 41);
  DeviceBuffer dx, dy, trace;
  FP8SERVE_ASSERT_OK(dx.Upload(x));
  FP8SERVE_ASSERT_OK(dy.Allocate(static_cast<size_t>(kRows) * mlp.output_dim() * sizeof(float)));
  for (FusedMma mma : {FusedMma::kMmaSync, FusedMma::kWgmma, FusedMma::kMmaSyncF16}) {
    FusedMlpArgs args = FusedArgsFor(mlp, layers, dx.get<float>(), kRows, dy.get<float>());
    args.cluster_size = 4;
    args.mma = mma;
    const absl::StatusOr<FusedPlan> plan = PlanFusedMlp(args, traits_);
    ASSERT_TRUE(plan.ok()) << plan.status();
    const int ctas = static_cast<int>(plan->row_blocks) * plan->cluster;
    FP8SERVE_ASSERT_OK(trace.Allocate(static_cast<size_t>(ctas) * kFusedTraceSlots * sizeof(uint64_t)));
    FP8SERVE_ASSERT_OK(trace.Fill(0));
    args.trace = trace.get<uint64_t>();
    FP8SERVE_ASSERT_OK(LaunchFusedMlp(args, traits_, stream_));
    FP8SERVE_ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaStreamSynchronize(stream_)));
    std::vector<uint64_t> t(static_cast<size_t>(ctas) * kFusedTraceSlots);
    FP8SERVE_ASSERT_OK(FP8SERVE_CUDA_STATUS(
        cudaMemcpy(t.data(), trace.get(), t.size() * sizeof(uint64_t), cudaMemcpyDeviceToHost)));
    int layer_events = 0;
    for (int cta = 0; cta < ctas; ++cta) {
      const uint64_t* s = &t[static_cast<size_t>(cta) * kFusedTraceSlots];
      const std::string what = absl::StrFormat("%s CTA %d", FusedMmaName(mma), cta);
      EXPECT_LT(s[kFusedTraceStartNs], s[kFusedTraceEndNs]) << what;
      EXPECT_EQ(s[kFusedTraceRank], static_cast<uint64_t>(cta % plan->cluster)) << what;
      // setup <= quantized <= started, ... <= exit, with each layer's events in between where the
      // CTA works in that layer (a layer it skips leaves its first four events zero)
      std::vector<uint64_t> order = {s[kFusedTraceSetup], s[kFusedTraceQuantized], s[kFusedTraceStarted]};
      for (int l = 0; l < args.num_layers; ++l) {
        const uint64_t* e = s + kFusedTraceLayer0 + kFusedTraceEventsPerLayer * l;
        if (e[1] == 0) continue;  // no chunk of this layer
        ++layer_events;
        for (int i = 0; i < kFusedTraceEventsPerLayer; ++i) order.push_back(e[i]);
      }
      order.push_back(s[kFusedTraceExit]);
      EXPECT_GT(order.front(), 0u) << what;
      for (size_t i = 1; i < order.size(); ++i) EXPECT_LE(order[i - 1], order[i]) << what << " event " << i;
    }
    EXPECT_GE(layer_events, ctas) << FusedMmaName(mma) << ": every CTA works in some layer";
  }
}

class FusedMlpGpuCluster : public GpuFixture<::testing::TestWithParam<MlpCase>> {};

TEST_P(FusedMlpGpuCluster, ForcedSizesMatchReference) {
  FP8SERVE_SKIP_WITHOUT_CLUSTERS();
  const MlpCase& c = GetParam();
  const MlpWeights mlp = MakeMlp(c, static_cast<uint32_t>(std::hash<std::string>{}(c.name)));
  CheckClusterSizes(c.name, mlp, traits_, stream_, kClusterSizes, false);
}

INSTANTIATE_TEST_SUITE_P(Models, FusedMlpGpuCluster, ::testing::ValuesIn(ModelCases()),
                         [](const ::testing::TestParamInfo<MlpCase>& info) { return info.param.name; });

class FusedMlpGpuClusterBundled : public GpuFixture<::testing::Test> {};

TEST_F(FusedMlpGpuClusterBundled, ForcedSizesMatchReference) {
  FP8SERVE_SKIP_WITHOUT_CLUSTERS();
  FP8SERVE_LOAD_BUNDLED_MODEL_OR_SKIP(model);
  CheckClusterSizes("bundled_fashion_mlp", model->weights, traits_, stream_, kClusterSizes, true);
}

// The cluster size argument is checked on the host, before any CUDA call: no GPU needed.
TEST(FusedMlpSupport, RejectsBadClusterSizes) {
  FusedMlpArgs args = StandInBundledArgs();
  const DeviceTraits h100;
  for (int bad : {-1, 3, 16}) {
    args.cluster_size = bad;
    const absl::Status st = LaunchFusedMlp(args, h100, nullptr);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << "cluster size " << bad << ": " << st;
  }
  DeviceTraits ada = h100;  // sm_89: no clusters in this build
  ada.cc_major = 8;
  ada.cc_minor = 9;
  args.cluster_size = 2;
  const absl::Status st = LaunchFusedMlp(args, ada, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  std::printf("cluster size 2 on 8.9: %s\n", st.ToString().c_str());
  args.cluster_size = 1;  // wgmma is Hopper's
  args.mma = FusedMma::kWgmma;
  const absl::Status wg = LaunchFusedMlp(args, ada, nullptr);
  EXPECT_EQ(wg.code(), absl::StatusCode::kInvalidArgument) << wg;
  std::printf("wgmma on 8.9: %s\n", wg.ToString().c_str());
  args.mma = FusedMma::kMmaSyncF16;  // so is the widened mma.sync (Ada has the FP8 instruction)
  const absl::Status f16 = LaunchFusedMlp(args, ada, nullptr);
  EXPECT_EQ(f16.code(), absl::StatusCode::kInvalidArgument) << f16;
  EXPECT_NE(f16.message().find("mma_sync_f16"), std::string_view::npos) << f16;
  args.mma = FusedMma::kAuto;
  args.block_m = 48;  // row blocks are 16, 32 or 64
  const absl::Status bm = LaunchFusedMlp(args, h100, nullptr);
  EXPECT_EQ(bm.code(), absl::StatusCode::kInvalidArgument) << bm;
  std::printf("row block 48: %s\n", bm.ToString().c_str());
}

}  // namespace
}  // namespace fp8serve::cuda
