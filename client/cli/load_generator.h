// The load generator behind `fp8serve-client bench`. One step holds a load level for a while:
//
//  - closed loop (concurrency N): N requests always in flight; each completion sends the next.
//  - open loop (rate R/s): Poisson arrivals (exponential gaps) at R/s whatever the server does;
//    latency counts from the intended send time, so a sender that falls behind shows up in the
//    figures instead of hiding (no coordinated omission).
//
// Transports: kSync (one thread per concurrent request, blocking calls: perf_analyzer's default),
// kAsync (the client's callback API: 512 in flight need no 512 threads), kStream (bidirectional
// streams, one per connection, requests matched to responses by id).
//
// Each step runs a warm-up (measured nowhere), waits until nothing is in flight, snapshots the
// model's server statistics, runs the measured phase, waits again, and snapshots again. Every
// request sent in the measured phase is accounted for: sent = ok + errors, and the server's
// success + fail counts move by the same amounts when nobody else is using the model.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/inference_client.h"
#include "grpc_service.pb.h"

namespace fp8serve::client {

enum class TransportMode { kSync, kAsync, kStream };
absl::StatusOr<TransportMode> ParseTransportMode(const std::string& name);  // sync|async|stream
const char* TransportModeName(TransportMode m);

struct LoadLevel {
  bool open_loop = false;  // false: `value` is a concurrency; true: a request rate per second
  double value = 1;
};
std::string LoadLevelName(const LoadLevel& l);  // "c=8", "r=1000/s"

struct LoadOptions {
  TransportMode mode = TransportMode::kAsync;
  // Connections (one InferenceClient each) and, in open loop, sender threads.
  int threads = 1;
  absl::Duration warmup = absl::Seconds(1);
  absl::Duration duration = absl::Seconds(5);  // of the measured phase ...
  int64_t requests = 0;                        // ... or, when > 0, this many requests
  absl::Duration request_timeout = absl::Seconds(10);
  // Open loop: an arrival that finds this many requests in flight is dropped and counted, so an
  // overloaded server cannot make the client queue without bound.
  int64_t max_in_flight = 16384;
  uint64_t seed = 1;
};

// A model's cumulative counters from ModelStatistics (every version of it, summed).
struct ServerCounters {
  uint64_t success = 0, fail = 0, inference_count = 0, execution_count = 0;
  uint64_t queue_ns = 0, compute_input_ns = 0, compute_infer_ns = 0, compute_output_ns = 0;
  ServerCounters operator-(const ServerCounters& o) const;
};
absl::StatusOr<ServerCounters> ReadServerCounters(InferenceClient& client, const std::string& model,
                                                  const std::string& version = "");

struct StepResult {
  LoadLevel level;
  double seconds = 0;  // measured phase: first send to last completion
  int64_t sent = 0, ok = 0;
  int64_t dropped = 0;                    // open loop: arrivals not sent (max_in_flight reached); not in `sent`
  std::map<std::string, int64_t> errors;  // by gRPC code name
  std::string first_error;                // one of the error messages, verbatim
  int64_t rows_per_request = 1;
  // Latency of successful requests, milliseconds.
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, p999_ms = 0, mean_ms = 0, max_ms = 0;
  double max_send_lag_ms = 0;  // open loop: how late the worst send left
  bool have_server = false;    // server counters could be read
  ServerCounters server;       // their change over the measured phase

  int64_t error_count() const;
  bool accounted() const { return sent == ok + error_count(); }
  double requests_per_second() const { return seconds > 0 ? ok / seconds : 0; }
  double rows_per_second() const { return requests_per_second() * static_cast<double>(rows_per_request); }
  // Server-side means per successful request, microseconds (0 without counters).
  double server_queue_us() const;
  double server_compute_us() const;  // compute input + infer + output
};

// What the progress callback sees, about every 250 ms.
struct LiveStatus {
  const char* phase = "";  // "warm-up" or "measure"
  double elapsed_s = 0, planned_s = 0;
  int64_t completed = 0, ok = 0, errors = 0, in_flight = 0;
};

class LoadGenerator {
 public:
  // `clients`: one per connection, at least one; they must outlive the generator.
  LoadGenerator(std::vector<InferenceClient*> clients, inference::ModelInferRequest request, LoadOptions options);

  using Progress = std::function<void(const LiveStatus&)>;
  absl::StatusOr<StepResult> RunStep(const LoadLevel& level, const Progress& progress = nullptr);

  // Exposed for tests: the nearest-rank percentile (0 < p <= 100) of sorted values.
  static double Percentile(const std::vector<int64_t>& sorted, double p);

 private:
  struct Phase;
  void RunPhase(const std::shared_ptr<Phase>& phase, const Progress& progress);
  void ClosedLoopAsync(const std::shared_ptr<Phase>& phase);
  void ClosedLoopSync(const std::shared_ptr<Phase>& phase);
  void ClosedLoopStream(const std::shared_ptr<Phase>& phase);
  void OpenLoop(const std::shared_ptr<Phase>& phase);
  void StartStreams(Phase& phase, size_t n);
  CallOptions RequestCall() const;
  void IssueAsync(const std::shared_ptr<Phase>& phase, size_t slot);
  void IssueStream(const std::shared_ptr<Phase>& phase, size_t slot);

  std::vector<InferenceClient*> clients_;
  std::shared_ptr<const inference::ModelInferRequest> request_;
  LoadOptions options_;
  int64_t rows_per_request_ = 1;
};

}  // namespace fp8serve::client
