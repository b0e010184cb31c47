// What fp8serve-client's subcommands share: the connection flags, the client they build, the model
// they resolve, per-subcommand help, and one-line errors.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/inference_client.h"
#include "model_config.pb.h"

namespace fp8serve::client::cli {

// Exit codes: 0 success, 1 a failure at run time (server error, unreachable, NOT_SERVING),
// 2 bad usage (flags, files).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

struct Command {
  const char* name;
  const char* summary;                               // one line, for `fp8serve-client help`
  const char* usage;                                 // synopsis and description
  std::vector<const char*> flags;                    // the flags it takes, in help order (absl names)
  int (*run)(const std::vector<std::string>& args);  // args: positional arguments after the command
};
const std::vector<Command>& Commands();
const Command* FindCommand(const std::string& name);

// The subcommands (infer_command.cc, bench_command.cc, ops_commands.cc).
int RunInfer(const std::vector<std::string>& args);
int RunBench(const std::vector<std::string>& args);
int RunHealth(const std::vector<std::string>& args);
int RunMetadata(const std::vector<std::string>& args);
int RunConfig(const std::vector<std::string>& args);

// `fp8serve-client help` and `fp8serve-client CMD --help`.
std::string GeneralHelp();
std::string CommandHelp(const Command& c);

// The client for --url, --timeout-ms and the TLS flags; `own_connection` for load generation.
absl::StatusOr<std::unique_ptr<InferenceClient>> MakeClient(bool own_connection = false);
// MakeClient, then connect within --connect-timeout-ms.
absl::StatusOr<std::unique_ptr<InferenceClient>> ConnectClient();

// What a subcommand needs to know about the model it talks to.
struct ModelInfo {
  std::string name, version;
  std::string input_name, input_datatype, output_name;
  std::vector<int64_t> input_shape;  // as the metadata says, -1 for the batch dimension
  int64_t width = 0;                 // values per row (the input shape without its batch dimension)
  int max_batch_size = 0;            // 0: the model does not batch
};
// --model, or the only ready model when --model is empty.
absl::StatusOr<ModelInfo> ResolveModel(InferenceClient& client);

// --batch for this subcommand (`fallback` when the flag is 0), checked against the model.
absl::StatusOr<int> RowsPerRequest(const ModelInfo& model, int fallback);

// Prints "fp8serve-client CMD: <CODE>: <message>" on one line to stderr; returns `exit_code`.
int Fail(const std::string& command, const absl::Status& st, int exit_code = kExitFailure);
// The same for a usage error: "fp8serve-client CMD: <message>", kExitUsage.
int UsageError(const std::string& command, const std::string& message);

}  // namespace fp8serve::client::cli
