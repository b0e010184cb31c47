// Checks a ModelInferRequest against the model it names, before anything is queued. Every fault
// gets INVALID_ARGUMENT and a message that says what is wrong and what was expected; a request
// that passes can be batched with others without disturbing them.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpc_service.pb.h"
#include "model_config.pb.h"
#include "server/execution/infer_task.h"

namespace fp8serve {

struct ValidatedRequest {
  int rows = 0;
  InputType input_type = InputType::kFp32;
  const void* input = nullptr;  // points into the request message
  int priority = 0;             // 0: the model's default level
  absl::Duration timeout = absl::InfiniteDuration();
};

// The model_version field: "" means the latest ready version (0 here); otherwise a positive integer.
absl::StatusOr<int64_t> ParseModelVersion(const std::string& version);

// `config` is the served model's configuration (one input, one output, see model_config.h).
absl::StatusOr<ValidatedRequest> ValidateInferRequest(const inference::ModelInferRequest& request,
                                                      const inference::ModelConfig& config);

// Datatype names of the protocol ("FP32", "FP16", "BF16", ...).
const char* ProtocolDataType(inference::DataType t);

}  // namespace fp8serve
