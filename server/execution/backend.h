// A Backend runs an MLP forward on batches of FP32 rows. It is what a model's instances execute;
// the batcher and the gRPC service never see how. Backends: "cpu" (the fast OpenBLAS forward with
// the FP8 numerics emulated), "noop" (answers zeros without computing: it measures the ceiling
// that gRPC and batching set), and, on a GPU, "cuda" (the FP8 tensor-core kernels; cuda_backend.h).
//
// Every backend is driven the same way, through slots (SlotDevice): a slot has an input staging
// buffer and an output buffer; the caller stages a batch's rows with input(), starts it with
// Launch(), and reads output() once it is over. The CPU backends compute inside Launch() (no
// thread hop: the batch worker answers the batch itself); the CUDA backend's Launch() only queues
// copies and kernels on the slot's stream, and Poll() reports their completion.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/mlp_weights.h"
#include "server/execution/stream_scheduler.h"

namespace fp8serve {

enum class BackendKind { kAuto, kCpu, kNoop, kCuda };

const char* BackendKindName(BackendKind k);
absl::StatusOr<BackendKind> ParseBackendKind(const std::string& name);  // auto | cpu | noop | cuda

class Backend : public SlotDevice {
 public:
  virtual const char* name() const = 0;
  virtual int input_dim() const = 0;
  virtual int output_dim() const = 0;
  // Rows one batch may have at most.
  virtual int max_rows() const = 0;
  // Execution instances (instance_group): the model's batch workers, one per instance. Each
  // instance has num_slots() / num_instances() slots (streams); num_instances() <= num_slots().
  virtual int num_instances() const = 0;

  // The slot's input staging, with room for `rows` rows (1 <= rows <= max_rows()): the caller
  // writes rows x input_dim() FP32 values there, then calls Launch(slot, rows). Only for a slot
  // that is not running a batch.
  virtual float* input(int slot, int rows) = 0;
  // The slot's output, rows x output_dim() FP32 values of its last batch, once that batch is over.
  virtual const float* output(int slot) const = 0;

  // One line for the load log: where the instances run and how.
  virtual std::string Describe() const = 0;
};

// Where a model's instances run: one instance_group of its config.
//
// fp8serve runs each model on one backend, which --backend picks (auto: CUDA when a GPU is usable).
// On the CPU backends a group adds `count` instances. On CUDA a group places `count` instances on
// each of its `gpus` (every visible GPU when none are listed), whatever its kind; except that under
// --backend auto a model whose groups are all KIND_CPU stays on the CPU, as its config asks.
struct InstanceGroupSpec {
  enum class Kind { kAuto, kGpu, kCpu };
  Kind kind = Kind::kAuto;
  int count = 1;
  std::vector<int> gpus;
};

struct BackendOptions {
  BackendKind kind = BackendKind::kAuto;
  // The model's name and version, for log lines and error messages.
  std::string model = "model";
  // Rows per batch at most (the model's max_batch_size). Device and pinned memory are
  // preallocated for it at load.
  int max_rows = 1;
  // Empty: one instance, KIND_AUTO.
  std::vector<InstanceGroupSpec> instance_groups;
  // CUDA only: slots (streams, each with its own staging and device buffers) per instance. Two
  // overlap one batch's copies and kernels with the next batch's gathering and launch.
  int cuda_streams_per_instance = 2;
  // CUDA only: replay each batch-size bucket's forward as a captured CUDA graph (one launch instead
  // of one per kernel). Off: launch the kernels directly every time.
  bool cuda_graphs = true;
};

// Builds the backend for `weights`. kAuto resolves per ResolveAutoBackend(); under kAuto a model
// the CUDA backend cannot serve (a layer that is not FP8: FAILED_PRECONDITION) falls back to the
// CPU backend with a log line, while under kCuda it fails. Running out of memory at load is
// RESOURCE_EXHAUSTED, with nothing left allocated.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& options, const MlpWeights& weights);

// What builds a model's backend. Empty means CreateBackend; tests put a backend around it that
// fails on purpose (the server's answer to a failing backend is otherwise only reachable on a GPU).
using BackendFactory =
    std::function<absl::StatusOr<std::unique_ptr<Backend>>(const BackendOptions& options, const MlpWeights& weights)>;

// Threads OpenBLAS may use inside one CPU forward (process-wide). The server's default is 1: its
// parallelism is across batches (instances) and gRPC threads, and on a few cores a BLAS thread pool
// fighting the gRPC threads costs more than it gives (measured: 1.5-2x throughput at concurrency 64
// on 2 cores). Raise it for a CPU server that runs large batches on many cores.
void SetCpuBlasThreads(int threads);

// What kAuto resolves to on this machine, and why (for the startup log): kCuda when this build has
// the CUDA backend and the driver reports a usable device, kCpu otherwise.
BackendKind ResolveAutoBackend(std::string* why);

}  // namespace fp8serve
