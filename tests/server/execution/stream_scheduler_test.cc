// StreamScheduler on the CPU, against a fake slot device whose batches complete when the test says
// (or after a seeded number of polls). Every wait is on a condition (the fake's or the scheduler's
// state), never on a fixed sleep.
#include "server/execution/stream_scheduler.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/batching/dynamic_batcher.h"

namespace fp8serve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Waits until `done()` holds, re-checking often; fails the test after 20 s (a hang, not a timing).
void WaitUntil(const std::function<bool()>& done, const std::string& what) {
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (!done()) {
    if (absl::Now() > give_up) {
      ADD_FAILURE() << "timed out waiting for: " << what;
      return;
    }
    std::this_thread::yield();
  }
}

// A device whose slot "computes" out[i] = 10 * in[i] + 1 on the rows staged in it. The output is
// written when the batch completes, not at launch, so a slot reused before its batch was answered
// would answer with another batch's values.
class FakeDevice final : public SlotDevice {
 public:
  enum class Mode {
    kInline,  // completes inside Launch (like the CPU backend)
    kManual,  // completes at the first Poll after Release(slot)
    kRandom,  // completes after 0-3 polls (seeded)
  };

  FakeDevice(int slots, Mode mode, uint32_t seed = 1) : mode_(mode), rng_(seed), slots_(static_cast<size_t>(slots)) {}

  int num_slots() const override { return static_cast<int>(slots_.size()); }

  // Staging, written by the scheduler's fill callback while the slot is taken.
  std::vector<int64_t>& staging(int slot) { return slots_[static_cast<size_t>(slot)].in; }
  const std::vector<int64_t>& output(int slot) const { return slots_[static_cast<size_t>(slot)].out; }

  std::optional<absl::Status> Launch(int slot, int rows) override {
    absl::MutexLock lock(&mu_);
    Slot& s = slots_[static_cast<size_t>(slot)];
    if (s.busy) violations_.push_back(absl::StrCat("slot ", slot, " launched while running"));
    if (static_cast<int>(s.in.size()) != rows) violations_.push_back(absl::StrCat("slot ", slot, ": rows mismatch"));
    const int index = launches_++;
    launched_rows_.push_back(rows);
    launched_slots_.push_back(slot);
    if (fail_launch_every_ > 0 && index % fail_launch_every_ == fail_launch_every_ - 1) {
      failed_rows_ += rows;
      return absl::InternalError(absl::StrCat("injected launch failure of launch ", index));
    }
    s.busy = true;
    s.index = index;
    s.released = false;
    max_in_flight_ = std::max(max_in_flight_, ++in_flight_);
    if (mode_ == Mode::kInline) return FinishLocked(s);
    s.polls_left = mode_ == Mode::kRandom ? static_cast<int>(rng_() % 4) : 0;
    return std::nullopt;
  }

  std::optional<absl::Status> Poll(int slot) override {
    absl::MutexLock lock(&mu_);
    Slot& s = slots_[static_cast<size_t>(slot)];
    ++polls_;
    if (!s.busy) {
      violations_.push_back(absl::StrCat("slot ", slot, " polled while idle"));
      return absl::InternalError("polled while idle");
    }
    if (mode_ == Mode::kManual && !s.released) return std::nullopt;
    if (mode_ == Mode::kRandom && s.polls_left-- > 0) return std::nullopt;
    return FinishLocked(s);
  }

  // kManual: the slot's batch completes at its next poll.
  void Release(int slot) {
    absl::MutexLock lock(&mu_);
    slots_[static_cast<size_t>(slot)].released = true;
  }
  // Launch k fails inside Launch when k % n == n - 1; its batch completes at Poll with an error when
  // k % m == m - 1 (0: never).
  void FailEvery(int launch_n, int complete_m) {
    absl::MutexLock lock(&mu_);
    fail_launch_every_ = launch_n;
    fail_complete_every_ = complete_m;
  }

  void AwaitLaunches(int n) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return launches_ >= n; };
    mu_.Await(absl::Condition(&reached));
  }
  int launches() const {
    absl::MutexLock lock(&mu_);
    return launches_;
  }
  std::vector<int> launched_rows() const {
    absl::MutexLock lock(&mu_);
    return launched_rows_;
  }
  std::vector<int> launched_slots() const {
    absl::MutexLock lock(&mu_);
    return launched_slots_;
  }
  int max_in_flight() const {
    absl::MutexLock lock(&mu_);
    return max_in_flight_;
  }
  int in_flight() const {
    absl::MutexLock lock(&mu_);
    return in_flight_;
  }
  int64_t polls() const {
    absl::MutexLock lock(&mu_);
    return polls_;
  }
  int64_t failed_rows() const {
    absl::MutexLock lock(&mu_);
    return failed_rows_;
  }
  std::vector<std::string> violations() const {
    absl::MutexLock lock(&mu_);
    return violations_;
  }

 private:
  struct Slot {
    std::vector<int64_t> in, out;
    bool busy = false, released = false;
    int polls_left = 0;
    int index = -1;
  };

  absl::Status FinishLocked(Slot& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    s.busy = false;
    --in_flight_;
    if (fail_complete_every_ > 0 && s.index % fail_complete_every_ == fail_complete_every_ - 1) {
      failed_rows_ += static_cast<int64_t>(s.in.size());
      return absl::InternalError(absl::StrCat("injected failure of launch ", s.index));
    }
    s.out.resize(s.in.size());
    for (size_t i = 0; i < s.in.size(); ++i) s.out[i] = 10 * s.in[i] + 1;
    return absl::OkStatus();
  }

  const Mode mode_;
  mutable absl::Mutex mu_;
  std::mt19937 rng_ ABSL_GUARDED_BY(mu_);
  std::vector<Slot> slots_;  // in/out: see staging(); the rest under mu_
  int launches_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int> launched_rows_ ABSL_GUARDED_BY(mu_), launched_slots_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0, max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t polls_ ABSL_GUARDED_BY(mu_) = 0, failed_rows_ ABSL_GUARDED_BY(mu_) = 0;
  int fail_launch_every_ ABSL_GUARDED_BY(mu_) = 0, fail_complete_every_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> violations_ ABSL_GUARDED_BY(mu_);
};

std::unique_ptr<StreamScheduler> MakeScheduler(FakeDevice& device, int workers) {
  std::unique_ptr<StreamScheduler> s;
  StreamScheduler::Options o;
  o.num_workers = workers;
  const absl::Status st = StreamScheduler::Create(o, &device, &s);
  EXPECT_TRUE(st.ok()) << st;
  return s;
}

// A fill callback that stages `values` into the slot (a FillFn refers to it: keep it alive through
// the Run() call, as a temporary in the call's own expression is).
auto Stage(FakeDevice& device, const std::vector<int64_t>& values) {
  return [&device, &values](int slot) { device.staging(slot) = values; };
}

TEST(StreamSchedulerTest, CreateChecksItsArguments) {
  FakeDevice device(2, FakeDevice::Mode::kInline);
  std::unique_ptr<StreamScheduler> s;
  for (int workers : {0, 3, -1}) {
    StreamScheduler::Options o;
    o.num_workers = workers;
    const absl::Status st = StreamScheduler::Create(o, &device, &s);
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << workers << ": " << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr("num_workers"));
  }
  EXPECT_TRUE(absl::IsInvalidArgument(StreamScheduler::Create({}, nullptr, &s)));
  EXPECT_TRUE(absl::IsInvalidArgument(StreamScheduler::Create({}, &device, nullptr)));
  ASSERT_TRUE(StreamScheduler::Create({.num_workers = 2}, &device, &s).ok());
  EXPECT_EQ(s->num_slots(), 2);
  EXPECT_EQ(s->NumReserved(), 2);
  EXPECT_EQ(s->NumFreeSlots(), 2);
}

TEST(StreamSchedulerTest, InlineDeviceAnswersOnTheCallersThreadBeforeRunReturns) {
  FakeDevice device(2, FakeDevice::Mode::kInline);
  std::unique_ptr<StreamScheduler> s = MakeScheduler(device, 2);
  for (int i = 0; i < 10; ++i) {
    const std::vector<int64_t> in = {i, i + 1};
    std::thread::id answered_on;
    std::vector<int64_t> got;
    s->Run(2, Stage(device, in), [&](int slot, absl::Status st) {
      EXPECT_TRUE(st.ok()) << st;
      answered_on = std::this_thread::get_id();
      got = device.output(slot);
    });
    EXPECT_EQ(answered_on, std::this_thread::get_id());
    EXPECT_THAT(got, ElementsAre(10 * i + 1, 10 * (i + 1) + 1));
    // Nothing stays in flight, and the worker is back with its reservation.
    EXPECT_EQ(s->NumInFlight(), 0);
    EXPECT_EQ(s->NumReserved(), 2);
    EXPECT_EQ(s->NumFreeSlots(), 2);
  }
  EXPECT_EQ(device.polls(), 0);  // no thread hop, no polling
  EXPECT_TRUE(device.violations().empty());
}

TEST(StreamSchedulerTest, CompletionOrderFollowsTheDeviceNotTheLaunches) {
  FakeDevice device(3, FakeDevice::Mode::kManual);
  std::unique_ptr<StreamScheduler> s = MakeScheduler(device, 1);
  absl::Mutex mu;
  std::vector<std::string> answered;
  std::map<std::string, std::vector<int64_t>> outputs;
  auto done_for = [&](std::string name) {
    return [&, name](int slot, absl::Status st) {
      EXPECT_TRUE(st.ok()) << st;
      absl::MutexLock lock(&mu);
      answered.push_back(name);
      outputs[name] = device.output(slot);
    };
  };
  const std::vector<int64_t> a = {1}, b = {2, 3}, c = {4, 5, 6};
  // One worker, three slots: A and B launch and Run returns with a new reservation each time; C
  // takes the last slot, so its Run waits for a completion before it can reserve again.
  s->Run(1, Stage(device, a), done_for("A"));
  s->Run(2, Stage(device, b), done_for("B"));
  EXPECT_EQ(s->NumInFlight(), 2);
  EXPECT_EQ(s->NumReserved(), 1);
  std::atomic<bool> c_returned{false};
  std::thread worker([&] {
    s->Run(3, Stage(device, c), done_for("C"));
    c_returned = true;
  });
  WaitUntil([&] { return s->NumWaitingForReservation() == 1; }, "C's worker waits for a reservation");
  EXPECT_EQ(s->NumInFlight(), 3);
  EXPECT_EQ(s->NumFreeSlots(), 0);
  EXPECT_FALSE(c_returned);
  const std::vector<int> slots = device.launched_slots();
  ASSERT_EQ(slots.size(), 3u);

  device.Release(slots[2]);  // C first
  worker.join();             // C's completion freed a slot: its worker reserved it and returned
  device.Release(slots[0]);  // then A
  WaitUntil([&] { return s->NumInFlight() == 1; }, "A completes");
  device.Release(slots[1]);  // then B
  WaitUntil([&] { return s->NumInFlight() == 0; }, "B completes");
  {
    absl::MutexLock lock(&mu);
    EXPECT_THAT(answered, ElementsAre("C", "A", "B"));
    EXPECT_THAT(outputs["A"], ElementsAre(11));
    EXPECT_THAT(outputs["B"], ElementsAre(21, 31));
    EXPECT_THAT(outputs["C"], ElementsAre(41, 51, 61));
  }
  EXPECT_EQ(s->NumFreeSlots(), 3);
  EXPECT_EQ(s->NumReserved(), 1);
  EXPECT_EQ(device.max_in_flight(), 3);
  EXPECT_TRUE(device.violations().empty());
}

TEST(StreamSchedulerTest, ShutdownWaitsForInFlightBatches) {
  FakeDevice device(2, FakeDevice::Mode::kManual);
  std::unique_ptr<StreamScheduler> s = MakeScheduler(device, 1);
  std::atomic<int> answered{0};
  const std::vector<int64_t> in = {7};
  s->Run(1, Stage(device, in), [&](int, absl::Status st) {
    EXPECT_TRUE(st.ok());
    ++answered;
  });
  std::atomic<bool> shut{false};
  std::atomic<int> answered_when_shut{-1};
  std::thread shutdown([&] {
    s->Shutdown();
    answered_when_shut = answered.load();
    shut = true;
  });
  EXPECT_FALSE(shut);  // cannot be done: the batch is still in flight
  device.Release(device.launched_slots()[0]);
  shutdown.join();
  EXPECT_EQ(answered_when_shut, 1);
  EXPECT_EQ(answered, 1);
  s->Shutdown();  // idempotent
}

TEST(StreamSchedulerTest, AFailedLaunchOrBatchFailsOnlyItsOwnDone) {
  for (FakeDevice::Mode mode : {FakeDevice::Mode::kInline, FakeDevice::Mode::kRandom}) {
    SCOPED_TRACE(mode == FakeDevice::Mode::kInline ? "inline" : "polled");
    FakeDevice device(2, mode, /*seed=*/7);
    device.FailEvery(/*launch_n=*/5, /*complete_m=*/3);
    std::unique_ptr<StreamScheduler> s = MakeScheduler(device, 1);
    absl::Mutex mu;
    std::map<int, absl::Status> status;  // by batch
    std::map<int, std::vector<int64_t>> out;
    std::vector<std::vector<int64_t>> inputs;
    for (int i = 0; i < 30; ++i) inputs.push_back({100 * i, 100 * i + 1});
    for (int i = 0; i < 30; ++i) {
      s->Run(2, Stage(device, inputs[static_cast<size_t>(i)]), [&, i](int slot, absl::Status st) {
        absl::MutexLock lock(&mu);
        EXPECT_EQ(status.count(i), 0u) << "batch " << i << " answered twice";
        status[i] = st;
        if (st.ok()) out[i] = device.output(slot);
      });
    }
    s->Shutdown();
    ASSERT_EQ(status.size(), 30u);
    for (int i = 0; i < 30; ++i) {
      // Launch i (one worker: launches are in Run order) fails at launch when i % 5 == 4, and at
      // completion when i % 3 == 2; no other batch fails, and each gets its own rows back.
      const bool launch_fails = i % 5 == 4, completion_fails = !launch_fails && i % 3 == 2;
      if (launch_fails) {
        EXPECT_EQ(status[i].message(), absl::StrCat("injected launch failure of launch ", i));
      } else if (completion_fails) {
        EXPECT_EQ(status[i].message(), absl::StrCat("injected failure of launch ", i));
      } else {
        ASSERT_TRUE(status[i].ok()) << i << ": " << status[i];
        EXPECT_THAT(out[i], ElementsAre(1000 * i + 1, 1000 * i + 11)) << i;
      }
    }
    EXPECT_TRUE(device.violations().empty());
  }
}

// ---- With the dynamic batcher: the protocol ServableModel runs --------------------------------

struct FakeTask {
  int64_t id = 0;
  int n = 1;
  int rows() const { return n; }
  int priority() const { return 0; }
  absl::Time deadline() const { return absl::InfiniteFuture(); }
};

// Batcher -> scheduler -> fake device, wired as ServableModel wires them, with checks at every step.
class Pipeline {
 public:
  Pipeline(FakeDevice& device, int workers, int max_batch_size) : device_(device) {
    scheduler_ = MakeScheduler(device, workers);
    BatchingOptions bo;
    bo.max_batch_size = max_batch_size;
    bo.num_batch_threads = workers;
    const absl::Status st = DynamicBatcher<FakeTask>::Create(
        bo, nullptr, [this](std::vector<std::unique_ptr<FakeTask>> batch) { Process(std::move(batch)); },
        [](std::unique_ptr<FakeTask>, absl::Status st) { ADD_FAILURE() << "expired: " << st; }, &batcher_);
    EXPECT_TRUE(st.ok()) << st;
  }

  void Schedule(int64_t id, int rows) {
    auto t = std::make_unique<FakeTask>(FakeTask{id, rows});
    const absl::Status st = batcher_->Schedule(t);
    ASSERT_TRUE(st.ok()) << st;
  }
  // Drains the batcher (every queued task into a batch), then the scheduler.
  void Shutdown() {
    batcher_.reset();
    scheduler_->Shutdown();
  }

  StreamScheduler& scheduler() { return *scheduler_; }
  DynamicBatcher<FakeTask>& batcher() { return *batcher_; }

  struct Answer {
    int times = 0;
    absl::Status status;
    std::vector<int64_t> rows;
  };
  std::map<int64_t, Answer> answers() const {
    absl::MutexLock lock(&mu_);
    return answers_;
  }
  int batches_formed_without_free_slot() const { return formed_without_slot_.load(); }

 private:
  // The batch worker's step: it was handed a batch, so it must hold a reservation.
  void Process(std::vector<std::unique_ptr<FakeTask>> batch) {
    if (scheduler_->NumFreeSlots() < 1 || scheduler_->NumReserved() < 1) ++formed_without_slot_;
    auto tasks = std::make_shared<std::vector<std::unique_ptr<FakeTask>>>(std::move(batch));
    int rows = 0;
    for (const auto& t : *tasks) rows += t->n;
    scheduler_->Run(
        rows,
        [&](int slot) {
          std::vector<int64_t>& in = device_.staging(slot);
          in.clear();
          // Row r of task id: id * 1000 + r, so every row of every task is distinct.
          for (const auto& t : *tasks) {
            for (int r = 0; r < t->n; ++r) in.push_back(t->id * 1000 + r);
          }
        },
        [this, tasks](int slot, absl::Status st) {
          absl::MutexLock lock(&mu_);
          size_t offset = 0;
          for (const auto& t : *tasks) {
            Answer& a = answers_[t->id];
            ++a.times;
            a.status = st;
            if (st.ok()) {
              const std::vector<int64_t>& out = device_.output(slot);
              a.rows.assign(out.begin() + static_cast<std::ptrdiff_t>(offset),
                            out.begin() + static_cast<std::ptrdiff_t>(offset + t->n));
            }
            offset += static_cast<size_t>(t->n);
          }
        });
  }

  FakeDevice& device_;
  std::unique_ptr<StreamScheduler> scheduler_;
  std::unique_ptr<DynamicBatcher<FakeTask>> batcher_;  // after the scheduler: destroyed first
  mutable absl::Mutex mu_;
  std::map<int64_t, Answer> answers_ ABSL_GUARDED_BY(mu_);
  std::atomic<int> formed_without_slot_{0};
};

TEST(StreamSchedulerTest, BatcherFormsABatchOnlyWhenASlotWaitsAndBatchesGrowUnderLoad) {
  FakeDevice device(2, FakeDevice::Mode::kManual);
  Pipeline p(device, /*workers=*/1, /*max_batch_size=*/64);
  // Two single requests, one at a time: each leaves at once on its own slot.
  p.Schedule(1, 1);
  device.AwaitLaunches(1);
  p.Schedule(2, 1);
  device.AwaitLaunches(2);
  // Both slots are busy: the worker waits for one inside Run(), holding no reservation, so it does
  // not form the next batch.
  WaitUntil([&] { return p.scheduler().NumWaitingForReservation() == 1; }, "the worker waits for a slot");
  for (int i = 3; i <= 12; ++i) p.Schedule(i, 2);
  EXPECT_EQ(p.batcher().NumQueuedTasks(), 10u);
  EXPECT_EQ(device.launches(), 2);
  // One slot frees: the worker reserves it, returns to the batcher and takes everything queued as
  // one batch of 20 rows.
  device.Release(device.launched_slots()[0]);
  device.AwaitLaunches(3);
  EXPECT_THAT(device.launched_rows(), ElementsAre(1, 1, 20));
  EXPECT_EQ(p.batcher().NumQueuedTasks(), 0u);
  for (int slot : {device.launched_slots()[1], device.launched_slots()[2]}) device.Release(slot);
  p.Shutdown();

  const auto answers = p.answers();
  ASSERT_EQ(answers.size(), 12u);
  for (const auto& [id, a] : answers) {
    EXPECT_EQ(a.times, 1) << id;
    ASSERT_TRUE(a.status.ok()) << id << ": " << a.status;
    ASSERT_EQ(a.rows.size(), id <= 2 ? 1u : 2u);
    for (size_t r = 0; r < a.rows.size(); ++r) EXPECT_EQ(a.rows[r], 10 * (id * 1000 + static_cast<int64_t>(r)) + 1);
  }
  EXPECT_EQ(p.batches_formed_without_free_slot(), 0);
  EXPECT_LE(device.max_in_flight(), 2);
  EXPECT_TRUE(device.violations().empty());
}

TEST(StreamSchedulerTest, ManyClientsRandomCompletionsAndFailuresEveryTaskAnsweredOnce) {
  constexpr int kSlots = 6, kWorkers = 3, kClients = 4, kPerClient = 1500;
  FakeDevice device(kSlots, FakeDevice::Mode::kRandom, /*seed=*/11);
  device.FailEvery(/*launch_n=*/13, /*complete_m=*/7);
  Pipeline p(device, kWorkers, /*max_batch_size=*/32);
  std::vector<std::thread> clients;
  std::map<int64_t, int> rows_of;
  for (int c = 0; c < kClients; ++c) {
    for (int i = 0; i < kPerClient; ++i) rows_of[c * kPerClient + i] = 1 + (c * 7 + i * 3) % 8;
  }
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kPerClient; ++i) {
        const int64_t id = c * kPerClient + i;
        p.Schedule(id, rows_of.at(id));
      }
    });
  }
  for (std::thread& t : clients) t.join();
  // Shut down with work still queued and in flight: everything is drained, nothing lost.
  p.Shutdown();

  const auto answers = p.answers();
  ASSERT_EQ(answers.size(), rows_of.size());
  int64_t failed_rows = 0;
  for (const auto& [id, a] : answers) {
    ASSERT_EQ(a.times, 1) << "task " << id;
    if (!a.status.ok()) {
      EXPECT_THAT(std::string(a.status.message()), HasSubstr("injected")) << id;
      failed_rows += rows_of.at(id);
      continue;
    }
    ASSERT_EQ(a.rows.size(), static_cast<size_t>(rows_of.at(id))) << id;
    for (size_t r = 0; r < a.rows.size(); ++r) {
      ASSERT_EQ(a.rows[r], 10 * (id * 1000 + static_cast<int64_t>(r)) + 1) << "task " << id << " row " << r;
    }
  }
  // Exactly the rows of the batches the device failed were answered with errors.
  EXPECT_EQ(failed_rows, device.failed_rows());
  EXPECT_GT(failed_rows, 0);
  EXPECT_EQ(p.batches_formed_without_free_slot(), 0);
  EXPECT_LE(device.max_in_flight(), kSlots);
  EXPECT_GT(device.max_in_flight(), 1);  // batches did overlap
  EXPECT_EQ(device.in_flight(), 0);
  EXPECT_TRUE(device.violations().empty()) << device.violations().front();
}

}  // namespace
}  // namespace fp8serve
