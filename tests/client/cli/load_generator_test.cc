// The load generator's accounting is exact: in every mode and loop, requests sent = responses
// received + errors, and the server's ModelStatistics move by the same counts (success = ok,
// fail = errors). Errors are provoked two ways: a request the server refuses outright, and a queue
// limit that refuses some requests under load.
#include "client/cli/load_generator.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "client/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/testing/test_models.h"

namespace fp8serve::client {
namespace {

constexpr int kIn = 784;

struct Shared {
  test::TempModelRepository repo;
  std::unique_ptr<test::TestServer> server;
};

class LoadGeneratorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    shared_ = new Shared();
    shared_->repo.AddModel(test::MakeSpec("mlp", 64, "dynamic_batching { max_queue_delay_microseconds: 100 }"),
                           test::RandomMlp({kIn, 64, 10}, 31));
    // One request per batch and room for one waiting: a burst of concurrent requests overflows it.
    shared_->repo.AddModel(
        test::MakeSpec("tiny_queue", 1, "dynamic_batching { default_queue_policy { max_queue_size: 1 } }"),
        test::RandomMlp({kIn, 256, 10}, 32));
    auto server = test::TestServer::Start(test::RepositoryOptions(shared_->repo.root()));
    ASSERT_TRUE(server.ok()) << server.status();
    shared_->server = *std::move(server);
  }
  static void TearDownTestSuite() {
    delete shared_;
    shared_ = nullptr;
  }

  void SetUp() override {
    for (int i = 0; i < 2; ++i) {
      ClientOptions o;
      o.url = absl::StrCat("127.0.0.1:", shared_->server->port());
      o.own_connection = true;
      auto c = InferenceClient::Create(o);
      ASSERT_TRUE(c.ok()) << c.status();
      clients_.push_back(*std::move(c));
    }
  }

  inference::ModelInferRequest Request(const std::string& model, int rows, int width = kIn) {
    std::mt19937 rng(7);
    auto req =
        MakeInferRequest(model, "input", test::RandomInputs(static_cast<size_t>(rows) * width, rng), rows, width);
    EXPECT_TRUE(req.ok());
    return *req;
  }

  StepResult Run(const inference::ModelInferRequest& req, LoadOptions o, LoadLevel level) {
    std::vector<InferenceClient*> clients;
    for (auto& c : clients_) clients.push_back(c.get());
    o.threads = static_cast<int>(clients.size());
    LoadGenerator gen(clients, req, o);
    int progress_calls = 0;
    auto r = gen.RunStep(level, [&](const LiveStatus& s) {
      ++progress_calls;
      EXPECT_GE(s.in_flight, 0);
    });
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : StepResult{};
  }

  // The invariants every step must satisfy.
  void ExpectExactAccounting(const StepResult& r) {
    EXPECT_TRUE(r.accounted()) << "sent " << r.sent << " != ok " << r.ok << " + errors " << r.error_count();
    ASSERT_TRUE(r.have_server);
    EXPECT_EQ(r.server.success, static_cast<uint64_t>(r.ok)) << "server successes vs responses received";
    EXPECT_EQ(r.server.fail, static_cast<uint64_t>(r.error_count())) << "server failures vs errors received";
    EXPECT_EQ(r.server.inference_count, static_cast<uint64_t>(r.ok * r.rows_per_request));
    if (r.ok > 0) {
      EXPECT_GT(r.seconds, 0);
      EXPECT_GT(r.requests_per_second(), 0);
      EXPECT_LE(r.p50_ms, r.p90_ms);
      EXPECT_LE(r.p90_ms, r.p99_ms);
      EXPECT_LE(r.p99_ms, r.p999_ms);
      EXPECT_LE(r.p999_ms, r.max_ms);
      EXPECT_GT(r.server_compute_us(), 0);
    }
  }

  static Shared* shared_;
  std::vector<std::unique_ptr<InferenceClient>> clients_;
};
Shared* LoadGeneratorTest::shared_ = nullptr;

LoadOptions Options(TransportMode mode, int64_t requests, absl::Duration duration = absl::Seconds(1)) {
  LoadOptions o;
  o.mode = mode;
  o.warmup = absl::Milliseconds(100);
  o.duration = duration;
  o.requests = requests;
  return o;
}

TEST_F(LoadGeneratorTest, ClosedLoopCountsEveryRequestInEveryMode) {
  for (TransportMode mode : {TransportMode::kSync, TransportMode::kAsync, TransportMode::kStream}) {
    SCOPED_TRACE(TransportModeName(mode));
    const StepResult r = Run(Request("mlp", 2), Options(mode, 300), LoadLevel{false, 16});
    EXPECT_EQ(r.sent, 300);
    EXPECT_EQ(r.ok, 300);
    EXPECT_EQ(r.rows_per_request, 2);
    ExpectExactAccounting(r);
  }
}

TEST_F(LoadGeneratorTest, TimedStepsAndOpenLoopAreExactToo) {
  for (TransportMode mode : {TransportMode::kAsync, TransportMode::kStream}) {
    SCOPED_TRACE(TransportModeName(mode));
    const StepResult closed = Run(Request("mlp", 1), Options(mode, 0, absl::Milliseconds(500)), LoadLevel{false, 8});
    EXPECT_GT(closed.sent, 0);
    ExpectExactAccounting(closed);
    // Poisson arrivals at 400/s for 0.5 s: about 200 requests.
    const StepResult open = Run(Request("mlp", 1), Options(mode, 0, absl::Milliseconds(500)), LoadLevel{true, 400});
    EXPECT_GT(open.sent, 100);
    EXPECT_LT(open.sent, 320);
    EXPECT_EQ(open.dropped, 0);
    ExpectExactAccounting(open);
    // Count-based open loop sends exactly the count.
    const StepResult counted = Run(Request("mlp", 1), Options(mode, 150), LoadLevel{true, 2000});
    EXPECT_EQ(counted.sent + counted.dropped, 150);
    ExpectExactAccounting(counted);
  }
}

TEST_F(LoadGeneratorTest, RefusedRequestsAreErrorsOnBothSides) {
  // Rows of the wrong width: the server refuses every one with INVALID_ARGUMENT and counts a failure.
  for (TransportMode mode : {TransportMode::kSync, TransportMode::kAsync, TransportMode::kStream}) {
    SCOPED_TRACE(TransportModeName(mode));
    const StepResult r = Run(Request("mlp", 1, kIn - 1), Options(mode, 100), LoadLevel{false, 4});
    EXPECT_EQ(r.sent, 100);
    EXPECT_EQ(r.ok, 0);
    // A stream reports errors in-band, without a code.
    const std::string code = mode == TransportMode::kStream ? "UNKNOWN" : "INVALID_ARGUMENT";
    EXPECT_THAT(r.errors, ::testing::ElementsAre(::testing::Pair(code, 100)));
    EXPECT_THAT(r.first_error, ::testing::HasSubstr("784"));
    ExpectExactAccounting(r);
  }
}

TEST_F(LoadGeneratorTest, QueueOverflowGivesAMixOfSuccessesAndErrors) {
  for (TransportMode mode : {TransportMode::kAsync, TransportMode::kSync}) {
    SCOPED_TRACE(TransportModeName(mode));
    const StepResult r = Run(Request("tiny_queue", 1), Options(mode, 2000), LoadLevel{false, 64});
    EXPECT_EQ(r.sent, 2000);
    EXPECT_GT(r.ok, 0);
    EXPECT_GT(r.error_count(), 0) << "64 concurrent requests never overflowed a queue of 1";
    EXPECT_EQ(r.errors.count("UNAVAILABLE"), 1u);
    ExpectExactAccounting(r);
  }
}

TEST_F(LoadGeneratorTest, OpenLoopDropsWhatExceedsMaxInFlightAndSaysSo) {
  LoadOptions o = Options(TransportMode::kAsync, 400);
  o.max_in_flight = 1;
  const StepResult r = Run(Request("mlp", 1), o, LoadLevel{true, 50000});
  EXPECT_EQ(r.sent + r.dropped, 400);
  EXPECT_GT(r.dropped, 0);
  ExpectExactAccounting(r);
}

TEST_F(LoadGeneratorTest, RefusesImpossibleLevels) {
  std::vector<InferenceClient*> clients = {clients_[0].get()};
  LoadGenerator sync(clients, Request("mlp", 1), Options(TransportMode::kSync, 10));
  EXPECT_EQ(sync.RunStep(LoadLevel{true, 100}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sync.RunStep(LoadLevel{false, 0}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sync.RunStep(LoadLevel{false, 2.5}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LoadGeneratorPercentileTest, NearestRank) {
  std::vector<int64_t> v(1000);
  for (int i = 0; i < 1000; ++i) v[i] = i + 1;
  EXPECT_EQ(LoadGenerator::Percentile(v, 50), 500);
  EXPECT_EQ(LoadGenerator::Percentile(v, 99), 990);
  EXPECT_EQ(LoadGenerator::Percentile(v, 99.9), 999);
  EXPECT_EQ(LoadGenerator::Percentile(v, 100), 1000);
  EXPECT_EQ(LoadGenerator::Percentile({7}, 50), 7);
  EXPECT_EQ(LoadGenerator::Percentile({}, 50), 0);
  EXPECT_EQ(LoadLevelName(LoadLevel{false, 64}), "c=64");
  EXPECT_EQ(LoadLevelName(LoadLevel{true, 1500}), "r=1500/s");
}

}  // namespace
}  // namespace fp8serve::client
