#include "kernels/cpu/mlp_fast.h"

#include <cblas.h>

#include <algorithm>

namespace fp8serve {

FastMlp::FastMlp(const MlpWeights& mlp, Options options) : activation_(mlp.activation) {
  layers_.reserve(mlp.layers.size());
  for (const MlpLayer& l : mlp.layers) {
    Layer f;
    f.in = l.in;
    f.out = l.out;
    f.quantize_input = l.quantized && options.emulate_activation_quant;
    f.w = DequantizedWeights(l);
    f.bias = l.bias.empty() ? std::vector<float>(l.out, 0.0f) : l.bias;
    layers_.push_back(std::move(f));
  }
}

void FastMlp::Forward(const float* x, int rows, float* y, Scratch& scratch) const {
  if (rows <= 0 || layers_.empty()) return;
  const float* in = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    const bool last = i + 1 == layers_.size();
    if (l.quantize_input) {
      // Quantize-dequantize into scratch (in place when the input already is scratch): the
      // caller's x stays untouched, and no separate copy pass is made.
      if (in != scratch.a.data()) {
        scratch.a.resize(static_cast<size_t>(rows) * l.in);
        QuantDequantActivations(in, rows, l.in, scratch.a.data());
        in = scratch.a.data();
      } else {
        QuantDequantActivations(scratch.a.data(), rows, l.in);
      }
    }
    float* out;
    if (last) {
      out = y;
    } else {
      scratch.b.resize(static_cast<size_t>(rows) * l.out);
      out = scratch.b.data();
    }
    // out = bias (broadcast), then out += in * W^T. One row is a matrix-vector product: GEMV skips
    // the packing and threading GEMM sets up, which dominates at this size.
    for (int m = 0; m < rows; ++m) std::copy(l.bias.begin(), l.bias.end(), out + static_cast<size_t>(m) * l.out);
    if (rows == 1) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, l.out, l.in, 1.0f, l.w.data(), l.in, in, 1, 1.0f, out, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, l.out, l.in, 1.0f, in, l.in, l.w.data(), l.in, 1.0f,
                  out, l.out);
    }
    if (!last && activation_ == Activation::kRelu) {
      const size_t n = static_cast<size_t>(rows) * l.out;
      for (size_t j = 0; j < n; ++j) out[j] = out[j] < 0.0f ? 0.0f : out[j];
    }
    if (!last) {
      std::swap(scratch.a, scratch.b);
      in = scratch.a.data();
    }
  }
}

}  // namespace fp8serve
