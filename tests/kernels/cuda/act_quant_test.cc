// GPU: the 1x128 activation quantizer must be bit-identical to the CPU's. Skips loudly without a GPU.
#include "kernels/cuda/act_quant.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/numerics/fp8.h"
#include "kernels/numerics/quantize.h"
#include "tests/kernels/cuda/act_quant_cases.h"
#include "tests/kernels/cuda/gpu_skip.h"

namespace fp8serve {
namespace {

using namespace act_quant_test;  // Quantized and the checks (act_quant_cases.h)

class ActQuantGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FP8SERVE_SKIP_WITHOUT_GPU();
  }
};

// Runs the GPU quantizer on x [rows, cols] into rows ldq bytes apart, over outputs poisoned with
// `poison_code` and NaN scales (a kernel that skips an element cannot pass by luck).
absl::StatusOr<Quantized> QuantizeOnGpu(const std::vector<float>& x, int rows, int cols, int ldq, int poison_code) {
  Quantized out;
  out.q.resize(static_cast<size_t>(rows) * ldq);
  out.s.resize(static_cast<size_t>(rows) * CeilDiv(cols, 128));
  float *dx = nullptr, *ds = nullptr;
  uint8_t* dq = nullptr;
  absl::Status st = FP8SERVE_CUDA_STATUS(cudaMalloc(&dx, x.size() * sizeof(float)));
  if (st.ok()) st = FP8SERVE_CUDA_STATUS(cudaMalloc(&dq, out.q.size()));
  if (st.ok()) st = FP8SERVE_CUDA_STATUS(cudaMalloc(&ds, out.s.size() * sizeof(float)));
  if (st.ok()) st = FP8SERVE_CUDA_STATUS(cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice));
  if (st.ok()) st = FP8SERVE_CUDA_STATUS(cudaMemset(dq, poison_code, out.q.size()));
  if (st.ok()) st = FP8SERVE_CUDA_STATUS(cudaMemset(ds, 0xFF, out.s.size() * sizeof(float)));
  if (st.ok()) st = cuda::QuantizeActivations1x128(dx, rows, cols, dq, ldq, ds, nullptr);
  if (st.ok()) st = FP8SERVE_CUDA_STATUS(cudaDeviceSynchronize());
  if (st.ok()) st = FP8SERVE_CUDA_STATUS(cudaMemcpy(out.q.data(), dq, out.q.size(), cudaMemcpyDeviceToHost));
  if (st.ok()) {
    st = FP8SERVE_CUDA_STATUS(cudaMemcpy(out.s.data(), ds, out.s.size() * sizeof(float), cudaMemcpyDeviceToHost));
  }
  cudaFree(dx);
  cudaFree(dq);
  cudaFree(ds);
  if (!st.ok()) return st;
  return out;
}

TEST_F(ActQuantGpuTest, BitIdenticalToCpu) {
  CheckBitIdentical(QuantizeOnGpu, {{1, 784}, {7, 300}, {64, 256}, {65, 129}, {1000, 4096}});
}

TEST_F(ActQuantGpuTest, PaddedLayoutZeroesThePadding) { CheckPaddedLayout(QuantizeOnGpu); }

TEST_F(ActQuantGpuTest, BitIdenticalOnRoundingBoundaries) { CheckRoundingBoundaries(QuantizeOnGpu); }

TEST(ActQuantArgsTest, RejectsAStrideOutsideThePaddedRow) {
  // Checked before anything touches the device, so this runs on every machine.
  EXPECT_EQ(cuda::QuantizeActivations1x128(nullptr, 2, 300, nullptr, 299, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::QuantizeActivations1x128(nullptr, 2, 300, nullptr, 512, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fp8serve
