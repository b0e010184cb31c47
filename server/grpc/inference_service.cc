#include "server/grpc/inference_service.h"

#include <chrono>
#include <deque>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/grpc/request_validation.h"
#include "server/repository/model_config.h"

namespace fp8serve {

namespace {

uint64_t NanosSince(absl::Time t) { return static_cast<uint64_t>(absl::ToInt64Nanoseconds(absl::Now() - t)); }

absl::Time DeadlineOf(const grpc::CallbackServerContext* ctx) {
  const auto d = ctx->deadline();
  if (d >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) return absl::InfiniteFuture();
  return absl::FromChrono(d);
}

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const absl::Status& st) {
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(ToGrpcStatus(st));
  return r;
}

void SetDuration(inference::StatisticDuration* d, const DurationStat& s) {
  d->set_count(s.count);
  d->set_ns(s.ns);
}

void FillStatistics(ServableModel& m, inference::ModelStatistics* out) {
  const ModelStatsSnapshot s = m.stats().Snapshot();
  out->set_name(m.name());
  out->set_version(std::to_string(m.version()));
  out->set_last_inference(s.last_inference_ms);
  out->set_inference_count(s.inference_count);
  out->set_execution_count(s.execution_count);
  inference::InferStatistics* is = out->mutable_inference_stats();
  SetDuration(is->mutable_success(), s.success);
  SetDuration(is->mutable_fail(), s.fail);
  SetDuration(is->mutable_queue(), s.queue);
  SetDuration(is->mutable_compute_input(), s.compute_input);
  SetDuration(is->mutable_compute_infer(), s.compute_infer);
  SetDuration(is->mutable_compute_output(), s.compute_output);
  for (const auto& [rows, b] : s.by_batch_size) {
    inference::InferBatchStatistics* bs = out->add_batch_stats();
    bs->set_batch_size(static_cast<uint64_t>(rows));
    bs->mutable_compute_input()->set_count(b.count);
    bs->mutable_compute_input()->set_ns(b.compute_input_ns);
    bs->mutable_compute_infer()->set_count(b.count);
    bs->mutable_compute_infer()->set_ns(b.compute_infer_ns);
    bs->mutable_compute_output()->set_count(b.count);
    bs->mutable_compute_output()->set_ns(b.compute_output_ns);
  }
}

double SecondsFromNanos(uint64_t ns) { return static_cast<double>(ns) * 1e-9; }

// fp8serve_requests_total's outcome for a request refused or failed with `st`. `from_schedule`:
// the batcher refused it, where UNAVAILABLE means its queue is full.
RequestOutcome OutcomeOf(const absl::Status& st, bool from_schedule) {
  switch (st.code()) {
    case absl::StatusCode::kOk: return RequestOutcome::kSuccess;
    case absl::StatusCode::kInvalidArgument: return RequestOutcome::kInvalid;
    case absl::StatusCode::kDeadlineExceeded: return RequestOutcome::kTimeout;
    case absl::StatusCode::kCancelled: return RequestOutcome::kCancelled;
    case absl::StatusCode::kNotFound: return RequestOutcome::kNotFound;
    case absl::StatusCode::kUnavailable:
      return from_schedule ? RequestOutcome::kQueueFull : RequestOutcome::kUnavailable;
    case absl::StatusCode::kAborted: return RequestOutcome::kUnavailable;  // version retired while queuing
    default: return from_schedule ? RequestOutcome::kInvalid : RequestOutcome::kBackend;
  }
}

// One call's state, shared by the attempt that queues it and the task that completes it.
struct InferCall {
  const inference::ModelInferRequest* req;
  inference::ModelInferResponse* resp;
  absl::Time start;
  InferenceService::InferDone done;
};

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

InferenceService::InferenceService(ModelRepository* repository, Options options)
    : repository_(repository), options_(std::move(options)) {}

void InferenceService::SubmitInfer(const inference::ModelInferRequest* req, inference::ModelInferResponse* resp,
                                   absl::Time deadline, grpc::CallbackServerContext* ctx, InferDone done) {
  auto call = std::make_shared<InferCall>(InferCall{req, resp, absl::Now(), std::move(done)});
  // Every answer is counted before it is sent, as the statistics are: a client that scrapes right
  // after its response finds it counted.
  ServerMetrics* const metrics = options_.metrics;
  auto unresolved = [&](const absl::Status& st) {
    if (metrics != nullptr) metrics->RecordUnresolved(req->model_name(), OutcomeOf(st, false));
    call->done(st, resp);
  };
  if (shutting_down_.load()) return unresolved(absl::UnavailableError("the server is shutting down"));
  absl::StatusOr<int64_t> version = ParseModelVersion(req->model_version());
  if (!version.ok()) return unresolved(version.status());

  // Two attempts: a version that is being replaced refuses with ABORTED, and its successor is
  // already in the repository, so looking up again serves the request instead of failing it.
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<ModelRepository::Served> served = repository_->Get(req->model_name(), *version);
    if (!served.ok()) return unresolved(served.status());
    std::shared_ptr<ServableModel> model = served->model;
    std::shared_ptr<const inference::ModelConfig> config = served->config;
    ModelMetrics* const mm = model->metrics();

    absl::StatusOr<ValidatedRequest> v = ValidateInferRequest(*req, *config);
    if (!v.ok()) {
      model->stats().RecordFailure(NanosSince(call->start));
      if (mm != nullptr) mm->CountRequest(OutcomeOf(v.status(), false));
      return call->done(v.status(), resp);
    }
    const absl::Duration timeout = v->timeout != absl::InfiniteDuration() ? v->timeout : DefaultRequestTimeout(*config);
    const absl::Time task_deadline = std::min(deadline, call->start + timeout);

    auto task = std::make_unique<InferTask>(
        v->rows, v->priority, task_deadline, v->input, v->input_type,
        [call, model, config](const InferResult& r) {
          ModelMetrics* const mm = model->metrics();
          if (!r.status.ok()) {
            model->stats().RecordFailure(NanosSince(call->start));
            if (mm != nullptr) mm->CountRequest(OutcomeOf(r.status, false));
            return call->done(r.status, call->resp);
          }
          const absl::Time output_start = absl::Now();
          inference::ModelInferResponse* out = call->resp;
          out->set_model_name(config->name());
          out->set_model_version(std::to_string(model->version()));
          out->set_id(call->req->id());
          auto* t = out->add_outputs();
          t->set_name(config->output(0).name());
          t->set_datatype("FP32");
          if (config->max_batch_size() > 0) t->add_shape(r.rows);
          t->add_shape(r.cols);
          out->add_raw_output_contents()->assign(reinterpret_cast<const char*>(r.output),
                                                 sizeof(float) * static_cast<size_t>(r.rows) * r.cols);
          const uint64_t total_ns = NanosSince(call->start), output_ns = NanosSince(output_start);
          model->stats().RecordSuccess(total_ns, r.queue_ns, r.compute_input_ns, r.compute_infer_ns, output_ns);
          if (mm != nullptr) {
            mm->RecordSuccess(SecondsFromNanos(total_ns), SecondsFromNanos(r.queue_ns),
                              SecondsFromNanos(r.compute_input_ns), SecondsFromNanos(r.compute_infer_ns),
                              SecondsFromNanos(output_ns));
          }
          call->done(absl::OkStatus(), out);
        });
    if (ctx != nullptr) task->set_cancelled_check([ctx] { return ctx->IsCancelled(); });
    const absl::Status st = model->Schedule(task);
    if (st.ok()) return;
    // Refused: the task was not run and its callback never will be; `call` is still ours.
    if (absl::IsAborted(st) && attempt == 0) continue;
    model->stats().RecordFailure(NanosSince(call->start));
    if (mm != nullptr) mm->CountRequest(OutcomeOf(st, /*from_schedule=*/true));
    return call->done(absl::IsAborted(st) ? absl::UnavailableError(st.message()) : st, resp);
  }
}

grpc::ServerUnaryReactor* InferenceService::ModelInfer(grpc::CallbackServerContext* ctx,
                                                       const inference::ModelInferRequest* req,
                                                       inference::ModelInferResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  SubmitInfer(req, resp, DeadlineOf(ctx), ctx,
              [reactor](absl::Status st, inference::ModelInferResponse*) { reactor->Finish(ToGrpcStatus(st)); });
  return reactor;
}

namespace {

// Bidirectional streaming: each request read is submitted at once; responses are written in the
// order they complete (each carries its request's id), one write in flight at a time as gRPC
// requires, except that a request to a model with dynamic_batching { preserve_ordering: true }
// is answered only after every request read before it. An error answers that one request with
// error_message and leaves the stream open.
class StreamInferReactor final
    : public grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse> {
 public:
  StreamInferReactor(InferenceService* service, grpc::CallbackServerContext* ctx)
      : service_(service), ctx_(ctx), deadline_(DeadlineOf(ctx)) {
    next_ = std::make_unique<inference::ModelInferRequest>();
    StartRead(next_.get());
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      absl::MutexLock lock(&mu_);
      reads_done_ = true;
      MaybeFinishLocked();
      return;
    }
    std::shared_ptr<inference::ModelInferRequest> req(std::move(next_));
    next_ = std::make_unique<inference::ModelInferRequest>();
    const bool ordered = PreserveOrdering(*req);
    uint64_t seq;
    {
      absl::MutexLock lock(&mu_);
      ++in_flight_;
      seq = next_seq_++;
    }
    auto resp = std::make_shared<inference::ModelStreamInferResponse>();
    service_->SubmitInfer(req.get(), resp->mutable_infer_response(), deadline_, ctx_,
                          [this, req, resp, seq, ordered](absl::Status st, inference::ModelInferResponse*) {
                            if (!st.ok()) {
                              resp->set_error_message(std::string(st.message()));
                              resp->mutable_infer_response()->set_id(req->id());
                              resp->mutable_infer_response()->set_model_name(req->model_name());
                              resp->mutable_infer_response()->set_model_version(req->model_version());
                            }
                            Enqueue(seq, ordered, std::move(*resp));
                          });
    StartRead(next_.get());
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writes_.pop_front();
    if (!ok) broken_ = true;  // the client went away: drop what is left, but wait for in-flight work
    if (broken_) writes_.clear();
    if (!writes_.empty()) StartWrite(&writes_.front());
    MaybeFinishLocked();
  }

  void OnDone() override { delete this; }
  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    broken_ = true;
  }

 private:
  bool PreserveOrdering(const inference::ModelInferRequest& req) const {
    absl::StatusOr<int64_t> v = ParseModelVersion(req.model_version());
    if (!v.ok()) return false;
    absl::StatusOr<ModelRepository::Served> served = service_->repository()->Get(req.model_name(), *v);
    return served.ok() && served->config->dynamic_batching().preserve_ordering();
  }

  void Enqueue(uint64_t seq, bool ordered, inference::ModelStreamInferResponse resp) {
    absl::MutexLock lock(&mu_);
    --in_flight_;
    done_.insert(seq);
    if (ordered) {
      held_.emplace(seq, std::move(resp));
    } else {
      Write(std::move(resp));
    }
    // Release held responses whose predecessors are all answered.
    while (!held_.empty() && FirstUnanswered() > held_.begin()->first) {
      Write(std::move(held_.begin()->second));
      held_.erase(held_.begin());
    }
    while (!done_.empty() && *done_.begin() == answered_below_) {
      done_.erase(done_.begin());
      ++answered_below_;
    }
    MaybeFinishLocked();
  }

  // The lowest sequence number not yet answered.
  uint64_t FirstUnanswered() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    uint64_t s = answered_below_;
    for (auto it = done_.begin(); it != done_.end() && *it == s; ++it) ++s;
    return s;
  }

  void Write(inference::ModelStreamInferResponse resp) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (broken_) return;
    writes_.push_back(std::move(resp));
    if (writes_.size() == 1) StartWrite(&writes_.front());
  }

  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // Finish only when nothing can call back into this reactor any more.
    if (!finished_ && (reads_done_ || broken_) && in_flight_ == 0 && writes_.empty()) {
      finished_ = true;
      Finish(broken_ ? grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled") : grpc::Status::OK);
    }
  }

  InferenceService* const service_;
  grpc::CallbackServerContext* const ctx_;
  const absl::Time deadline_;
  std::unique_ptr<inference::ModelInferRequest> next_;  // only touched by the read chain
  absl::Mutex mu_;
  std::deque<inference::ModelStreamInferResponse> writes_ ABSL_GUARDED_BY(mu_);  // front is being written
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t answered_below_ ABSL_GUARDED_BY(mu_) = 0;     // every seq below this is answered
  std::set<uint64_t> done_ ABSL_GUARDED_BY(mu_);           // answered seqs at or above it
  std::map<uint64_t, inference::ModelStreamInferResponse> held_ ABSL_GUARDED_BY(mu_);  // ordered, waiting
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
InferenceService::ModelStreamInfer(grpc::CallbackServerContext* ctx) {
  return new StreamInferReactor(this, ctx);
}

grpc::ServerUnaryReactor* InferenceService::ServerLive(grpc::CallbackServerContext* ctx, const inference::ServerLiveRequest*,
                                                       inference::ServerLiveResponse* resp) {
  resp->set_live(true);
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ServerReady(grpc::CallbackServerContext* ctx, const inference::ServerReadyRequest*,
                                                        inference::ServerReadyResponse* resp) {
  resp->set_ready(!shutting_down_.load() && repository_->AllReady());
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelReady(grpc::CallbackServerContext* ctx, const inference::ModelReadyRequest* req,
                                                       inference::ModelReadyResponse* resp) {
  absl::StatusOr<int64_t> v = ParseModelVersion(req->version());
  if (!v.ok()) return FinishNow(ctx, v.status());
  resp->set_ready(repository_->Get(req->name(), *v).ok());
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ServerMetadata(grpc::CallbackServerContext* ctx,
                                                           const inference::ServerMetadataRequest*,
                                                           inference::ServerMetadataResponse* resp) {
  resp->set_name(options_.server_name);
  resp->set_version(options_.server_version);
  for (const char* e : {"model_repository", "model_configuration", "schedule_policy", "statistics", "parameters"}) {
    resp->add_extensions(e);
  }
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelMetadata(grpc::CallbackServerContext* ctx,
                                                          const inference::ModelMetadataRequest* req,
                                                          inference::ModelMetadataResponse* resp) {
  absl::StatusOr<int64_t> v = ParseModelVersion(req->version());
  if (!v.ok()) return FinishNow(ctx, v.status());
  absl::StatusOr<ModelRepository::Served> served = repository_->Get(req->name(), *v);
  if (!served.ok()) return FinishNow(ctx, served.status());
  const inference::ModelConfig& c = *served->config;
  resp->set_name(c.name());
  for (int64_t rv : repository_->ReadyVersions(c.name())) resp->add_versions(std::to_string(rv));
  resp->set_platform(c.platform().empty() ? kPlatform : c.platform());
  auto add = [&](auto* t, const std::string& name, inference::DataType dt, int64_t width) {
    t->set_name(name);
    t->set_datatype(ProtocolDataType(dt));
    if (c.max_batch_size() > 0) t->add_shape(-1);  // the batch dimension
    t->add_shape(width);
  };
  add(resp->add_inputs(), c.input(0).name(), c.input(0).data_type(), c.input(0).dims(0));
  add(resp->add_outputs(), c.output(0).name(), c.output(0).data_type(), c.output(0).dims(0));
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelConfig(grpc::CallbackServerContext* ctx,
                                                        const inference::ModelConfigRequest* req,
                                                        inference::ModelConfigResponse* resp) {
  absl::StatusOr<int64_t> v = ParseModelVersion(req->version());
  if (!v.ok()) return FinishNow(ctx, v.status());
  absl::StatusOr<ModelRepository::Served> served = repository_->Get(req->name(), *v);
  if (!served.ok()) return FinishNow(ctx, served.status());
  *resp->mutable_config() = *served->config;
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelStatistics(grpc::CallbackServerContext* ctx,
                                                            const inference::ModelStatisticsRequest* req,
                                                            inference::ModelStatisticsResponse* resp) {
  absl::StatusOr<int64_t> v = ParseModelVersion(req->version());
  if (!v.ok()) return FinishNow(ctx, v.status());
  std::vector<std::string> names;
  if (req->name().empty()) {
    for (const auto& e : repository_->Index(/*ready_only=*/true)) {
      if (names.empty() || names.back() != e.name) names.push_back(e.name);
    }
  } else {
    names.push_back(req->name());
  }
  for (const std::string& n : names) {
    std::vector<int64_t> versions = *v != 0 ? std::vector<int64_t>{*v} : repository_->ReadyVersions(n);
    if (versions.empty() && !req->name().empty()) {
      return FinishNow(ctx, absl::NotFoundError(absl::StrCat("Request for unknown model: '", n, "' is not found")));
    }
    for (int64_t ver : versions) {
      absl::StatusOr<ModelRepository::Served> served = repository_->Get(n, ver);
      if (!served.ok()) return FinishNow(ctx, served.status());
      FillStatistics(*served->model, resp->add_model_stats());
    }
  }
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::RepositoryIndex(grpc::CallbackServerContext* ctx,
                                                            const inference::RepositoryIndexRequest* req,
                                                            inference::RepositoryIndexResponse* resp) {
  for (const auto& e : repository_->Index(req->ready())) {
    auto* m = resp->add_models();
    m->set_name(e.name);
    m->set_version(e.version);
    m->set_state(e.state);
    m->set_reason(e.reason);
  }
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::RepositoryModelLoad(grpc::CallbackServerContext* ctx,
                                                                const inference::RepositoryModelLoadRequest* req,
                                                                inference::RepositoryModelLoadResponse*) {
  if (!req->parameters().empty()) {
    return FinishNow(ctx, absl::InvalidArgumentError("load parameters (config overrides, files) are not supported"));
  }
  // NOTES: loading reads and validates weights: milliseconds for small models, seconds for big ones.
  // It runs on this callback thread; gRPC's callback executor has other threads for other calls.
  return FinishNow(ctx, repository_->Load(req->model_name()));
}

grpc::ServerUnaryReactor* InferenceService::RepositoryModelUnload(grpc::CallbackServerContext* ctx,
                                                                  const inference::RepositoryModelUnloadRequest* req,
                                                                  inference::RepositoryModelUnloadResponse*) {
  return FinishNow(ctx, repository_->Unload(req->model_name()));
}

}  // namespace fp8serve
