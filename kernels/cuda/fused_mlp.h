// Host API of the fused MLP kernel (device code in fused_mlp.cuh): the whole forward of a small
// FP8 MLP in one launch. FP32 rows go in, FP32 logits come out; in between, every layer's 1x128
// activation quantization, GEMM with per-group promotion, scale, bias, ReLU and requantization run
// with the activations kept in shared memory. For models like the bundled 784-256-10 at serving
// batch sizes, where a per-layer chain is dominated by launches and quantization passes.
//
// Weights use gemm_config.h's padded device layout (the same buffers the GEMM chain reads).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/cuda/gemm_config.h"

namespace fp8serve::cuda {

inline constexpr int kFusedMaxLayers = 4;
inline constexpr int kFusedMaxWidth = 1024;  // padded in/out width of every layer, at most

struct FusedMlpLayer {
  int n = 0;      // logical output width
  int k = 0;      // logical input width
  int n_pad = 0;  // multiple of 128
  int k_pad = 0;  // multiple of 128
  const uint8_t* w = nullptr;         // [n_pad, k_pad]
  Fp8Format w_format = Fp8Format::kE4M3;
  const float* b_scales = nullptr;    // [n_pad/128, k_pad/128]
  const float* col_scales = nullptr;  // [n_pad] or nullptr
  const float* bias = nullptr;        // [n_pad] or nullptr
};

struct FusedMlpArgs {
  int m = 0;                   // rows
  const float* x = nullptr;    // [m, layers[0].k] FP32
  FusedMlpLayer layers[kFusedMaxLayers];
  int num_layers = 0;
  bool relu = true;            // hidden layers' activation (ReLU or identity); the last has none
  float* y = nullptr;          // [m, layers[num_layers-1].n] FP32 logits
  // CTAs that share one row block as a thread-block cluster (compute capability 9.0 only): 0 lets
  // the launcher choose (1 off Hopper); 1, 2, 4 or 8 forces that size (tests). Any size gives the
  // same logits up to FP32 summation order across K groups, and the same bits on every run.
  int cluster_size = 0;
};

// Whether the fused kernel takes this model on this device; when not, `why` says which limit (too
// many layers, a layer too wide, shared memory, compute capability).
bool FusedMlpSupported(const FusedMlpArgs& args, const DeviceTraits& device, std::string* why);

// Launches the fused forward on `stream` (asynchronous; capturable into a CUDA graph).
// INVALID_ARGUMENT when FusedMlpSupported says no or the arguments are inconsistent.
absl::Status LaunchFusedMlp(const FusedMlpArgs& args, const DeviceTraits& device, cudaStream_t stream);

}  // namespace fp8serve::cuda
