// Launcher of the mma.sync FP8 GEMM (device code in sm89_fp8_gemm.cuh): maps a GemmConfig to one
// of the 18 template instances (BLOCK_M x B format x output kind), checks what the kernel relies on,
// and launches it.
#include "kernels/cuda/sm89_fp8_gemm.cuh"

#include <climits>
#include <cstdint>
#include <iterator>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/fp8_gemm.h"

namespace fp8serve::cuda {
namespace {

static_assert(std::size(kSm89BlockMs) == 3 && kSm89BlockMs[0] == 16 && kSm89BlockMs[1] == 32 &&
                  kSm89BlockMs[2] == 64,
              "the instance table below covers BLOCK_M 16, 32 and 64");
static_assert(kSm89BlockN == sm89::kBlockN, "the kernel is written for 128-column tiles");

// Devices whose shared-memory opt-in is remembered; a launch on a higher ordinal opts in every time.
constexpr int kMaxDevices = 64;

using InstanceLauncher = absl::Status (*)(const sm89::Params&, int grid, cudaStream_t);

template <int BLOCK_M, Fp8Format kBFormat, GemmOutput kOutput>
absl::Status LaunchInstance(const sm89::Params& params, int grid, cudaStream_t stream) {
  constexpr size_t kSmemBytes = sm89::SmemBytes<BLOCK_M>();
  auto* kernel = &sm89_fp8_gemm_kernel<BLOCK_M, kBFormat, kOutput>;
  auto opt_in = [&] {
    return FP8SERVE_CUDA_STATUS(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmemBytes)));
  };

  // Allow the kernel its dynamic shared memory (over the 48 KB default): once per instance and device
  int device = 0;
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  if (device >= 0 && device < kMaxDevices) {
    static std::once_flag once[kMaxDevices];
    static absl::Status opted_in[kMaxDevices];
    std::call_once(once[device], [&] { opted_in[device].Update(opt_in()); });
    if (!opted_in[device].ok()) return opted_in[device];
  } else {
    if (absl::Status s = opt_in(); !s.ok()) return s;
  }

  kernel<<<static_cast<unsigned>(grid), sm89::kNumThreads, kSmemBytes, stream>>>(params);
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

template <int BLOCK_M, Fp8Format kBFormat>
InstanceLauncher PickOutput(GemmOutput output) {
  switch (output) {
    case GemmOutput::kE4M3: return &LaunchInstance<BLOCK_M, kBFormat, GemmOutput::kE4M3>;
    case GemmOutput::kBF16: return &LaunchInstance<BLOCK_M, kBFormat, GemmOutput::kBF16>;
    case GemmOutput::kF32: return &LaunchInstance<BLOCK_M, kBFormat, GemmOutput::kF32>;
  }
  return nullptr;
}

template <int BLOCK_M>
InstanceLauncher PickBFormat(Fp8Format b_format, GemmOutput output) {
  switch (b_format) {
    case Fp8Format::kE4M3: return PickOutput<BLOCK_M, Fp8Format::kE4M3>(output);
    case Fp8Format::kE5M2: return PickOutput<BLOCK_M, Fp8Format::kE5M2>(output);
  }
  return nullptr;
}

InstanceLauncher PickInstance(int block_m, Fp8Format b_format, GemmOutput output) {
  switch (block_m) {
    case 16: return PickBFormat<16>(b_format, output);
    case 32: return PickBFormat<32>(b_format, output);
    case 64: return PickBFormat<64>(b_format, output);
    default: return nullptr;
  }
}

bool AlignedTo(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

absl::Status LaunchSm89Fp8Gemm(const Fp8GemmArgs& args, const GemmConfig& config, cudaStream_t stream) {
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
  const InstanceLauncher launch = PickInstance(config.block_m, args.b_format, args.output);
  if (launch == nullptr) {
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

  sm89::Params p;
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
  return launch(p, static_cast<int>(grid), stream);
}

}  // namespace fp8serve::cuda
