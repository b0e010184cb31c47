#include "client/cli/load_generator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace fp8serve::client {

using Clock = std::chrono::steady_clock;

absl::StatusOr<TransportMode> ParseTransportMode(const std::string& name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "sync") return TransportMode::kSync;
  if (n == "async") return TransportMode::kAsync;
  if (n == "stream") return TransportMode::kStream;
  return absl::InvalidArgumentError(absl::StrCat("--mode '", name, "': expected sync, async or stream"));
}

const char* TransportModeName(TransportMode m) {
  switch (m) {
    case TransportMode::kSync: return "sync";
    case TransportMode::kAsync: return "async";
    case TransportMode::kStream: return "stream";
  }
  return "?";
}

std::string LoadLevelName(const LoadLevel& l) {
  return l.open_loop ? absl::StrCat("r=", absl::StrFormat("%g", l.value), "/s")
                     : absl::StrCat("c=", static_cast<int64_t>(l.value));
}

ServerCounters ServerCounters::operator-(const ServerCounters& o) const {
  ServerCounters d;
  d.success = success - o.success;
  d.fail = fail - o.fail;
  d.inference_count = inference_count - o.inference_count;
  d.execution_count = execution_count - o.execution_count;
  d.queue_ns = queue_ns - o.queue_ns;
  d.compute_input_ns = compute_input_ns - o.compute_input_ns;
  d.compute_infer_ns = compute_infer_ns - o.compute_infer_ns;
  d.compute_output_ns = compute_output_ns - o.compute_output_ns;
  return d;
}

absl::StatusOr<ServerCounters> ReadServerCounters(InferenceClient& client, const std::string& model,
                                                  const std::string& version) {
  absl::StatusOr<inference::ModelStatisticsResponse> r = client.ModelStatistics(model, version);
  if (!r.ok()) return r.status();
  ServerCounters c;
  for (const inference::ModelStatistics& m : r->model_stats()) {
    if (m.name() != model) continue;
    const inference::InferStatistics& s = m.inference_stats();
    c.success += s.success().count();
    c.fail += s.fail().count();
    c.inference_count += m.inference_count();
    c.execution_count += m.execution_count();
    c.queue_ns += s.queue().ns();
    c.compute_input_ns += s.compute_input().ns();
    c.compute_infer_ns += s.compute_infer().ns();
    c.compute_output_ns += s.compute_output().ns();
  }
  return c;
}

int64_t StepResult::error_count() const {
  int64_t n = 0;
  for (const auto& [code, count] : errors) n += count;
  return n;
}

double StepResult::server_queue_us() const {
  return have_server && server.success > 0 ? server.queue_ns / 1e3 / static_cast<double>(server.success) : 0;
}

double StepResult::server_compute_us() const {
  if (!have_server || server.success == 0) return 0;
  return (server.compute_input_ns + server.compute_infer_ns + server.compute_output_ns) / 1e3 /
         static_cast<double>(server.success);
}

// One phase (warm-up or measured) of a step: its schedule, its accounting, and when it is over.
struct LoadGenerator::Phase {
  LoadLevel level;
  const char* name = "";
  absl::Duration duration;
  int64_t requests = 0;  // > 0: count-based
  Clock::time_point start, end;
  std::atomic<int64_t> tickets{0};

  std::atomic<int64_t> sent{0}, completed{0}, ok{0}, failed{0}, dropped{0}, in_flight{0};
  absl::Mutex mu;
  std::vector<int64_t> latencies ABSL_GUARDED_BY(mu);
  std::map<std::string, int64_t> errors ABSL_GUARDED_BY(mu);
  std::string first_error ABSL_GUARDED_BY(mu);
  Clock::time_point last_completion ABSL_GUARDED_BY(mu);
  int64_t max_lag_ns ABSL_GUARDED_BY(mu) = 0;

  // Work that may still complete: senders (slots or threads) plus, in open loop, requests in
  // flight. Reaching zero ends the phase; it cannot rise again from zero.
  std::atomic<int64_t> pending{0};
  absl::Notification done;
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<InferStream>> streams;
  std::vector<InferenceClient*> slot_clients;  // closed loop: each slot's connection ...
  std::vector<InferStream*> slot_streams;      // ... or stream

  // May one more request be sent?
  bool TakeTicket() {
    if (requests > 0) return tickets.fetch_sub(1) > 0;
    return Clock::now() < end;
  }
  void Release() {
    if (pending.fetch_sub(1) == 1) done.Notify();
  }
  void Record(Clock::time_point t0, const absl::Status& st) {
    const Clock::time_point now = Clock::now();
    {
      absl::MutexLock lock(&mu);
      if (st.ok()) {
        latencies.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(now - t0).count());
      } else {
        ++errors[StatusCodeName(st.code())];
        if (first_error.empty()) first_error = std::string(st.message());
      }
      last_completion = std::max(last_completion, now);
    }
    (st.ok() ? ok : failed).fetch_add(1);
    completed.fetch_add(1);
  }
};

LoadGenerator::LoadGenerator(std::vector<InferenceClient*> clients, inference::ModelInferRequest request,
                             LoadOptions options)
    : clients_(std::move(clients)), options_(std::move(options)) {
  if (request.inputs_size() > 0 && request.inputs(0).shape_size() >= 2) rows_per_request_ = request.inputs(0).shape(0);
  request_ = std::make_shared<const inference::ModelInferRequest>(std::move(request));
}

double LoadGenerator::Percentile(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  // (The epsilon keeps 99.9% of 1000 at rank 999: 0.999 * 1000 is a hair above 999 in binary.)
  const double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()) - 1e-9);
  const size_t i = static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(sorted.size()))) - 1;
  return static_cast<double>(sorted[i]);
}

CallOptions LoadGenerator::RequestCall() const {
  CallOptions call;
  call.timeout = options_.request_timeout;
  return call;
}

void LoadGenerator::IssueAsync(const std::shared_ptr<Phase>& phase, size_t slot) {
  if (!phase->TakeTicket()) return phase->Release();
  phase->sent.fetch_add(1);
  const Clock::time_point t0 = Clock::now();
  // The chain continues on gRPC's callback threads, not on threads of ours. The callback keeps
  // the phase alive: the waiter may wake while the last callback is still returning.
  phase->slot_clients[slot]->AsyncInfer(
      request_,
      [this, phase, slot, t0](InferResult r) {
        phase->Record(t0, r.status());
        IssueAsync(phase, slot);
      },
      RequestCall());
}

void LoadGenerator::IssueStream(const std::shared_ptr<Phase>& phase, size_t slot) {
  if (!phase->TakeTicket()) return phase->Release();
  phase->sent.fetch_add(1);
  const Clock::time_point t0 = Clock::now();
  absl::Status st = phase->slot_streams[slot]->Write(*request_, [this, phase, slot, t0](InferResult r) {
    phase->Record(t0, r.status());
    IssueStream(phase, slot);
  });
  if (!st.ok()) {  // the stream is closed: record the failure and retire the slot
    phase->Record(t0, st);
    phase->Release();
  }
}

void LoadGenerator::ClosedLoopAsync(const std::shared_ptr<Phase>& phase) {
  const size_t slots = static_cast<size_t>(phase->level.value);
  for (size_t i = 0; i < slots; ++i) phase->slot_clients.push_back(clients_[i % clients_.size()]);
  phase->pending.store(static_cast<int64_t>(slots));
  for (size_t i = 0; i < slots; ++i) IssueAsync(phase, i);
}

void LoadGenerator::ClosedLoopStream(const std::shared_ptr<Phase>& phase) {
  const size_t slots = static_cast<size_t>(phase->level.value);
  StartStreams(*phase, std::min(clients_.size(), slots));
  for (size_t i = 0; i < slots; ++i) phase->slot_streams.push_back(phase->streams[i % phase->streams.size()].get());
  phase->pending.store(static_cast<int64_t>(slots));
  for (size_t i = 0; i < slots; ++i) IssueStream(phase, i);
}

void LoadGenerator::StartStreams(Phase& phase, size_t n) {
  CallOptions call;
  // A stream's deadline covers the whole phase; a request's own deadline cannot be set inside a
  // stream, so the phase's worst case (a full request timeout after it ends) bounds it.
  if (phase.requests == 0) call.timeout = phase.duration + options_.request_timeout + absl::Seconds(30);
  for (size_t i = 0; i < n; ++i) phase.streams.push_back(clients_[i]->StartStream(call));
}

void LoadGenerator::ClosedLoopSync(const std::shared_ptr<Phase>& phase) {
  const int64_t n = static_cast<int64_t>(phase->level.value);
  phase->pending.store(n);
  for (int64_t i = 0; i < n; ++i) {
    InferenceClient* client = clients_[static_cast<size_t>(i) % clients_.size()];
    phase->threads.emplace_back([this, client, phase] {
      const CallOptions call = RequestCall();
      while (phase->TakeTicket()) {
        phase->sent.fetch_add(1);
        const Clock::time_point t0 = Clock::now();
        InferResult r = client->Infer(*request_, call);
        phase->Record(t0, r.status());
      }
      phase->Release();
    });
  }
}

void LoadGenerator::OpenLoop(const std::shared_ptr<Phase>& phase) {
  const size_t nthreads = clients_.size();
  if (options_.mode == TransportMode::kStream) StartStreams(*phase, nthreads);
  phase->pending.store(static_cast<int64_t>(nthreads));
  const double rate_per_thread = phase->level.value / static_cast<double>(nthreads);
  for (size_t t = 0; t < nthreads; ++t) {
    int64_t quota = -1;
    if (phase->requests > 0) {
      quota = phase->requests / static_cast<int64_t>(nthreads) +
              (static_cast<int64_t>(t) < phase->requests % static_cast<int64_t>(nthreads) ? 1 : 0);
    }
    InferStream* stream = phase->streams.empty() ? nullptr : phase->streams[t].get();
    phase->threads.emplace_back([this, phase, t, quota, rate_per_thread, stream] {
      // The union of independent Poisson processes is a Poisson process at the summed rate.
      std::mt19937_64 rng(options_.seed * 1000003u + t);
      std::exponential_distribution<double> gap(rate_per_thread);
      InferenceClient* client = clients_[t];
      const CallOptions call = RequestCall();
      Clock::time_point next = phase->start;
      int64_t lag_max = 0;
      for (int64_t n = 0; quota < 0 || n < quota; ++n) {
        next += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
        if (quota < 0 && next >= phase->end) break;
        std::this_thread::sleep_until(next);
        lag_max = std::max<int64_t>(lag_max,
                                    std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - next).count());
        if (phase->in_flight.load() >= options_.max_in_flight) {
          phase->dropped.fetch_add(1);
          continue;
        }
        phase->pending.fetch_add(1);
        phase->in_flight.fetch_add(1);
        phase->sent.fetch_add(1);
        const Clock::time_point intended = next;
        auto done = [phase, intended](InferResult r) {
          phase->Record(intended, r.status());
          phase->in_flight.fetch_sub(1);
          phase->Release();
        };
        if (stream != nullptr) {
          if (absl::Status st = stream->Write(*request_, done); !st.ok()) done(st);
        } else {
          client->AsyncInfer(request_, done, call);
        }
      }
      {
        absl::MutexLock lock(&phase->mu);
        phase->max_lag_ns = std::max(phase->max_lag_ns, lag_max);
      }
      phase->Release();
    });
  }
}

void LoadGenerator::RunPhase(const std::shared_ptr<Phase>& p, const Progress& progress) {
  Phase& phase = *p;
  phase.start = Clock::now();
  phase.end = phase.start + absl::ToChronoNanoseconds(phase.duration);
  phase.tickets.store(phase.requests);
  {
    absl::MutexLock lock(&phase.mu);
    phase.last_completion = phase.start;
  }
  if (phase.level.open_loop) {
    OpenLoop(p);
  } else if (options_.mode == TransportMode::kSync) {
    ClosedLoopSync(p);
  } else if (options_.mode == TransportMode::kAsync) {
    ClosedLoopAsync(p);
  } else {
    ClosedLoopStream(p);
  }
  const double planned = phase.requests > 0 ? 0 : absl::ToDoubleSeconds(phase.duration);
  while (!phase.done.WaitForNotificationWithTimeout(absl::Milliseconds(250))) {
    if (!progress) continue;
    LiveStatus s;
    s.phase = phase.name;
    s.elapsed_s = std::chrono::duration<double>(Clock::now() - phase.start).count();
    s.planned_s = planned;
    s.completed = phase.completed.load();
    s.ok = phase.ok.load();
    s.errors = phase.failed.load();
    s.in_flight = phase.sent.load() - s.completed;
    progress(s);
  }
  for (std::thread& t : phase.threads) t.join();
  // Nothing is in flight: Finish half-closes each stream and waits for its end (and so for its
  // last callback to return). They go here, not with the phase, which a callback may free.
  std::vector<std::unique_ptr<InferStream>> streams = std::move(phase.streams);
  phase.slot_streams.clear();
  for (auto& s : streams) {
    if (absl::Status st = s->Finish(); !st.ok()) {
      absl::MutexLock lock(&phase.mu);
      if (phase.first_error.empty()) phase.first_error = absl::StrCat("stream: ", st.message());
    }
  }
}

absl::StatusOr<StepResult> LoadGenerator::RunStep(const LoadLevel& level, const Progress& progress) {
  if (clients_.empty()) return absl::InvalidArgumentError("no clients");
  if (!(level.value > 0) || !std::isfinite(level.value)) {
    return absl::InvalidArgumentError(absl::StrCat("load level ", LoadLevelName(level), " must be positive"));
  }
  if (!level.open_loop && (level.value != std::floor(level.value) || level.value > 100000)) {
    return absl::InvalidArgumentError(absl::StrCat("concurrency ", level.value, " must be a whole number <= 100000"));
  }
  if (level.open_loop && options_.mode == TransportMode::kSync) {
    return absl::InvalidArgumentError("an open-loop --rate needs --mode async or stream");
  }
  InferenceClient& control = *clients_.front();
  const std::string& model = request_->model_name();

  if (options_.warmup > absl::ZeroDuration()) {
    auto warm = std::make_shared<Phase>();
    warm->level = level;
    warm->name = "warm-up";
    warm->duration = options_.warmup;
    RunPhase(warm, progress);
  }

  StepResult r;
  r.level = level;
  r.rows_per_request = rows_per_request_;
  absl::StatusOr<ServerCounters> before = ReadServerCounters(control, model, request_->model_version());

  auto measured = std::make_shared<Phase>();
  Phase& m = *measured;
  m.level = level;
  m.name = "measure";
  m.duration = options_.duration;
  m.requests = options_.requests;
  RunPhase(measured, progress);

  absl::StatusOr<ServerCounters> after = ReadServerCounters(control, model, request_->model_version());
  if (before.ok() && after.ok()) {
    r.have_server = true;
    r.server = *after - *before;
  }
  absl::MutexLock lock(&m.mu);
  r.sent = m.sent.load();
  r.ok = m.ok.load();
  r.dropped = m.dropped.load();
  r.errors = m.errors;
  r.first_error = m.first_error;
  r.seconds = std::chrono::duration<double>(m.last_completion - m.start).count();
  r.max_send_lag_ms = m.max_lag_ns / 1e6;
  std::vector<int64_t>& lat = m.latencies;
  std::sort(lat.begin(), lat.end());
  if (!lat.empty()) {
    double sum = 0;
    for (int64_t v : lat) sum += static_cast<double>(v);
    r.mean_ms = sum / static_cast<double>(lat.size()) / 1e6;
    r.p50_ms = Percentile(lat, 50) / 1e6;
    r.p90_ms = Percentile(lat, 90) / 1e6;
    r.p99_ms = Percentile(lat, 99) / 1e6;
    r.p999_ms = Percentile(lat, 99.9) / 1e6;
    r.max_ms = static_cast<double>(lat.back()) / 1e6;
  }
  return r;
}

}  // namespace fp8serve::client
