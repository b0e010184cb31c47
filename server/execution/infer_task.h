// One inference request as the batcher and the executor see it: a number of rows, a priority, a
// deadline, a pointer to the request's input bytes (owned by the caller, alive until `done` runs),
// and a completion callback. It knows nothing of gRPC.
#pragma once

#include <cstdint>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"

namespace fp8serve {

enum class InputType : uint8_t { kFp32, kFp16, kBf16 };
size_t InputTypeSize(InputType t);

// What a task learns when it completes. On success `output` points at rows x cols FP32 values that
// stay valid only during the callback: copy them out.
struct InferResult {
  absl::Status status;
  const float* output = nullptr;
  int rows = 0;
  int cols = 0;
  // Phases, in nanoseconds: waiting in the queue, and this task's batch's compute phases. The
  // output phase is the callback's own: it measures copying its rows out.
  uint64_t queue_ns = 0;
  uint64_t compute_input_ns = 0;
  uint64_t compute_infer_ns = 0;
  int batch_rows = 0;  // rows in the batch this task ran in
};

class InferTask {
 public:
  using DoneFn = absl::AnyInvocable<void(const InferResult&)>;

  InferTask(int rows, int priority, absl::Time deadline, const void* input, InputType input_type, DoneFn done)
      : rows_(rows), priority_(priority), deadline_(deadline), input_(input), input_type_(input_type),
        done_(std::move(done)) {}
  InferTask(const InferTask&) = delete;
  InferTask& operator=(const InferTask&) = delete;

  // The batcher's interface.
  int rows() const { return rows_; }
  int priority() const { return priority_; }
  absl::Time deadline() const { return deadline_; }

  const void* input() const { return input_; }
  InputType input_type() const { return input_type_; }

  // Set by the caller when the client can go away (a cancelled RPC): checked just before compute, so
  // a cancelled request is dropped from its batch and answered once, with CANCELLED.
  void set_cancelled_check(absl::AnyInvocable<bool() const> check) { cancelled_ = std::move(check); }
  bool cancelled() const { return cancelled_ && cancelled_(); }

  absl::Time enqueue_time() const { return enqueue_time_; }
  void set_enqueue_time(absl::Time t) { enqueue_time_ = t; }

  // Completes the task; exactly once.
  void Finish(const InferResult& r) {
    if (done_) {
      auto done = std::move(done_);
      done_ = nullptr;
      done(r);
    }
  }

 private:
  int rows_;
  int priority_;
  absl::Time deadline_;
  const void* input_;
  InputType input_type_;
  DoneFn done_;
  absl::AnyInvocable<bool() const> cancelled_;
  absl::Time enqueue_time_ = absl::InfinitePast();
};

inline size_t InputTypeSize(InputType t) { return t == InputType::kFp32 ? 4 : 2; }

}  // namespace fp8serve
