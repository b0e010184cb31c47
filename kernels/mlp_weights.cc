#include "kernels/mlp_weights.h"

#include <algorithm>

namespace fp8serve {

int MlpWeights::max_width() const {
  int w = 0;
  for (const MlpLayer& l : layers) w = std::max({w, l.in, l.out});
  return w;
}

MlpLayer QuantizeLayer(const MlpLayer& f32_layer, Fp8Format format, ScaleGranularity granularity) {
  MlpLayer q;
  q.in = f32_layer.in;
  q.out = f32_layer.out;
  q.quantized = true;
  q.format = format;
  q.granularity = granularity;
  QuantizedWeights w = QuantizeWeights(f32_layer.f32.data(), f32_layer.out, f32_layer.in, format, granularity);
  q.fp8 = std::move(w.data);
  q.scales = std::move(w.scales);
  q.bias = f32_layer.bias;
  return q;
}

std::vector<float> DequantizedWeights(const MlpLayer& layer) {
  if (!layer.quantized) return layer.f32;
  std::vector<float> w(static_cast<size_t>(layer.out) * layer.in);
  DequantizeWeights(layer.fp8.data(), layer.scales.data(), layer.out, layer.in, layer.format,
                    layer.granularity, w.data());
  return w;
}

}  // namespace fp8serve
