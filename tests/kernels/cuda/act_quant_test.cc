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

#define ASSERT_OK(expr)                                   \
  do {                                                    \
    const absl::Status st_ = (expr);                      \
    ASSERT_TRUE(st_.ok()) << #expr << ": " << st_.message(); \
  } while (0)

TEST_F(ActQuantGpuTest, BitIdenticalToCpu) {
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (auto [rows, cols] : {std::pair{1, 784}, {7, 300}, {64, 256}, {65, 129}, {1000, 4096}}) {
    std::vector<float> x(static_cast<size_t>(rows) * cols);
    for (float& v : x) v = normal(rng);
    const int groups = CeilDiv(cols, 128);
    std::vector<uint8_t> want_q(x.size()), got_q(x.size());
    std::vector<float> want_s(static_cast<size_t>(rows) * groups), got_s(want_s.size());
    QuantizeActivations(x.data(), rows, cols, want_q.data(), want_s.data());

    float *dx = nullptr, *ds = nullptr;
    uint8_t* dq = nullptr;
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMalloc(&dx, x.size() * sizeof(float))));
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMalloc(&dq, x.size())));
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMalloc(&ds, want_s.size() * sizeof(float))));
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice)));
    // Poison the outputs: a kernel that skips an element cannot pass by luck.
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMemset(dq, 0xAA, x.size())));
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMemset(ds, 0xFF, want_s.size() * sizeof(float))));
    ASSERT_OK(cuda::QuantizeActivations1x128(dx, rows, cols, dq, ds, nullptr));
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaDeviceSynchronize()));
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMemcpy(got_q.data(), dq, got_q.size(), cudaMemcpyDeviceToHost)));
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMemcpy(got_s.data(), ds, got_s.size() * sizeof(float), cudaMemcpyDeviceToHost)));
    cudaFree(dx);
    cudaFree(dq);
    cudaFree(ds);
    EXPECT_EQ(got_q, want_q) << rows << "x" << cols;
    EXPECT_EQ(got_s, want_s) << rows << "x" << cols;
  }
}

// The GEMMs' padded layout: rows ldq = CeilDiv(cols, 128) * 128 bytes apart, padding written as
// zero codes over a poisoned buffer, values and scales as the CPU's.
TEST_F(ActQuantGpuTest, PaddedLayoutZeroesThePadding) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (auto [rows, cols] : {std::pair{1, 784}, {65, 300}, {3, 10}}) {
    const int ldq = CeilDiv(cols, 128) * 128;
    std::vector<float> x(static_cast<size_t>(rows) * cols);
    for (float& v : x) v = normal(rng);
    const int groups = CeilDiv(cols, 128);
    std::vector<uint8_t> want_q(x.size());
    std::vector<float> want_s(static_cast<size_t>(rows) * groups), got_s(want_s.size());
    QuantizeActivations(x.data(), rows, cols, want_q.data(), want_s.data());
    std::vector<uint8_t> got_q(static_cast<size_t>(rows) * ldq);

    float *dx = nullptr, *ds = nullptr;
    uint8_t* dq = nullptr;
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMalloc(&dx, x.size() * sizeof(float))));
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMalloc(&dq, got_q.size())));
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMalloc(&ds, want_s.size() * sizeof(float))));
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice)));
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMemset(dq, 0x7F, got_q.size())));
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMemset(ds, 0xFF, want_s.size() * sizeof(float))));
    ASSERT_OK(cuda::QuantizeActivations1x128(dx, rows, cols, dq, ldq, ds, nullptr));
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaDeviceSynchronize()));
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMemcpy(got_q.data(), dq, got_q.size(), cudaMemcpyDeviceToHost)));
    ASSERT_OK(FP8SERVE_CUDA_STATUS(cudaMemcpy(got_s.data(), ds, got_s.size() * sizeof(float), cudaMemcpyDeviceToHost)));
    cudaFree(dx);
    cudaFree(dq);
    cudaFree(ds);
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < ldq; ++c) {
        const uint8_t want = c < cols ? want_q[static_cast<size_t>(r) * cols + c] : 0;
        ASSERT_EQ(got_q[static_cast<size_t>(r) * ldq + c], want) << "row " << r << " col " << c << " of " << cols;
      }
    }
    EXPECT_EQ(got_s, want_s) << rows << "x" << cols;
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
