// Test support for the server: random FP8 MLPs, temporary Triton-layout model repositories, an
// in-process gRPC server on loopback, and client-side helpers (requests, deadlines, comparisons).
//
// A typical test:
//   test::TempModelRepository repo;
//   const MlpWeights w = test::RandomMlp({784, 64, 10}, /*seed=*/1);
//   repo.AddModel(test::MakeSpec("mlp", /*max_batch_size=*/8), w);
//   auto server = test::TestServer::Start(test::RepositoryOptions(repo.root()));
//   inference::ModelInferResponse resp;
//   grpc::Status st = test::Infer((*server)->stub(), test::MakeInferRequest("mlp", "input", x, rows, 784), &resp);
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpc_service.grpc.pb.h"
#include "gtest/gtest.h"
#include "kernels/mlp_weights.h"
#include "server/grpc/inference_service.h"
#include "server/metrics/metrics.h"
#include "server/repository/model_repository.h"

namespace fp8serve::test {

// Width of the test models' input (Fashion-MNIST's 28x28).
inline constexpr int kIn = 784;
// Tolerances for RowsClose. The server (fast forward) and the reference differ only in FP32
// rounding (~1e-6), so 1e-3 is loose for them. Against the fast forward run on another batch
// composition, an ulp in a hidden value can now and then flip one E4M3 rounding, moving a row by up
// to ~1e-2; a row from another request or another model is off by ~1.
inline constexpr double kVsReference = 1e-3;
inline constexpr double kVsOtherBatch = 2e-2;

// ---- Models and data --------------------------------------------------------------------------

// An MLP with layer widths {in, hidden..., out}: He-initialised FP32 weights (N(0, 2/in)) and small
// biases, quantized with QuantizeLayer. Deterministic for a seed.
MlpWeights RandomMlp(const std::vector<int>& widths, uint32_t seed, Fp8Format format = Fp8Format::kE4M3,
                     ScaleGranularity granularity = ScaleGranularity::kPerChannel);

// n values drawn from N(0, 1), never exactly zero (a zero input hides many bugs).
std::vector<float> RandomInputs(size_t n, std::mt19937& rng);

// The serving forward (FastMlp, what the CPU backend runs) and the numeric oracle (ReferenceForward)
// on x [rows, input_dim].
std::vector<float> FastOutputs(const MlpWeights& w, const std::vector<float>& x, int rows);
std::vector<float> ReferenceOutputs(const MlpWeights& w, const std::vector<float>& x, int rows);

// Per row of [rows, cols]: both rows finite, relative L2 error ||got - want|| / ||want|| <= rel_tol,
// and the same argmax unless want's two largest logits are within rel_tol of the row's norm (then
// either class is a fair answer). A wrong row (another request's, or garbage) fails by a wide margin.
::testing::AssertionResult RowsClose(const std::vector<float>& got, const std::vector<float>& want, int cols,
                                     double rel_tol);

// ---- Model repository on disk -----------------------------------------------------------------

// What a generated config.pbtxt says. Widths come from the weights when AddModel writes it.
struct ConfigSpec {
  std::string name;
  int max_batch_size = 8;
  std::string input_name = "input";
  std::string output_name = "logits";
  int input_dim = 784;
  int output_dim = 10;
  // Appended verbatim: dynamic_batching { ... }, instance_group, version_policy, parameters.
  std::string extra;
};
std::string ConfigText(const ConfigSpec& spec);
ConfigSpec MakeSpec(const std::string& name, int max_batch_size, const std::string& extra = "");

// A fresh folder under the test temp dir, removed with everything in it on destruction. Every
// write is atomic (a hidden temp file renamed into place), so a concurrent load or poll sees
// either the old file or the new one, never half of one.
class TempModelRepository {
 public:
  TempModelRepository();
  ~TempModelRepository();
  TempModelRepository(const TempModelRepository&) = delete;
  TempModelRepository& operator=(const TempModelRepository&) = delete;

  const std::string& root() const { return root_; }
  std::string ModelDir(const std::string& model) const { return root_ + "/" + model; }
  std::string ConfigPath(const std::string& model) const { return ModelDir(model) + "/config.pbtxt"; }
  std::string WeightsPath(const std::string& model, int64_t version) const;

  void WriteConfig(const std::string& model, const std::string& text);
  void WriteWeights(const std::string& model, int64_t version, const MlpWeights& weights);
  // Any file, by path relative to the root (parent folders are created).
  void WriteFile(const std::string& relative_path, const std::string& bytes);
  void RemoveModel(const std::string& model);

  // config.pbtxt from `spec` (input/output widths taken from `weights`) plus the same weights in
  // every listed version folder.
  void AddModel(ConfigSpec spec, const MlpWeights& weights, const std::vector<int64_t>& versions = {1});

 private:
  std::string root_;
};

// Options for a repository over one root, on the CPU backend (set `backend` for another).
ModelRepository::Options RepositoryOptions(const std::string& root, ModelControlMode mode = ModelControlMode::kNone,
                                           std::vector<std::string> startup_models = {});

// ---- In-process server ------------------------------------------------------------------------

// ModelRepository + InferenceService + grpc::Server on 127.0.0.1 with a port the kernel picks, and a
// stub over a real loopback channel. The default health service is enabled. Destruction shuts the
// server down (in-flight calls finish) before the repository goes.
class TestServer {
 public:
  struct Options {
    int max_receive_message_size = -1;  // -1: gRPC's default
    // Prometheus metrics (ServerMetrics wired into the repository and the service), and their
    // /metrics endpoint on metrics_address unless it is empty.
    bool metrics = false;
    std::string metrics_address = "127.0.0.1:0";
    std::string nvml_library;  // empty: no GPU metrics
  };
  static absl::StatusOr<std::unique_ptr<TestServer>> Start(const ModelRepository::Options& repository_options,
                                                           Options options);
  static absl::StatusOr<std::unique_ptr<TestServer>> Start(const ModelRepository::Options& repository_options) {
    return Start(repository_options, Options{});
  }
  ~TestServer();

  int port() const { return port_; }
  ModelRepository& repository() { return *repository_; }
  inference::GRPCInferenceService::Stub& stub() { return *stub_; }
  // A new stub on the shared channel (stubs are cheap; one per thread is tidy).
  std::unique_ptr<inference::GRPCInferenceService::Stub> NewStub() const;
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  // With Options::metrics: the metrics, and the endpoint (null when metrics_address is empty).
  ServerMetrics* metrics() const { return metrics_.get(); }
  MetricsEndpoint* metrics_endpoint() const { return metrics_endpoint_.get(); }
  int metrics_port() const { return metrics_endpoint_ != nullptr ? metrics_endpoint_->port() : 0; }

 private:
  TestServer() = default;
  std::unique_ptr<ServerMetrics> metrics_;  // outlives the repository and the service
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;
  std::unique_ptr<ModelRepository> repository_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
};

// ---- Client helpers ---------------------------------------------------------------------------

// Every RPC in the tests carries a deadline, so that a server bug fails a test instead of hanging it.
inline constexpr absl::Duration kRpcTimeout = absl::Seconds(10);
void SetDeadline(grpc::ClientContext& ctx, absl::Duration timeout = kRpcTimeout);

// How a request carries its input.
enum class Wire { kFp32Raw, kFp16Raw, kBf16Raw, kFp32Typed };
const char* WireName(Wire wire);  // "Fp32Raw", ...
inline void PrintTo(Wire wire, std::ostream* os) { *os << WireName(wire); }

// A ModelInferRequest for x [rows, width]: shape [rows, width], or [width] when !batched (rows must
// then be 1).
inference::ModelInferRequest MakeInferRequest(const std::string& model, const std::string& input_name,
                                              const std::vector<float>& x, int rows, int width,
                                              Wire wire = Wire::kFp32Raw, bool batched = true);
// The values the server computes on: x rounded through FP16 or BF16 when the wire carries those.
std::vector<float> WireRounded(const std::vector<float>& x, Wire wire);

// raw_output_contents(0) as floats (empty when absent).
std::vector<float> OutputValues(const inference::ModelInferResponse& resp);

// A unary ModelInfer with a deadline.
grpc::Status Infer(inference::GRPCInferenceService::Stub& stub, const inference::ModelInferRequest& req,
                   inference::ModelInferResponse* resp, absl::Duration timeout = kRpcTimeout);

}  // namespace fp8serve::test
