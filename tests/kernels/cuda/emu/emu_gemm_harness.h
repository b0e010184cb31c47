// The host side of the GEMM emulation tests (sm90_gemm_emu_test, sm89_gemm_emu_test): operands in
// aligned host memory, outputs poisoned before each run, the split-K workspace zeroed as at
// allocation and checked back at zero after it, and the checks of gemm_cases.h.
#pragma once

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
#include "tests/kernels/cuda/gemm_cases.h"

namespace fp8serve::cuda::gemm_test {

// Host memory aligned like cudaMalloc's, for what the kernel reads through TMA or as pairs.
struct AlignedBytes {
  explicit AlignedBytes(size_t n, uint8_t fill)
      : size(n), ptr(static_cast<uint8_t*>(std::aligned_alloc(256, std::max<size_t>(256, (n + 255) / 256 * 256)))) {
    std::memset(ptr.get(), fill, n);
  }
  template <typename T>
  explicit AlignedBytes(const std::vector<T>& v) : AlignedBytes(v.size() * sizeof(T), 0) {
    if (!v.empty()) std::memcpy(ptr.get(), v.data(), v.size() * sizeof(T));
  }
  template <typename T = uint8_t>
  T* get() const {
    return size == 0 ? nullptr : reinterpret_cast<T*>(ptr.get());
  }
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  size_t size;
  std::unique_ptr<uint8_t, Free> ptr;
};

// The problem's operands in host memory, B row-major and tiled.
struct HostOperands {
  explicit HostOperands(const Problem& p)
      : a(p.a.padded), a_scales(p.a.scales), b(p.w.w), b_tiled(p.w.w.size(), 0), b_scales(p.w.b_scales),
        col_scales(p.w.col_scales), bias(p.w.bias) {
    const absl::Status st = TileWeights128(p.w.w.data(), p.w.n_pad, p.w.k_pad, b_tiled.get());
    EXPECT_TRUE(st.ok()) << st;
  }
  AlignedBytes a, a_scales, b, b_tiled, b_scales, col_scales, bias;
};

// Poisons the outputs of problem `p` with output `out`, calls `launch(args)` (plan the launch and run
// it on the emulated GPU), then reads the outputs back and checks that the split-K counters are
// zero again (the next launch needs them so).
template <typename Launch>
absl::StatusOr<GemmRun> RunOnHost(const Problem& p, const HostOperands& ops, GemmOutput out, const GemmConfig& config,
                                  WeightLayout layout, Launch&& launch) {
  GemmRun r = EmptyRun(p, out);
  AlignedBytes d(static_cast<size_t>(p.c.m) * r.ldd * OutputBytes(out),
                 out == GemmOutput::kE4M3 ? kPoisonCode : kPoisonFloat);
  AlignedBytes d_scales(out == GemmOutput::kE4M3 ? static_cast<size_t>(p.c.m) * (p.w.n_pad / kGemmBlockK) * 4 : 0,
                        kPoisonFloat);
  Fp8GemmArgs args = ArgsFor(p, out, r, PointersTo(ops, layout, d, d_scales));
  AlignedBytes workspace(GemmWorkspaceBytes(ShapeOf(args), config), 0);  // zeroed, as at allocation
  args.workspace = workspace.get();
  if (absl::Status st = launch(static_cast<const Fp8GemmArgs&>(args)); !st.ok()) return st;
  r.d.assign(d.get(), d.get() + d.size);
  if (out == GemmOutput::kE4M3) r.d_scales.assign(d_scales.get<float>(), d_scales.get<float>() + d_scales.size / 4);
  if (config.k_splits > 1) {
    const int* counters = workspace.get<int>();
    for (int i = 0; i < kSplitKMaxTiles; ++i) {
      if (counters[i] != 0) return absl::InternalError(absl::StrCat("split-K counter ", i, " left at ", counters[i]));
    }
  }
  return r;
}

// Checks a run against the reference (a failed run fails the test with its status), prints one line
// naming it `what`, and returns it for bit comparisons.
inline GemmRun CheckRun(const Problem& p, GemmOutput out, const absl::StatusOr<GemmRun>& run, const std::string& what) {
  if (!run.ok()) {
    ADD_FAILURE() << what << ": " << run.status();
    return GemmRun{};
  }
  const CheckResult cr = CheckOutput(p, out, *run);
  std::printf("%-90s bound used %5.3f  %s\n", what.c_str(), cr.worst, cr.failures == 0 ? "ok" : "FAIL");
  std::fflush(stdout);
  EXPECT_EQ(cr.failures, 0) << what << cr.first;
  return *run;
}

inline void ExpectSameBits(const GemmRun& a, const GemmRun& b, const std::string& what) {
  EXPECT_TRUE(a.d == b.d && a.d_scales == b.d_scales) << what << ": the outputs' bits differ";
}

}  // namespace fp8serve::cuda::gemm_test
