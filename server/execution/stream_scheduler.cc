#include "server/execution/stream_scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fp8serve {

absl::Status StreamScheduler::Create(const Options& options, SlotDevice* device, std::unique_ptr<StreamScheduler>* out) {
  if (out == nullptr) return absl::InvalidArgumentError("StreamScheduler::Create: out is null");
  if (device == nullptr) return absl::InvalidArgumentError("StreamScheduler::Create: device is null");
  const int slots = device->num_slots();
  if (options.num_workers < 1 || options.num_workers > slots) {
    return absl::InvalidArgumentError(absl::StrCat("StreamScheduler: num_workers must be in [1, num_slots = ", slots,
                                                   "], not ", options.num_workers));
  }
  std::unique_ptr<StreamScheduler> s(new StreamScheduler(options, device));
  // Started last: every member is initialized before the thread reads one.
  s->completion_thread_ = std::thread([p = s.get()] { p->CompletionLoop(); });
  *out = std::move(s);
  return absl::OkStatus();
}

StreamScheduler::StreamScheduler(const Options& options, SlotDevice* device)
    : options_(options), device_(device), num_slots_(device->num_slots()), done_(static_cast<size_t>(num_slots_)) {
  absl::MutexLock lock(&mu_);
  for (int s = 0; s < num_slots_; ++s) free_.push_back(s);
  in_flight_.reserve(static_cast<size_t>(num_slots_));
  // Every worker starts in its batcher, holding a reservation (I2: num_workers <= num_slots).
  reserved_ = options_.num_workers;
}

void StreamScheduler::Run(int rows, FillFn fill, DoneFn done) {
  int slot;
  {
    absl::MutexLock lock(&mu_);
    if (reserved_ > 0) {
      // The caller's reservation: by (I2) a free slot is there for it.
      --reserved_;
    } else {
      // Outside the protocol: wait for a free slot nobody has claimed.
      ++waiting_;
      auto unclaimed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return static_cast<int>(free_.size()) > reserved_;
      };
      mu_.Await(absl::Condition(&unclaimed));
      --waiting_;
    }
    slot = free_.front();
    free_.pop_front();
    ++staging_;
  }

  // Stage the input and launch, outside the lock: other workers launch and the completion thread
  // completes concurrently.
  fill(slot);
  std::optional<absl::Status> finished = device_->Launch(slot, rows);
  if (finished.has_value()) {
    // Completed inside Launch (a synchronous device, or a failed launch): answer on this thread.
    done(slot, *std::move(finished));
    done = nullptr;  // release what the callback holds before the slot can be reused
  }

  // Hand the slot on, then reserve a slot for this worker's next batch.
  absl::MutexLock lock(&mu_);
  --staging_;
  if (finished.has_value()) {
    free_.push_back(slot);
  } else {
    done_[static_cast<size_t>(slot)] = std::move(done);
    in_flight_.push_back(slot);  // wakes the completion thread (its Await condition)
  }
  auto unclaimed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return static_cast<int>(free_.size()) > reserved_; };
  if (!unclaimed()) {
    ++waiting_;
    mu_.Await(absl::Condition(&unclaimed));
    --waiting_;
  }
  ++reserved_;
}

void StreamScheduler::CompletionLoop() {
  std::vector<int> polled;
  polled.reserve(static_cast<size_t>(num_slots_));
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !in_flight_.empty() || stopping_; };
      mu_.Await(absl::Condition(&has_work));
      if (in_flight_.empty()) return;  // stopping, and everything launched has completed
      polled = in_flight_;
    }
    bool completed_any = false;
    for (int slot : polled) {
      std::optional<absl::Status> status = device_->Poll(slot);
      if (!status.has_value()) continue;
      DoneFn done = std::move(done_[static_cast<size_t>(slot)]);
      done(slot, *std::move(status));
      done = nullptr;  // the batch's tasks go before its slot is reused
      completed_any = true;
      absl::MutexLock lock(&mu_);
      in_flight_.erase(std::find(in_flight_.begin(), in_flight_.end(), slot));
      free_.push_back(slot);  // wakes a worker waiting for a reservation (its Await condition)
    }
    // NOTES: a batch of a small MLP takes tens of microseconds on the GPU; sleeping on a timer
    // would add more than that to every request. Spin, but let other runnable threads (gRPC's, the
    // workers') have the core first.
    if (!completed_any) std::this_thread::yield();
  }
}

void StreamScheduler::Shutdown() {
  absl::MutexLock shutdown_lock(&shutdown_mu_);
  if (joined_) return;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  // The completion thread returns once nothing is in flight any more.
  if (completion_thread_.joinable()) completion_thread_.join();
  joined_ = true;
}

int StreamScheduler::NumInFlight() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(in_flight_.size());
}

int StreamScheduler::NumFreeSlots() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(free_.size());
}

int StreamScheduler::NumReserved() const {
  absl::MutexLock lock(&mu_);
  return reserved_;
}

int StreamScheduler::NumWaitingForReservation() const {
  absl::MutexLock lock(&mu_);
  return waiting_;
}

}  // namespace fp8serve
