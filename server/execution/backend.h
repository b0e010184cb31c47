// A Backend runs an MLP forward on a batch of FP32 rows. It is what a model instance executes;
// the batcher and the gRPC service never see how. Backends: "cpu" (the fast OpenBLAS forward with
// the FP8 numerics emulated), "noop" (answers zeros without computing: it measures the ceiling
// that gRPC and batching set), and, on a GPU, "cuda".
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/mlp_weights.h"

namespace fp8serve {

enum class BackendKind { kAuto, kCpu, kNoop, kCuda };

const char* BackendKindName(BackendKind k);
absl::StatusOr<BackendKind> ParseBackendKind(const std::string& name);  // auto | cpu | noop | cuda

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual int input_dim() const = 0;
  virtual int output_dim() const = 0;
  // x [rows, input_dim] -> y [rows, output_dim]. `instance` in [0, instances) names the caller's
  // execution slot: calls with different instances may run concurrently, calls with the same
  // instance never do, so a backend keeps per-instance scratch without locking.
  virtual absl::Status Run(int instance, const float* x, int rows, float* y) = 0;
};

// Builds the backend for `weights`, with `instances` concurrent execution slots and room for
// `max_rows` rows per call. kAuto resolves to CUDA where a GPU is usable and to CPU otherwise.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(BackendKind kind, const MlpWeights& weights, int instances,
                                                       int max_rows);

// Threads OpenBLAS may use inside one CPU forward (process-wide). The server's default is 1: its
// parallelism is across batches (instances) and gRPC threads, and on a few cores a BLAS thread pool
// fighting the gRPC threads costs more than it gives (measured: 1.5-2x throughput at concurrency 64
// on 2 cores). Raise it for a CPU server that runs large batches on many cores.
void SetCpuBlasThreads(int threads);

// What kAuto resolves to on this machine, and why (for the startup log).
BackendKind ResolveAutoBackend(std::string* why);

}  // namespace fp8serve
