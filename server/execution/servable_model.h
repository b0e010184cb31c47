// One loaded model version, ready to serve: its backend (the forward), its dynamic batcher, and its
// statistics. A request's way through it:
//   Schedule(task) -> batcher queue -> a batch thread takes a free instance slot -> gather the
//   batch's rows into FP32 (compute input) -> Backend::Run (compute infer) -> hand each task its
//   rows (compute output) -> InferTask::Finish.
// The number of batch threads equals the instance count, so at most that many batches are in
// flight and the batcher forms a batch only when an instance is free: under load batches grow
// instead of queueing behind the backend.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/mlp_weights.h"
#include "server/batching/dynamic_batcher.h"
#include "server/execution/backend.h"
#include "server/execution/infer_task.h"
#include "server/execution/model_stats.h"

namespace fp8serve {

class ModelMetrics;

class ServableModel {
 public:
  struct Options {
    std::string name;
    int64_t version = 1;
    // Rows per batch at most; also the most rows one request may carry.
    int max_batch_size = 1;
    absl::Duration max_queue_delay = absl::ZeroDuration();
    std::vector<int> preferred_batch_sizes;
    int priority_levels = 1;
    int default_priority_level = 1;
    size_t max_queue_size = 0;  // requests; 0 = unbounded
    // Concurrent execution slots (instance_group count), each with its own batch thread.
    int instances = 1;
    BackendKind backend = BackendKind::kAuto;
    // This version's Prometheus series (null: none). The executor counts queue depth, batches in
    // flight, executions and rows on it; the service counts requests and their durations.
    std::shared_ptr<ModelMetrics> metrics;
  };

  static absl::StatusOr<std::shared_ptr<ServableModel>> Create(const Options& options, const MlpWeights& weights);
  ~ServableModel();
  ServableModel(const ServableModel&) = delete;
  ServableModel& operator=(const ServableModel&) = delete;

  // Queues a task. On error the task is left with the caller, not finished: queue full is
  // UNAVAILABLE, bad priority or too many rows INVALID_ARGUMENT, and ABORTED means this version was
  // shut down (replaced or unloaded): look the model up again.
  absl::Status Schedule(std::unique_ptr<InferTask>& task);

  // Stops accepting work, runs every queued task to completion, and joins the batch threads. Must
  // not be called from a batch thread (that is, not from a task's done callback).
  void Shutdown();

  const Options& options() const { return options_; }
  const std::string& name() const { return options_.name; }
  int64_t version() const { return options_.version; }
  int input_dim() const { return backend_->input_dim(); }
  int output_dim() const { return backend_->output_dim(); }
  const char* backend_name() const { return backend_->name(); }
  ModelStats& stats() { return stats_; }
  ModelMetrics* metrics() const { return options_.metrics.get(); }
  size_t NumQueuedTasks() const;

 private:
  ServableModel(const Options& options, std::unique_ptr<Backend> backend);
  void ProcessBatch(std::vector<std::unique_ptr<InferTask>> batch);
  int AcquireInstance();
  void ReleaseInstance(int slot);

  const Options options_;
  std::unique_ptr<Backend> backend_;
  ModelStats stats_;
  RealClock clock_;

  absl::Mutex slots_mu_;
  std::vector<int> free_slots_ ABSL_GUARDED_BY(slots_mu_);
  // Per-instance staging for the gathered batch input and the batch output.
  struct Staging {
    std::vector<float> in, out;
  };
  std::vector<Staging> staging_;

  // Readers schedule; Shutdown takes it exclusively to detach the batcher, then drains it unlocked.
  mutable absl::Mutex batcher_mu_;
  std::unique_ptr<DynamicBatcher<InferTask>> batcher_ ABSL_GUARDED_BY(batcher_mu_);  // last: destroyed first
};

}  // namespace fp8serve
