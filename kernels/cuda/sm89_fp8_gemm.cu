// Launcher of the mma.sync FP8 GEMM (device code in sm89_fp8_gemm.cuh): the checks and the plan come
// from sm89_plan.cc (PrepareSm89Launch), the instance (one of 18: BLOCK_M x B format x output kind)
// from DispatchSm89Instance (sm89_params.h); this file starts it.
#include "kernels/cuda/sm89_fp8_gemm.cuh"

#include <cstdint>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/fp8_gemm.h"

namespace fp8serve::cuda {
namespace {

static_assert(kSm89BlockN == sm89::kBlockN, "the kernel is written for 128-column tiles");

// Devices whose shared-memory opt-in is remembered; a launch on a higher ordinal opts in every time.
constexpr int kMaxDevices = 64;

// Starts instance I for a prepared launch.
template <typename I>
absl::Status LaunchInstance(const Sm89Launch& l, cudaStream_t stream) {
  constexpr size_t kSmemBytes = sm89::SmemBytes<I::BLOCK_M>();
  auto* kernel = &sm89_fp8_gemm_kernel<I::BLOCK_M, I::kBFormat, I::kOutput>;
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

  kernel<<<static_cast<unsigned>(l.grid), sm89::kNumThreads, kSmemBytes, stream>>>(l.params);
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchSm89Fp8Gemm(const Fp8GemmArgs& args, const GemmConfig& config, cudaStream_t stream) {
  absl::StatusOr<Sm89Launch> l = PrepareSm89Launch(args, config);
  if (!l.ok()) return l.status();
  return DispatchSm89Instance(*l, [&](auto instance) { return LaunchInstance<decltype(instance)>(*l, stream); });
}

}  // namespace fp8serve::cuda
