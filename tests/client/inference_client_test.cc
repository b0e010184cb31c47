// InferenceClient against an in-process fp8serve (tests/server/testing): every RPC, the three ways
// to infer (blocking, callback/future, stream), deadlines, error messages kept verbatim, message
// limits, an unreachable server, and TLS/mTLS with certificates made by openssl for the test.
#include "client/inference_client.h"

#include <arpa/inet.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/numerics/fp8.h"
#include "tests/server/testing/test_models.h"

namespace fp8serve::client {
namespace {

// (Designated initializers that skip fields draw -Wmissing-field-initializers from GCC 12.)
CallOptions Timeout(absl::Duration d) {
  CallOptions c;
  c.timeout = d;
  return c;
}
ClientOptions Options(const std::string& url, absl::Duration timeout = absl::Seconds(30), TlsOptions tls = {}) {
  ClientOptions o;
  o.url = url;
  o.timeout = timeout;
  o.tls = std::move(tls);
  return o;
}
TlsOptions Tls(const std::string& roots, const std::string& cert = "", const std::string& key = "") {
  TlsOptions t;
  t.enabled = true;
  t.root_certs_file = roots;
  t.client_cert_file = cert;
  t.client_key_file = key;
  return t;
}

using ::testing::HasSubstr;

constexpr int kIn = 784;
constexpr int kOut = 10;
constexpr double kTol = 2e-2;  // vs the fast forward on another batch composition (see the server tests)

struct Shared {
  test::TempModelRepository repo;
  MlpWeights weights;
  std::unique_ptr<test::TestServer> server;
};

class InferenceClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    shared_ = new Shared();
    shared_->weights = test::RandomMlp({kIn, 64, kOut}, 21);
    shared_->repo.AddModel(test::MakeSpec("mlp", 2048, "dynamic_batching { max_queue_delay_microseconds: 100 }"),
                           shared_->weights);
    // Holds a lone request 300 ms in its queue, waiting for a fuller batch.
    shared_->repo.AddModel(
        test::MakeSpec("slow", 8,
                       "dynamic_batching { preferred_batch_size: [ 8 ] max_queue_delay_microseconds: 300000 }"),
        shared_->weights);
    // The server accepts what fp8serve accepts by default (2 GiB - 1), not gRPC's 4 MiB.
    test::TestServer::Options options;
    options.max_receive_message_size = INT_MAX;
    auto server = test::TestServer::Start(test::RepositoryOptions(shared_->repo.root()), options);
    ASSERT_TRUE(server.ok()) << server.status();
    shared_->server = *std::move(server);
  }
  static void TearDownTestSuite() {
    delete shared_;
    shared_ = nullptr;
  }

  std::string Url() const { return absl::StrCat("127.0.0.1:", shared_->server->port()); }
  std::unique_ptr<InferenceClient> Client(ClientOptions o = {}) {
    o.url = Url();
    auto c = InferenceClient::Create(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return *std::move(c);
  }
  // The server's answer for these rows, straight through the generated stub.
  grpc::Status RawInfer(const inference::ModelInferRequest& req, inference::ModelInferResponse* resp) {
    return test::Infer(shared_->server->stub(), req, resp);
  }
  std::vector<float> Inputs(int rows, uint32_t seed) {
    std::mt19937 rng(seed);
    return test::RandomInputs(static_cast<size_t>(rows) * kIn, rng);
  }
  inference::ModelInferRequest Request(const std::vector<float>& x, int rows, WireType wire = WireType::kFp32) {
    auto req = MakeInferRequest("mlp", "input", x, rows, kIn, wire);
    EXPECT_TRUE(req.ok()) << req.status();
    return *std::move(req);
  }
  std::vector<float> Expected(const std::vector<float>& x, int rows) {
    return test::FastOutputs(shared_->weights, x, rows);
  }
  std::vector<float> Logits(const InferResult& r) {
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    auto t = OutputTensor(*r, "logits");
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? t->values() : std::vector<float>{};
  }

  static Shared* shared_;
};
Shared* InferenceClientTest::shared_ = nullptr;

TEST_F(InferenceClientTest, ServerAndModelQueries) {
  auto c = Client();
  ASSERT_TRUE(c->WaitForConnected(absl::Seconds(10)).ok());
  EXPECT_EQ(c->ServerLive().value_or(false), true);
  EXPECT_EQ(c->ServerReady().value_or(false), true);
  EXPECT_EQ(c->ModelReady("mlp").value_or(false), true);
  auto meta = c->ServerMetadata();
  ASSERT_TRUE(meta.ok()) << meta.status();
  EXPECT_EQ(meta->name(), "fp8serve");
  auto md = c->ModelMetadata("mlp");
  ASSERT_TRUE(md.ok()) << md.status();
  ASSERT_EQ(md->inputs_size(), 1);
  EXPECT_EQ(md->inputs(0).name(), "input");
  EXPECT_THAT(md->inputs(0).shape(), ::testing::ElementsAre(-1, kIn));
  auto config = c->ModelConfig("mlp");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->max_batch_size(), 2048);
  auto stats = c->ModelStatistics("mlp");
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ(stats->model_stats_size(), 1);
  EXPECT_EQ(stats->model_stats(0).name(), "mlp");
  auto index = c->RepositoryIndex();
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->models_size(), 2);
  EXPECT_EQ(index->models(0).name(), "mlp");
  EXPECT_EQ(index->models(0).state(), "READY");
}

TEST_F(InferenceClientTest, HealthCheckThroughTheGenericStub) {
  auto c = Client();
  auto h = c->Health();
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(*h, HealthStatus::kServing);
  EXPECT_STREQ(HealthStatusName(*h), "SERVING");
  // A service nobody registered: the health service answers NOT_FOUND (the request carried the name).
  EXPECT_EQ(c->Health("no.such.Service").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(InferenceClientTest, BlockingInferMatchesTheForwardForEveryWireType) {
  auto c = Client();
  const int rows = 5;
  const std::vector<float> x = Inputs(rows, 1);
  for (WireType wire : {WireType::kFp32, WireType::kFp16, WireType::kBf16}) {
    SCOPED_TRACE(WireTypeName(wire));
    InferResult r = c->Infer(Request(x, rows, wire));
    ASSERT_TRUE(r.ok()) << r.status();
    auto t = OutputTensor(*r, "logits");
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->rows(), rows);
    EXPECT_EQ(t->cols(), kOut);
    const test::Wire tw = wire == WireType::kFp32   ? test::Wire::kFp32Raw
                          : wire == WireType::kFp16 ? test::Wire::kFp16Raw
                                                    : test::Wire::kBf16Raw;
    EXPECT_TRUE(test::RowsClose(t->values(), Expected(test::WireRounded(x, tw), rows), kOut, kTol));
  }
}

TEST_F(InferenceClientTest, Fp16BitsAreSentUnchanged) {
  auto c = Client();
  const std::vector<float> x = Inputs(2, 2);
  std::vector<uint16_t> bits(x.size());
  for (size_t i = 0; i < x.size(); ++i) bits[i] = FloatToF16(x[i]);
  inference::ModelInferRequest req;
  req.set_model_name("mlp");
  const int64_t shape[] = {2, kIn};
  ASSERT_TRUE(AddInput16(req, "input", bits, shape, WireType::kFp16).ok());
  EXPECT_TRUE(
      test::RowsClose(Logits(c->Infer(req)), Expected(test::WireRounded(x, test::Wire::kFp16Raw), 2), kOut, kTol));
}

TEST_F(InferenceClientTest, ErrorsKeepTheServersCodeAndWords) {
  auto c = Client();
  const std::vector<float> x = Inputs(1, 3);
  std::vector<inference::ModelInferRequest> bad;
  bad.push_back(Request(x, 1));
  bad.back().set_model_name("no_such_model");
  bad.push_back(Request(x, 1));
  bad.back().mutable_inputs(0)->set_name("pixels");
  bad.push_back(Request(x, 1));
  bad.back().mutable_inputs(0)->set_shape(1, kIn - 1);
  for (const auto& req : bad) {
    inference::ModelInferResponse raw;
    const grpc::Status want = RawInfer(req, &raw);
    ASSERT_FALSE(want.ok());
    const absl::Status got = c->Infer(req).status();
    EXPECT_EQ(static_cast<int>(got.code()), static_cast<int>(want.error_code()));
    EXPECT_EQ(got.message(), want.error_message());
    EXPECT_FALSE(got.message().empty());
  }
}

// A port that accepts TCP connections (the kernel completes them) but never speaks HTTP/2: a
// server that hangs. Closed on destruction.
class Blackhole {
 public:
  Blackhole() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ADD_FAILURE() << "cannot open a listening socket";
      return;
    }
    port_ = ntohs(a.sin_port);
  }
  ~Blackhole() {
    if (fd_ >= 0) ::close(fd_);
  }
  std::string url() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST_F(InferenceClientTest, EveryCallHasADeadline) {
  Blackhole hung;
  const auto req = Request(Inputs(1, 4), 1);
  const absl::Time start = absl::Now();
  // The client's default deadline, for every kind of call.
  auto c = InferenceClient::Create(Options(hung.url(), absl::Milliseconds(200)));
  ASSERT_TRUE(c.ok());
  InferenceClient& hurried = **c;
  EXPECT_EQ(hurried.Infer(req).status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(hurried.ServerLive().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(hurried.ServerReady().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(hurried.ModelMetadata("mlp").status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(hurried.ModelConfig("mlp").status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(hurried.ModelStatistics().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(hurried.Health().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(hurried.InferFuture(req).get().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(hurried.WaitForConnected(absl::Milliseconds(200)).code(), absl::StatusCode::kUnavailable);
  // A stream's deadline covers the stream (its own default is long: here the call's is given).
  auto stream = hurried.StartStream(Timeout(absl::Milliseconds(200)));
  std::promise<absl::Status> done;
  ASSERT_TRUE(stream->Write(req, [&](InferResult r) { done.set_value(r.status()); }).ok());
  EXPECT_EQ(done.get_future().get().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(stream->Finish().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // A per-call deadline overrides the default: a request held in the queue for 300 ms expires.
  auto ok = Client();
  auto slow = Request(Inputs(1, 5), 1);
  slow.set_model_name("slow");
  EXPECT_EQ(ok->Infer(slow, Timeout(absl::Milliseconds(50))).status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(ok->Infer(slow, Timeout(absl::Seconds(10))).ok());
}

TEST_F(InferenceClientTest, UnreachableServerFailsFastWithUnavailable) {
  // A port nobody listens on: bind one, note it, close it.
  std::string url;
  { url = Blackhole().url(); }
  auto c = InferenceClient::Create(Options(url));
  ASSERT_TRUE(c.ok());
  const absl::Time start = absl::Now();
  absl::Status st = (*c)->WaitForConnected(absl::Milliseconds(300));
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(st.message()), HasSubstr(url));
  EXPECT_EQ((*c)->ServerLive().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*c)->Health().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_F(InferenceClientTest, MessageLimitsFollowTheOptions) {
  // 1,500 rows (4.7 MB) exceed gRPC's 4 MiB default; the client's default, like the server's, is 2 GiB - 1.
  const int rows = 1500;
  const std::vector<float> x = Inputs(rows, 5);
  const auto req = Request(x, rows);
  auto c = Client();
  EXPECT_TRUE(test::RowsClose(Logits(c->Infer(req)), Expected(x, rows), kOut, kTol));
  ClientOptions limited;
  limited.max_message_size = 1000;
  auto small = Client(limited);
  EXPECT_EQ(small->Infer(req).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(InferenceClientTest, CallbacksAndFuturesEachGetTheirOwnRows) {
  auto c = Client();
  constexpr int kCalls = 48;
  std::vector<std::vector<float>> inputs;
  std::vector<std::promise<InferResult>> results(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    const int rows = 1 + i % 3;
    inputs.push_back(Inputs(rows, 100 + i));
    c->AsyncInfer(std::make_shared<const inference::ModelInferRequest>(Request(inputs.back(), rows)),
                  [&results, i](InferResult r) { results[i].set_value(std::move(r)); });
  }
  for (int i = 0; i < kCalls; ++i) {
    const int rows = 1 + i % 3;
    EXPECT_TRUE(test::RowsClose(Logits(results[i].get_future().get()), Expected(inputs[i], rows), kOut, kTol))
        << "call " << i;
  }
  const std::vector<float> x = Inputs(2, 7);
  EXPECT_TRUE(test::RowsClose(Logits(c->InferFuture(Request(x, 2)).get()), Expected(x, 2), kOut, kTol));
}

// An asynchronous call lets go of the channel before its callback runs: the caller may drop the
// client (and leave main) as soon as it hears back, and the channel's last reference must not then
// go on gRPC's callback thread, where ~Channel shuts down the queue that very thread polls
// (fp8serve-client used to crash at exit about once in ten runs).
TEST_F(InferenceClientTest, AsyncCallsReleaseTheChannelBeforeTheirCallback) {
  auto c = Client();
  const std::weak_ptr<grpc::Channel> channel = c->channel();
  const long idle = channel.use_count();  // the client's own reference(s)
  const std::vector<float> x = Inputs(3, 11);
  for (int i = 0; i < 8; ++i) {
    std::promise<long> refs_in_callback;
    c->AsyncInfer(std::make_shared<const inference::ModelInferRequest>(Request(x, 3)),
                  [&refs_in_callback, &channel](InferResult r) {
                    EXPECT_TRUE(r.ok()) << r.status();
                    refs_in_callback.set_value(channel.use_count());
                  });
    EXPECT_EQ(refs_in_callback.get_future().get(), idle) << "call " << i << " still holds the channel";
  }
  c.reset();
  EXPECT_TRUE(channel.expired()) << "the channel outlived the client";
}

TEST_F(InferenceClientTest, StreamAnswersEachWriteOnceAndSurvivesABadRequest) {
  auto c = Client();
  auto stream = c->StartStream();
  constexpr int kRequests = 40;
  constexpr int kBad = 17;
  absl::Mutex mu;
  std::map<int, InferResult> got;
  std::vector<std::vector<float>> inputs;
  for (int i = 0; i < kRequests; ++i) {
    inputs.push_back(Inputs(1, 200 + i));
    auto req = Request(inputs.back(), 1);
    if (i == kBad) req.mutable_inputs(0)->set_shape(1, 3);
    ASSERT_TRUE(stream
                    ->Write(std::move(req),
                            [&, i](InferResult r) {
                              absl::MutexLock lock(&mu);
                              EXPECT_TRUE(got.emplace(i, std::move(r)).second) << "two answers for " << i;
                            })
                    .ok());
  }
  // Ids the caller chooses are kept; one already in flight is refused.
  auto named = Request(inputs[0], 1);
  named.set_id("mine");
  std::promise<InferResult> named_result;
  ASSERT_TRUE(stream->Write(named, [&](InferResult r) { named_result.set_value(std::move(r)); }).ok());
  EXPECT_EQ(stream->Write(named, [](InferResult) {}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(named_result.get_future().get()->id(), "mine");

  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(stream->in_flight(), 0u);
  EXPECT_EQ(stream->Write(Request(inputs[0], 1), [](InferResult) {}).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(got.size(), static_cast<size_t>(kRequests));
  for (int i = 0; i < kRequests; ++i) {
    if (i == kBad) {
      // Errors come back in-band, without a gRPC code; the words are the server's.
      EXPECT_EQ(got[i].status().code(), absl::StatusCode::kUnknown);
      EXPECT_THAT(std::string(got[i].status().message()), HasSubstr("784"));
      continue;
    }
    EXPECT_TRUE(test::RowsClose(Logits(got[i]), Expected(inputs[i], 1), kOut, kTol)) << "request " << i;
  }
}

TEST_F(InferenceClientTest, DroppingAnUnfinishedStreamCancelsIt) {
  auto c = Client();
  std::atomic<int> answers{0};
  {
    auto stream = c->StartStream();
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(stream->Write(Request(Inputs(1, 300 + i), 1), [&](InferResult) { ++answers; }).ok());
    }
  }  // the destructor cancels and waits: every callback has run, whatever its outcome
  EXPECT_EQ(answers.load(), 8);
}

// ---- TLS ----------------------------------------------------------------------------------------

// A CA, a server certificate for "localhost" and a client certificate, by the openssl CLI.
class Certificates {
 public:
  Certificates() {
    dir_ = ::testing::TempDir() + "/fp8serve_client_tls_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    std::ofstream(dir_ + "/san.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
    ok_ = Run("openssl req -x509 " + key + " -keyout ca.key -out ca.pem -days 2 -subj /CN=fp8serve-test-ca") &&
          Run("openssl req -x509 " + key + " -keyout other.key -out other.pem -days 2 -subj /CN=other-ca") &&
          Run("openssl req " + key + " -keyout server.key -out server.csr -subj /CN=localhost") &&
          Run("openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 "
              "-extfile san.ext") &&
          Run("openssl req " + key + " -keyout client.key -out client.csr -subj /CN=fp8serve-client") &&
          Run("openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2");
  }
  ~Certificates() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  bool ok() const { return ok_; }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string Read(const std::string& name) const {
    std::ifstream in(Path(name));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  bool Run(const std::string& cmd) {
    return std::system(("cd " + dir_ + " && " + cmd + " >/dev/null 2>&1").c_str()) == 0;
  }
  std::string dir_;
  bool ok_ = false;
};

// A server with TLS (mutual when `require_client_cert`) that offers the health service, which needs
// a server with callback methods: a generic service answering UNIMPLEMENTED provides them.
struct TlsServer {
  TlsServer(const Certificates& certs, bool require_client_cert) {
    grpc::SslServerCredentialsOptions o(require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                                            : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    o.pem_root_certs = certs.Read("ca.pem");
    o.pem_key_cert_pairs.push_back({certs.Read("server.key"), certs.Read("server.pem")});
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(o), &port);
    b.RegisterCallbackGenericService(&unimplemented);
    server = b.BuildAndStart();
  }
  ~TlsServer() {
    if (server) server->Shutdown();
  }
  grpc::CallbackGenericService unimplemented;  // outlives the server
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

TEST(InferenceClientTlsTest, TlsAndMutualTls) {
  if (std::system("openssl version >/dev/null 2>&1") != 0) GTEST_SKIP() << "*** TLS TEST SKIPPED: no openssl CLI";
  Certificates certs;
  ASSERT_TRUE(certs.ok()) << "openssl could not make the test certificates";
  auto health = [](TlsOptions tls, int port) {
    tls.target_name_override = "localhost";  // the URL says 127.0.0.1; the certificate says localhost
    auto c = InferenceClient::Create(Options(absl::StrCat("127.0.0.1:", port), absl::Seconds(5), tls));
    EXPECT_TRUE(c.ok()) << c.status();
    return (*c)->Health();
  };
  {
    TlsServer tls(certs, /*require_client_cert=*/false);
    ASSERT_NE(tls.server, nullptr);
    const int port = tls.port;
    EXPECT_EQ(health(Tls(certs.Path("ca.pem")), port).value_or(HealthStatus::kUnknown), HealthStatus::kServing);
    // A server whose certificate the client's roots do not vouch for is refused.
    EXPECT_EQ(health(Tls(certs.Path("other.pem")), port).status().code(), absl::StatusCode::kUnavailable);
    // Plaintext to a TLS port gets nowhere either.
    auto plain = InferenceClient::Create(Options(absl::StrCat("127.0.0.1:", port), absl::Seconds(5)));
    EXPECT_FALSE((*plain)->Health().ok());
  }
  {
    TlsServer tls(certs, /*require_client_cert=*/true);
    ASSERT_NE(tls.server, nullptr);
    const int port = tls.port;
    EXPECT_EQ(health(Tls(certs.Path("ca.pem"), certs.Path("client.pem"), certs.Path("client.key")), port)
                  .value_or(HealthStatus::kUnknown),
              HealthStatus::kServing);
    EXPECT_FALSE(health(Tls(certs.Path("ca.pem")), port).ok()) << "mTLS without a client certificate";
  }
  // Bad TLS options are refused when the client is made, naming what is wrong.
  auto no_key = InferenceClient::Create(Options("localhost:1", absl::Seconds(1), Tls("", certs.Path("client.pem"))));
  EXPECT_EQ(no_key.status().code(), absl::StatusCode::kInvalidArgument);
  auto missing = InferenceClient::Create(Options("localhost:1", absl::Seconds(1), Tls("/no/such.pem")));
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/no/such.pem"));
}

}  // namespace
}  // namespace fp8serve::client
