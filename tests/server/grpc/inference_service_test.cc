// InferenceService over a real loopback gRPC channel: request validation, numerics against the CPU
// reference, isolation of concurrent batched requests, streaming, metadata and health, timeouts,
// priorities, queue limits and the message size limit.
#include "server/grpc/inference_service.h"

#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/testing/test_models.h"

namespace fp8serve::test {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;


std::string StatusText(const grpc::Status& st) { return absl::StrCat(st.error_code(), ": ", st.error_message()); }

// The rows [first, first + n) of x [*, width].
std::vector<float> Rows(const std::vector<float>& x, int width, int first, int n) {
  return std::vector<float>(x.begin() + static_cast<std::ptrdiff_t>(first) * width,
                            x.begin() + static_cast<std::ptrdiff_t>(first + n) * width);
}

// Models shared by the suite, each configured for what its tests need.
struct SuiteModels {
  TempModelRepository repo;
  std::map<std::string, MlpWeights> weights;
  std::map<std::string, std::string> config_text;
  std::unique_ptr<TestServer> server;
  std::string start_error;

  void Add(const ConfigSpec& spec, std::vector<int> widths, uint32_t seed) {
    weights[spec.name] = RandomMlp(widths, seed);
    repo.AddModel(spec, weights[spec.name]);
    ConfigSpec s = spec;
    s.input_dim = widths.front();
    s.output_dim = widths.back();
    config_text[spec.name] = ConfigText(s);
  }
};

class InferenceServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    models_ = new SuiteModels();
    SuiteModels& m = *models_;
    // The workhorse: batched, short delay.
    m.Add(MakeSpec("mlp", 8, "dynamic_batching { max_queue_delay_microseconds: 100 }"),
          {kIn, 64, 10}, 11);
    // No batching (max_batch_size 0), with its own tensor names.
    ConfigSpec flat = MakeSpec("flat", 0);
    flat.input_name = "pixels";
    flat.output_name = "scores";
    m.Add(flat, {kIn, 32, 5}, 12);
    // For the concurrency test: a queue delay long enough that concurrent requests share batches.
    m.Add(MakeSpec("iso", 32, "dynamic_batching { max_queue_delay_microseconds: 4000 }"),
          {kIn, 64, 10}, 13);
    // Requests wait for the delay (no preferred size is reachable below 8 rows); two priority levels.
    m.Add(MakeSpec("slow", 8,
                   "dynamic_batching { max_queue_delay_microseconds: 200000 priority_levels: 2 "
                   "default_priority_level: 1 }"),
          {kIn, 16, 10}, 14);
    // One queued request at most, held for 500 ms.
    m.Add(MakeSpec("qfull", 8,
                   "dynamic_batching { max_queue_delay_microseconds: 500000 default_queue_policy { max_queue_size: 1 } }"),
          {kIn, 16, 10}, 15);
    absl::StatusOr<std::unique_ptr<TestServer>> s = TestServer::Start(RepositoryOptions(m.repo.root()));
    if (s.ok()) {
      m.server = *std::move(s);
    } else {
      m.start_error = s.status().ToString();
    }
  }
  static void TearDownTestSuite() {
    delete models_;
    models_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(models_->server, nullptr) << models_->start_error; }

  static inference::GRPCInferenceService::Stub& stub() { return models_->server->stub(); }
  static const MlpWeights& W(const std::string& name) { return models_->weights.at(name); }

  static SuiteModels* models_;
};
SuiteModels* InferenceServiceTest::models_ = nullptr;

// ---- 1. Validation ------------------------------------------------------------------------------

struct BadRequestCase {
  std::string name;
  std::function<void(inference::ModelInferRequest&)> mutate;
  grpc::StatusCode code;
  std::string message;  // a substring of the error message
};

TEST_F(InferenceServiceTest, BadRequestsGetPreciseErrors) {
  std::mt19937 rng(101);
  const std::vector<float> x = RandomInputs(2 * kIn, rng);
  const auto set_shape = [](inference::ModelInferRequest& r, std::vector<int64_t> shape) {
    r.mutable_inputs(0)->clear_shape();
    for (int64_t d : shape) r.mutable_inputs(0)->add_shape(d);
  };
  const auto use_typed = [](inference::ModelInferRequest& r, size_t n) {
    r.clear_raw_input_contents();
    for (size_t i = 0; i < n; ++i) r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(0.25f + i % 7);
  };
  using Req = inference::ModelInferRequest;
  const grpc::StatusCode kInvalid = grpc::StatusCode::INVALID_ARGUMENT;
  const std::vector<BadRequestCase> cases = {
      {"unknown model", [](Req& r) { r.set_model_name("no_such_model"); }, grpc::StatusCode::NOT_FOUND,
       "'no_such_model' is not found"},
      {"unknown version", [](Req& r) { r.set_model_version("7"); }, grpc::StatusCode::NOT_FOUND,
       "version 7 is not found"},
      {"non-numeric version", [](Req& r) { r.set_model_version("v1"); }, kInvalid, "'v1' is not a positive integer"},
      {"version zero", [](Req& r) { r.set_model_version("0"); }, kInvalid, "'0' is not a positive integer"},
      {"missing input", [](Req& r) { r.clear_inputs(); }, kInvalid, "expected 1 input ('input') but got 0"},
      {"duplicate input", [](Req& r) { *r.add_inputs() = r.inputs(0); }, kInvalid,
       "expected 1 input ('input') but got 2: 'input', 'input'"},
      {"unknown input name", [](Req& r) { r.mutable_inputs(0)->set_name("pixels"); }, kInvalid,
       "unknown input 'pixels'"},
      {"datatype INT32", [](Req& r) { r.mutable_inputs(0)->set_datatype("INT32"); }, kInvalid,
       "has datatype 'INT32'"},
      {"datatype FP64", [](Req& r) { r.mutable_inputs(0)->set_datatype("FP64"); }, kInvalid, "has datatype 'FP64'"},
      {"rank 1 on a batched model", [&](Req& r) { set_shape(r, {kIn}); }, kInvalid, "(rank 1)"},
      {"rank 3", [&](Req& r) { set_shape(r, {1, 1, kIn}); }, kInvalid, "(rank 3)"},
      {"wrong width", [&](Req& r) { set_shape(r, {2, kIn - 1}); }, kInvalid, "has shape [2,783]"},
      {"batch 0", [&](Req& r) { set_shape(r, {0, kIn}); }, kInvalid, "has batch size 0"},
      {"batch over max_batch_size", [&](Req& r) { set_shape(r, {9, kIn}); }, kInvalid,
       "batch-size must be <= 8"},
      {"raw bytes short", [](Req& r) { r.mutable_raw_input_contents(0)->resize(2 * kIn * 4 - 4); }, kInvalid,
       "has 6268 bytes of raw data but shape [2,784] of FP32 needs 6272"},
      {"raw bytes long", [](Req& r) { r.mutable_raw_input_contents(0)->append(4, '\0'); }, kInvalid,
       "has 6276 bytes of raw data"},
      {"two raw_input_contents", [](Req& r) { *r.add_raw_input_contents() = r.raw_input_contents(0); }, kInvalid,
       "expected 1 raw_input_contents entry (one per input) but got 2"},
      {"raw and typed contents",
       [](Req& r) { r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1.0f); }, kInvalid,
       "both raw_input_contents and typed contents"},
      {"no contents", [](Req& r) { r.clear_raw_input_contents(); }, kInvalid, "has no data"},
      {"typed contents for FP16",
       [&](Req& r) {
         r.mutable_inputs(0)->set_datatype("FP16");
         use_typed(r, 2 * kIn);
       },
       kInvalid, "of FP16 must use raw_input_contents"},
      {"fp32_contents count mismatch", [&](Req& r) { use_typed(r, 2 * kIn - 1); }, kInvalid,
       "has 1567 fp32_contents values but shape [2,784] needs 1568"},
      {"unknown requested output", [](Req& r) { r.add_outputs()->set_name("probs"); }, kInvalid,
       "unknown output 'probs'"},
      {"output requested twice",
       [](Req& r) {
         r.add_outputs()->set_name("logits");
         r.add_outputs()->set_name("logits");
       },
       kInvalid, "output 'logits' requested twice"},
      {"classification output",
       [](Req& r) {
         auto* o = r.add_outputs();
         o->set_name("logits");
         (*o->mutable_parameters())["classification"].set_int64_param(3);
       },
       kInvalid, "classification extension is not supported"},
      {"priority as a string", [](Req& r) { (*r.mutable_parameters())["priority"].set_string_param("high"); },
       kInvalid, "parameter 'priority' must be an integer"},
      {"priority beyond the levels", [](Req& r) { (*r.mutable_parameters())["priority"].set_int64_param(2); },
       kInvalid, "priority 2 is out of range"},
      {"negative timeout", [](Req& r) { (*r.mutable_parameters())["timeout"].set_int64_param(-5); }, kInvalid,
       "timeout -5 must be >= 0 microseconds"},
  };
  for (const BadRequestCase& c : cases) {
    SCOPED_TRACE(c.name);
    inference::ModelInferRequest req = MakeInferRequest("mlp", "input", x, 2, kIn);
    c.mutate(req);
    inference::ModelInferResponse resp;
    const grpc::Status st = Infer(stub(), req, &resp);
    EXPECT_EQ(st.error_code(), c.code) << StatusText(st);
    EXPECT_THAT(st.error_message(), HasSubstr(c.message));
    EXPECT_EQ(resp.outputs_size(), 0);
  }
  // None of that disturbed the model.
  inference::ModelInferResponse resp;
  const grpc::Status st = Infer(stub(), MakeInferRequest("mlp", "input", x, 2, kIn), &resp);
  ASSERT_TRUE(st.ok()) << StatusText(st);
  EXPECT_TRUE(RowsClose(OutputValues(resp), ReferenceOutputs(W("mlp"), x, 2), 10, kVsReference));
}

TEST_F(InferenceServiceTest, NonFiniteInputsTaintOnlyTheirOwnRows) {
  std::mt19937 rng(102);
  std::vector<float> x = RandomInputs(5 * kIn, rng);
  x[1 * kIn + 300] = std::numeric_limits<float>::quiet_NaN();
  x[3 * kIn + 17] = std::numeric_limits<float>::infinity();
  x[4 * kIn + 700] = -std::numeric_limits<float>::infinity();
  inference::ModelInferResponse resp;
  const grpc::Status st = Infer(stub(), MakeInferRequest("mlp", "input", x, 5, kIn), &resp);
  ASSERT_TRUE(st.ok()) << StatusText(st);
  const std::vector<float> y = OutputValues(resp);
  ASSERT_EQ(y.size(), 50u);
  for (int r : {1, 3, 4}) {
    for (int k = 0; k < 10; ++k) EXPECT_FALSE(std::isfinite(y[r * 10 + k])) << "row " << r << " col " << k;
  }
  for (int r : {0, 2}) {
    SCOPED_TRACE(absl::StrCat("row ", r));
    EXPECT_TRUE(RowsClose(Rows(y, 10, r, 1), ReferenceOutputs(W("mlp"), Rows(x, kIn, r, 1), 1), 10, kVsReference));
  }
}

// ---- 2. Correctness -----------------------------------------------------------------------------

class InferCorrectnessTest : public InferenceServiceTest, public ::testing::WithParamInterface<Wire> {};

TEST_P(InferCorrectnessTest, MatchesTheReferenceForward) {
  const Wire wire = GetParam();
  std::mt19937 rng(200 + static_cast<int>(wire));
  for (int rows : {1, 3, 8}) {
    SCOPED_TRACE(absl::StrCat("rows ", rows));
    const std::vector<float> x = RandomInputs(static_cast<size_t>(rows) * kIn, rng);
    inference::ModelInferRequest req = MakeInferRequest("mlp", "input", x, rows, kIn, wire);
    req.set_id(absl::StrCat("req-", static_cast<int>(wire), "-", rows));
    if (rows == 3) {
      req.set_model_version("1");
      req.add_outputs()->set_name("logits");
    }
    inference::ModelInferResponse resp;
    const grpc::Status st = Infer(stub(), req, &resp);
    ASSERT_TRUE(st.ok()) << StatusText(st);
    EXPECT_EQ(resp.model_name(), "mlp");
    EXPECT_EQ(resp.model_version(), "1");
    EXPECT_EQ(resp.id(), req.id());
    ASSERT_EQ(resp.outputs_size(), 1);
    EXPECT_EQ(resp.outputs(0).name(), "logits");
    EXPECT_EQ(resp.outputs(0).datatype(), "FP32");
    EXPECT_THAT(resp.outputs(0).shape(), ElementsAre(rows, 10));
    ASSERT_EQ(resp.raw_output_contents_size(), 1);
    ASSERT_EQ(resp.raw_output_contents(0).size(), static_cast<size_t>(rows) * 10 * sizeof(float));
    // The server computes on what the wire carried: FP16/BF16 inputs rounded.
    const std::vector<float> want = ReferenceOutputs(W("mlp"), WireRounded(x, wire), rows);
    EXPECT_TRUE(RowsClose(OutputValues(resp), want, 10, kVsReference));
  }
}

INSTANTIATE_TEST_SUITE_P(Wires, InferCorrectnessTest,
                         ::testing::Values(Wire::kFp32Raw, Wire::kFp16Raw, Wire::kBf16Raw, Wire::kFp32Typed),
                         [](const ::testing::TestParamInfo<Wire>& p) { return std::string(WireName(p.param)); });

TEST_F(InferenceServiceTest, UnbatchedModelTakesOneRowWithoutBatchDimension) {
  std::mt19937 rng(103);
  const std::vector<float> x = RandomInputs(kIn, rng);
  inference::ModelInferRequest req = MakeInferRequest("flat", "pixels", x, 1, kIn, Wire::kFp32Raw, /*batched=*/false);
  req.set_id("flat-1");
  inference::ModelInferResponse resp;
  const grpc::Status st = Infer(stub(), req, &resp);
  ASSERT_TRUE(st.ok()) << StatusText(st);
  EXPECT_EQ(resp.id(), "flat-1");
  ASSERT_EQ(resp.outputs_size(), 1);
  EXPECT_EQ(resp.outputs(0).name(), "scores");
  EXPECT_THAT(resp.outputs(0).shape(), ElementsAre(5));
  EXPECT_TRUE(RowsClose(OutputValues(resp), ReferenceOutputs(W("flat"), x, 1), 5, kVsReference));

  // A batch dimension is not accepted there.
  const grpc::Status bad = Infer(stub(), MakeInferRequest("flat", "pixels", x, 1, kIn), &resp);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << StatusText(bad);
  EXPECT_THAT(bad.error_message(), HasSubstr("expected [784]"));
}

// ---- 3. Isolation under concurrency -------------------------------------------------------------

TEST_F(InferenceServiceTest, ConcurrentBatchedRequestsStayIsolated) {
  constexpr int kThreads = 8, kPerThread = 24;
  enum Kind { kGood, kBadWidth, kBadBytes, kUnknownModel };
  struct Sent {
    Kind kind;
    int rows;
    std::vector<float> x;
    grpc::Status status;
    std::vector<float> y;
    std::string id, echoed_id;
  };
  std::vector<std::vector<Sent>> sent(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &sent] {
      std::mt19937 rng(1000 + t);
      auto stub = models_->server->NewStub();
      for (int i = 0; i < kPerThread; ++i) {
        Sent s;
        s.kind = i % 6 == 5 ? static_cast<Kind>(1 + (t + i) % 3) : kGood;
        s.rows = std::uniform_int_distribution<int>(1, 16)(rng);
        s.x = RandomInputs(static_cast<size_t>(s.rows) * kIn, rng);
        // Now and then a NaN row, to show it stays in its own row and request.
        if (s.kind == kGood && i % 7 == 3) s.x[static_cast<size_t>(rng() % s.rows) * kIn + rng() % kIn] = NAN;
        s.id = absl::StrCat("t", t, "-", i);
        inference::ModelInferRequest req = MakeInferRequest("iso", "input", s.x, s.rows, kIn);
        req.set_id(s.id);
        if (s.kind == kBadWidth) req.mutable_inputs(0)->set_shape(1, kIn + 1);
        if (s.kind == kBadBytes) req.mutable_raw_input_contents(0)->pop_back();
        if (s.kind == kUnknownModel) req.set_model_name("iso_missing");
        inference::ModelInferResponse resp;
        s.status = Infer(*stub, req, &resp);
        s.y = OutputValues(resp);
        s.echoed_id = resp.id();
        sent[t].push_back(std::move(s));
      }
    });
  }
  for (std::thread& th : threads) th.join();

  uint64_t good = 0, good_rows = 0, reached_model_bad = 0;
  for (const auto& per_thread : sent) {
    for (const Sent& s : per_thread) {
      SCOPED_TRACE(s.id);
      switch (s.kind) {
        case kGood: {
          ++good;
          good_rows += s.rows;
          ASSERT_TRUE(s.status.ok()) << StatusText(s.status);
          EXPECT_EQ(s.echoed_id, s.id);
          // What this request gives when it runs alone.
          const std::vector<float> alone = FastOutputs(W("iso"), s.x, s.rows);
          ASSERT_EQ(s.y.size(), alone.size());
          int wrong_rows = 0;
          std::string first_wrong;
          for (int r = 0; r < s.rows; ++r) {
            const std::vector<float> got = Rows(s.y, 10, r, 1), want = Rows(alone, 10, r, 1);
            ::testing::AssertionResult ok = ::testing::AssertionSuccess();
            if (!std::isfinite(want[0])) {  // the NaN row: non-finite all along
              for (float v : got) {
                if (std::isfinite(v)) ok = ::testing::AssertionFailure() << "finite " << v << " in the NaN row";
              }
            } else {
              ok = RowsClose(got, want, 10, kVsOtherBatch);
            }
            if (!ok && wrong_rows++ == 0) first_wrong = absl::StrCat("row ", r, ": ", ok.message());
          }
          EXPECT_EQ(wrong_rows, 0) << "rows unlike this request's own output; first: " << first_wrong;
          break;
        }
        case kBadWidth:
        case kBadBytes:
          ++reached_model_bad;
          EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << StatusText(s.status);
          EXPECT_THAT(s.status.error_message(), HasSubstr(s.kind == kBadWidth ? "has shape" : "bytes of raw data"));
          break;
        case kUnknownModel:
          EXPECT_EQ(s.status.error_code(), grpc::StatusCode::NOT_FOUND) << StatusText(s.status);
          break;
      }
    }
  }

  // Statistics. A batch's inference/execution counts are recorded after its requests are answered,
  // so wait (bounded) for them to settle rather than read them the instant the last answer lands.
  inference::ModelStatistics stats;
  const absl::Time give_up = absl::Now() + absl::Seconds(5);
  do {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    inference::ModelStatisticsRequest req;
    req.set_name("iso");
    inference::ModelStatisticsResponse resp;
    const grpc::Status st = stub().ModelStatistics(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << StatusText(st);
    ASSERT_EQ(resp.model_stats_size(), 1);
    stats = resp.model_stats(0);
    if (stats.inference_count() == good_rows) break;
    absl::SleepFor(absl::Milliseconds(5));
  } while (absl::Now() < give_up);
  EXPECT_EQ(stats.name(), "iso");
  EXPECT_EQ(stats.version(), "1");
  EXPECT_EQ(stats.inference_stats().success().count(), good);
  EXPECT_EQ(stats.inference_count(), good_rows);
  EXPECT_EQ(stats.inference_stats().fail().count(), reached_model_bad);
  EXPECT_LE(stats.execution_count(), good);
  // Eight clients against a 4 ms queue delay: requests did share batches.
  EXPECT_LT(stats.execution_count(), good);
  uint64_t batched_rows = 0;
  for (const auto& b : stats.batch_stats()) batched_rows += b.batch_size() * b.compute_infer().count();
  EXPECT_EQ(batched_rows, good_rows);
}

// ---- 4. Streaming -------------------------------------------------------------------------------

TEST_F(InferenceServiceTest, StreamAnswersEveryRequestByIdAndSurvivesErrors) {
  std::mt19937 rng(104);
  constexpr int kN = 10;
  const std::map<int, std::string> bad = {{2, "is not found"}, {5, "has shape"}, {8, "has datatype 'INT32'"}};
  std::vector<std::vector<float>> xs;
  std::vector<int> rows;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  auto stream = stub().ModelStreamInfer(&ctx);
  const auto make = [&](int i) {
    rows.push_back(1 + i % 4);
    xs.push_back(RandomInputs(static_cast<size_t>(rows[i]) * kIn, rng));
    inference::ModelInferRequest req = MakeInferRequest("mlp", "input", xs[i], rows[i], kIn);
    req.set_id(absl::StrCat("r", i));
    if (i == 2) req.set_model_name("nope");
    if (i == 5) req.mutable_inputs(0)->set_shape(1, 100);
    if (i == 8) req.mutable_inputs(0)->set_datatype("INT32");
    return req;
  };
  const auto check = [&](const inference::ModelStreamInferResponse& r) {
    const std::string& id = r.infer_response().id();
    ASSERT_EQ(id.rfind('r', 0), 0u) << id;
    const int i = std::stoi(id.substr(1));
    SCOPED_TRACE(id);
    if (auto it = bad.find(i); it != bad.end()) {
      EXPECT_THAT(r.error_message(), HasSubstr(it->second));
      EXPECT_EQ(r.infer_response().outputs_size(), 0);
      return;
    }
    EXPECT_EQ(r.error_message(), "");
    EXPECT_EQ(r.infer_response().model_name(), "mlp");
    EXPECT_TRUE(RowsClose(OutputValues(r.infer_response()), ReferenceOutputs(W("mlp"), xs[i], rows[i]), 10, kVsReference));
  };

  for (int i = 0; i < kN; ++i) ASSERT_TRUE(stream->Write(make(i))) << i;
  std::set<std::string> ids;
  for (int i = 0; i < kN; ++i) {
    inference::ModelStreamInferResponse r;
    ASSERT_TRUE(stream->Read(&r)) << "response " << i;
    check(r);
    ids.insert(r.infer_response().id());
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(kN)) << "one response per request";
  // After the errors the stream still serves.
  ASSERT_TRUE(stream->Write(make(kN)));
  inference::ModelStreamInferResponse last;
  ASSERT_TRUE(stream->Read(&last));
  EXPECT_EQ(last.infer_response().id(), absl::StrCat("r", kN));
  check(last);
  ASSERT_TRUE(stream->WritesDone());
  const grpc::Status st = stream->Finish();
  EXPECT_TRUE(st.ok()) << StatusText(st);
}

// ---- 5. Metadata, configuration, health ---------------------------------------------------------

TEST_F(InferenceServiceTest, LivenessReadinessAndServerMetadata) {
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    inference::ServerLiveResponse resp;
    ASSERT_TRUE(stub().ServerLive(&ctx, {}, &resp).ok());
    EXPECT_TRUE(resp.live());
  }
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    inference::ServerReadyResponse resp;
    ASSERT_TRUE(stub().ServerReady(&ctx, {}, &resp).ok());
    EXPECT_TRUE(resp.ready());
  }
  const auto model_ready = [](const std::string& name, const std::string& version) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    inference::ModelReadyRequest req;
    req.set_name(name);
    req.set_version(version);
    inference::ModelReadyResponse resp;
    const grpc::Status st = stub().ModelReady(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << StatusText(st);
    return resp.ready();
  };
  EXPECT_TRUE(model_ready("mlp", ""));
  EXPECT_TRUE(model_ready("mlp", "1"));
  EXPECT_FALSE(model_ready("mlp", "2"));
  EXPECT_FALSE(model_ready("unknown_model", ""));
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    inference::ServerMetadataResponse resp;
    ASSERT_TRUE(stub().ServerMetadata(&ctx, {}, &resp).ok());
    EXPECT_EQ(resp.name(), "fp8serve");
    EXPECT_THAT(resp.extensions(), Contains("statistics"));
    EXPECT_THAT(resp.extensions(), Contains("model_repository"));
  }
}

TEST_F(InferenceServiceTest, ModelMetadataShowsTheBatchDimensionOnlyWhenBatching) {
  const auto metadata = [](const std::string& name) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    inference::ModelMetadataRequest req;
    req.set_name(name);
    inference::ModelMetadataResponse resp;
    const grpc::Status st = stub().ModelMetadata(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << StatusText(st);
    return resp;
  };
  const inference::ModelMetadataResponse b = metadata("mlp");
  EXPECT_EQ(b.name(), "mlp");
  EXPECT_THAT(b.versions(), ElementsAre("1"));
  EXPECT_EQ(b.platform(), "fp8_mlp");
  ASSERT_EQ(b.inputs_size(), 1);
  ASSERT_EQ(b.outputs_size(), 1);
  EXPECT_EQ(b.inputs(0).name(), "input");
  EXPECT_EQ(b.inputs(0).datatype(), "FP32");
  EXPECT_THAT(b.inputs(0).shape(), ElementsAre(-1, kIn));
  EXPECT_EQ(b.outputs(0).name(), "logits");
  EXPECT_EQ(b.outputs(0).datatype(), "FP32");
  EXPECT_THAT(b.outputs(0).shape(), ElementsAre(-1, 10));

  const inference::ModelMetadataResponse f = metadata("flat");
  ASSERT_EQ(f.inputs_size(), 1);
  ASSERT_EQ(f.outputs_size(), 1);
  EXPECT_EQ(f.inputs(0).name(), "pixels");
  EXPECT_THAT(f.inputs(0).shape(), ElementsAre(kIn));
  EXPECT_EQ(f.outputs(0).name(), "scores");
  EXPECT_THAT(f.outputs(0).shape(), ElementsAre(5));

  grpc::ClientContext ctx;
  SetDeadline(ctx);
  inference::ModelMetadataRequest req;
  req.set_name("unknown_model");
  inference::ModelMetadataResponse resp;
  EXPECT_EQ(stub().ModelMetadata(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(InferenceServiceTest, ModelConfigRoundTripsTheConfigFile) {
  for (const std::string name : {"mlp", "flat", "qfull"}) {
    SCOPED_TRACE(name);
    inference::ModelConfig want;
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(models_->config_text.at(name), &want));
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    inference::ModelConfigRequest req;
    req.set_name(name);
    inference::ModelConfigResponse resp;
    const grpc::Status st = stub().ModelConfig(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << StatusText(st);
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(resp.config(), want))
        << "got:\n" << resp.config().DebugString() << "want:\n" << want.DebugString();
  }
}

// grpc.health.v1.Health/Check through a generic stub. Debian's gRPC ships no generated health.pb.h,
// so the messages are encoded by hand: HealthCheckRequest{service = ""} is zero bytes, and a
// HealthCheckResponse is field 1 (status, an enum varint): tag byte 0x08, then the value.
grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         std::string* response_bytes) {
  grpc::GenericStub generic(channel);
  std::string request;
  if (!service.empty()) {
    request.push_back(0x0a);  // field 1, length-delimited
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  grpc::Slice slice(request);
  grpc::ByteBuffer req(&slice, 1), resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  std::promise<grpc::Status> done;
  generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &req, &resp,
                    [&done](grpc::Status st) { done.set_value(std::move(st)); });
  grpc::Status st = done.get_future().get();
  std::vector<grpc::Slice> slices;
  response_bytes->clear();
  if (st.ok() && resp.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) response_bytes->append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return st;
}

TEST_F(InferenceServiceTest, DefaultHealthServiceReportsServing) {
  std::string bytes;
  const grpc::Status st = HealthCheck(models_->server->channel(), "", &bytes);
  ASSERT_TRUE(st.ok()) << StatusText(st);
  constexpr char kServing = 1;  // HealthCheckResponse.ServingStatus.SERVING
  EXPECT_EQ(bytes, std::string({0x08, kServing}));
  // A service nobody registered a status for is unknown to the health service.
  EXPECT_EQ(HealthCheck(models_->server->channel(), "no.such.Service", &bytes).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// ---- 6. Timeouts, priorities, queue limits ------------------------------------------------------

TEST_F(InferenceServiceTest, TimeoutParameterExpiresAQueuedRequest) {
  std::mt19937 rng(105);
  const std::vector<float> x = RandomInputs(kIn, rng);
  inference::ModelInferRequest req = MakeInferRequest("slow", "input", x, 1, kIn);
  (*req.mutable_parameters())["timeout"].set_int64_param(1);  // microseconds
  inference::ModelInferResponse resp;
  grpc::Status st = Infer(stub(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << StatusText(st);

  // 50 ms: the request is queued, and expires there long before the 200 ms delay would send it.
  (*req.mutable_parameters())["timeout"].set_int64_param(50'000);
  st = Infer(stub(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << StatusText(st);
  EXPECT_THAT(st.error_message(), HasSubstr("timed out in the queue"));
}

TEST_F(InferenceServiceTest, PriorityMustBeWithinTheModelsLevels) {
  std::mt19937 rng(106);
  const std::vector<float> x = RandomInputs(kIn, rng);
  inference::ModelInferRequest req = MakeInferRequest("slow", "input", x, 1, kIn);
  (*req.mutable_parameters())["priority"].set_int64_param(3);
  inference::ModelInferResponse resp;
  grpc::Status st = Infer(stub(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << StatusText(st);
  EXPECT_THAT(st.error_message(), HasSubstr("priority 3 is out of range"));
  // Level 2 exists (as uint64, the other integer field clients use); it waits out the queue delay.
  (*req.mutable_parameters())["priority"].set_uint64_param(2);
  st = Infer(stub(), req, &resp);
  ASSERT_TRUE(st.ok()) << StatusText(st);
  EXPECT_TRUE(RowsClose(OutputValues(resp), ReferenceOutputs(W("slow"), x, 1), 10, kVsReference));
}

TEST_F(InferenceServiceTest, FullQueueRefusesWithUnavailable) {
  // Three requests at once against max_queue_size 1 and a 500 ms delay: the first to arrive waits
  // in the queue for the delay, the other two find it full.
  std::mt19937 rng(107);
  constexpr int kN = 3;
  std::vector<std::vector<float>> xs;
  std::vector<inference::ModelInferRequest> reqs(kN);
  std::vector<inference::ModelInferResponse> resps(kN);
  std::vector<grpc::ClientContext> ctxs(kN);
  std::vector<std::promise<grpc::Status>> done(kN);
  for (int i = 0; i < kN; ++i) {
    xs.push_back(RandomInputs(kIn, rng));
    reqs[i] = MakeInferRequest("qfull", "input", xs[i], 1, kIn);
    SetDeadline(ctxs[i]);
  }
  for (int i = 0; i < kN; ++i) {
    stub().async()->ModelInfer(&ctxs[i], &reqs[i], &resps[i],
                               [&done, i](grpc::Status st) { done[i].set_value(std::move(st)); });
  }
  int ok = 0, full = 0;
  for (int i = 0; i < kN; ++i) {
    const grpc::Status st = done[i].get_future().get();
    if (st.ok()) {
      ++ok;
      EXPECT_TRUE(RowsClose(OutputValues(resps[i]), ReferenceOutputs(W("qfull"), xs[i], 1), 10, kVsReference));
    } else {
      ++full;
      EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << StatusText(st);
      EXPECT_THAT(st.error_message(), HasSubstr("queue full"));
    }
  }
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(full, kN - 1);
}

// ---- 7. Message size limit ----------------------------------------------------------------------

TEST_F(InferenceServiceTest, OversizedRequestIsRefusedByGrpc) {
  TestServer::Options options;
  options.max_receive_message_size = 1 << 20;
  absl::StatusOr<std::unique_ptr<TestServer>> small = TestServer::Start(RepositoryOptions(models_->repo.root()), options);
  ASSERT_TRUE(small.ok()) << small.status();
  std::mt19937 rng(108);
  const std::vector<float> x = RandomInputs(8 * kIn, rng);
  inference::ModelInferResponse resp;
  // A normal request passes.
  grpc::Status st = Infer((*small)->stub(), MakeInferRequest("mlp", "input", x, 8, kIn), &resp);
  ASSERT_TRUE(st.ok()) << StatusText(st);
  // 2 MB of input never reaches the service.
  inference::ModelInferRequest big = MakeInferRequest("mlp", "input", x, 8, kIn);
  big.mutable_raw_input_contents(0)->resize(2 << 20, '\x01');
  st = Infer((*small)->stub(), big, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << StatusText(st);
}

}  // namespace
}  // namespace fp8serve::test
