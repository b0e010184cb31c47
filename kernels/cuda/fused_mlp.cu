// Launcher of the fused MLP kernel (device code in fused_mlp.cuh; the plan and the parameters come
// from fused_mlp_plan.cc).
#include <atomic>
#include <cstdint>
#include <mutex>

#include "kernels/cuda/cluster_launch.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/fused_mlp.cuh"
#include "kernels/cuda/fused_mlp.h"
#include "kernels/cuda/fused_mlp_params.h"

namespace fp8serve::cuda {

namespace {

// Allows `bytes` of dynamic shared memory for `kernel` on the current device, once per device and
// size (thread-safe; the attribute only grows). cudaFuncSetAttribute is not a stream operation, so
// it is legal while the stream is being captured.
absl::Status EnsureDynamicSmem(const void* kernel, int bytes, std::mutex& mu, std::atomic<int>* configured,
                               int num_slots) {
  int device = 0;
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  const bool cached = device >= 0 && device < num_slots;
  if (cached && configured[device].load(std::memory_order_acquire) >= bytes) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(mu);
  if (cached && configured[device].load(std::memory_order_relaxed) >= bytes) return absl::OkStatus();
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  if (cached) configured[device].store(bytes, std::memory_order_release);
  return absl::OkStatus();
}

template <int BLOCK_M, int kNumStages, bool kWgmma, bool kWiden = false>
absl::Status LaunchInstance(const FusedMlpParams& params, size_t smem_bytes, cudaStream_t stream) {
  constexpr int kMaxDevices = 64;
  static std::mutex mu;
  static std::atomic<int> configured[kMaxDevices] = {};
  const void* kernel = reinterpret_cast<const void*>(&fused_mlp_kernel<BLOCK_M, kNumStages, kWgmma, kWiden>);
  if (absl::Status st = EnsureDynamicSmem(kernel, static_cast<int>(smem_bytes), mu, configured, kMaxDevices);
      !st.ok()) {
    return st;
  }
  const unsigned row_blocks = static_cast<unsigned>((params.m + BLOCK_M - 1) / BLOCK_M);
  if (params.cluster_size == 1) {
    fused_mlp_kernel<BLOCK_M, kNumStages, kWgmma, kWiden><<<row_blocks, kFusedNumThreads, smem_bytes, stream>>>(params);
    FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return absl::OkStatus();
  }
  // A cluster of cluster_size consecutive CTAs along x per row block
  const ClusterLaunchConfig config(row_blocks * static_cast<unsigned>(params.cluster_size), kFusedNumThreads,
                                   smem_bytes, static_cast<unsigned>(params.cluster_size), stream);
  FP8SERVE_CUDA_RETURN_IF_ERROR(
      cudaLaunchKernelEx(config.get(), fused_mlp_kernel<BLOCK_M, kNumStages, kWgmma, kWiden>, params));
  return absl::OkStatus();
}

// The launch of instance kFusedInstances[which] with the MMA kind given by kWgmma / kWiden.
template <int kWhich, bool kWgmma, bool kWiden>
absl::Status LaunchInstanceNumber(const FusedMlpParams& p, size_t smem_bytes, cudaStream_t stream) {
  constexpr FusedInstance kInst = kFusedInstances[kWhich];
  return LaunchInstance<kInst.block_m, kInst.stages, kWgmma, kWiden>(p, smem_bytes, stream);
}
template <bool kWgmma, bool kWiden>
absl::Status LaunchInstanceOf(int which, const FusedMlpParams& p, size_t smem_bytes, cudaStream_t stream) {
  static_assert(kFusedNumInstances == 4, "one case per instance");
  switch (which) {
    case 0: return LaunchInstanceNumber<0, kWgmma, kWiden>(p, smem_bytes, stream);
    case 1: return LaunchInstanceNumber<1, kWgmma, kWiden>(p, smem_bytes, stream);
    case 2: return LaunchInstanceNumber<2, kWgmma, kWiden>(p, smem_bytes, stream);
    case 3: return LaunchInstanceNumber<3, kWgmma, kWiden>(p, smem_bytes, stream);
  }
  return absl::InternalError("fused MLP: no kernel instance");
}

}  // namespace

absl::Status LaunchFusedMlp(const FusedMlpArgs& args, const DeviceTraits& device, cudaStream_t stream) {
  absl::StatusOr<FusedLaunch> launch = PrepareFusedLaunch(args, device);
  if (!launch.ok()) return launch.status();
  if (args.m == 0) return absl::OkStatus();
  const FusedMlpParams& p = launch->params;
  const int which = launch->instance;
  const size_t smem_bytes = launch->plan.smem_bytes;
  switch (launch->plan.mma) {
    case FusedMma::kWgmma: return LaunchInstanceOf<true, false>(which, p, smem_bytes, stream);
    case FusedMma::kMmaSyncF16: return LaunchInstanceOf<false, true>(which, p, smem_bytes, stream);
    default: return LaunchInstanceOf<false, false>(which, p, smem_bytes, stream);
  }
}

}  // namespace fp8serve::cuda
