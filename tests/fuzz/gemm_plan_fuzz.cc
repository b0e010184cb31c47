// Fuzz target: the CUDA kernels' host side, which every launch passes through before anything
// reaches the GPU: the argument checks, the configuration heuristic and the launch plans of the
// Hopper GEMM, the mma.sync GEMM and the fused MLP kernel. Plain C++, so it runs without a GPU.
//
// The input picks a device, a GEMM (shape, formats, output, strides, pointer alignments) and a
// config, and an MLP for the fused kernel. What must hold:
//  - nothing overflows or crashes on any argument (UBSan and ASan in the libFuzzer build);
//  - every config the heuristic returns for valid arguments is one its launcher accepts, with a
//    kernel instance to run it, and with the workspace that GemmWorkspaceBytes sizes;
//  - every launch a planner accepts, heuristic or not, fits the device: grid, threads, shared memory;
//  - a fused plan keeps the cluster protocol (tests/kernels/cuda/fused_plan_check.h): every
//    (tile, K group) worked once, one owner per tile, and the partial tiles and activation copies
//    its ranks send are exactly the bytes each receiver's mbarrier waits for (an mbarrier that
//    waits for more never completes, one that waits for less lets its CTA read too early).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>

#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/fused_mlp.h"
#include "kernels/cuda/gemm_config.h"
#include "kernels/cuda/sm89_params.h"
#include "kernels/cuda/sm90_params.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/kernels/cuda/fused_plan_check.h"

namespace fp8serve::cuda {
namespace {

using fuzz::Fail;

// Reads the input front to back; zeros once it runs out.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  template <typename T>
  T Next() {
    T v{};
    const size_t n = std::min(sizeof(T), size_ - std::min(pos_, size_));
    if (n > 0) std::memcpy(&v, data_ + pos_, n);
    pos_ += sizeof(T);
    return v;
  }
  // Mostly a realistic value (one of `common`), now and then any int.
  template <size_t N>
  int Pick(const int (&common)[N]) {
    const uint8_t c = Next<uint8_t>();
    if (c < 224) return common[c % N];
    return Next<int32_t>();
  }
  bool Bit() { return Next<uint8_t>() & 1; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Fake device pointers: the planners check and store them, and never dereference them.
template <typename T>
T* FakePointer(Reader& in, uintptr_t base) {
  const uint8_t how = in.Next<uint8_t>();
  if (how < 16) return nullptr;
  const uintptr_t misalign = how < 48 ? in.Next<uint8_t>() % 16 : 0;
  return reinterpret_cast<T*>(base + misalign);
}

DeviceTraits ReadDevice(Reader& in) {
  DeviceTraits d;
  static constexpr int kCc[][2] = {{9, 0}, {9, 0}, {8, 9}, {8, 0}, {10, 0}, {12, 0}};
  const int cc = in.Next<uint8_t>() % 6;
  d.cc_major = kCc[cc][0];
  d.cc_minor = kCc[cc][1];
  d.num_sms = in.Pick({132, 132, 114, 78, 1, 2, 7, 256});
  d.smem_per_block_optin = in.Pick({227 * 1024, 227 * 1024, 99 * 1024, 163 * 1024, 48 * 1024, 0});
  return d;
}

// 128 x v, or v itself where the product would not fit an int.
int Times128(int v) { return v > INT32_MAX / 128 || v < INT32_MIN / 128 ? v : 128 * v; }

// v rounded up to a multiple of 128, or v itself where that would not fit an int.
int Pad128(int v) { return v > INT32_MAX - 127 ? v : (v + 127) / 128 * 128; }

GemmShape ReadShape(Reader& in) {
  GemmShape s;
  s.m = in.Pick({1, 7, 16, 64, 65, 128, 129, 1000, 4096, 8192, 70000});
  s.n = Times128(in.Pick({1, 2, 3, 8, 32, 128, 129}));
  s.k = Times128(in.Pick({1, 2, 7, 8, 32, 128, 129}));
  if (in.Next<uint8_t>() < 16) s.n = in.Next<int32_t>();  // off the 128 grid, or negative
  if (in.Next<uint8_t>() < 16) s.k = in.Next<int32_t>();
  s.b_format = in.Bit() ? Fp8Format::kE5M2 : Fp8Format::kE4M3;
  s.output = static_cast<GemmOutput>(in.Next<uint8_t>() % 3);
  s.b_layout = in.Next<uint8_t>() < 64 ? WeightLayout::kTiled128 : WeightLayout::kRowMajor;
  return s;
}

Fp8GemmArgs ReadArgs(Reader& in, const GemmShape& s) {
  Fp8GemmArgs a;
  a.m = s.m;
  a.n = s.n;
  a.k = s.k;
  a.b_format = s.b_format;
  a.output = s.output;
  a.b_layout = s.b_layout;
  a.a = FakePointer<const uint8_t>(in, 0x100000);
  a.a_scales = FakePointer<const float>(in, 0x200000);
  a.b = FakePointer<const uint8_t>(in, 0x300000);
  a.b_scales = FakePointer<const float>(in, 0x400000);
  a.col_scales = in.Bit() ? FakePointer<const float>(in, 0x500000) : nullptr;
  a.bias = in.Bit() ? FakePointer<const float>(in, 0x600000) : nullptr;
  a.relu = in.Bit();
  a.d = FakePointer<void>(in, 0x700000);
  a.d_scales = FakePointer<float>(in, 0x800000);
  a.n_store = s.output == GemmOutput::kE4M3 || in.Bit() ? s.n : in.Pick({1, 10, 127, 129, 0, -1});
  const long long ldd = static_cast<long long>(a.n_store) + (in.Bit() ? 0 : in.Pick({0, 1, 8, 128, -1}));
  a.ldd = static_cast<int>(std::clamp<long long>(ldd, INT32_MIN, INT32_MAX));
  a.workspace = FakePointer<void>(in, 0x900000);
  return a;
}

GemmConfig ReadConfig(Reader& in) {
  GemmConfig c;
  c.kernel = in.Bit() ? GemmKernel::kSm90Wgmma : GemmKernel::kSm89MmaSync;
  c.block_m = in.Pick({64, 128, 16, 32, 0, 256});
  c.block_n = in.Pick({128, 192, 64, 256});
  c.block_k = in.Pick({128, 128, 64});
  c.stages = in.Pick({2, 3, 4, 8, 1, 9});
  c.k_splits = in.Pick({1, 1, 2, 3, 8, 0, 100});
  c.grid = in.Pick({1, 2, 132, 128, 0, 1000000});
  c.raster_group = in.Pick({1, 2, 8, 0});
  c.pair_loads = in.Bit();
  c.cluster_m = in.Pick({1, 1, 2, 3, 0});
  c.cluster_n = in.Pick({1, 1, 2, 4});
  c.ordered_consumers = in.Bit();
  c.main_loop = static_cast<Sm90MainLoop>(in.Next<uint8_t>() % (std::size(kSm90OptInMainLoops) + 1));
  c.smem_bytes = static_cast<size_t>(in.Pick({0, 100000, 200000, 232448, 1 << 20}));
  return c;
}

// A launch the planner accepted must fit the device it was planned for.
// (The sm89 planner is not told the device: its launcher learns a config's shared memory does not
// fit from CUDA, so a fuzzed sm89 config is held to the device only when the heuristic chose it.)
template <typename Launch>
void CheckFits(const Launch& l, int grid_cap, const DeviceTraits& d, bool device_known, const std::string& what) {
  if (l.grid < 1 || l.grid > grid_cap) Fail(what, "a grid outside [1, " + std::to_string(grid_cap) + "]");
  if (l.smem_bytes == 0) Fail(what, "a launch without shared memory");
  if (device_known && l.smem_bytes > static_cast<size_t>(d.smem_per_block_optin)) {
    Fail(what, "shared memory beyond what the device gives a block");
  }
}

// Plans `config` for `args` with its kernel's planner: the planner's verdict (a plan it accepts is
// then checked against the device).
absl::Status Plan(const Fp8GemmArgs& args, const GemmConfig& config, const DeviceTraits& d, bool from_heuristic,
                  const std::string& what) {
  if (config.kernel == GemmKernel::kSm90Wgmma) {
    absl::StatusOr<Sm90Launch> l = PrepareSm90Launch(args, config, d, /*promote=*/true);
    if (!l.ok()) return l.status();
    CheckFits(*l, d.num_sms, d, /*device_known=*/true, what);
    if (l->threads < 1 || l->threads > kSm90MaxThreads) Fail(what, "sm90 threads outside the launch bound");
    if (!DispatchSm90Instance(*l, [](auto) { return absl::OkStatus(); }).ok()) Fail(what, "no sm90 instance for a prepared launch");
    return absl::OkStatus();
  }
  if (absl::Status st = CheckFp8GemmArgs(args); !st.ok()) return st;
  absl::StatusOr<Sm89Launch> l = PrepareSm89Launch(args, config);
  if (!l.ok()) return l.status();
  CheckFits(*l, INT32_MAX, d, from_heuristic, what);
  if (!DispatchSm89Instance(*l, [](auto) { return absl::OkStatus(); }).ok()) Fail(what, "no sm89 instance for a prepared launch");
  return absl::OkStatus();
}

// The heuristic's configs for valid arguments must all be accepted by their planners.
void CheckHeuristic(Fp8GemmArgs args, const GemmShape& s, const DeviceTraits& d) {
  const auto accepted = [&](const absl::StatusOr<GemmConfig>& c, const char* name) {
    if (!c.ok()) return;
    const size_t workspace = GemmWorkspaceBytes(s, *c);
    if (c->k_splits > 1 && workspace < kSplitKCounterBytes + size_t(c->k_splits) * s.m * s.n * sizeof(float)) {
      Fail(name, "GemmWorkspaceBytes below the counters and the partial sums");
    }
    // The pointers the launcher would pass: aligned, a workspace where the config needs one.
    Fp8GemmArgs a = args;
    a.workspace = c->k_splits > 1 ? reinterpret_cast<void*>(0x900000) : nullptr;
    if (absl::Status st = Plan(a, *c, d, /*from_heuristic=*/true, name); !st.ok()) {
      Fail(name, "the heuristic gave a config its launcher refuses: " + DescribeGemmConfig(*c) + ": " + st.ToString());
    }
  };
  args.a = reinterpret_cast<const uint8_t*>(0x100000);
  args.b = reinterpret_cast<const uint8_t*>(0x300000);
  args.a_scales = reinterpret_cast<const float*>(0x200000);
  args.b_scales = reinterpret_cast<const float*>(0x400000);
  args.d = reinterpret_cast<void*>(0x700000);
  args.d_scales = reinterpret_cast<float*>(0x800000);
  if (!CheckFp8GemmArgs(args).ok()) return;
  accepted(SelectGemmConfig(s, d), "SelectGemmConfig");
  for (GemmKernel k : {GemmKernel::kSm90Wgmma, GemmKernel::kSm89MmaSync}) {
    absl::StatusOr<GemmConfig> base = SelectGemmConfigFor(k, s, d);
    accepted(base, "SelectGemmConfigFor");
    if (base.ok() && k == GemmKernel::kSm90Wgmma) {
      accepted(TuneSm90Config(*base, s, d), "TuneSm90Config");
      for (int cm : {1, 2}) {
        for (int cn : {1, 2}) accepted(WithSm90Cluster(*base, s, d, cm, cn), "WithSm90Cluster");
      }
    }
  }
  accepted(SelectSm90WideTileConfig(s, d), "SelectSm90WideTileConfig");
}

void CheckFusedPlan(Reader& in, const DeviceTraits& d) {
  FusedMlpArgs a;
  a.m = in.Pick({1, 64, 1024, 16384, 0, 17});
  a.num_layers = in.Pick({2, 3, 1, 4, 0, 5});
  a.x = FakePointer<const float>(in, 0xa00000);
  a.y = FakePointer<float>(in, 0xb00000);
  int k = in.Pick({784, 256, 100, 1024, 1, 1025});
  for (int l = 0; l < std::min(std::max(a.num_layers, 0), kFusedMaxLayers); ++l) {
    FusedMlpLayer& L = a.layers[l];
    L.k = k;
    L.n = in.Pick({256, 10, 512, 128, 1, 1024, 2000});
    L.k_pad = in.Bit() ? Pad128(L.k) : in.Pick({128, 896, 0});
    L.n_pad = in.Bit() ? Pad128(L.n) : in.Pick({128, 256, 0});
    L.w = FakePointer<const uint8_t>(in, 0xc00000);
    L.w_format = in.Bit() ? Fp8Format::kE5M2 : Fp8Format::kE4M3;
    L.b_scales = FakePointer<const float>(in, 0xd00000);
    L.col_scales = in.Bit() ? FakePointer<const float>(in, 0xe00000) : nullptr;
    L.bias = in.Bit() ? FakePointer<const float>(in, 0xf00000) : nullptr;
    k = L.n;
  }
  a.relu = in.Bit();
  a.cluster_size = in.Pick({0, 1, 2, 4, 8, 3, 16});
  a.mma = static_cast<FusedMma>(in.Next<uint8_t>() % 4);
  a.block_m = in.Pick({0, 16, 32, 64, 8});
  a.fold_last_layer = in.Bit();

  absl::StatusOr<FusedPlan> p = PlanFusedMlp(a, d);
  if (!p.ok()) return;
  if (p->mma == FusedMma::kAuto) Fail("PlanFusedMlp", "the plan left the MMA kind to choose");
  // The whole cluster protocol: work, owners, partial slots, hand-over bytes and receivers
  if (std::string why = FusedPlanProblem(a, *p, d); !why.empty()) Fail("PlanFusedMlp", why);
}

}  // namespace
}  // namespace fp8serve::cuda

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fp8serve::cuda;
  Reader in(data, size);
  const DeviceTraits d = ReadDevice(in);
  const GemmShape s = ReadShape(in);
  const Fp8GemmArgs args = ReadArgs(in, s);
  CheckHeuristic(args, s, d);
  (void)Plan(args, ReadConfig(in), d, /*from_heuristic=*/false, "a fuzzed config");
  CheckFusedPlan(in, d);
  return 0;
}
