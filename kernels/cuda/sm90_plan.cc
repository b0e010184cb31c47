// The Hopper GEMM's launch checks and plan (sm90_params.h): plain C++, so the launcher
// (sm90_fp8_gemm.cu) and the kernel's host emulation test plan launches with the same code.
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/sm90_params.h"

namespace fp8serve::cuda {

namespace {

absl::Status Invalid(const Fp8GemmArgs& a, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("sm90 FP8 GEMM ", a.m, "x", a.n, "x", a.k, ": ", what));
}

// The shared checks (CheckFp8GemmArgs: the test-only launcher does not pass through LaunchFp8Gemm),
// plus what TMA needs.
absl::Status CheckArgs(const Fp8GemmArgs& a) {
  if (absl::Status st = CheckFp8GemmArgs(a); !st.ok()) return st;
  // NOTES: TMA reads from 16-byte aligned global addresses only (the row strides, k bytes, are
  // multiples of 128).
  if (reinterpret_cast<uintptr_t>(a.a) % 16 != 0 || reinterpret_cast<uintptr_t>(a.b) % 16 != 0) {
    return Invalid(a, "A and B must be 16-byte aligned for TMA");
  }
  if (a.b_layout == WeightLayout::kTiled128 && !Tiled128RowsFit(a.n, a.k)) {
    return Invalid(a, "tiled B has more 128-byte rows than TMA coordinates reach");
  }
  return absl::OkStatus();
}

absl::Status CheckConfig(const Fp8GemmArgs& a, const GemmConfig& c, const DeviceTraits& dev) {
  const auto bad = [&](absl::string_view why) {
    return Invalid(a, absl::StrCat(why, " (", DescribeGemmConfig(c), ")"));
  };
  if (c.kernel != GemmKernel::kSm90Wgmma) return bad("config is not for the sm90 kernel");
  if (c.block_m != kSm90BlockMs[0] && c.block_m != kSm90BlockMs[1]) return bad("block_m must be 64 or 128");
  if (c.block_k != kGemmBlockK) return bad("block_k must be 128");
  if (std::string why = Sm90BlockNProblem(c.block_n, c.block_m, c.k_splits, a.output, a.b_layout); !why.empty()) {
    return bad(why);
  }
  const int groups = a.k / kGemmBlockK;
  if (c.k_splits < 1 || c.k_splits > groups) {
    return bad(absl::StrCat("k_splits outside [1, ", groups, " groups]: every split owns a 128-K group"));
  }
  // NOTES: at least 2: a consumer issues group g + 1 before it hands back group g's stage, so it
  // holds two stages at once; with one the producer and the consumers would wait for each other.
  if (c.stages < 2 || c.stages > kSm90MaxStages) return bad(absl::StrCat("stages outside [2, ", kSm90MaxStages, "]"));
  // Two stages filled together while a consumer holds two: three at least
  if (c.pair_loads && c.stages < 3) return bad("paired loads need 3 or more stages");
  if (c.raster_group < 1) return bad("raster_group must be >= 1");
  if (c.ordered_consumers && c.block_n != kSm90WideBlockN) {
    return bad(absl::StrCat("ordered consumers are for the ", kSm90WideBlockN, "-column tile"));
  }
  if (c.block_n != kSm90BlockN && !Sm90WideTileHasLoop(c.main_loop)) {
    return bad(absl::StrCat("the ", Sm90MainLoopName(c.main_loop), " main loop is for the ", kSm90BlockN,
                            "-column tile"));
  }
  if (c.grid < 1 || c.grid > dev.num_sms) return bad(absl::StrCat("grid outside [1, ", dev.num_sms, " SMs]"));
  if (std::string why = Sm90ClusterProblem(c.cluster_m, c.cluster_n, c.k_splits, a.n, c.block_n); !why.empty()) {
    return bad(why);
  }
  if (c.grid % (c.cluster_m * c.cluster_n) != 0) return bad("the grid must be whole clusters");
  const size_t need = Sm90SmemBytes(c.block_m, c.block_n, c.stages);
  if (c.smem_bytes < need) return bad(absl::StrCat("smem_bytes below the ", need, " the pipeline needs"));
  if (c.smem_bytes > static_cast<size_t>(dev.smem_per_block_optin)) {
    return bad(absl::StrCat("smem_bytes above the device's ", dev.smem_per_block_optin));
  }
  const int64_t tiles = (static_cast<int64_t>(a.m) + c.block_m - 1) / c.block_m * Sm90TilesN(a.n, c.block_n);
  if (tiles * c.k_splits > INT32_MAX) return bad("too many tiles");
  if (c.k_splits > 1) {
    // Workspace (gemm_config.h): int32 counters at a fixed place, then float partials[splits][m][n]
    if (a.workspace == nullptr || reinterpret_cast<uintptr_t>(a.workspace) % 16 != 0) {
      return bad("split-K needs a 16-byte aligned workspace of GemmWorkspaceBytes()");
    }
    if (tiles * (c.block_m / kSm90SplitKRowsPerCounter) > kSplitKMaxTiles) {
      return bad(absl::StrCat("split-K over ", tiles, " tiles needs more than the workspace's ", kSplitKMaxTiles,
                              " counters"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Sm90Launch> PrepareSm90Launch(const Fp8GemmArgs& a, const GemmConfig& c, const DeviceTraits& dev,
                                             bool promote) {
  if (absl::Status st = CheckArgs(a); !st.ok()) return st;
  if (dev.cc_major != 9 || dev.cc_minor != 0) {
    return absl::FailedPreconditionError(absl::StrCat("the sm90 FP8 GEMM needs compute capability 9.0; the device is ",
                                                      dev.cc_major, ".", dev.cc_minor));
  }
  if (absl::Status st = CheckConfig(a, c, dev); !st.ok()) return st;
  if (!promote) {
    if (c.k_splits != 1) return Invalid(a, "the no-promotion test variant does not split K");
    if (c.block_n != kSm90BlockN) return Invalid(a, "the no-promotion test variant has 128-wide tiles only");
    if (c.main_loop != Sm90MainLoop::kDefault) return Invalid(a, "the no-promotion test variant has the default main loop");
    if (a.b_format != Fp8Format::kE4M3) return Invalid(a, "the no-promotion test variant takes E4M3 weights only");
    if (a.output != GemmOutput::kF32) return Invalid(a, "the no-promotion test variant writes F32 only");
  }
  if (c.main_loop != Sm90MainLoop::kDefault && (a.b_format != Fp8Format::kE4M3 || a.output != GemmOutput::kBF16)) {
    return Invalid(a, absl::StrCat("the ", Sm90MainLoopName(c.main_loop),
                                   " main loop has instances for E4M3 weights and BF16 output only"));
  }

  Sm90Launch l;
  l.grid = c.grid;
  l.threads = Sm90Threads(c.block_m);
  l.smem_bytes = c.smem_bytes;
  l.block_m = c.block_m;
  l.block_n = c.block_n;
  l.promote = promote;
  l.b_format = a.b_format;
  l.output = a.output;
  l.main_loop = c.main_loop;
  // A CTA of a cluster loads 1/cluster_n of the A tile and 1/cluster_m of the B tile
  l.a = Sm90OperandMap{a.a, a.m, a.k, c.block_m / c.cluster_n};
  // Tiled B (gemm_config.h) is a [n * k / 128, 128] array of 128-byte rows: 16 KB blocks of 128 rows
  const bool b_tiled = a.b_layout == WeightLayout::kTiled128;
  l.b = b_tiled ? Sm90OperandMap{a.b, a.n * (a.k / kGemmBlockK), kGemmBlockK, c.block_n / c.cluster_m}
                : Sm90OperandMap{a.b, a.n, a.k, c.block_n / c.cluster_m};

  Sm90GemmParams& p = l.params;
  p.m = a.m;
  p.n = a.n;
  p.k = a.k;
  p.a_scales = a.a_scales;
  p.b_scales = a.b_scales;
  p.col_scales = a.col_scales;
  p.bias = a.bias;
  p.d = a.d;
  p.d_scales = a.d_scales;
  p.ldd = a.ldd;
  p.n_store = a.n_store;
  p.num_stages = c.stages;
  p.sched = MakeSm90Schedule(a.m, a.n, a.k, c);
  p.b_tiled = b_tiled;
  p.pair_loads = c.pair_loads;
  p.ordered_consumers = c.ordered_consumers;
  if (c.k_splits > 1) {
    p.counters = static_cast<int*>(a.workspace);
    p.partials = reinterpret_cast<float*>(static_cast<uint8_t*>(a.workspace) + kSplitKCounterBytes);
  }
  p.relu = a.relu;
  const size_t elem = a.output == GemmOutput::kE4M3 ? 1 : a.output == GemmOutput::kBF16 ? 2 : 4;
  p.paired_stores = a.ldd % 2 == 0 && reinterpret_cast<uintptr_t>(a.d) % (2 * elem) == 0;
  return l;
}

}  // namespace fp8serve::cuda
