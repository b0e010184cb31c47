// The CPU forward used for serving: OpenBLAS SGEMM on weights dequantized once at construction.
//
// Before each FP8 layer the activations are quantized and dequantized in place (1x128 groups,
// exactly as in the contract), so the SGEMM multiplies the same values the reference multiplies;
// only the FP32 rounding of the scale products and the summation order differ. With
// emulate_activation_quant = false it is a plain FP32 forward of the dequantized model: the
// baseline the benchmark compares against.
#pragma once

#include <vector>

#include "kernels/mlp_weights.h"

namespace fp8serve {

class FastMlp {
 public:
  struct Options {
    // Emulate the 1x128 E4M3 activation quantization before FP8 layers (the served numerics).
    bool emulate_activation_quant = true;
  };

  FastMlp(const MlpWeights& mlp, Options options);
  explicit FastMlp(const MlpWeights& mlp) : FastMlp(mlp, Options{}) {}

  // Caller-owned scratch so that Forward is reentrant: concurrent calls each bring their own.
  struct Scratch {
    std::vector<float> a, b;
  };

  // x [rows, input_dim] -> y [rows, output_dim]. x is not modified.
  void Forward(const float* x, int rows, float* y, Scratch& scratch) const;
  void Forward(const float* x, int rows, float* y) const {
    Scratch s;
    Forward(x, rows, y, s);
  }

  int input_dim() const { return layers_.empty() ? 0 : layers_.front().in; }
  int output_dim() const { return layers_.empty() ? 0 : layers_.back().out; }

 private:
  struct Layer {
    int in = 0, out = 0;
    bool quantize_input = false;
    std::vector<float> w;     // [out, in], dequantized
    std::vector<float> bias;  // [out], zeros when the model has none
  };
  std::vector<Layer> layers_;
  Activation activation_;
};

}  // namespace fp8serve
