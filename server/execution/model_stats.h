// Per model version counters and durations, in the shape of the protocol's ModelStatistics (which
// perf_analyzer reads to split server time into queue and compute). Lock-free on the request path
// except for the per-batch-size table.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace fp8serve {

struct DurationStat {
  std::atomic<uint64_t> count{0};
  std::atomic<uint64_t> ns{0};
  void Add(uint64_t d) {
    count.fetch_add(1, std::memory_order_relaxed);
    ns.fetch_add(d, std::memory_order_relaxed);
  }
};

struct BatchSizeStat {
  uint64_t count = 0;
  uint64_t compute_input_ns = 0;
  uint64_t compute_infer_ns = 0;
  uint64_t compute_output_ns = 0;
};

class ModelStats {
 public:
  // Per request (Triton counts a request's queue and compute phases once per request).
  DurationStat success;  // whole request, receipt to response
  DurationStat fail;
  DurationStat queue;
  DurationStat compute_input;
  DurationStat compute_infer;
  DurationStat compute_output;
  std::atomic<uint64_t> inference_count{0};  // rows inferred
  std::atomic<uint64_t> execution_count{0};  // batches executed
  std::atomic<uint64_t> last_inference_ms{0};

  // Counted before any request of the batch is answered, so a client that reads the statistics
  // right after its response sees its rows and its batch.
  void RecordExecution(int rows) {
    execution_count.fetch_add(1, std::memory_order_relaxed);
    inference_count.fetch_add(static_cast<uint64_t>(rows), std::memory_order_relaxed);
  }
  // The batch's phase durations, once the output phase is over.
  void RecordBatchTimes(int rows, uint64_t input_ns, uint64_t infer_ns, uint64_t output_ns) {
    absl::MutexLock lock(&mu_);
    BatchSizeStat& s = by_batch_size_[rows];
    ++s.count;
    s.compute_input_ns += input_ns;
    s.compute_infer_ns += infer_ns;
    s.compute_output_ns += output_ns;
  }
  std::map<int, BatchSizeStat> BatchStats() const {
    absl::MutexLock lock(&mu_);
    return by_batch_size_;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<int, BatchSizeStat> by_batch_size_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fp8serve
