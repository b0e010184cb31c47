#include "server/execution/servable_model.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/numerics/fp8.h"
#include "server/metrics/metrics.h"

namespace fp8serve {

namespace {

uint64_t Nanos(absl::Duration d) { return static_cast<uint64_t>(absl::ToInt64Nanoseconds(d)); }

// Converts one task's rows into FP32 at dst.
void GatherRows(const InferTask& t, int cols, float* dst) {
  const size_t n = static_cast<size_t>(t.rows()) * cols;
  switch (t.input_type()) {
    case InputType::kFp32: std::memcpy(dst, t.input(), n * sizeof(float)); break;
    case InputType::kFp16:
    case InputType::kBf16: {
      const auto* src = static_cast<const uint8_t*>(t.input());
      const bool bf16 = t.input_type() == InputType::kBf16;
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);  // request bytes carry no alignment promise
        dst[i] = bf16 ? Bf16ToFloat(h) : F16ToFloat(h);
      }
      break;
    }
  }
}

}  // namespace

// A batch between its launch and its answer.
struct ServableModel::InFlightBatch {
  std::vector<std::unique_ptr<InferTask>> tasks;
  int rows = 0;
  absl::Time gather_start, launch;  // compute input: gather_start..launch; compute infer: launch..complete
};

ServableModel::ServableModel(const Options& options, std::unique_ptr<Backend> backend)
    : options_(options), backend_(std::move(backend)) {}

absl::StatusOr<std::shared_ptr<ServableModel>> ServableModel::Create(const Options& options, const MlpWeights& weights) {
  BackendOptions bko;
  bko.kind = options.backend;
  bko.model = absl::StrCat("'", options.name, "' version ", options.version);
  bko.max_rows = options.max_batch_size;
  bko.instance_groups = options.instance_groups;
  bko.cuda_streams_per_instance = options.cuda_streams_per_instance;
  bko.cuda_graphs = options.cuda_graphs;
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      options.backend_factory ? options.backend_factory(bko, weights) : CreateBackend(bko, weights);
  if (!backend.ok()) return backend.status();
  std::shared_ptr<ServableModel> m(new ServableModel(options, *std::move(backend)));
  const int workers = m->backend_->num_instances();

  StreamScheduler::Options so;
  so.num_workers = workers;
  if (absl::Status st = StreamScheduler::Create(so, m->backend_.get(), &m->scheduler_); !st.ok()) {
    return absl::InternalError(absl::StrCat(options.name, ": ", st.message()));
  }

  DynamicBatcher<InferTask>::Options bo;
  bo.max_batch_size = options.max_batch_size;
  bo.max_queue_delay = options.max_queue_delay;
  bo.preferred_batch_sizes = options.preferred_batch_sizes;
  bo.priority_levels = options.priority_levels;
  bo.default_priority_level = options.default_priority_level;
  bo.max_queue_size = options.max_queue_size;
  bo.num_batch_threads = workers;  // one per instance; each keeps one slot reserved (StreamScheduler)
  ServableModel* self = m.get();  // the batcher is owned by and dies before *self
  std::unique_ptr<DynamicBatcher<InferTask>> batcher;
  absl::Status st = DynamicBatcher<InferTask>::Create(
      bo, &self->clock_, [self](std::vector<std::unique_ptr<InferTask>> batch) { self->ProcessBatch(std::move(batch)); },
      [self](std::unique_ptr<InferTask> task, absl::Status why) {
        if (ModelMetrics* mm = self->metrics()) mm->AddPending(-1);
        InferResult r;
        r.status = std::move(why);
        task->Finish(r);
      },
      &batcher);
  if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat(options.name, ": ", st.message()));
  absl::WriterMutexLock lock(&m->batcher_mu_);
  m->batcher_ = std::move(batcher);
  return m;
}

ServableModel::~ServableModel() { Shutdown(); }

void ServableModel::Shutdown() {
  std::unique_ptr<DynamicBatcher<InferTask>> batcher;
  {
    absl::WriterMutexLock lock(&batcher_mu_);
    batcher = std::move(batcher_);
  }
  // Destroying the batcher stops new work, drains the queue through ProcessBatch, and joins the
  // workers; then the batches still in flight complete, and the completion thread stops.
  batcher.reset();
  if (scheduler_ != nullptr) scheduler_->Shutdown();
}

absl::Status ServableModel::Schedule(std::unique_ptr<InferTask>& task) {
  const absl::Status retired =
      absl::AbortedError(absl::StrCat("model '", name(), "' version ", version(), " is being replaced or unloaded"));
  absl::ReaderMutexLock lock(&batcher_mu_);
  if (batcher_ == nullptr) return retired;
  task->set_enqueue_time(clock_.Now());
  // Counted as pending before it is queued: a batch thread may take it before Schedule returns.
  ModelMetrics* mm = metrics();
  if (mm != nullptr) mm->AddPending(1);
  // Shutdown() detaches the batcher under the writer lock before stopping it, so a batcher seen
  // here is never shutting down: UNAVAILABLE from it means the queue is full.
  absl::Status st = batcher_->Schedule(task);
  if (!st.ok() && mm != nullptr) mm->AddPending(-1);
  return st;
}

size_t ServableModel::NumQueuedTasks() const {
  absl::ReaderMutexLock lock(&batcher_mu_);
  return batcher_ == nullptr ? 0 : batcher_->NumQueuedTasks();
}

void ServableModel::ProcessBatch(std::vector<std::unique_ptr<InferTask>> batch) {
  ModelMetrics* const mm = metrics();
  if (mm != nullptr) mm->AddPending(-static_cast<int>(batch.size()));
  // Drop requests whose client has gone: they are answered (once) and not computed.
  std::erase_if(batch, [](std::unique_ptr<InferTask>& t) {
    if (!t->cancelled()) return false;
    InferResult r;
    r.status = absl::CancelledError("the client cancelled the request before it was computed");
    t->Finish(r);
    return true;
  });
  // An empty batch takes no slot: the worker goes back to the batcher with its reservation.
  if (batch.empty()) return;
  auto b = std::make_unique<InFlightBatch>();
  b->tasks = std::move(batch);
  for (const auto& t : b->tasks) b->rows += t->rows();
  InFlightBatch* const raw = b.get();  // stays put: `b` moves into the done callback, not its target
  if (mm != nullptr) mm->AddInflight(1);
  scheduler_->Run(
      raw->rows,
      // Compute input: gather every task's rows into the slot's FP32 staging.
      [this, raw](int slot) {
        const int in_cols = backend_->input_dim();
        raw->gather_start = clock_.Now();
        float* in = backend_->input(slot, raw->rows);
        size_t offset = 0;
        for (const auto& t : raw->tasks) {
          GatherRows(*t, in_cols, in + offset * in_cols);
          offset += t->rows();
        }
        raw->launch = clock_.Now();
      },
      [this, b = std::move(b)](int slot, absl::Status status) { CompleteBatch(*b, slot, std::move(status)); });
}

void ServableModel::CompleteBatch(InFlightBatch& b, int slot, absl::Status status) {
  ModelMetrics* const mm = metrics();
  const absl::Time done = clock_.Now();
  const uint64_t input_ns = Nanos(b.launch - b.gather_start), infer_ns = Nanos(done - b.launch);
  // Compute output: each task copies its rows out in its callback, and records its own figures
  // (ModelStats::RecordSuccess) before its response leaves.
  if (status.ok()) {
    stats_.RecordExecution(b.rows, input_ns, infer_ns, static_cast<uint64_t>(absl::ToUnixMillis(done)));
    if (mm != nullptr) mm->RecordExecution(b.rows);
  }
  const int out_cols = backend_->output_dim();
  const float* out = backend_->output(slot);
  size_t offset = 0;
  for (const auto& t : b.tasks) {
    InferResult r;
    r.status = status;
    r.output = out + offset * out_cols;
    r.rows = t->rows();
    r.cols = out_cols;
    r.queue_ns = Nanos(b.gather_start - t->enqueue_time());
    r.compute_input_ns = input_ns;
    r.compute_infer_ns = infer_ns;
    r.batch_rows = b.rows;
    offset += t->rows();
    t->Finish(r);
  }
  if (status.ok()) stats_.RecordBatchOutput(b.rows, Nanos(clock_.Now() - done));
  if (mm != nullptr) mm->AddInflight(-1);
}

}  // namespace fp8serve
