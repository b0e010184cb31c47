// An MLP's weights in memory, as every forward (CPU reference, CPU fast, CUDA) takes them.
//
// Layer i computes y = act(x W^T + b) with W [out, in] in PyTorch's nn.Linear layout; the last
// layer has no activation and gives logits. A layer's weights are either FP8 with scales (the
// served case) or FP32 (an unquantized layer, also how FP32 and BF16/F16 checkpoints load).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/numerics/quantize.h"

namespace fp8serve {

enum class Activation : uint8_t { kRelu, kIdentity };

struct MlpLayer {
  int in = 0;
  int out = 0;
  bool quantized = true;
  Fp8Format format = Fp8Format::kE4M3;                       // when quantized
  ScaleGranularity granularity = ScaleGranularity::kPerChannel;  // when quantized
  std::vector<uint8_t> fp8;    // [out, in] codes, when quantized
  std::vector<float> scales;   // NumWeightScales(granularity, out, in), when quantized
  std::vector<float> f32;      // [out, in], when not quantized
  std::vector<float> bias;     // [out], or empty for no bias
};

struct MlpWeights {
  std::vector<MlpLayer> layers;
  Activation activation = Activation::kRelu;

  int input_dim() const { return layers.empty() ? 0 : layers.front().in; }
  int output_dim() const { return layers.empty() ? 0 : layers.back().out; }
  // The largest width among inputs and outputs, which sizes scratch buffers.
  int max_width() const;
};

// Returns the layer with FP8 weights: the FP32 layer quantized (bias kept).
MlpLayer QuantizeLayer(const MlpLayer& f32_layer, Fp8Format format, ScaleGranularity granularity);
// Returns the layer's weights as FP32 [out, in] (dequantized when FP8).
std::vector<float> DequantizedWeights(const MlpLayer& layer);

}  // namespace fp8serve
