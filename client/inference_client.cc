#include "client/inference_client.h"

#include <grpcpp/generic/generic_stub.h>

#include <deque>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace fp8serve::client {

namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in || ss.str().empty()) return absl::InvalidArgumentError(absl::StrCat("cannot read ", what, " ", path));
  return ss.str();
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(const TlsOptions& tls) {
  if (!tls.enabled) return grpc::InsecureChannelCredentials();
  if (tls.client_cert_file.empty() != tls.client_key_file.empty()) {
    return absl::InvalidArgumentError("mutual TLS needs both a client certificate and its key");
  }
  grpc::SslCredentialsOptions ssl;
  if (!tls.root_certs_file.empty()) {
    absl::StatusOr<std::string> pem = ReadPem(tls.root_certs_file, "root certificates");
    if (!pem.ok()) return pem.status();
    ssl.pem_root_certs = *std::move(pem);
  }
  if (!tls.client_cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadPem(tls.client_cert_file, "client certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem(tls.client_key_file, "client key");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(ssl);
}

// The one field of grpc.health.v1.HealthCheckResponse: `status` (field 1, varint). Debian's gRPC
// ships no generated health.pb.h, so the bytes are read by hand; unknown fields are skipped.
absl::StatusOr<HealthStatus> ParseHealthResponse(const std::string& b) {
  size_t i = 0;
  auto varint = [&](uint64_t* v) {
    *v = 0;
    for (int shift = 0; i < b.size() && shift < 64; shift += 7) {
      const uint8_t byte = static_cast<uint8_t>(b[i++]);
      *v |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  };
  uint64_t status = 0;  // proto3 default: UNKNOWN
  while (i < b.size()) {
    uint64_t tag, v;
    if (!varint(&tag)) return absl::DataLossError("malformed HealthCheckResponse");
    switch (tag & 7) {
      case 0:
        if (!varint(&v)) return absl::DataLossError("malformed HealthCheckResponse");
        if ((tag >> 3) == 1) status = v;
        break;
      case 1: i += 8; break;
      case 2:
        if (!varint(&v) || v > b.size() - i) return absl::DataLossError("malformed HealthCheckResponse");
        i += v;
        break;
      case 5: i += 4; break;
      default: return absl::DataLossError("malformed HealthCheckResponse");
    }
  }
  if (i > b.size()) return absl::DataLossError("truncated HealthCheckResponse");
  return status <= 3 ? static_cast<HealthStatus>(status) : HealthStatus::kUnknown;
}

template <typename Response, typename Request, typename Method>
absl::StatusOr<Response> Unary(InferenceClient& c, const CallOptions& call, Method method, const Request& req) {
  grpc::ClientContext ctx;
  c.PrepareContext(ctx, call);
  Response resp;
  grpc::Status st = (c.stub().*method)(&ctx, req, &resp);
  if (!st.ok()) return FromGrpcStatus(st);
  return resp;
}

}  // namespace

const char* HealthStatusName(HealthStatus s) {
  switch (s) {
    case HealthStatus::kUnknown: return "UNKNOWN";
    case HealthStatus::kServing: return "SERVING";
    case HealthStatus::kNotServing: return "NOT_SERVING";
    case HealthStatus::kServiceUnknown: return "SERVICE_UNKNOWN";
  }
  return "?";
}

absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

std::string StatusCodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

absl::StatusOr<std::unique_ptr<InferenceClient>> InferenceClient::Create(ClientOptions options) {
  if (options.url.empty()) return absl::InvalidArgumentError("empty server url");
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = Credentials(options.tls);
  if (!creds.ok()) return creds.status();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_size);
  args.SetMaxSendMessageSize(options.max_message_size);
  if (options.own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (!options.tls.target_name_override.empty()) args.SetSslTargetNameOverride(options.tls.target_name_override);
  std::unique_ptr<InferenceClient> c(new InferenceClient());
  c->channel_ = grpc::CreateCustomChannel(options.url, *creds, args);
  c->stub_ = inference::GRPCInferenceService::NewStub(c->channel_);
  c->options_ = std::move(options);
  return c;
}

void InferenceClient::PrepareContext(grpc::ClientContext& ctx, const CallOptions& call, bool stream) const {
  const absl::Duration timeout =
      call.timeout > absl::ZeroDuration() ? call.timeout : (stream ? options_.stream_timeout : options_.timeout);
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  ctx.set_wait_for_ready(call.wait_for_ready);
  for (const auto& [k, v] : call.metadata) ctx.AddMetadata(k, v);
}

absl::Status InferenceClient::WaitForConnected(absl::Duration timeout) {
  if (channel_->WaitForConnected(absl::ToChronoTime(absl::Now() + timeout))) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("cannot connect to ", options_.url, " within ",
                                             absl::FormatDuration(timeout), options_.tls.enabled ? " (TLS)" : ""));
}

absl::StatusOr<bool> InferenceClient::ServerLive(const CallOptions& call) {
  auto r = Unary<inference::ServerLiveResponse>(*this, call, &inference::GRPCInferenceService::Stub::ServerLive,
                                                inference::ServerLiveRequest());
  if (!r.ok()) return r.status();
  return r->live();
}

absl::StatusOr<bool> InferenceClient::ServerReady(const CallOptions& call) {
  auto r = Unary<inference::ServerReadyResponse>(*this, call, &inference::GRPCInferenceService::Stub::ServerReady,
                                                 inference::ServerReadyRequest());
  if (!r.ok()) return r.status();
  return r->ready();
}

absl::StatusOr<bool> InferenceClient::ModelReady(const std::string& model, const std::string& version,
                                                 const CallOptions& call) {
  inference::ModelReadyRequest req;
  req.set_name(model);
  req.set_version(version);
  auto r = Unary<inference::ModelReadyResponse>(*this, call, &inference::GRPCInferenceService::Stub::ModelReady, req);
  if (!r.ok()) return r.status();
  return r->ready();
}

absl::StatusOr<inference::ServerMetadataResponse> InferenceClient::ServerMetadata(const CallOptions& call) {
  return Unary<inference::ServerMetadataResponse>(*this, call, &inference::GRPCInferenceService::Stub::ServerMetadata,
                                                  inference::ServerMetadataRequest());
}

absl::StatusOr<inference::ModelMetadataResponse> InferenceClient::ModelMetadata(const std::string& model,
                                                                                const std::string& version,
                                                                                const CallOptions& call) {
  inference::ModelMetadataRequest req;
  req.set_name(model);
  req.set_version(version);
  return Unary<inference::ModelMetadataResponse>(*this, call, &inference::GRPCInferenceService::Stub::ModelMetadata,
                                                 req);
}

absl::StatusOr<inference::ModelConfig> InferenceClient::ModelConfig(const std::string& model,
                                                                    const std::string& version,
                                                                    const CallOptions& call) {
  inference::ModelConfigRequest req;
  req.set_name(model);
  req.set_version(version);
  auto r = Unary<inference::ModelConfigResponse>(*this, call, &inference::GRPCInferenceService::Stub::ModelConfig, req);
  if (!r.ok()) return r.status();
  return r->config();
}

absl::StatusOr<inference::ModelStatisticsResponse> InferenceClient::ModelStatistics(const std::string& model,
                                                                                    const std::string& version,
                                                                                    const CallOptions& call) {
  inference::ModelStatisticsRequest req;
  req.set_name(model);
  req.set_version(version);
  return Unary<inference::ModelStatisticsResponse>(*this, call, &inference::GRPCInferenceService::Stub::ModelStatistics,
                                                   req);
}

absl::StatusOr<inference::RepositoryIndexResponse> InferenceClient::RepositoryIndex(bool ready_only,
                                                                                    const CallOptions& call) {
  inference::RepositoryIndexRequest req;
  req.set_ready(ready_only);
  return Unary<inference::RepositoryIndexResponse>(*this, call, &inference::GRPCInferenceService::Stub::RepositoryIndex,
                                                   req);
}

absl::StatusOr<HealthStatus> InferenceClient::Health(const std::string& service, const CallOptions& call) {
  // HealthCheckRequest { string service = 1; }: the empty service is the empty message.
  std::string request;
  if (!service.empty()) {
    request.push_back(0x0a);  // field 1, length-delimited
    for (size_t n = service.size();; n >>= 7) {
      request.push_back(static_cast<char>((n & 0x7f) | (n >= 0x80 ? 0x80 : 0)));
      if (n < 0x80) break;
    }
    request += service;
  }
  grpc::Slice slice(request);
  grpc::ByteBuffer req(&slice, 1), resp;
  grpc::GenericStub generic(channel_);
  grpc::ClientContext ctx;
  PrepareContext(ctx, call);
  auto done = std::make_shared<std::promise<grpc::Status>>();
  std::future<grpc::Status> result = done->get_future();
  generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &req, &resp,
                    [done](grpc::Status st) { done->set_value(std::move(st)); });
  const grpc::Status st = result.get();
  if (!st.ok()) return FromGrpcStatus(st);
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (resp.Valid() && resp.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return ParseHealthResponse(bytes);
}

InferResult InferenceClient::Infer(const inference::ModelInferRequest& req, const CallOptions& call) {
  return Unary<inference::ModelInferResponse>(*this, call, &inference::GRPCInferenceService::Stub::ModelInfer, req);
}

void InferenceClient::AsyncInfer(std::shared_ptr<const inference::ModelInferRequest> req, InferCallback done,
                                 const CallOptions& call) {
  // Everything the call needs lives until gRPC reports completion.
  struct Call {
    grpc::ClientContext ctx;
    std::shared_ptr<const inference::ModelInferRequest> req;
    inference::ModelInferResponse resp;
    InferCallback done;
  };
  auto* c = new Call;
  c->req = std::move(req);
  c->done = std::move(done);
  PrepareContext(c->ctx, call);
  stub_->async()->ModelInfer(&c->ctx, c->req.get(), &c->resp, [c](grpc::Status st) {
    std::unique_ptr<Call> owned(c);
    InferCallback done = std::move(owned->done);
    InferResult result = st.ok() ? InferResult(std::move(owned->resp)) : InferResult(FromGrpcStatus(st));
    // NOTES: the call goes before the caller hears back. Its ClientContext holds a reference to the
    // channel; released after `done`, the caller could already have dropped its own and be leaving
    // main, and the channel's last reference would then go on this gRPC callback thread during
    // process exit: ~Channel shuts down the callback queue this thread polls (fp8serve-client
    // crashed so in about 1 run in 10).
    owned.reset();
    done(std::move(result));
  });
}

std::future<InferResult> InferenceClient::InferFuture(inference::ModelInferRequest req, const CallOptions& call) {
  auto promise = std::make_shared<std::promise<InferResult>>();
  std::future<InferResult> f = promise->get_future();
  AsyncInfer(
      std::make_shared<const inference::ModelInferRequest>(std::move(req)),
      [promise](InferResult r) { promise->set_value(std::move(r)); }, call);
  return f;
}

// ---- Streaming ----------------------------------------------------------------------------------

// The callback-API reactor behind InferStream. gRPC allows one write in flight, so writes queue.
// A hold keeps OnDone back while a thread outside the reactions may still start a write; it is
// released once no more writes will start (Finish, or the stream closing).
class InferStream::Reactor final
    : public grpc::ClientBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse> {
 public:
  Reactor(InferenceClient& client, const CallOptions& call) {
    client.PrepareContext(ctx_, call, /*stream=*/true);
    client.stub().async()->ModelStreamInfer(&ctx_, this);
    AddHold();
    StartRead(&read_);
    StartCall();
  }

  absl::Status Write(inference::ModelInferRequest req, InferCallback done) {
    const inference::ModelInferRequest* start = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (closed_ || finishing_) return absl::FailedPreconditionError("the stream is closed");
      if (req.id().empty()) req.set_id(absl::StrCat("fp8serve-client-", next_id_++));
      if (!pending_.emplace(req.id(), std::move(done)).second) {
        return absl::InvalidArgumentError(absl::StrCat("request id '", req.id(), "' is already in flight"));
      }
      writes_.push_back(std::move(req));
      if (!writing_) {
        writing_ = true;
        start = &writes_.front();  // deque: stays put while others are pushed behind it
      }
    }
    if (start != nullptr) StartWrite(start);
    return absl::OkStatus();
  }

  absl::Status Finish() {
    bool writes_done = false, release = false;
    {
      absl::MutexLock lock(&mu_);
      finishing_ = true;
      if (!writing_) {
        writes_done = !closed_ && !writes_done_sent_;
        writes_done_sent_ |= writes_done;
        release = TakeHoldLocked();
      }  // else OnWriteDone half-closes and releases once the queue is empty
    }
    if (writes_done) StartWritesDone();
    if (release) RemoveHold();
    done_->WaitForNotification();
    absl::MutexLock lock(&mu_);
    return final_;
  }

  void Cancel() { ctx_.TryCancel(); }
  bool done() const { return done_->HasBeenNotified(); }

  size_t in_flight() const {
    absl::MutexLock lock(&mu_);
    return pending_.size();
  }

  void OnWriteDone(bool ok) override {
    const inference::ModelInferRequest* next = nullptr;
    bool writes_done = false, release = false;
    {
      absl::MutexLock lock(&mu_);
      writes_.pop_front();
      if (!ok) closed_ = true;  // the stream is over; OnDone fails whatever is pending
      if (!closed_ && !writes_.empty()) {
        next = &writes_.front();
      } else {
        writes_.clear();
        writing_ = false;
        if (finishing_ && !closed_ && !writes_done_sent_) writes_done = writes_done_sent_ = true;
        if (finishing_ || closed_) release = TakeHoldLocked();
      }
    }
    if (next != nullptr) StartWrite(next);
    if (writes_done) StartWritesDone();
    if (release) RemoveHold();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      bool release = false;
      {
        absl::MutexLock lock(&mu_);
        closed_ = true;
        if (!writing_) release = TakeHoldLocked();
      }
      if (release) RemoveHold();
      return;
    }
    inference::ModelStreamInferResponse msg = std::move(read_);
    read_.Clear();
    StartRead(&read_);
    InferCallback done;
    {
      absl::MutexLock lock(&mu_);
      auto it = pending_.find(msg.infer_response().id());
      if (it == pending_.end()) {
        ++unmatched_;  // a response to no request of ours: nothing to deliver it to
        return;
      }
      done = std::move(it->second);
      pending_.erase(it);
    }
    if (!msg.error_message().empty()) {
      done(absl::UnknownError(msg.error_message()));
    } else {
      done(std::move(*msg.mutable_infer_response()));
    }
  }

  void OnDone(const grpc::Status& s) override {
    std::unordered_map<std::string, InferCallback> orphans;
    absl::Status final_status = FromGrpcStatus(s);
    {
      absl::MutexLock lock(&mu_);
      orphans.swap(pending_);
      if (final_status.ok() && unmatched_ > 0) {
        final_status = absl::InternalError(absl::StrCat(unmatched_, " responses matched no request id"));
      }
      final_ = final_status;
    }
    const absl::Status orphan_status =
        final_status.ok() ? absl::InternalError("the stream ended without answering this request") : final_status;
    for (auto& [id, done] : orphans) done(orphan_status);
    // The owner may destroy this reactor as soon as it sees the notification, which therefore
    // lives in a shared_ptr of its own: Notify may still be unlocking when the waiter wakes.
    std::shared_ptr<absl::Notification> notification = done_;
    notification->Notify();
  }

 private:
  bool TakeHoldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (hold_released_) return false;
    hold_released_ = true;
    return true;
  }

  grpc::ClientContext ctx_;
  inference::ModelStreamInferResponse read_;  // only touched by the read chain
  mutable absl::Mutex mu_;
  std::deque<inference::ModelInferRequest> writes_ ABSL_GUARDED_BY(mu_);  // front is being written
  std::unordered_map<std::string, InferCallback> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t unmatched_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;     // no more writes can succeed
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;  // Finish was called
  bool writes_done_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_released_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<absl::Notification> done_ = std::make_shared<absl::Notification>();
};

InferStream::InferStream(std::unique_ptr<Reactor> reactor) : reactor_(std::move(reactor)) {}

InferStream::~InferStream() {
  if (!reactor_->done()) {
    reactor_->Cancel();
    (void)reactor_->Finish();  // its status has no one to go to
  }
}

absl::Status InferStream::Write(inference::ModelInferRequest req, InferCallback done) {
  return reactor_->Write(std::move(req), std::move(done));
}
absl::Status InferStream::Finish() { return reactor_->Finish(); }
void InferStream::Cancel() { reactor_->Cancel(); }
size_t InferStream::in_flight() const { return reactor_->in_flight(); }

std::unique_ptr<InferStream> InferenceClient::StartStream(const CallOptions& call) {
  return std::unique_ptr<InferStream>(new InferStream(std::make_unique<InferStream::Reactor>(*this, call)));
}

}  // namespace fp8serve::client
