// Quantizer speed on one core: weights 4096x16384 at each granularity (the bar: well under
// a second), and 1x128 activation quantization. Prints elements per second.
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/numerics/quantize.h"

namespace fp8serve {
namespace {

std::vector<float> RandomMatrix(size_t n) {
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

void BM_QuantizeWeights(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0)), cols = static_cast<int>(state.range(1));
  const auto g = static_cast<ScaleGranularity>(state.range(2));
  const std::vector<float> w = RandomMatrix(static_cast<size_t>(rows) * cols);
  for (auto _ : state) {
    QuantizedWeights q = QuantizeWeights(w.data(), rows, cols, Fp8Format::kE4M3, g);
    benchmark::DoNotOptimize(q.data.data());
  }
  state.SetItemsProcessed(state.iterations() * rows * cols);
  state.SetLabel(GranularityName(g));
}
BENCHMARK(BM_QuantizeWeights)
    ->Args({4096, 16384, static_cast<int>(ScaleGranularity::kPerTensor)})
    ->Args({4096, 16384, static_cast<int>(ScaleGranularity::kPerChannel)})
    ->Args({4096, 16384, static_cast<int>(ScaleGranularity::kBlock128)})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);

void BM_QuantizeActivations(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0)), cols = static_cast<int>(state.range(1));
  const std::vector<float> x = RandomMatrix(static_cast<size_t>(rows) * cols);
  std::vector<uint8_t> q(x.size());
  std::vector<float> s(static_cast<size_t>(rows) * CeilDiv(cols, kQuantBlock));
  for (auto _ : state) {
    QuantizeActivations(x.data(), rows, cols, q.data(), s.data());
    benchmark::DoNotOptimize(q.data());
  }
  state.SetItemsProcessed(state.iterations() * rows * cols);
}
BENCHMARK(BM_QuantizeActivations)->Args({1024, 784})->Args({4096, 4096})->Unit(benchmark::kMicrosecond);

void BM_QuantDequantActivations(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0)), cols = static_cast<int>(state.range(1));
  const std::vector<float> x = RandomMatrix(static_cast<size_t>(rows) * cols);
  std::vector<float> y(x.size());
  for (auto _ : state) {
    y = x;
    QuantDequantActivations(y.data(), rows, cols);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * rows * cols);
}
BENCHMARK(BM_QuantDequantActivations)->Args({1024, 784})->Args({4096, 4096})->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace fp8serve

BENCHMARK_MAIN();
