// The mma.sync FP8 GEMM's launch checks and plan (sm89_params.h): plain C++, so the launcher
// (sm89_fp8_gemm.cu) and the kernel's host emulation test plan launches with the same code.
#include <algorithm>
#include <climits>
#include <iterator>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/sm89_params.h"

namespace fp8serve::cuda {
namespace {

bool AlignedTo(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

absl::StatusOr<Sm89Launch> PrepareSm89Launch(const Fp8GemmArgs& args, const GemmConfig& config) {
  // What the kernel relies on (the arguments themselves were validated by LaunchFp8Gemm)
  if (config.kernel != GemmKernel::kSm89MmaSync) {
    return absl::InvalidArgumentError(absl::StrCat("sm89 launcher given a ", GemmKernelName(config.kernel), " config"));
  }
  if (config.block_n != kSm89BlockN || config.block_k != kGemmBlockK || config.stages != kSm89Stages) {
    return absl::InvalidArgumentError(absl::StrCat("sm89 kernel needs block_n ", kSm89BlockN, ", block_k ",
                                                   kGemmBlockK, " and ", kSm89Stages, " stages; got ",
                                                   DescribeGemmConfig(config)));
  }
  if (config.cluster_m != 1 || config.cluster_n != 1) {
    return absl::InvalidArgumentError(absl::StrCat("the sm89 kernel runs without clusters; got ",
                                                   DescribeGemmConfig(config)));
  }
  if (args.b_layout != WeightLayout::kRowMajor) {
    return absl::InvalidArgumentError(absl::StrCat("the sm89 kernel reads row-major weights, not ",
                                                   WeightLayoutName(args.b_layout)));
  }
  if (std::find(std::begin(kSm89BlockMs), std::end(kSm89BlockMs), config.block_m) == std::end(kSm89BlockMs)) {
    return absl::InvalidArgumentError(absl::StrCat("no sm89 kernel instance for block_m ", config.block_m, ", B ",
                                                   Fp8FormatName(args.b_format), ", output ",
                                                   GemmOutputName(args.output)));
  }
  if (args.m < 1 || args.n < kSm89BlockN || args.n % kSm89BlockN != 0 || args.k % kGemmBlockK != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sm89 kernel needs m >= 1 and n, k multiples of 128; got ", args.m, "x", args.n, "x", args.k));
  }
  const int splits = config.k_splits;
  const long long tiles_m = (args.m + config.block_m - 1) / config.block_m;
  const long long tiles_n = args.n / kSm89BlockN;
  const long long grid = tiles_m * tiles_n * splits;
  if (splits < 1 || grid != config.grid || grid > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("sm89 grid must be tiles_m * tiles_n * k_splits = ", tiles_m,
                                                   " * ", tiles_n, " * ", splits, "; got ", DescribeGemmConfig(config)));
  }
  // NOTES: cp.async copies 16 bytes at a time; rows are 16-byte aligned since k is a multiple of 128.
  if (!AlignedTo(args.a, 16) || !AlignedTo(args.b, 16)) {
    return absl::InvalidArgumentError("sm89 kernel needs A and B 16-byte aligned");
  }
  if (splits > 1 && (args.workspace == nullptr || !AlignedTo(args.workspace, 16))) {
    return absl::InvalidArgumentError("split-K needs a 16-byte aligned workspace of GemmWorkspaceBytes()");
  }

  Sm89Launch l;
  l.grid = static_cast<int>(grid);
  l.block_m = config.block_m;
  l.b_format = args.b_format;
  l.output = args.output;
  l.smem_bytes = Sm89SmemBytes(config.block_m, kSm89BlockN, kSm89Stages);
  sm89::Params& p = l.params;
  p.m = args.m;
  p.n = args.n;
  p.k = args.k;
  p.a = args.a;
  p.a_scales = args.a_scales;
  p.b = args.b;
  p.b_scales = args.b_scales;
  p.col_scales = args.col_scales;
  p.bias = args.bias;
  p.relu = args.relu;
  p.d = args.d;
  p.ldd = args.ldd;
  p.n_store = args.n_store;
  p.d_scales = args.d_scales;
  const size_t out_bytes = args.output == GemmOutput::kE4M3 ? 1 : args.output == GemmOutput::kBF16 ? 2 : 4;
  p.pair_stores = args.ldd % 2 == 0 && AlignedTo(args.d, 2 * out_bytes);
  p.k_splits = splits;
  p.tiles_m = static_cast<int>(tiles_m);
  p.tiles_n = static_cast<int>(tiles_n);
  if (splits > 1) {
    // Workspace (gemm_config.h): int32 counters at a fixed place, then float partials[splits][m][n]
    if (tiles_m * tiles_n > kSplitKMaxTiles) {
      return absl::InvalidArgumentError(absl::StrCat("sm89 FP8 GEMM: split-K over ", tiles_m * tiles_n,
                                                     " tiles, more than the workspace's ", kSplitKMaxTiles, " counters"));
    }
    p.counters = static_cast<int*>(args.workspace);
    p.partials = reinterpret_cast<float*>(static_cast<uint8_t*>(args.workspace) + kSplitKCounterBytes);
  }
  return l;
}

}  // namespace fp8serve::cuda
