#include "server/execution/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_mlp.h"
#include "spdlog/spdlog.h"

namespace fp8serve {

namespace {

#define FP8SERVE_RETURN_IF_ERROR(expr)      \
  do {                                      \
    const absl::Status fp8serve_st_ = (expr); \
    if (!fp8serve_st_.ok()) return fp8serve_st_; \
  } while (0)

double MiB(size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

// Makes `device` current on the calling thread (a no-op when it already is). The workers and the
// completion thread serve slots of every GPU the model is on.
absl::Status UseDevice(int device) {
  int current = -1;
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGetDevice(&current));
  if (current != device) FP8SERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  return absl::OkStatus();
}

// An allocation failure as the load's error: which model, GPU, what and how much, and how much was
// free. A failed allocation also leaves cudaErrorMemoryAllocation as the thread's last error, which
// a later launch check (cudaGetLastError after a kernel launch) would misreport: clear it.
absl::Status LoadAllocationError(const std::string& model, int device, const std::string& what, size_t bytes,
                                 const absl::Status& cause) {
  (void)cudaGetLastError();  // clears the recorded allocation error; the cause is in `cause`
  if (!absl::IsResourceExhausted(cause)) {
    return absl::Status(cause.code(), absl::StrCat("model ", model, ": GPU ", device, ": allocating ", what, ": ",
                                                   cause.message()));
  }
  std::vector<std::string> facts;
  if (bytes > 0) facts.push_back(absl::StrFormat("%.1f MiB", MiB(bytes)));
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
    facts.push_back(absl::StrFormat("%.1f MiB of %.1f MiB free", MiB(free_bytes), MiB(total_bytes)));
  } else {
    (void)cudaGetLastError();
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "model ", model, ": out of memory on GPU ", device, " allocating ", what, " (", absl::StrJoin(facts, "; "),
      "). Lower max_batch_size, the instance count or --cuda-streams-per-instance, or make room on the GPU. (",
      cause.message(), ")"));
}

// Whether a load's first forward failed because the GPU cannot run this build's kernels (another
// architecture than the build's sm_90a / sm_89): the model can still serve on the CPU, so this is
// FAILED_PRECONDITION, on which --backend auto falls back. CudaError names the error in its message.
absl::Status UnsupportedDeviceOr(absl::Status st, int device) {
  for (const char* name : {"cudaErrorNoKernelImageForDevice", "cudaErrorInvalidDeviceFunction",
                           "cudaErrorUnsupportedPtxVersion"}) {
    if (absl::StrContains(st.message(), name)) {
      return absl::FailedPreconditionError(
          absl::StrCat("GPU ", device, " cannot run this build's kernels (built for sm_90a and sm_89): ", st.message()));
    }
  }
  return st;
}

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<Backend>> Create(const BackendOptions& options, const MlpWeights& weights);
  ~CudaBackend() override;

  const char* name() const override { return "cuda"; }
  int input_dim() const override { return in_; }
  int output_dim() const override { return out_; }
  int max_rows() const override { return max_rows_; }
  int num_instances() const override { return instances_; }
  int num_slots() const override { return static_cast<int>(slots_.size()); }
  float* input(int slot, int) override { return slots_[static_cast<size_t>(slot)].h_in; }
  const float* output(int slot) const override { return slots_[static_cast<size_t>(slot)].h_out; }
  std::optional<absl::Status> Launch(int slot, int rows) override;
  std::optional<absl::Status> Poll(int slot) override;
  std::string Describe() const override { return describe_; }

 private:
  struct Gpu {
    int device = 0;
    std::unique_ptr<cuda::DeviceMlp> mlp;
  };
  struct Slot {
    int device = 0;
    const cuda::DeviceMlp* mlp = nullptr;
    cudaStream_t stream = nullptr;
    cudaEvent_t done = nullptr;
    float* h_in = nullptr;  // pinned [max_rows, in]
    float* h_out = nullptr; // pinned [max_rows, out]
    float* d_in = nullptr;  // [max_rows, in]
    float* d_out = nullptr; // [max_rows, out]
    std::unique_ptr<cuda::DeviceWorkspace> ws;
    // graphs[b] replays the forward of buckets_[b] rows on this slot's buffers; empty: launch directly.
    std::vector<cudaGraphExec_t> graphs;
  };

  CudaBackend(const BackendOptions& options, const MlpWeights& weights)
      : model_(options.model), in_(weights.input_dim()), out_(weights.output_dim()), max_rows_(options.max_rows),
        buckets_(CudaGraphBuckets(options.max_rows)) {}

  absl::Status Place(const BackendOptions& options, int device_count, std::vector<int>* instance_devices) const;
  absl::Status AllocateSlot(Slot& s);
  absl::Status CaptureGraphs(Slot& s);
  absl::Status WarmUp(Slot& s, bool direct);
  absl::Status Enqueue(Slot& s, int rows);
  // Frees what the slot holds; returns the first error (the rest is freed regardless).
  absl::Status ReleaseSlot(Slot& s);
  size_t in_bytes(int rows) const { return sizeof(float) * static_cast<size_t>(rows) * static_cast<size_t>(in_); }
  size_t out_bytes(int rows) const { return sizeof(float) * static_cast<size_t>(rows) * static_cast<size_t>(out_); }

  const std::string model_;
  const int in_, out_, max_rows_;
  const std::vector<int> buckets_;
  int instances_ = 0;
  std::vector<Gpu> gpus_;    // one per GPU the model is on
  std::vector<Slot> slots_;  // slot s: instance s % instances_, its (s / instances_)-th stream
  std::string describe_;
};

absl::Status CudaBackend::Place(const BackendOptions& options, int device_count,
                                std::vector<int>* instance_devices) const {
  std::vector<InstanceGroupSpec> groups = options.instance_groups;
  if (groups.empty()) groups.push_back(InstanceGroupSpec{});
  for (const InstanceGroupSpec& g : groups) {
    std::vector<int> gpus = g.gpus;
    if (gpus.empty()) {
      for (int d = 0; d < device_count; ++d) gpus.push_back(d);
    }
    for (int d : gpus) {
      if (d < 0 || d >= device_count) {
        return absl::InvalidArgumentError(absl::StrCat("model ", model_, ": instance_group lists GPU ", d, " but ",
                                                       device_count, " CUDA device(s) are visible"));
      }
    }
    // Interleaved: the group's first instance on each of its GPUs, then the second, ...
    for (int c = 0; c < g.count; ++c) {
      for (int d : gpus) instance_devices->push_back(d);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Backend>> CudaBackend::Create(const BackendOptions& options, const MlpWeights& weights) {
  if (options.cuda_streams_per_instance < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", options.model, ": --cuda-streams-per-instance must be >= 1"));
  }
  absl::StatusOr<int> device_count = CudaDeviceCount();
  if (!device_count.ok()) {
    return absl::Status(device_count.status().code(),
                        absl::StrCat("model ", options.model, ": no CUDA device: ", device_count.status().message()));
  }
  // Freed by the destructor if anything below fails: every member is released as far as it got.
  std::unique_ptr<CudaBackend> b(new CudaBackend(options, weights));
  std::vector<int> instance_devices;
  FP8SERVE_RETURN_IF_ERROR(b->Place(options, *device_count, &instance_devices));
  if (instance_devices.empty()) return absl::InvalidArgumentError(absl::StrCat("model ", options.model, ": no instances"));
  b->instances_ = static_cast<int>(instance_devices.size());

  // The weights, once per GPU.
  std::map<int, const cuda::DeviceMlp*> mlp_on;
  for (int d : instance_devices) {
    if (mlp_on.count(d) != 0) continue;
    FP8SERVE_RETURN_IF_ERROR(UseDevice(d));
    absl::StatusOr<std::unique_ptr<cuda::DeviceMlp>> mlp = cuda::DeviceMlp::Upload(weights, d);
    if (!mlp.ok()) {
      if (absl::IsResourceExhausted(mlp.status())) {
        size_t bytes = 0;
        for (const MlpLayer& l : weights.layers) bytes += l.fp8.size() + sizeof(float) * (l.scales.size() + l.bias.size());
        return LoadAllocationError(options.model, d, "the weights", bytes, mlp.status());
      }
      (void)cudaGetLastError();  // the failure is in the status; leave no stale error behind
      return absl::Status(mlp.status().code(), absl::StrCat("model ", options.model, ": GPU ", d, ": ",
                                                            mlp.status().message()));
    }
    const cuda::DeviceMlp& m = **mlp;
    if (m.input_dim() != b->in_ || m.output_dim() != b->out_) {
      return absl::InternalError(absl::StrCat("model ", options.model, ": the uploaded model is ", m.input_dim(), " -> ",
                                              m.output_dim(), ", the weights ", b->in_, " -> ", b->out_));
    }
    spdlog::info("model {}: GPU {}: weights uploaded ({:.2f} MiB), forward: {}{}", options.model, d,
                 MiB(m.weight_bytes()), m.auto_path() == cuda::ForwardPath::kFused
                     ? absl::StrCat("fused MLP kernel up to ", cuda::kFusedAutoMaxRows, " rows, GEMM chain above")
                     : std::string("GEMM chain"),
                 m.auto_path() == cuda::ForwardPath::kFused
                     ? std::string()
                     : absl::StrCat(" (the fused kernel does not take it: ", m.fused_unsupported_reason(), ")"));
    mlp_on[d] = mlp->get();
    b->gpus_.push_back(Gpu{d, *std::move(mlp)});
  }

  // The slots: instance i's k-th stream is slot k * instances + i.
  const int streams = options.cuda_streams_per_instance;
  b->slots_.resize(static_cast<size_t>(b->instances_) * static_cast<size_t>(streams));
  for (size_t s = 0; s < b->slots_.size(); ++s) {
    Slot& slot = b->slots_[s];
    slot.device = instance_devices[s % static_cast<size_t>(b->instances_)];
    slot.mlp = mlp_on[slot.device];
    FP8SERVE_RETURN_IF_ERROR(b->AllocateSlot(slot));
  }
  // Uploads and workspace initialization may have used the legacy default stream, which the
  // slots' non-blocking streams do not wait for: let them land before any slot runs. Load only.
  for (const Gpu& g : b->gpus_) {
    FP8SERVE_RETURN_IF_ERROR(UseDevice(g.device));
    FP8SERVE_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  }

  // Run every bucket once directly (this loads the kernels and checks them), then capture.
  bool graphs = options.cuda_graphs;
  std::string graph_failure;
  for (Slot& s : b->slots_) {
    if (absl::Status st = b->WarmUp(s, /*direct=*/true); !st.ok()) {
      return UnsupportedDeviceOr(
          absl::Status(st.code(), absl::StrCat("model ", options.model, ": first forward on GPU ", s.device, ": ",
                                               st.message())),
          s.device);
    }
    if (!graphs) continue;
    const absl::Status captured = b->CaptureGraphs(s);
    if (!captured.ok()) {
      graphs = false;
      graph_failure = std::string(captured.message());
    }
  }
  if (!graphs) {
    for (Slot& s : b->slots_) {
      FP8SERVE_RETURN_IF_ERROR(UseDevice(s.device));
      for (cudaGraphExec_t g : s.graphs) FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGraphExecDestroy(g));
      s.graphs.clear();
    }
    if (options.cuda_graphs) {
      spdlog::warn("model {}: CUDA graph capture failed ({}); launching the kernels directly", options.model,
                   graph_failure);
    }
  } else {
    // Replay every graph once: a bad capture fails the load, not a request.
    for (Slot& s : b->slots_) FP8SERVE_RETURN_IF_ERROR(b->WarmUp(s, /*direct=*/false));
  }

  std::vector<int> on;
  for (const Gpu& g : b->gpus_) on.push_back(g.device);
  const cuda::DeviceMlp& first = *b->gpus_.front().mlp;
  b->describe_ = absl::StrCat(
      "cuda, ", b->instances_, " instance(s) on GPU ", absl::StrJoin(on, ","), ", ", streams, " stream(s) each, ",
      first.auto_path() == cuda::ForwardPath::kFused
          ? (b->max_rows_ > cuda::kFusedAutoMaxRows ? "fused kernel (GEMM chain above " +
                                                          std::to_string(cuda::kFusedAutoMaxRows) + " rows)"
                                                    : std::string("fused kernel"))
          : std::string("GEMM chain"),
      ", ",
      graphs ? absl::StrCat("CUDA graphs for ", b->buckets_.size(), " batch sizes up to ", b->max_rows_)
             : "direct launches",
      absl::StrFormat(", %.1f MiB workspace per stream", MiB(b->slots_.front().ws->bytes())));
  return std::unique_ptr<Backend>(std::move(b));
}

absl::Status CudaBackend::AllocateSlot(Slot& s) {
  FP8SERVE_RETURN_IF_ERROR(UseDevice(s.device));
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
  // Device buffers first: on a GPU that is short of memory they fail before any pinned host memory
  // is taken.
  const size_t in = in_bytes(max_rows_), out = out_bytes(max_rows_);
  if (absl::Status st = FP8SERVE_CUDA_STATUS(cudaMalloc(&s.d_in, in)); !st.ok()) {
    return LoadAllocationError(model_, s.device, absl::StrCat("the input buffer for ", max_rows_, " rows"), in, st);
  }
  if (absl::Status st = FP8SERVE_CUDA_STATUS(cudaMalloc(&s.d_out, out)); !st.ok()) {
    return LoadAllocationError(model_, s.device, absl::StrCat("the output buffer for ", max_rows_, " rows"), out, st);
  }
  absl::StatusOr<std::unique_ptr<cuda::DeviceWorkspace>> ws = s.mlp->AllocateWorkspace(max_rows_);
  if (!ws.ok()) {
    return LoadAllocationError(model_, s.device, absl::StrCat("the forward's workspace for ", max_rows_, " rows"), 0,
                               ws.status());
  }
  s.ws = *std::move(ws);
  if (absl::Status st = FP8SERVE_CUDA_STATUS(cudaHostAlloc(&s.h_in, in, cudaHostAllocPortable)); !st.ok()) {
    return LoadAllocationError(model_, s.device, absl::StrCat("pinned host staging for ", max_rows_, " input rows"), in,
                               st);
  }
  if (absl::Status st = FP8SERVE_CUDA_STATUS(cudaHostAlloc(&s.h_out, out, cudaHostAllocPortable)); !st.ok()) {
    return LoadAllocationError(model_, s.device, absl::StrCat("pinned host staging for ", max_rows_, " output rows"),
                               out, st);
  }
  // A bucket larger than a batch reads the rows past it: make them zeros, not uninitialized memory.
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(s.d_in, 0, in, s.stream));
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s.stream));
  return absl::OkStatus();
}

absl::Status CudaBackend::CaptureGraphs(Slot& s) {
  FP8SERVE_RETURN_IF_ERROR(UseDevice(s.device));
  for (int rows : buckets_) {
    cudaGraph_t graph = nullptr;
    // NOTES: thread-local capture mode: other threads (other models' workers) keep launching on
    // their own streams while this one captures; only this thread's unsafe calls are refused.
    FP8SERVE_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(s.stream, cudaStreamCaptureModeThreadLocal));
    const absl::Status forward = s.mlp->Forward(s.d_in, rows, s.d_out, *s.ws, s.stream);
    // Always end the capture, so that the stream is usable again whatever happened.
    const cudaError_t ended = cudaStreamEndCapture(s.stream, &graph);
    if (!forward.ok() || ended != cudaSuccess) {
      if (graph != nullptr) (void)cudaGraphDestroy(graph);
      (void)cudaGetLastError();  // capture errors are not sticky; the reason is returned below
      return !forward.ok() ? forward : CudaError(ended, "cudaStreamEndCapture", __FILE__, __LINE__);
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    const cudaError_t destroyed = cudaGraphDestroy(graph);  // the executable graph does not need it
    if (instantiated != cudaSuccess) {
      (void)cudaGetLastError();
      return CudaError(instantiated, "cudaGraphInstantiate", __FILE__, __LINE__);
    }
    s.graphs.push_back(exec);  // owned by the slot from here on, even if a check below fails
    FP8SERVE_CUDA_RETURN_IF_ERROR(destroyed);
    // Upload now rather than on first launch.
    FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGraphUpload(exec, s.stream));
  }
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s.stream));
  return absl::OkStatus();
}

absl::Status CudaBackend::WarmUp(Slot& s, bool direct) {
  FP8SERVE_RETURN_IF_ERROR(UseDevice(s.device));
  for (size_t b = 0; b < buckets_.size(); ++b) {
    if (direct) {
      FP8SERVE_RETURN_IF_ERROR(s.mlp->Forward(s.d_in, buckets_[b], s.d_out, *s.ws, s.stream));
    } else {
      FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(s.graphs[b], s.stream));
    }
  }
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s.stream));
  return absl::OkStatus();
}

absl::Status CudaBackend::Enqueue(Slot& s, int rows) {
  if (rows < 1 || rows > max_rows_) {
    return absl::InvalidArgumentError(absl::StrCat("batch of ", rows, " rows; the model takes 1 to ", max_rows_));
  }
  FP8SERVE_RETURN_IF_ERROR(UseDevice(s.device));
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.d_in, s.h_in, in_bytes(rows), cudaMemcpyHostToDevice, s.stream));
  if (!s.graphs.empty()) {
    const size_t b = static_cast<size_t>(std::lower_bound(buckets_.begin(), buckets_.end(), rows) - buckets_.begin());
    FP8SERVE_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(s.graphs[b], s.stream));
  } else {
    FP8SERVE_RETURN_IF_ERROR(s.mlp->Forward(s.d_in, rows, s.d_out, *s.ws, s.stream));
  }
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.h_out, s.d_out, out_bytes(rows), cudaMemcpyDeviceToHost, s.stream));
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaEventRecord(s.done, s.stream));
  return absl::OkStatus();
}

std::optional<absl::Status> CudaBackend::Launch(int slot, int rows) {
  Slot& s = slots_[static_cast<size_t>(slot)];
  const absl::Status st = Enqueue(s, rows);
  if (st.ok()) return std::nullopt;
  // Part of the batch may have reached the stream: the slot is handed back with this error, so
  // nothing of it may still run (this stream only; error path).
  (void)cudaStreamSynchronize(s.stream);
  return st;
}

std::optional<absl::Status> CudaBackend::Poll(int slot) {
  Slot& s = slots_[static_cast<size_t>(slot)];
  if (absl::Status st = UseDevice(s.device); !st.ok()) return st;
  const cudaError_t e = cudaEventQuery(s.done);
  if (e == cudaErrorNotReady) return std::nullopt;
  if (e == cudaSuccess) return absl::OkStatus();
  (void)cudaStreamSynchronize(s.stream);  // error path: see Launch
  return CudaError(e, "cudaEventQuery(the batch's completion event)", __FILE__, __LINE__);
}

absl::Status CudaBackend::ReleaseSlot(Slot& s) {
  absl::Status first = UseDevice(s.device);
  auto keep = [&first](absl::Status st) {
    if (first.ok()) first = std::move(st);
  };
  // Nothing of this slot may still run when its buffers go.
  if (s.stream != nullptr) keep(FP8SERVE_CUDA_STATUS(cudaStreamSynchronize(s.stream)));
  for (cudaGraphExec_t g : s.graphs) keep(FP8SERVE_CUDA_STATUS(cudaGraphExecDestroy(g)));
  s.graphs.clear();
  s.ws.reset();
  if (s.d_in != nullptr) keep(FP8SERVE_CUDA_STATUS(cudaFree(s.d_in)));
  if (s.d_out != nullptr) keep(FP8SERVE_CUDA_STATUS(cudaFree(s.d_out)));
  if (s.h_in != nullptr) keep(FP8SERVE_CUDA_STATUS(cudaFreeHost(s.h_in)));
  if (s.h_out != nullptr) keep(FP8SERVE_CUDA_STATUS(cudaFreeHost(s.h_out)));
  if (s.done != nullptr) keep(FP8SERVE_CUDA_STATUS(cudaEventDestroy(s.done)));
  if (s.stream != nullptr) keep(FP8SERVE_CUDA_STATUS(cudaStreamDestroy(s.stream)));
  s = Slot{};
  return first;
}

CudaBackend::~CudaBackend() {
  absl::Status first;
  for (Slot& s : slots_) {
    absl::Status st = ReleaseSlot(s);
    if (first.ok()) first = std::move(st);
  }
  slots_.clear();
  gpus_.clear();  // the weights, after every slot that used them
  if (!first.ok()) spdlog::warn("model {}: releasing its GPU resources: {}", model_, std::string(first.message()));
}

}  // namespace

std::vector<int> CudaGraphBuckets(int max_rows) {
  std::vector<int> buckets;
  for (int b = 1; b < max_rows; b *= 2) buckets.push_back(b);
  buckets.push_back(max_rows);
  return buckets;
}

std::string CudaDevicesSummary(int count) {
  std::vector<std::string> parts;
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp p{};
    if (const cudaError_t e = cudaGetDeviceProperties(&p, d); e != cudaSuccess) {
      parts.push_back(absl::StrCat("GPU ", d, " (", cudaGetErrorString(e), ")"));
      continue;
    }
    parts.push_back(absl::StrFormat("GPU %d %s (sm_%d%d, %d SMs, %.0f GiB)", d, p.name, p.major, p.minor,
                                    p.multiProcessorCount, static_cast<double>(p.totalGlobalMem) / (1 << 30)));
  }
  return absl::StrCat(count, " CUDA device", count == 1 ? "" : "s", ": ", absl::StrJoin(parts, "; "));
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const BackendOptions& options, const MlpWeights& weights) {
  return CudaBackend::Create(options, weights);
}

}  // namespace fp8serve
