// ModelRepository on real folders: configs that are wrong or contradict their weights, version
// policies, the explicit and poll control modes, failed reloads, and reloads under live gRPC load.
#include "server/repository/model_repository.h"

#include <atomic>
#include <cmath>
#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/mlp_fast.h"
#include "tests/server/testing/test_models.h"

namespace fp8serve::test {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;


using Stub = inference::GRPCInferenceService::Stub;

std::string StatusText(const grpc::Status& st) { return absl::StrCat(st.error_code(), ": ", st.error_message()); }

std::vector<inference::RepositoryIndexResponse::ModelIndex> RpcIndex(Stub& stub, bool ready_only = false) {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  inference::RepositoryIndexRequest req;
  req.set_ready(ready_only);
  inference::RepositoryIndexResponse resp;
  const grpc::Status st = stub.RepositoryIndex(&ctx, req, &resp);
  EXPECT_TRUE(st.ok()) << StatusText(st);
  return {resp.models().begin(), resp.models().end()};
}

// The index entries of one model, as "version:state" strings, for compact assertions.
std::vector<std::string> States(Stub& stub, const std::string& name) {
  std::vector<std::string> out;
  for (const auto& m : RpcIndex(stub)) {
    if (m.name() == name) out.push_back(m.version() + ":" + m.state());
  }
  return out;
}

std::string ReasonOf(Stub& stub, const std::string& name) {
  std::string reason;
  for (const auto& m : RpcIndex(stub)) {
    if (m.name() == name) reason += m.reason();
  }
  return reason;
}

bool ModelReady(Stub& stub, const std::string& name, const std::string& version = "") {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  inference::ModelReadyRequest req;
  req.set_name(name);
  req.set_version(version);
  inference::ModelReadyResponse resp;
  const grpc::Status st = stub.ModelReady(&ctx, req, &resp);
  EXPECT_TRUE(st.ok()) << StatusText(st);
  return resp.ready();
}

grpc::Status RpcLoad(Stub& stub, const std::string& name) {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  inference::RepositoryModelLoadRequest req;
  req.set_model_name(name);
  inference::RepositoryModelLoadResponse resp;
  return stub.RepositoryModelLoad(&ctx, req, &resp);
}

grpc::Status RpcUnload(Stub& stub, const std::string& name) {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  inference::RepositoryModelUnloadRequest req;
  req.set_model_name(name);
  inference::RepositoryModelUnloadResponse resp;
  return stub.RepositoryModelUnload(&ctx, req, &resp);
}

std::vector<std::string> MetadataVersions(Stub& stub, const std::string& name) {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  inference::ModelMetadataRequest req;
  req.set_name(name);
  inference::ModelMetadataResponse resp;
  const grpc::Status st = stub.ModelMetadata(&ctx, req, &resp);
  EXPECT_TRUE(st.ok()) << StatusText(st);
  return {resp.versions().begin(), resp.versions().end()};
}

// Sends fresh random rows to name:version and checks the answer against `weights`' reference.
void ExpectServes(Stub& stub, const std::string& name, const MlpWeights& weights, const std::string& version = "",
                  int rows = 3) {
  static std::mt19937 rng(4242);
  const std::vector<float> x = RandomInputs(static_cast<size_t>(rows) * weights.input_dim(), rng);
  inference::ModelInferRequest req = MakeInferRequest(name, "input", x, rows, weights.input_dim());
  req.set_model_version(version);
  inference::ModelInferResponse resp;
  const grpc::Status st = Infer(stub, req, &resp);
  ASSERT_TRUE(st.ok()) << name << ":" << version << " " << StatusText(st);
  if (!version.empty()) {
    EXPECT_EQ(resp.model_version(), version);
  }
  EXPECT_TRUE(RowsClose(OutputValues(resp), ReferenceOutputs(weights, x, rows), weights.output_dim(), kVsReference))
      << name << ":" << version;
}

grpc::StatusCode InferCode(Stub& stub, const std::string& name, const std::string& version = "") {
  std::mt19937 rng(7);
  inference::ModelInferRequest req = MakeInferRequest(name, "input", RandomInputs(kIn, rng), 1, kIn);
  req.set_model_version(version);
  inference::ModelInferResponse resp;
  return Infer(stub, req, &resp).error_code();
}

std::unique_ptr<TestServer> StartOrDie(const ModelRepository::Options& options) {
  absl::StatusOr<std::unique_ptr<TestServer>> s = TestServer::Start(options);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : nullptr;
}

// ---- Bad models ---------------------------------------------------------------------------------

TEST(ModelRepositoryTest, BadModelsAreRecordedWithTheirReasonAndTheGoodOneServes) {
  TempModelRepository repo;
  const MlpWeights w = RandomMlp({kIn, 32, 10}, 1);
  // A good model that states (correct) num_layers and weight_format parameters.
  repo.AddModel(MakeSpec("good", 8,
                         "parameters { key: \"num_layers\" value { string_value: \"2\" } }\n"
                         "parameters { key: \"weight_format\" value { string_value: \"e4m3\" } }"),
                w);
  struct Bad {
    std::string folder;
    std::string config;
    std::vector<std::string> reason;  // substrings of the recorded reason
  };
  ConfigSpec in_dims = MakeSpec("in_dims", 8);
  in_dims.input_dim = kIn - 1;
  ConfigSpec out_dims = MakeSpec("out_dims", 8);
  out_dims.output_dim = 11;
  const std::string weights_of = "/1/model.safetensors";
  const std::vector<Bad> bad = {
      {"in_dims", ConfigText(in_dims), {"contradicts", "input 'input' has dims [783] but the first layer takes 784"}},
      {"out_dims", ConfigText(out_dims), {"contradicts", "output 'logits' has dims [11] but the last layer gives 10"}},
      {"layers",
       ConfigText(MakeSpec("layers", 8, "parameters { key: \"num_layers\" value { string_value: \"3\" } }")),
       {"contradicts", "num_layers is '3' but the weights have 2 layers"}},
      {"format",
       ConfigText(MakeSpec("format", 8, "parameters { key: \"weight_format\" value { string_value: \"e5m2\" } }")),
       {"contradicts", "weight_format is 'e5m2' but the weights are e4m3"}},
      {"syntax", "name: \"syntax\"\nplatform: \"fp8_mlp\"\nmax_batch_size: eight\n", {"config.pbtxt", "line 3"}},
      // Found by tests/fuzz/model_config_fuzz: a billion levels made a billion queues at load.
      {"levels",
       ConfigText(MakeSpec("levels", 8, "dynamic_batching { priority_levels: 1000000000 default_priority_level: 1 }")),
       {"priority_levels 1000000000 is more than fp8serve's limit of 1024"}},
      {"delay",
       ConfigText(MakeSpec("delay", 8, "dynamic_batching { max_queue_delay_microseconds: 18446744073709551615 }")),
       {"max_queue_delay_microseconds 18446744073709551615 is out of range"}},
      {"timeout",
       ConfigText(MakeSpec("timeout", 8,
                           "dynamic_batching { default_queue_policy { default_timeout_microseconds: 9223372036854775808 } }")),
       {"default_timeout_microseconds 9223372036854775808 is out of range"}},
      {"folder_a", ConfigText(MakeSpec("other_name", 8)), {"name 'other_name' does not match its folder 'folder_a'"}},
      {"platform",
       [] {
         std::string t = ConfigText(MakeSpec("platform", 8));
         t.replace(t.find("fp8_mlp"), 7, "tensorrt_plan");
         return t;
       }(),
       {"platform 'tensorrt_plan' is not served by fp8serve"}},
  };
  for (const Bad& b : bad) {
    repo.WriteConfig(b.folder, b.config);
    repo.WriteWeights(b.folder, 1, w);
  }

  std::unique_ptr<TestServer> server = StartOrDie(RepositoryOptions(repo.root()));
  ASSERT_NE(server, nullptr);
  Stub& stub = server->stub();
  ExpectServes(stub, "good", w);
  EXPECT_THAT(States(stub, "good"), ElementsAre("1:READY"));

  for (const Bad& b : bad) {
    SCOPED_TRACE(b.folder);
    EXPECT_THAT(States(stub, b.folder), ElementsAre(":UNAVAILABLE"));
    const std::string reason = ReasonOf(stub, b.folder);
    // Every error names the config file; the contradictions also name the weights file.
    EXPECT_THAT(reason, HasSubstr(repo.ConfigPath(b.folder)));
    if (b.reason[0] == "contradicts") {
      EXPECT_THAT(reason, HasSubstr(repo.ModelDir(b.folder) + weights_of));
    }
    for (const std::string& s : b.reason) EXPECT_THAT(reason, HasSubstr(s));
    EXPECT_FALSE(ModelReady(stub, b.folder));
    // A request for it says why.
    std::mt19937 rng(3);
    inference::ModelInferResponse resp;
    const grpc::Status st = Infer(stub, MakeInferRequest(b.folder, "input", RandomInputs(kIn, rng), 1, kIn), &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << StatusText(st);
    EXPECT_THAT(st.error_message(), HasSubstr(b.reason.back()));
  }
  // Not every model is ready, so the server is not.
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  inference::ServerReadyResponse ready;
  ASSERT_TRUE(stub.ServerReady(&ctx, {}, &ready).ok());
  EXPECT_FALSE(ready.ready());
}

// ---- Version policies ---------------------------------------------------------------------------

TEST(ModelRepositoryTest, VersionPoliciesPickTheirVersions) {
  TempModelRepository repo;
  std::map<int, MlpWeights> w;  // distinct weights per version, so answers show which one served
  for (int v = 1; v <= 3; ++v) w[v] = RandomMlp({kIn, 16, 10}, 100 + v);
  const std::map<std::string, std::string> policies = {
      {"latest2", "version_policy { latest { num_versions: 2 } }"},
      {"all", "version_policy { all {} }"},
      {"specific", "version_policy { specific { versions: [1, 3] } }"},
      {"default", ""},
  };
  for (const auto& [name, policy] : policies) {
    repo.AddModel(MakeSpec(name, 4, policy), w[1], {});
    for (int v = 1; v <= 3; ++v) repo.WriteWeights(name, v, w[v]);
  }
  std::unique_ptr<TestServer> server = StartOrDie(RepositoryOptions(repo.root()));
  ASSERT_NE(server, nullptr);
  Stub& stub = server->stub();

  const std::map<std::string, std::vector<std::string>> want = {
      {"latest2", {"2", "3"}}, {"all", {"1", "2", "3"}}, {"specific", {"1", "3"}}, {"default", {"3"}}};
  for (const auto& [name, versions] : want) {
    SCOPED_TRACE(name);
    EXPECT_EQ(MetadataVersions(stub, name), versions);
    for (int v = 1; v <= 3; ++v) {
      const std::string vs = std::to_string(v);
      const bool wanted = std::find(versions.begin(), versions.end(), vs) != versions.end();
      EXPECT_EQ(ModelReady(stub, name, vs), wanted) << "version " << v;
      if (wanted) {
        ExpectServes(stub, name, w[v], vs);
      } else {
        EXPECT_EQ(InferCode(stub, name, vs), grpc::StatusCode::NOT_FOUND);
      }
    }
    // No version named: the highest ready one.
    ExpectServes(stub, name, w[3]);
  }
}

// ---- Control modes ------------------------------------------------------------------------------

TEST(ModelRepositoryTest, ExplicitModeLoadsOnlyWhatItIsAskedTo) {
  TempModelRepository repo;
  const MlpWeights wa = RandomMlp({kIn, 16, 10}, 21), wb = RandomMlp({kIn, 16, 10}, 22);
  repo.AddModel(MakeSpec("a", 4), wa);
  repo.AddModel(MakeSpec("b", 4), wb);

  {  // Nothing named at start: nothing loaded, but the index lists what is on disk.
    std::unique_ptr<TestServer> server = StartOrDie(RepositoryOptions(repo.root(), ModelControlMode::kExplicit));
    ASSERT_NE(server, nullptr);
    EXPECT_THAT(States(server->stub(), "a"), ElementsAre(":UNAVAILABLE"));
    EXPECT_THAT(ReasonOf(server->stub(), "a"), HasSubstr("not loaded"));
    EXPECT_EQ(RpcIndex(server->stub(), /*ready_only=*/true).size(), 0u);
    EXPECT_EQ(InferCode(server->stub(), "a"), grpc::StatusCode::NOT_FOUND);
  }
  {  // "*" loads everything.
    std::unique_ptr<TestServer> server =
        StartOrDie(RepositoryOptions(repo.root(), ModelControlMode::kExplicit, {"*"}));
    ASSERT_NE(server, nullptr);
    EXPECT_EQ(RpcIndex(server->stub(), /*ready_only=*/true).size(), 2u);
  }

  std::unique_ptr<TestServer> server = StartOrDie(RepositoryOptions(repo.root(), ModelControlMode::kExplicit, {"b"}));
  ASSERT_NE(server, nullptr);
  Stub& stub = server->stub();
  EXPECT_THAT(States(stub, "a"), ElementsAre(":UNAVAILABLE"));
  EXPECT_THAT(States(stub, "b"), ElementsAre("1:READY"));
  EXPECT_FALSE(ModelReady(stub, "a"));
  ExpectServes(stub, "b", wb);

  grpc::Status st = RpcLoad(stub, "a");
  ASSERT_TRUE(st.ok()) << StatusText(st);
  EXPECT_THAT(States(stub, "a"), ElementsAre("1:READY"));
  EXPECT_TRUE(ModelReady(stub, "a"));
  ExpectServes(stub, "a", wa);

  st = RpcUnload(stub, "b");
  ASSERT_TRUE(st.ok()) << StatusText(st);
  EXPECT_THAT(States(stub, "b"), ElementsAre(":UNAVAILABLE"));
  EXPECT_FALSE(ModelReady(stub, "b"));
  EXPECT_EQ(InferCode(stub, "b"), grpc::StatusCode::NOT_FOUND);
  ExpectServes(stub, "a", wa);  // the other model is untouched

  // And back.
  st = RpcLoad(stub, "b");
  ASSERT_TRUE(st.ok()) << StatusText(st);
  ExpectServes(stub, "b", wb);

  st = RpcLoad(stub, "missing");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << StatusText(st);
  EXPECT_THAT(st.error_message(), HasSubstr("'missing' is not in the model repository"));
  st = RpcLoad(stub, "../a");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << StatusText(st);
  st = RpcUnload(stub, "never_loaded");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << StatusText(st);
}

TEST(ModelRepositoryTest, ModeNoneRefusesLoadAndUnload) {
  TempModelRepository repo;
  const MlpWeights w = RandomMlp({kIn, 16, 10}, 31);
  repo.AddModel(MakeSpec("a", 4), w);
  std::unique_ptr<TestServer> server = StartOrDie(RepositoryOptions(repo.root()));
  ASSERT_NE(server, nullptr);
  grpc::Status st = RpcLoad(server->stub(), "a");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << StatusText(st);
  EXPECT_THAT(st.error_message(), HasSubstr("explicit"));
  st = RpcUnload(server->stub(), "a");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << StatusText(st);
  ExpectServes(server->stub(), "a", w);
}

TEST(ModelRepositoryTest, PollPicksUpNewChangedAndRemovedModels) {
  TempModelRepository repo;
  const MlpWeights w1 = RandomMlp({kIn, 16, 10}, 41), w2 = RandomMlp({kIn, 16, 10}, 42),
                   wn = RandomMlp({kIn, 16, 10}, 43);
  repo.AddModel(MakeSpec("p", 8), w1);
  std::unique_ptr<TestServer> server = StartOrDie(RepositoryOptions(repo.root(), ModelControlMode::kPoll));
  ASSERT_NE(server, nullptr);
  Stub& stub = server->stub();
  ModelRepository& repository = server->repository();
  ExpectServes(stub, "p", w1);
  repository.Poll();  // nothing changed: nothing happens
  ExpectServes(stub, "p", w1, "1");

  // A new model.
  repo.AddModel(MakeSpec("fresh", 8), wn);
  EXPECT_FALSE(ModelReady(stub, "fresh"));
  repository.Poll();
  EXPECT_TRUE(ModelReady(stub, "fresh"));
  ExpectServes(stub, "fresh", wn);

  // A new version: the default policy serves only the latest.
  repo.WriteWeights("p", 2, w2);
  repository.Poll();
  EXPECT_TRUE(ModelReady(stub, "p", "2"));
  EXPECT_FALSE(ModelReady(stub, "p", "1"));
  ExpectServes(stub, "p", w2);

  // A changed config. (Its size changes too: Poll compares sizes and modification times, and two
  // writes within one coarse mtime tick would look alike if the size did not change.)
  ConfigSpec smaller = MakeSpec("p", 4, "# max_batch_size lowered");
  repo.WriteConfig("p", ConfigText(smaller));
  repository.Poll();
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    inference::ModelConfigRequest req;
    req.set_name("p");
    inference::ModelConfigResponse resp;
    ASSERT_TRUE(stub.ModelConfig(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.config().max_batch_size(), 4);
  }
  std::mt19937 rng(44);
  inference::ModelInferResponse resp;
  const grpc::Status st = Infer(stub, MakeInferRequest("p", "input", RandomInputs(5 * kIn, rng), 5, kIn), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << StatusText(st);
  EXPECT_THAT(st.error_message(), HasSubstr("batch-size must be <= 4"));
  ExpectServes(stub, "p", w2, "2", 4);

  // Weights of the same size published by rename, with the old file's modification time put back:
  // only the file's identity differs, and that is enough.
  const std::string weights_path = repo.root() + "/p/2/model.safetensors";
  struct stat before {};
  ASSERT_EQ(stat(weights_path.c_str(), &before), 0);
  const MlpWeights w3 = RandomMlp({kIn, 16, 10}, 45);
  repo.WriteWeights("p", 2, w3);
  const struct timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(utimensat(AT_FDCWD, weights_path.c_str(), times, 0), 0);
  struct stat after {};
  ASSERT_EQ(stat(weights_path.c_str(), &after), 0);
  ASSERT_EQ(after.st_size, before.st_size);
  ASSERT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
  repository.Poll();
  ExpectServes(stub, "p", w3, "2", 4);

  // A removed model.
  repo.RemoveModel("fresh");
  repository.Poll();
  EXPECT_FALSE(ModelReady(stub, "fresh"));
  EXPECT_EQ(InferCode(stub, "fresh"), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(States(stub, "fresh"), ElementsAre(":UNAVAILABLE"));
  ExpectServes(stub, "p", w3);
}

// ---- Reloads ------------------------------------------------------------------------------------

TEST(ModelRepositoryTest, FailedReloadKeepsTheOldVersionServing) {
  TempModelRepository repo;
  const MlpWeights w1 = RandomMlp({kIn, 16, 10}, 51), w2 = RandomMlp({kIn, 16, 10}, 52);
  repo.AddModel(MakeSpec("m", 4), w1);
  std::unique_ptr<TestServer> server = StartOrDie(RepositoryOptions(repo.root(), ModelControlMode::kExplicit, {"m"}));
  ASSERT_NE(server, nullptr);
  Stub& stub = server->stub();
  ExpectServes(stub, "m", w1);

  // Corrupt weights: the reload fails, naming the file, and the loaded version keeps serving.
  repo.WriteFile("m/1/model.safetensors", "this is not a safetensors file");
  grpc::Status st = RpcLoad(stub, "m");
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.error_message(), HasSubstr(repo.WeightsPath("m", 1)));
  EXPECT_TRUE(ModelReady(stub, "m"));
  ExpectServes(stub, "m", w1);
  EXPECT_THAT(States(stub, "m"), ElementsAre("1:READY"));
  EXPECT_THAT(ReasonOf(stub, "m"), AllOf(HasSubstr(repo.WeightsPath("m", 1)), HasSubstr(st.error_message())));

  // A config that no longer matches is refused the same way.
  ConfigSpec wrong = MakeSpec("m", 4);
  wrong.output_dim = 12;
  repo.WriteConfig("m", ConfigText(wrong));
  repo.WriteWeights("m", 1, w2);
  st = RpcLoad(stub, "m");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << StatusText(st);
  EXPECT_THAT(st.error_message(), HasSubstr("contradicts"));
  ExpectServes(stub, "m", w1);

  // Fixed: the reload goes through and the new weights serve.
  repo.WriteConfig("m", ConfigText(MakeSpec("m", 4)));
  st = RpcLoad(stub, "m");
  ASSERT_TRUE(st.ok()) << StatusText(st);
  ExpectServes(stub, "m", w2);
  EXPECT_EQ(ReasonOf(stub, "m"), "");
}

TEST(ModelRepositoryTest, ReloadUnderLoadNeverFailsOrMixesModels) {
  constexpr int kReloads = 10, kClients = 4;
  TempModelRepository repo;
  std::vector<MlpWeights> gen;  // gen[k]: the weights of the k-th load
  for (int k = 0; k <= kReloads; ++k) gen.push_back(RandomMlp({kIn, 32, 10}, 600 + k));
  std::vector<FastMlp> fast;
  for (const MlpWeights& w : gen) fast.emplace_back(w);
  repo.AddModel(MakeSpec("hot", 8, "dynamic_batching { max_queue_delay_microseconds: 500 }"), gen[0]);
  std::unique_ptr<TestServer> server =
      StartOrDie(RepositoryOptions(repo.root(), ModelControlMode::kExplicit, {"hot"}));
  ASSERT_NE(server, nullptr);

  // published: the newest generation whose Load has returned (every later request must see it or a
  // newer one); written: the newest generation whose file exists (no answer can come from a newer).
  std::atomic<int> published{0}, written{0};
  std::atomic<bool> stop{false};
  struct Answer {
    int lo, hi, rows;
    std::vector<float> x, y;
    grpc::Status status;
  };
  std::vector<std::vector<Answer>> answers(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937 rng(700 + c);
      auto stub = server->NewStub();
      while (!stop.load()) {
        Answer a;
        a.rows = 1 + static_cast<int>(rng() % 4);
        a.x = RandomInputs(static_cast<size_t>(a.rows) * kIn, rng);
        a.lo = published.load();
        inference::ModelInferResponse resp;
        a.status = Infer(*stub, MakeInferRequest("hot", "input", a.x, a.rows, kIn), &resp);
        a.hi = written.load();
        a.y = OutputValues(resp);
        answers[c].push_back(std::move(a));
      }
    });
  }
  // About 1.5 s of load with a reload every 150 ms; the pause paces the reloads, nothing waits on it.
  for (int k = 1; k <= kReloads; ++k) {
    absl::SleepFor(absl::Milliseconds(150));
    written.store(k);
    repo.WriteWeights("hot", 1, gen[k]);
    const grpc::Status st = RpcLoad(server->stub(), "hot");
    EXPECT_TRUE(st.ok()) << "reload " << k << ": " << StatusText(st);
    published.store(k);
  }
  absl::SleepFor(absl::Milliseconds(100));
  stop.store(true);
  for (std::thread& t : clients) t.join();

  int total = 0, failed = 0, unmatched = 0;
  std::set<int> generations_seen;
  for (const auto& per_client : answers) {
    for (const Answer& a : per_client) {
      ++total;
      if (!a.status.ok()) {
        if (++failed <= 5) ADD_FAILURE() << "request failed during reloads: " << StatusText(a.status);
        continue;
      }
      int match = -1;
      for (int k = a.lo; k <= a.hi && match < 0; ++k) {
        std::vector<float> want(static_cast<size_t>(a.rows) * 10);
        fast[k].Forward(a.x.data(), a.rows, want.data());
        if (RowsClose(a.y, want, 10, kVsOtherBatch)) match = k;
      }
      if (match < 0) {
        if (++unmatched <= 5) ADD_FAILURE() << "answer matches no generation in [" << a.lo << ", " << a.hi << "]";
      } else {
        generations_seen.insert(match);
      }
    }
  }
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(unmatched, 0);
  EXPECT_GE(total, 50) << "the clients barely ran";
  EXPECT_GE(generations_seen.size(), static_cast<size_t>(kReloads / 2)) << "answers spanned few reloads";
  EXPECT_EQ(published.load(), kReloads);
  ExpectServes(server->stub(), "hot", gen[kReloads]);
}

}  // namespace
}  // namespace fp8serve::test
