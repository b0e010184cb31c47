#include "tests/server/testing/test_models.h"

#include <grpcpp/health_check_service_interface.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/mlp_fast.h"
#include "kernels/cpu/mlp_reference.h"
#include "kernels/numerics/fp8.h"
#include "server/model/mlp_model.h"
#include "spdlog/spdlog.h"

namespace fp8serve::test {

namespace fs = std::filesystem;

MlpWeights RandomMlp(const std::vector<int>& widths, uint32_t seed, Fp8Format format, ScaleGranularity granularity) {
  std::mt19937 rng(seed);
  MlpWeights m;
  for (size_t i = 0; i + 1 < widths.size(); ++i) {
    MlpLayer l;
    l.quantized = false;
    l.in = widths[i];
    l.out = widths[i + 1];
    std::normal_distribution<float> he(0.0f, std::sqrt(2.0f / static_cast<float>(l.in)));
    std::normal_distribution<float> small(0.0f, 0.1f);
    l.f32.resize(static_cast<size_t>(l.in) * l.out);
    for (float& v : l.f32) v = he(rng);
    l.bias.resize(l.out);
    for (float& v : l.bias) v = small(rng);
    m.layers.push_back(QuantizeLayer(l, format, granularity));
  }
  return m;
}

std::vector<float> RandomInputs(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) {
    x = normal(rng);
    if (std::fabs(x) < 1e-3f) x = std::copysign(1e-3f, x);
  }
  return v;
}

std::vector<float> FastOutputs(const MlpWeights& w, const std::vector<float>& x, int rows) {
  std::vector<float> y(static_cast<size_t>(rows) * w.output_dim());
  FastMlp(w).Forward(x.data(), rows, y.data());
  return y;
}

std::vector<float> ReferenceOutputs(const MlpWeights& w, const std::vector<float>& x, int rows) {
  std::vector<float> y(static_cast<size_t>(rows) * w.output_dim());
  ReferenceForward(w, x.data(), rows, y.data());
  return y;
}

::testing::AssertionResult RowsClose(const std::vector<float>& got, const std::vector<float>& want, int cols,
                                     double rel_tol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "got " << got.size() << " values, want " << want.size();
  }
  const size_t rows = want.size() / static_cast<size_t>(cols);
  for (size_t r = 0; r < rows; ++r) {
    const float* g = got.data() + r * cols;
    const float* w = want.data() + r * cols;
    double num = 0, den = 0;
    for (int k = 0; k < cols; ++k) {
      if (!std::isfinite(g[k]) || !std::isfinite(w[k])) {
        return ::testing::AssertionFailure() << "row " << r << " col " << k << ": got " << g[k] << ", want " << w[k];
      }
      num += (double(g[k]) - w[k]) * (double(g[k]) - w[k]);
      den += double(w[k]) * w[k];
    }
    const double rel = std::sqrt(num / std::max(den, 1e-30));
    if (rel > rel_tol) {
      return ::testing::AssertionFailure() << "row " << r << ": relative error " << rel << " > " << rel_tol
                                           << " (got[0]=" << g[0] << ", want[0]=" << w[0] << ")";
    }
    const int ga = static_cast<int>(std::max_element(g, g + cols) - g);
    const int wa = static_cast<int>(std::max_element(w, w + cols) - w);
    if (ga != wa && std::fabs(w[ga] - w[wa]) > rel_tol * std::sqrt(den)) {
      return ::testing::AssertionFailure() << "row " << r << ": argmax " << ga << ", want " << wa;
    }
  }
  return ::testing::AssertionSuccess();
}

// ---- Repository ---------------------------------------------------------------------------------

std::string ConfigText(const ConfigSpec& s) {
  return absl::StrCat("name: \"", s.name, "\"\nplatform: \"fp8_mlp\"\nmax_batch_size: ", s.max_batch_size,
                      "\ninput [ { name: \"", s.input_name, "\" data_type: TYPE_FP32 dims: [ ", s.input_dim,
                      " ] } ]\noutput [ { name: \"", s.output_name, "\" data_type: TYPE_FP32 dims: [ ", s.output_dim,
                      " ] } ]\n", s.extra, "\n");
}

ConfigSpec MakeSpec(const std::string& name, int max_batch_size, const std::string& extra) {
  ConfigSpec s;
  s.name = name;
  s.max_batch_size = max_batch_size;
  s.extra = extra;
  return s;
}

ModelRepository::Options RepositoryOptions(const std::string& root, ModelControlMode mode,
                                           std::vector<std::string> startup_models) {
  ModelRepository::Options o;
  o.roots = {root};
  o.mode = mode;
  o.startup_models = std::move(startup_models);
  // The CPU backend, also on a GPU machine: these suites check the server against the CPU forward
  // with tight tolerances. The GPU suites ask for BackendKind::kCuda themselves.
  o.backend = BackendKind::kCpu;
  return o;
}

TempModelRepository::TempModelRepository() {
  std::string tmpl = ::testing::TempDir();
  if (!tmpl.empty() && tmpl.back() != '/') tmpl += '/';
  tmpl += "fp8serve_repo_XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp " << tmpl << ": " << std::strerror(errno);
  root_ = tmpl;
}

TempModelRepository::~TempModelRepository() {
  std::error_code ec;
  fs::remove_all(root_, ec);
}

std::string TempModelRepository::WeightsPath(const std::string& model, int64_t version) const {
  return absl::StrCat(ModelDir(model), "/", version, "/model.safetensors");
}

namespace {

// A hidden name next to `path`: the repository ignores dot-files, and rename() within one folder is
// atomic.
std::string TempNameFor(const std::string& path) {
  static std::atomic<int> counter{0};
  const fs::path p(path);
  return (p.parent_path() / absl::StrCat(".tmp-", getpid(), "-", counter++, "-", p.filename().string())).string();
}

void MoveIntoPlace(const std::string& tmp, const std::string& path) {
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) ADD_FAILURE() << "rename " << tmp << " -> " << path << ": " << ec.message();
}

}  // namespace

void TempModelRepository::WriteFile(const std::string& relative_path, const std::string& bytes) {
  const std::string path = root_ + "/" + relative_path;
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  const std::string tmp = TempNameFor(path);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) ADD_FAILURE() << "cannot write " << tmp;
  }
  MoveIntoPlace(tmp, path);
}

void TempModelRepository::WriteConfig(const std::string& model, const std::string& text) {
  WriteFile(model + "/config.pbtxt", text);
}

void TempModelRepository::WriteWeights(const std::string& model, int64_t version, const MlpWeights& weights) {
  const std::string path = WeightsPath(model, version);
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  const std::string tmp = TempNameFor(path);
  if (absl::Status st = SaveMlpModel(tmp, weights); !st.ok()) ADD_FAILURE() << "SaveMlpModel: " << st;
  MoveIntoPlace(tmp, path);
}

void TempModelRepository::RemoveModel(const std::string& model) {
  std::error_code ec;
  fs::remove_all(ModelDir(model), ec);
  if (ec) ADD_FAILURE() << "remove " << ModelDir(model) << ": " << ec.message();
}

void TempModelRepository::AddModel(ConfigSpec spec, const MlpWeights& weights, const std::vector<int64_t>& versions) {
  spec.input_dim = weights.input_dim();
  spec.output_dim = weights.output_dim();
  WriteConfig(spec.name, ConfigText(spec));
  for (int64_t v : versions) WriteWeights(spec.name, v, weights);
}

// ---- Server -------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<TestServer>> TestServer::Start(const ModelRepository::Options& repository_options,
                                                              Options options) {
  // Loads and unloads log at info; keep test output to warnings and errors (failed loads).
  spdlog::set_level(spdlog::level::warn);
  std::unique_ptr<TestServer> s(new TestServer());
  ModelRepository::Options ro = repository_options;
  if (options.metrics) {
    ServerMetrics::Options mo;
    mo.version = "test";
    mo.backend = BackendKindName(ro.backend == BackendKind::kAuto ? ResolveAutoBackend(nullptr) : ro.backend);
    mo.nvml_library = options.nvml_library;
    s->metrics_ = std::make_unique<ServerMetrics>(mo);
    if (!options.metrics_address.empty()) {
      absl::StatusOr<std::unique_ptr<MetricsEndpoint>> ep = MetricsEndpoint::Start(options.metrics_address, *s->metrics_);
      if (!ep.ok()) return ep.status();
      s->metrics_endpoint_ = *std::move(ep);
    }
    ro.metrics = s->metrics_.get();
  }
  absl::StatusOr<std::unique_ptr<ModelRepository>> repo = ModelRepository::Create(ro);
  if (!repo.ok()) return repo.status();
  s->repository_ = *std::move(repo);
  s->service_ = std::make_unique<InferenceService>(s->repository_.get(),
                                                   InferenceService::Options{"fp8serve", "test", s->metrics_.get()});

  grpc::EnableDefaultHealthCheckService(true);  // read when the server is built
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &s->port_);
  builder.RegisterService(s->service_.get());
  if (options.max_receive_message_size >= 0) builder.SetMaxReceiveMessageSize(options.max_receive_message_size);
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr) return absl::InternalError("grpc::ServerBuilder::BuildAndStart failed");
  if (s->port_ <= 0) return absl::InternalError(absl::StrCat("no port was bound (got ", s->port_, ")"));

  s->channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", s->port_), grpc::InsecureChannelCredentials());
  if (!s->channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    return absl::UnavailableError(absl::StrCat("cannot connect to 127.0.0.1:", s->port_));
  }
  s->stub_ = inference::GRPCInferenceService::NewStub(s->channel_);
  return s;
}

TestServer::~TestServer() {
  if (server_ != nullptr) {
    // Waits for in-flight calls (they finish from the batch threads) before the models go away.
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
    server_.reset();
  }
  stub_.reset();
  service_.reset();
  repository_.reset();
  metrics_endpoint_.reset();
  metrics_.reset();
}

std::unique_ptr<inference::GRPCInferenceService::Stub> TestServer::NewStub() const {
  return inference::GRPCInferenceService::NewStub(channel_);
}

// ---- Client helpers -----------------------------------------------------------------------------

void SetDeadline(grpc::ClientContext& ctx, absl::Duration timeout) {
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

const char* WireName(Wire wire) {
  switch (wire) {
    case Wire::kFp32Raw: return "Fp32Raw";
    case Wire::kFp16Raw: return "Fp16Raw";
    case Wire::kBf16Raw: return "Bf16Raw";
    case Wire::kFp32Typed: return "Fp32Typed";
  }
  return "?";
}

inference::ModelInferRequest MakeInferRequest(const std::string& model, const std::string& input_name,
                                              const std::vector<float>& x, int rows, int width, Wire wire,
                                              bool batched) {
  inference::ModelInferRequest req;
  req.set_model_name(model);
  auto* in = req.add_inputs();
  in->set_name(input_name);
  if (batched) in->add_shape(rows);
  in->add_shape(width);
  const size_t n = static_cast<size_t>(rows) * width;
  switch (wire) {
    case Wire::kFp32Raw:
      in->set_datatype("FP32");
      req.add_raw_input_contents()->assign(reinterpret_cast<const char*>(x.data()), n * sizeof(float));
      break;
    case Wire::kFp32Typed:
      in->set_datatype("FP32");
      in->mutable_contents()->mutable_fp32_contents()->Add(x.begin(), x.begin() + static_cast<std::ptrdiff_t>(n));
      break;
    case Wire::kFp16Raw:
    case Wire::kBf16Raw: {
      in->set_datatype(wire == Wire::kFp16Raw ? "FP16" : "BF16");
      std::string raw(n * 2, '\0');
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = wire == Wire::kFp16Raw ? FloatToF16(x[i]) : FloatToBf16(x[i]);
        std::memcpy(raw.data() + 2 * i, &h, 2);  // little-endian host, as the protocol's raw bytes
      }
      *req.add_raw_input_contents() = std::move(raw);
      break;
    }
  }
  return req;
}

std::vector<float> WireRounded(const std::vector<float>& x, Wire wire) {
  std::vector<float> out = x;
  for (float& v : out) {
    if (wire == Wire::kFp16Raw) v = F16ToFloat(FloatToF16(v));
    if (wire == Wire::kBf16Raw) v = Bf16ToFloat(FloatToBf16(v));
  }
  return out;
}

std::vector<float> OutputValues(const inference::ModelInferResponse& resp) {
  if (resp.raw_output_contents_size() == 0) return {};
  const std::string& raw = resp.raw_output_contents(0);
  std::vector<float> v(raw.size() / sizeof(float));
  std::memcpy(v.data(), raw.data(), v.size() * sizeof(float));
  return v;
}

grpc::Status Infer(inference::GRPCInferenceService::Stub& stub, const inference::ModelInferRequest& req,
                   inference::ModelInferResponse* resp, absl::Duration timeout) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, timeout);
  return stub.ModelInfer(&ctx, req, resp);
}

}  // namespace fp8serve::test
