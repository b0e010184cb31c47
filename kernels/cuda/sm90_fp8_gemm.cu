// Launchers of the Hopper FP8 GEMM (device code in sm90_fp8_gemm.cuh): argument and config checks,
// the two TMA tensor maps, the split-K workspace, the template instance for (BLOCK_M, B format,
// output), and the launch.
//
// Instances: BLOCK_M in kSm90BlockMs x {E4M3, E5M2} weights x {E4M3, BF16, F32} output with
// promotion (12), the wide tile (BLOCK_M 128 x BLOCK_N 192) x {E4M3, E5M2} x {BF16, F32} (4), the
// opt-in main-loop variants (Sm90MainLoop: cross-bank, one accumulator, both) for E4M3 weights and
// BF16 output at both BLOCK_Ms (6), plus the test-only no-promotion variant for E4M3 weights and F32
// output at both BLOCK_Ms (2). The
// pipeline depth is a runtime value (at most kSm90MaxStages), so the config's stage count does not
// multiply the instances.
#include "kernels/cuda/sm90_fp8_gemm.cuh"

#include <cuda.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/cuda/cluster_launch.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/fp8_gemm.h"

namespace fp8serve::cuda {

namespace {

using EncodeTiledFn = PFN_cuTensorMapEncodeTiled_v12000;

constexpr int kMaxCachedDevices = 64;

absl::Status Invalid(const Fp8GemmArgs& a, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("sm90 FP8 GEMM ", a.m, "x", a.n, "x", a.k, ": ", what));
}

// The current device and its traits, queried once per device (thread-safe).
absl::StatusOr<DeviceTraits> CurrentDeviceTraits(int* device) {
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetDevice(device));
  static std::mutex mu;
  static std::array<std::optional<DeviceTraits>, kMaxCachedDevices> cache;
  const bool cacheable = *device >= 0 && *device < kMaxCachedDevices;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(mu);
    if (cache[*device].has_value()) return *cache[*device];
  }
  absl::StatusOr<DeviceTraits> traits = QueryDeviceTraits(*device);
  if (traits.ok() && cacheable) {
    std::lock_guard<std::mutex> lock(mu);
    cache[*device] = *traits;
  }
  return traits;
}

// cuTensorMapEncodeTiled through the runtime's driver entry point (no -lcuda), looked up once.
absl::StatusOr<EncodeTiledFn> TensorMapEncoder() {
  static const absl::StatusOr<EncodeTiledFn> encoder = []() -> absl::StatusOr<EncodeTiledFn> {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    FP8SERVE_CUDA_RETURN_IF_ERROR(
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found));
    if (found != cudaDriverEntryPointSuccess || fn == nullptr) {
      return absl::FailedPreconditionError("the CUDA driver has no cuTensorMapEncodeTiled (12.0 or newer needed)");
    }
    return reinterpret_cast<EncodeTiledFn>(fn);
  }();
  return encoder;
}

// A [rows, k] row-major FP8 operand as a 2D tensor map whose box is [box_rows, 128] bytes, stored
// in shared memory with the 128-byte swizzle the wgmma descriptors describe. Rows past `rows` read
// as zeros.
absl::StatusOr<CUtensorMap> MakeOperandMap(EncodeTiledFn encode, const uint8_t* base, int rows, int k, int box_rows,
                                           const char* name) {
  CUtensorMap map;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(k), static_cast<cuuint64_t>(rows)};
  const cuuint64_t row_stride_bytes[1] = {static_cast<cuuint64_t>(k)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(kGemmBlockK), static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<uint8_t*>(base), dims, row_stride_bytes,
                            box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    return absl::InternalError(absl::StrCat("cuTensorMapEncodeTiled for ", name, " [", rows, ", ", k,
                                            "] failed with CUresult ", static_cast<int>(r)));
  }
  return map;
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
  if (a.b_layout == WeightLayout::kTiled128 && static_cast<int64_t>(a.n) * (a.k / kGemmBlockK) > INT32_MAX) {
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
  if (c.main_loop != Sm90MainLoop::kDefault && c.block_n != kSm90BlockN) {
    return bad(absl::StrCat("the ", Sm90MainLoopName(c.main_loop), " main loop is for the ", kSm90BlockN,
                            "-column tile"));
  }
  if (c.grid < 1 || c.grid > dev.num_sms) return bad(absl::StrCat("grid outside [1, ", dev.num_sms, " SMs]"));
  if (std::string why = Sm90ClusterProblem(c.cluster_m, c.cluster_n, c.k_splits, a.n, c.block_n); !why.empty()) {
    return bad(why);
  }
  if (c.grid % (c.cluster_m * c.cluster_n) != 0) return bad("the grid must be whole clusters");
  const size_t need = c.block_m == 64                ? Sm90SmemLayout<64>::Bytes(c.stages)
                      : c.block_n == kSm90WideBlockN ? Sm90SmemLayout<128, kSm90WideBlockN>::Bytes(c.stages)
                                                     : Sm90SmemLayout<128>::Bytes(c.stages);
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

// The most clusters of `size` CTAs with `smem` bytes each that `kernel` can run at once on the
// current device (a persistent grid larger than that would run its last clusters after the others
// finish), cached per (kernel, device, threads, size, smem).
template <typename Kernel>
absl::StatusOr<int> MaxActiveClusters(Kernel kernel, int device, int threads, size_t smem, int size) {
  struct Entry {
    const void* kernel;
    int device;
    int threads;
    int size;
    size_t smem;
    int clusters;
  };
  const void* key = reinterpret_cast<const void*>(kernel);
  static std::mutex mu;
  static std::vector<Entry> cache;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const Entry& e : cache) {
      if (e.kernel == key && e.device == device && e.threads == threads && e.size == size && e.smem == smem) {
        return e.clusters;
      }
    }
  }
  const ClusterLaunchConfig config(static_cast<unsigned>(size), static_cast<unsigned>(threads), smem,
                                   static_cast<unsigned>(size), nullptr);
  int clusters = 0;
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaOccupancyMaxActiveClusters(&clusters, kernel, config.get()));
  if (clusters < 1) {
    return absl::FailedPreconditionError(absl::StrCat("device ", device, " cannot run a cluster of ", size,
                                                      " CTAs with ", smem, " bytes of shared memory each"));
  }
  std::lock_guard<std::mutex> lock(mu);
  cache.push_back({key, device, threads, size, smem, clusters});
  return clusters;
}

template <int BLOCK_M, int BLOCK_N, Fp8Format kBFormat, GemmOutput kOutput, bool kPromote,
          Sm90MainLoop kLoop = Sm90MainLoop::kDefault>
absl::Status LaunchInstance(const CUtensorMap& tmap_a, const CUtensorMap& tmap_b, const Sm90GemmParams& params,
                            const GemmConfig& c, int device, const DeviceTraits& dev, cudaStream_t stream) {
  constexpr auto kernel = &sm90_fp8_gemm_kernel<BLOCK_M, BLOCK_N, kBFormat, kOutput, kPromote, kLoop>;
  constexpr int kThreads = 128 * (BLOCK_M / 64 + 1);  // consumer warpgroups + the producer warpgroup
  static_assert(kThreads <= kSm90MaxThreads, "the kernel's launch bound is kSm90MaxThreads");
  // Opt in to the device's whole shared memory once per (instance, device).
  static std::atomic<uint64_t> configured{0};
  const uint64_t bit = device < kMaxCachedDevices ? uint64_t{1} << device : 0;
  if (bit == 0 || (configured.load(std::memory_order_acquire) & bit) == 0) {
    FP8SERVE_CUDA_RETURN_IF_ERROR(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dev.smem_per_block_optin));
    configured.fetch_or(bit, std::memory_order_release);
  }
  const int cluster_size = params.sched.cluster_size;
  if (cluster_size == 1) {
    kernel<<<c.grid, kThreads, c.smem_bytes, stream>>>(tmap_a, tmap_b, params);
    FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return absl::OkStatus();
  }
  // A cluster launch, its persistent grid no larger than the clusters that fit at once
  absl::StatusOr<int> fit = MaxActiveClusters(kernel, device, kThreads, c.smem_bytes, cluster_size);
  if (!fit.ok()) return fit.status();
  const int grid = std::min(c.grid, *fit * cluster_size);
  Sm90GemmParams p = params;
  p.sched.unit_stride = grid / cluster_size;
  const ClusterLaunchConfig config(static_cast<unsigned>(grid), kThreads, c.smem_bytes,
                                   static_cast<unsigned>(cluster_size), stream);
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaLaunchKernelEx(config.get(), kernel, tmap_a, tmap_b, p));
  return absl::OkStatus();
}

template <int BLOCK_M, int BLOCK_N, Fp8Format kBFormat, bool kPromote>
absl::Status DispatchOutput(const Fp8GemmArgs& a, const CUtensorMap& ta, const CUtensorMap& tb,
                            const Sm90GemmParams& p, const GemmConfig& c, int device, const DeviceTraits& dev,
                            cudaStream_t stream) {
  if constexpr (!kPromote) {
    if (a.output != GemmOutput::kF32) return Invalid(a, "the no-promotion test variant writes F32 only");
    return LaunchInstance<BLOCK_M, BLOCK_N, kBFormat, GemmOutput::kF32, false>(ta, tb, p, c, device, dev, stream);
  } else {
    switch (a.output) {
      case GemmOutput::kE4M3:
        // (CheckConfig refuses E4M3 output for the wide tile)
        if constexpr (BLOCK_N == kSm90BlockN) {
          return LaunchInstance<BLOCK_M, BLOCK_N, kBFormat, GemmOutput::kE4M3, true>(ta, tb, p, c, device, dev, stream);
        }
        break;
      case GemmOutput::kBF16:
        return LaunchInstance<BLOCK_M, BLOCK_N, kBFormat, GemmOutput::kBF16, true>(ta, tb, p, c, device, dev, stream);
      case GemmOutput::kF32:
        return LaunchInstance<BLOCK_M, BLOCK_N, kBFormat, GemmOutput::kF32, true>(ta, tb, p, c, device, dev, stream);
    }
    return Invalid(a, absl::StrCat("no instance for ", GemmOutputName(a.output), " output with block_n ", BLOCK_N));
  }
}

template <int BLOCK_M, int BLOCK_N, bool kPromote>
absl::Status DispatchFormat(const Fp8GemmArgs& a, const CUtensorMap& ta, const CUtensorMap& tb,
                            const Sm90GemmParams& p, const GemmConfig& c, int device, const DeviceTraits& dev,
                            cudaStream_t stream) {
  if constexpr (!kPromote) {
    if (a.b_format != Fp8Format::kE4M3) return Invalid(a, "the no-promotion test variant takes E4M3 weights only");
    return DispatchOutput<BLOCK_M, BLOCK_N, Fp8Format::kE4M3, false>(a, ta, tb, p, c, device, dev, stream);
  } else {
    if (a.b_format == Fp8Format::kE4M3) {
      return DispatchOutput<BLOCK_M, BLOCK_N, Fp8Format::kE4M3, true>(a, ta, tb, p, c, device, dev, stream);
    }
    return DispatchOutput<BLOCK_M, BLOCK_N, Fp8Format::kE5M2, true>(a, ta, tb, p, c, device, dev, stream);
  }
}

// The opt-in main-loop variants (128-wide tile, E4M3 weights, BF16 output; CheckConfig and
// LaunchSm90 have checked the rest).
template <int BLOCK_M>
absl::Status LaunchMainLoopVariant(const Fp8GemmArgs& a, const CUtensorMap& ta, const CUtensorMap& tb,
                                   const Sm90GemmParams& p, const GemmConfig& c, int device, const DeviceTraits& dev,
                                   cudaStream_t stream) {
  constexpr Fp8Format kE4M3 = Fp8Format::kE4M3;
  constexpr GemmOutput kBF16 = GemmOutput::kBF16;
  switch (c.main_loop) {
    case Sm90MainLoop::kCrossBank:
      return LaunchInstance<BLOCK_M, kSm90BlockN, kE4M3, kBF16, true, Sm90MainLoop::kCrossBank>(ta, tb, p, c, device,
                                                                                                 dev, stream);
    case Sm90MainLoop::kOneAccumulator:
      return LaunchInstance<BLOCK_M, kSm90BlockN, kE4M3, kBF16, true, Sm90MainLoop::kOneAccumulator>(
          ta, tb, p, c, device, dev, stream);
    case Sm90MainLoop::kOneAccumulatorCrossBank:
      return LaunchInstance<BLOCK_M, kSm90BlockN, kE4M3, kBF16, true, Sm90MainLoop::kOneAccumulatorCrossBank>(
          ta, tb, p, c, device, dev, stream);
    case Sm90MainLoop::kDefault:
      break;
  }
  return Invalid(a, "no instance for this main loop");
}

template <bool kPromote>
absl::Status LaunchSm90(const Fp8GemmArgs& a, const GemmConfig& c, cudaStream_t stream) {
  if (absl::Status st = CheckArgs(a); !st.ok()) return st;
  int device = 0;
  absl::StatusOr<DeviceTraits> dev = CurrentDeviceTraits(&device);
  if (!dev.ok()) return dev.status();
  if (dev->cc_major != 9 || dev->cc_minor != 0) {
    return absl::FailedPreconditionError(absl::StrCat("the sm90 FP8 GEMM needs compute capability 9.0; device ", device,
                                                      " is ", dev->cc_major, ".", dev->cc_minor));
  }
  if (absl::Status st = CheckConfig(a, c, *dev); !st.ok()) return st;
  if (!kPromote && c.k_splits != 1) return Invalid(a, "the no-promotion test variant does not split K");
  if (!kPromote && c.block_n != kSm90BlockN) return Invalid(a, "the no-promotion test variant has 128-wide tiles only");
  const bool variant_loop = c.main_loop != Sm90MainLoop::kDefault;
  if (variant_loop && (!kPromote || a.b_format != Fp8Format::kE4M3 || a.output != GemmOutput::kBF16)) {
    return Invalid(a, absl::StrCat("the ", Sm90MainLoopName(c.main_loop),
                                   " main loop has instances for E4M3 weights and BF16 output only"));
  }

  // NOTES: the tensor maps are encoded on every call (a few hundred ns of host work, no driver
  // round trip). Caching them per (pointer, shape) would be the next step if it ever shows up.
  absl::StatusOr<EncodeTiledFn> encode = TensorMapEncoder();
  if (!encode.ok()) return encode.status();
  // A CTA of a cluster loads 1/cluster_n of the A tile and 1/cluster_m of the B tile
  absl::StatusOr<CUtensorMap> tmap_a = MakeOperandMap(*encode, a.a, a.m, a.k, c.block_m / c.cluster_n, "A");
  if (!tmap_a.ok()) return tmap_a.status();
  // Tiled B (gemm_config.h) is a [n * k / 128, 128] array of 128-byte rows: 16 KB blocks of 128 rows
  const bool b_tiled = a.b_layout == WeightLayout::kTiled128;
  absl::StatusOr<CUtensorMap> tmap_b =
      b_tiled ? MakeOperandMap(*encode, a.b, a.n * (a.k / kGemmBlockK), kGemmBlockK, c.block_n / c.cluster_m, "B")
              : MakeOperandMap(*encode, a.b, a.n, a.k, c.block_n / c.cluster_m, "B");
  if (!tmap_b.ok()) return tmap_b.status();

  Sm90GemmParams p;
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

  if constexpr (kPromote) {
    if (variant_loop) {
      return c.block_m == 64
                 ? LaunchMainLoopVariant<64>(a, *tmap_a, *tmap_b, p, c, device, *dev, stream)
                 : LaunchMainLoopVariant<128>(a, *tmap_a, *tmap_b, p, c, device, *dev, stream);
    }
  }
  if (c.block_m == 64) {
    return DispatchFormat<64, kSm90BlockN, kPromote>(a, *tmap_a, *tmap_b, p, c, device, *dev, stream);
  }
  if constexpr (kPromote) {
    if (c.block_n == kSm90WideBlockN) {
      return DispatchFormat<128, kSm90WideBlockN, true>(a, *tmap_a, *tmap_b, p, c, device, *dev, stream);
    }
  }
  return DispatchFormat<128, kSm90BlockN, kPromote>(a, *tmap_a, *tmap_b, p, c, device, *dev, stream);
}

}  // namespace

absl::Status LaunchSm90Fp8Gemm(const Fp8GemmArgs& args, const GemmConfig& config, cudaStream_t stream) {
  return LaunchSm90<true>(args, config, stream);
}

// Test only: E4M3 weights and F32 output (the instances the promotion test needs), either BLOCK_M.
absl::Status LaunchSm90Fp8GemmNoPromotionForTest(const Fp8GemmArgs& args, const GemmConfig& config,
                                                 cudaStream_t stream) {
  return LaunchSm90<false>(args, config, stream);
}

}  // namespace fp8serve::cuda
