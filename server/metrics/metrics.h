// Prometheus metrics for the server: per model version request counters, latency histograms,
// queue and batch gauges, model readiness, build info, and (where NVML is found) GPU gauges.
// It knows nothing of gRPC: the service, the repository and the executor call it.
//
// NAMES (a dashboard, a Prometheus console and a Kubernetes HPA are written against them; do not
// rename): see README "Metrics".
//   fp8serve_requests_total{model,version,outcome}       counter
//   fp8serve_inferences_total{model,version}             counter, rows inferred
//   fp8serve_executions_total{model,version}             counter, batches executed
//   fp8serve_request_duration_seconds{model,version}     histogram, successful requests
//   fp8serve_queue_duration_seconds{model,version}       histogram, successful requests
//   fp8serve_compute_{input,infer,output}_duration_seconds{model,version}
//                                                        histograms, successful requests
//   fp8serve_batch_size_rows{model,version}              histogram, one observation per batch
//   fp8serve_pending_requests{model,version}             gauge, requests queued
//   fp8serve_inflight_batches{model,version}             gauge, batches computing
//   fp8serve_model_ready{model,version}                  gauge 1/0
//   fp8serve_model_instances{model,version}              gauge
//   fp8serve_build_info{version,backend,cuda}            gauge = 1
//   fp8serve_gpu_utilization_ratio{gpu,uuid}, fp8serve_gpu_memory_used_bytes{gpu,uuid},
//   fp8serve_gpu_memory_total_bytes{gpu,uuid}            gauges, sampled from NVML on scrape
//
// COST ON THE REQUEST PATH
//  A model version's series are created once, when the version loads (ForModel), and the request
//  path only touches them through a ModelMetrics handle: atomic adds for counters and gauges, and a
//  short per-histogram mutex for observations. No registry or family lock is taken per request,
//  except for requests no model version can be named for (RecordUnresolved: errors only).
//
// LIFETIME OF SERIES
//  A version's series live as long as some ModelMetrics handle for that (model, version) does:
//  the ServableModel holds one, and in-flight requests hold the ServableModel. When the last one
//  goes (the version was unloaded or replaced by other versions, and drained) its series are
//  removed from the output. A version reloaded in place (same number) shares the handle, so its
//  counters keep counting. fp8serve_model_ready and fp8serve_model_instances are set by the
//  repository (SetModelStates) and follow what serves at once.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Collectable;
class Registry;
}  // namespace prometheus

namespace fp8serve {

// The `outcome` label of fp8serve_requests_total.
enum class RequestOutcome {
  kSuccess,      // answered with a result
  kInvalid,      // INVALID_ARGUMENT: the request does not fit the model (validation or batcher)
  kQueueFull,    // UNAVAILABLE: the model's queue is at max_queue_size
  kTimeout,      // DEADLINE_EXCEEDED: the request's timeout passed (queued, or before it was queued)
  kCancelled,    // CANCELLED: the client went away before its request was computed
  kUnavailable,  // UNAVAILABLE: the server is shutting down or the version is being unloaded
  kBackend,      // the backend failed to compute the batch
  kNotFound,     // NOT_FOUND: no such model or version (only with version="")
};
inline constexpr int kNumRequestOutcomes = 8;
const char* RequestOutcomeName(RequestOutcome o);  // "success", "invalid", "queue_full", ...

// Bucket bounds: latencies from 10 us to 5 s (1-2.5-5 steps), and batch sizes 1, 2, 4, ..., 4096.
const std::vector<double>& LatencyBucketsSeconds();
const std::vector<double>& BatchSizeBuckets();

// The series of one (model, version). Thread-safe; cheap enough for every request.
class ModelMetrics {
 public:
  ModelMetrics(const ModelMetrics&) = delete;
  ModelMetrics& operator=(const ModelMetrics&) = delete;

  // One request answered, by outcome (kNotFound is not counted against a version).
  void CountRequest(RequestOutcome outcome);
  // One request answered with a result: counts it (outcome="success") and observes its phases, in
  // seconds: receipt to response, queued, and its batch's compute input / infer and its own output.
  void RecordSuccess(double request_s, double queue_s, double compute_input_s, double compute_infer_s,
                     double compute_output_s);
  // A batch of `rows` rows was computed.
  void RecordExecution(int rows);
  // Queue depth (requests) and batches computing; +n / -n as they enter and leave.
  void AddPending(int delta);
  void AddInflight(int delta);

  const std::string& model() const { return model_; }
  const std::string& version() const { return version_; }

 private:
  friend class ServerMetrics;
  ModelMetrics(std::string model, std::string version) : model_(std::move(model)), version_(std::move(version)) {}

  const std::string model_, version_;
  std::array<prometheus::Counter*, kNumRequestOutcomes> requests_{};  // kNotFound stays null
  prometheus::Counter* inferences_ = nullptr;
  prometheus::Counter* executions_ = nullptr;
  prometheus::Histogram* request_duration_ = nullptr;
  prometheus::Histogram* queue_duration_ = nullptr;
  prometheus::Histogram* compute_input_ = nullptr;
  prometheus::Histogram* compute_infer_ = nullptr;
  prometheus::Histogram* compute_output_ = nullptr;
  prometheus::Histogram* batch_size_ = nullptr;
  prometheus::Gauge* pending_ = nullptr;
  prometheus::Gauge* inflight_ = nullptr;
};

class ServerMetrics {
 public:
  struct Options {
    // fp8serve_build_info labels.
    std::string version;
    std::string backend;
    std::string cuda = "none";
    // GPU gauges from NVML, loaded with dlopen at run time. Empty = no GPU metrics. When the
    // library or a GPU is missing there are no GPU metrics and one log line says why.
    std::string nvml_library = "libnvidia-ml.so.1";
    // Requests for unknown models: distinct names kept as their own `model` label value; the rest
    // are counted as model="_other".
    size_t max_unresolved_names = 32;
  };
  explicit ServerMetrics(Options options);
  ~ServerMetrics();
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // The handle for (model, version): created with its series on first use, shared while held.
  std::shared_ptr<ModelMetrics> ForModel(const std::string& model, int64_t version);

  // A request that no model version answered (unknown model or version, a malformed version
  // string, refused while shutting down before lookup): counted with version="". `model` is the
  // name the client sent; names not serving and beyond the first max_unresolved_names distinct
  // ones (or longer than 128 bytes, or not UTF-8) count as "_other", so clients cannot grow the
  // label set without bound.
  void RecordUnresolved(const std::string& model, RequestOutcome outcome);

  // The repository's view, replacing the previous one: every ready version (ready 1, instances),
  // and every known model without a ready version (version "", ready 0: failed to load, or
  // unloaded). Series for (model, version) pairs not listed are removed.
  struct ModelState {
    std::string model;
    std::string version;  // "" for a model with no ready version
    bool ready = false;
    int instances = 0;  // ready versions only
  };
  void SetModelStates(const std::vector<ModelState>& states);

  // Whether NVML was found with at least one GPU, and why not.
  bool gpu_metrics() const;
  const std::string& gpu_status() const;

  // What a scrape returns: the registry and the GPU collector (if any).
  std::vector<std::weak_ptr<prometheus::Collectable>> Collectables() const;
  // The text exposition format of everything above, as /metrics serves it.
  std::string SerializeText() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// An HTTP endpoint serving GET /metrics (Prometheus' text format; 404 elsewhere). `address` is
// host:port ("0.0.0.0:8002", "127.0.0.1:0", "[::]:8002", "localhost:9000"; port 0 picks a free
// one). Scrapes are collected and answered on the endpoint's own threads. Not prometheus-cpp's
// Exposer: in this process its civetweb threads crash on any request but GET /metrics (see
// metrics_endpoint.cc).
class MetricsEndpoint {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(const std::string& address, const ServerMetrics& metrics);
  ~MetricsEndpoint();
  int port() const { return port_; }
  // Serves one more collectable at /metrics (tests use it to stand for a slow collector).
  void AddCollectable(const std::weak_ptr<prometheus::Collectable>& collectable);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace fp8serve
