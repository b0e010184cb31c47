// StreamScheduler: runs a model's batches on a fixed set of execution slots (CUDA streams with
// their staging buffers, or CPU instances), with at most one batch per slot in flight, and answers
// each batch when its slot reports completion.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace fp8serve {

// A device with a fixed number of execution slots, each running at most one batch at a time. A
// CUDA slot is a stream with its own pinned staging and device buffers; a CPU slot is an
// instance's scratch. StreamScheduler knows devices only through this interface, so it is tested
// on the CPU with a fake.
class SlotDevice {
 public:
  virtual ~SlotDevice() = default;

  virtual int num_slots() const = 0;

  // Starts the batch of `rows` rows whose input the caller has staged in `slot`. Returns its status
  // when the batch is already over: a synchronous device computes it inside Launch, and a launch
  // that fails returns its error with nothing of the batch still running. Returns nullopt while the
  // batch runs on: Poll() then tells when it is over. Never called for a slot whose previous batch
  // is not over. May run concurrently with Launch or Poll on other slots.
  virtual std::optional<absl::Status> Launch(int slot, int rows) = 0;

  // nullopt while the slot's batch runs; its status once it is over (the slot's output is then
  // readable on the calling thread). Called only for a slot whose Launch returned nullopt, until
  // the first status, from one thread at a time.
  virtual std::optional<absl::Status> Poll(int slot) = 0;
};

// StreamScheduler — bounded, overlapped batch execution for one model.
//
// PARAMETERS (Options)
//  num_workers   the threads that call Run() (the model's batch workers, one per instance).
//                1 <= num_workers <= device->num_slots().
//
// BEHAVIOR
//  - Run(rows, fill, done) is called by a batch worker with a batch it has just been given. It
//    takes a free slot, calls fill(slot) to stage the batch's input there, and launches the slot.
//    A device that completes inside Launch (CPU, noop) gets done(slot, status) on the worker's own
//    thread before Run returns: no thread hop. Otherwise the batch is in flight, and the
//    scheduler's completion thread calls done(slot, status) once the slot reports completion.
//    In both cases the slot is free again only after done returns, so done may read the slot's
//    output (and nothing may be written to it).
//  - At most num_slots batches are in flight, each on its own slot. Completions are handled in the
//    order the device finishes them, not the order of launch.
//  - Reservations. Every worker holds one reservation from Create() on: a claim on a free slot.
//    Run() spends the caller's reservation on the slot it takes, and before it returns it takes a
//    new one, waiting while every free slot is claimed (that is, while every slot is in flight or
//    promised to another worker). A worker therefore gets back to its batcher, and forms its next
//    batch, only when a slot waits for that batch: under load requests accumulate in the queue and
//    batches grow, instead of queueing inside the device.
//  - The completion thread polls the in-flight slots, yielding the CPU between rounds that find
//    nothing done, and sleeps on the mutex while nothing is in flight. It never waits on the
//    device as a whole: a slow batch does not hold up the completion of the others.
//  - A batch whose Launch or Poll returns an error gets that error in its own done(); other batches
//    are unaffected.
//  - Shutdown() (and the destructor) waits for every in-flight batch to complete and its done() to
//    return, then stops the completion thread. Call it once no Run() is in progress or will start
//    (after the batcher's workers are joined). Not from a done() callback.
//
// RECOMMENDED USE
//  One per model version, between its DynamicBatcher and its Backend: the batcher's
//  num_batch_threads = num_workers = the model's instances, and the backend's slots = instances x
//  streams per instance. Two slots per worker let the device run one batch while the worker
//  gathers the next; more add little unless batches are short next to the launch overhead.
//
// Implementation details follow the class.
class StreamScheduler {
 public:
  struct Options {
    // Threads that call Run(): each holds one reservation between its batches (see BEHAVIOR).
    // Must be in [1, device->num_slots()].
    int num_workers = 1;
  };

  // Stages the batch's input into the slot; runs on the caller's thread before the launch.
  using FillFn = absl::FunctionRef<void(int slot)>;
  // Answers the batch; the slot's output is readable during the call.
  using DoneFn = absl::AnyInvocable<void(int slot, absl::Status status)>;

  // INVALID_ARGUMENT for a null device or a worker count outside [1, num_slots]. `device` is not
  // owned and must outlive the scheduler.
  static absl::Status Create(const Options& options, SlotDevice* device, std::unique_ptr<StreamScheduler>* out);

  ~StreamScheduler() { Shutdown(); }
  StreamScheduler(const StreamScheduler&) = delete;
  StreamScheduler& operator=(const StreamScheduler&) = delete;

  // Runs one batch of `rows` rows (see BEHAVIOR). Called by a worker holding its reservation; a
  // caller without one (outside the protocol) waits for an unclaimed free slot instead.
  void Run(int rows, FillFn fill, DoneFn done);

  // Completes everything in flight and stops the completion thread. Idempotent.
  void Shutdown();

  int num_slots() const { return num_slots_; }
  // Snapshots, for tests and diagnostics.
  int NumInFlight() const;
  int NumFreeSlots() const;
  int NumReserved() const;
  // Workers inside Run() waiting for a reservation (every free slot claimed).
  int NumWaitingForReservation() const;

 private:
  StreamScheduler(const Options& options, SlotDevice* device);
  void CompletionLoop();

  const Options options_;
  SlotDevice* const device_;
  const int num_slots_;

  mutable absl::Mutex mu_;
  // Free slots, the longest-free first: consecutive batches rotate over every stream and GPU.
  std::deque<int> free_ ABSL_GUARDED_BY(mu_);
  // Slots taken by Run() and not yet launched (or completed inline).
  int staging_ ABSL_GUARDED_BY(mu_) = 0;
  // Launched slots not yet completed, in launch order.
  std::vector<int> in_flight_ ABSL_GUARDED_BY(mu_);
  // Reservations held by workers between batches.
  int reserved_ ABSL_GUARDED_BY(mu_) = 0;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Invariants, whenever mu_ is free:
  //  (I1) free_.size() + staging_ + in_flight_.size() == num_slots_: every slot is free, staging
  //       or in flight, and only one of these.
  //  (I2) reserved_ <= free_.size(): each reservation is backed by a free slot of its own, so a
  //       worker holding one takes a slot at once.
  //  (I3) reserved_ <= num_workers: a worker holds at most one reservation, and none from the
  //       moment Run() takes its slot until Run() reserves again on its way out.
  // A worker forms a batch only while it is in its batcher, that is holding a reservation, so by
  // (I2) a free slot waits for every batch formed; by (I1) at most num_slots batches are in flight.

  // done_[slot]: the callback of the slot's in-flight batch. Written under mu_ by the launching
  // worker together with the slot's entry in in_flight_; from then until the slot is freed, only
  // the completion thread touches it (it reads in_flight_ under mu_ first, which orders the write).
  std::vector<DoneFn> done_;

  std::thread completion_thread_;  // started by Create(); joined by the first Shutdown()
  bool joined_ = false;            // touched only by Shutdown()'s caller, under shutdown_mu_
  absl::Mutex shutdown_mu_;
};

}  // namespace fp8serve
