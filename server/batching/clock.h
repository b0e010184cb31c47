// The time source the batcher reads. Batching decisions depend only on "now", so injecting the
// clock lets tests move time by hand (FakeClock) and check delays and deadlines exactly, with no
// sleeps and no flakiness.
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fp8serve {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// Wall-clock time from absl::Now(). Stateless, so one shared instance serves everyone.
class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }

  // A process-lifetime instance, for callers that have no clock of their own.
  static const RealClock* Get() {
    static const RealClock* const clock = new RealClock();
    return clock;
  }
};

// Time that moves only when told to. Thread-safe: a test thread may Advance() while batcher
// threads call Now(). Note that advancing it wakes nobody; threads blocked in a timed wait keep
// waiting in real time (see DynamicBatcher on testing timing in manual mode).
class FakeClock final : public Clock {
 public:
  // Starts at an arbitrary fixed instant rather than the Unix epoch's zero, so that "time - delay"
  // arithmetic in tests never lands on a special value.
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1'000'000'000)) : now_(start) {}

  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }
  void Set(absl::Time t) {
    absl::MutexLock lock(&mu_);
    now_ = t;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fp8serve
