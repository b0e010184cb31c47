// A C++ client for the KServe v2 / Triton gRPC protocol that fp8serve speaks (and Triton itself):
// health, metadata, configuration, statistics, and inference as a blocking call, a callback or a
// future, and over a bidirectional stream.
//
//   auto client = client::InferenceClient::Create({.url = "localhost:8001"});
//   auto req = client::MakeInferRequest("fashion_mlp", "input", pixels, rows, 784);
//   absl::StatusOr<inference::ModelInferResponse> resp = (*client)->Infer(*req);
//   absl::StatusOr<client::FloatTensor> logits = client::OutputTensor(*resp, "logits");
//
// Every call has a deadline: CallOptions::timeout, else ClientOptions::timeout (streams:
// ClientOptions::stream_timeout). Errors are absl::Status with gRPC's code (the numbering is the
// same) and the server's message unchanged. Thread-safe: one client serves any number of threads.
#pragma once

#include <grpcpp/grpcpp.h>

#include <climits>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpc_service.grpc.pb.h"
#include "model_config.pb.h"

namespace fp8serve::client {

// TLS to the server (the server itself has no TLS yet; a TLS-terminating proxy or Triton has).
struct TlsOptions {
  bool enabled = false;
  std::string root_certs_file;       // PEM CA bundle to verify the server; empty: gRPC's default roots
  std::string client_cert_file;      // mTLS: the client's certificate chain (PEM) ...
  std::string client_key_file;       // ... and its private key (PEM); both or neither
  std::string target_name_override;  // name the server's certificate must carry, when not the host's
};

struct ClientOptions {
  std::string url = "localhost:8001";              // host:port, or any gRPC target (unix:/path, dns:///host:port)
  absl::Duration timeout = absl::Seconds(30);      // default deadline of a unary call
  absl::Duration stream_timeout = absl::Hours(1);  // default deadline of a whole stream
  // Largest message sent or received: fp8serve's --max-message-size default (Triton's, 2 GiB - 1).
  int max_message_size = INT_MAX;
  TlsOptions tls;
  // A TCP connection of its own. gRPC otherwise shares one connection among channels to the same
  // target, which makes one HTTP/2 connection (and one server poller) the bottleneck of a load test.
  bool own_connection = false;
};

struct CallOptions {
  absl::Duration timeout = absl::ZeroDuration();  // zero: the client's default
  bool wait_for_ready = false;                    // wait for the connection instead of failing at once with UNAVAILABLE
  std::vector<std::pair<std::string, std::string>> metadata;  // extra request headers
};

// grpc.health.v1.HealthCheckResponse.ServingStatus.
enum class HealthStatus { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };
const char* HealthStatusName(HealthStatus s);  // "SERVING", ...

// gRPC's status as absl's: same code, the server's message verbatim.
absl::Status FromGrpcStatus(const grpc::Status& s);
// "DEADLINE_EXCEEDED", ... (gRPC's spelling, which absl shares).
std::string StatusCodeName(absl::StatusCode code);

using InferResult = absl::StatusOr<inference::ModelInferResponse>;
// Runs on a gRPC thread: it must not block (issuing another call from it is fine).
using InferCallback = std::function<void(InferResult)>;

class InferStream;

class InferenceClient {
 public:
  // Builds the channel (TLS files are read here); does not connect: see WaitForConnected.
  static absl::StatusOr<std::unique_ptr<InferenceClient>> Create(ClientOptions options);

  const ClientOptions& options() const { return options_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

  // gRPC connects lazily; this connects now and gives up after `timeout` with UNAVAILABLE.
  absl::Status WaitForConnected(absl::Duration timeout);

  absl::StatusOr<bool> ServerLive(const CallOptions& call = {});
  absl::StatusOr<bool> ServerReady(const CallOptions& call = {});
  absl::StatusOr<bool> ModelReady(const std::string& model, const std::string& version = "",
                                  const CallOptions& call = {});
  absl::StatusOr<inference::ServerMetadataResponse> ServerMetadata(const CallOptions& call = {});
  absl::StatusOr<inference::ModelMetadataResponse> ModelMetadata(const std::string& model,
                                                                 const std::string& version = "",
                                                                 const CallOptions& call = {});
  absl::StatusOr<inference::ModelConfig> ModelConfig(const std::string& model, const std::string& version = "",
                                                     const CallOptions& call = {});
  // Empty model: every model.
  absl::StatusOr<inference::ModelStatisticsResponse> ModelStatistics(const std::string& model = "",
                                                                     const std::string& version = "",
                                                                     const CallOptions& call = {});
  absl::StatusOr<inference::RepositoryIndexResponse> RepositoryIndex(bool ready_only = false,
                                                                     const CallOptions& call = {});
  // grpc.health.v1.Health/Check for `service` ("" = the server as a whole).
  absl::StatusOr<HealthStatus> Health(const std::string& service = "", const CallOptions& call = {});

  // Blocking.
  InferResult Infer(const inference::ModelInferRequest& req, const CallOptions& call = {});
  // Non-blocking: `done` gets the result exactly once. The request is shared, not copied, so a load
  // generator can send one request many times at once.
  void AsyncInfer(std::shared_ptr<const inference::ModelInferRequest> req, InferCallback done,
                  const CallOptions& call = {});
  std::future<InferResult> InferFuture(inference::ModelInferRequest req, const CallOptions& call = {});
  // A ModelStreamInfer stream; its deadline covers the whole stream.
  std::unique_ptr<InferStream> StartStream(const CallOptions& call = {});

  // A ClientContext with this call's deadline, wait-for-ready and headers.
  void PrepareContext(grpc::ClientContext& ctx, const CallOptions& call, bool stream = false) const;
  inference::GRPCInferenceService::Stub& stub() { return *stub_; }

 private:
  InferenceClient() = default;
  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
};

// A bidirectional ModelStreamInfer stream. Each Write gets exactly one callback: its response, its
// error (the server reports a request's error in-band, without a gRPC code: kUnknown here, message
// verbatim), or, if the stream ends first, the stream's error. Responses are matched to requests by
// `id`: a request without one gets a unique id; two requests in flight may not share one.
class InferStream {
 public:
  ~InferStream();  // cancels a stream that was not finished, then waits for it to end
  InferStream(const InferStream&) = delete;
  InferStream& operator=(const InferStream&) = delete;

  // Queues `req` (writes go out in order, one at a time). FAILED_PRECONDITION once the stream is
  // closed or finishing; INVALID_ARGUMENT for an id already in flight.
  absl::Status Write(inference::ModelInferRequest req, InferCallback done);
  // Half-closes, waits for every response and the end of the stream, and returns its final status.
  absl::Status Finish();
  // Ends the stream now; requests still in flight get CANCELLED.
  void Cancel();
  // Requests written and not yet answered.
  size_t in_flight() const;

 private:
  friend class InferenceClient;
  class Reactor;
  explicit InferStream(std::unique_ptr<Reactor> reactor);
  std::unique_ptr<Reactor> reactor_;
};

}  // namespace fp8serve::client
