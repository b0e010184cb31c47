// fp8serve: the server. Parses flags, opens the model repository, and serves
// inference.GRPCInferenceService and grpc.health.v1.Health until SIGINT or SIGTERM.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <csignal>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "server/grpc/inference_service.h"
#include "server/repository/model_repository.h"
#include "spdlog/spdlog.h"
#include "tools/cli/cli.h"

ABSL_FLAG(std::string, grpc_address, "0.0.0.0:8001", "Address the gRPC service listens on (host:port; port 0 picks one).");
ABSL_FLAG(std::vector<std::string>, model_repository, {"models"},
          "Model repository folder(s): Triton-shaped <model>/config.pbtxt and <model>/<version>/model.safetensors. "
          "Repeat the flag or separate with commas for several.");
ABSL_FLAG(std::string, model_control_mode, "none",
          "none: load every model at start; explicit: load only --load-model, then what RepositoryModelLoad/Unload "
          "ask; poll: load every model and rescan every --repository-poll-secs.");
ABSL_FLAG(std::vector<std::string>, load_model, {}, "With --model-control-mode=explicit: models to load at start (* = all).");
ABSL_FLAG(int, repository_poll_secs, 15, "Rescan interval of --model-control-mode=poll, in seconds.");
ABSL_FLAG(std::string, backend, "auto", "Execution backend: auto (CUDA when a GPU is usable, else CPU), cpu, noop, cuda.");
ABSL_FLAG(int, max_message_size, INT32_MAX,
          "Largest gRPC message accepted or sent, in bytes (Triton's default: 2 GiB - 1). Larger requests get "
          "RESOURCE_EXHAUSTED from gRPC.");
ABSL_FLAG(std::string, port_file, "", "If set, write the bound gRPC port to this file once serving (for scripts and tests).");
ABSL_FLAG(std::string, log_level, "info", "Log level: trace, debug, info, warn, error, off.");
ABSL_FLAG(int, exit_timeout_secs, 30,
          "On SIGTERM/SIGINT: how long to wait for accepted requests to be answered before exiting anyway.");

namespace fp8serve {
namespace {

absl::Notification g_stop;
void OnSignal(int) {
  if (!g_stop.HasBeenNotified()) g_stop.Notify();
}

// absl flags keep only the last occurrence of a flag; --model-repository and --load-model are
// documented as repeatable, so gather every occurrence into one comma-separated value first.
std::vector<char*> MergeRepeatedFlags(int argc, char** argv, std::vector<std::string>& storage) {
  const std::vector<std::string> repeatable = {"model_repository", "model-repository", "load_model", "load-model"};
  std::vector<std::string> merged[2];
  std::vector<std::string> rest;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    bool taken = false;
    for (size_t k = 0; k < repeatable.size() && i > 0; ++k) {
      const std::string flag = "--" + repeatable[k];
      if (a == flag && i + 1 < argc) {
        merged[k / 2].push_back(argv[++i]);
        taken = true;
      } else if (a.rfind(flag + "=", 0) == 0) {
        merged[k / 2].push_back(a.substr(flag.size() + 1));
        taken = true;
      }
      if (taken) break;
    }
    if (!taken) rest.push_back(a);
  }
  if (!merged[0].empty()) rest.push_back("--model_repository=" + absl::StrJoin(merged[0], ","));
  if (!merged[1].empty()) rest.push_back("--load_model=" + absl::StrJoin(merged[1], ","));
  storage = std::move(rest);
  std::vector<char*> out;
  for (std::string& s : storage) out.push_back(s.data());
  return out;
}

int Run() {
  const spdlog::level::level_enum level = spdlog::level::from_str(absl::GetFlag(FLAGS_log_level));
  if (level == spdlog::level::off && absl::GetFlag(FLAGS_log_level) != "off") {
    std::fprintf(stderr, "fp8serve: unknown --log-level '%s'\n", absl::GetFlag(FLAGS_log_level).c_str());
    return 2;
  }
  spdlog::set_level(level);
  absl::StatusOr<ModelControlMode> mode = ParseModelControlMode(absl::GetFlag(FLAGS_model_control_mode));
  absl::StatusOr<BackendKind> backend = ParseBackendKind(absl::GetFlag(FLAGS_backend));
  for (const absl::Status& st : {mode.status(), backend.status()}) {
    if (!st.ok()) {
      std::fprintf(stderr, "fp8serve: %s\n", std::string(st.message()).c_str());
      return 2;
    }
  }
  if (*backend == BackendKind::kAuto) {
    std::string why;
    *backend = ResolveAutoBackend(&why);
    spdlog::info("backend auto -> {}: {}", BackendKindName(*backend), why);
  } else {
    spdlog::info("backend {}", BackendKindName(*backend));
  }

  ModelRepository::Options ro;
  ro.roots = absl::GetFlag(FLAGS_model_repository);
  ro.mode = *mode;
  ro.startup_models = absl::GetFlag(FLAGS_load_model);
  ro.backend = *backend;
  absl::StatusOr<std::unique_ptr<ModelRepository>> repo = ModelRepository::Create(ro);
  if (!repo.ok()) {
    std::fprintf(stderr, "fp8serve: %s\n", std::string(repo.status().message()).c_str());
    return 1;
  }

  InferenceService service(repo->get(), InferenceService::Options{"fp8serve", "0.1.0"});
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_grpc_address), grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_message_size));
  builder.SetMaxSendMessageSize(absl::GetFlag(FLAGS_max_message_size));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "fp8serve: cannot listen on %s\n", absl::GetFlag(FLAGS_grpc_address).c_str());
    return 1;
  }
  server->GetHealthCheckService()->SetServingStatus(true);
  if (const std::string pf = absl::GetFlag(FLAGS_port_file); !pf.empty()) {
    if (std::FILE* f = std::fopen(pf.c_str(), "w")) {
      std::fprintf(f, "%d\n", port);
      std::fclose(f);
    }
  }
  std::vector<std::string> ready;
  for (const auto& e : (*repo)->Index(true)) ready.push_back(e.name + ":" + e.version);
  spdlog::info("fp8serve listening on port {} (gRPC), serving [{}]", port, absl::StrJoin(ready, ", "));

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  if (*mode == ModelControlMode::kPoll) {
    const absl::Duration every = absl::Seconds(std::max(1, absl::GetFlag(FLAGS_repository_poll_secs)));
    while (!g_stop.WaitForNotificationWithTimeout(every)) (*repo)->Poll();
  } else {
    g_stop.WaitForNotification();
  }
  // Graceful shutdown: not ready and NOT_SERVING first, new requests refused with UNAVAILABLE, then
  // gRPC waits for every accepted call (queued ones included) to be answered, up to the timeout.
  const int timeout = std::max(0, absl::GetFlag(FLAGS_exit_timeout_secs));
  spdlog::info("shutting down: answering accepted requests (up to {} s)", timeout);
  service.StartShutdown();
  server->GetHealthCheckService()->SetServingStatus(false);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(timeout));
  repo->reset();
  spdlog::info("stopped");
  return 0;
}

}  // namespace
}  // namespace fp8serve

int main(int argc, char** argv) {
  std::vector<std::string> storage;
  std::vector<char*> args = fp8serve::MergeRepeatedFlags(argc, argv, storage);
  fp8serve::ParseCommandLineWithUsage(
      "Serves FP8-quantized MLPs over the KServe v2 / Triton gRPC protocol.\n\n"
      "  fp8serve [--model-repository models] [--grpc-address 0.0.0.0:8001] [--backend auto|cpu|noop]\n\n"
      "Works with tritonclient, perf_analyzer and KServe unchanged. Health: grpc.health.v1.Health.",
      static_cast<int>(args.size()), args.data());
  return fp8serve::Run();
}
