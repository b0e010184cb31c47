// BatchQueue: the batching policy of fp8serve as a plain, single-threaded data structure.
//
// It holds queued requests and answers one question, "given the time now, which requests (if any)
// leave as a batch, and which have expired?". It owns no threads, never sleeps and never reads a
// clock: time is an argument. DynamicBatcher wraps it with a mutex and worker threads; tests drive
// it directly and check every rule exactly.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace fp8serve {

// The most priority levels a queue takes. Every level costs a queue even when empty, so a config
// asking for millions would exhaust memory at load; real deployments use a handful.
inline constexpr int kMaxPriorityLevels = 1024;

// Batching configuration, shared by BatchQueue and DynamicBatcher. It mirrors the
// `dynamic_batching` block of a Triton model config (plus the model's max_batch_size), so that a
// config.pbtxt maps onto it field by field.
struct BatchingOptions {
  // The most rows one batch may hold (Triton: max_batch_size). A request is never split across
  // batches, so a request with more rows than this is rejected. Must be >= 1.
  int max_batch_size = 8;

  // How long the oldest queued request may wait for more requests to fill its batch (Triton:
  // max_queue_delay_microseconds). Zero dispatches as soon as a worker is free; batches then grow
  // only under load, while every worker is busy. Must be finite and >= 0.
  absl::Duration max_queue_delay = absl::ZeroDuration();

  // Batch sizes, in rows, that the backend runs best (Triton: preferred_batch_size). When whole
  // requests taken in dispatch order add up to exactly one of these, the batch leaves at once
  // without waiting for max_queue_delay; the largest reachable size wins. max_batch_size always
  // counts as preferred, since a full batch is never worth waiting on. Each must be in
  // [1, max_batch_size], without duplicates. Empty: only full batches and the delay dispatch.
  std::vector<int> preferred_batch_sizes;

  // Number of priority levels (Triton: priority_levels). Level 1 is served first. Must be in
  // [1, kMaxPriorityLevels]: each level is a queue of its own, made up front.
  int priority_levels = 1;

  // The level of a request whose priority() is 0 (Triton: default_priority_level). Must be in
  // [1, priority_levels].
  int default_priority_level = 1;

  // The most requests that may wait in the queue (Triton: default_queue_policy.max_queue_size).
  // Beyond it Schedule() answers UNAVAILABLE "queue full", so that overload sheds requests instead
  // of growing latency without bound. 0 means unlimited.
  size_t max_queue_size = 0;

  // DynamicBatcher only (BatchQueue ignores it): worker threads, each of which forms a batch when
  // it is free and runs the process callback on it synchronously, so at most this many batches are
  // in flight. 0 is manual mode: no threads; the owner drives the batcher with RunOnce(). Must be
  // >= 0.
  int num_batch_threads = 1;
};

// OK, or INVALID_ARGUMENT naming the offending field and value.
absl::Status ValidateBatchingOptions(const BatchingOptions& options);

// The status given to a request whose deadline passed while it was still queued: DEADLINE_EXCEEDED,
// "request timed out in the queue after N us".
absl::Status QueueTimeoutError(absl::Duration waited);

// BatchQueue<TaskT> — the batching decisions, with no threads and no clock.
//
// TaskT must provide:
//   int rows() const;              // rows this request adds to a batch, >= 1
//   int priority() const;          // 1..priority_levels, or 0 for default_priority_level
//   absl::Time deadline() const;   // absl::InfiniteFuture() when the request has none
// These are read once, at Enqueue(); later changes to the task are not seen.
//
// PARAMETERS: see BatchingOptions. num_batch_threads is ignored here.
//
// BEHAVIOR
//  - Order: tasks are served by priority level (1 first), first in first out within a level.
//  - Formation: a batch takes whole tasks in that order while the total stays <= max_batch_size,
//    and stops at the first task that does not fit. It never reaches past that task for a smaller
//    one: that would starve large requests. If some prefix adds up to a preferred size (or to
//    max_batch_size), the batch is the longest such prefix; otherwise it is the longest prefix that
//    fits.
//  - Dispatch: a batch is due at `now` when the queued rows reach max_batch_size, or a prefix adds
//    up to a preferred size, or the oldest task (by enqueue time, over all levels) has waited
//    max_queue_delay. Otherwise nothing leaves until NextWakeup().
//  - Expiry: a task whose deadline is <= now is removed by the next Poll() and returned with
//    QueueTimeoutError(); it is never put in a batch. Poll() removes expired tasks before it forms
//    a batch, so "expired" always wins over "batched" at the same instant.
//  - Admission: Enqueue() checks everything and either takes the task or leaves it with the caller:
//    INVALID_ARGUMENT for a null task, rows outside [1, max_batch_size] or a priority outside
//    [0, priority_levels]; DEADLINE_EXCEEDED when the deadline has already passed; UNAVAILABLE
//    "queue full" at max_queue_size.
//
// RECOMMENDED USE
//  Use DynamicBatcher, which owns one of these behind a mutex. Use BatchQueue directly for tests of
//  the policy, or to embed the policy in another event loop: call Enqueue() as requests arrive and
//  Poll(now) whenever a consumer is free or NextWakeup() has come.
//
// Not thread-safe: callers serialize all access.
template <typename TaskT>
class BatchQueue {
 public:
  using Options = BatchingOptions;

  // A task that left the queue because its deadline passed, with the status to answer it with.
  struct Expired {
    std::unique_ptr<TaskT> task;
    absl::Status status;
  };

  // What one Poll() removed from the queue. Both may be empty.
  struct PollResult {
    std::vector<Expired> expired;               // in dispatch order
    std::vector<std::unique_ptr<TaskT>> batch;  // in dispatch order; total rows <= max_batch_size
  };

  // Validates `options` (ValidateBatchingOptions) and returns an empty queue.
  static absl::StatusOr<BatchQueue> Create(const Options& options);

  BatchQueue(BatchQueue&&) = default;
  BatchQueue& operator=(BatchQueue&&) = default;

  // Takes ownership of `task` (leaving it null) and returns OK, or returns an error and leaves
  // `task` untouched; see "Admission" above. `now` is the task's enqueue time.
  absl::Status Enqueue(std::unique_ptr<TaskT>& task, absl::Time now);

  // One scheduling step: removes every task whose deadline is <= now, then, if a batch is due at
  // `now` (or `flush` is set, as when draining at shutdown, and the queue is not empty), removes
  // and returns the next batch.
  PollResult Poll(absl::Time now, bool flush = false);

  // Whether Poll(now) would form a batch from the tasks queued now. Expired tasks still queued
  // count, since only Poll() and TakeExpired() remove them.
  bool ShouldDispatch(absl::Time now) const;

  // Removes and returns every task whose deadline is <= now, as Poll(now) would, without forming a
  // batch: for a watcher that answers expired requests while every consumer is busy.
  std::vector<Expired> TakeExpired(absl::Time now) { return RemoveExpired(now); }

  // The earliest deadline of a queued task; InfiniteFuture() when no queued task has one.
  absl::Time EarliestDeadline() const { return deadlines_.empty() ? absl::InfiniteFuture() : *deadlines_.begin(); }

  // When the decision can next change without a new Enqueue(): the oldest task's enqueue time plus
  // max_queue_delay, or the earliest deadline, whichever comes first. InfiniteFuture() when empty.
  // It can lie in the past when a batch is already due.
  absl::Time NextWakeup() const;

  size_t NumQueuedTasks() const { return num_tasks_; }
  int64_t NumQueuedRows() const { return num_rows_; }
  bool empty() const { return num_tasks_ == 0; }
  // How many more tasks Enqueue() would accept before "queue full"; SIZE_MAX when unlimited.
  size_t SchedulingCapacity() const;

 private:
  struct Entry {
    std::unique_ptr<TaskT> task;
    int rows;  // task->rows(), read once: it is summed on every decision
    absl::Time enqueue_time;
    absl::Time deadline;  // InfiniteFuture() when none
  };

  // The batch that would leave now, as a number of tasks from the front in dispatch order.
  struct Plan {
    size_t fit_tasks = 0;        // the longest prefix that fits in max_batch_size
    size_t preferred_tasks = 0;  // the longest prefix that adds up to a preferred size; 0 if none
  };

  explicit BatchQueue(const Options& options);

  Plan MakePlan() const;
  bool Due(const Plan& plan, absl::Time now) const;
  absl::Time OldestEnqueueTime() const;  // requires !empty()
  std::vector<Expired> RemoveExpired(absl::Time now);
  std::vector<std::unique_ptr<TaskT>> TakeFront(size_t n);
  void Unaccount(const Entry& e);

  Options options_;
  // is_preferred_[r] is true when a batch of r rows is a preferred size. Size max_batch_size + 1;
  // is_preferred_[max_batch_size] is always true.
  std::vector<bool> is_preferred_;

  // levels_[i] holds the tasks of priority level i + 1, oldest first. Since each level is FIFO,
  // the oldest task overall is at the front of some level.
  std::vector<std::deque<Entry>> levels_;
  // Invariants: num_tasks_ and num_rows_ are the count and row sum of every Entry in levels_, and
  // deadlines_ holds the deadline of each of those entries whose deadline is finite. deadlines_
  // makes NextWakeup() and the common "nothing has expired" case of Poll() cheap.
  size_t num_tasks_ = 0;
  int64_t num_rows_ = 0;
  std::multiset<absl::Time> deadlines_;
};

// Implementation details follow.

template <typename TaskT>
absl::StatusOr<BatchQueue<TaskT>> BatchQueue<TaskT>::Create(const Options& options) {
  if (absl::Status s = ValidateBatchingOptions(options); !s.ok()) return s;
  return BatchQueue(options);
}

template <typename TaskT>
BatchQueue<TaskT>::BatchQueue(const Options& options)
    : options_(options),
      is_preferred_(static_cast<size_t>(options.max_batch_size) + 1, false),
      levels_(static_cast<size_t>(options.priority_levels)) {
  for (int size : options_.preferred_batch_sizes) is_preferred_[size] = true;
  is_preferred_[options_.max_batch_size] = true;
}

template <typename TaskT>
absl::Status BatchQueue<TaskT>::Enqueue(std::unique_ptr<TaskT>& task, absl::Time now) {
  if (task == nullptr) return absl::InvalidArgumentError("cannot schedule a null request");
  const int rows = task->rows();
  if (rows < 1 || rows > options_.max_batch_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request has ", rows,
        " rows; it must have between 1 and max_batch_size = ", options_.max_batch_size));
  }
  const int priority = task->priority();
  if (priority < 0 || priority > options_.priority_levels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request priority ", priority, " is out of range: the model has ", options_.priority_levels,
        " priority level(s), and 0 selects the default level ", options_.default_priority_level));
  }
  const absl::Time deadline = task->deadline();
  if (deadline <= now) {
    return absl::DeadlineExceededError("request deadline passed before it was queued");
  }
  if (options_.max_queue_size != 0 && num_tasks_ >= options_.max_queue_size) {
    return absl::UnavailableError(
        absl::StrCat("queue full: ", num_tasks_, " requests are queued (max_queue_size)"));
  }

  const int level = priority == 0 ? options_.default_priority_level : priority;
  levels_[static_cast<size_t>(level - 1)].push_back(Entry{std::move(task), rows, now, deadline});
  ++num_tasks_;
  num_rows_ += rows;
  if (deadline != absl::InfiniteFuture()) deadlines_.insert(deadline);
  return absl::OkStatus();
}

template <typename TaskT>
typename BatchQueue<TaskT>::PollResult BatchQueue<TaskT>::Poll(absl::Time now, bool flush) {
  PollResult result;
  result.expired = RemoveExpired(now);
  if (empty()) return result;
  const Plan plan = MakePlan();
  if (flush || Due(plan, now)) {
    result.batch = TakeFront(plan.preferred_tasks > 0 ? plan.preferred_tasks : plan.fit_tasks);
  }
  return result;
}

template <typename TaskT>
bool BatchQueue<TaskT>::ShouldDispatch(absl::Time now) const {
  return !empty() && Due(MakePlan(), now);
}

template <typename TaskT>
absl::Time BatchQueue<TaskT>::NextWakeup() const {
  if (empty()) return absl::InfiniteFuture();
  absl::Time wake = OldestEnqueueTime() + options_.max_queue_delay;
  if (!deadlines_.empty()) wake = std::min(wake, *deadlines_.begin());
  return wake;
}

template <typename TaskT>
size_t BatchQueue<TaskT>::SchedulingCapacity() const {
  if (options_.max_queue_size == 0) return std::numeric_limits<size_t>::max();
  return options_.max_queue_size > num_tasks_ ? options_.max_queue_size - num_tasks_ : 0;
}

template <typename TaskT>
typename BatchQueue<TaskT>::Plan BatchQueue<TaskT>::MakePlan() const {
  // Every task has at least one row, so this visits at most max_batch_size + 1 tasks however long
  // the queue is.
  Plan plan;
  int rows = 0;
  for (const std::deque<Entry>& level : levels_) {
    for (const Entry& e : level) {
      if (rows + e.rows > options_.max_batch_size) return plan;  // FIFO: never skip past it
      rows += e.rows;
      ++plan.fit_tasks;
      if (is_preferred_[static_cast<size_t>(rows)]) plan.preferred_tasks = plan.fit_tasks;
    }
  }
  return plan;
}

template <typename TaskT>
bool BatchQueue<TaskT>::Due(const Plan& plan, absl::Time now) const {
  // A full batch, or as full as FIFO order allows: waiting cannot make it bigger.
  if (num_rows_ >= options_.max_batch_size) return true;
  if (plan.preferred_tasks > 0) return true;
  return OldestEnqueueTime() + options_.max_queue_delay <= now;
}

template <typename TaskT>
absl::Time BatchQueue<TaskT>::OldestEnqueueTime() const {
  absl::Time oldest = absl::InfiniteFuture();
  for (const std::deque<Entry>& level : levels_) {
    if (!level.empty()) oldest = std::min(oldest, level.front().enqueue_time);
  }
  return oldest;
}

template <typename TaskT>
std::vector<typename BatchQueue<TaskT>::Expired> BatchQueue<TaskT>::RemoveExpired(absl::Time now) {
  std::vector<Expired> expired;
  if (deadlines_.empty() || *deadlines_.begin() > now) return expired;  // the common case
  for (std::deque<Entry>& level : levels_) {
    std::deque<Entry> kept;
    for (Entry& e : level) {
      if (e.deadline <= now) {
        Unaccount(e);
        expired.push_back(Expired{std::move(e.task), QueueTimeoutError(now - e.enqueue_time)});
      } else {
        kept.push_back(std::move(e));
      }
    }
    level.swap(kept);
  }
  return expired;
}

template <typename TaskT>
std::vector<std::unique_ptr<TaskT>> BatchQueue<TaskT>::TakeFront(size_t n) {
  std::vector<std::unique_ptr<TaskT>> batch;
  batch.reserve(n);
  for (std::deque<Entry>& level : levels_) {
    while (batch.size() < n && !level.empty()) {
      Unaccount(level.front());
      batch.push_back(std::move(level.front().task));
      level.pop_front();
    }
  }
  return batch;
}

template <typename TaskT>
void BatchQueue<TaskT>::Unaccount(const Entry& e) {
  --num_tasks_;
  num_rows_ -= e.rows;
  if (e.deadline != absl::InfiniteFuture()) deadlines_.erase(deadlines_.find(e.deadline));
}

}  // namespace fp8serve
