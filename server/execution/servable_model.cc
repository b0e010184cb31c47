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

ServableModel::ServableModel(const Options& options, std::unique_ptr<Backend> backend)
    : options_(options), backend_(std::move(backend)), staging_(options.instances) {
  for (int i = options.instances - 1; i >= 0; --i) free_slots_.push_back(i);
}

absl::StatusOr<std::shared_ptr<ServableModel>> ServableModel::Create(const Options& options, const MlpWeights& weights) {
  if (options.instances < 1) return absl::InvalidArgumentError(absl::StrCat(options.name, ": instance count must be >= 1"));
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      CreateBackend(options.backend, weights, options.instances, options.max_batch_size);
  if (!backend.ok()) return backend.status();
  std::shared_ptr<ServableModel> m(new ServableModel(options, *std::move(backend)));

  DynamicBatcher<InferTask>::Options bo;
  bo.max_batch_size = options.max_batch_size;
  bo.max_queue_delay = options.max_queue_delay;
  bo.preferred_batch_sizes = options.preferred_batch_sizes;
  bo.priority_levels = options.priority_levels;
  bo.default_priority_level = options.default_priority_level;
  bo.max_queue_size = options.max_queue_size;
  bo.num_batch_threads = options.instances;
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
  // Destroying the batcher stops new work, drains the queue through ProcessBatch, and joins.
  batcher.reset();
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

int ServableModel::AcquireInstance() {
  absl::MutexLock lock(&slots_mu_);
  // There are as many batch threads as slots, so a slot is always free here.
  const int slot = free_slots_.back();
  free_slots_.pop_back();
  return slot;
}

void ServableModel::ReleaseInstance(int slot) {
  absl::MutexLock lock(&slots_mu_);
  free_slots_.push_back(slot);
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
  if (batch.empty()) return;
  if (mm != nullptr) mm->AddInflight(1);
  const int slot = AcquireInstance();
  Staging& s = staging_[slot];
  const int in_cols = backend_->input_dim(), out_cols = backend_->output_dim();
  int rows = 0;
  for (const auto& t : batch) rows += t->rows();

  // Compute input: gather every task's rows into one FP32 batch.
  const absl::Time t0 = clock_.Now();
  s.in.resize(static_cast<size_t>(rows) * in_cols);
  s.out.resize(static_cast<size_t>(rows) * out_cols);
  size_t offset = 0;
  for (const auto& t : batch) {
    GatherRows(*t, in_cols, s.in.data() + offset * in_cols);
    offset += t->rows();
  }
  // Compute infer.
  const absl::Time t1 = clock_.Now();
  const absl::Status st = backend_->Run(slot, s.in.data(), rows, s.out.data());
  const absl::Time t2 = clock_.Now();

  // Compute output: each task copies its rows out in its callback, and records its own figures
  // (ModelStats::RecordSuccess) before its response leaves.
  if (st.ok()) {
    stats_.RecordExecution(rows, Nanos(t1 - t0), Nanos(t2 - t1), static_cast<uint64_t>(absl::ToUnixMillis(t2)));
    if (mm != nullptr) mm->RecordExecution(rows);
  }
  offset = 0;
  for (const auto& t : batch) {
    InferResult r;
    r.status = st;
    r.output = s.out.data() + offset * out_cols;
    r.rows = t->rows();
    r.cols = out_cols;
    r.queue_ns = Nanos(t0 - t->enqueue_time());
    r.compute_input_ns = Nanos(t1 - t0);
    r.compute_infer_ns = Nanos(t2 - t1);
    r.batch_rows = rows;
    offset += t->rows();
    t->Finish(r);
  }
  if (st.ok()) stats_.RecordBatchOutput(rows, Nanos(clock_.Now() - t2));
  ReleaseInstance(slot);
  if (mm != nullptr) mm->AddInflight(-1);
}

}  // namespace fp8serve
