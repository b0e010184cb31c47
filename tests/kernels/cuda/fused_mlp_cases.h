// The fused forward's test models, inputs and logit check, shared by the GPU test
// (fused_mlp_test.cc) and the kernel's host emulation test (fused_mlp_emu_test.cc).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/mlp_weights.h"
#include "kernels/numerics/quantize.h"
#include "tests/kernels/cuda/forward_bound.h"

namespace fp8serve::cuda::fused_test {

using gpu_test::BoundedForward;

// ---------------------------------------------------------------------------------------------
// Models and inputs.

struct LayerSpec {
  Fp8Format format;
  ScaleGranularity granularity;
};

struct MlpCase {
  std::string name;
  std::vector<int> widths;         // input, hidden..., output
  std::vector<LayerSpec> layers;   // one per layer
};

inline void PrintTo(const MlpCase& c, std::ostream* os) { *os << c.name; }

// He-like weights with rows and 128-column blocks of different sizes (so scales differ), random
// bias.
inline MlpWeights MakeMlp(const MlpCase& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  MlpWeights mlp;
  mlp.activation = Activation::kRelu;
  for (size_t i = 0; i + 1 < c.widths.size(); ++i) {
    MlpLayer f;
    f.quantized = false;
    f.in = c.widths[i];
    f.out = c.widths[i + 1];
    f.f32.resize(static_cast<size_t>(f.in) * f.out);
    const float stddev = std::sqrt(2.0f / static_cast<float>(f.in));
    for (int n = 0; n < f.out; ++n) {
      const float row = (n / 64) % 3 == 1 ? 2.0f : 1.0f;
      for (int k = 0; k < f.in; ++k) {
        const float col = (k / 128) % 2 == 1 ? 0.5f : 1.0f;
        f.f32[static_cast<size_t>(n) * f.in + k] = normal(rng) * stddev * row * col;
      }
    }
    f.bias.resize(f.out);
    for (float& b : f.bias) b = 0.1f * normal(rng);
    mlp.layers.push_back(QuantizeLayer(f, c.layers[i].format, c.layers[i].granularity));
  }
  return mlp;
}

// N(0, 1) rows, some scaled by 1e-3 and 1e3.
inline std::vector<float> RandomInputs(int rows, int cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows) * cols);
  for (int m = 0; m < rows; ++m) {
    const float row = m % 7 == 3 ? 1e-3f : m % 7 == 5 ? 1e3f : 1.0f;
    for (int k = 0; k < cols; ++k) x[static_cast<size_t>(m) * cols + k] = normal(rng) * row;
  }
  return x;
}

// Pixel-like inputs for the bundled model: [0, 1] with about 40% exact zeros, and row 0 all zero
// (every group takes the scale-1 fallback).
inline std::vector<float> PixelInputs(int rows, int cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows) * cols);
  for (float& v : x) v = pixel(rng) < 0.4f ? 0.0f : pixel(rng);
  std::fill_n(x.begin(), cols, 0.0f);
  return x;
}

// ---------------------------------------------------------------------------------------------
// Running and checking.

struct CheckResult {
  long failures = 0;
  double worst = 0.0;       // max |gpu - ref| / bound
  double max_rel_l1 = 0.0;  // max |gpu - ref| / L1 of the last layer
  int argmax_checked = 0;
  std::string first;
};

// Logits within the bound; on rows whose top two reference logits are further apart than their
// bounds allow to cross, the argmax must agree too (implied by the bound: a cross-check of it).
inline CheckResult CheckLogits(const BoundedForward& ref, const std::vector<float>& y, int rows, int out) {
  CheckResult cr;
  for (int m = 0; m < rows; ++m) {
    const float* r = ref.y.data() + static_cast<size_t>(m) * out;
    const float* g = y.data() + static_cast<size_t>(m) * out;
    for (int n = 0; n < out; ++n) {
      const size_t i = static_cast<size_t>(m) * out + n;
      const double err = std::fabs(static_cast<double>(g[n]) - r[n]);
      if (!(err <= ref.bound[i]) && ++cr.failures <= 6) {
        absl::StrAppend(&cr.first, absl::StrFormat("\n    [%d,%d] gpu %.9g ref %.9g |d| %.3g bound %.3g", m, n, g[n], r[n], err,
                                                   ref.bound[i]));
      }
      cr.worst = std::max(cr.worst, err / ref.bound[i]);
      cr.max_rel_l1 = std::max(cr.max_rel_l1, err / std::max(ref.l1[i], gpu_test::kTiny));
    }
    if (out < 2) continue;
    const int best = static_cast<int>(std::max_element(r, r + out) - r);
    int second = best == 0 ? 1 : 0;
    for (int n = 0; n < out; ++n) {
      if (n != best && r[n] > r[second]) second = n;
    }
    const int got = static_cast<int>(std::max_element(g, g + out) - g);
    const size_t ib = static_cast<size_t>(m) * out + best, is = static_cast<size_t>(m) * out + second;
    if (static_cast<double>(r[best]) - r[second] > ref.bound[ib] + ref.bound[is]) {
      ++cr.argmax_checked;
      if (got != best && ++cr.failures <= 6) {
        absl::StrAppend(&cr.first, absl::StrFormat("\n    row %d: argmax %d, reference %d (separated by %.3g)", m, got, best,
                                                   static_cast<double>(r[best]) - r[second]));
      }
    }
  }
  return cr;
}

// The random models every fused test runs.
inline std::vector<MlpCase> ModelCases() {
  using F = Fp8Format;
  using S = ScaleGranularity;
  return {
      {"e4m3_channel_784_256_10", {784, 256, 10}, {{F::kE4M3, S::kPerChannel}, {F::kE4M3, S::kPerChannel}}},
      {"e4m3_tensor_784_512_256_10",
       {784, 512, 256, 10},
       {{F::kE4M3, S::kPerTensor}, {F::kE4M3, S::kPerTensor}, {F::kE4M3, S::kPerTensor}}},
      {"e5m2_block_300_200_10", {300, 200, 10}, {{F::kE5M2, S::kBlock128}, {F::kE5M2, S::kBlock128}}},
      {"mixed_100_200_72_10",
       {100, 200, 72, 10},
       {{F::kE4M3, S::kBlock128}, {F::kE5M2, S::kPerChannel}, {F::kE4M3, S::kPerTensor}}},
      // An input width that is not a multiple of 4: the kernel reads x one float at a time (x_vec4
      // off), and the last group's last lane holds columns on both sides of k
      {"e4m3_block_198_136_10", {198, 136, 10}, {{F::kE4M3, S::kBlock128}, {F::kE4M3, S::kPerChannel}}},
  };
}

}  // namespace fp8serve::cuda::fused_test
