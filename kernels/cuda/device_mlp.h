// An FP8 MLP resident on one GPU, and its forward: what the CUDA execution backend runs.
//
// Upload() copies every layer's codes and scales once, in gemm_config.h's padded device layout
// (K and N padded to 128 with zeros; per-tensor and block scales as [n/128, k/128], per-channel
// scales as column scales). Forward() is asynchronous on the caller's stream and launches either
//  - the fused kernel (fused_mlp.h), when the model fits it: one launch for the whole forward, or
//  - the chain: the 1x128 quantizer on the FP32 input, then one GEMM per layer whose epilogue
//    requantizes for the next layer, the last writing FP32 logits.
// Nothing in Forward() allocates or synchronizes, so it can be captured into a CUDA graph.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/fused_mlp.h"
#include "kernels/cuda/gemm_config.h"
#include "kernels/mlp_weights.h"

namespace fp8serve::cuda {

enum class ForwardPath : uint8_t { kAuto, kFused, kChain };
const char* ForwardPathName(ForwardPath p);

// Device buffers one in-flight forward needs, for up to max_rows rows. One per stream slot.
class DeviceWorkspace {
 public:
  ~DeviceWorkspace();
  DeviceWorkspace(const DeviceWorkspace&) = delete;
  DeviceWorkspace& operator=(const DeviceWorkspace&) = delete;
  int max_rows() const { return max_rows_; }
  size_t bytes() const { return bytes_; }

 private:
  friend class DeviceMlp;
  DeviceWorkspace() = default;
  int device_ = 0;
  int max_rows_ = 0;
  size_t bytes_ = 0;
  uint8_t* act_[2] = {nullptr, nullptr};  // ping-pong E4M3 activations [max_rows, max_k_pad]
  float* act_scales_[2] = {nullptr, nullptr};
  void* gemm_workspace_ = nullptr;        // split-K partials and counters, zeroed at allocation
  size_t gemm_workspace_bytes_ = 0;
};

// NOTES: measured on an H200 for the bundled 784-256-10 model (fp8_gemm_bench, graph replays):
// fused 23.9 us against the chain's 25.7 at 1024 rows, but 160 us against 70 at 16384, where each
// of the fused kernel's CTAs walks every weight chunk while the chain's GEMMs spread the layers
// over all SMs.
inline constexpr int kFusedAutoMaxRows = 2048;

struct DeviceMlpOptions {
  // The layout the GEMM chain reads the weights in (gemm_config.h). kTiled128 needs a Hopper GPU
  // (the sm90 kernel is the only one that reads it) and keeps a row-major copy too when the fused
  // kernel takes the model (it reads row-major). Row-major until the benchmark shows the tiled
  // streaming layout ahead (fp8_gemm_bench's +tiledB variants).
  WeightLayout chain_weights = WeightLayout::kRowMajor;
};

class DeviceMlp {
 public:
  // Uploads `weights` to `device`. FAILED_PRECONDITION when a layer is not FP8 (the CUDA path
  // serves FP8 layers only; such a model serves on the CPU backend) or tiled weights are asked of
  // a GPU that is not Hopper, RESOURCE_EXHAUSTED when the GPU runs out of memory (nothing stays
  // allocated), the CUDA error otherwise.
  static absl::StatusOr<std::unique_ptr<DeviceMlp>> Upload(const MlpWeights& weights, int device,
                                                           const DeviceMlpOptions& options = {});
  ~DeviceMlp();
  DeviceMlp(const DeviceMlp&) = delete;
  DeviceMlp& operator=(const DeviceMlp&) = delete;

  int device() const { return device_; }
  int input_dim() const { return input_dim_; }
  int output_dim() const { return output_dim_; }
  size_t weight_bytes() const { return weight_bytes_; }  // every device copy of the weights and scales
  WeightLayout chain_weights() const { return chain_weights_; }
  const DeviceTraits& traits() const { return traits_; }
  // What kAuto picks for this model at small batches (kFused when the fused kernel takes it).
  ForwardPath auto_path() const { return auto_path_; }
  // What kAuto picks for a forward of `rows` rows: the fused kernel up to kFusedAutoMaxRows (when it
  // takes the model), the GEMM chain above, where the chain's wide GEMMs win.
  ForwardPath AutoPath(int rows) const { return rows <= kFusedAutoMaxRows ? auto_path_ : ForwardPath::kChain; }
  // Why the fused kernel does not take this model (empty when it does).
  const std::string& fused_unsupported_reason() const { return fused_why_; }

  // Device buffers for one forward of up to `max_rows` rows on this model's device.
  // RESOURCE_EXHAUSTED when out of memory.
  absl::StatusOr<std::unique_ptr<DeviceWorkspace>> AllocateWorkspace(int max_rows) const;

  // x [rows, input_dim] FP32 (device) -> y [rows, output_dim] FP32 (device), asynchronously on
  // `stream`, which must belong to this model's device. 1 <= rows <= ws.max_rows().
  absl::Status Forward(const float* x, int rows, float* y, DeviceWorkspace& ws, cudaStream_t stream,
                       ForwardPath path = ForwardPath::kAuto) const;

  // The fused kernel's arguments for this model (what Forward's fused path launches), for
  // benchmarks and tests that launch it with other settings (e.g. a forced cluster size).
  FusedMlpArgs FusedArgs(const float* x, int rows, float* y) const;

 private:
  struct Layer {
    int n = 0, k = 0, n_pad = 0, k_pad = 0;
    Fp8Format format = Fp8Format::kE4M3;
    uint8_t* w = nullptr;         // [n_pad, k_pad] row-major (nullptr when only w_tiled is kept)
    uint8_t* w_tiled = nullptr;   // the same in kTiled128, or nullptr
    float* b_scales = nullptr;    // [n_pad/128, k_pad/128]
    float* col_scales = nullptr;  // [n_pad] (per-channel) or nullptr
    float* bias = nullptr;        // [n_pad] or nullptr
  };
  DeviceMlp() = default;
  absl::Status ForwardChain(const float* x, int rows, float* y, DeviceWorkspace& ws, cudaStream_t stream) const;
  // FusedArgs for FusedMlpSupported at upload (see there)
  FusedMlpArgs FusedProbe() const;
  // The GEMM the chain runs for layer i at `rows` rows: padded shape, weight layout and output (FP32
  // logits for the last layer, E4M3 for the others). The forward launches it and the workspace is
  // sized for it, so both ask the heuristic the same question.
  GemmShape ChainShape(size_t i, int rows) const;

  int device_ = 0;
  DeviceTraits traits_;
  bool relu_ = true;
  int input_dim_ = 0, output_dim_ = 0, max_k_pad_ = 0;
  size_t weight_bytes_ = 0;
  std::vector<Layer> layers_;
  std::vector<void*> allocations_;  // every cudaMalloc of this model, freed by the destructor
  ForwardPath auto_path_ = ForwardPath::kChain;
  WeightLayout chain_weights_ = WeightLayout::kRowMajor;
  std::string fused_why_;
};

}  // namespace fp8serve::cuda
