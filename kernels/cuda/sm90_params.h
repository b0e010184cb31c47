// The Hopper GEMM's parameter block and launch plan (plain C++): shared by the kernel
// (sm90_fp8_gemm.cuh), its launcher (sm90_fp8_gemm.cu), the host code that checks a launch and
// fills the parameters (sm90_plan.cc) and the kernel's host emulation test.
//
// A launch goes: PrepareSm90Launch (every check, the parameters, what the two TMA tensor maps must
// describe), then DispatchSm90Instance, which picks the kernel template instance for the launch and
// hands it to the caller's function as a type. The real launcher encodes the tensor maps and starts
// the instance on the GPU; the emulation test runs the same instance's code on the CPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/gemm_config.h"
#include "kernels/cuda/sm90_schedule.h"

namespace fp8serve::cuda {

inline constexpr int kSm90MaxThreads = 384;  // BLOCK_M 128: producer + 2 consumer warpgroups

// Threads of a CTA with BLOCK_M-row tiles: one consumer warpgroup per 64 rows and the producer's.
constexpr int Sm90Threads(int block_m) { return 128 * (block_m / 64 + 1); }

// Everything the kernel reads besides the two tensor maps (A and B go through TMA only).
struct Sm90GemmParams {
  int m = 0;
  int n = 0;  // multiple of 128
  int k = 0;  // multiple of 128
  const float* a_scales = nullptr;    // [m, k/128]
  const float* b_scales = nullptr;    // [n/128, k/128]
  const float* col_scales = nullptr;  // [n] or nullptr
  const float* bias = nullptr;        // [n] or nullptr
  void* d = nullptr;                  // [m, ldd]
  float* d_scales = nullptr;          // [m, n/128] for E4M3 output
  int ldd = 0;
  int n_store = 0;
  int num_stages = 0;  // 2..kSm90MaxStages
  bool relu = false;
  bool paired_stores = false;  // d and ldd keep two adjacent output columns aligned as one access
  float* partials = nullptr;   // [k_splits][m][n] when sched.k_splits > 1
  int* counters = nullptr;     // [tiles][BLOCK_M / 16], zero at launch, when sched.k_splits > 1
  // GemmConfig::pair_loads (num_stages >= 3). NOTES: last, so the fields above keep their offsets:
  // inserting it before them made ptxas spill 8 bytes in the BLOCK_M 128 split-K epilogue.
  bool pair_loads = false;
  Sm90TileScheduler sched;
  // B in WeightLayout::kTiled128 (tmap_b then maps the tiled array as [n * k / 128, 128] bytes)
  bool b_tiled = false;
  // GemmConfig::ordered_consumers (the wide tile only)
  bool ordered_consumers = false;
};

// What one TMA tensor map of the kernel describes: a [rows, cols] row-major byte array at `base`
// (cols = K bytes, a multiple of 128), read in boxes of [box_rows, 128] bytes that land in shared
// memory with the 128-byte swizzle (16-byte chunk c of box row r at chunk c ^ (r % 8)); elements
// past the array read as zeros and still count as loaded bytes.
struct Sm90OperandMap {
  const uint8_t* base = nullptr;
  int rows = 0;
  int cols = 0;
  int box_rows = 0;
};

// A checked launch: the parameters, the two operand maps, and the kernel instance's shape.
struct Sm90Launch {
  Sm90GemmParams params;
  Sm90OperandMap a;  // A [m, k], box BLOCK_M / cluster_n rows
  Sm90OperandMap b;  // B [n, k] (or tiled: [n * k / 128, 128]), box BLOCK_N / cluster_m rows
  int grid = 0;      // CTAs as configured (a cluster launch may run fewer: see LaunchInstance)
  int threads = 0;   // 128 per consumer warpgroup (BLOCK_M / 64) + the producer warpgroup
  size_t smem_bytes = 0;
  int block_m = 0;
  int block_n = 0;
  bool promote = true;  // false: the test-only no-promotion variant
  Fp8Format b_format = Fp8Format::kE4M3;
  GemmOutput output = GemmOutput::kF32;
  Sm90MainLoop main_loop = Sm90MainLoop::kDefault;
};

// Checks `args` and `config` for the sm90 kernel on a device with `device`'s traits (compute
// capability 9.0, shared memory, SMs) and plans the launch: INVALID_ARGUMENT naming the fault for
// bad arguments or configs, FAILED_PRECONDITION for another device. `promote` false plans the
// test-only no-promotion variant (E4M3 weights, F32 output, 128-wide tiles, no split-K).
absl::StatusOr<Sm90Launch> PrepareSm90Launch(const Fp8GemmArgs& args, const GemmConfig& config,
                                             const DeviceTraits& device, bool promote);

// One instance of sm90_fp8_gemm_kernel, as a type.
template <int BLOCK_M_, int BLOCK_N_, Fp8Format kBFormat_, GemmOutput kOutput_, bool kPromote_,
          Sm90MainLoop kLoop_ = Sm90MainLoop::kDefault>
struct Sm90Instance {
  static constexpr int BLOCK_M = BLOCK_M_;
  static constexpr int BLOCK_N = BLOCK_N_;
  static constexpr Fp8Format kBFormat = kBFormat_;
  static constexpr GemmOutput kOutput = kOutput_;
  static constexpr bool kPromote = kPromote_;
  static constexpr Sm90MainLoop kLoop = kLoop_;
  static constexpr int kThreads = Sm90Threads(BLOCK_M);
  static_assert(kThreads <= kSm90MaxThreads, "the kernel's launch bound is kSm90MaxThreads");
};

// The instances that exist:
//  - BLOCK_M 64 / 128 x {E4M3, E5M2} weights x {E4M3, BF16, F32} output, with promotion (12);
//  - the wide tile (BLOCK_M 128 x BLOCK_N 192) x {E4M3, E5M2} x {BF16, F32} (4);
//  - the opt-in main-loop variants (Sm90MainLoop) for E4M3 weights and BF16 output at both BLOCK_Ms (8),
//    and kYieldFfma on the wide tile (1);
//  - the test-only no-promotion variant for E4M3 weights and F32 output at both BLOCK_Ms (2).
// DispatchSm90Instance calls `launch(Sm90Instance<...>{})` with the one a prepared launch needs and
// returns its status (INVALID_ARGUMENT if none exists, which PrepareSm90Launch already rules out).
namespace sm90_dispatch {

inline absl::Status NoInstance(const Sm90Launch& l, const char* what) {
  return absl::InvalidArgumentError(std::string("sm90 FP8 GEMM: no kernel instance for ") + what + " (" +
                                    GemmOutputName(l.output) + " output, block " + std::to_string(l.block_m) + "x" +
                                    std::to_string(l.block_n) + ", " + Sm90MainLoopName(l.main_loop) + " main loop)");
}

template <int BM, int BN, Fp8Format F, bool kPromote, typename Launch>
absl::Status Output(const Sm90Launch& l, Launch&& launch) {
  if constexpr (!kPromote) {
    if (l.output != GemmOutput::kF32) return NoInstance(l, "the no-promotion variant");
    return launch(Sm90Instance<BM, BN, F, GemmOutput::kF32, false>{});
  } else {
    switch (l.output) {
      case GemmOutput::kE4M3:
        if constexpr (BN == kSm90BlockN) return launch(Sm90Instance<BM, BN, F, GemmOutput::kE4M3, true>{});
        break;
      case GemmOutput::kBF16:
        return launch(Sm90Instance<BM, BN, F, GemmOutput::kBF16, true>{});
      case GemmOutput::kF32:
        return launch(Sm90Instance<BM, BN, F, GemmOutput::kF32, true>{});
    }
    return NoInstance(l, "this output");
  }
}

template <int BM, int BN, bool kPromote, typename Launch>
absl::Status Format(const Sm90Launch& l, Launch&& launch) {
  if constexpr (!kPromote) {
    if (l.b_format != Fp8Format::kE4M3) return NoInstance(l, "E5M2 weights without promotion");
    return Output<BM, BN, Fp8Format::kE4M3, false>(l, launch);
  } else {
    if (l.b_format == Fp8Format::kE4M3) return Output<BM, BN, Fp8Format::kE4M3, true>(l, launch);
    return Output<BM, BN, Fp8Format::kE5M2, true>(l, launch);
  }
}

// The opt-in main-loop variants: 128-wide tile (and the wide tile's kYieldFfma), E4M3 weights,
// BF16 output.
template <int BM, typename Launch>
absl::Status MainLoopVariant(const Sm90Launch& l, Launch&& launch) {
  constexpr Fp8Format kE4M3 = Fp8Format::kE4M3;
  constexpr GemmOutput kBF16 = GemmOutput::kBF16;
  if (l.b_format != kE4M3 || l.output != kBF16 || !l.promote) return NoInstance(l, "this main loop");
  if (l.block_n == kSm90WideBlockN) {
    // (Sm90WideTileHasLoop: of the opt-in loops, kYieldFfma alone)
    if constexpr (BM == 128) {
      if (l.main_loop == Sm90MainLoop::kYieldFfma) {
        return launch(Sm90Instance<128, kSm90WideBlockN, kE4M3, kBF16, true, Sm90MainLoop::kYieldFfma>{});
      }
    }
    return NoInstance(l, "this main loop");
  }
  if (l.block_n != kSm90BlockN) return NoInstance(l, "this main loop");
  switch (l.main_loop) {
    case Sm90MainLoop::kCrossBank:
      return launch(Sm90Instance<BM, kSm90BlockN, kE4M3, kBF16, true, Sm90MainLoop::kCrossBank>{});
    case Sm90MainLoop::kOneAccumulator:
      return launch(Sm90Instance<BM, kSm90BlockN, kE4M3, kBF16, true, Sm90MainLoop::kOneAccumulator>{});
    case Sm90MainLoop::kOneAccumulatorCrossBank:
      return launch(Sm90Instance<BM, kSm90BlockN, kE4M3, kBF16, true, Sm90MainLoop::kOneAccumulatorCrossBank>{});
    case Sm90MainLoop::kYieldFfma:
      return launch(Sm90Instance<BM, kSm90BlockN, kE4M3, kBF16, true, Sm90MainLoop::kYieldFfma>{});
    case Sm90MainLoop::kDefault:
      break;
  }
  return NoInstance(l, "this main loop");
}

}  // namespace sm90_dispatch

template <typename Launch>
absl::Status DispatchSm90Instance(const Sm90Launch& l, Launch&& launch) {
  using namespace sm90_dispatch;
  if (l.main_loop != Sm90MainLoop::kDefault) {
    return l.block_m == 64 ? MainLoopVariant<64>(l, launch) : MainLoopVariant<128>(l, launch);
  }
  if (l.block_m == 64) {
    if (l.block_n != kSm90BlockN) return NoInstance(l, "this tile");
    return l.promote ? Format<64, kSm90BlockN, true>(l, launch) : Format<64, kSm90BlockN, false>(l, launch);
  }
  if (l.block_n == kSm90WideBlockN) {
    if (!l.promote) return NoInstance(l, "the wide tile without promotion");
    return Format<128, kSm90WideBlockN, true>(l, launch);
  }
  return l.promote ? Format<128, kSm90BlockN, true>(l, launch) : Format<128, kSm90BlockN, false>(l, launch);
}

}  // namespace fp8serve::cuda
