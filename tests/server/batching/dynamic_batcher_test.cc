// Tests for server/batching: BatchQueue's policy and DynamicBatcher in manual mode run on a
// FakeClock, so every timing rule is checked exactly with no sleeps. Threaded tests on the real
// clock check the concurrency: nothing lost or duplicated, batches bounded, batches grow under
// load, idle workers wake in time, and deadlines are answered while every worker is busy.
#include "server/batching/dynamic_batcher.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/batching/batch_queue.h"
#include "server/batching/clock.h"

namespace fp8serve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

struct TestTask {
  int id = 0;
  int num_rows = 1;
  int prio = 0;
  absl::Time dl = absl::InfiniteFuture();

  int rows() const { return num_rows; }
  int priority() const { return prio; }
  absl::Time deadline() const { return dl; }
};

std::unique_ptr<TestTask> Task(int id, int rows = 1, int priority = 0,
                               absl::Time deadline = absl::InfiniteFuture()) {
  return std::make_unique<TestTask>(TestTask{id, rows, priority, deadline});
}

std::vector<int> Ids(const std::vector<std::unique_ptr<TestTask>>& tasks) {
  std::vector<int> ids;
  for (const auto& t : tasks) ids.push_back(t->id);
  return ids;
}

BatchingOptions Opts(int max_batch_size, absl::Duration delay) {
  BatchingOptions o;
  o.max_batch_size = max_batch_size;
  o.max_queue_delay = delay;
  o.num_batch_threads = 0;
  return o;
}

BatchQueue<TestTask> MakeQueue(const BatchingOptions& options) {
  absl::StatusOr<BatchQueue<TestTask>> q = BatchQueue<TestTask>::Create(options);
  EXPECT_TRUE(q.ok()) << q.status();
  return std::move(*q);
}

// An Enqueue() that must succeed.
void Push(BatchQueue<TestTask>& q, std::unique_ptr<TestTask> task, absl::Time now) {
  ASSERT_TRUE(q.Enqueue(task, now).ok());
}

const absl::Time kT0 = absl::FromUnixSeconds(1'000'000'000);

// ---------------------------------------------------------------------------------------------
// BatchQueue: the policy, with time passed in.

TEST(BatchQueueTest, FullBatchDispatchesImmediately) {
  BatchQueue<TestTask> q = MakeQueue(Opts(4, absl::Seconds(1)));
  Push(q, Task(0, 2), kT0);
  EXPECT_FALSE(q.ShouldDispatch(kT0));
  Push(q, Task(1, 2), kT0);
  EXPECT_TRUE(q.ShouldDispatch(kT0));
  auto r = q.Poll(kT0);
  EXPECT_THAT(Ids(r.batch), ElementsAre(0, 1));
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.NumQueuedRows(), 0);
}

TEST(BatchQueueTest, PreferredSizeDispatchesImmediatelyLargestFirst) {
  BatchingOptions o = Opts(8, absl::Seconds(1));
  o.preferred_batch_sizes = {4, 6};
  BatchQueue<TestTask> q = MakeQueue(o);
  Push(q, Task(0, 3), kT0);
  EXPECT_FALSE(q.ShouldDispatch(kT0));
  EXPECT_THAT(q.Poll(kT0).batch, IsEmpty());
  Push(q, Task(1, 1), kT0);  // 3 + 1 = 4, a preferred size
  EXPECT_TRUE(q.ShouldDispatch(kT0));
  EXPECT_THAT(Ids(q.Poll(kT0).batch), ElementsAre(0, 1));

  // The prefixes that fit are 2, 4 and 6 rows (2+2+2+3 = 9 > 8); 4 and 6 are preferred: take 6.
  Push(q, Task(2, 2), kT0);
  Push(q, Task(3, 2), kT0);
  Push(q, Task(4, 2), kT0);
  Push(q, Task(5, 3), kT0);
  EXPECT_THAT(Ids(q.Poll(kT0).batch), ElementsAre(2, 3, 4));
  EXPECT_EQ(q.NumQueuedRows(), 3);
}

TEST(BatchQueueTest, TaskThatWouldOverflowStaysForNextBatchInOrder) {
  BatchQueue<TestTask> q = MakeQueue(Opts(8, absl::ZeroDuration()));
  Push(q, Task(0, 5), kT0);
  Push(q, Task(1, 4), kT0);
  Push(q, Task(2, 1), kT0);  // would fit after 0, but must not overtake 1
  EXPECT_THAT(Ids(q.Poll(kT0).batch), ElementsAre(0));
  EXPECT_THAT(Ids(q.Poll(kT0).batch), ElementsAre(1, 2));
  EXPECT_TRUE(q.empty());
}

TEST(BatchQueueTest, PrioritiesLevelOneFirstFifoWithinLevel) {
  BatchingOptions o = Opts(100, absl::Milliseconds(1));
  o.priority_levels = 3;
  o.default_priority_level = 2;
  BatchQueue<TestTask> q = MakeQueue(o);
  // The oldest task is on the lowest level: its wait still starts the delay for everyone.
  Push(q, Task(0, 1, 3), kT0);
  Push(q, Task(1, 1, 2), kT0 + absl::Microseconds(100));
  Push(q, Task(2, 1, 0), kT0 + absl::Microseconds(200));  // default level 2
  Push(q, Task(3, 1, 1), kT0 + absl::Microseconds(300));
  Push(q, Task(4, 1, 1), kT0 + absl::Microseconds(400));
  EXPECT_EQ(q.NextWakeup(), kT0 + absl::Milliseconds(1));
  EXPECT_FALSE(q.ShouldDispatch(kT0 + absl::Microseconds(999)));
  EXPECT_TRUE(q.ShouldDispatch(kT0 + absl::Milliseconds(1)));
  EXPECT_THAT(Ids(q.Poll(kT0 + absl::Milliseconds(1)).batch), ElementsAre(3, 4, 1, 2, 0));
}

TEST(BatchQueueTest, HigherLevelTasksFillTheBatchFirst) {
  BatchingOptions o = Opts(4, absl::ZeroDuration());
  o.priority_levels = 2;
  BatchQueue<TestTask> q = MakeQueue(o);
  Push(q, Task(0, 3, 2), kT0);
  Push(q, Task(1, 2, 1), kT0);
  Push(q, Task(2, 2, 1), kT0);
  EXPECT_THAT(Ids(q.Poll(kT0).batch), ElementsAre(1, 2));
  EXPECT_THAT(Ids(q.Poll(kT0).batch), ElementsAre(0));
}

TEST(BatchQueueTest, AdmissionErrorsLeaveTheTaskWithTheCaller) {
  BatchingOptions o = Opts(8, absl::Seconds(1));
  o.priority_levels = 3;
  o.max_queue_size = 2;
  BatchQueue<TestTask> q = MakeQueue(o);

  std::unique_ptr<TestTask> too_big = Task(10, 9);
  absl::Status s = q.Enqueue(too_big, kT0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("max_batch_size = 8"));
  ASSERT_NE(too_big, nullptr);

  std::unique_ptr<TestTask> empty = Task(11, 0);
  EXPECT_EQ(q.Enqueue(empty, kT0).code(), absl::StatusCode::kInvalidArgument);

  for (int bad : {4, -1}) {
    std::unique_ptr<TestTask> bad_priority = Task(12, 1, bad);
    s = q.Enqueue(bad_priority, kT0);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.message()), HasSubstr("priority"));
    ASSERT_NE(bad_priority, nullptr);
  }

  std::unique_ptr<TestTask> late = Task(13, 1, 0, kT0);
  EXPECT_EQ(q.Enqueue(late, kT0).code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_NE(late, nullptr);

  std::unique_ptr<TestTask> null_task;
  EXPECT_EQ(q.Enqueue(null_task, kT0).code(), absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(q.NumQueuedTasks(), 0u);
  EXPECT_EQ(q.SchedulingCapacity(), 2u);
}

TEST(BatchQueueTest, NextWakeupIsEarlierOfDelayAndDeadline) {
  BatchQueue<TestTask> q = MakeQueue(Opts(8, absl::Milliseconds(10)));
  EXPECT_EQ(q.NextWakeup(), absl::InfiniteFuture());
  Push(q, Task(0, 1), kT0);
  EXPECT_EQ(q.NextWakeup(), kT0 + absl::Milliseconds(10));
  Push(q, Task(1, 1, 0, kT0 + absl::Milliseconds(3)), kT0 + absl::Milliseconds(1));
  EXPECT_EQ(q.NextWakeup(), kT0 + absl::Milliseconds(3));
}

TEST(BatchQueueTest, ExpiredTaskIsRemovedBeforeABatchIsFormed) {
  BatchQueue<TestTask> q = MakeQueue(Opts(4, absl::Seconds(1)));
  Push(q, Task(0, 2, 0, kT0 + absl::Milliseconds(1)), kT0);
  Push(q, Task(1, 2), kT0);  // the queue is full: a batch is due right away
  auto r = q.Poll(kT0 + absl::Milliseconds(1));  // ... but task 0 expires at this very instant
  ASSERT_EQ(r.expired.size(), 1u);
  EXPECT_EQ(r.expired[0].task->id, 0);
  EXPECT_EQ(r.expired[0].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(r.batch, IsEmpty());  // 2 rows of 4, and the delay has not passed
  EXPECT_EQ(q.NumQueuedRows(), 2);
}

// ---------------------------------------------------------------------------------------------
// DynamicBatcher in manual mode on a FakeClock.

// Records what the callbacks received. Thread-safe so the threaded tests can share it.
struct Recorder {
  absl::Mutex mu;
  std::vector<std::vector<int>> batches ABSL_GUARDED_BY(mu);
  std::vector<std::pair<int, absl::Status>> expired ABSL_GUARDED_BY(mu);

  DynamicBatcher<TestTask>::ProcessBatchFn ProcessFn() {
    return [this](DynamicBatcher<TestTask>::Batch batch) {
      absl::MutexLock lock(&mu);
      batches.push_back(Ids(batch));
    };
  }
  DynamicBatcher<TestTask>::ExpiredFn ExpiredFn() {
    return [this](std::unique_ptr<TestTask> task, absl::Status status) {
      absl::MutexLock lock(&mu);
      expired.emplace_back(task->id, std::move(status));
    };
  }
  std::vector<std::vector<int>> Batches() {
    absl::MutexLock lock(&mu);
    return batches;
  }
};

class ManualBatcherTest : public ::testing::Test {
 protected:
  std::unique_ptr<DynamicBatcher<TestTask>> Make(const BatchingOptions& options) {
    std::unique_ptr<DynamicBatcher<TestTask>> batcher;
    absl::Status s = DynamicBatcher<TestTask>::Create(options, &clock_, recorder_.ProcessFn(),
                                                      recorder_.ExpiredFn(), &batcher);
    EXPECT_TRUE(s.ok()) << s;
    return batcher;
  }
  void Schedule(DynamicBatcher<TestTask>& b, std::unique_ptr<TestTask> task) {
    ASSERT_TRUE(b.Schedule(task).ok());
  }

  FakeClock clock_{kT0};
  Recorder recorder_;
};

TEST_F(ManualBatcherTest, FullBatchDispatchesImmediately) {
  auto b = Make(Opts(4, absl::Seconds(1)));
  Schedule(*b, Task(0, 1));
  Schedule(*b, Task(1, 3));
  EXPECT_EQ(b->RunOnce(), 2u);
  EXPECT_THAT(recorder_.Batches(), ElementsAre(ElementsAre(0, 1)));
}

TEST_F(ManualBatcherTest, BatchWaitsForTheDelayThenLeaves) {
  auto b = Make(Opts(8, absl::Milliseconds(1)));
  Schedule(*b, Task(0, 3));
  clock_.Advance(absl::Microseconds(400));
  Schedule(*b, Task(1, 2));
  EXPECT_EQ(b->RunOnce(), 0u);
  EXPECT_EQ(b->NextWakeup(), kT0 + absl::Milliseconds(1));  // the oldest task's wait sets it
  clock_.Advance(absl::Microseconds(599));
  EXPECT_EQ(b->RunOnce(), 0u);
  EXPECT_THAT(recorder_.Batches(), IsEmpty());
  clock_.Advance(absl::Microseconds(1));
  EXPECT_EQ(b->RunOnce(), 2u);
  EXPECT_THAT(recorder_.Batches(), ElementsAre(ElementsAre(0, 1)));
  EXPECT_EQ(b->NumQueuedTasks(), 0u);
}

TEST_F(ManualBatcherTest, PreferredSizeDispatchesImmediately) {
  BatchingOptions o = Opts(16, absl::Seconds(1));
  o.preferred_batch_sizes = {4};
  auto b = Make(o);
  Schedule(*b, Task(0, 1));
  Schedule(*b, Task(1, 2));
  EXPECT_EQ(b->RunOnce(), 0u);
  Schedule(*b, Task(2, 1));
  EXPECT_EQ(b->RunOnce(), 3u);
  EXPECT_THAT(recorder_.Batches(), ElementsAre(ElementsAre(0, 1, 2)));
}

TEST_F(ManualBatcherTest, OverflowingTaskStaysForTheNextBatch) {
  auto b = Make(Opts(8, absl::ZeroDuration()));
  Schedule(*b, Task(0, 6));
  Schedule(*b, Task(1, 3));
  Schedule(*b, Task(2, 2));
  EXPECT_EQ(b->NumQueuedRows(), 11);
  b->RunOnce();
  b->RunOnce();
  EXPECT_THAT(recorder_.Batches(), ElementsAre(ElementsAre(0), ElementsAre(1, 2)));
}

TEST_F(ManualBatcherTest, PrioritiesLevelOneFirstFifoWithinLevel) {
  BatchingOptions o = Opts(3, absl::ZeroDuration());
  o.priority_levels = 2;
  o.default_priority_level = 2;
  auto b = Make(o);
  Schedule(*b, Task(0, 1, 2));
  Schedule(*b, Task(1, 1, 0));  // default: level 2
  Schedule(*b, Task(2, 1, 1));
  Schedule(*b, Task(3, 1, 2));
  Schedule(*b, Task(4, 1, 1));
  b->RunOnce();
  b->RunOnce();
  EXPECT_THAT(recorder_.Batches(), ElementsAre(ElementsAre(2, 4, 0), ElementsAre(1, 3)));
}

TEST_F(ManualBatcherTest, QueueFullReturnsUnavailableAndTheTaskIntact) {
  BatchingOptions o = Opts(8, absl::Seconds(1));
  o.max_queue_size = 2;
  auto b = Make(o);
  Schedule(*b, Task(0));
  Schedule(*b, Task(1));
  EXPECT_EQ(b->SchedulingCapacity(), 0u);
  std::unique_ptr<TestTask> third = Task(2, 5, 0);
  absl::Status s = b->Schedule(third);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("queue full"));
  ASSERT_NE(third, nullptr);
  EXPECT_EQ(third->id, 2);
  EXPECT_EQ(third->num_rows, 5);
  EXPECT_EQ(b->NumQueuedTasks(), 2u);

  // Room again once a batch has left.
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(b->RunOnce(), 2u);
  EXPECT_TRUE(b->Schedule(third).ok());
  EXPECT_EQ(third, nullptr);
}

TEST_F(ManualBatcherTest, RowsAboveMaxIsInvalidArgument) {
  auto b = Make(Opts(8, absl::Seconds(1)));
  std::unique_ptr<TestTask> task = Task(0, 9);
  EXPECT_EQ(b->Schedule(task).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_NE(task, nullptr);
  EXPECT_EQ(b->NumQueuedTasks(), 0u);
}

TEST_F(ManualBatcherTest, BadPriorityIsInvalidArgument) {
  BatchingOptions o = Opts(8, absl::Seconds(1));
  o.priority_levels = 2;
  auto b = Make(o);
  std::unique_ptr<TestTask> task = Task(0, 1, 3);
  absl::Status s = b->Schedule(task);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("priority 3"));
  ASSERT_NE(task, nullptr);
}

TEST_F(ManualBatcherTest, DeadlinePassedInQueueExpiresAndIsNeverBatched) {
  auto b = Make(Opts(8, absl::Milliseconds(10)));
  Schedule(*b, Task(0, 2, 0, kT0 + absl::Milliseconds(5)));
  Schedule(*b, Task(1, 2));
  EXPECT_EQ(b->NextWakeup(), kT0 + absl::Milliseconds(5));
  clock_.Advance(absl::Milliseconds(6));
  EXPECT_EQ(b->RunOnce(), 1u);
  {
    absl::MutexLock lock(&recorder_.mu);
    ASSERT_EQ(recorder_.expired.size(), 1u);
    EXPECT_EQ(recorder_.expired[0].first, 0);
    EXPECT_EQ(recorder_.expired[0].second.code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_EQ(recorder_.expired[0].second.message(),
              "request timed out in the queue after 6000 us");
    EXPECT_THAT(recorder_.batches, IsEmpty());
  }
  EXPECT_EQ(b->NumQueuedRows(), 2);
  clock_.Advance(absl::Milliseconds(4));
  EXPECT_EQ(b->RunOnce(), 1u);
  EXPECT_THAT(recorder_.Batches(), ElementsAre(ElementsAre(1)));
}

TEST_F(ManualBatcherTest, ShutdownDrainsEverythingAndRefusesNewTasks) {
  BatchingOptions o = Opts(4, absl::Hours(1));
  o.priority_levels = 2;
  o.default_priority_level = 2;
  auto b = Make(o);
  Schedule(*b, Task(0, 3));
  Schedule(*b, Task(1, 2, 1));
  Schedule(*b, Task(2, 2));
  b->Shutdown();  // no delay has passed and nothing is full: drained anyway
  EXPECT_THAT(recorder_.Batches(), ElementsAre(ElementsAre(1), ElementsAre(0), ElementsAre(2)));
  EXPECT_EQ(b->NumQueuedTasks(), 0u);
  EXPECT_EQ(b->SchedulingCapacity(), 0u);

  std::unique_ptr<TestTask> late = Task(3);
  absl::Status s = b->Schedule(late);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("shutting down"));
  ASSERT_NE(late, nullptr);
  b->Shutdown();  // idempotent
}

TEST_F(ManualBatcherTest, DestructorDrainsTheQueue) {
  auto b = Make(Opts(8, absl::Hours(1)));
  Schedule(*b, Task(0, 1));
  Schedule(*b, Task(1, 1));
  b.reset();
  EXPECT_THAT(recorder_.Batches(), ElementsAre(ElementsAre(0, 1)));
}

TEST(DynamicBatcherCreateTest, RejectsBadOptions) {
  // Each case edits valid options into invalid ones; the error must name the field at fault.
  struct Case {
    std::string expected_message;
    std::function<void(BatchingOptions&)> edit;
  };
  const std::vector<Case> cases = {
      {"max_batch_size", [](BatchingOptions& o) { o.max_batch_size = 0; }},
      {"preferred batch size 9", [](BatchingOptions& o) { o.preferred_batch_sizes = {4, 9}; }},
      {"preferred batch size 0", [](BatchingOptions& o) { o.preferred_batch_sizes = {0}; }},
      {"more than once", [](BatchingOptions& o) { o.preferred_batch_sizes = {4, 4}; }},
      {"priority_levels", [](BatchingOptions& o) { o.priority_levels = 0; }},
      {"priority_levels must be between 1 and 1024, got 1025", [](BatchingOptions& o) { o.priority_levels = 1025; }},
      {"default_priority_level", [](BatchingOptions& o) { o.default_priority_level = 0; }},
      {"default_priority_level", [](BatchingOptions& o) { o.default_priority_level = 2; }},
      {"max_queue_delay", [](BatchingOptions& o) { o.max_queue_delay = absl::Milliseconds(-1); }},
      {"max_queue_delay", [](BatchingOptions& o) { o.max_queue_delay = absl::InfiniteDuration(); }},
      {"num_batch_threads", [](BatchingOptions& o) { o.num_batch_threads = -1; }},
  };

  Recorder recorder;
  for (const Case& c : cases) {
    BatchingOptions options = Opts(8, absl::Milliseconds(1));  // one priority level
    c.edit(options);
    std::unique_ptr<DynamicBatcher<TestTask>> b;
    absl::Status s = DynamicBatcher<TestTask>::Create(options, nullptr, recorder.ProcessFn(),
                                                      recorder.ExpiredFn(), &b);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.expected_message;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.expected_message));
    EXPECT_EQ(b, nullptr) << c.expected_message;
  }

  std::unique_ptr<DynamicBatcher<TestTask>> b;
  EXPECT_EQ(DynamicBatcher<TestTask>::Create(Opts(8, absl::ZeroDuration()), nullptr, nullptr,
                                             recorder.ExpiredFn(), &b)
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DynamicBatcher<TestTask>::Create(Opts(8, absl::ZeroDuration()), nullptr,
                                             recorder.ProcessFn(), nullptr, &b)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// DynamicBatcher with worker threads on the real clock. Sleeps here only stand in for work inside
// the callback; no assertion depends on how long anything takes.

TEST(ThreadedBatcherTest, ManyProducersEveryTaskInExactlyOneBatch) {
  constexpr int kProducers = 8;
  constexpr int kTasksPerProducer = 2000;
  constexpr int kMaxBatch = 64;
  constexpr int kWorkers = 2;

  absl::Mutex mu;
  std::vector<int> seen(kProducers * kTasksPerProducer, 0);
  int batches = 0;
  int oversized = 0;
  std::atomic<int> in_flight{0};
  std::atomic<int> max_in_flight{0};

  BatchingOptions o;
  o.max_batch_size = kMaxBatch;
  o.max_queue_delay = absl::Microseconds(200);
  o.num_batch_threads = kWorkers;
  std::unique_ptr<DynamicBatcher<TestTask>> b;
  ASSERT_TRUE(DynamicBatcher<TestTask>::Create(
                  o, nullptr,
                  [&](DynamicBatcher<TestTask>::Batch batch) {
                    const int now_in_flight = ++in_flight;
                    int prev = max_in_flight.load();
                    while (prev < now_in_flight &&
                           !max_in_flight.compare_exchange_weak(prev, now_in_flight)) {
                    }
                    int rows = 0;
                    for (const auto& t : batch) rows += t->rows();
                    {
                      absl::MutexLock lock(&mu);
                      ++batches;
                      if (rows > kMaxBatch) ++oversized;
                      for (const auto& t : batch) ++seen[static_cast<size_t>(t->id)];
                    }
                    --in_flight;
                  },
                  [](std::unique_ptr<TestTask>, absl::Status s) {
                    ADD_FAILURE() << "nothing has a deadline, yet: " << s;
                  },
                  &b)
                  .ok());

  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&b, p] {
      std::mt19937 rng(static_cast<unsigned>(p));
      std::uniform_int_distribution<int> rows(1, 8);
      for (int i = 0; i < kTasksPerProducer; ++i) {
        std::unique_ptr<TestTask> t = Task(p * kTasksPerProducer + i, rows(rng));
        const absl::Status s = b->Schedule(t);
        EXPECT_TRUE(s.ok()) << s;
      }
    });
  }
  for (std::thread& t : producers) t.join();
  b.reset();  // drains and joins

  absl::MutexLock lock(&mu);
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), static_cast<std::ptrdiff_t>(seen.size()))
      << "some task was lost or batched twice";
  EXPECT_EQ(oversized, 0);
  EXPECT_GT(batches, 0);
  EXPECT_LE(max_in_flight.load(), kWorkers);
}

TEST(ThreadedBatcherTest, BatchesGrowWhileTheOnlyWorkerIsBusy) {
  constexpr int kTasks = 200;
  absl::Mutex mu;
  std::vector<int> batch_sizes;
  std::atomic<int> in_flight{0};
  bool overlapped = false;

  BatchingOptions o;
  o.max_batch_size = 16;
  o.max_queue_delay = absl::ZeroDuration();  // would send batches of one if a worker were free
  o.num_batch_threads = 1;
  std::unique_ptr<DynamicBatcher<TestTask>> b;
  ASSERT_TRUE(DynamicBatcher<TestTask>::Create(
                  o, nullptr,
                  [&](DynamicBatcher<TestTask>::Batch batch) {
                    if (++in_flight > 1) {
                      absl::MutexLock lock(&mu);
                      overlapped = true;
                    }
                    absl::SleepFor(absl::Milliseconds(1));  // the "GPU" is busy
                    {
                      absl::MutexLock lock(&mu);
                      batch_sizes.push_back(static_cast<int>(batch.size()));
                    }
                    --in_flight;
                  },
                  [](std::unique_ptr<TestTask>, absl::Status s) { ADD_FAILURE() << s; }, &b)
                  .ok());
  for (int i = 0; i < kTasks; ++i) {
    std::unique_ptr<TestTask> t = Task(i, 1);
    ASSERT_TRUE(b->Schedule(t).ok());
  }
  b.reset();

  absl::MutexLock lock(&mu);
  int total = 0;
  for (int n : batch_sizes) {
    total += n;
    EXPECT_LE(n, 16);
  }
  EXPECT_EQ(total, kTasks);
  EXPECT_FALSE(overlapped);
  const double mean = static_cast<double>(total) / static_cast<double>(batch_sizes.size());
  EXPECT_GT(mean, 1.0) << batch_sizes.size() << " batches";
}

TEST(ThreadedBatcherTest, IdleWorkerWakesForTheDelayAndForDeadlines) {
  absl::Notification batched;
  absl::Notification expired;
  BatchingOptions o;
  o.max_batch_size = 8;
  o.max_queue_delay = absl::Milliseconds(20);
  o.num_batch_threads = 1;
  std::unique_ptr<DynamicBatcher<TestTask>> b;
  ASSERT_TRUE(DynamicBatcher<TestTask>::Create(
                  o, nullptr,
                  [&](DynamicBatcher<TestTask>::Batch batch) {
                    EXPECT_THAT(Ids(batch), ElementsAre(0));
                    batched.Notify();
                  },
                  [](std::unique_ptr<TestTask>, absl::Status s) { ADD_FAILURE() << s; }, &b)
                  .ok());
  std::unique_ptr<TestTask> t0 = Task(0, 1);
  ASSERT_TRUE(b->Schedule(t0).ok());
  // Without a shutdown to flush it, only the worker's timed wait can deliver this batch.
  EXPECT_TRUE(batched.WaitForNotificationWithTimeout(absl::Seconds(2)));

  // The delay is long; the deadline comes first and the worker must wake for it.
  o.max_queue_delay = absl::Hours(1);
  b.reset();
  ASSERT_TRUE(DynamicBatcher<TestTask>::Create(
                  o, nullptr,
                  [&](DynamicBatcher<TestTask>::Batch) { ADD_FAILURE() << "expired task batched"; },
                  [&](std::unique_ptr<TestTask> t, absl::Status s) {
                    EXPECT_EQ(t->id, 1);
                    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
                    expired.Notify();
                  },
                  &b)
                  .ok());
  std::unique_ptr<TestTask> t1 = Task(1, 1, 0, absl::Now() + absl::Milliseconds(20));
  ASSERT_TRUE(b->Schedule(t1).ok());
  EXPECT_TRUE(expired.WaitForNotificationWithTimeout(absl::Seconds(2)));
}

// The only worker is stuck in a long batch; a queued request's deadline passes meanwhile. It is
// answered DEADLINE_EXCEEDED then, by the deadline thread, not when the worker comes back; the
// request without a deadline queued beside it waits for the worker and is batched.
TEST(ThreadedBatcherTest, DeadlineIsAnsweredWhileEveryWorkerIsBusy) {
  absl::Notification first_running, release_first, expired;
  absl::Mutex mu;
  std::vector<std::vector<int>> batches;
  absl::Time expired_at;
  BatchingOptions o;
  o.max_batch_size = 4;
  o.max_queue_delay = absl::ZeroDuration();
  o.num_batch_threads = 1;
  std::unique_ptr<DynamicBatcher<TestTask>> b;
  ASSERT_TRUE(DynamicBatcher<TestTask>::Create(
                  o, nullptr,
                  [&](DynamicBatcher<TestTask>::Batch batch) {
                    {
                      absl::MutexLock lock(&mu);
                      batches.push_back(Ids(batch));
                    }
                    if (batch.front()->id == 0) {
                      first_running.Notify();
                      release_first.WaitForNotification();  // the "GPU" is busy until told
                    }
                  },
                  [&](std::unique_ptr<TestTask> t, absl::Status s) {
                    EXPECT_EQ(t->id, 1);
                    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
                    EXPECT_THAT(s.message(), HasSubstr("timed out in the queue"));
                    expired_at = absl::Now();
                    expired.Notify();
                  },
                  &b)
                  .ok());
  std::unique_ptr<TestTask> t0 = Task(0, 1);
  ASSERT_TRUE(b->Schedule(t0).ok());
  ASSERT_TRUE(first_running.WaitForNotificationWithTimeout(absl::Seconds(5)));
  const absl::Time deadline = absl::Now() + absl::Milliseconds(30);
  std::unique_ptr<TestTask> t1 = Task(1, 1, 0, deadline);
  std::unique_ptr<TestTask> t2 = Task(2, 1);
  ASSERT_TRUE(b->Schedule(t1).ok());
  ASSERT_TRUE(b->Schedule(t2).ok());
  // The worker is held until the expiry has been answered (or 5 s have passed: then it never was)
  const bool answered_while_busy = expired.WaitForNotificationWithTimeout(absl::Seconds(5));
  release_first.Notify();
  b.reset();  // drains and joins
  ASSERT_TRUE(answered_while_busy) << "the expired request waited for the busy worker";
  EXPECT_GE(expired_at, deadline);
  std::printf("answered %.1f ms after its deadline, with the only worker busy\n",
              absl::ToDoubleMilliseconds(expired_at - deadline));
  absl::MutexLock lock(&mu);
  EXPECT_THAT(batches, ElementsAre(ElementsAre(0), ElementsAre(2)));
}

}  // namespace
}  // namespace fp8serve
