// LaunchFp8Gemm: the argument checks shared by both kernels (fp8_gemm_args.cc), the config's
// generic checks, then dispatch on the config's kernel.
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/fp8_gemm.h"

#include "absl/strings/str_cat.h"

namespace fp8serve::cuda {

namespace {

absl::Status Invalid(const Fp8GemmArgs& a, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("FP8 GEMM ", a.m, "x", a.n, "x", a.k, ": ", what));
}

absl::Status CheckConfig(const Fp8GemmArgs& a, const GemmConfig& c) {
  // Each launcher checks the block_n it has instances for (sm89: 128, which divides the padded n;
  // sm90: 128, or 192 with the last N-tile reaching past n).
  if (c.block_k != kGemmBlockK || c.block_n < 1 || c.block_m < 1) {
    return Invalid(a, absl::StrCat("config does not tile the problem: ", DescribeGemmConfig(c)));
  }
  if (c.k_splits > 1 && a.workspace == nullptr) return Invalid(a, "split-K config without a workspace");
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchFp8Gemm(const Fp8GemmArgs& args, const GemmConfig& config, cudaStream_t stream) {
  if (absl::Status st = CheckFp8GemmArgs(args); !st.ok()) return st;
  if (absl::Status st = CheckConfig(args, config); !st.ok()) return st;
  switch (config.kernel) {
    case GemmKernel::kSm90Wgmma: return LaunchSm90Fp8Gemm(args, config, stream);
    case GemmKernel::kSm89MmaSync: return LaunchSm89Fp8Gemm(args, config, stream);
  }
  return Invalid(args, "unknown kernel");
}

absl::StatusOr<DeviceTraits> QueryDeviceTraits(int device) {
  DeviceTraits t;
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&t.cc_major, cudaDevAttrComputeCapabilityMajor, device));
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&t.cc_minor, cudaDevAttrComputeCapabilityMinor, device));
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&t.num_sms, cudaDevAttrMultiProcessorCount, device));
  FP8SERVE_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&t.smem_per_block_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return t;
}

}  // namespace fp8serve::cuda
