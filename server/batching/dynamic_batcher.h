// DynamicBatcher: groups inference requests into batches on worker threads and hands each batch to
// a callback. It knows nothing of gRPC, CUDA or models; the server wires its callbacks to the
// executor (process a batch) and to the RPC layer (answer a request that timed out in the queue).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/batching/batch_queue.h"
#include "server/batching/clock.h"

namespace fp8serve {

// DynamicBatcher<TaskT> — Triton-style dynamic batching behind a thread-safe Schedule().
//
// TaskT provides rows(), priority() and deadline(); see BatchQueue.
//
// PARAMETERS (BatchingOptions; every field is documented there)
//  max_batch_size          rows per batch at most; larger requests are rejected.
//  max_queue_delay         how long the oldest request may wait for its batch to fill.
//  preferred_batch_sizes   sizes that leave at once, without waiting for the delay.
//  priority_levels, default_priority_level
//                          level 1 first, FIFO within a level.
//  max_queue_size          queued requests at most (0 = unlimited), then UNAVAILABLE "queue full".
//  num_batch_threads       workers = batches in flight at most; 0 = manual mode (RunOnce()).
//
// BEHAVIOR
//  - Schedule() never blocks on batching: it validates, enqueues and returns. On any error it
//    leaves the task with the caller, so the caller can answer it.
//  - Each worker loops: when it is free it asks the BatchQueue for a batch (see BatchQueue for the
//    formation and dispatch rules) and runs process_batch_fn on it, synchronously. A batch is
//    formed only when a worker is free to run it, never ahead of time, so under load requests
//    accumulate in the queue and batches grow, instead of small batches piling up downstream.
//  - An idle worker sleeps on a condition variable until the queue's NextWakeup() (the delay of the
//    oldest request or the earliest deadline) or until Schedule() makes a batch due earlier. No
//    busy waiting; Schedule() wakes a worker only when that changes what the worker should do.
//  - A request whose deadline passes while it is queued goes to expired_fn with
//    DEADLINE_EXCEEDED "request timed out in the queue after N us", and never into a batch. With
//    worker threads, a deadline thread sleeps until the earliest queued deadline and answers the
//    request then, even while every worker is busy with a long batch (a client that gave up is
//    told at once, not when a worker frees); in manual mode the next RunOnce() does.
//  - Callbacks run on worker threads (expired_fn also on the deadline thread; both on the caller's
//    thread in manual mode), without the batcher's lock held. They may call Schedule() but must
//    not call Shutdown() or destroy the batcher.
//  - Shutdown() (and the destructor) stops accepting (Schedule() then returns UNAVAILABLE
//    "shutting down"), lets the workers drain every queued request into batches regardless of
//    delay and preferred sizes (expired ones still go to expired_fn), and joins the workers.
//    Nothing queued is lost.
//
// RECOMMENDED USE
//  One batcher per model. Set num_batch_threads to the number of batches the executor can run at
//  once (instances x streams), so the executor is never handed more than it can run. Start with
//  max_queue_delay of a few hundred microseconds and add preferred sizes only for shapes the
//  kernels are tuned for. Always set max_queue_size in production, so overload is refused early.
//  Tests of timing should use manual mode with a FakeClock: with worker threads, a FakeClock is
//  read for every decision but advancing it does not wake a worker sleeping in real time.
template <typename TaskT>
class DynamicBatcher {
 public:
  using Options = BatchingOptions;
  using Batch = std::vector<std::unique_ptr<TaskT>>;
  using ProcessBatchFn = std::function<void(Batch)>;
  using ExpiredFn = std::function<void(std::unique_ptr<TaskT>, absl::Status)>;

  // Validates `options` and the callbacks (INVALID_ARGUMENT otherwise) and starts the workers.
  // `clock` is not owned and must outlive the batcher; nullptr means the real clock.
  static absl::Status Create(const Options& options, const Clock* clock,
                             ProcessBatchFn process_batch_fn, ExpiredFn expired_fn,
                             std::unique_ptr<DynamicBatcher>* out);

  // Shutdown(): drains every queued request, then joins the workers.
  ~DynamicBatcher() { Shutdown(); }

  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  // Takes ownership of `task` (leaving it null) and returns OK, or returns an error and leaves
  // `task` untouched: UNAVAILABLE "shutting down" or "queue full", INVALID_ARGUMENT for bad rows
  // or priority, DEADLINE_EXCEEDED when the deadline has already passed.
  absl::Status Schedule(std::unique_ptr<TaskT>& task);

  // Stops accepting, drains the queue into batches and joins the workers; returns when every
  // queued request has been handed to a callback. In manual mode the draining callbacks run on the
  // calling thread. Idempotent: a later or concurrent call waits for the first to finish.
  void Shutdown();

  // Manual mode (num_batch_threads == 0) only: one worker step at the clock's current time. Hands
  // expired requests to expired_fn and at most one batch, if one is due, to process_batch_fn, on
  // the calling thread. Returns the number of requests handed over. Does nothing and returns 0
  // when worker threads run.
  size_t RunOnce();

  size_t NumQueuedTasks() const;
  int64_t NumQueuedRows() const;
  // Requests Schedule() would still accept: the room left under max_queue_size (SIZE_MAX when
  // unlimited), or 0 once shutting down.
  size_t SchedulingCapacity() const;
  // See BatchQueue::NextWakeup().
  absl::Time NextWakeup() const;

 private:
  using Queue = BatchQueue<TaskT>;

  DynamicBatcher(Queue queue, int num_batch_threads, const Clock* clock,
                 ProcessBatchFn process_batch_fn, ExpiredFn expired_fn);

  void WorkerLoop();
  // The deadline thread (worker mode only): answers queued requests as their deadlines pass.
  void DeadlineLoop();
  // Sleeps on `cv` until `wake` (InfiniteFuture: until signalled); `now` is the clock's time.
  void WaitUntil(absl::CondVar& cv, absl::Time wake, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands what a Poll() removed to the callbacks. Called without mu_ held.
  size_t Deliver(typename Queue::PollResult result);

  const int num_batch_threads_;
  const Clock* const clock_;
  const ProcessBatchFn process_batch_fn_;
  const ExpiredFn expired_fn_;

  mutable absl::Mutex mu_;
  // Signalled when a sleeping worker should look at the queue again: a batch became due or the
  // next wake-up moved earlier (Schedule), work remains after a worker took a batch, or shutdown.
  absl::CondVar work_cv_;
  // Signalled when the deadline thread should look again: the earliest deadline moved earlier
  // (Schedule), or shutdown.
  absl::CondVar deadline_cv_;
  Queue queue_ ABSL_GUARDED_BY(mu_);
  // Set once by the first Shutdown() and never cleared: from then on Schedule() refuses, and
  // workers flush the queue instead of waiting for batches to fill.
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  // Set when the first Shutdown() has drained the queue and joined the workers.
  bool shutdown_done_ ABSL_GUARDED_BY(mu_) = false;
  // Started by the constructor; joined only by the first Shutdown() caller, so no lock is needed.
  std::vector<std::thread> workers_;
  std::thread deadline_thread_;  // started with the workers, joined with them
};

// Implementation details follow.

template <typename TaskT>
absl::Status DynamicBatcher<TaskT>::Create(const Options& options, const Clock* clock,
                                           ProcessBatchFn process_batch_fn, ExpiredFn expired_fn,
                                           std::unique_ptr<DynamicBatcher>* out) {
  if (out == nullptr) return absl::InvalidArgumentError("DynamicBatcher::Create: out is null");
  // Both callbacks are required: a request dropped without an answer would leave its client
  // hanging until its own deadline.
  if (!process_batch_fn) return absl::InvalidArgumentError("process_batch_fn must be set");
  if (!expired_fn) return absl::InvalidArgumentError("expired_fn must be set");
  absl::StatusOr<Queue> queue = Queue::Create(options);
  if (!queue.ok()) return queue.status();
  out->reset(new DynamicBatcher(std::move(*queue), options.num_batch_threads,
                                clock != nullptr ? clock : RealClock::Get(),
                                std::move(process_batch_fn), std::move(expired_fn)));
  return absl::OkStatus();
}

template <typename TaskT>
DynamicBatcher<TaskT>::DynamicBatcher(Queue queue, int num_batch_threads, const Clock* clock,
                                      ProcessBatchFn process_batch_fn, ExpiredFn expired_fn)
    : num_batch_threads_(num_batch_threads),
      clock_(clock),
      process_batch_fn_(std::move(process_batch_fn)),
      expired_fn_(std::move(expired_fn)),
      queue_(std::move(queue)) {
  // Every member is initialized before the first worker can touch one.
  workers_.reserve(static_cast<size_t>(num_batch_threads_));
  for (int i = 0; i < num_batch_threads_; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  if (num_batch_threads_ > 0) deadline_thread_ = std::thread([this] { DeadlineLoop(); });
}

template <typename TaskT>
absl::Status DynamicBatcher<TaskT>::Schedule(std::unique_ptr<TaskT>& task) {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return absl::UnavailableError("batcher is shutting down");
  const absl::Time now = clock_->Now();
  const absl::Time wake_before = queue_.NextWakeup();
  const absl::Time deadline_before = queue_.EarliestDeadline();
  if (absl::Status s = queue_.Enqueue(task, now); !s.ok()) return s;
  // A sleeping worker already wakes at wake_before; disturb one only if it must act sooner. Under
  // load with a queue delay this skips a context switch for most requests.
  if (queue_.ShouldDispatch(now) || queue_.NextWakeup() < wake_before) work_cv_.Signal();
  // Likewise the deadline thread, only for a deadline earlier than every queued one.
  if (queue_.EarliestDeadline() < deadline_before) deadline_cv_.Signal();
  return absl::OkStatus();
}

template <typename TaskT>
void DynamicBatcher<TaskT>::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      mu_.Await(absl::Condition(&shutdown_done_));
      return;
    }
    shutting_down_ = true;
    work_cv_.SignalAll();
    deadline_cv_.SignalAll();
  }
  if (num_batch_threads_ == 0) {
    // Manual mode: no worker will drain the queue, so this thread does.
    for (;;) {
      typename Queue::PollResult result;
      {
        absl::MutexLock lock(&mu_);
        if (queue_.empty()) break;
        result = queue_.Poll(clock_->Now(), /*flush=*/true);
      }
      Deliver(std::move(result));
    }
  }
  for (std::thread& worker : workers_) worker.join();
  if (deadline_thread_.joinable()) deadline_thread_.join();
  absl::MutexLock lock(&mu_);
  shutdown_done_ = true;
}

template <typename TaskT>
size_t DynamicBatcher<TaskT>::RunOnce() {
  if (num_batch_threads_ != 0) return 0;
  typename Queue::PollResult result;
  {
    absl::MutexLock lock(&mu_);
    result = queue_.Poll(clock_->Now());
  }
  return Deliver(std::move(result));
}

template <typename TaskT>
void DynamicBatcher<TaskT>::WorkerLoop() {
  mu_.Lock();
  for (;;) {
    const absl::Time now = clock_->Now();
    // While shutting down, flush: form batches from whatever is queued, without waiting.
    typename Queue::PollResult result = queue_.Poll(now, /*flush=*/shutting_down_);
    if (!result.batch.empty() || !result.expired.empty()) {
      // More may be due already (say, a second full batch): let an idle peer look.
      if (!queue_.empty()) work_cv_.Signal();
      mu_.Unlock();
      Deliver(std::move(result));
      mu_.Lock();
      continue;
    }
    // Poll() with flush takes a batch whenever the queue is not empty, so here it is empty.
    if (shutting_down_) break;
    // Poll() left nothing due at `now`, so the wake-up lies after it and this cannot spin.
    WaitUntil(work_cv_, queue_.NextWakeup(), now);
  }
  mu_.Unlock();
}

template <typename TaskT>
void DynamicBatcher<TaskT>::DeadlineLoop() {
  mu_.Lock();
  // At shutdown the workers flush the queue, expiring what is due on the way: this thread stops.
  while (!shutting_down_) {
    const absl::Time now = clock_->Now();
    typename Queue::PollResult result;
    result.expired = queue_.TakeExpired(now);
    if (!result.expired.empty()) {
      // Fewer queued rows can complete a preferred batch size: let a sleeping worker look.
      if (queue_.ShouldDispatch(now)) work_cv_.Signal();
      mu_.Unlock();
      Deliver(std::move(result));
      mu_.Lock();
      continue;
    }
    // TakeExpired() left every deadline after `now`, so this cannot spin.
    WaitUntil(deadline_cv_, queue_.EarliestDeadline(), now);
  }
  mu_.Unlock();
}

template <typename TaskT>
void DynamicBatcher<TaskT>::WaitUntil(absl::CondVar& cv, absl::Time wake, absl::Time now) {
  if (wake == absl::InfiniteFuture()) {
    cv.Wait(&mu_);
  } else {
    // The wake-up time is on the injected clock; the wait is in real time. With RealClock the two
    // agree.
    cv.WaitWithTimeout(&mu_, wake - now);
  }
}

template <typename TaskT>
size_t DynamicBatcher<TaskT>::Deliver(typename Queue::PollResult result) {
  const size_t handed = result.expired.size() + result.batch.size();
  for (typename Queue::Expired& e : result.expired) {
    expired_fn_(std::move(e.task), std::move(e.status));
  }
  if (!result.batch.empty()) process_batch_fn_(std::move(result.batch));
  return handed;
}

template <typename TaskT>
size_t DynamicBatcher<TaskT>::NumQueuedTasks() const {
  absl::MutexLock lock(&mu_);
  return queue_.NumQueuedTasks();
}

template <typename TaskT>
int64_t DynamicBatcher<TaskT>::NumQueuedRows() const {
  absl::MutexLock lock(&mu_);
  return queue_.NumQueuedRows();
}

template <typename TaskT>
size_t DynamicBatcher<TaskT>::SchedulingCapacity() const {
  absl::MutexLock lock(&mu_);
  return shutting_down_ ? 0 : queue_.SchedulingCapacity();
}

template <typename TaskT>
absl::Time DynamicBatcher<TaskT>::NextWakeup() const {
  absl::MutexLock lock(&mu_);
  return queue_.NextWakeup();
}

}  // namespace fp8serve
