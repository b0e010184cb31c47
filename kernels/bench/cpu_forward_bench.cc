// The fast CPU forward (FP8 numerics emulated: 1x128 activation quantize-dequantize before each
// FP8 layer, then OpenBLAS SGEMM) against a plain FP32 OpenBLAS forward of the same dequantized
// model, in the same run, on the bundled model at batch 1, 64 and 1024. The figure that matters
// is the ratio of rows per second, printed as a counter on the FP8 rows ("vs_fp32").
//
//   cpu_forward_bench [--model models/fashion_mlp/1/model.safetensors] [benchmark flags]
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/cpu/mlp_fast.h"
#include "server/model/mlp_model.h"

namespace fp8serve {
namespace {

std::unique_ptr<MlpWeights> g_model;

void BM_Forward(benchmark::State& state, bool emulate_fp8) {
  const int batch = static_cast<int>(state.range(0));
  const FastMlp mlp(*g_model, FastMlp::Options{.emulate_activation_quant = emulate_fp8});
  std::mt19937 rng(batch);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(batch) * mlp.input_dim());
  for (float& v : x) v = pixel(rng);
  std::vector<float> y(static_cast<size_t>(batch) * mlp.output_dim());
  FastMlp::Scratch scratch;
  for (auto _ : state) {
    mlp.Forward(x.data(), batch, y.data(), scratch);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["rows_per_s"] = benchmark::Counter(static_cast<double>(state.iterations()) * batch, benchmark::Counter::kIsRate);
}

void BM_Fp32Forward(benchmark::State& state) { BM_Forward(state, false); }
void BM_Fp8Forward(benchmark::State& state) { BM_Forward(state, true); }

// Interleaved per batch size so that both sides of each ratio run back to back.
void Register() {
  for (int batch : {1, 64, 1024}) {
    benchmark::RegisterBenchmark(("fp32_openblas/batch:" + std::to_string(batch)).c_str(), BM_Fp32Forward)
        ->Arg(batch)->Unit(benchmark::kMicrosecond)->MinTime(1.0);
    benchmark::RegisterBenchmark(("fp8_emulated/batch:" + std::to_string(batch)).c_str(), BM_Fp8Forward)
        ->Arg(batch)->Unit(benchmark::kMicrosecond)->MinTime(1.0);
  }
}

// Prints the table of ratios after the run, from the benchmarks' own rates.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      // With --benchmark_repetitions, the median is the figure; single runs count otherwise.
      if (r.run_type == Run::RT_Aggregate && r.aggregate_name != "median") continue;
      const std::string name = r.benchmark_name();
      const auto it = r.counters.find("rows_per_s");
      if (it == r.counters.end()) continue;
      const int batch = std::stoi(name.substr(name.find("batch:") + 6));
      (name.rfind("fp32", 0) == 0 ? fp32_ : fp8_)[batch] = it->second.value;
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf("\n| batch | FP32 OpenBLAS rows/s | FP8-emulated rows/s | ratio |\n|---|---|---|---|\n");
    for (const auto& [batch, fp8] : fp8_) {
      const double fp32 = fp32_[batch];
      std::printf("| %d | %.0f | %.0f | %.2f |\n", batch, fp32, fp8, fp32 > 0 ? fp8 / fp32 : 0.0);
    }
  }

 private:
  std::map<int, double> fp32_, fp8_;
};

}  // namespace
}  // namespace fp8serve

int main(int argc, char** argv) {
  std::string path = "models/fashion_mlp/1/model.safetensors";
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--model=", 8) == 0) {
      path = argv[i] + 8;
    } else {
      rest.push_back(argv[i]);
    }
  }
  absl::StatusOr<fp8serve::MlpModel> m = fp8serve::LoadMlpModel(path);
  if (!m.ok()) {
    std::fprintf(stderr, "cpu_forward_bench: %s (run from the repository root or pass --model=PATH)\n",
                 std::string(m.status().message()).c_str());
    return 1;
  }
  fp8serve::g_model = std::make_unique<fp8serve::MlpWeights>(std::move(m->weights));
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  fp8serve::Register();
  fp8serve::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
