// The CPU reference forward: the numeric contract, written out step by step. It is the oracle
// every other forward (the fast CPU path, every CUDA kernel) is checked against, so it favours
// clarity and a fixed order of operations over speed.
//
// For an FP8 layer with input x [M, K] and weights W [N, K]:
//   1. x is quantized to E4M3 per row and 128-column group: s_x[m, g] = amax / 448, q_x = E4M3(x / s_x).
//   2. For each K-group g, the products q_x * q_w are summed in FP32 (k ascending); the partial sum is
//      promoted by acc += (s_x[m, g] * s_w(n, g)) * partial, where s_w is the weight's scale for
//      row n and K-group g (per-tensor, per-channel or the 128x128 block holding it).
//   3. y = acc + bias, in FP32; hidden layers then apply the activation: ReLU is v < 0 ? 0 : v, so a
//      NaN stays NaN and the output says what the math says.
// The next layer quantizes y again. An FP32 layer is a plain FP32 dot product plus bias.
#pragma once

#include "kernels/mlp_weights.h"

namespace fp8serve {

// One layer: x [rows, layer.in] -> y [rows, layer.out]. `activation` is applied when given.
void ReferenceLayer(const MlpLayer& layer, const float* x, int rows, const Activation* activation, float* y);

// The whole MLP: x [rows, input_dim] -> y [rows, output_dim] logits.
void ReferenceForward(const MlpWeights& mlp, const float* x, int rows, float* y);

}  // namespace fp8serve
