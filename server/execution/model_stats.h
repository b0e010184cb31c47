// Per model version counters and durations, in the shape of the protocol's ModelStatistics (which
// perf_analyzer reads to split server time into queue and compute).
//
// NOTES: every request's figures are recorded in one step under one lock, before its response is
// sent, and read the same way. perf_analyzer aborts when compute_input, compute_infer and
// compute_output counts differ between reads, and a client that reads the statistics right after
// its response must find that response counted.
#pragma once

#include <cstdint>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace fp8serve {

struct DurationStat {
  uint64_t count = 0;
  uint64_t ns = 0;
  void Add(uint64_t d) {
    ++count;
    ns += d;
  }
};

struct BatchSizeStat {
  uint64_t count = 0;
  uint64_t compute_input_ns = 0;
  uint64_t compute_infer_ns = 0;
  uint64_t compute_output_ns = 0;
};

struct ModelStatsSnapshot {
  // Per request (a request's queue and compute phases count once per request, as in Triton).
  DurationStat success;  // whole request, receipt to response
  DurationStat fail;
  DurationStat queue;
  DurationStat compute_input;
  DurationStat compute_infer;
  DurationStat compute_output;
  uint64_t inference_count = 0;  // rows inferred
  uint64_t execution_count = 0;  // batches executed
  uint64_t last_inference_ms = 0;
  std::map<int, BatchSizeStat> by_batch_size;
};

class ModelStats {
 public:
  // A batch ran: counted before any of its requests is answered.
  void RecordExecution(int rows, uint64_t input_ns, uint64_t infer_ns, uint64_t unix_ms) {
    absl::MutexLock lock(&mu_);
    ++s_.execution_count;
    s_.inference_count += static_cast<uint64_t>(rows);
    s_.last_inference_ms = unix_ms;
    BatchSizeStat& b = s_.by_batch_size[rows];
    ++b.count;
    b.compute_input_ns += input_ns;
    b.compute_infer_ns += infer_ns;
  }
  // The batch's output phase (all its requests' responses), once it is over.
  void RecordBatchOutput(int rows, uint64_t output_ns) {
    absl::MutexLock lock(&mu_);
    s_.by_batch_size[rows].compute_output_ns += output_ns;
  }
  // One successful request, all phases at once, just before its response is sent.
  void RecordSuccess(uint64_t total_ns, uint64_t queue_ns, uint64_t input_ns, uint64_t infer_ns, uint64_t output_ns) {
    absl::MutexLock lock(&mu_);
    s_.success.Add(total_ns);
    s_.queue.Add(queue_ns);
    s_.compute_input.Add(input_ns);
    s_.compute_infer.Add(infer_ns);
    s_.compute_output.Add(output_ns);
  }
  void RecordFailure(uint64_t total_ns) {
    absl::MutexLock lock(&mu_);
    s_.fail.Add(total_ns);
  }
  ModelStatsSnapshot Snapshot() const {
    absl::MutexLock lock(&mu_);
    return s_;
  }

 private:
  mutable absl::Mutex mu_;
  ModelStatsSnapshot s_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fp8serve
