// What the two server-side fuzz targets (model_config_fuzz, infer_request_fuzz) share: the small
// model they serve, and one task run through a live ServableModel to its answer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/execution/servable_model.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/server/testing/test_models.h"

namespace fp8serve::fuzz {

// The served MLP: kModelIn -> 16 -> kModelOut, FP8 weights, deterministic for a seed.
inline constexpr int kModelIn = 8;
inline constexpr int kModelOut = 3;
inline MlpWeights SmallMlp(uint32_t seed) { return test::RandomMlp({kModelIn, 16, kModelOut}, seed); }

struct Answer {
  absl::Status queued;  // Schedule's verdict; when not OK, nothing below is set
  absl::Status status;  // the task's result
  int rows = 0, cols = 0;
  std::vector<float> out;  // rows x cols, copied out of the callback
};

// Schedules one task of `rows` rows at `input` on `model` and waits for its answer, at most `wait`
// (a target that waits longer has found a hang).
inline Answer Ask(ServableModel& model, int rows, int priority, absl::Time deadline, const void* input, InputType type,
                  absl::Duration wait = absl::Seconds(30)) {
  Answer a;
  absl::Notification done;
  auto task = std::make_unique<InferTask>(rows, priority, deadline, input, type, [&](const InferResult& r) {
    a.status = r.status;
    a.rows = r.rows;
    a.cols = r.cols;
    if (r.status.ok()) a.out.assign(r.output, r.output + static_cast<size_t>(r.rows) * r.cols);
    done.Notify();
  });
  a.queued = model.Schedule(task);
  if (!a.queued.ok()) return a;
  if (!done.WaitForNotificationWithTimeout(wait)) Fail("no answer within " + absl::FormatDuration(wait));
  return a;
}

}  // namespace fp8serve::fuzz
