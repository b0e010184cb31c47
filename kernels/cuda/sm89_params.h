// The mma.sync FP8 GEMM's shape constants, parameter block and launch plan (plain C++): shared by
// the kernel (sm89_fp8_gemm.cuh), its launcher (sm89_fp8_gemm.cu), the host code that checks a
// launch and fills the parameters (sm89_plan.cc) and the kernel's host emulation test.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/gemm_config.h"

namespace fp8serve::cuda {
namespace sm89 {

inline constexpr int kNumThreads = 128;
inline constexpr int kNumWarps = kNumThreads / 32;
inline constexpr int kBlockN = 128;
inline constexpr int kWarpN = kBlockN / kNumWarps;  // columns per warp
inline constexpr int kRowBytes = kGemmBlockK;       // one row of a stage: one 128-K chunk, 8 x 16 bytes

// What the kernel reads; the launcher fills it from Fp8GemmArgs and GemmConfig.
struct Params {
  int m = 0, n = 0, k = 0;
  const uint8_t* a = nullptr;         // [m, k] E4M3
  const float* a_scales = nullptr;    // [m, k/128]
  const uint8_t* b = nullptr;         // [n, k] E4M3 / E5M2
  const float* b_scales = nullptr;    // [n/128, k/128]
  const float* col_scales = nullptr;  // [n] or null
  const float* bias = nullptr;        // [n] or null
  bool relu = false;
  void* d = nullptr;                  // [m, ldd]
  int ldd = 0;
  int n_store = 0;
  float* d_scales = nullptr;          // [m, n/128] (E4M3 output)
  bool pair_stores = false;           // d and ldd are aligned for 2-element stores
  int k_splits = 1;
  int tiles_m = 0, tiles_n = 0;
  float* partials = nullptr;          // [k_splits][m][n] when k_splits > 1
  int* counters = nullptr;            // [tiles_m * tiles_n] when k_splits > 1
};

// Dynamic shared memory of one CTA: the stage ring (rows of exactly 128 bytes, XOR-swizzled) plus the
// epilogue's cross-warp amax table and the split-K "last CTA" flag.
template <int BLOCK_M>
constexpr size_t SmemBytes() {
  return static_cast<size_t>(kSm89Stages) * (BLOCK_M + kBlockN) * kRowBytes +
         static_cast<size_t>(kNumWarps) * BLOCK_M * sizeof(float) + 16;
}

}  // namespace sm89

// A checked launch: the parameters, the grid (every tile x split) and the instance's shape.
struct Sm89Launch {
  sm89::Params params;
  int grid = 0;
  int block_m = 0;
  size_t smem_bytes = 0;
  Fp8Format b_format = Fp8Format::kE4M3;
  GemmOutput output = GemmOutput::kF32;
};

// Checks `args` (already through CheckFp8GemmArgs) and `config` for the mma.sync kernel and plans
// the launch: INVALID_ARGUMENT naming the fault.
absl::StatusOr<Sm89Launch> PrepareSm89Launch(const Fp8GemmArgs& args, const GemmConfig& config);

// One instance of sm89_fp8_gemm_kernel, as a type: BLOCK_M in kSm89BlockMs x {E4M3, E5M2} weights x
// {E4M3, BF16, F32} output (18).
template <int BLOCK_M_, Fp8Format kBFormat_, GemmOutput kOutput_>
struct Sm89Instance {
  static constexpr int BLOCK_M = BLOCK_M_;
  static constexpr Fp8Format kBFormat = kBFormat_;
  static constexpr GemmOutput kOutput = kOutput_;
};

namespace sm89_dispatch {

template <int BM, Fp8Format F, typename Launch>
absl::Status Output(const Sm89Launch& l, Launch&& launch) {
  switch (l.output) {
    case GemmOutput::kE4M3: return launch(Sm89Instance<BM, F, GemmOutput::kE4M3>{});
    case GemmOutput::kBF16: return launch(Sm89Instance<BM, F, GemmOutput::kBF16>{});
    case GemmOutput::kF32: return launch(Sm89Instance<BM, F, GemmOutput::kF32>{});
  }
  return absl::InvalidArgumentError("sm89 FP8 GEMM: no kernel instance for this output");
}

template <int BM, typename Launch>
absl::Status Format(const Sm89Launch& l, Launch&& launch) {
  if (l.b_format == Fp8Format::kE4M3) return Output<BM, Fp8Format::kE4M3>(l, launch);
  return Output<BM, Fp8Format::kE5M2>(l, launch);
}

}  // namespace sm89_dispatch

// Calls `launch(Sm89Instance<...>{})` with the instance a prepared launch needs.
template <typename Launch>
absl::Status DispatchSm89Instance(const Sm89Launch& l, Launch&& launch) {
  static_assert(sizeof(kSm89BlockMs) / sizeof(kSm89BlockMs[0]) == 3 && kSm89BlockMs[0] == 16 &&
                    kSm89BlockMs[1] == 32 && kSm89BlockMs[2] == 64,
                "the instances cover BLOCK_M 16, 32 and 64");
  switch (l.block_m) {
    case 16: return sm89_dispatch::Format<16>(l, launch);
    case 32: return sm89_dispatch::Format<32>(l, launch);
    case 64: return sm89_dispatch::Format<64>(l, launch);
  }
  return absl::InvalidArgumentError("sm89 FP8 GEMM: no kernel instance for block_m " + std::to_string(l.block_m));
}

}  // namespace fp8serve::cuda
