// Fuzz target: a model file, as the server, fp8serve-quantize and fp8serve-eval read it.
//
// The input is written to disk as a .safetensors file and opened three ways: the safetensors
// reader (every tensor read back as floats), the served FP8 format (LoadMlpModel) and the float
// checkpoint the quantizer takes (LoadFloatCheckpoint). Whatever a loader accepts must then work:
//  - a served model has buffers that match its shapes, and runs the reference forward and the fast
//    CPU forward the CPU backend uses (scales up to FLT_MAX may overflow either one, so their values
//    are not compared here: tests/kernels/cpu does that on sane models);
//  - a float checkpoint quantizes at each granularity, saves, and loads back as the same model.
// Anything else (a crash, a sanitizer report, a broken promise) is a bug; a clean refusal is not.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/mlp_fast.h"
#include "kernels/cpu/mlp_reference.h"
#include "server/model/mlp_model.h"
#include "server/model/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

namespace fp8serve {
namespace {

// Larger models load fine but make each run slow; the fuzzer learns nothing more from them.
constexpr int64_t kMaxForwardMacs = 1 << 20;

using fuzz::Fail;

int64_t Macs(const MlpWeights& w) {
  int64_t macs = 0;
  for (const MlpLayer& l : w.layers) macs += int64_t{l.in} * l.out;
  return macs;
}

void CheckServedModel(const MlpModel& m, const std::string& path) {
  const MlpWeights& w = m.weights;
  if (w.layers.empty()) Fail("a model without layers loaded", path);
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const MlpLayer& l = w.layers[i];
    if (l.in <= 0 || l.out <= 0) Fail("a layer without width loaded", path);
    if (i > 0 && l.in != w.layers[i - 1].out) Fail("layers that do not chain loaded", path);
    const size_t n = static_cast<size_t>(l.in) * static_cast<size_t>(l.out);
    if (l.quantized ? (l.fp8.size() != n || l.scales.size() != NumWeightScales(l.granularity, l.out, l.in))
                    : l.f32.size() != n) {
      Fail("a layer whose buffers do not match its shape loaded", path);
    }
    if (!l.bias.empty() && l.bias.size() != static_cast<size_t>(l.out)) Fail("a bias of the wrong length loaded", path);
  }
  if (Macs(w) > kMaxForwardMacs) return;

  constexpr int kRows = 3;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(kRows) * w.input_dim());
  for (float& v : x) v = normal(rng);
  const size_t out_n = static_cast<size_t>(kRows) * w.output_dim();
  std::vector<float> ref(out_n, 0.0f), fast(out_n, 0.0f);
  ReferenceForward(w, x.data(), kRows, ref.data());
  FastMlp(w).Forward(x.data(), kRows, fast.data());
}

void CheckFloatCheckpoint(const MlpModel& m, const std::string& path) {
  if (m.weights.layers.empty() || Macs(m.weights) > kMaxForwardMacs) return;
  for (ScaleGranularity g : {ScaleGranularity::kPerTensor, ScaleGranularity::kPerChannel, ScaleGranularity::kBlock128}) {
    MlpWeights q;
    q.activation = m.weights.activation;
    for (const MlpLayer& l : m.weights.layers) q.layers.push_back(QuantizeLayer(l, Fp8Format::kE4M3, g));
    const std::string out = fuzz::ScratchDir() / "quantized.safetensors";
    if (absl::Status st = SaveMlpModel(out, q); !st.ok()) Fail("a quantized checkpoint did not save", st.ToString());
    absl::StatusOr<MlpModel> back = LoadMlpModel(out);
    if (!back.ok()) Fail("a quantized checkpoint did not load back", back.status().ToString());
    for (size_t i = 0; i < q.layers.size(); ++i) {
      const MlpLayer &a = q.layers[i], &b = back->weights.layers[i];
      if (a.fp8 != b.fp8 || a.bias != b.bias || a.scales.size() != b.scales.size()) {
        Fail("a quantized checkpoint came back changed", path);
      }
    }
    CheckServedModel(*back, out);
  }
}

}  // namespace
}  // namespace fp8serve

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fp8serve;
  const std::string path = fuzz::WriteScratchFile("model.safetensors", data, size);

  if (absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path); f.ok()) {
    for (const TensorInfo& t : (*f)->tensors()) {
      if ((*f)->Find(t.name) == nullptr) Fail("a listed tensor cannot be found", t.name);
      if ((*f)->Data(t).size() != t.end - t.begin) Fail("a tensor's data has the wrong size", t.name);
      if (absl::StatusOr<std::vector<float>> v = (*f)->ReadAsFloat(t);
          v.ok() && v->size() != static_cast<size_t>(t.numel())) {
        Fail("a tensor read back with the wrong element count", t.name);
      }
    }
  }
  if (absl::StatusOr<MlpModel> m = LoadMlpModel(path); m.ok()) CheckServedModel(*m, path);
  if (absl::StatusOr<MlpModel> m = LoadFloatCheckpoint(path); m.ok()) CheckFloatCheckpoint(*m, path);
  return 0;
}
