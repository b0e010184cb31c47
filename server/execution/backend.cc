#include "server/execution/backend.h"

#include <cblas.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/mlp_fast.h"

namespace fp8serve {

namespace {

class CpuBackend final : public Backend {
 public:
  CpuBackend(const MlpWeights& w, int instances) : mlp_(w), scratch_(instances) {}
  const char* name() const override { return "cpu"; }
  int input_dim() const override { return mlp_.input_dim(); }
  int output_dim() const override { return mlp_.output_dim(); }
  absl::Status Run(int instance, const float* x, int rows, float* y) override {
    mlp_.Forward(x, rows, y, scratch_[instance]);
    return absl::OkStatus();
  }

 private:
  const FastMlp mlp_;
  std::vector<FastMlp::Scratch> scratch_;  // one per instance: Run is reentrant across instances
};

class NoopBackend final : public Backend {
 public:
  explicit NoopBackend(const MlpWeights& w) : in_(w.input_dim()), out_(w.output_dim()) {}
  const char* name() const override { return "noop"; }
  int input_dim() const override { return in_; }
  int output_dim() const override { return out_; }
  absl::Status Run(int, const float*, int rows, float* y) override {
    std::memset(y, 0, sizeof(float) * static_cast<size_t>(rows) * out_);
    return absl::OkStatus();
  }

 private:
  int in_, out_;
};

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
  // The CUDA execution backend is not built yet: every machine serves on the CPU, with the same numerics.
  if (why != nullptr) *why = "the CUDA execution backend is not part of this build; serving on the CPU";
  return BackendKind::kCpu;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(BackendKind kind, const MlpWeights& weights, int instances,
                                                       int max_rows) {
  (void)max_rows;  // the CPU backends size their scratch on first use
  if (instances < 1) return absl::InvalidArgumentError("a backend needs at least one instance");
  if (kind == BackendKind::kAuto) kind = ResolveAutoBackend(nullptr);
  switch (kind) {
    case BackendKind::kCpu: return std::unique_ptr<Backend>(new CpuBackend(weights, instances));
    case BackendKind::kNoop: return std::unique_ptr<Backend>(new NoopBackend(weights));
    case BackendKind::kCuda:
      return absl::UnimplementedError("the CUDA execution backend is not available in this build (use --backend=cpu)");
    case BackendKind::kAuto: break;
  }
  return absl::InternalError("unreachable backend kind");
}

}  // namespace fp8serve
