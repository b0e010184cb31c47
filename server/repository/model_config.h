// Triton-style model configuration (config.pbtxt, ModelConfig text format) for fp8serve models:
// parsing, checking it against the model's weights, and turning it into a ServableModel's options.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/mlp_weights.h"
#include "model_config.pb.h"
#include "server/execution/servable_model.h"

namespace fp8serve {

inline constexpr char kPlatform[] = "fp8_mlp";

// Reads DIR/config.pbtxt. A missing name is filled with the folder's name; a different one is an
// error (as in Triton). Errors name the file, and for syntax errors the line and column.
absl::StatusOr<inference::ModelConfig> ReadModelConfig(const std::string& model_dir);

// Checks the config on its own: platform, one FP32 input and one FP32 output with a single
// dimension each, batching settings in range.
absl::Status ValidateModelConfig(const inference::ModelConfig& config, const std::string& path);

// Checks the config against the weights it is to serve: input and output widths, and when the
// config states them, parameters "num_layers" and "weight_format" (e4m3 | e5m2 | mixed).
absl::Status CheckConfigMatchesWeights(const inference::ModelConfig& config, const MlpWeights& weights,
                                       const std::string& config_path, const std::string& weights_path);

// Picks the versions to serve from those present on disk, by the config's version_policy
// (latest { num_versions } by default, all, or specific { versions }).
std::vector<int64_t> SelectVersions(const inference::ModelConfig& config, std::vector<int64_t> available);

// The ServableModel options a config asks for (dynamic_batching, instance_group, queue policy). The
// server-wide execution settings (CUDA streams and graphs) are left at their defaults.
ServableModel::Options ServableOptionsFromConfig(const inference::ModelConfig& config, int64_t version,
                                                 BackendKind backend);

// The request timeout the config's default queue policy sets (absl::InfiniteDuration() if none).
absl::Duration DefaultRequestTimeout(const inference::ModelConfig& config);

}  // namespace fp8serve
