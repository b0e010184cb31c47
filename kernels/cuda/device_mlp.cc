// DeviceMlp: upload in the padded device layout, and the forward (fused kernel or GEMM chain).
#include "kernels/cuda/device_mlp.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/act_quant.h"
#include "kernels/cuda/cuda_status.h"

namespace fp8serve::cuda {

namespace {

int RoundUp128(int v) { return (v + kGemmBlockK - 1) / kGemmBlockK * kGemmBlockK; }

// Makes `device` current for a scope and restores the caller's device after it: the server's
// threads serve models on several GPUs.
class ScopedDevice {
 public:
  explicit ScopedDevice(int device) {
    status_ = FP8SERVE_CUDA_STATUS(cudaGetDevice(&previous_));
    if (status_.ok() && previous_ != device) status_ = FP8SERVE_CUDA_STATUS(cudaSetDevice(device));
  }
  ~ScopedDevice() {
    if (status_.ok()) cudaSetDevice(previous_);
  }
  const absl::Status& status() const { return status_; }

 private:
  int previous_ = 0;
  absl::Status status_;
};

// cudaMalloc into `owned`, with out-of-memory reported as RESOURCE_EXHAUSTED and what was asked for.
template <typename T>
absl::Status DeviceAlloc(size_t count, std::vector<void*>& owned, T** out, std::string_view what) {
  void* p = nullptr;
  const size_t bytes = std::max<size_t>(count * sizeof(T), 1);
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // an allocation failure is not sticky: clear it so a later check does not see it
    size_t free_bytes = 0, total = 0;
    cudaMemGetInfo(&free_bytes, &total);
    return absl::ResourceExhaustedError(absl::StrCat("GPU out of memory allocating ", bytes, " bytes for ", std::string(what),
                                                     " (", free_bytes >> 20, " MiB free of ", total >> 20, " MiB)"));
  }
  if (err != cudaSuccess) return CudaError(err, "cudaMalloc", __FILE__, __LINE__);
  owned.push_back(p);
  *out = static_cast<T*>(p);
  return absl::OkStatus();
}

template <typename T>
absl::Status Upload(const std::vector<T>& host, std::vector<void*>& owned, T** out, std::string_view what) {
  if (absl::Status st = DeviceAlloc(host.size(), owned, out, what); !st.ok()) return st;
  FP8SERVE_CUDA_RETURN_IF_ERROR(cudaMemcpy(*out, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return absl::OkStatus();
}

void FreeAll(std::vector<void*>& owned) {
  for (void* p : owned) cudaFree(p);
  owned.clear();
}

}  // namespace

const char* ForwardPathName(ForwardPath p) {
  switch (p) {
    case ForwardPath::kAuto: return "auto";
    case ForwardPath::kFused: return "fused";
    case ForwardPath::kChain: return "chain";
  }
  return "?";
}

DeviceWorkspace::~DeviceWorkspace() {
  ScopedDevice on(device_);
  for (void* p : {static_cast<void*>(act_[0]), static_cast<void*>(act_[1]), static_cast<void*>(act_scales_[0]),
                  static_cast<void*>(act_scales_[1]), gemm_workspace_}) {
    if (p != nullptr) cudaFree(p);
  }
}

DeviceMlp::~DeviceMlp() {
  ScopedDevice on(device_);
  FreeAll(allocations_);
}

absl::StatusOr<std::unique_ptr<DeviceMlp>> DeviceMlp::Upload(const MlpWeights& weights, int device,
                                                             const DeviceMlpOptions& options) {
  if (weights.layers.empty()) return absl::InvalidArgumentError("the model has no layers");
  for (size_t i = 0; i < weights.layers.size(); ++i) {
    const MlpLayer& l = weights.layers[i];
    if (!l.quantized) {
      return absl::FailedPreconditionError(
          absl::StrCat("layer ", i, " is not FP8 (unquantized weights): the CUDA backend serves FP8 layers only"));
    }
    if (i > 0 && l.in != weights.layers[i - 1].out) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", i, " takes ", l.in, " inputs but layer ", i - 1,
                                                     " gives ", weights.layers[i - 1].out));
    }
  }
  ScopedDevice on(device);
  if (!on.status().ok()) return on.status();
  absl::StatusOr<DeviceTraits> traits = QueryDeviceTraits(device);
  if (!traits.ok()) return traits.status();
  const bool tiled = options.chain_weights == WeightLayout::kTiled128;
  if (tiled && !(traits->cc_major == 9 && traits->cc_minor == 0)) {
    return absl::FailedPreconditionError(absl::StrCat("tiled chain weights need the sm90 GEMM (compute capability ",
                                                      "9.0); GPU ", device, " is ", traits->cc_major, ".",
                                                      traits->cc_minor));
  }

  std::unique_ptr<DeviceMlp> m(new DeviceMlp());
  m->device_ = device;
  m->traits_ = *traits;
  m->relu_ = weights.activation == Activation::kRelu;
  m->chain_weights_ = options.chain_weights;
  m->input_dim_ = weights.input_dim();
  m->output_dim_ = weights.output_dim();
  // Tiled chain weights: the padded row-major codes stay on the host until the fused kernel is known
  // to take the model (only it reads them), so the GPU never holds a copy that is then dropped
  std::vector<std::vector<uint8_t>> row_major_codes;
  for (size_t i = 0; i < weights.layers.size(); ++i) {
    const MlpLayer& src = weights.layers[i];
    Layer l;
    l.n = src.out;
    l.k = src.in;
    l.n_pad = RoundUp128(src.out);
    l.k_pad = RoundUp128(src.in);
    l.format = src.format;
    m->max_k_pad_ = std::max(m->max_k_pad_, l.k_pad);
    const std::string what = absl::StrCat("layer ", i);

    // Codes [n_pad, k_pad], zero padded.
    std::vector<uint8_t> w(static_cast<size_t>(l.n_pad) * l.k_pad, 0);
    for (int r = 0; r < l.n; ++r) {
      std::memcpy(w.data() + static_cast<size_t>(r) * l.k_pad, src.fp8.data() + static_cast<size_t>(r) * l.k, l.k);
    }
    // Scales: [n_pad/128, k_pad/128] blocks, plus per-channel column scales (padding: 1).
    const int nb = l.n_pad / kGemmBlockK, kb = l.k_pad / kGemmBlockK;
    std::vector<float> bs(static_cast<size_t>(nb) * kb, 1.0f);
    std::vector<float> cs;
    switch (src.granularity) {
      case ScaleGranularity::kPerTensor: std::fill(bs.begin(), bs.end(), src.scales.at(0)); break;
      case ScaleGranularity::kBlock128: bs = src.scales; break;  // already [ceil(n/128), ceil(k/128)]
      case ScaleGranularity::kPerChannel:
        cs.assign(l.n_pad, 1.0f);
        std::copy(src.scales.begin(), src.scales.end(), cs.begin());
        break;
    }
    if (bs.size() != static_cast<size_t>(nb) * kb) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", bs.size(), " block scales, expected ", nb * kb));
    }
    if (tiled) {
      std::vector<uint8_t> t(w.size());
      if (absl::Status st = TileWeights128(w.data(), l.n_pad, l.k_pad, t.data()); !st.ok()) return st;
      if (absl::Status st = fp8serve::cuda::Upload(t, m->allocations_, &l.w_tiled, what); !st.ok()) return st;
      row_major_codes.push_back(std::move(w));
    } else {
      if (absl::Status st = fp8serve::cuda::Upload(w, m->allocations_, &l.w, what); !st.ok()) return st;
    }
    if (absl::Status st = fp8serve::cuda::Upload(bs, m->allocations_, &l.b_scales, what); !st.ok()) return st;
    if (!cs.empty()) {
      if (absl::Status st = fp8serve::cuda::Upload(cs, m->allocations_, &l.col_scales, what); !st.ok()) return st;
    }
    if (!src.bias.empty()) {
      std::vector<float> bias(l.n_pad, 0.0f);
      std::copy(src.bias.begin(), src.bias.end(), bias.begin());
      if (absl::Status st = fp8serve::cuda::Upload(bias, m->allocations_, &l.bias, what); !st.ok()) return st;
    }
    m->weight_bytes_ += static_cast<size_t>(l.n_pad) * l.k_pad +
                        (bs.size() + cs.size() + (src.bias.empty() ? 0 : l.n_pad)) * sizeof(float);
    m->layers_.push_back(l);
  }

  if (m->layers_.size() > static_cast<size_t>(kFusedMaxLayers)) {
    m->fused_why_ = absl::StrCat(m->layers_.size(), " layers (the fused kernel takes at most ", kFusedMaxLayers, ")");
  } else if (const FusedMlpArgs probe = m->FusedProbe();
             !FusedMlpSupported(probe, m->traits_, &m->fused_why_)) {
    if (m->fused_why_.empty()) m->fused_why_ = "not supported by the fused kernel";
  } else {
    m->fused_why_.clear();
  }
  m->auto_path_ = m->fused_why_.empty() ? ForwardPath::kFused : ForwardPath::kChain;
  // With tiled chain weights, a row-major copy only for the fused kernel
  if (tiled && m->fused_why_.empty()) {
    for (size_t i = 0; i < m->layers_.size(); ++i) {
      Layer& l = m->layers_[i];
      if (absl::Status st = fp8serve::cuda::Upload(row_major_codes[i], m->allocations_, &l.w, absl::StrCat("layer ", i));
          !st.ok()) {
        return st;
      }
      m->weight_bytes_ += row_major_codes[i].size();
    }
  }
  return m;
}

FusedMlpArgs DeviceMlp::FusedProbe() const {
  FusedMlpArgs a = FusedArgs(nullptr, 1, nullptr);
  // Before a tiled model's row-major copy exists, the tiled copy stands in: the same size and
  // alignment, and the fused kernel's checks look at no more than that of the weights
  for (size_t i = 0; i < layers_.size() && i < static_cast<size_t>(kFusedMaxLayers); ++i) {
    if (a.layers[i].w == nullptr) a.layers[i].w = layers_[i].w_tiled;
  }
  return a;
}

GemmShape DeviceMlp::ChainShape(size_t i, int rows) const {
  const Layer& l = layers_[i];
  return GemmShape{rows,
                   l.n_pad,
                   l.k_pad,
                   l.format,
                   i + 1 == layers_.size() ? GemmOutput::kF32 : GemmOutput::kE4M3,
                   l.w_tiled != nullptr ? WeightLayout::kTiled128 : WeightLayout::kRowMajor};
}

FusedMlpArgs DeviceMlp::FusedArgs(const float* x, int rows, float* y) const {
  FusedMlpArgs a;
  a.m = rows;
  a.x = x;
  a.y = y;
  a.relu = relu_;
  a.num_layers = static_cast<int>(layers_.size());
  for (size_t i = 0; i < layers_.size() && i < static_cast<size_t>(kFusedMaxLayers); ++i) {
    const Layer& l = layers_[i];
    a.layers[i] = FusedMlpLayer{l.n, l.k, l.n_pad, l.k_pad, l.w, l.format, l.b_scales, l.col_scales, l.bias};
  }
  return a;
}

absl::StatusOr<std::unique_ptr<DeviceWorkspace>> DeviceMlp::AllocateWorkspace(int max_rows) const {
  if (max_rows < 1) return absl::InvalidArgumentError(absl::StrCat("workspace for ", max_rows, " rows"));
  ScopedDevice on(device_);
  if (!on.status().ok()) return on.status();
  std::unique_ptr<DeviceWorkspace> ws(new DeviceWorkspace());
  ws->device_ = device_;
  ws->max_rows_ = max_rows;
  // Split-K scratch: the most any layer needs at any row count up to max_rows (the heuristic is
  // a few hundred nanoseconds per call, so asking it for every count is cheap at load).
  size_t gemm_ws = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    for (int m = 1; m <= max_rows; ++m) {
      const GemmShape shape = ChainShape(i, m);
      absl::StatusOr<GemmConfig> c = SelectGemmConfig(shape, traits_);
      if (!c.ok()) return c.status();
      gemm_ws = std::max(gemm_ws, GemmWorkspaceBytes(shape, *c));
    }
  }
  // Allocations go into a local list first and move into the workspace's fields; on error the
  // list is freed, so nothing leaks.
  std::vector<void*> owned;
  const size_t act = static_cast<size_t>(max_rows) * max_k_pad_;
  const size_t act_scales = static_cast<size_t>(max_rows) * (max_k_pad_ / kGemmBlockK);
  absl::Status st = DeviceAlloc(act, owned, &ws->act_[0], "activations");
  if (st.ok()) st = DeviceAlloc(act, owned, &ws->act_[1], "activations");
  if (st.ok()) st = DeviceAlloc(act_scales, owned, &ws->act_scales_[0], "activation scales");
  if (st.ok()) st = DeviceAlloc(act_scales, owned, &ws->act_scales_[1], "activation scales");
  uint8_t* gemm = nullptr;
  if (st.ok() && gemm_ws > 0) st = DeviceAlloc(gemm_ws, owned, &gemm, "split-K workspace");
  // NOTES: zeroed on a stream that is then synchronized: a plain cudaMemset runs on the legacy
  // default stream, which the callers' non-blocking streams do not wait for, so a first split-K
  // launch could otherwise find its tile counters not yet zero.
  if (st.ok() && gemm_ws > 0) st = FP8SERVE_CUDA_STATUS(cudaMemsetAsync(gemm, 0, gemm_ws, cudaStreamPerThread));
  if (st.ok() && gemm_ws > 0) st = FP8SERVE_CUDA_STATUS(cudaStreamSynchronize(cudaStreamPerThread));
  if (!st.ok()) {
    FreeAll(owned);
    ws->act_[0] = ws->act_[1] = nullptr;
    ws->act_scales_[0] = ws->act_scales_[1] = nullptr;
    return st;
  }
  ws->gemm_workspace_ = gemm;
  ws->gemm_workspace_bytes_ = gemm_ws;
  ws->bytes_ = 2 * act + 2 * act_scales * sizeof(float) + gemm_ws;
  return ws;
}

absl::Status DeviceMlp::Forward(const float* x, int rows, float* y, DeviceWorkspace& ws, cudaStream_t stream,
                                ForwardPath path) const {
  if (rows < 1 || rows > ws.max_rows()) {
    return absl::InvalidArgumentError(absl::StrCat("forward of ", rows, " rows with a workspace for ", ws.max_rows()));
  }
  if (ws.device_ != device_) {
    return absl::InvalidArgumentError(
        absl::StrCat("workspace on GPU ", ws.device_, " used with a model on GPU ", device_));
  }
  if (path == ForwardPath::kAuto) path = AutoPath(rows);
  if (path == ForwardPath::kFused) {
    if (!fused_why_.empty()) return absl::FailedPreconditionError(absl::StrCat("fused MLP kernel: ", fused_why_));
    return LaunchFusedMlp(FusedArgs(x, rows, y), traits_, stream);
  }
  return ForwardChain(x, rows, y, ws, stream);
}

absl::Status DeviceMlp::ForwardChain(const float* x, int rows, float* y, DeviceWorkspace& ws,
                                     cudaStream_t stream) const {
  // Layer 0's input: quantize the FP32 rows into the padded E4M3 layout.
  int cur = 0;
  if (absl::Status st = QuantizeActivations1x128(x, rows, layers_[0].k, ws.act_[0], layers_[0].k_pad,
                                                 ws.act_scales_[0], stream);
      !st.ok()) {
    return st;
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    const bool last = i + 1 == layers_.size();
    const GemmShape shape = ChainShape(i, rows);
    Fp8GemmArgs a;
    a.m = shape.m;
    a.n = shape.n;
    a.k = shape.k;
    a.a = ws.act_[cur];
    a.a_scales = ws.act_scales_[cur];
    a.b = l.w_tiled != nullptr ? l.w_tiled : l.w;
    a.b_layout = shape.b_layout;
    a.b_format = shape.b_format;
    a.output = shape.output;
    a.b_scales = l.b_scales;
    a.col_scales = l.col_scales;
    a.bias = l.bias;
    a.relu = !last && relu_;
    a.workspace = ws.gemm_workspace_;
    if (last) {
      // Logits: FP32, only the model's real columns.
      a.d = y;
      a.ldd = l.n;
      a.n_store = l.n;
    } else {
      // Hidden: requantized for the next layer, whose padded K is this layer's padded N.
      a.d = ws.act_[1 - cur];
      a.ldd = l.n_pad;
      a.n_store = l.n_pad;
      a.d_scales = ws.act_scales_[1 - cur];
    }
    absl::StatusOr<GemmConfig> c = SelectGemmConfig(shape, traits_);
    if (!c.ok()) return c.status();
    if (GemmWorkspaceBytes(shape, *c) > ws.gemm_workspace_bytes_) {
      return absl::InternalError(absl::StrCat("layer ", i, " needs more split-K workspace than was allocated"));
    }
    if (absl::Status st = LaunchFp8Gemm(a, *c, stream); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("layer ", i, ": ", st.message()));
    }
    cur = 1 - cur;
  }
  return absl::OkStatus();
}

}  // namespace fp8serve::cuda
