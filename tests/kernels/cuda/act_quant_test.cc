// GPU: the 1x128 activation quantizer must be bit-identical to the CPU's. Skips loudly without a GPU.
#include "kernels/cuda/act_quant.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/numerics/quantize.h"
#include "tests/kernels/cuda/gpu_skip.h"

namespace fp8serve {
namespace {

class ActQuantGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FP8SERVE_SKIP_WITHOUT_GPU();
  }
};

struct Quantized {
  std::vector<uint8_t> q;  // [rows, ldq]
  std::vector<float> s;    // [rows, CeilDiv(cols, 128)]
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

std::vector<float> RandomRows(int rows, int cols, float sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> x(static_cast<size_t>(rows) * cols);
  for (float& v : x) v = normal(rng);
  return x;
}

TEST_F(ActQuantGpuTest, BitIdenticalToCpu) {
  for (auto [rows, cols] : {std::pair{1, 784}, {7, 300}, {64, 256}, {65, 129}, {1000, 4096}}) {
    const std::vector<float> x = RandomRows(rows, cols, 3.0f, 42u + rows);
    std::vector<uint8_t> want_q(x.size());
    std::vector<float> want_s(static_cast<size_t>(rows) * CeilDiv(cols, 128));
    QuantizeActivations(x.data(), rows, cols, want_q.data(), want_s.data());
    absl::StatusOr<Quantized> got = QuantizeOnGpu(x, rows, cols, /*ldq=*/cols, 0xAA);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->q, want_q) << rows << "x" << cols;
    EXPECT_EQ(got->s, want_s) << rows << "x" << cols;
  }
}

// The GEMMs' padded layout: rows ldq = CeilDiv(cols, 128) * 128 bytes apart, padding written as
// zero codes over a poisoned buffer, values and scales as the CPU's.
TEST_F(ActQuantGpuTest, PaddedLayoutZeroesThePadding) {
  for (auto [rows, cols] : {std::pair{1, 784}, {65, 300}, {3, 10}}) {
    const int ldq = CeilDiv(cols, 128) * 128;
    const std::vector<float> x = RandomRows(rows, cols, 2.0f, 7u + rows);
    std::vector<uint8_t> want_q(x.size());
    std::vector<float> want_s(static_cast<size_t>(rows) * CeilDiv(cols, 128));
    QuantizeActivations(x.data(), rows, cols, want_q.data(), want_s.data());
    absl::StatusOr<Quantized> got = QuantizeOnGpu(x, rows, cols, ldq, 0x7F);
    ASSERT_TRUE(got.ok()) << got.status();
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < ldq; ++c) {
        const uint8_t want = c < cols ? want_q[static_cast<size_t>(r) * cols + c] : 0;
        ASSERT_EQ(got->q[static_cast<size_t>(r) * ldq + c], want) << "row " << r << " col " << c << " of " << cols;
      }
    }
    EXPECT_EQ(got->s, want_s) << rows << "x" << cols;
  }
}

TEST(ActQuantArgsTest, RejectsAStrideOutsideThePaddedRow) {
  // Checked before anything touches the device, so this runs on every machine.
  EXPECT_EQ(cuda::QuantizeActivations1x128(nullptr, 2, 300, nullptr, 299, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::QuantizeActivations1x128(nullptr, 2, 300, nullptr, 512, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fp8serve
