// Fuzz target: a model's config.pbtxt, loaded the way the server loads a repository.
//
// The input becomes <root>/m/config.pbtxt next to two versions of a small valid model (8 inputs,
// 3 outputs, in folders 1 and 3). The repository loads it with the CPU backend; every version that
// comes up ready must then answer a one-row request with the forward of that row (or, with a queue
// timeout configured, may time out). A config the server cannot honour must be refused with a reason
// in the repository's index, never crash it or hang it, and never leave a model half started.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"
#include "server/model/mlp_model.h"
#include "server/repository/model_repository.h"
#include "tests/fuzz/fuzz_files.h"
#include "tests/server/testing/test_models.h"

namespace fp8serve {
namespace {

constexpr int kWidth = 8;
constexpr int kOut = 3;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "model_config_fuzz: %s\n", what.c_str());
  std::abort();
}

const MlpWeights& Weights() {
  static const MlpWeights w = test::RandomMlp({kWidth, 16, kOut}, /*seed=*/9);
  return w;
}

std::string Root() {
  static const std::string root = [] {
    const std::string r = (fuzz::ScratchDir() / "repository").string();
    for (const char* v : {"1", "3"}) {
      const std::string dir = r + "/m/" + v;
      fuzz::WriteScratchFile(std::string("repository/m/") + v + "/.keep", nullptr, 0);
      if (absl::Status st = SaveMlpModel(dir + "/model.safetensors", Weights()); !st.ok()) Fail(st.ToString());
    }
    return r;
  }();
  return root;
}

void CheckAnswers(ModelRepository& repo, const ModelRepository::IndexEntry& e) {
  absl::StatusOr<ModelRepository::Served> s = repo.Get(e.name, std::stoll(e.version));
  if (!s.ok()) Fail("a READY version cannot be looked up: " + s.status().ToString());
  // A request may wait max_queue_delay for company: a config that says hours means hours.
  if (s->config->dynamic_batching().max_queue_delay_microseconds() > 1'000'000) return;
  std::mt19937 rng(3);
  const std::vector<float> x = test::RandomInputs(kWidth, rng);
  absl::Notification done;
  InferResult got;
  std::vector<float> out;
  auto task = std::make_unique<InferTask>(1, 0, absl::InfiniteFuture(), x.data(), InputType::kFp32,
                                          [&](const InferResult& r) {
                                            got = r;
                                            if (r.status.ok()) out.assign(r.output, r.output + size_t(r.rows) * r.cols);
                                            done.Notify();
                                          });
  if (absl::Status st = s->model->Schedule(task); !st.ok()) {
    // A one-row request at the default priority has nothing to refuse but a full queue.
    Fail("a READY model refused a one-row request: " + st.ToString());
  }
  if (!done.WaitForNotificationWithTimeout(absl::Seconds(30))) Fail("a READY model did not answer in 30 s");
  if (!got.status.ok()) {
    if (got.status.code() == absl::StatusCode::kDeadlineExceeded) return;  // a configured queue timeout
    Fail("a READY model failed a one-row request: " + got.status.ToString());
  }
  if (!test::RowsClose(out, test::FastOutputs(Weights(), x, 1), kOut, test::kVsReference)) {
    Fail("a READY model answered with something else than the forward of the row");
  }
}

}  // namespace
}  // namespace fp8serve

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // the repository logs every load and unload
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fp8serve;
  const std::string root = Root();
  fuzz::WriteScratchFile("repository/m/config.pbtxt", data, size);
  ModelRepository::Options o;
  o.roots = {root};
  o.backend = BackendKind::kCpu;
  absl::StatusOr<std::unique_ptr<ModelRepository>> repo = ModelRepository::Create(o);
  if (!repo.ok()) Fail("the repository refused to start over one model's config: " + repo.status().ToString());
  bool listed = false;
  for (const ModelRepository::IndexEntry& e : (*repo)->Index(/*ready_only=*/false)) {
    if (e.name != "m") Fail("a model that is not in the repository: " + e.name);
    listed = true;
    if (e.state == "READY") {
      CheckAnswers(**repo, e);
    } else if (e.reason.empty()) {
      Fail("a model that is not READY without a reason");
    }
  }
  if (!listed) Fail("the model is missing from the index");
  return 0;
}
