// One loaded model version, ready to serve: its backend (the forward), its dynamic batcher, the
// stream scheduler between them, and its statistics. A request's way through it:
//   Schedule(task) -> batcher queue -> a batch worker (one per instance) gets a batch -> it takes
//   the free slot reserved for it and gathers the batch's rows into the slot's input staging
//   (compute input) -> Backend::Launch (compute infer: on the CPU inside Launch; on a GPU queued on
//   the slot's stream, and complete when the scheduler's completion thread sees the slot's event)
//   -> each task gets its rows (compute output) -> InferTask::Finish.
// Each worker returns to the batcher only once a free slot is reserved for its next batch (see
// StreamScheduler), so at most slots batches are in flight and, under load, batches grow instead
// of queueing behind the backend.
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
#include "server/execution/stream_scheduler.h"

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
    // Where the instances run (the config's instance_group; see InstanceGroupSpec). Empty: one
    // instance, KIND_AUTO. Each instance has its own batch worker.
    std::vector<InstanceGroupSpec> instance_groups;
    BackendKind backend = BackendKind::kAuto;
    // CUDA backend only: streams (slots) per instance, and CUDA graphs (see BackendOptions).
    int cuda_streams_per_instance = 2;
    bool cuda_graphs = true;
    // Builds the backend (empty: CreateBackend).
    BackendFactory backend_factory;
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

  // Stops accepting work, runs every queued task to completion (in flight ones included), and joins
  // the batch workers and the completion thread. Must not be called from either (that is, not from
  // a task's done callback).
  void Shutdown();

  const Options& options() const { return options_; }
  const std::string& name() const { return options_.name; }
  int64_t version() const { return options_.version; }
  int input_dim() const { return backend_->input_dim(); }
  int output_dim() const { return backend_->output_dim(); }
  const char* backend_name() const { return backend_->name(); }
  // Execution instances (batch workers), as the backend placed them.
  int instances() const { return backend_->num_instances(); }
  // Where and how the backend runs (for the load log).
  std::string backend_description() const { return backend_->Describe(); }
  ModelStats& stats() { return stats_; }
  ModelMetrics* metrics() const { return options_.metrics.get(); }
  size_t NumQueuedTasks() const;

 private:
  struct InFlightBatch;

  ServableModel(const Options& options, std::unique_ptr<Backend> backend);
  void ProcessBatch(std::vector<std::unique_ptr<InferTask>> batch);
  // Answers the batch from its slot's output (or with its error). On the worker's thread for a
  // backend that completes inside Launch, else on the scheduler's completion thread.
  void CompleteBatch(InFlightBatch& b, int slot, absl::Status status);

  const Options options_;
  std::unique_ptr<Backend> backend_;
  ModelStats stats_;
  RealClock clock_;
  // Between the batcher and the backend; outlives the batcher (whose workers call it), dies
  // before the backend (whose slots it completes).
  std::unique_ptr<StreamScheduler> scheduler_;

  // Readers schedule; Shutdown takes it exclusively to detach the batcher, then drains it unlocked.
  mutable absl::Mutex batcher_mu_;
  std::unique_ptr<DynamicBatcher<InferTask>> batcher_ ABSL_GUARDED_BY(batcher_mu_);  // last: destroyed first
};

}  // namespace fp8serve
