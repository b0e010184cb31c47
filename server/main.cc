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
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/grpc/inference_service.h"
#include "server/metrics/metrics.h"
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
ABSL_FLAG(int, cpu_blas_threads, 1,
          "Threads OpenBLAS may use inside one CPU forward. The server parallelizes across batches "
          "(instance_group count) and gRPC threads; more BLAS threads pay off only for large batches on many cores.");
ABSL_FLAG(std::string, backend, "auto",
          "Execution backend: auto (CUDA when a GPU is usable, else CPU; a model the GPU cannot serve, such as one "
          "with unquantized layers, then serves on the CPU), cpu, noop (answers zeros without computing: the ceiling "
          "that gRPC and batching set), cuda (every model on the GPU, or it fails to load).");
ABSL_FLAG(int, cuda_streams_per_instance, 2,
          "CUDA backend: streams per model instance, each with its own pinned staging and device buffers. Two let "
          "one batch's copies and kernels overlap the gathering and launch of the next; batches in flight per model "
          "are at most instances x streams.");
ABSL_FLAG(bool, cuda_graphs, true,
          "CUDA backend: capture each model's forward at load as CUDA graphs (one per power-of-two batch size) and "
          "replay them; false launches the kernels directly every time.");
ABSL_FLAG(int, max_message_size, INT32_MAX,
          "Largest gRPC message accepted or sent, in bytes (Triton's default: 2 GiB - 1). Larger requests get "
          "RESOURCE_EXHAUSTED from gRPC.");
ABSL_FLAG(std::string, port_file, "", "If set, write the bound gRPC port to this file once serving (for scripts and tests).");
ABSL_FLAG(std::string, log_level, "info", "Log level: trace, debug, info, warn, error, off.");
ABSL_FLAG(int, exit_timeout_secs, 30,
          "On SIGTERM/SIGINT: how long to wait for accepted requests to be answered before exiting anyway.");
ABSL_FLAG(bool, allow_metrics, true, "Serve Prometheus metrics at http://<--metrics-address>/metrics.");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:8002",
          "Address of the Prometheus /metrics endpoint (host:port; port 0 picks one; empty turns metrics off). If "
          "the default address cannot be bound the server serves without metrics and says so; an address given "
          "on the command line that cannot be bound is fatal.");
ABSL_FLAG(std::string, metrics_port_file, "",
          "If set, write the bound metrics port to this file before the gRPC port file is written (not written "
          "when metrics are off).");

namespace fp8serve {
namespace {

absl::Notification g_stop;
void OnSignal(int) {
  if (!g_stop.HasBeenNotified()) g_stop.Notify();
}

#ifndef FP8SERVE_VERSION
#define FP8SERVE_VERSION "0.0.0"
#endif
#ifndef FP8SERVE_CUDA_VERSION
#define FP8SERVE_CUDA_VERSION "none"
#endif

// Whether the command line names --metrics-address itself (in any spelling absl accepts).
bool MetricsAddressGiven(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") break;
    for (const char* f : {"--metrics-address", "--metrics_address", "-metrics-address", "-metrics_address"}) {
      if (a == f || a.rfind(std::string(f) + "=", 0) == 0) return true;
    }
  }
  return false;
}

bool WritePortFile(const std::string& path, int port) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return false;
  std::fprintf(f, "%d\n", port);
  return std::fclose(f) == 0;
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

int Run(bool metrics_address_given) {
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
  if (absl::GetFlag(FLAGS_cuda_streams_per_instance) < 1) {
    std::fprintf(stderr, "fp8serve: --cuda-streams-per-instance must be at least 1\n");
    return 2;
  }
  // Models resolve kAuto themselves (one the GPU cannot serve falls back to the CPU), so the
  // repository gets kAuto; this is what it resolves to for the others.
  BackendKind resolved = *backend;
  if (*backend == BackendKind::kAuto) {
    std::string why;
    resolved = ResolveAutoBackend(&why);
    spdlog::info("backend auto -> {}: {}", BackendKindName(resolved), why);
  } else {
    spdlog::info("backend {}", BackendKindName(*backend));
  }
  if (resolved == BackendKind::kCuda) {
    spdlog::info("CUDA: {} stream(s) per instance, CUDA graphs {}", absl::GetFlag(FLAGS_cuda_streams_per_instance),
                 absl::GetFlag(FLAGS_cuda_graphs) ? "on" : "off");
  }
  SetCpuBlasThreads(absl::GetFlag(FLAGS_cpu_blas_threads));

  // Metrics first, so that models show up as they load, and a bad --metrics-address fails fast.
  ServerMetrics::Options mo;
  mo.version = FP8SERVE_VERSION;
  mo.backend = BackendKindName(resolved);
  mo.cuda = FP8SERVE_CUDA_VERSION;
  const std::string metrics_address = absl::GetFlag(FLAGS_metrics_address);
  const bool metrics_on = absl::GetFlag(FLAGS_allow_metrics) && !metrics_address.empty();
  if (!metrics_on) mo.nvml_library.clear();  // nobody will read the GPU gauges
  ServerMetrics metrics(mo);                 // counts even when not served: it costs next to nothing
  std::unique_ptr<MetricsEndpoint> metrics_endpoint;
  if (!metrics_on) {
    spdlog::info("metrics disabled ({})", metrics_address.empty() ? "--metrics-address is empty" : "--allow-metrics=false");
  } else {
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> ep = MetricsEndpoint::Start(metrics_address, metrics);
    if (ep.ok()) {
      metrics_endpoint = *std::move(ep);
      spdlog::info("metrics on http://{}/metrics (port {})", metrics_address, metrics_endpoint->port());
      if (const std::string pf = absl::GetFlag(FLAGS_metrics_port_file); !pf.empty() && !WritePortFile(pf, metrics_endpoint->port())) {
        std::fprintf(stderr, "fp8serve: cannot write --metrics-port-file %s\n", pf.c_str());
        return 1;
      }
    } else if (metrics_address_given) {
      std::fprintf(stderr, "fp8serve: %s\n", std::string(ep.status().message()).c_str());
      return 1;
    } else {
      spdlog::error("{}: serving WITHOUT metrics. Pass --metrics-address to pick another address (failing to bind it "
                    "is then fatal) or --allow-metrics=false.",
                    std::string(ep.status().message()));
    }
  }

  ModelRepository::Options ro;
  ro.roots = absl::GetFlag(FLAGS_model_repository);
  ro.mode = *mode;
  ro.startup_models = absl::GetFlag(FLAGS_load_model);
  ro.backend = *backend;
  ro.cuda_streams_per_instance = absl::GetFlag(FLAGS_cuda_streams_per_instance);
  ro.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  ro.metrics = &metrics;
  absl::StatusOr<std::unique_ptr<ModelRepository>> repo = ModelRepository::Create(ro);
  if (!repo.ok()) {
    std::fprintf(stderr, "fp8serve: %s\n", std::string(repo.status().message()).c_str());
    return 1;
  }

  InferenceService service(repo->get(), InferenceService::Options{"fp8serve", FP8SERVE_VERSION, &metrics});
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
  if (const std::string pf = absl::GetFlag(FLAGS_port_file); !pf.empty()) WritePortFile(pf, port);
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
  metrics_endpoint.reset();
  spdlog::info("stopped");
  return 0;
}

}  // namespace
}  // namespace fp8serve

int main(int argc, char** argv) {
  // NOTES: Debian's abseil is built with mutex deadlock detection on, and gRPC's own locks pay for
  // its bookkeeping on every acquisition (seen in perf profiles of the client). Lock-order bugs are
  // for the tests to find, not the serving path.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  std::vector<std::string> storage;
  std::vector<char*> args = fp8serve::MergeRepeatedFlags(argc, argv, storage);
  fp8serve::ParseCommandLineWithUsage(
      "Serves FP8-quantized MLPs over the KServe v2 / Triton gRPC protocol.\n\n"
      "  fp8serve [--model-repository models] [--grpc-address 0.0.0.0:8001] [--backend auto|cpu|noop|cuda]\n"
      "           [--metrics-address 0.0.0.0:8002]\n\n"
      "Works with tritonclient, perf_analyzer and KServe unchanged. Health: grpc.health.v1.Health.\n"
      "Prometheus metrics: GET http://<--metrics-address>/metrics.",
      static_cast<int>(args.size()), args.data());
  return fp8serve::Run(fp8serve::MetricsAddressGiven(argc, argv));
}
