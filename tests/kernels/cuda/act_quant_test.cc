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

// The quantizer's codes come from a reciprocal where that provably gives the division's code
// (kernels/cuda/requant.cuh); these rows put x / s on and around every E4M3 rounding boundary (the
// midpoints between adjacent codes, where ties go to even, and the saturation point), stepped
// through the neighbouring floats, for scales over many binades, plus zeros of both signs,
// subnormals, infinities and NaN: the cases where a reciprocal and a division could disagree.
TEST_F(ActQuantGpuTest, BitIdenticalOnRoundingBoundaries) {
  std::vector<float> boundaries;
  for (int c = 0; c < 0x7e; ++c) boundaries.push_back(0.5f * (DecodeE4M3(c) + DecodeE4M3(c + 1)));
  boundaries.push_back(kE4M3Max);
  constexpr int kSteps = 6;  // floats on each side of a boundary
  std::vector<float> values;
  for (float b : boundaries) {
    for (int sign : {1, -1}) {
      for (int k = -kSteps; k <= kSteps; ++k) values.push_back(sign * b);  // stepped by k below
    }
  }
  const int per_row_groups = static_cast<int>((values.size() + 126) / 127);
  const int cols = per_row_groups * 128;
  std::vector<float> x;
  // Scales over many binades, one subnormal (which divides) and one near the top of FP32
  const float amaxes[] = {1e-37f, 0x1p-40f, 0x1.3p-12f, 0.0371f, 1.0f, 3.1f, 448.0f, 0x1.9p20f, 0x1p60f, 3e38f};
  for (float amax : amaxes) {
    float s = amax / kE4M3Max;
    s = s > 0.0f ? s : 1.0f;
    std::vector<float> row(static_cast<size_t>(cols), 0.0f);
    size_t next = 0;
    for (int g = 0; g < per_row_groups; ++g) {
      row[static_cast<size_t>(g) * 128] = amax;  // every group's amax, so its scale is s
      for (int i = 1; i < 128 && next < values.size(); ++i, ++next) {
        // values[next] = +-boundary; step it k floats through the neighbours of boundary x s
        const int k = static_cast<int>(next % (2 * kSteps + 1)) - kSteps;
        float v = values[next] * s;
        for (int j = 0; j < (k < 0 ? -k : k); ++j) v = std::nextafter(v, k < 0 ? 0.0f : v * 2.0f);
        row[static_cast<size_t>(g) * 128 + i] = std::fabs(v) <= amax ? v : std::copysign(amax, v);
      }
    }
    x.insert(x.end(), row.begin(), row.end());
  }
  // A row of special values (its groups' scales come from their finite values)
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::denorm_min(), -1e-40f, 1e-38f, -3.0f, 5.0f,
                            nan, -nan, 1e30f, -1e-30f};
  std::vector<float> row(static_cast<size_t>(cols), 0.0f);
  for (size_t i = 0; i < row.size(); ++i) row[i] = specials[i % (sizeof(specials) / sizeof(specials[0]))];
  row[static_cast<size_t>(cols) - 1] = inf;  // the last group: an infinite amax
  row[static_cast<size_t>(cols) - 2] = -inf;
  x.insert(x.end(), row.begin(), row.end());

  const int rows = static_cast<int>(x.size() / static_cast<size_t>(cols));
  std::vector<uint8_t> want_q(x.size());
  std::vector<float> want_s(static_cast<size_t>(rows) * per_row_groups);
  QuantizeActivations(x.data(), rows, cols, want_q.data(), want_s.data());
  absl::StatusOr<Quantized> got = QuantizeOnGpu(x, rows, cols, cols, 0x55);
  ASSERT_TRUE(got.ok()) << got.status();
  int mismatches = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (got->q[i] != want_q[i] && ++mismatches <= 10) {
      ADD_FAILURE() << "row " << i / cols << " col " << i % cols << ": x " << std::hexfloat << x[i] << " scale "
                    << want_s[(i / cols) * per_row_groups + (i % cols) / 128] << ": GPU code 0x" << std::hex
                    << int(got->q[i]) << ", CPU 0x" << int(want_q[i]);
    }
  }
  EXPECT_EQ(mismatches, 0);
  for (size_t i = 0; i < want_s.size(); ++i) {
    // NaN scales cannot occur (amax ignores NaN); compare bits
    EXPECT_EQ(std::memcmp(&got->s[i], &want_s[i], sizeof(float)), 0) << "scale " << i;
  }
  std::printf("%d rows x %d columns on rounding boundaries and special values: %d mismatches\n", rows, cols, mismatches);
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
