#include "server/execution/backend.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/mlp_fast.h"
#include "spdlog/spdlog.h"

#ifdef FP8SERVE_HAVE_CUDA
#include "kernels/cuda/cuda_status.h"
#include "server/execution/cuda_backend.h"
#endif

namespace fp8serve {

namespace {

// Slots of the backends that compute on the host, one per instance. Their buffers grow on demand
// (to the largest batch seen, at most max_rows): a model with a large max_batch_size pays only for
// the batches it gets.
class HostBackend : public Backend {
 public:
  HostBackend(int input_dim, int output_dim, int max_rows, int instances)
      : in_(input_dim), out_(output_dim), max_rows_(max_rows), slots_(static_cast<size_t>(instances)) {}

  int input_dim() const override { return in_; }
  int output_dim() const override { return out_; }
  int max_rows() const override { return max_rows_; }
  int num_instances() const override { return static_cast<int>(slots_.size()); }
  int num_slots() const override { return static_cast<int>(slots_.size()); }
  float* input(int slot, int rows) override {
    Slot& s = slots_[static_cast<size_t>(slot)];
    Grow(s.in, s.in_rows, rows, in_);
    return s.in.get();
  }
  const float* output(int slot) const override { return slots_[static_cast<size_t>(slot)].out.get(); }
  // Host backends complete inside Launch, so nothing is ever left to poll.
  std::optional<absl::Status> Poll(int) override { return absl::OkStatus(); }
  std::string Describe() const override { return absl::StrCat(name(), ", ", slots_.size(), " instance(s)"); }

 protected:
  struct Slot {
    std::unique_ptr<float[]> in, out;
    int in_rows = 0, out_rows = 0;  // capacity, in rows
    FastMlp::Scratch scratch;
  };
  Slot& slot(int s) { return slots_[static_cast<size_t>(s)]; }
  // Output room for `rows` rows in slot s.
  float* PrepareOutput(Slot& s, int rows) {
    Grow(s.out, s.out_rows, rows, out_);
    return s.out.get();
  }

 private:
  // At least `rows` rows of `cols` values; doubling, so that batches growing one row at a time do
  // not reallocate every time. Contents are not kept: the caller rewrites them.
  void Grow(std::unique_ptr<float[]>& buf, int& capacity, int rows, int cols) const {
    if (rows <= capacity) return;
    capacity = std::min(max_rows_, std::max(rows, 2 * capacity));
    buf = std::make_unique_for_overwrite<float[]>(static_cast<size_t>(capacity) * static_cast<size_t>(cols));
  }

  const int in_, out_, max_rows_;
  std::vector<Slot> slots_;
};

class CpuBackend final : public HostBackend {
 public:
  CpuBackend(const MlpWeights& w, int max_rows, int instances)
      : HostBackend(w.input_dim(), w.output_dim(), max_rows, instances), mlp_(w) {}
  const char* name() const override { return "cpu"; }
  std::optional<absl::Status> Launch(int s, int rows) override {
    Slot& sl = slot(s);
    mlp_.Forward(sl.in.get(), rows, PrepareOutput(sl, rows), sl.scratch);
    return absl::OkStatus();
  }

 private:
  const FastMlp mlp_;
};

class NoopBackend final : public HostBackend {
 public:
  NoopBackend(const MlpWeights& w, int max_rows, int instances)
      : HostBackend(w.input_dim(), w.output_dim(), max_rows, instances) {}
  const char* name() const override { return "noop"; }
  std::optional<absl::Status> Launch(int s, int rows) override {
    std::memset(PrepareOutput(slot(s), rows), 0, sizeof(float) * static_cast<size_t>(rows) * output_dim());
    return absl::OkStatus();
  }
};

// Instances on the CPU: `count` per group, one when there is no group.
int HostInstances(const BackendOptions& o) {
  int n = 0;
  for (const InstanceGroupSpec& g : o.instance_groups) n += g.count;
  return std::max(1, n);
}

bool AllGroupsCpu(const BackendOptions& o) {
  return !o.instance_groups.empty() &&
         std::all_of(o.instance_groups.begin(), o.instance_groups.end(),
                     [](const InstanceGroupSpec& g) { return g.kind == InstanceGroupSpec::Kind::kCpu; });
}

}  // namespace

const char* BackendKindName(BackendKind k) {
  switch (k) {
    case BackendKind::kAuto: return "auto";
    case BackendKind::kCpu: return "cpu";
    case BackendKind::kNoop: return "noop";
    case BackendKind::kCuda: return "cuda";
  }
  return "?";
}

absl::StatusOr<BackendKind> ParseBackendKind(const std::string& name) {
  for (BackendKind k : {BackendKind::kAuto, BackendKind::kCpu, BackendKind::kNoop, BackendKind::kCuda}) {
    if (name == BackendKindName(k)) return k;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown backend '", name, "' (auto, cpu, noop, cuda)"));
}

void SetCpuBlasThreads(int threads) { openblas_set_num_threads(threads < 1 ? 1 : threads); }

BackendKind ResolveAutoBackend(std::string* why) {
#ifdef FP8SERVE_HAVE_CUDA
  absl::StatusOr<int> devices = CudaDeviceCount();
  if (devices.ok()) {
    if (why != nullptr) *why = CudaDevicesSummary(*devices);
    return BackendKind::kCuda;
  }
  if (why != nullptr) *why = absl::StrCat("no usable CUDA device (", devices.status().message(), "); serving on the CPU");
  return BackendKind::kCpu;
#else
  if (why != nullptr) *why = "this build has no CUDA backend (nvcc was not found when it was built); serving on the CPU";
  return BackendKind::kCpu;
#endif
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& options, const MlpWeights& weights) {
  if (options.max_rows < 1) return absl::InvalidArgumentError(absl::StrCat(options.model, ": max_rows must be >= 1"));
  if (weights.layers.empty()) return absl::InvalidArgumentError(absl::StrCat(options.model, ": the model has no layers"));
  for (const InstanceGroupSpec& g : options.instance_groups) {
    if (g.count < 1) return absl::InvalidArgumentError(absl::StrCat(options.model, ": instance_group count must be >= 1"));
  }
  BackendKind kind = options.kind;
  if (kind == BackendKind::kAuto) {
    kind = ResolveAutoBackend(nullptr);
    if (kind == BackendKind::kCuda && AllGroupsCpu(options)) {
      spdlog::info("model {}: every instance_group is KIND_CPU: serving it on the CPU backend", options.model);
      kind = BackendKind::kCpu;
    }
  }
  switch (kind) {
    case BackendKind::kCpu:
      return std::unique_ptr<Backend>(new CpuBackend(weights, options.max_rows, HostInstances(options)));
    case BackendKind::kNoop:
      return std::unique_ptr<Backend>(new NoopBackend(weights, options.max_rows, HostInstances(options)));
    case BackendKind::kCuda: {
#ifdef FP8SERVE_HAVE_CUDA
      absl::StatusOr<std::unique_ptr<Backend>> cuda = CreateCudaBackend(options, weights);
      if (!cuda.ok() && options.kind == BackendKind::kAuto && absl::IsFailedPrecondition(cuda.status())) {
        spdlog::warn("model {}: not served on the GPU ({}); serving it on the CPU backend", options.model,
                     std::string(cuda.status().message()));
        return std::unique_ptr<Backend>(new CpuBackend(weights, options.max_rows, HostInstances(options)));
      }
      return cuda;
#else
      return absl::UnimplementedError(
          "this build has no CUDA backend (nvcc was not found when it was built); use --backend=cpu");
#endif
    }
    case BackendKind::kAuto: break;
  }
  return absl::InternalError("unreachable backend kind");
}

}  // namespace fp8serve
