// The non-template parts of the batching policy: option validation and the queue-timeout status.
#include "server/batching/batch_queue.h"

#include <set>

namespace fp8serve {

absl::Status ValidateBatchingOptions(const BatchingOptions& options) {
  if (options.max_batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch_size must be >= 1, got ", options.max_batch_size));
  }
  if (options.max_queue_delay < absl::ZeroDuration() ||
      options.max_queue_delay == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("max_queue_delay must be finite and >= 0, got ",
                                                   absl::FormatDuration(options.max_queue_delay)));
  }
  std::set<int> seen;
  for (int size : options.preferred_batch_sizes) {
    if (size < 1 || size > options.max_batch_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("preferred batch size ", size,
                       " must be between 1 and max_batch_size = ", options.max_batch_size));
    }
    if (!seen.insert(size).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("preferred batch size ", size, " is listed more than once"));
    }
  }
  if (options.priority_levels < 1 || options.priority_levels > kMaxPriorityLevels) {
    return absl::InvalidArgumentError(absl::StrCat("priority_levels must be between 1 and ",
                                                   kMaxPriorityLevels, ", got ", options.priority_levels));
  }
  if (options.default_priority_level < 1 ||
      options.default_priority_level > options.priority_levels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "default_priority_level must be between 1 and priority_levels = ", options.priority_levels,
        ", got ", options.default_priority_level));
  }
  if (options.num_batch_threads < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_batch_threads must be >= 0 (0 = manual mode), got ", options.num_batch_threads));
  }
  return absl::OkStatus();
}

absl::Status QueueTimeoutError(absl::Duration waited) {
  return absl::DeadlineExceededError(absl::StrCat("request timed out in the queue after ",
                                                  absl::ToInt64Microseconds(waited), " us"));
}

}  // namespace fp8serve
