// The reference forward of a whole FP8 MLP with a bound per logit: how far any forward that keeps
// the numeric contract (kernels/cpu/mlp_reference.h; only FP32 summation order may differ) can be
// from ReferenceForward. Used by the fused kernel's test (fused_mlp_test) and the CUDA backend's
// (cuda_backend_test). Every layer must be quantized (MlpLayer::quantized).
//
// The logits' bound is carried through the layers on the host. A hidden layer's output may differ
// from the reference by its GEMM bound (cuda_test_util.h); requantized for the next layer, such a
// difference usually leaves the E4M3 code unchanged but can move it one step where the value sits
// near a rounding boundary, and can shift the group's scale. For each hidden element RequantSpread
// computes, from the reference value, its bound and the group's possible scales, how far the
// dequantized input the next GEMM multiplies can be from the reference's; the next layer's bound
// adds sum_k |w s_w| * that spread. So the check is tight where nothing is near a boundary and
// still exact where something is.
//
// The per-layer bound covers the GPU (tensor-core groups summed with a ~13-fraction-bit
// accumulator) and, with a wide margin, the CPU's FastMlp (FP32 SGEMM on dequantized values:
// about (K + 3) u of the same L1).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/cpu/mlp_reference.h"
#include "kernels/mlp_weights.h"
#include "kernels/numerics/fp8.h"
#include "kernels/numerics/quantize.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace fp8serve::cuda::gpu_test {

// h [rows, K]: a hidden layer's reference output; din: a bound on |h_gpu - h_ref| per element.
// Returns a bound on |q_gpu s_gpu - q_ref s_ref| per element after 1x128 requantization.
// For each group the GPU's amax lies within the largest din of the reference's amax, hence its
// scale in [s_lo, s_hi]; each element's h_gpu / s_gpu lies in [t_min, t_max]; rounding to E4M3 is
// monotone, so the GPU's code lies in [Q(t_min), Q(t_max)], and code x scale has its extremes at
// the corners of that box. Divisions are widened by a few ulps for their own rounding.
inline std::vector<double> RequantSpread(const std::vector<float>& h, const std::vector<double>& din, int rows, int K) {
  const int G = CeilDiv(K, kQuantBlock);
  std::vector<uint8_t> q(static_cast<size_t>(rows) * K);
  std::vector<float> s(static_cast<size_t>(rows) * G);
  QuantizeActivations(h.data(), rows, K, q.data(), s.data());
  std::vector<double> delta(static_cast<size_t>(rows) * K);
  constexpr double kWiden = 1e-6;
  for (int m = 0; m < rows; ++m) {
    for (int g = 0; g < G; ++g) {
      const int k0 = g * kQuantBlock, k1 = std::min(K, k0 + kQuantBlock);
      double amax = 0.0, b = 0.0;
      for (int k = k0; k < k1; ++k) {
        const size_t i = static_cast<size_t>(m) * K + k;
        amax = std::max(amax, std::fabs(static_cast<double>(h[i])));
        b = std::max(b, din[i]);
      }
      const double sr = s[static_cast<size_t>(m) * G + g];
      const double amax_lo = std::max(0.0, amax - b), amax_hi = amax + b;
      for (int k = k0; k < k1; ++k) {
        const size_t i = static_cast<size_t>(m) * K + k;
        const double dq_ref = DecodeE4M3(q[i]) * sr;
        if (amax_lo <= 0.0) {
          // The GPU's group may be all zero (scale 1, every code 0) or have any small scale:
          // |q_gpu s_gpu| <= |h_gpu| (1 + 2^-4) + half a subnormal step of the largest scale.
          delta[i] = std::fabs(dq_ref) + (std::fabs(static_cast<double>(h[i])) + din[i]) * (1.0 + 1.0 / 16) +
                     amax_hi / 448.0 / 1024.0;
          continue;
        }
        const double s_lo = amax_lo / 448.0 * (1.0 - kWiden), s_hi = amax_hi / 448.0 * (1.0 + kWiden);
        const double lo = h[i] - din[i], hi = h[i] + din[i];
        double t_min = std::min({lo / s_lo, lo / s_hi, hi / s_lo, hi / s_hi});
        double t_max = std::max({lo / s_lo, lo / s_hi, hi / s_lo, hi / s_hi});
        t_min -= std::fabs(t_min) * kWiden;
        t_max += std::fabs(t_max) * kWiden;
        const double q_min = RoundToE4M3(static_cast<float>(std::max(t_min, -448.0)));
        const double q_max = RoundToE4M3(static_cast<float>(std::min(t_max, 448.0)));
        delta[i] = std::max({std::fabs(s_lo * q_min - dq_ref), std::fabs(s_hi * q_min - dq_ref),
                             std::fabs(s_lo * q_max - dq_ref), std::fabs(s_hi * q_max - dq_ref)});
      }
    }
  }
  return delta;
}

struct BoundedForward {
  std::vector<float> y;        // [rows, out] the reference logits
  std::vector<double> bound;   // [rows, out]
  std::vector<double> l1;      // [rows, out] the last layer's L1 (for the printed error measure)
};

// x [rows, input_dim]. The logits are ReferenceForward's, bit for bit (the same layers in the same
// order); the layers run on every core (ParallelReferenceLayer, ContractMagnitudes).
inline BoundedForward ReferenceWithBounds(const MlpWeights& mlp, const std::vector<float>& x, int rows) {
  BoundedForward r;
  std::vector<float> a = x;  // the layer's FP32 input (identical on both sides for layer 0)
  std::vector<double> din;   // bound on |a_gpu - a_ref|; empty for layer 0
  for (size_t li = 0; li < mlp.layers.size(); ++li) {
    const MlpLayer& l = mlp.layers[li];
    const bool last = li + 1 == mlp.layers.size();
    std::vector<float> out(static_cast<size_t>(rows) * l.out);
    ParallelReferenceLayer(l, a.data(), rows, last ? nullptr : &mlp.activation, out.data());
    const QuantizedActivations qa = QuantizeForDevice(a.data(), rows, l.in);
    std::vector<double> delta, l1, spread;
    if (!din.empty()) delta = RequantSpread(a, din, rows, l.in);
    ContractMagnitudes(l, qa.q.data(), qa.scales.data(), rows, delta.empty() ? nullptr : delta.data(), &l1, &spread);
    std::vector<double> bound(l1.size());
    for (int m = 0; m < rows; ++m) {
      for (int n = 0; n < l.out; ++n) {
        const size_t i = static_cast<size_t>(m) * l.out + n;
        bound[i] = GemmBound(l1[i], spread[i], l.bias.empty() ? 0.0f : l.bias[n]);
      }
    }
    if (last) {
      r.y = std::move(out);
      r.bound = std::move(bound);
      r.l1 = std::move(l1);
    } else {
      a = std::move(out);
      din = std::move(bound);  // ReLU and identity are 1-Lipschitz
    }
  }
  return r;
}

}  // namespace fp8serve::cuda::gpu_test
