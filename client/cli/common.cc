#include "client/cli/common.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "client/cli/flags.h"

namespace fp8serve::client::cli {

namespace {

const std::vector<const char*> kConnectionFlags = {"url",
                                                   "timeout_ms",
                                                   "connect_timeout_ms",
                                                   "tls",
                                                   "tls_root_certs",
                                                   "tls_client_cert",
                                                   "tls_client_key",
                                                   "tls_target_name"};

std::vector<const char*> With(std::vector<const char*> own) {
  own.insert(own.end(), kConnectionFlags.begin(), kConnectionFlags.end());
  return own;
}

// Word-wraps `text` to `width` columns, every line indented by `indent`.
std::string Wrap(const std::string& text, size_t indent, size_t width = 100) {
  std::string out, line;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line.empty() && indent + line.size() + 1 + word.size() > width) {
      absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
      line.clear();
    }
    absl::StrAppend(&line, line.empty() ? "" : " ", std::string(word));
  }
  if (!line.empty()) absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
  return out;
}

}  // namespace

const std::vector<Command>& Commands() {
  static const std::vector<Command> commands = {
      {"infer", "classify rows from a .npy, IDX or CSV file; accuracy and confusion matrix with --labels",
       "fp8serve-client infer [-u HOST:PORT] [-m MODEL] --input FILE [--labels FILE] [--batch N] [-k 3]\n\n"
       "Sends the rows of FILE (also accepted as the first argument) to the model, --batch rows per request,\n"
       "and prints each row's top-k classes with softmax scores. With --labels it prints the accuracy and a\n"
       "confusion matrix. Example (Fashion-MNIST test set):\n\n"
       "  fp8serve-client infer --input /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \\\n"
       "      --labels /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz --class-names fashion",
       With({"input", "labels", "model", "model_version", "batch", "limit", "top_k", "class_names", "show", "wire",
             "scale"}),
       RunInfer},
      {"bench", "load test: closed-loop concurrency and open-loop Poisson rate sweeps",
       "fp8serve-client bench [-u HOST:PORT] [-m MODEL] [--concurrency 1,8,64,512 | --rate 1000,5000]\n"
       "                      [--mode sync|async|stream] [--batch N] [--duration-secs 5 | --requests N]\n"
       "                      [--json F] [--csv F] [--plot F.svg]\n\n"
       "Holds each load level for a step (after a warm-up) and reports throughput, latency percentiles,\n"
       "errors by gRPC code, and the server's own queue and compute time per request (ModelStatistics,\n"
       "change over the step). Requests carry random rows in [0, 1) unless --input gives rows.",
       With({"model", "model_version", "concurrency", "rate", "mode", "batch", "threads", "warmup_secs",
             "duration_secs", "requests", "max_in_flight", "input", "wire", "scale", "seed", "json", "csv", "plot",
             "progress"}),
       RunBench},
      {"health", "grpc.health.v1 Check: exit 0 when SERVING (Docker HEALTHCHECK, Kubernetes exec probe)",
       "fp8serve-client health [-u HOST:PORT] [--service NAME]\n\n"
       "Prints one line and exits 0 when the server's grpc.health.v1.Health/Check says SERVING, 1 otherwise\n"
       "(NOT_SERVING, unreachable, or no answer within --timeout-ms).",
       With({"service"}), RunHealth},
      {"metadata", "server metadata, the model repository, and model inputs/outputs",
       "fp8serve-client metadata [-u HOST:PORT] [-m MODEL] [--format text|json]\n\n"
       "Prints the server's name, version and extensions, every model in the repository with its state,\n"
       "and the inputs and outputs of --model (of every ready model without it).",
       With({"model", "model_version", "format"}), RunMetadata},
      {"config", "a model's configuration (config.pbtxt as the server holds it)",
       "fp8serve-client config [-u HOST:PORT] [-m MODEL] [--format text|json]\n\n"
       "Prints the model's configuration in protobuf text format (like config.pbtxt) or JSON.",
       With({"model", "model_version", "format"}), RunConfig},
  };
  return commands;
}

const Command* FindCommand(const std::string& name) {
  for (const Command& c : Commands()) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

std::string GeneralHelp() {
  std::string out =
      "fp8serve-client: a client for fp8serve (and any KServe v2 / Triton gRPC server).\n\n"
      "Usage: fp8serve-client COMMAND [flags]\n\nCommands:\n";
  for (const Command& c : Commands()) absl::StrAppend(&out, absl::StrFormat("  %-9s %s\n", c.name, c.summary));
  absl::StrAppend(&out,
                  "  help      this text; `fp8serve-client help COMMAND` (or COMMAND --help) for a command's flags\n\n"
                  "Flags are spelled --flag-name or --flag_name, with a value as --flag=V or --flag V.\n"
                  "Exit status: 0 success, 1 failure (server error, unreachable, not serving), 2 bad usage.\n");
  return out;
}

std::string CommandHelp(const Command& c) {
  static const std::map<std::string, std::string> kShort = {{"url", "u"},   {"model", "m"},       {"input", "i"},
                                                            {"batch", "b"}, {"concurrency", "c"}, {"top_k", "k"}};
  std::string out = absl::StrCat("Usage: ", c.usage, "\n\nFlags:\n");
  const auto all = absl::GetAllFlags();
  for (const char* name : c.flags) {
    auto it = all.find(name);
    if (it == all.end()) continue;
    const absl::CommandLineFlag& f = *it->second;
    std::string spelled = absl::StrCat("--", absl::StrReplaceAll(name, {{"_", "-"}}));
    if (auto s = kShort.find(name); s != kShort.end()) spelled = absl::StrCat("-", s->second, ", ", spelled);
    const std::string def = f.DefaultValue();
    absl::StrAppend(&out, "  ", spelled, def.empty() ? "" : absl::StrCat("  (default: ", def, ")"), "\n",
                    Wrap(f.Help(), 8));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<InferenceClient>> MakeClient(bool own_connection) {
  ClientOptions o;
  o.url = absl::GetFlag(FLAGS_url);
  if (absl::GetFlag(FLAGS_timeout_ms) <= 0) return absl::InvalidArgumentError("--timeout-ms must be positive");
  o.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  o.own_connection = own_connection;
  o.tls.root_certs_file = absl::GetFlag(FLAGS_tls_root_certs);
  o.tls.client_cert_file = absl::GetFlag(FLAGS_tls_client_cert);
  o.tls.client_key_file = absl::GetFlag(FLAGS_tls_client_key);
  o.tls.target_name_override = absl::GetFlag(FLAGS_tls_target_name);
  o.tls.enabled = absl::GetFlag(FLAGS_tls) || !o.tls.root_certs_file.empty() || !o.tls.client_cert_file.empty() ||
                  !o.tls.client_key_file.empty();
  return InferenceClient::Create(std::move(o));
}

absl::StatusOr<std::unique_ptr<InferenceClient>> ConnectClient() {
  absl::StatusOr<std::unique_ptr<InferenceClient>> c = MakeClient();
  if (!c.ok()) return c.status();
  if (absl::GetFlag(FLAGS_connect_timeout_ms) <= 0)
    return absl::InvalidArgumentError("--connect-timeout-ms must be positive");
  absl::Status st = (*c)->WaitForConnected(absl::Milliseconds(absl::GetFlag(FLAGS_connect_timeout_ms)));
  if (!st.ok()) return st;
  return c;
}

absl::StatusOr<ModelInfo> ResolveModel(InferenceClient& client) {
  ModelInfo m;
  m.name = absl::GetFlag(FLAGS_model);
  m.version = absl::GetFlag(FLAGS_model_version);
  if (m.name.empty()) {
    absl::StatusOr<inference::RepositoryIndexResponse> index = client.RepositoryIndex(/*ready_only=*/true);
    if (!index.ok()) return index.status();
    std::set<std::string> names;
    for (const auto& e : index->models()) {
      if (e.state().empty() || e.state() == "READY") names.insert(e.name());
    }
    if (names.empty()) return absl::FailedPreconditionError("the server has no ready model");
    if (names.size() > 1) {
      return absl::InvalidArgumentError(absl::StrCat("the server has ", names.size(), " models (",
                                                     absl::StrJoin(names, ", "), "): choose one with --model"));
    }
    m.name = *names.begin();
  }
  absl::StatusOr<inference::ModelMetadataResponse> md = client.ModelMetadata(m.name, m.version);
  if (!md.ok()) return md.status();
  if (md->inputs_size() != 1 || md->outputs_size() < 1) {
    return absl::FailedPreconditionError(absl::StrCat("model ", m.name, " has ", md->inputs_size(), " inputs and ",
                                                      md->outputs_size(), " outputs; fp8serve-client needs 1 input"));
  }
  absl::StatusOr<inference::ModelConfig> config = client.ModelConfig(m.name, m.version);
  if (!config.ok()) return config.status();
  m.max_batch_size = config->max_batch_size();
  m.input_name = md->inputs(0).name();
  m.input_datatype = md->inputs(0).datatype();
  m.output_name = md->outputs(0).name();
  m.input_shape.assign(md->inputs(0).shape().begin(), md->inputs(0).shape().end());
  m.width = 1;
  for (size_t i = m.max_batch_size > 0 ? 1 : 0; i < m.input_shape.size(); ++i) {
    if (m.input_shape[i] <= 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("model ", m.name, "'s input '", m.input_name,
                       "' has a variable dimension; fp8serve-client needs fixed rows"));
    }
    m.width *= m.input_shape[i];
  }
  return m;
}

absl::StatusOr<int> RowsPerRequest(const ModelInfo& model, int fallback) {
  const int flag = absl::GetFlag(FLAGS_batch);
  if (flag < 0) return absl::InvalidArgumentError("--batch must be positive");
  if (model.max_batch_size <= 0) {
    if (flag > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("model ", model.name, " does not batch (max_batch_size 0): --batch ", flag, " must be 1"));
    }
    return 1;
  }
  if (flag > model.max_batch_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("--batch ", flag, " exceeds model ", model.name, "'s max_batch_size ", model.max_batch_size));
  }
  return flag > 0 ? flag : std::min(fallback, model.max_batch_size);
}

int Fail(const std::string& command, const absl::Status& st, int exit_code) {
  // One line, whatever the server said.
  const std::string msg = absl::StrReplaceAll(st.message(), {{"\n", " "}, {"\r", " "}});
  std::fprintf(stderr, "fp8serve-client %s: %s: %s\n", command.c_str(), StatusCodeName(st.code()).c_str(), msg.c_str());
  return exit_code;
}

int UsageError(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "fp8serve-client %s: %s\n", command.c_str(), message.c_str());
  return kExitUsage;
}

}  // namespace fp8serve::client::cli
