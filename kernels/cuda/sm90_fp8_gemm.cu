// Launchers of the Hopper FP8 GEMM (device code in sm90_fp8_gemm.cuh): the checks and the plan
// come from sm90_plan.cc (PrepareSm90Launch), the instance from DispatchSm90Instance (sm90_params.h,
// which lists the 24 instances); this file encodes the two TMA tensor maps through the driver and
// starts the instance, as a cluster launch where the config has clusters. The pipeline depth is a
// runtime value (at most kSm90MaxStages), so the config's stage count does not multiply the
// instances.
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

// The tensor map of one operand (sm90_params.h's Sm90OperandMap): a [rows, cols] byte array whose
// box is [box_rows, 128] bytes, stored in shared memory with the 128-byte swizzle the wgmma
// descriptors describe. Rows past `rows` read as zeros.
absl::StatusOr<CUtensorMap> EncodeOperandMap(EncodeTiledFn encode, const Sm90OperandMap& op, const char* name) {
  CUtensorMap map;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(op.cols), static_cast<cuuint64_t>(op.rows)};
  const cuuint64_t row_stride_bytes[1] = {static_cast<cuuint64_t>(op.cols)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(kGemmBlockK), static_cast<cuuint32_t>(op.box_rows)};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<uint8_t*>(op.base), dims,
                            row_stride_bytes, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    return absl::InternalError(absl::StrCat("cuTensorMapEncodeTiled for ", name, " [", op.rows, ", ", op.cols,
                                            "] failed with CUresult ", static_cast<int>(r)));
  }
  return map;
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

// Starts instance I of the kernel for a prepared launch.
template <typename I>
absl::Status LaunchInstance(const CUtensorMap& tmap_a, const CUtensorMap& tmap_b, const Sm90Launch& l, int device,
                            const DeviceTraits& dev, cudaStream_t stream) {
  constexpr auto kernel = &sm90_fp8_gemm_kernel<I::BLOCK_M, I::BLOCK_N, I::kBFormat, I::kOutput, I::kPromote, I::kLoop>;
  // Opt in to the device's whole shared memory once per (instance, device).
  static std::atomic<uint64_t> configured{0};
  const uint64_t bit = device < kMaxCachedDevices ? uint64_t{1} << device : 0;
  if (bit == 0 || (configured.load(std::memory_order_acquire) & bit) == 0) {
    FP8SERVE_CUDA_RETURN_IF_ERROR(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dev.smem_per_block_optin));
    configured.fetch_or(bit, std::memory_order_release);
  }
  const int cluster_size = l.params.sched.cluster_size;
  if (cluster_size == 1) {
    kernel<<<l.grid, I::kThreads, l.smem_bytes, stream>>>(tmap_a, tmap_b, l.params);
    FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return absl::OkStatus();
  }
  // A cluster launch, its persistent grid no larger than the clusters that fit at once
  absl::StatusOr<int> fit = MaxActiveClusters(kernel, device, I::kThreads, l.smem_bytes, cluster_size);
  if (!fit.ok()) return fit.status();
  const int grid = std::min(l.grid, *fit * cluster_size);
  Sm90GemmParams p = l.params;
  p.sched.unit_stride = grid / cluster_size;
  const ClusterLaunchConfig config(static_cast<unsigned>(grid), I::kThreads, l.smem_bytes,
                                   static_cast<unsigned>(cluster_size), stream);
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaLaunchKernelEx(config.get(), kernel, tmap_a, tmap_b, p));
  return absl::OkStatus();
}

// Checks and plans the launch (sm90_plan.cc), encodes the two tensor maps and starts the instance.
absl::Status LaunchSm90(const Fp8GemmArgs& a, const GemmConfig& c, bool promote, cudaStream_t stream) {
  int device = 0;
  absl::StatusOr<DeviceTraits> dev = CurrentDeviceTraits(&device);
  if (!dev.ok()) return dev.status();
  absl::StatusOr<Sm90Launch> l = PrepareSm90Launch(a, c, *dev, promote);
  if (!l.ok()) return l.status();
  // NOTES: the tensor maps are encoded on every call (a few hundred ns of host work, no driver
  // round trip). Caching them per (pointer, shape) would be the next step if it ever shows up.
  absl::StatusOr<EncodeTiledFn> encode = TensorMapEncoder();
  if (!encode.ok()) return encode.status();
  absl::StatusOr<CUtensorMap> tmap_a = EncodeOperandMap(*encode, l->a, "A");
  if (!tmap_a.ok()) return tmap_a.status();
  absl::StatusOr<CUtensorMap> tmap_b = EncodeOperandMap(*encode, l->b, "B");
  if (!tmap_b.ok()) return tmap_b.status();
  return DispatchSm90Instance(*l, [&](auto instance) {
    return LaunchInstance<decltype(instance)>(*tmap_a, *tmap_b, *l, device, *dev, stream);
  });
}

}  // namespace

absl::Status LaunchSm90Fp8Gemm(const Fp8GemmArgs& args, const GemmConfig& config, cudaStream_t stream) {
  return LaunchSm90(args, config, /*promote=*/true, stream);
}

// Test only: E4M3 weights and F32 output (the instances the promotion test needs), either BLOCK_M.
absl::Status LaunchSm90Fp8GemmNoPromotionForTest(const Fp8GemmArgs& args, const GemmConfig& config,
                                                 cudaStream_t stream) {
  return LaunchSm90(args, config, /*promote=*/false, stream);
}

}  // namespace fp8serve::cuda
