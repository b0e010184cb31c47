// The fp8serve MLP model format on top of safetensors (see README "Model format"):
//   layers.{i}.weight        [out, in]  F8_E4M3 | F8_E5M2 (quantized) or F32 | BF16 | F16
//   layers.{i}.weight_scale  F32, [] per-tensor | [out] per-channel | [ceil(out/128), ceil(in/128)] block;
//                            required for FP8 weights, forbidden for float ones
//   layers.{i}.bias          [out] F32 | BF16 | F16, optional
//   __metadata__             {"format": "fp8serve.mlp.v1", "activation": "relu" | "identity", ...}
// Loading validates the whole file and returns errors that name the file, the tensor and the fault:
// missing or extra layers and tensors, shapes that do not chain, scale shapes that match no
// granularity, and NaN/inf or non-positive scales.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/mlp_weights.h"

namespace fp8serve {

inline constexpr char kMlpFormatV1[] = "fp8serve.mlp.v1";

struct MlpModel {
  MlpWeights weights;
  std::map<std::string, std::string> metadata;
};

absl::StatusOr<MlpModel> LoadMlpModel(const std::string& path);

// Writes weights in the format above. `metadata` is merged over {"format", "activation"}.
absl::Status SaveMlpModel(const std::string& path, const MlpWeights& weights,
                          const std::map<std::string, std::string>& metadata = {});

// Reads an unquantized checkpoint for the quantizer: float weights named either in our format
// (layers.{i}.weight / bias) or as a PyTorch nn.Sequential state dict ({j}.weight / {j}.bias,
// optionally under a common prefix such as "net.", where j skips the activation modules). Layers
// come back in index order as FP32. `__metadata__` is optional here; activation defaults to ReLU.
absl::StatusOr<MlpModel> LoadFloatCheckpoint(const std::string& path);

}  // namespace fp8serve
