#include "kernels/cpu/mlp_reference.h"

#include <algorithm>
#include <vector>

namespace fp8serve {

namespace {

float Activate(Activation a, float v) {
  switch (a) {
    // Written so that NaN propagates (NaN < 0 is false), as torch.relu does; kernels must match.
    case Activation::kRelu: return v < 0.0f ? 0.0f : v;
    case Activation::kIdentity: return v;
  }
  return v;
}

}  // namespace

void ReferenceLayer(const MlpLayer& layer, const float* x, int rows, const Activation* activation, float* y) {
  const int K = layer.in, N = layer.out;
  const bool has_bias = !layer.bias.empty();
  if (!layer.quantized) {
    for (int m = 0; m < rows; ++m) {
      for (int n = 0; n < N; ++n) {
        float acc = 0.0f;
        for (int k = 0; k < K; ++k) acc += x[static_cast<size_t>(m) * K + k] * layer.f32[static_cast<size_t>(n) * K + k];
        float v = acc + (has_bias ? layer.bias[n] : 0.0f);
        y[static_cast<size_t>(m) * N + n] = activation ? Activate(*activation, v) : v;
      }
    }
    return;
  }

  // 1. Quantize the activations, then decode both operands once: FP8 values are exact in FP32,
  //    so the loop below multiplies the very numbers the tensor cores multiply.
  const int groups = CeilDiv(K, kQuantBlock);
  std::vector<uint8_t> qx(static_cast<size_t>(rows) * K);
  std::vector<float> sx(static_cast<size_t>(rows) * groups);
  QuantizeActivations(x, rows, K, qx.data(), sx.data());
  std::vector<float> xd(qx.size()), wd(layer.fp8.size());
  for (size_t i = 0; i < qx.size(); ++i) xd[i] = DecodeE4M3(qx[i]);
  const auto& table = Fp8DecodeTable(layer.format);
  for (size_t i = 0; i < wd.size(); ++i) wd[i] = table[layer.fp8[i]];

  // 2-3. Per-group FP32 partial sums, promoted with both scales; then bias and activation.
  for (int m = 0; m < rows; ++m) {
    const float* xr = xd.data() + static_cast<size_t>(m) * K;
    for (int n = 0; n < N; ++n) {
      const float* wr = wd.data() + static_cast<size_t>(n) * K;
      float acc = 0.0f;
      for (int g = 0; g < groups; ++g) {
        const int k0 = g * kQuantBlock, k1 = std::min(K, k0 + kQuantBlock);
        float partial = 0.0f;
        for (int k = k0; k < k1; ++k) partial += xr[k] * wr[k];
        const float s = sx[static_cast<size_t>(m) * groups + g] *
                        WeightScaleAt(layer.scales.data(), layer.granularity, K, n, k0);
        acc += s * partial;
      }
      float v = acc + (has_bias ? layer.bias[n] : 0.0f);
      y[static_cast<size_t>(m) * N + n] = activation ? Activate(*activation, v) : v;
    }
  }
}

void ReferenceForward(const MlpWeights& mlp, const float* x, int rows, float* y) {
  std::vector<float> a(x, x + static_cast<size_t>(rows) * mlp.input_dim()), b;
  for (size_t i = 0; i < mlp.layers.size(); ++i) {
    const MlpLayer& layer = mlp.layers[i];
    const bool last = i + 1 == mlp.layers.size();
    float* out;
    if (last) {
      out = y;
    } else {
      b.assign(static_cast<size_t>(rows) * layer.out, 0.0f);
      out = b.data();
    }
    ReferenceLayer(layer, a.data(), rows, last ? nullptr : &mlp.activation, out);
    if (!last) std::swap(a, b);
  }
}

}  // namespace fp8serve
