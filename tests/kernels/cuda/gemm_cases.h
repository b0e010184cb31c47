// The GEMM test problems and their checks, shared by the GPU test (fp8_gemm_test.cc) and the sm90
// kernel's host emulation test (sm90_gemm_emu_test.cc): random FP8 layers and activations of
// realistic magnitudes in gemm_config.h's padded device layout, the CPU reference with the
// per-element bound (cuda_test_util.h), and the checks of each output kind (FP32, BF16, E4M3
// requantized), including that columns past n_store keep the poison the runs write first.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "kernels/cpu/mlp_reference.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/gemm_config.h"
#include "kernels/numerics/quantize.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace fp8serve::cuda::gemm_test {

struct GemmCase {
  int m = 1, n = 1, k = 1;  // logical shape
  Fp8Format format = Fp8Format::kE4M3;
  ScaleGranularity granularity = ScaleGranularity::kPerChannel;
  bool relu = false;
  bool bias = true;
  int ldd_extra = 0;  // output row elements past n_store, which the kernel must leave untouched
};

inline std::string CaseName(const GemmCase& c) {
  return absl::StrCat("m", c.m, "_n", c.n, "_k", c.k, "_", Fp8FormatName(c.format), "_", GranularityName(c.granularity),
                      c.relu ? "_relu" : "", c.bias ? "_bias" : "", c.ldd_extra > 0 ? "_ldd" : "");
}

inline void PrintTo(const GemmCase& c, std::ostream* os) { *os << CaseName(c); }

// One GEMM problem: the logical layer and input, the device-layout operands, the reference output
// (epilogue applied) and the per-element bound.
struct Problem {
  GemmCase c;
  MlpLayer layer;
  gpu_test::PaddedLayer w;
  std::vector<float> x;  // [m, k]
  gpu_test::QuantizedActivations a;
  std::vector<float> ref;     // [m, n]
  std::vector<double> l1;     // [m, n]
  std::vector<double> bound;  // [m, n]
};

// Quantizes, pads, and computes the reference and the bound, from p->c, p->x and the FP32 layer.
inline void FinishProblem(const MlpLayer& f32_layer, Problem* p) {
  const GemmCase& c = p->c;
  p->layer = QuantizeLayer(f32_layer, c.format, c.granularity);
  p->w = gpu_test::PadLayer(p->layer);
  p->a = gpu_test::QuantizeForDevice(p->x.data(), c.m, c.k);
  p->ref.assign(static_cast<size_t>(c.m) * c.n, 0.0f);
  const Activation relu = Activation::kRelu;
  gpu_test::ParallelReferenceLayer(p->layer, p->x.data(), c.m, c.relu ? &relu : nullptr, p->ref.data());
  gpu_test::ContractMagnitudes(p->layer, p->a.q.data(), p->a.scales.data(), c.m, nullptr, &p->l1, nullptr);
  p->bound.resize(p->l1.size());
  for (int m = 0; m < c.m; ++m) {
    for (int n = 0; n < c.n; ++n) {
      const size_t i = static_cast<size_t>(m) * c.n + n;
      p->bound[i] = gpu_test::GemmBound(p->l1[i], 0.0, p->layer.bias.empty() ? 0.0f : p->layer.bias[n]);
    }
  }
}

// Random weights N(0, 1/sqrt(k)), with rows and 128-column blocks of different sizes so that
// per-channel and block scales differ; random bias; activations N(0, 1) with some rows scaled by
// 1e-3 and 1e3 and one column group in three by 8, so the 1x128 scales differ across rows and
// groups. No zeros anywhere (the padding adds its own).
inline Problem MakeProblem(const GemmCase& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  MlpLayer f;
  f.quantized = false;
  f.in = c.k;
  f.out = c.n;
  f.f32.resize(static_cast<size_t>(c.n) * c.k);
  const float inv_sqrt_k = 1.0f / std::sqrt(static_cast<float>(c.k));
  constexpr float kRowFactor[3] = {1.0f, 3.0f, 0.5f};
  for (int n = 0; n < c.n; ++n) {
    for (int k = 0; k < c.k; ++k) {
      const float col = (k / 128) % 2 == 1 ? 0.25f : 1.0f;
      f.f32[static_cast<size_t>(n) * c.k + k] = normal(rng) * inv_sqrt_k * kRowFactor[(n / 64) % 3] * col;
    }
  }
  if (c.bias) {
    f.bias.resize(c.n);
    for (float& b : f.bias) b = 0.5f * normal(rng);
  }
  Problem p;
  p.c = c;
  p.x.resize(static_cast<size_t>(c.m) * c.k);
  for (int m = 0; m < c.m; ++m) {
    const float row = m % 7 == 3 ? 1e-3f : m % 7 == 5 ? 1e3f : 1.0f;
    for (int k = 0; k < c.k; ++k) {
      const float group = (k / 128) % 3 == 2 ? 8.0f : 1.0f;
      float v = normal(rng);
      if (v == 0.0f) v = 1.0f;
      p.x[static_cast<size_t>(m) * c.k + k] = v * row * group;
    }
  }
  FinishProblem(f, &p);
  return p;
}

inline size_t OutputBytes(GemmOutput o) { return o == GemmOutput::kE4M3 ? 1 : o == GemmOutput::kBF16 ? 2 : 4; }
inline constexpr uint8_t kPoisonCode = 0x7F;   // the E4M3 NaN
inline constexpr uint8_t kPoisonFloat = 0xFF;  // NaN as FP32 and as BF16

struct GemmRun {
  std::vector<uint8_t> d;         // [m, ldd] elements of the output type, as bytes
  std::vector<float> d_scales;    // [m, n_pad/128] for E4M3
  int ldd = 0;
  int n_store = 0;
};

struct CheckResult {
  long failures = 0;
  double worst = 0.0;       // max(|gpu - ref| / allowed): the share of the bound used
  double max_rel_l1 = 0.0;  // max(|gpu - ref| / L1): the measured error against the contract's scale
  std::string first;        // the first few failures, for the message

  void Fail(const std::string& what) {
    if (++failures <= 6) absl::StrAppend(&first, "\n    ", what);
  }
  void Measure(double err, double allowed, double l1) {
    worst = std::max(worst, err / allowed);
    max_rel_l1 = std::max(max_rel_l1, err / std::max(l1, gpu_test::kTiny));
  }
};

inline float LoadF32(const GemmRun& r, size_t i) {
  float v;
  std::memcpy(&v, r.d.data() + i * 4, 4);
  return v;
}
inline uint16_t LoadBf16(const GemmRun& r, size_t i) {
  uint16_t v;
  std::memcpy(&v, r.d.data() + i * 2, 2);
  return v;
}

// The columns past n_store must still hold the poison.
inline void CheckUntouched(const Problem& p, GemmOutput out, const GemmRun& r, CheckResult* cr) {
  const size_t eb = OutputBytes(out);
  const uint8_t poison = out == GemmOutput::kE4M3 ? kPoisonCode : kPoisonFloat;
  for (int m = 0; m < p.c.m; ++m) {
    for (size_t b = static_cast<size_t>(r.n_store) * eb; b < static_cast<size_t>(r.ldd) * eb; ++b) {
      if (r.d[static_cast<size_t>(m) * r.ldd * eb + b] != poison) {
        cr->Fail(absl::StrFormat("row %d: byte %zu past n_store=%d was written", m, b, r.n_store));
        break;
      }
    }
  }
}

inline CheckResult CheckF32(const Problem& p, const GemmRun& r) {
  CheckResult cr;
  for (int m = 0; m < p.c.m; ++m) {
    for (int n = 0; n < p.c.n; ++n) {
      const size_t i = static_cast<size_t>(m) * p.c.n + n;
      const double g = LoadF32(r, static_cast<size_t>(m) * r.ldd + n), ref = p.ref[i];
      const double err = std::fabs(g - ref), allowed = p.bound[i];
      if (!(err <= allowed)) cr.Fail(absl::StrFormat("[%d,%d] gpu %.9g ref %.9g |d| %.3g bound %.3g", m, n, g, ref, err, allowed));
      cr.Measure(err, allowed, p.l1[i]);
    }
  }
  CheckUntouched(p, GemmOutput::kF32, r, &cr);
  return cr;
}

// x rounded to BF16 (nearest even) after widening it outward by more than its conversion to float
// can move it: the end of an interval of values the GPU may have rounded.
inline double Bf16Below(double x) { return Bf16ToFloat(FloatToBf16(static_cast<float>(x - std::fabs(x) * 1e-6 - 1e-30))); }
inline double Bf16Above(double x) { return Bf16ToFloat(FloatToBf16(static_cast<float>(x + std::fabs(x) * 1e-6 + 1e-30))); }

// The GPU rounds its own v (within `bound` of the reference's) to BF16, nearest even, so
//  - its value lies between the roundings of ref - bound and ref + bound (rounding is monotone):
//    exact, and it catches a wrong rounding mode, which "within one spacing" would not;
//  - hence also |bf(v_gpu) - bf(v_ref)| <= bound + 1 BF16 spacing (each side rounds by half).
inline CheckResult CheckBf16(const Problem& p, const GemmRun& r) {
  CheckResult cr;
  for (int m = 0; m < p.c.m; ++m) {
    for (int n = 0; n < p.c.n; ++n) {
      const size_t i = static_cast<size_t>(m) * p.c.n + n;
      const double g = Bf16ToFloat(LoadBf16(r, static_cast<size_t>(m) * r.ldd + n));
      const double ref = Bf16ToFloat(FloatToBf16(p.ref[i]));
      const double err = std::fabs(g - ref);
      const double allowed = p.bound[i] + gpu_test::Bf16Spacing(std::max(std::fabs(static_cast<double>(p.ref[i])), std::fabs(g)));
      const double lo = Bf16Below(p.ref[i] - p.bound[i]), hi = Bf16Above(p.ref[i] + p.bound[i]);
      if (!(err <= allowed) || !(lo <= g && g <= hi)) {
        cr.Fail(absl::StrFormat("[%d,%d] gpu %.6g ref %.9g (bf16 %.6g) bound %.3g: allowed [%.6g, %.6g]", m, n, g, p.ref[i], ref,
                                p.bound[i], lo, hi));
      }
      cr.worst = std::max(cr.worst, err / allowed);
    }
  }
  cr.max_rel_l1 = NAN;  // rounding dominates: the FP32 output measures the GEMM itself
  CheckUntouched(p, GemmOutput::kBF16, r, &cr);
  return cr;
}

// The requantized output against QuantizeActivations(reference output):
//  - each 1x128 scale is amax / 448, and amax moves by at most the group's largest bound, so
//    |s_gpu - s_ref| <= max_bound / 448 (plus the division's rounding); a group whose reference
//    is all zero (scale 1) may come out with a tiny scale instead when its bound allows;
//  - each code is the GPU's own v / s_gpu rounded to E4M3 (nearest even, saturating), with v
//    within `bound` of the reference's, so it lies between the roundings of (ref -+ bound) / s_gpu:
//    exact where no rounding boundary is near, and it catches a wrong rounding mode;
//  - hence also, dequantized, |q_gpu s_gpu - q_ref s_ref| <= bound + one E4M3 step (each side
//    rounds by half a step of its own scale);
//  - the padded columns [n, n_pad) are zero codes (the next layer reads them as K padding), and
//    anything past n_pad in the row is untouched.
inline CheckResult CheckE4M3(const Problem& p, const GemmRun& r) {
  CheckResult cr;
  const int M = p.c.m, N = p.c.n, G = p.w.n_pad / kGemmBlockK;
  std::vector<uint8_t> rq(static_cast<size_t>(M) * N);
  std::vector<float> rs(static_cast<size_t>(M) * G);
  QuantizeActivations(p.ref.data(), M, N, rq.data(), rs.data());
  for (int m = 0; m < M; ++m) {
    for (int j = 0; j < G; ++j) {
      const int n0 = j * kGemmBlockK, n1 = std::min(N, n0 + kGemmBlockK);
      double group_bound = 0.0, amax_ref = 0.0;
      for (int n = n0; n < n1; ++n) {
        group_bound = std::max(group_bound, p.bound[static_cast<size_t>(m) * N + n]);
        amax_ref = std::max(amax_ref, std::fabs(static_cast<double>(p.ref[static_cast<size_t>(m) * N + n])));
      }
      const double sg = r.d_scales[static_cast<size_t>(m) * G + j], sr = rs[static_cast<size_t>(m) * G + j];
      const double scale_allowed = group_bound / 448.0 * (1.0 + 1e-6) + sr * 1e-6;
      const bool zero_group_ok = amax_ref <= group_bound && (sg == 1.0 || (sg > 0.0 && sg * 448.0 <= group_bound * (1.0 + 1e-6)));
      if (!(sg > 0.0 && std::isfinite(sg)) || !(std::fabs(sg - sr) <= scale_allowed || zero_group_ok)) {
        cr.Fail(absl::StrFormat("scale [%d,%d] gpu %.9g ref %.9g allowed %.3g", m, j, sg, sr, scale_allowed));
        continue;
      }
      const double smin = std::min(sg, sr), smax = std::max(sg, sr);
      for (int n = n0; n < n1; ++n) {
        const size_t i = static_cast<size_t>(m) * N + n;
        const uint8_t code = r.d[static_cast<size_t>(m) * r.ldd + n];
        const double dq_gpu = DecodeE4M3(code) * sg, dq_ref = DecodeE4M3(rq[i]) * sr;
        const double u = std::min(448.0, (std::fabs(static_cast<double>(p.ref[i])) + p.bound[i]) / smin);
        const double allowed = p.bound[i] + smax * gpu_test::E4M3Spacing(u) + 1e-6 * std::fabs(dq_ref);
        const double err = std::fabs(dq_gpu - dq_ref);
        // The codes the GPU may have produced: [Q(t_lo), Q(t_hi)] with t = (ref -+ bound) / s_gpu,
        // widened by far more than the division's rounding.
        double t_lo = (p.ref[i] - p.bound[i]) / sg, t_hi = (p.ref[i] + p.bound[i]) / sg;
        t_lo -= std::fabs(t_lo) * 1e-6 + 1e-30;
        t_hi += std::fabs(t_hi) * 1e-6 + 1e-30;
        const double q_lo = RoundToE4M3(static_cast<float>(std::max(t_lo, -448.0)));
        const double q_hi = RoundToE4M3(static_cast<float>(std::min(t_hi, 448.0)));
        const double q = DecodeE4M3(code);
        if (!(err <= allowed) || !(q_lo <= q && q <= q_hi)) {
          cr.Fail(absl::StrFormat("[%d,%d] gpu %.6g (code 0x%02x = %g, s %.6g) ref %.6g (code 0x%02x, s %.6g) allowed %.3g, "
                                  "codes allowed [%g, %g]", m, n, dq_gpu, code, q, sg, dq_ref, rq[i], sr, allowed, q_lo, q_hi));
        }
        cr.worst = std::max(cr.worst, err / allowed);
      }
    }
    for (int n = N; n < p.w.n_pad; ++n) {
      const uint8_t code = r.d[static_cast<size_t>(m) * r.ldd + n];
      if (code != 0x00) {
        cr.Fail(absl::StrFormat("row %d: padded column %d holds code 0x%02x, not the zero code", m, n, code));
        break;
      }
    }
  }
  cr.max_rel_l1 = NAN;  // quantization dominates: the FP32 output measures the GEMM itself
  CheckUntouched(p, GemmOutput::kE4M3, r, &cr);
  return cr;
}

inline CheckResult CheckOutput(const Problem& p, GemmOutput out, const GemmRun& r) {
  switch (out) {
    case GemmOutput::kF32: return CheckF32(p, r);
    case GemmOutput::kBF16: return CheckBf16(p, r);
    case GemmOutput::kE4M3: return CheckE4M3(p, r);
  }
  return CheckResult{};
}

inline uint32_t SeedOf(const GemmCase& c) {
  return static_cast<uint32_t>(c.m * 73856093u ^ c.n * 19349663u ^ c.k * 83492791u ^
                               (static_cast<unsigned>(c.format) * 4 + static_cast<unsigned>(c.granularity)));
}

// A wgmma config with every choice forced (the launcher checks it like any other).
inline GemmConfig ForcedSm90Config(int block_m, int stages, int grid, int raster_group, int k_splits,
                            bool pair_loads = false) {
  GemmConfig config;
  config.pair_loads = pair_loads;
  config.kernel = GemmKernel::kSm90Wgmma;
  config.block_m = block_m;
  config.block_n = kSm90BlockN;
  config.stages = stages;
  config.k_splits = k_splits;
  config.grid = grid;
  config.raster_group = raster_group;
  config.smem_bytes = Sm90SmemBytes(block_m, kSm90BlockN, stages);
  return config;
}

// The output buffer's shape for a run of `p` with output `out` (E4M3 writes every padded column).
inline GemmRun EmptyRun(const Problem& p, GemmOutput out) {
  GemmRun r;
  r.n_store = out == GemmOutput::kE4M3 ? p.w.n_pad : p.c.n;
  r.ldd = r.n_store + p.c.ldd_extra;
  return r;
}

// Where a run's operands, outputs and workspace live (device or, for the emulation, host memory).
struct RunPointers {
  const uint8_t* a = nullptr;
  const float* a_scales = nullptr;
  const uint8_t* b = nullptr;  // in b_layout
  WeightLayout b_layout = WeightLayout::kRowMajor;
  const float* b_scales = nullptr;
  const float* col_scales = nullptr;  // null when p has none
  const float* bias = nullptr;        // null when p has none
  void* d = nullptr;
  float* d_scales = nullptr;
  void* workspace = nullptr;
};

// The pointers of a run over `ops` (the problem's operands in device or host buffers with get<T>():
// a, a_scales, b, b_tiled, b_scales, col_scales, bias) with B in `layout`, into the outputs `d`
// and `d_scales`.
template <typename Operands, typename Buffer>
RunPointers PointersTo(const Operands& ops, WeightLayout layout, const Buffer& d, const Buffer& d_scales) {
  RunPointers ptr;
  ptr.a = ops.a.template get<uint8_t>();
  ptr.a_scales = ops.a_scales.template get<float>();
  ptr.b = layout == WeightLayout::kTiled128 ? ops.b_tiled.template get<uint8_t>() : ops.b.template get<uint8_t>();
  ptr.b_layout = layout;
  ptr.b_scales = ops.b_scales.template get<float>();
  ptr.col_scales = ops.col_scales.template get<float>();
  ptr.bias = ops.bias.template get<float>();
  ptr.d = d.get();
  ptr.d_scales = d_scales.template get<float>();
  return ptr;
}

// A run the launcher must refuse before running anything: INVALID_ARGUMENT whose message says
// `says` (any message when empty); `context` names the case in a failure.
inline void ExpectRefused(const absl::StatusOr<GemmRun>& run, absl::string_view says, std::string_view context = {}) {
  if (run.ok()) {
    ADD_FAILURE() << "ran, should have been refused: " << context;
    return;
  }
  EXPECT_EQ(run.status().code(), absl::StatusCode::kInvalidArgument) << context << " " << run.status();
  EXPECT_NE(run.status().message().find(says), absl::string_view::npos) << context << " " << run.status();
}

// The GEMM arguments of problem `p` with output `out` into run `r`'s shape.
inline Fp8GemmArgs ArgsFor(const Problem& p, GemmOutput out, const GemmRun& r, const RunPointers& ptr) {
  Fp8GemmArgs args;
  args.m = p.c.m;
  args.n = p.w.n_pad;
  args.k = p.w.k_pad;
  args.a = ptr.a;
  args.a_scales = ptr.a_scales;
  args.b = ptr.b;
  args.b_layout = ptr.b_layout;
  args.b_format = p.w.format;
  args.b_scales = ptr.b_scales;
  args.col_scales = ptr.col_scales;
  args.bias = ptr.bias;
  args.relu = p.c.relu;
  args.output = out;
  args.d = ptr.d;
  args.ldd = r.ldd;
  args.n_store = r.n_store;
  args.d_scales = ptr.d_scales;
  args.workspace = ptr.workspace;
  return args;
}

}  // namespace fp8serve::cuda::gemm_test
