#include "server/metrics/metrics.h"

#include <map>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/metrics/gpu_metrics.h"
#include "spdlog/spdlog.h"

namespace fp8serve {

const char* RequestOutcomeName(RequestOutcome o) {
  switch (o) {
    case RequestOutcome::kSuccess: return "success";
    case RequestOutcome::kInvalid: return "invalid";
    case RequestOutcome::kQueueFull: return "queue_full";
    case RequestOutcome::kTimeout: return "timeout";
    case RequestOutcome::kCancelled: return "cancelled";
    case RequestOutcome::kUnavailable: return "unavailable";
    case RequestOutcome::kBackend: return "backend";
    case RequestOutcome::kNotFound: return "not_found";
  }
  return "?";
}

const std::vector<double>& LatencyBucketsSeconds() {
  static const std::vector<double> b = {10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3,
                                        10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0,  2.5,    5.0};
  return b;
}

const std::vector<double>& BatchSizeBuckets() {
  static const std::vector<double> b = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
  return b;
}

// ---- ModelMetrics -------------------------------------------------------------------------------

void ModelMetrics::CountRequest(RequestOutcome outcome) {
  if (prometheus::Counter* c = requests_[static_cast<int>(outcome)]) c->Increment();
}

void ModelMetrics::RecordSuccess(double request_s, double queue_s, double compute_input_s, double compute_infer_s,
                                 double compute_output_s) {
  requests_[static_cast<int>(RequestOutcome::kSuccess)]->Increment();
  request_duration_->Observe(request_s);
  queue_duration_->Observe(queue_s);
  compute_input_->Observe(compute_input_s);
  compute_infer_->Observe(compute_infer_s);
  compute_output_->Observe(compute_output_s);
}

void ModelMetrics::RecordExecution(int rows) {
  executions_->Increment();
  inferences_->Increment(static_cast<double>(rows));
  batch_size_->Observe(static_cast<double>(rows));
}

void ModelMetrics::AddPending(int delta) { pending_->Increment(static_cast<double>(delta)); }
void ModelMetrics::AddInflight(int delta) { inflight_->Increment(static_cast<double>(delta)); }

// ---- ServerMetrics ------------------------------------------------------------------------------

namespace {

// A label value a client chose: kept only if short and valid UTF-8 (Prometheus rejects a scrape
// with invalid UTF-8 in a label value).
bool AcceptableClientLabel(const std::string& s) {
  if (s.size() > 128) return false;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size() || (n == 2 && c < 0xC2)) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

}  // namespace

struct ServerMetrics::Impl {
  explicit Impl(const Options& o)
      : options(o),
        registry(std::make_shared<prometheus::Registry>()),
        requests(prometheus::BuildCounter()
                     .Name("fp8serve_requests_total")
                     .Help("Inference requests answered, by outcome: success, invalid, queue_full, timeout, cancelled, "
                           "unavailable, backend; not_found (with version=\"\") for unknown models or versions")
                     .Register(*registry)),
        inferences(prometheus::BuildCounter()
                       .Name("fp8serve_inferences_total")
                       .Help("Rows inferred (a request of N rows counts N), in successfully executed batches")
                       .Register(*registry)),
        executions(prometheus::BuildCounter()
                       .Name("fp8serve_executions_total")
                       .Help("Batches executed successfully by the backend")
                       .Register(*registry)),
        request_duration(Hist("fp8serve_request_duration_seconds",
                              "Successful requests: time from receipt to response, in seconds")),
        queue_duration(Hist("fp8serve_queue_duration_seconds",
                            "Successful requests: time queued in the dynamic batcher, in seconds")),
        compute_input(Hist("fp8serve_compute_input_duration_seconds",
                           "Successful requests: their batch's input gathering (to FP32 rows), in seconds")),
        compute_infer(Hist("fp8serve_compute_infer_duration_seconds",
                           "Successful requests: their batch's forward pass on the backend, in seconds")),
        compute_output(Hist("fp8serve_compute_output_duration_seconds",
                            "Successful requests: copying their rows into the response, in seconds")),
        batch_size(prometheus::BuildHistogram()
                       .Name("fp8serve_batch_size_rows")
                       .Help("Rows per executed batch")
                       .Register(*registry)),
        pending(prometheus::BuildGauge()
                    .Name("fp8serve_pending_requests")
                    .Help("Requests waiting in the model's queue")
                    .Register(*registry)),
        inflight(prometheus::BuildGauge()
                     .Name("fp8serve_inflight_batches")
                     .Help("Batches being computed now (at most the instance count)")
                     .Register(*registry)),
        ready(prometheus::BuildGauge()
                  .Name("fp8serve_model_ready")
                  .Help("1 for a version that serves; 0 with version=\"\" for a model that failed to load or was "
                        "unloaded")
                  .Register(*registry)),
        instances(prometheus::BuildGauge()
                      .Name("fp8serve_model_instances")
                      .Help("Execution instances (concurrent batches) of a ready version")
                      .Register(*registry)),
        build_info(prometheus::BuildGauge()
                       .Name("fp8serve_build_info")
                       .Help("Always 1; labels: server version, execution backend, CUDA toolkit of the build "
                             "(none without CUDA)")
                       .Register(*registry)) {
    build_info.Add({{"version", o.version}, {"backend", o.backend}, {"cuda", o.cuda.empty() ? "none" : o.cuda}})
        .Set(1);
    if (o.nvml_library.empty()) {
      gpu_status = "GPU metrics off";
    } else {
      gpu = NvmlCollector::Open(o.nvml_library, &gpu_status);
    }
  }

  prometheus::Family<prometheus::Histogram>& Hist(const char* name, const char* help) {
    return prometheus::BuildHistogram().Name(name).Help(help).Register(*registry);
  }

  // Called by the last handle of (model, version) going away.
  void Release(const std::pair<std::string, std::string>& key) {
    absl::MutexLock lock(&mu);
    auto it = handles.find(key);
    if (it == handles.end() || --it->second.refs > 0) return;
    ModelMetrics& m = *it->second.metrics;
    for (prometheus::Counter* c : m.requests_) {
      if (c != nullptr) requests.Remove(c);
    }
    inferences.Remove(m.inferences_);
    executions.Remove(m.executions_);
    request_duration.Remove(m.request_duration_);
    queue_duration.Remove(m.queue_duration_);
    compute_input.Remove(m.compute_input_);
    compute_infer.Remove(m.compute_infer_);
    compute_output.Remove(m.compute_output_);
    batch_size.Remove(m.batch_size_);
    pending.Remove(m.pending_);
    inflight.Remove(m.inflight_);
    handles.erase(it);
  }

  const Options options;
  std::shared_ptr<prometheus::Registry> registry;
  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<prometheus::Counter>& inferences;
  prometheus::Family<prometheus::Counter>& executions;
  prometheus::Family<prometheus::Histogram>& request_duration;
  prometheus::Family<prometheus::Histogram>& queue_duration;
  prometheus::Family<prometheus::Histogram>& compute_input;
  prometheus::Family<prometheus::Histogram>& compute_infer;
  prometheus::Family<prometheus::Histogram>& compute_output;
  prometheus::Family<prometheus::Histogram>& batch_size;
  prometheus::Family<prometheus::Gauge>& pending;
  prometheus::Family<prometheus::Gauge>& inflight;
  prometheus::Family<prometheus::Gauge>& ready;
  prometheus::Family<prometheus::Gauge>& instances;
  prometheus::Family<prometheus::Gauge>& build_info;
  std::shared_ptr<NvmlCollector> gpu;
  std::string gpu_status;

  absl::Mutex mu;
  struct Handle {
    std::unique_ptr<ModelMetrics> metrics;
    int refs = 0;
  };
  std::map<std::pair<std::string, std::string>, Handle> handles ABSL_GUARDED_BY(mu);
  // fp8serve_model_ready / _instances series now shown, by (model, version).
  std::map<std::pair<std::string, std::string>, std::pair<prometheus::Gauge*, prometheus::Gauge*>> states
      ABSL_GUARDED_BY(mu);
  std::set<std::string> serving_names ABSL_GUARDED_BY(mu);  // models in the last SetModelStates
  std::set<std::string> unresolved_names ABSL_GUARDED_BY(mu);
  std::map<std::pair<std::string, RequestOutcome>, prometheus::Counter*> unresolved ABSL_GUARDED_BY(mu);
};

ServerMetrics::ServerMetrics(Options options) : impl_(std::make_shared<Impl>(options)) {
  if (impl_->gpu != nullptr) {
    spdlog::info("metrics: GPU gauges from {}", impl_->gpu_status);
  } else if (!options.nvml_library.empty()) {
    spdlog::info("metrics: no GPU metrics ({})", impl_->gpu_status);
  }
}

ServerMetrics::~ServerMetrics() = default;

bool ServerMetrics::gpu_metrics() const { return impl_->gpu != nullptr; }
const std::string& ServerMetrics::gpu_status() const { return impl_->gpu_status; }

std::shared_ptr<ModelMetrics> ServerMetrics::ForModel(const std::string& model, int64_t version) {
  Impl& s = *impl_;
  const std::pair<std::string, std::string> key{model, std::to_string(version)};
  absl::MutexLock lock(&s.mu);
  Impl::Handle& h = s.handles[key];
  if (h.metrics == nullptr) {
    h.metrics.reset(new ModelMetrics(key.first, key.second));
    ModelMetrics& m = *h.metrics;
    const prometheus::Labels labels{{"model", key.first}, {"version", key.second}};
    for (int o = 0; o < kNumRequestOutcomes; ++o) {
      if (static_cast<RequestOutcome>(o) == RequestOutcome::kNotFound) continue;
      prometheus::Labels l = labels;
      l["outcome"] = RequestOutcomeName(static_cast<RequestOutcome>(o));
      m.requests_[o] = &s.requests.Add(l);
    }
    m.inferences_ = &s.inferences.Add(labels);
    m.executions_ = &s.executions.Add(labels);
    m.request_duration_ = &s.request_duration.Add(labels, LatencyBucketsSeconds());
    m.queue_duration_ = &s.queue_duration.Add(labels, LatencyBucketsSeconds());
    m.compute_input_ = &s.compute_input.Add(labels, LatencyBucketsSeconds());
    m.compute_infer_ = &s.compute_infer.Add(labels, LatencyBucketsSeconds());
    m.compute_output_ = &s.compute_output.Add(labels, LatencyBucketsSeconds());
    m.batch_size_ = &s.batch_size.Add(labels, BatchSizeBuckets());
    m.pending_ = &s.pending.Add(labels);
    m.inflight_ = &s.inflight.Add(labels);
  }
  ++h.refs;
  return std::shared_ptr<ModelMetrics>(h.metrics.get(), [impl = impl_, key](ModelMetrics*) { impl->Release(key); });
}

void ServerMetrics::RecordUnresolved(const std::string& model, RequestOutcome outcome) {
  Impl& s = *impl_;
  absl::MutexLock lock(&s.mu);
  std::string name = model;
  if (s.serving_names.count(model) == 0 && s.unresolved_names.count(model) == 0) {
    if (s.unresolved_names.size() < s.options.max_unresolved_names && AcceptableClientLabel(model)) {
      s.unresolved_names.insert(model);
    } else {
      name = "_other";
    }
  }
  prometheus::Counter*& c = s.unresolved[{name, outcome}];
  if (c == nullptr) c = &s.requests.Add({{"model", name}, {"version", ""}, {"outcome", RequestOutcomeName(outcome)}});
  c->Increment();
}

void ServerMetrics::SetModelStates(const std::vector<ModelState>& states) {
  Impl& s = *impl_;
  absl::MutexLock lock(&s.mu);
  std::map<std::pair<std::string, std::string>, const ModelState*> want;
  s.serving_names.clear();
  for (const ModelState& st : states) {
    want[{st.model, st.version}] = &st;
    s.serving_names.insert(st.model);
  }
  for (auto it = s.states.begin(); it != s.states.end();) {
    if (want.count(it->first) == 0) {
      s.ready.Remove(it->second.first);
      if (it->second.second != nullptr) s.instances.Remove(it->second.second);
      it = s.states.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [key, st] : want) {
    auto& [ready, instances] = s.states[key];
    const prometheus::Labels labels{{"model", key.first}, {"version", key.second}};
    if (ready == nullptr) ready = &s.ready.Add(labels);
    ready->Set(st->ready ? 1 : 0);
    if (st->ready) {
      if (instances == nullptr) instances = &s.instances.Add(labels);
      instances->Set(st->instances);
    } else if (instances != nullptr) {
      s.instances.Remove(instances);
      instances = nullptr;
    }
  }
}

std::vector<std::weak_ptr<prometheus::Collectable>> ServerMetrics::Collectables() const {
  std::vector<std::weak_ptr<prometheus::Collectable>> out = {impl_->registry};
  if (impl_->gpu != nullptr) out.push_back(impl_->gpu);
  return out;
}

std::string ServerMetrics::SerializeText() const {
  std::vector<prometheus::MetricFamily> families;
  for (const auto& w : Collectables()) {
    if (auto c = w.lock()) {
      std::vector<prometheus::MetricFamily> f = c->Collect();
      families.insert(families.end(), std::make_move_iterator(f.begin()), std::make_move_iterator(f.end()));
    }
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace fp8serve
