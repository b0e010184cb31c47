// fp8_gemm_bench: check-and-time of the FP8 GEMMs and of the bundled model's forward, against
// cuBLASLt on the same inputs in the same run.
//
//   fp8_gemm_bench [--iters=N] [--warmup=N] [--shapes=MxNxK,...] [--csv=FILE] [--model=FILE]
//                  [--mlp_batches=1,64,1024,16384] [--copies=N] [--skip_gemm] [--skip_mlp]
//                  [--profile_variant=NAME]
//
// Section 1, per GEMM shape (N and K padded to 128 as the kernels take them; TFLOP/s and GB/s use
// the logical shape): first our BF16 output is checked against cuBLASLt's on the same codes and
// scales (per-tensor scales, and cuBLASLt's 1x128 x 128x128 block scaling where it offers it), then
// each variant is timed: our GEMM with the heuristic's config and with each kernel forced,
// cuBLASLt FP8 with per-tensor scales, and cuBLASLt with block scales. E4M3 x E4M3 -> BF16 on both
// sides. Times are the median of --iters CUDA-event-timed launches, each after L2 is flushed (a
// read of a buffer larger than L2, which leaves no dirty lines behind) and with the inputs rotated
// among --copies copies.
// Section 2: the bundled model's forward at several batch sizes, each path captured in a CUDA
// graph and replayed (weights stay in L2, as when serving; a GPU-side spin ahead of each timed
// replay keeps the host's launch latency out of the time): the fused kernel, our per-layer chain,
// and cuBLASLt per layer (our 1x128 activation quantizer before each of cuBLASLt's GEMMs, with
// per-tensor scales: the same work, not the contract's numbers).
// The last thing printed is a summary table. Exit status: 0, 1 on a CUDA/cuBLASLt error, 2 when
// a check against cuBLASLt fails.
//
// cuBLASLt is linked into this program only, never into the server (PLATFORM.md: its thread-local
// storage breaks the metrics exposer's threads).
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "kernels/cuda/act_quant.h"
#include "kernels/cuda/device_mlp.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/fused_mlp.h"
#include "kernels/cuda/gemm_config.h"
#include "kernels/numerics/fp8.h"
#include "server/model/mlp_model.h"
#include "tools/cli/cli.h"

ABSL_FLAG(int, iters, 50, "Timed launches per variant (the median is reported).");
ABSL_FLAG(int, warmup, 5, "Untimed launches before timing each variant.");
ABSL_FLAG(std::string, shapes, "",
          "Comma-separated GEMM shapes MxNxK (logical N and K) instead of the default sweep.");
ABSL_FLAG(std::string, csv, "", "Also write every measurement as CSV to this file.");
ABSL_FLAG(std::string, model, "models/fashion_mlp/1/model.safetensors", "The model for the forward section.");
ABSL_FLAG(std::string, mlp_batches, "1,64,1024,16384", "Comma-separated batch sizes for the forward section.");
ABSL_FLAG(int, copies, 3, "Copies of the GEMM inputs to rotate among (bounded by memory).");
ABSL_FLAG(bool, skip_gemm, false, "Skip the GEMM section.");
ABSL_FLAG(bool, skip_mlp, false, "Skip the forward section.");
ABSL_FLAG(bool, flush_l2, true,
          "Evict L2 before each timed GEMM launch (the default: operands come from HBM, as after another "
          "layer). false: time the GEMMs with L2 warm, as back-to-back launches run, so small operands and "
          "every kernel's code stay cached; that separates a kernel's cold-start cost from its work.");
ABSL_FLAG(std::string, profile_variant, "",
          "Profiling aid (tools/device/profile.sh): per shape, launch only our variant of this name "
          "(e.g. ours/sm90_wgmma+mc2x2) --warmup + --iters times, unchecked and untimed, and nothing else.");

namespace fp8serve::cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// Errors: this is a program, so a failed call prints where and exits non-zero.

#define BENCH_CUDA(expr)                                                                                   \
  do {                                                                                                     \
    const cudaError_t bench_err_ = (expr);                                                                 \
    if (bench_err_ != cudaSuccess) {                                                                       \
      std::fprintf(stderr, "fp8_gemm_bench: %s:%d: %s: %s\n", __FILE__, __LINE__, #expr,                  \
                   cudaGetErrorString(bench_err_));                                                        \
      std::exit(1);                                                                                        \
    }                                                                                                      \
  } while (0)

#define BENCH_LT(expr)                                                                                     \
  do {                                                                                                     \
    const cublasStatus_t bench_st_ = (expr);                                                               \
    if (bench_st_ != CUBLAS_STATUS_SUCCESS) {                                                              \
      std::fprintf(stderr, "fp8_gemm_bench: %s:%d: %s: %s\n", __FILE__, __LINE__, #expr,                  \
                   cublasLtGetStatusString(bench_st_));                                                    \
      std::exit(1);                                                                                        \
    }                                                                                                      \
  } while (0)

#define BENCH_OK(expr)                                                                                     \
  do {                                                                                                     \
    const absl::Status bench_s_ = (expr);                                                                  \
    if (!bench_s_.ok()) {                                                                                  \
      std::fprintf(stderr, "fp8_gemm_bench: %s:%d: %s: %s\n", __FILE__, __LINE__, #expr,                  \
                   bench_s_.ToString().c_str());                                                           \
      std::exit(1);                                                                                        \
    }                                                                                                      \
  } while (0)

int PadTo(int x, int to) { return (x + to - 1) / to * to; }

// Device memory freed at scope exit.
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t n) : n_(n) {
    if (n > 0) BENCH_CUDA(cudaMalloc(&p_, n * sizeof(T)));
  }
  ~DeviceArray() {
    if (p_ != nullptr) cudaFree(p_);
  }
  DeviceArray(DeviceArray&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }
  void Upload(const std::vector<T>& v) {
    BENCH_CUDA(cudaMemcpy(p_, v.data(), std::min(v.size(), n_) * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> Download() const {
    std::vector<T> v(n_);
    BENCH_CUDA(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Inputs generated on the device (a hash per element: no host round trip for gigabytes).

__device__ uint32_t HashU32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// Random E4M3 codes of magnitude 2^-3 .. 2^3 (exponent fields 4..10) with random signs, and zero
// codes outside [valid_rows, valid_cols]: the padding a real layer has.
__global__ void fill_random_e4m3_kernel(uint8_t* p, int rows, int cols, int valid_rows, int valid_cols, uint32_t seed) {
  const size_t total = static_cast<size_t>(rows) * cols;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int r = static_cast<int>(i / cols), c = static_cast<int>(i % cols);
    const uint32_t h = HashU32(static_cast<uint32_t>(i) * 2654435761u ^ seed);
    const uint32_t exp = 4 + h % 7, mant = (h >> 8) & 7u, sign = (h >> 12) & 1u;
    p[i] = (r < valid_rows && c < valid_cols) ? static_cast<uint8_t>(sign << 7 | exp << 3 | mant) : 0;
  }
}

__global__ void fill_uniform_kernel(float* p, size_t n, float lo, float hi, uint32_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint32_t h = HashU32(static_cast<uint32_t>(i) * 2246822519u ^ seed);
    p[i] = lo + (hi - lo) * static_cast<float>(h >> 8) * (1.0f / 16777216.0f);
  }
}

void FillRandomE4M3(uint8_t* p, int rows, int cols, int valid_rows, int valid_cols, uint32_t seed) {
  fill_random_e4m3_kernel<<<1024, 256>>>(p, rows, cols, valid_rows, valid_cols, seed);
  BENCH_CUDA(cudaGetLastError());
}

void FillUniform(float* p, size_t n, float lo, float hi, uint32_t seed) {
  fill_uniform_kernel<<<1024, 256>>>(p, n, lo, hi, seed);
  BENCH_CUDA(cudaGetLastError());
}

// ---------------------------------------------------------------------------------------------
// Timing: CUDA events around each launch, median of many.

// Reads `n` 16-byte words: evicts L2 without dirtying it. (A memset would leave L2 full of dirty
// lines whose write-back then competes with the timed kernel's reads, halving the HBM bandwidth a
// weight-streaming GEMM sees; serving never has that.) The store happens only for a value the XOR
// of the buffer's fixed contents never takes, so the reads cannot be optimized away.
__global__ void ReadToEvictL2(const uint4* __restrict__ p, size_t n, uint4* sink) {
  uint32_t x = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcg(p + i);
    x ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (x == 0x9E3779B9u) sink[threadIdx.x] = make_uint4(x, x, x, x);
}

// Busy-waits `ns` nanoseconds on the GPU: queued ahead of a timed launch that L2 flushing does not
// precede, it keeps the GPU busy while the host enqueues the start event, the launch and the stop
// event, so the measurement holds the GPU's time and not the host's launch latency.
__global__ void SpinNs(uint64_t ns) {
  uint64_t start = 0, now = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < ns);
}

class Timer {
 public:
  Timer(cudaStream_t stream, int iters, int warmup, size_t flush_bytes)
      : stream_(stream), iters_(iters), warmup_(warmup), flush_(flush_bytes), sink_(256 * sizeof(uint4)) {
    start_.resize(iters_);
    stop_.resize(iters_);
    for (int i = 0; i < iters_; ++i) {
      BENCH_CUDA(cudaEventCreate(&start_[i]));
      BENCH_CUDA(cudaEventCreate(&stop_[i]));
    }
    BENCH_CUDA(cudaMemsetAsync(flush_.get(), 0x5A, flush_.size(), stream_));
    BENCH_CUDA(cudaStreamSynchronize(stream_));
  }
  ~Timer() {
    for (int i = 0; i < iters_; ++i) {
      cudaEventDestroy(start_[i]);
      cudaEventDestroy(stop_[i]);
    }
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // launch(i) enqueues run i on the stream. With flush_l2, L2 is refilled with unrelated clean
  // lines before each timed run; without, a short spin keeps the host's launch latency out.
  template <typename Launch>
  double MedianUs(Launch&& launch, bool flush_l2) {
    for (int i = 0; i < warmup_; ++i) launch(i);
    for (int i = 0; i < iters_; ++i) {
      if (flush_l2) {
        ReadToEvictL2<<<1024, 256, 0, stream_>>>(reinterpret_cast<const uint4*>(flush_.get()), flush_.size() / 16,
                                                 reinterpret_cast<uint4*>(sink_.get()));
      } else {
        SpinNs<<<1, 1, 0, stream_>>>(50'000);
      }
      BENCH_CUDA(cudaGetLastError());
      BENCH_CUDA(cudaEventRecord(start_[i], stream_));
      launch(i);
      BENCH_CUDA(cudaEventRecord(stop_[i], stream_));
    }
    BENCH_CUDA(cudaStreamSynchronize(stream_));
    std::vector<float> ms(iters_);
    for (int i = 0; i < iters_; ++i) BENCH_CUDA(cudaEventElapsedTime(&ms[i], start_[i], stop_[i]));
    std::nth_element(ms.begin(), ms.begin() + iters_ / 2, ms.end());
    return 1000.0 * ms[iters_ / 2];
  }

 private:
  cudaStream_t stream_;
  int iters_, warmup_;
  DeviceArray<uint8_t> flush_;
  DeviceArray<uint8_t> sink_;
  std::vector<cudaEvent_t> start_, stop_;
};

// ---------------------------------------------------------------------------------------------
// cuBLASLt. Our D[m, n] = X[m, k] W[n, k]^T row-major is cuBLASLt's column-major
// D^T[n, m] = op(A) B with A = W stored [k, n] (ld k) and op(A) = A^T, B = X stored [k, m] (ld k):
// the "TN" layout cuBLASLt requires for FP8. A's scale is the weight's, B's the activations'.
//  - per-tensor: one FP32 scalar each (CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F, the default);
//  - block: A in 128x128 blocks (BLK128x128_32F), K-blocks contiguous with the leading dimension
//    rounded up to 4: [n/128][round_up(k/128, 4)]; B per 1x128 along K (VEC128_32F), the row index
//    contiguous: [k/128][m].

enum class LtScaling { kTensor, kBlock };

struct LtGemmDesc {
  int m = 0, n = 0, k = 0;  // our rows, output columns (a multiple of 16), depth (a multiple of 16)
  LtScaling scaling = LtScaling::kTensor;
  cudaDataType_t w_type = CUDA_R_8F_E4M3;
  const float* w_scale = nullptr;  // scalar, or the block layout above
  const float* x_scale = nullptr;  // scalar, or the 1x128 layout above
  cudaDataType_t d_type = CUDA_R_16BF;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  cudaDataType_t bias_type = CUDA_R_32F;
};

class LtGemm {
 public:
  LtGemm(cublasLtHandle_t handle, const LtGemmDesc& d, size_t workspace_bytes) : handle_(handle) {
    BENCH_LT(cublasLtMatmulDescCreate(&op_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    BENCH_LT(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    BENCH_LT(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    BENCH_LT(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &d.w_scale, sizeof(d.w_scale)));
    BENCH_LT(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &d.x_scale, sizeof(d.x_scale)));
    if (d.scaling == LtScaling::kBlock) {
      const int32_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
      BENCH_LT(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, sizeof(a_mode)));
      BENCH_LT(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, sizeof(b_mode)));
    }
    if (d.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
      BENCH_LT(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_EPILOGUE, &d.epilogue, sizeof(d.epilogue)));
      BENCH_LT(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &d.bias, sizeof(d.bias)));
      const int32_t bias_type = d.bias_type;
      BENCH_LT(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
    }
    BENCH_LT(cublasLtMatrixLayoutCreate(&a_, d.w_type, d.k, d.n, d.k));
    BENCH_LT(cublasLtMatrixLayoutCreate(&b_, CUDA_R_8F_E4M3, d.k, d.m, d.k));
    BENCH_LT(cublasLtMatrixLayoutCreate(&c_, d.d_type, d.n, d.m, d.n));
    BENCH_LT(cublasLtMatrixLayoutCreate(&d_, d.d_type, d.n, d.m, d.n));
    cublasLtMatmulPreference_t pref = nullptr;
    BENCH_LT(cublasLtMatmulPreferenceCreate(&pref));
    BENCH_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                                  sizeof(workspace_bytes)));
    int found = 0;
    // An unsupported combination is an answer, not an error: "not offered".
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, op_, a_, b_, c_, d_, pref, 1, &heuristic_, &found);
    BENCH_LT(cublasLtMatmulPreferenceDestroy(pref));
    if (st != CUBLAS_STATUS_SUCCESS) {
      why_ = cublasLtGetStatusString(st);
    } else if (found == 0) {
      why_ = "no algorithm";
    } else {
      offered_ = true;
    }
  }
  ~LtGemm() {
    if (d_) cublasLtMatrixLayoutDestroy(d_);
    if (c_) cublasLtMatrixLayoutDestroy(c_);
    if (b_) cublasLtMatrixLayoutDestroy(b_);
    if (a_) cublasLtMatrixLayoutDestroy(a_);
    if (op_) cublasLtMatmulDescDestroy(op_);
  }
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  bool offered() const { return offered_; }
  const std::string& why() const { return why_; }

  void Run(const uint8_t* w, const uint8_t* x, void* d, void* workspace, size_t workspace_bytes, cudaStream_t stream) const {
    const float alpha = 1.0f, beta = 0.0f;
    BENCH_LT(cublasLtMatmul(handle_, op_, &alpha, w, a_, x, b_, &beta, d, c_, d, d_, &heuristic_.algo, workspace,
                            workspace_bytes, stream));
  }

 private:
  cublasLtHandle_t handle_;
  cublasLtMatmulDesc_t op_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, c_ = nullptr, d_ = nullptr;
  cublasLtMatmulHeuristicResult_t heuristic_{};
  bool offered_ = false;
  std::string why_;
};

constexpr size_t kLtWorkspaceBytes = 32u << 20;

// ---------------------------------------------------------------------------------------------
// Results.

struct Row {
  std::string section, variant, config;
  int m = 0, n = 0, k = 0;
  double us = NAN, tflops = NAN, gbps = NAN, speedup_vs_lt = NAN, check = NAN;
};

class Report {
 public:
  explicit Report(const std::string& csv_path) {
    if (!csv_path.empty()) {
      csv_ = std::fopen(csv_path.c_str(), "w");
      if (csv_ == nullptr) {
        std::fprintf(stderr, "fp8_gemm_bench: cannot write %s\n", csv_path.c_str());
        std::exit(1);
      }
      std::fprintf(csv_, "section,m,n,k,variant,us,tflops,gbps,speedup_vs_cublaslt_tensor,check_rel_err,config\n");
    }
  }
  ~Report() {
    if (csv_ != nullptr) std::fclose(csv_);
  }
  void Add(const Row& r) {
    rows_.push_back(r);
    if (csv_ != nullptr) {
      std::fprintf(csv_, "%s,%d,%d,%d,%s,%.3f,%.3f,%.3f,%.4f,%.3e,\"%s\"\n", r.section.c_str(), r.m, r.n, r.k,
                   r.variant.c_str(), r.us, r.tflops, r.gbps, r.speedup_vs_lt, r.check, r.config.c_str());
      std::fflush(csv_);
    }
  }
  const std::vector<Row>& rows() const { return rows_; }

 private:
  std::FILE* csv_ = nullptr;
  std::vector<Row> rows_;
};

std::string Us(double us) { return std::isnan(us) ? std::string("-") : absl::StrFormat("%.1f", us); }

// ---------------------------------------------------------------------------------------------
// Section 1: GEMMs.

struct Shape {
  int m, n, k;  // logical
};

std::vector<Shape> DefaultShapes() {
  std::vector<Shape> v;
  for (auto [n, k] : {std::pair{256, 784}, {10, 256}, {16384, 4096}, {4096, 16384}}) {
    for (int m : {1, 16, 64, 128, 256, 1024, 4096, 8192}) v.push_back({m, n, k});
  }
  v.push_back({8192, 8192, 8192});
  return v;
}

std::vector<Shape> ParseShapes(const std::string& s) {
  std::vector<Shape> v;
  for (absl::string_view item : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    Shape sh{};
    if (std::sscanf(std::string(item).c_str(), "%dx%dx%d", &sh.m, &sh.n, &sh.k) != 3 || sh.m < 1 || sh.n < 1 || sh.k < 1) {
      std::fprintf(stderr, "fp8_gemm_bench: bad shape '%s' (want MxNxK)\n", std::string(item).c_str());
      std::exit(2);
    }
    v.push_back(sh);
  }
  return v;
}

// max |a - b| / max |b| over two BF16 arrays.
double RelErr(const std::vector<__nv_bfloat16>& a, const std::vector<__nv_bfloat16>& b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    uint16_t ha, hb;
    std::memcpy(&ha, &a[i], 2);
    std::memcpy(&hb, &b[i], 2);
    const double x = Bf16ToFloat(ha), y = Bf16ToFloat(hb);
    num = std::max(num, std::fabs(x - y));
    den = std::max(den, std::fabs(y));
    if (std::isnan(x) || std::isnan(y)) return NAN;
  }
  return den > 0 ? num / den : num;
}

constexpr double kCheckTolerance = 1e-2;  // BF16 outputs, different accumulation orders

struct GemmBenchContext {
  cudaStream_t stream;
  cublasLtHandle_t lt;
  DeviceTraits traits;
  Timer* timer;
  DeviceArray<uint8_t>* lt_workspace;
  Report* report;
  int copies;
  bool failed_check = false;
  std::string profile_variant;  // --profile_variant
  bool flush_l2 = true;         // --flush_l2
};

void BenchShape(const Shape& s, GemmBenchContext& ctx) {
  const int n_pad = PadTo(s.n, kGemmBlockK), k_pad = PadTo(s.k, kGemmBlockK);
  const int kg = k_pad / kGemmBlockK, ng = n_pad / kGemmBlockK;
  const size_t a_bytes = static_cast<size_t>(s.m) * k_pad, b_bytes = static_cast<size_t>(n_pad) * k_pad;
  // Rotate among copies, but keep all of them (B also tiled, for the +tiledB variants) under ~8 GB.
  const int copies =
      static_cast<int>(std::clamp<size_t>((8ull << 30) / std::max<size_t>(1, a_bytes + 2 * b_bytes), 1, ctx.copies));
  std::vector<DeviceArray<uint8_t>> a, b;
  for (int c = 0; c < copies; ++c) {
    a.emplace_back(a_bytes);
    b.emplace_back(b_bytes);
    FillRandomE4M3(a.back().get(), s.m, k_pad, s.m, s.k, 1000u * c + 1);
    FillRandomE4M3(b.back().get(), n_pad, k_pad, s.n, s.k, 1000u * c + 2);
  }
  // Scales: uniform ones for the per-tensor comparison, random per group/block for everything else,
  // and the same random scales in cuBLASLt's block layouts.
  constexpr float kSa = 1.0f / 64, kSb = 1.0f / 32;
  std::mt19937 rng(s.m * 31 + s.n * 7 + s.k);
  std::uniform_real_distribution<float> jitter(0.5f, 2.0f);
  std::vector<float> a_s(static_cast<size_t>(s.m) * kg), b_s(static_cast<size_t>(ng) * kg);
  for (float& v : a_s) v = kSa * jitter(rng);
  for (float& v : b_s) v = kSb * jitter(rng);
  const int kg4 = PadTo(kg, 4);
  std::vector<float> a_s_lt(static_cast<size_t>(kg) * s.m), b_s_lt(static_cast<size_t>(ng) * kg4, 1.0f);
  for (int m = 0; m < s.m; ++m) {
    for (int g = 0; g < kg; ++g) a_s_lt[static_cast<size_t>(g) * s.m + m] = a_s[static_cast<size_t>(m) * kg + g];
  }
  for (int nb = 0; nb < ng; ++nb) {
    for (int g = 0; g < kg; ++g) b_s_lt[static_cast<size_t>(nb) * kg4 + g] = b_s[static_cast<size_t>(nb) * kg + g];
  }
  DeviceArray<float> d_a_s(a_s.size()), d_b_s(b_s.size()), d_a_s_lt(a_s_lt.size()), d_b_s_lt(b_s_lt.size());
  DeviceArray<float> d_a_uni(a_s.size()), d_b_uni(b_s.size()), d_sa(1), d_sb(1);
  d_a_s.Upload(a_s);
  d_b_s.Upload(b_s);
  d_a_s_lt.Upload(a_s_lt);
  d_b_s_lt.Upload(b_s_lt);
  d_a_uni.Upload(std::vector<float>(a_s.size(), kSa));
  d_b_uni.Upload(std::vector<float>(b_s.size(), kSb));
  d_sa.Upload({kSa});
  d_sb.Upload({kSb});
  const size_t d_elems = static_cast<size_t>(s.m) * n_pad;
  DeviceArray<__nv_bfloat16> d_ours(d_elems), d_lt(d_elems);

  // Our configurations: the heuristic's, then each kernel forced where the device runs it.
  const GemmShape shape{s.m, n_pad, k_pad, Fp8Format::kE4M3, GemmOutput::kBF16};
  struct Variant {
    std::string name;
    absl::StatusOr<GemmConfig> config;
    WeightLayout layout = WeightLayout::kRowMajor;
  };
  std::vector<Variant> ours = {{"ours", SelectGemmConfig(shape, ctx.traits)},
                               {absl::StrFormat("ours/%s", GemmKernelName(GemmKernel::kSm90Wgmma)),
                                SelectGemmConfigFor(GemmKernel::kSm90Wgmma, shape, ctx.traits)},
                               {absl::StrFormat("ours/%s", GemmKernelName(GemmKernel::kSm89MmaSync)),
                                SelectGemmConfigFor(GemmKernel::kSm89MmaSync, shape, ctx.traits)}};
  // The wgmma config with paired loads (two K groups' TMAs back to back: the same weight rows'
  // adjacent 128-byte segments reach DRAM together), to compare with the plain one
  if (ours[1].config.ok() && ours[1].config->stages >= 3) {
    GemmConfig paired = *ours[1].config;
    paired.pair_loads = true;
    ours.push_back({absl::StrFormat("ours/%s+paired", GemmKernelName(GemmKernel::kSm90Wgmma)), paired});
  }
  // The 128-wide tile's main-loop variants (Sm90MainLoop: the same bits as the base), on the base
  // config and with paired loads: whether the promotion FFMAs' register banks (+xbank), a warp's
  // own in-flight wgmmas (+oneacc) or the scheduler's yield hints on the FFMAs (+yield: the default
  // loop, its SASS edited by tools/device/ffma_yield.py; unedited, the base itself) cost the base
  // its dispatch stalls
  if (ours[1].config.ok() && ours[1].config->block_n == kSm90BlockN) {
    for (const auto& [loop, tag] : {std::pair{Sm90MainLoop::kCrossBank, "xbank"},
                                    std::pair{Sm90MainLoop::kOneAccumulator, "oneacc"},
                                    std::pair{Sm90MainLoop::kOneAccumulatorCrossBank, "oneacc_xbank"},
                                    std::pair{Sm90MainLoop::kYieldFfma, "yield"}}) {
      GemmConfig c = *ours[1].config;
      c.main_loop = loop;
      ours.push_back({absl::StrFormat("ours/%s+%s", GemmKernelName(GemmKernel::kSm90Wgmma), tag), c});
      if (c.stages >= 3) {
        c.pair_loads = true;
        ours.push_back({absl::StrFormat("ours/%s+paired+%s", GemmKernelName(GemmKernel::kSm90Wgmma), tag), c});
      }
    }
  }
  // The wgmma config in thread-block clusters with TMA multicast (each operand tile leaves L2 once
  // per cluster), where the shape allows one (no split-K, cluster_n dividing the N-tiles)
  if (ours[1].config.ok()) {
    for (const auto& [cm, cn] : {std::pair{2, 1}, std::pair{1, 2}, std::pair{2, 2}}) {
      absl::StatusOr<GemmConfig> mc = WithSm90Cluster(*ours[1].config, shape, ctx.traits, cm, cn);
      if (!mc.ok()) continue;
      ours.push_back({absl::StrFormat("ours/%s+mc%dx%d", GemmKernelName(GemmKernel::kSm90Wgmma), cm, cn), *mc});
    }
  }
  // The wide tile (128 x 192: 17% less operand traffic per FLOP), alone and in clusters, each with
  // and without ordered consumers, where M fills 128-row tiles (BF16 output; it splits no K)
  if (ours[1].config.ok() && s.m >= 256) {
    absl::StatusOr<GemmConfig> wide = SelectSm90WideTileConfig(shape, ctx.traits);
    if (wide.ok()) {
      // Each also with ordered consumers (+ord: the two warpgroups issue in turn)
      const auto add = [&](const std::string& name, GemmConfig c) {
        ours.push_back({name, c});
        c.ordered_consumers = true;
        ours.push_back({name + "+ord", c});
      };
      add(absl::StrFormat("ours/%s+n192", GemmKernelName(GemmKernel::kSm90Wgmma)), *wide);
      if (wide->stages >= 3) {  // the wide tile with paired loads (no +ord)
        GemmConfig paired = *wide;
        paired.pair_loads = true;
        ours.push_back({absl::StrFormat("ours/%s+n192+paired", GemmKernelName(GemmKernel::kSm90Wgmma)), paired});
      }
      {  // the wide tile with its promotion FFMAs' SASS edited (+yield, see the 128-wide tile's)
        GemmConfig yield = *wide;
        yield.main_loop = Sm90MainLoop::kYieldFfma;
        ours.push_back({absl::StrFormat("ours/%s+n192+yield", GemmKernelName(GemmKernel::kSm90Wgmma)), yield});
      }
      for (const auto& [cm, cn] : {std::pair{2, 1}, std::pair{2, 2}}) {
        absl::StatusOr<GemmConfig> mc = WithSm90Cluster(*wide, shape, ctx.traits, cm, cn);
        if (!mc.ok()) continue;
        add(absl::StrFormat("ours/%s+n192+mc%dx%d", GemmKernelName(GemmKernel::kSm90Wgmma), cm, cn), *mc);
      }
    }
  }
  // The wgmma config reading the weights in the tiled streaming layout (each weight tile's TMA box
  // one contiguous 16 KB read), alone and with the 2x1 cluster
  std::vector<DeviceArray<uint8_t>> b_tiled;
  if (ours[1].config.ok()) {
    BENCH_CUDA(cudaDeviceSynchronize());  // the random fills ran on the legacy stream
    for (int c = 0; c < copies; ++c) {
      b_tiled.emplace_back(b_bytes);
      BENCH_OK(TileWeights128Async(b[c].get(), n_pad, k_pad, b_tiled.back().get(), ctx.stream));
    }
    BENCH_CUDA(cudaStreamSynchronize(ctx.stream));
    ours.push_back({absl::StrFormat("ours/%s+tiledB", GemmKernelName(GemmKernel::kSm90Wgmma)), *ours[1].config,
                    WeightLayout::kTiled128});
    absl::StatusOr<GemmConfig> mc = WithSm90Cluster(*ours[1].config, shape, ctx.traits, 2, 1);
    if (mc.ok()) {
      ours.push_back({absl::StrFormat("ours/%s+tiledB+mc2x1", GemmKernelName(GemmKernel::kSm90Wgmma)), *mc,
                      WeightLayout::kTiled128});
    }
  }
  BENCH_OK(ours[0].config.status());
  if (!ctx.profile_variant.empty()) {
    // Keep only the named variant (nothing is checked or timed below: see the launch loop)
    std::vector<Variant> kept;
    for (Variant& v : ours) {
      if (v.name == ctx.profile_variant && v.config.ok()) kept.push_back(std::move(v));
    }
    if (kept.empty()) {
      std::printf("%d x %d x %d: no runnable variant named %s\n", s.m, s.n, s.k, ctx.profile_variant.c_str());
      return;
    }
    ours = std::move(kept);
  }
  size_t ws_bytes = 0;
  for (const Variant& v : ours) {
    if (v.config.ok()) ws_bytes = std::max(ws_bytes, GemmWorkspaceBytes(shape, *v.config));
  }
  DeviceArray<uint8_t> workspace(ws_bytes);
  if (ws_bytes > 0) BENCH_CUDA(cudaMemset(workspace.get(), 0, ws_bytes));

  auto args_for = [&](int copy, const float* as, const float* bs,
                      WeightLayout layout = WeightLayout::kRowMajor) {
    Fp8GemmArgs args;
    args.m = s.m;
    args.n = n_pad;
    args.k = k_pad;
    args.a = a[copy % copies].get();
    args.a_scales = as;
    args.b = layout == WeightLayout::kTiled128 ? b_tiled[copy % copies].get() : b[copy % copies].get();
    args.b_layout = layout;
    args.b_format = Fp8Format::kE4M3;
    args.b_scales = bs;
    args.output = GemmOutput::kBF16;
    args.d = d_ours.get();
    args.ldd = n_pad;
    args.n_store = n_pad;
    args.workspace = ws_bytes > 0 ? workspace.get() : nullptr;
    return args;
  };

  LtGemmDesc tensor_desc{s.m, n_pad, k_pad, LtScaling::kTensor, CUDA_R_8F_E4M3, d_sb.get(), d_sa.get()};
  LtGemmDesc block_desc{s.m, n_pad, k_pad, LtScaling::kBlock, CUDA_R_8F_E4M3, d_b_s_lt.get(), d_a_s_lt.get()};
  const LtGemm lt_tensor(ctx.lt, tensor_desc, kLtWorkspaceBytes), lt_block(ctx.lt, block_desc, kLtWorkspaceBytes);
  auto run_lt = [&](const LtGemm& g, int copy) {
    g.Run(b[copy % copies].get(), a[copy % copies].get(), d_lt.get(), ctx.lt_workspace->get(), kLtWorkspaceBytes, ctx.stream);
  };

  if (!ctx.profile_variant.empty()) {
    // Profiling: the named variant alone, back to back (a profiler picks the launch it wants)
    const Variant& v = ours[0];
    const int launches = absl::GetFlag(FLAGS_warmup) + absl::GetFlag(FLAGS_iters);
    for (int i = 0; i < launches; ++i) {
      BENCH_OK(LaunchFp8Gemm(args_for(i, d_a_s.get(), d_b_s.get(), v.layout), *v.config, ctx.stream));
    }
    BENCH_CUDA(cudaStreamSynchronize(ctx.stream));
    std::printf("%d x %d x %d: launched %s %d times [%s]\n", s.m, s.n, s.k, v.name.c_str(), launches,
                DescribeGemmConfig(*v.config).c_str());
    return;
  }

  // Check: ours against cuBLASLt on the same codes and scales.
  double check_tensor = NAN, check_block = NAN;
  if (lt_tensor.offered()) {
    BENCH_OK(LaunchFp8Gemm(args_for(0, d_a_uni.get(), d_b_uni.get()), *ours[0].config, ctx.stream));
    run_lt(lt_tensor, 0);
    BENCH_CUDA(cudaStreamSynchronize(ctx.stream));
    check_tensor = RelErr(d_ours.Download(), d_lt.Download());
  }
  if (lt_block.offered()) {
    BENCH_OK(LaunchFp8Gemm(args_for(0, d_a_s.get(), d_b_s.get()), *ours[0].config, ctx.stream));
    run_lt(lt_block, 0);
    BENCH_CUDA(cudaStreamSynchronize(ctx.stream));
    check_block = RelErr(d_ours.Download(), d_lt.Download());
  }
  auto check_word = [](double e) { return std::isnan(e) ? "-" : e <= kCheckTolerance ? "ok" : "MISMATCH"; };
  std::printf("\n%d x %d x %d (padded N %d, K %d): check vs cuBLASLt per-tensor %.2e %s, block %.2e %s\n", s.m, s.n, s.k,
              n_pad, k_pad, check_tensor, check_word(check_tensor), check_block, check_word(check_block));
  if (!(std::isnan(check_tensor) || check_tensor <= kCheckTolerance) ||
      !(std::isnan(check_block) || check_block <= kCheckTolerance)) {
    ctx.failed_check = true;
    std::printf("  MISMATCH: max|ours - cuBLASLt| / max|cuBLASLt| above %.0e (a block-only mismatch may also be the "
                "scale layouts given to cuBLASLt)\n", kCheckTolerance);
  }

  // Time.
  const double flops = 2.0 * s.m * s.n * static_cast<double>(s.k);
  const double bytes = static_cast<double>(s.m) * s.k + static_cast<double>(s.n) * s.k +
                       4.0 * (static_cast<double>(s.m) * kg + static_cast<double>(ng) * kg) + 2.0 * s.m * s.n;
  double lt_tensor_us = NAN;
  if (lt_tensor.offered()) lt_tensor_us = ctx.timer->MedianUs([&](int i) { run_lt(lt_tensor, i); }, ctx.flush_l2);
  auto emit = [&](const std::string& variant, double us, const std::string& config, double check) {
    Row r;
    r.section = "gemm";
    r.variant = variant;
    r.config = config;
    r.m = s.m;
    r.n = s.n;
    r.k = s.k;
    r.us = us;
    r.tflops = flops / (us * 1e-6) / 1e12;
    r.gbps = bytes / (us * 1e-6) / 1e9;
    r.speedup_vs_lt = lt_tensor_us / us;
    r.check = check;
    ctx.report->Add(r);
    std::printf("  %-22s %10s us %9.1f TFLOP/s %8.1f GB/s  x%.2f vs cuBLASLt per-tensor  %s\n", variant.c_str(), Us(us).c_str(),
                r.tflops, r.gbps, r.speedup_vs_lt, config.c_str());
  };
  // Every other variant of ours is checked against the first on the block-scaled inputs (the same
  // numerics; split-K only reorders FP32 sums), then timed. +tiledB runs the wgmma variant's config
  // on tiled weights, +paired only changes its pipeline, the main-loop variants (+xbank, +oneacc,
  // +oneacc_xbank, also after +paired) only its registers and waits, and +n192 forms every element as
  // the 128-wide tile does: their bits must equal the wgmma variant's (+n192 only when that one
  // splits no K).
  std::vector<__nv_bfloat16> first_out, wgmma_out;
  for (size_t vi = 0; vi < ours.size(); ++vi) {
    const Variant& v = ours[vi];
    if (!v.config.ok()) {
      std::printf("  %-22s n/a (%s)\n", v.name.c_str(), std::string(v.config.status().message()).c_str());
      continue;
    }
    double check = check_tensor;
    if (vi == 0 || !first_out.empty()) {
      BENCH_CUDA(cudaMemsetAsync(d_ours.get(), 0xFF, d_elems * sizeof(__nv_bfloat16), ctx.stream));  // poison
      BENCH_OK(LaunchFp8Gemm(args_for(0, d_a_s.get(), d_b_s.get(), v.layout), *v.config, ctx.stream));
      BENCH_CUDA(cudaStreamSynchronize(ctx.stream));
      if (vi == 0) {
        first_out = d_ours.Download();
      } else {
        std::vector<__nv_bfloat16> out = d_ours.Download();
        check = RelErr(out, first_out);
        if (!(check <= kCheckTolerance)) {
          ctx.failed_check = true;
          std::printf("  MISMATCH: %s differs from %s by %.2e\n", v.name.c_str(), ours[0].name.c_str(), check);
        }
        // (a wide-tile variant has the base's bits only where the base splits no K)
        const bool wide = v.name.find("+n192") != std::string::npos;
        const bool same_bits = wide ? ours[1].config.ok() && ours[1].config->k_splits == 1
                                    : absl::EndsWith(v.name, "+tiledB") || absl::EndsWith(v.name, "+paired") ||
                                          absl::EndsWith(v.name, "xbank") || absl::EndsWith(v.name, "+oneacc") ||
                                          absl::EndsWith(v.name, "+yield");
        if (same_bits && !wgmma_out.empty() &&
            (out.size() != wgmma_out.size() ||
             std::memcmp(out.data(), wgmma_out.data(), out.size() * sizeof(__nv_bfloat16)) != 0)) {
          ctx.failed_check = true;
          std::printf("  MISMATCH: %s is not bit-identical to %s\n", v.name.c_str(), ours[1].name.c_str());
        }
        if (vi == 1) wgmma_out = std::move(out);
      }
    }
    const double us = ctx.timer->MedianUs(
        [&](int i) { BENCH_OK(LaunchFp8Gemm(args_for(i, d_a_s.get(), d_b_s.get(), v.layout), *v.config, ctx.stream)); },
        ctx.flush_l2);
    emit(v.name, us, DescribeGemmConfig(*v.config), check);
  }
  for (const auto* g : {&lt_tensor, &lt_block}) {
    const std::string name = g == &lt_tensor ? "cublaslt/tensor" : "cublaslt/block";
    if (!g->offered()) {
      std::printf("  %-22s not offered (%s)\n", name.c_str(), g->why().c_str());
      continue;
    }
    const double us =
        g == &lt_tensor ? lt_tensor_us : ctx.timer->MedianUs([&](int i) { run_lt(*g, i); }, ctx.flush_l2);
    emit(name, us, "", g == &lt_tensor ? check_tensor : check_block);
  }
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------------------------
// Section 2: the bundled model's forward.

// A captured forward, replayed by the timer.
class Graph {
 public:
  ~Graph() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
    if (graph_ != nullptr) cudaGraphDestroy(graph_);
  }
  // Captures what `enqueue` puts on `stream`; an error from enqueue is returned (after the capture ends).
  template <typename Enqueue>
  absl::Status Capture(cudaStream_t stream, Enqueue&& enqueue) {
    BENCH_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    const absl::Status st = enqueue();
    const cudaError_t end = cudaStreamEndCapture(stream, &graph_);
    if (!st.ok()) return st;
    BENCH_CUDA(end);
    BENCH_CUDA(cudaGraphInstantiate(&exec_, graph_, 0));
    return absl::OkStatus();
  }
  void Launch(cudaStream_t stream) const { BENCH_CUDA(cudaGraphLaunch(exec_, stream)); }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

// cuBLASLt per layer: our quantizer, then cuBLASLt's FP8 GEMM (per-tensor scales, FP32 out with
// its bias(+ReLU) epilogue where offered), for every layer.
class LtChain {
 public:
  LtChain(const MlpWeights& mlp, int max_rows, cublasLtHandle_t lt) : lt_(lt) {
    for (const MlpLayer& l : mlp.layers) {
      if (!l.quantized || l.in % 16 != 0) {
        why_ = "cuBLASLt FP8 needs FP8 layers with input widths that are multiples of 16";
        return;
      }
    }
    one_ = DeviceArray<float>(1);
    one_.Upload({1.0f});
    int k = mlp.input_dim();
    for (size_t i = 0; i < mlp.layers.size(); ++i) {
      const MlpLayer& l = mlp.layers[i];
      const bool last = i + 1 == mlp.layers.size();
      Layer L;
      L.k = k;
      L.n = PadTo(l.out, 16);  // cuBLASLt's FP8 leading dimensions are multiples of 16
      std::vector<uint8_t> w(static_cast<size_t>(L.n) * L.k, 0);
      for (int n = 0; n < l.out; ++n) {
        for (int c = 0; c < l.in; ++c) w[static_cast<size_t>(n) * L.k + c] = l.fp8[static_cast<size_t>(n) * l.in + c];
      }
      L.w = DeviceArray<uint8_t>(w.size());
      L.w.Upload(w);
      std::vector<float> bias(L.n, 0.0f);
      std::copy(l.bias.begin(), l.bias.end(), bias.begin());
      std::vector<uint16_t> bias16(L.n);
      for (int n = 0; n < L.n; ++n) bias16[n] = FloatToBf16(bias[n]);
      L.bias32 = DeviceArray<float>(L.n);
      L.bias32.Upload(bias);
      L.bias16 = DeviceArray<uint16_t>(L.n);
      L.bias16.Upload(bias16);
      L.q = DeviceArray<uint8_t>(static_cast<size_t>(max_rows) * L.k);
      L.q_scales = DeviceArray<float>(static_cast<size_t>(max_rows) * ((L.k + 127) / 128));
      L.out = DeviceArray<float>(static_cast<size_t>(max_rows) * L.n);
      L.w_type = l.format == Fp8Format::kE4M3 ? CUDA_R_8F_E4M3 : CUDA_R_8F_E5M2;
      L.epilogue = last ? CUBLASLT_EPILOGUE_BIAS
                        : (mlp.activation == Activation::kRelu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS);
      layers_.push_back(std::move(L));
      k = layers_.back().n;
    }
  }

  const std::string& why() const { return why_; }
  const std::string& note() const { return note_; }

  // Plans for `rows` (cuBLASLt's heuristic depends on them). False when a GEMM is not offered.
  bool Plan(int rows) {
    plans_.clear();
    rows_ = rows;
    for (Layer& L : layers_) {
      // Bias as BF16, then as FP32, then without the epilogue (bias and ReLU left out: noted).
      std::unique_ptr<LtGemm> g;
      for (int attempt = 0; attempt < 3 && (g == nullptr || !g->offered()); ++attempt) {
        LtGemmDesc d{rows, L.n, L.k, LtScaling::kTensor, L.w_type, one_.get(), one_.get(), CUDA_R_32F};
        if (attempt < 2) {
          d.epilogue = L.epilogue;
          d.bias = attempt == 0 ? static_cast<const void*>(L.bias16.get()) : L.bias32.get();
          d.bias_type = attempt == 0 ? CUDA_R_16BF : CUDA_R_32F;
        } else {
          note_ = "cuBLASLt offered no bias/ReLU epilogue for FP32 output: GEMMs without it";
        }
        g = std::make_unique<LtGemm>(lt_, d, kLtWorkspaceBytes);
      }
      if (!g->offered()) {
        why_ = "cuBLASLt GEMM not offered: " + g->why();
        return false;
      }
      plans_.push_back(std::move(g));
    }
    return true;
  }

  absl::Status Enqueue(const float* x, void* workspace, cudaStream_t stream) const {
    const float* in = x;
    for (size_t i = 0; i < layers_.size(); ++i) {
      const Layer& L = layers_[i];
      if (absl::Status st = QuantizeActivations1x128(in, rows_, L.k, L.q.get(), L.q_scales.get(), stream); !st.ok()) return st;
      plans_[i]->Run(L.w.get(), L.q.get(), L.out.get(), workspace, kLtWorkspaceBytes, stream);
      in = L.out.get();
    }
    return absl::OkStatus();
  }

 private:
  struct Layer {
    int k = 0, n = 0;
    cudaDataType_t w_type = CUDA_R_8F_E4M3;
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    DeviceArray<uint8_t> w, q;
    DeviceArray<float> bias32, q_scales, out;
    DeviceArray<uint16_t> bias16;
  };
  cublasLtHandle_t lt_;
  int rows_ = 0;
  DeviceArray<float> one_;
  std::vector<Layer> layers_;
  std::vector<std::unique_ptr<LtGemm>> plans_;
  std::string why_, note_;
};

__global__ void EmptyKernel() {}

// The fused kernel's own timeline (FusedMlpArgs::trace) over `launches` launches of `rows` rows
// with cluster size `cluster` (0: the launcher's choice): the span from the first CTA's entry to the
// last CTA's exit (%globaltimer, ns), median and minimum, and for the last launch, per cluster rank,
// the time each event is reached, the median over the row blocks, in ns since that CTA's entry (SM
// cycles converted with the clock rate the same trace shows: its CTAs' cycles over their
// globaltimer spans), and its layer-0 time per weight chunk.
void TraceFused(const DeviceMlp& dm, const float* x, int rows, float* y, cudaStream_t stream, Report& report,
                int launches, int cluster, FusedMma mma, int block_m = 0, bool fold = false) {
  FusedMlpArgs fa = dm.FusedArgs(x, rows, y);
  fa.cluster_size = cluster;
  fa.mma = mma;
  fa.block_m = block_m;
  fa.fold_last_layer = fold;
  const absl::StatusOr<FusedPlan> plan = PlanFusedMlp(fa, dm.traits());
  if (!plan.ok() || (fold && !plan->layers[fa.num_layers - 1].folded)) return;
  const int ctas = static_cast<int>(plan->row_blocks) * plan->cluster;
  DeviceArray<uint64_t> trace(static_cast<size_t>(ctas) * kFusedTraceSlots);
  std::vector<double> spans;
  std::vector<uint64_t> t;
  for (int i = 0; i < launches; ++i) {
    BENCH_CUDA(cudaMemsetAsync(trace.get(), 0, trace.size() * sizeof(uint64_t), stream));
    SpinNs<<<1, 1, 0, stream>>>(50'000);
    fa.trace = trace.get();
    BENCH_OK(LaunchFusedMlp(fa, dm.traits(), stream));
    BENCH_CUDA(cudaStreamSynchronize(stream));
    t = trace.Download();
    uint64_t first = UINT64_MAX, last = 0;
    for (int c = 0; c < ctas; ++c) {
      first = std::min(first, t[static_cast<size_t>(c) * kFusedTraceSlots + kFusedTraceStartNs]);
      last = std::max(last, t[static_cast<size_t>(c) * kFusedTraceSlots + kFusedTraceEndNs]);
    }
    spans.push_back(static_cast<double>(last - first));
  }
  // Clock rate from the last launch: cycles at exit over the CTA's globaltimer span
  double cycles = 0, ns = 0;
  uint64_t first = UINT64_MAX;
  for (int c = 0; c < ctas; ++c) {
    const uint64_t* s = &t[static_cast<size_t>(c) * kFusedTraceSlots];
    cycles += static_cast<double>(s[kFusedTraceExit]);
    ns += static_cast<double>(s[kFusedTraceEndNs] - s[kFusedTraceStartNs]);
    first = std::min(first, s[kFusedTraceStartNs]);
  }
  const double ghz = ns > 0 ? cycles / ns : 0;
  std::sort(spans.begin(), spans.end());
  // The kernel's own GPU time (first CTA's entry to last CTA's exit, by %globaltimer) as a CSV row
  Row span;
  span.section = "forward";
  span.variant = absl::StrCat("fused_span/", FusedMmaName(mma), block_m == 0 ? "" : absl::StrCat("/bm", block_m),
                              fold ? "/fold" : "", "/cluster", cluster == 0 ? "auto" : std::to_string(cluster));
  span.m = rows;
  span.n = dm.output_dim();
  span.k = dm.input_dim();
  span.us = spans[spans.size() / 2] / 1000.0;
  report.Add(span);
  std::printf("    fused kernel timeline, batch %d (%s, BLOCK_M %d, %lld row blocks x cluster %d%s): "
              "kernel span %.2f us (median of %d launches, min %.2f), SM clock %.2f GHz\n",
              rows, FusedMmaName(plan->mma), plan->block_m, plan->row_blocks, plan->cluster,
              fold ? ", last layer folded" : "",
              spans[spans.size() / 2] / 1000.0, launches, spans.front() / 1000.0, ghz);
  if (ghz <= 0) return;
  // Per rank: median over row blocks of each event, ns since the CTA's entry (entry: since the
  // earliest CTA's entry)
  std::vector<std::pair<std::string, int>> cols = {{"setup", kFusedTraceSetup}, {"quant", kFusedTraceQuantized},
                                                   {"start", kFusedTraceStarted}};
  // (fused_mlp.h: in, first weights in shared memory, next loads issued, first chunk's MMAs done,
  // last chunk's MMAs done, a split tile's partial sums arrived, epilogues done)
  const char* const layer_events[kFusedTraceEventsPerLayer] = {"in", "w", "iss", "mma1", "mma", "part", "done"};
  for (int l = 0; l < fa.num_layers; ++l) {
    for (int e = 0; e < kFusedTraceEventsPerLayer; ++e) {
      cols.push_back(
          {absl::StrCat("L", l, ".", layer_events[e]), kFusedTraceLayer0 + kFusedTraceEventsPerLayer * l + e});
    }
  }
  cols.push_back({"exit", kFusedTraceExit});
  std::string header = absl::StrFormat("      %-5s %7s", "rank", "entry");
  for (const auto& c : cols) absl::StrAppend(&header, absl::StrFormat(" %7s", c.first));
  absl::StrAppend(&header, absl::StrFormat(" %9s", "L0/chunk"));
  std::printf("%s   (ns; median over row blocks)\n", header.c_str());
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? NAN : v[v.size() / 2];
  };
  for (int r = 0; r < plan->cluster; ++r) {
    std::vector<double> entry;
    std::vector<std::vector<double>> ev(cols.size());
    for (long long b = 0; b < plan->row_blocks; ++b) {
      const uint64_t* s = &t[static_cast<size_t>(b * plan->cluster + r) * kFusedTraceSlots];
      entry.push_back(static_cast<double>(s[kFusedTraceStartNs] - first));
      for (size_t c = 0; c < cols.size(); ++c) ev[c].push_back(static_cast<double>(s[cols[c].second]) / ghz);
    }
    std::string line = absl::StrFormat("      %-5d %7.0f", r, median(entry));
    for (size_t c = 0; c < cols.size(); ++c) absl::StrAppend(&line, absl::StrFormat(" %7.0f", median(ev[c])));
    // Layer 0's chunks of this rank (whole tiles r, r + C, ... or one K range)
    const FusedRankWork& w = plan->layers[0].work[r];
    const int tiles = fa.layers[0].n_pad / 128;
    int chunks = 0;
    if (w.tile >= 0) {
      const int my_tiles = plan->layers[0].parts == 1 ? (tiles - w.tile + plan->cluster - 1) / plan->cluster : 1;
      chunks = my_tiles * (w.group_end - w.group_begin);
    }
    if (chunks > 0) {
      // From the first chunk's weights in shared memory to the last chunk's MMAs (and whole tiles'
      // epilogues) done: columns L0.w and L0.mma
      const auto column = [&](const char* name) -> double {
        for (size_t c = 0; c < cols.size(); ++c) {
          if (cols[c].first == name) return median(ev[c]);
        }
        return NAN;
      };
      const double per = (column("L0.mma") - column("L0.w")) / chunks;
      absl::StrAppend(&line, absl::StrFormat(" %9.0f", per));
    }
    std::printf("%s\n", line.c_str());
  }
}

void BenchForward(const MlpWeights& mlp, const std::vector<int>& batches, cudaStream_t stream, cublasLtHandle_t lt,
                  Timer& timer, DeviceArray<uint8_t>& lt_workspace, Report& report) {
  const int max_rows = *std::max_element(batches.begin(), batches.end());
  absl::StatusOr<std::unique_ptr<DeviceMlp>> dm = DeviceMlp::Upload(mlp, 0);
  BENCH_OK(dm.status());
  absl::StatusOr<std::unique_ptr<DeviceWorkspace>> ws = (*dm)->AllocateWorkspace(max_rows);
  BENCH_OK(ws.status());
  DeviceArray<float> x(static_cast<size_t>(max_rows) * mlp.input_dim()), y(static_cast<size_t>(max_rows) * mlp.output_dim());
  FillUniform(x.get(), x.size(), 0.0f, 1.0f, 42);
  LtChain chain(mlp, max_rows, lt);
  std::string arch = std::to_string(mlp.input_dim());
  for (const MlpLayer& l : mlp.layers) arch += "-" + std::to_string(l.out);
  std::printf("\nForward of the %s model (%s), CUDA graph replays, L2 warm; auto path %s%s%s\n",
              absl::GetFlag(FLAGS_model).c_str(), arch.c_str(), ForwardPathName((*dm)->auto_path()),
              (*dm)->fused_unsupported_reason().empty() ? "" : ", fused unsupported: ", (*dm)->fused_unsupported_reason().c_str());
  std::printf("  cuBLASLt per layer = our 1x128 quantizer + cuBLASLt FP8 GEMM (per-tensor scales) per layer\n");
  {
    // The floor of this measurement on this machine: one empty kernel, replayed the same way.
    Graph g;
    BENCH_OK(g.Capture(stream, [&] {
      EmptyKernel<<<1, 32, 0, stream>>>();
      BENCH_CUDA(cudaGetLastError());
      return absl::OkStatus();
    }));
    Row r;
    r.section = "forward";
    r.variant = "empty_kernel";
    r.us = timer.MedianUs([&](int) { g.Launch(stream); }, false);
    std::printf("  floor: an empty kernel in a CUDA graph, timed the same way: %s us\n", Us(r.us).c_str());
    report.Add(r);
  }
  for (int rows : batches) {
    double t[3] = {NAN, NAN, NAN};
    const char* names[3] = {"fused", "chain", "cublaslt_per_layer"};
    std::string notes[3];
    for (int p = 0; p < 3; ++p) {
      Graph g;
      const absl::Status st = [&]() -> absl::Status {
        if (p < 2) {
          const ForwardPath path = p == 0 ? ForwardPath::kFused : ForwardPath::kChain;
          return g.Capture(stream, [&] { return (*dm)->Forward(x.get(), rows, y.get(), **ws, stream, path); });
        }
        if (!chain.why().empty() || !chain.Plan(rows)) return absl::UnavailableError(chain.why());
        notes[p] = chain.note();
        return g.Capture(stream, [&] { return chain.Enqueue(x.get(), lt_workspace.get(), stream); });
      }();
      if (!st.ok()) {
        notes[p] = std::string(st.message());
        continue;
      }
      t[p] = timer.MedianUs([&](int) { g.Launch(stream); }, false);
    }
    // The fused kernel in each variant (Hopper; cluster 0 = the launcher's choice; the auto path
    // above is mma.sync): both MMA kinds at every cluster size, wgmma at BLOCK_M 64 (every warp of
    // its warpgroups then holds rows), and both kinds with the last layer folded (the launcher's
    // cluster size only).
    struct FusedVariant {
      FusedMma mma;
      int block_m;
      bool fold;
    };
    constexpr FusedVariant kVariants[] = {{FusedMma::kMmaSync, 0, false},    {FusedMma::kWgmma, 0, false},
                                          {FusedMma::kWgmma, 64, false},     {FusedMma::kMmaSync, 0, true},
                                          {FusedMma::kWgmma, 0, true},       {FusedMma::kMmaSyncF16, 0, false},
                                          {FusedMma::kMmaSyncF16, 0, true}};
    std::string by_cluster;
    for (const FusedVariant& v : kVariants) {
      const std::string kind = absl::StrCat(FusedMmaName(v.mma), v.block_m == 0 ? "" : absl::StrCat("/bm", v.block_m),
                                            v.fold ? "/fold" : "");
      std::string times;
      for (int cluster : {0, 1, 2, 4, 8}) {
        if (v.fold && cluster != 0) continue;
        if ((*dm)->traits().cc_major != 9 && (cluster > 1 || v.mma != FusedMma::kMmaSync)) continue;
        FusedMlpArgs fa = (*dm)->FusedArgs(x.get(), rows, y.get());
        fa.cluster_size = cluster;
        fa.mma = v.mma;
        fa.block_m = v.block_m;
        fa.fold_last_layer = v.fold;
        const absl::StatusOr<FusedPlan> plan = PlanFusedMlp(fa, (*dm)->traits());
        if (!plan.ok() || (v.fold && !plan->layers[fa.num_layers - 1].folded)) continue;
        Graph g;
        if (!g.Capture(stream, [&] { return LaunchFusedMlp(fa, (*dm)->traits(), stream); }).ok()) continue;
        const double us = timer.MedianUs([&](int) { g.Launch(stream); }, false);
        const std::string c = cluster == 0 ? "auto" : std::to_string(cluster);
        times += absl::StrFormat("  C=%s %s", c, Us(us).c_str());
        Row r;
        r.section = "forward";
        r.variant = absl::StrCat("fused/", kind, "/cluster", c);
        r.m = rows;
        r.n = mlp.output_dim();
        r.k = mlp.input_dim();
        r.us = us;
        report.Add(r);
      }
      if (!times.empty()) absl::StrAppend(&by_cluster, "\n     ", kind, ":", times);
    }
    std::printf("  batch %6d: fused %9s us  chain %9s us  cuBLASLt per layer %9s us  fused x%.2f vs cuBLASLt\n", rows,
                Us(t[0]).c_str(), Us(t[1]).c_str(), Us(t[2]).c_str(), t[2] / t[0]);
    if (!by_cluster.empty()) std::printf("    fused kernel by cluster size (us):%s\n", by_cluster.c_str());
    if ((*dm)->auto_path() == ForwardPath::kFused && rows <= kFusedAutoMaxRows) {
      // Back to back: kFusedBackToBack forwards in one graph, so that launch latency overlaps the
      // previous kernel (the GPU time of a forward in a busy server, closer than one replay)
      constexpr int kFusedBackToBack = 20;
      Graph g;
      const absl::Status st = g.Capture(stream, [&] {
        for (int i = 0; i < kFusedBackToBack; ++i) {
          const absl::Status s = (*dm)->Forward(x.get(), rows, y.get(), **ws, stream, ForwardPath::kFused);
          if (!s.ok()) return s;
        }
        return absl::OkStatus();
      });
      if (st.ok()) {
        const double us = timer.MedianUs([&](int) { g.Launch(stream); }, false) / kFusedBackToBack;
        std::printf("    fused, %d forwards back to back in one graph: %s us per forward\n", kFusedBackToBack,
                    Us(us).c_str());
        Row r;
        r.section = "forward";
        r.variant = "fused/back_to_back";
        r.m = rows;
        r.n = mlp.output_dim();
        r.k = mlp.input_dim();
        r.us = us;
        report.Add(r);
      }
      TraceFused(**dm, x.get(), rows, y.get(), stream, report, 15, 0, FusedMma::kMmaSync);
      if ((*dm)->traits().cc_major == 9) {
        // One CTA per row block: every chunk of the model in one CTA, the per-chunk cost in isolation;
        // and Hopper's wgmma
        TraceFused(**dm, x.get(), rows, y.get(), stream, report, 15, 1, FusedMma::kMmaSync);
        TraceFused(**dm, x.get(), rows, y.get(), stream, report, 15, 0, FusedMma::kWgmma);
        TraceFused(**dm, x.get(), rows, y.get(), stream, report, 15, 1, FusedMma::kWgmma);
        TraceFused(**dm, x.get(), rows, y.get(), stream, report, 15, 0, FusedMma::kWgmma, 64);
        TraceFused(**dm, x.get(), rows, y.get(), stream, report, 15, 0, FusedMma::kMmaSync, 0, true);
        TraceFused(**dm, x.get(), rows, y.get(), stream, report, 15, 0, FusedMma::kWgmma, 0, true);
        TraceFused(**dm, x.get(), rows, y.get(), stream, report, 15, 0, FusedMma::kMmaSyncF16, 0, true);
      }
    }
    for (int p = 0; p < 3; ++p) {
      if (!notes[p].empty()) std::printf("    %s: %s\n", names[p], notes[p].c_str());
      Row r;
      r.section = "forward";
      r.variant = names[p];
      r.m = rows;
      r.n = mlp.output_dim();
      r.k = mlp.input_dim();
      r.us = t[p];
      r.speedup_vs_lt = t[2] / t[p];
      r.config = notes[p];
      report.Add(r);
    }
  }
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------------------------

void PrintSummary(const Report& report) {
  std::printf("\n==================== SUMMARY (median us; speedup = cuBLASLt time / ours) ====================\n");
  std::printf("GEMM E4M3 x E4M3 -> BF16      %10s %10s %10s %10s %10s %10s %10s %8s %9s %9s %9s  %s\n", "ours",
              "paired", "cluster", "tiledB", "wide192", "lt_tensor", "lt_block", "TFLOP/s", "vs_tensor", "vs_block",
              "best_mc", "fastest of ours (its time vs cuBLASLt per-tensor)");
  const auto& rows = report.rows();
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    if (r.section != "gemm" || r.variant != "ours") continue;
    double lt_t = NAN, lt_b = NAN, paired = NAN, cluster = NAN, tiled = NAN, wide = NAN, fastest = NAN;
    std::string best_mc = "-", fastest_name = "-";
    for (const Row& o : rows) {
      if (o.section != "gemm" || o.m != r.m || o.n != r.n || o.k != r.k) continue;
      if (o.variant == "cublaslt/tensor") lt_t = o.us;
      if (o.variant == "cublaslt/block") lt_b = o.us;
      if (o.variant == absl::StrFormat("ours/%s+paired", GemmKernelName(GemmKernel::kSm90Wgmma))) paired = o.us;
      if (absl::EndsWith(o.variant, "+tiledB")) tiled = o.us;
      if (absl::StartsWith(o.variant, "ours") && !(o.us >= fastest)) {
        fastest = o.us;
        fastest_name = o.variant;
      }
      // wide192: the best of the 128 x 192 tile's variants (alone or clustered)
      if (o.variant.find("+n192") != std::string::npos && !(o.us >= wide)) wide = o.us;
      const size_t mc = o.variant.rfind("+mc");
      if (mc != std::string::npos && o.variant.find("+tiledB") == std::string::npos &&
          o.variant.find("+n192") == std::string::npos && !(o.us >= cluster)) {
        cluster = o.us;
        best_mc = o.variant.substr(mc + 3);
      }
    }
    std::printf("%6d x %5d x %5d         %10s %10s %10s %10s %10s %10s %10s %8.1f %9.2f %9.2f %9s  %s (x%.2f)\n",
                r.m, r.n, r.k, Us(r.us).c_str(), Us(paired).c_str(), Us(cluster).c_str(), Us(tiled).c_str(),
                Us(wide).c_str(), Us(lt_t).c_str(), Us(lt_b).c_str(), r.tflops, lt_t / r.us, lt_b / r.us,
                best_mc.c_str(), fastest_name.c_str(), lt_t / fastest);
  }
  bool header = false;
  for (const Row& r : rows) {
    if (r.section == "forward" && r.variant == "empty_kernel") {
      std::printf("Forward: an empty kernel replayed the same way takes %s us (the floor)\n", Us(r.us).c_str());
    }
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].section != "forward" || rows[i].variant != "fused") continue;
    if (!header) {
      std::printf("Forward %-21s %10s %10s %10s %10s %9s\n", "(batch)", "fused", "wgmma", "chain", "lt/layer",
                  "fused_vs");
      header = true;
    }
    const Row& f = rows[i];
    double chain = NAN, lt = NAN, wgmma = NAN;
    for (const Row& o : rows) {
      if (o.section != "forward" || o.m != f.m) continue;
      if (o.variant == "chain") chain = o.us;
      if (o.variant == "cublaslt_per_layer") lt = o.us;
      if (o.variant == "fused/wgmma/clusterauto") wgmma = o.us;  // the fused kernel with wgmma (Hopper)
    }
    std::printf("batch %-23d %10s %10s %10s %10s %9.2f\n", f.m, Us(f.us).c_str(), Us(wgmma).c_str(), Us(chain).c_str(),
                Us(lt).c_str(), lt / f.us);
  }
}

int Main() {
  int device_count = 0;
  BENCH_CUDA(cudaGetDeviceCount(&device_count));
  BENCH_CUDA(cudaSetDevice(0));
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  absl::StatusOr<DeviceTraits> traits = QueryDeviceTraits(0);
  BENCH_OK(traits.status());
  int lt_version = static_cast<int>(cublasLtGetVersion());
  std::printf("fp8_gemm_bench on %s (cc %d.%d, %d SMs, L2 %d MB), cuBLASLt %d\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount, prop.l2CacheSize >> 20, lt_version);

  const int iters = std::max(1, absl::GetFlag(FLAGS_iters)), warmup = std::max(0, absl::GetFlag(FLAGS_warmup));
  cudaStream_t stream = nullptr;
  BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasLtHandle_t lt = nullptr;
  BENCH_LT(cublasLtCreate(&lt));
  DeviceArray<uint8_t> lt_workspace(kLtWorkspaceBytes);
  // NOTES: a flush buffer of at least twice L2 (and 256 MB) makes every timed run read its inputs
  // from HBM, as a layer whose weights were evicted by the previous one would.
  const size_t flush_bytes = std::max<size_t>(256u << 20, 2 * static_cast<size_t>(prop.l2CacheSize));
  Report report(absl::GetFlag(FLAGS_csv));
  bool failed_check = false;
  {
    Timer timer(stream, iters, warmup, flush_bytes);
    if (absl::GetFlag(FLAGS_flush_l2)) {
      std::printf("timing: median of %d launches after %d warm-ups; GEMMs with L2 flushed (%zu MB) and inputs rotated\n",
                  iters, warmup, flush_bytes >> 20);
    } else {
      std::printf("timing: median of %d launches after %d warm-ups; GEMMs with L2 WARM (--flush_l2=false), inputs "
                  "rotated\n", iters, warmup);
    }
    if (!absl::GetFlag(FLAGS_skip_gemm)) {
      GemmBenchContext ctx{stream, lt, *traits, &timer, &lt_workspace, &report, std::max(1, absl::GetFlag(FLAGS_copies))};
      ctx.profile_variant = absl::GetFlag(FLAGS_profile_variant);
      ctx.flush_l2 = absl::GetFlag(FLAGS_flush_l2);
      const std::string list = absl::GetFlag(FLAGS_shapes);
      for (const Shape& s : list.empty() ? DefaultShapes() : ParseShapes(list)) BenchShape(s, ctx);
      failed_check = ctx.failed_check;
    }
    if (!absl::GetFlag(FLAGS_skip_mlp)) {
      absl::StatusOr<MlpModel> model = LoadMlpModel(absl::GetFlag(FLAGS_model));
      BENCH_OK(model.status());
      std::vector<int> batches;
      for (absl::string_view b : absl::StrSplit(absl::GetFlag(FLAGS_mlp_batches), ',', absl::SkipEmpty())) {
        batches.push_back(std::max(1, std::atoi(std::string(b).c_str())));
      }
      if (!batches.empty()) BenchForward(model->weights, batches, stream, lt, timer, lt_workspace, report);
    }
  }
  PrintSummary(report);
  if (failed_check) std::printf("CHECK FAILED: our GEMM and cuBLASLt disagree on at least one shape (see MISMATCH above)\n");
  std::fflush(stdout);
  BENCH_LT(cublasLtDestroy(lt));
  BENCH_CUDA(cudaStreamDestroy(stream));
  return failed_check ? 2 : 0;
}

}  // namespace
}  // namespace fp8serve::cuda

int main(int argc, char** argv) {
  fp8serve::ParseCommandLineWithUsage(
      "fp8_gemm_bench: checks our FP8 GEMMs against cuBLASLt, then times them and the bundled model's forward.\n"
      "  fp8_gemm_bench [--iters=50] [--shapes=MxNxK,...] [--csv=FILE] [--model=FILE] [--mlp_batches=1,64,1024,16384]",
      argc, argv);
  return fp8serve::cuda::Main();
}
