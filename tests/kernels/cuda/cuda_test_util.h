// Shared pieces of the GPU kernel tests (fp8_gemm_test, fused_mlp_test): skipping loudly without a
// device, device buffers, gemm_config.h's padded device layout built on the host, and the error
// bound of one FP8 GEMM against the CPU reference (kernels/cpu/mlp_reference.h).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/cpu/mlp_reference.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/gemm_config.h"
#include "kernels/mlp_weights.h"
#include "kernels/numerics/quantize.h"
#include "tests/kernels/cuda/gpu_skip.h"

#define FP8SERVE_ASSERT_OK(expr)                                  \
  do {                                                            \
    const ::absl::Status fp8serve_st_ = (expr);                   \
    ASSERT_TRUE(fp8serve_st_.ok()) << #expr << ": " << fp8serve_st_; \
  } while (0)

namespace fp8serve::cuda::gpu_test {

// ---------------------------------------------------------------------------------------------
// The error bound of one FP8 GEMM against the CPU reference.
//
// Both sides multiply the same FP8 values: an FP8 x FP8 product has at most 8 significant bits and
// lies inside FP32's normal range, so every product is exact on both sides. What differs is how
// products are summed and the FP32 roundings after that. With u = 2^-24, for one output element,
// group g of K, S_g = sum_{k in g} |qa * qw| and s_g = |a_scale * b_scale| of that group:
//  (1) CPU: a sequential FP32 sum of at most 128 products:       |err| <= 127 u S_g.
//  (2) GPU: the tensor cores sum a group in 4 MMA steps of k32 into an accumulator that keeps
//      about 13 fraction bits (e8m13) and truncates: each step loses < 2^-13 of the running
//      |sum| <= S_g, so                                            |err| <  4 * 2^-13 S_g = 2^-11 S_g.
//      With mixed signs these errors mostly cancel; with all products positive (the promotion
//      test) they all point the same way, and the model above is then also the expected size.
//  (3) Promotion acc += (a_s * b_s) * P_g rounds the scale product and the FMA (2u of s_g |P_g|),
//      the G promoted terms are summed in different orders (<= G u sum_g s_g S_g), and a
//      per-channel scale is applied after the sum on the GPU but inside promotion on the CPU (2u).
//  Summed over groups with their scales: |gpu - ref| <= (2^-11 + (133 + G) u) * L1, where
//      L1 = sum_g s_g S_g   (computed on the host in double),
//  which is < 2^-10.9 L1 for G <= 128 (K <= 16384). kGemmTol = 2^-10 leaves a margin of about 2x
//  for an accumulator narrower than modelled. The bias add rounds once more (u |v|): kBiasRel
//  |bias| covers the bias's share, the accumulator's share is inside the L1 term. ReLU is
//  1-Lipschitz and adds nothing. kTiny only keeps an all-zero L1 from demanding bit equality of
//  values that are exactly zero on both sides anyway.
// The tests print max(|gpu - ref| / L1) per case, so the GPU session sees the margin it actually has.
inline constexpr double kGemmTol = 1.0 / 1024.0;
inline constexpr double kBiasRel = 1.0 / (1 << 22);
inline constexpr double kTiny = 1e-30;

// The bound for one output element. `spread` is sum_k |w s_w| * delta_k, for inputs that may differ
// from the reference's by delta (a previous GPU layer's output, requantized): the exact difference
// that causes, plus kGemmTol of the larger L1 the GPU then sums.
inline double GemmBound(double l1, double spread, float bias) {
  return kGemmTol * l1 + (1.0 + kGemmTol) * spread + kBiasRel * std::fabs(static_cast<double>(bias)) + kTiny;
}

// The spacing of E4M3 values around magnitude u (u >= 0, within the finite range): 2^-9 in the
// subnormal range, 2^(floor(log2 u) - 3) above it.
inline double E4M3Spacing(double u) {
  if (u < 1.0 / 64.0) return 1.0 / 512.0;
  int e = 0;
  std::frexp(u, &e);  // u = f * 2^e, f in [0.5, 1): floor(log2 u) = e - 1
  return std::ldexp(1.0, e - 1 - 3);
}

// The spacing of BF16 values around magnitude u (8 significant bits).
inline double Bf16Spacing(double u) {
  if (u < FLT_MIN) return std::ldexp(1.0, -133);
  int e = 0;
  std::frexp(u, &e);
  return std::ldexp(1.0, e - 1 - 7);
}

// ---------------------------------------------------------------------------------------------
// A fixture base that skips loudly without a usable device and otherwise holds the device's
// traits and a stream. Base is ::testing::Test or ::testing::TestWithParam<T>.
template <typename Base>
class GpuFixture : public Base {
 protected:
  void SetUp() override {
    FP8SERVE_SKIP_WITHOUT_GPU();
    absl::StatusOr<DeviceTraits> traits = QueryDeviceTraits(0);
    ASSERT_TRUE(traits.ok()) << traits.status();
    traits_ = *traits;
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess);
  }
  void TearDown() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }
  bool IsSm90() const { return traits_.cc_major == 9 && traits_.cc_minor == 0; }

  DeviceTraits traits_;
  cudaStream_t stream_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Device memory owned by a test, freed when it goes out of scope. An empty upload leaves a null
// pointer, which is what the kernels' optional arguments (col_scales, bias) expect.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      Reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  absl::Status Allocate(size_t bytes) {
    Reset();
    if (bytes == 0) return absl::OkStatus();
    FP8SERVE_CUDA_RETURN_IF_ERROR(cudaMalloc(&ptr_, bytes));
    bytes_ = bytes;
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status Upload(const std::vector<T>& v) {
    if (absl::Status st = Allocate(v.size() * sizeof(T)); !st.ok()) return st;
    if (bytes_ > 0) FP8SERVE_CUDA_RETURN_IF_ERROR(cudaMemcpy(ptr_, v.data(), bytes_, cudaMemcpyHostToDevice));
    return absl::OkStatus();
  }
  // Every byte set to `byte` (0xFF makes NaN floats and BF16s, 0x7F the E4M3 NaN code).
  absl::Status Fill(int byte) {
    if (bytes_ > 0) FP8SERVE_CUDA_RETURN_IF_ERROR(cudaMemset(ptr_, byte, bytes_));
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status Download(std::vector<T>* out) const {
    out->resize(bytes_ / sizeof(T));
    if (bytes_ > 0) FP8SERVE_CUDA_RETURN_IF_ERROR(cudaMemcpy(out->data(), ptr_, bytes_, cudaMemcpyDeviceToHost));
    return absl::OkStatus();
  }
  template <typename T = void>
  T* get() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void Reset() {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Host work split over the machine's cores by rows (the GPU machine has 16; references of the
// larger cases are billions of multiply-adds).
inline void ParallelFor(int n, const std::function<void(int, int)>& fn) {
  if (n <= 0) return;
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = std::clamp(n, 1, std::min(hw, 32));
  if (threads == 1) {
    fn(0, n);
    return;
  }
  const int chunk = CeilDiv(n, threads);
  std::vector<std::thread> pool;
  for (int begin = 0; begin < n; begin += chunk) pool.emplace_back(fn, begin, std::min(n, begin + chunk));
  for (std::thread& t : pool) t.join();
}

inline int PadTo128(int x) { return CeilDiv(x, kGemmBlockK) * kGemmBlockK; }

// The CPU oracle, row blocks in parallel (rows are independent: each quantizes its own groups).
inline void ParallelReferenceLayer(const MlpLayer& layer, const float* x, int rows, const Activation* act, float* y) {
  ParallelFor(rows, [&](int r0, int r1) {
    ReferenceLayer(layer, x + static_cast<size_t>(r0) * layer.in, r1 - r0, act, y + static_cast<size_t>(r0) * layer.out);
  });
}

// One FP8 layer in gemm_config.h's padded device layout.
struct PaddedLayer {
  int n = 0, k = 0, n_pad = 0, k_pad = 0;
  Fp8Format format = Fp8Format::kE4M3;
  std::vector<uint8_t> w;         // [n_pad, k_pad], zero codes in the padding
  std::vector<float> b_scales;    // [n_pad/128, k_pad/128]
  std::vector<float> col_scales;  // [n_pad] for per-channel weights (padding 1), else empty
  std::vector<float> bias;        // [n_pad] (padding 0), or empty without bias
};

// Per-tensor scales are expanded to every block, block scales kept as they are (their grid is
// already [ceil(n/128), ceil(k/128)] = [n_pad/128, k_pad/128]), per-channel scales become column
// scales with b_scales = 1.
inline PaddedLayer PadLayer(const MlpLayer& l) {
  PaddedLayer p;
  p.n = l.out;
  p.k = l.in;
  p.n_pad = PadTo128(l.out);
  p.k_pad = PadTo128(l.in);
  p.format = l.format;
  p.w.assign(static_cast<size_t>(p.n_pad) * p.k_pad, 0);
  for (int n = 0; n < l.out; ++n) {
    std::copy_n(l.fp8.data() + static_cast<size_t>(n) * l.in, l.in, p.w.data() + static_cast<size_t>(n) * p.k_pad);
  }
  const int nb = p.n_pad / kGemmBlockK, kb = p.k_pad / kGemmBlockK;
  p.b_scales.assign(static_cast<size_t>(nb) * kb, 1.0f);
  switch (l.granularity) {
    case ScaleGranularity::kPerTensor:
      std::fill(p.b_scales.begin(), p.b_scales.end(), l.scales[0]);
      break;
    case ScaleGranularity::kBlock128:
      p.b_scales = l.scales;  // [ceil(out/128), ceil(in/128)] row-major
      break;
    case ScaleGranularity::kPerChannel:
      p.col_scales.assign(p.n_pad, 1.0f);
      std::copy(l.scales.begin(), l.scales.end(), p.col_scales.begin());
      break;
  }
  if (!l.bias.empty()) {
    p.bias.assign(p.n_pad, 0.0f);
    std::copy(l.bias.begin(), l.bias.end(), p.bias.begin());
  }
  return p;
}

// Activations quantized exactly as the GPU quantizer does (fp8serve::QuantizeActivations is
// bit-identical to it), logical and in the device layout.
struct QuantizedActivations {
  int rows = 0, k = 0, k_pad = 0;
  std::vector<uint8_t> q;       // [rows, k]
  std::vector<float> scales;    // [rows, k_pad/128] (= CeilDiv(k, 128) groups)
  std::vector<uint8_t> padded;  // [rows, k_pad], zero codes in the padding
};

inline QuantizedActivations QuantizeForDevice(const float* x, int rows, int k) {
  QuantizedActivations a;
  a.rows = rows;
  a.k = k;
  a.k_pad = PadTo128(k);
  a.q.resize(static_cast<size_t>(rows) * k);
  a.scales.resize(static_cast<size_t>(rows) * (a.k_pad / kGemmBlockK));
  QuantizeActivations(x, rows, k, a.q.data(), a.scales.data());
  a.padded.assign(static_cast<size_t>(rows) * a.k_pad, 0);
  for (int m = 0; m < rows; ++m) {
    std::copy_n(a.q.data() + static_cast<size_t>(m) * k, k, a.padded.data() + static_cast<size_t>(m) * a.k_pad);
  }
  return a;
}

// For y = layer(x) with the reference's quantized input (qa [rows, in], sa [rows, CeilDiv(in, 128)]):
//   l1[m, n]     = sum_g |sa[m, g] * s_w(n, g)| * sum_{k in g} |qa[m, k] * qw[n, k]|
//   spread[m, n] = sum_k |qw[n, k] * s_w(n, k)| * delta[m, k]   (only when delta is given)
// in double. s_w is the weight's scale for the element (per-tensor, per-channel or block).
inline void ContractMagnitudes(const MlpLayer& layer, const uint8_t* qa, const float* sa, int rows, const double* delta,
                               std::vector<double>* l1, std::vector<double>* spread) {
  const int K = layer.in, N = layer.out, G = CeilDiv(K, kQuantBlock);
  std::vector<float> xa(static_cast<size_t>(rows) * K), wa(static_cast<size_t>(N) * K);
  for (size_t i = 0; i < xa.size(); ++i) xa[i] = std::fabs(DecodeE4M3(qa[i]));
  for (size_t i = 0; i < wa.size(); ++i) wa[i] = std::fabs(DecodeFp8(layer.format, layer.fp8[i]));
  std::vector<double> ws(static_cast<size_t>(N) * G);  // |s_w(n, g)|
  for (int n = 0; n < N; ++n) {
    for (int g = 0; g < G; ++g) {
      ws[static_cast<size_t>(n) * G + g] = std::fabs(WeightScaleAt(layer.scales.data(), layer.granularity, K, n, g * kQuantBlock));
    }
  }
  l1->assign(static_cast<size_t>(rows) * N, 0.0);
  if (spread != nullptr) spread->assign(static_cast<size_t>(rows) * N, 0.0);
  ParallelFor(rows, [&](int r0, int r1) {
    for (int m = r0; m < r1; ++m) {
      const float* x = xa.data() + static_cast<size_t>(m) * K;
      const double* d = delta != nullptr ? delta + static_cast<size_t>(m) * K : nullptr;
      for (int n = 0; n < N; ++n) {
        const float* w = wa.data() + static_cast<size_t>(n) * K;
        double sum = 0.0, spr = 0.0;
        for (int g = 0; g < G; ++g) {
          const int k0 = g * kQuantBlock, k1 = std::min(K, k0 + kQuantBlock);
          // Four partial sums: independent chains the compiler can overlap (order is irrelevant
          // to a bound computed in double).
          double p0 = 0, p1 = 0, p2 = 0, p3 = 0;
          int k = k0;
          for (; k + 4 <= k1; k += 4) {
            p0 += static_cast<double>(x[k]) * w[k];
            p1 += static_cast<double>(x[k + 1]) * w[k + 1];
            p2 += static_cast<double>(x[k + 2]) * w[k + 2];
            p3 += static_cast<double>(x[k + 3]) * w[k + 3];
          }
          for (; k < k1; ++k) p0 += static_cast<double>(x[k]) * w[k];
          const double swg = ws[static_cast<size_t>(n) * G + g];
          sum += std::fabs(static_cast<double>(sa[static_cast<size_t>(m) * G + g])) * swg * ((p0 + p1) + (p2 + p3));
          if (d != nullptr) {
            double q = 0;
            for (k = k0; k < k1; ++k) q += static_cast<double>(w[k]) * d[k];
            spr += swg * q;
          }
        }
        (*l1)[static_cast<size_t>(m) * N + n] = sum;
        if (spread != nullptr) (*spread)[static_cast<size_t>(m) * N + n] = spr;
      }
    }
  });
}

}  // namespace fp8serve::cuda::gpu_test
