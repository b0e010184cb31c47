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

#include "absl/time/clock.h"
#include "spdlog/spdlog.h"
#include "server/model/mlp_model.h"
#include "server/repository/model_repository.h"
#include "tests/fuzz/fuzz_serving.h"

namespace fp8serve {
namespace {

using fuzz::Fail;

const MlpWeights& Weights() {
  static const MlpWeights w = fuzz::SmallMlp(/*seed=*/9);
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
  const std::vector<float> x = test::RandomInputs(fuzz::kModelIn, rng);
  const fuzz::Answer a = fuzz::Ask(*s->model, 1, 0, absl::InfiniteFuture(), x.data(), InputType::kFp32);
  // A one-row request at the default priority has nothing to refuse but a full queue.
  if (!a.queued.ok()) Fail("a READY model refused a one-row request: " + a.queued.ToString());
  if (!a.status.ok()) {
    if (a.status.code() == absl::StatusCode::kDeadlineExceeded) return;  // a configured queue timeout
    Fail("a READY model failed a one-row request: " + a.status.ToString());
  }
  if (!test::RowsClose(a.out, test::FastOutputs(Weights(), x, 1), fuzz::kModelOut, test::kVsReference)) {
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
