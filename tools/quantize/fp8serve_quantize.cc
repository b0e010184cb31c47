// fp8serve-quantize: turns an FP32/BF16/F16 MLP checkpoint (safetensors) into an fp8serve FP8 model,
// and reports how much each layer lost.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/mlp_fast.h"
#include "server/model/mlp_model.h"
#include "tools/cli/cli.h"
#include "tools/datasets/idx.h"

ABSL_FLAG(std::string, input, "",
          "Float checkpoint to quantize (safetensors). Tensors named layers.{i}.weight/bias, or an nn.Sequential "
          "state dict ({j}.weight/bias, optionally under one prefix). Dtypes F32, BF16 or F16.");
ABSL_FLAG(std::string, output, "", "Where to write the FP8 model (safetensors, fp8serve.mlp.v1). Written atomically.");
ABSL_FLAG(std::string, format, "e4m3", "FP8 format of the weights: e4m3 (max 448, more precision) or e5m2 (max 57344).");
ABSL_FLAG(std::string, granularity, "channel",
          "Weight scale granularity: tensor (one scale), channel (one per output row) or block (one per 128x128 block).");
ABSL_FLAG(std::string, calibration, "",
          "IDX image file (plain or .gz, e.g. Fashion-MNIST) whose first --calibration_rows images, scaled by 1/255, "
          "measure each layer's output error. Without it, rows are drawn from N(0, 1) with --seed.");
ABSL_FLAG(int, calibration_rows, 256, "Rows in the calibration batch.");
ABSL_FLAG(int, seed, 1, "Seed for random calibration rows.");
ABSL_FLAG(bool, quiet, false, "Print only errors.");

namespace fp8serve {
namespace {

// One layer on the fast CPU forward (OpenBLAS; same numerics as the reference up to FP32
// rounding), so that measuring a 4096x16384 layer on the calibration batch takes well under a
// second instead of the reference's minute.
void RunLayer(const MlpLayer& layer, const float* x, int rows, const Activation* act, float* y) {
  MlpWeights one;
  one.layers.push_back(layer);
  FastMlp(one).Forward(x, rows, y);
  if (act != nullptr && *act == Activation::kRelu) {
    for (size_t i = 0; i < static_cast<size_t>(rows) * layer.out; ++i) y[i] = y[i] < 0.0f ? 0.0f : y[i];
  }
}

double RelativeError(const std::vector<float>& approx, const std::vector<float>& exact) {
  double num = 0, den = 0;
  for (size_t i = 0; i < exact.size(); ++i) {
    const double d = static_cast<double>(approx[i]) - exact[i];
    num += d * d;
    den += static_cast<double>(exact[i]) * exact[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

int Run() {
  const std::string input = absl::GetFlag(FLAGS_input), output = absl::GetFlag(FLAGS_output);
  if (input.empty() || output.empty()) {
    std::fprintf(stderr, "fp8serve-quantize: --input and --output are required (see --help)\n");
    return 2;
  }
  const std::optional<Fp8Format> format = ParseFp8Format(absl::GetFlag(FLAGS_format));
  if (!format) {
    std::fprintf(stderr, "fp8serve-quantize: --format must be e4m3 or e5m2, not '%s'\n", absl::GetFlag(FLAGS_format).c_str());
    return 2;
  }
  const std::optional<ScaleGranularity> gran = ParseGranularity(absl::GetFlag(FLAGS_granularity));
  if (!gran) {
    std::fprintf(stderr, "fp8serve-quantize: --granularity must be tensor, channel or block, not '%s'\n",
                 absl::GetFlag(FLAGS_granularity).c_str());
    return 2;
  }
  const int cal_rows = absl::GetFlag(FLAGS_calibration_rows);
  if (cal_rows < 1) {
    std::fprintf(stderr, "fp8serve-quantize: --calibration-rows must be at least 1\n");
    return 2;
  }
  const bool quiet = absl::GetFlag(FLAGS_quiet);

  absl::StatusOr<MlpModel> src = LoadFloatCheckpoint(input);
  if (!src.ok()) {
    std::fprintf(stderr, "fp8serve-quantize: %s\n", std::string(src.status().message()).c_str());
    return 1;
  }
  const MlpWeights& f32 = src->weights;

  // Calibration batch.
  std::vector<float> x;
  int rows = cal_rows;
  std::string cal_desc;
  if (const std::string cal = absl::GetFlag(FLAGS_calibration); !cal.empty()) {
    int n = 0, px = 0;
    absl::StatusOr<std::vector<float>> images = ReadIdxImagesAsFloat(cal, &n, &px, cal_rows);
    if (!images.ok()) {
      std::fprintf(stderr, "fp8serve-quantize: %s\n", std::string(images.status().message()).c_str());
      return 1;
    }
    if (px != f32.input_dim()) {
      std::fprintf(stderr, "fp8serve-quantize: %s: images have %d pixels but the model takes %d inputs\n", cal.c_str(), px,
                   f32.input_dim());
      return 1;
    }
    x = *std::move(images);
    rows = n;
    cal_desc = absl::StrCat(rows, " rows of ", cal);
  } else {
    std::mt19937 rng(absl::GetFlag(FLAGS_seed));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    x.resize(static_cast<size_t>(rows) * f32.input_dim());
    for (float& v : x) v = normal(rng);
    cal_desc = absl::StrCat(rows, " random N(0,1) rows (pass --calibration for real data)");
  }

  if (!quiet) {
    std::printf("quantizing %s: %zu layers to %s weights, %s scales; calibration: %s\n", input.c_str(), f32.layers.size(),
                std::string(Fp8FormatName(*format)).c_str(), std::string(GranularityName(*gran)).c_str(), cal_desc.c_str());
    std::printf("%-6s %-13s %14s %18s %18s\n", "layer", "shape", "weight relerr", "layer-out relerr", "model-out relerr");
  }

  MlpWeights q;
  q.activation = f32.activation;
  std::vector<float> x_f32 = x, x_q = x;  // activations along the FP32 and the FP8 chains
  for (size_t i = 0; i < f32.layers.size(); ++i) {
    const MlpLayer& l = f32.layers[i];
    const auto t0 = std::chrono::steady_clock::now();
    if (!quiet && isatty(fileno(stderr)) && static_cast<size_t>(l.out) * l.in >= (size_t{1} << 24)) {
      std::fprintf(stderr, "  layer %zu/%zu [%d x %d]: quantizing...\r", i + 1, f32.layers.size(), l.out, l.in);
    }
    q.layers.push_back(QuantizeLayer(l, *format, *gran));
    const MlpLayer& ql = q.layers.back();
    const double werr = RelativeError(DequantizedWeights(ql), l.f32);

    // Output error of this layer alone (same FP32 input) and of the FP8 chain so far.
    const bool last = i + 1 == f32.layers.size();
    const Activation* act = last ? nullptr : &f32.activation;
    std::vector<float> y_f32(static_cast<size_t>(rows) * l.out), y_local(y_f32.size()), y_chain(y_f32.size());
    RunLayer(l, x_f32.data(), rows, act, y_f32.data());
    RunLayer(ql, x_f32.data(), rows, act, y_local.data());
    RunLayer(ql, x_q.data(), rows, act, y_chain.data());
    const double local = RelativeError(y_local, y_f32), chain = RelativeError(y_chain, y_f32);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!quiet) {
      std::printf("%-6zu %-13s %14.5f %18.5f %18.5f   (%.2fs)\n", i, absl::StrCat(l.out, "x", l.in).c_str(), werr, local,
                  chain, secs);
    }
    x_f32 = std::move(y_f32);
    x_q = std::move(y_chain);
  }

  std::map<std::string, std::string> meta = src->metadata;
  meta["quantized_from"] = input.substr(input.find_last_of('/') + 1);
  meta["weight_format"] = std::string(Fp8FormatName(*format));
  meta["weight_granularity"] = std::string(GranularityName(*gran));
  meta["activation_quantization"] = "e4m3 1x128 dynamic";
  meta.erase("test_accuracy");  // belongs to the float model, not to this one
  if (absl::Status st = SaveMlpModel(output, q, meta); !st.ok()) {
    std::fprintf(stderr, "fp8serve-quantize: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  if (!quiet) std::printf("wrote %s\n", output.c_str());
  return 0;
}

}  // namespace
}  // namespace fp8serve

int main(int argc, char** argv) {
  fp8serve::ParseCommandLineWithUsage(
      "Quantizes an FP32/BF16/F16 MLP checkpoint to an fp8serve FP8 model.\n\n"
      "  fp8serve-quantize --input model.f32.safetensors --output model.safetensors \\\n"
      "      [--format e4m3|e5m2] [--granularity tensor|channel|block] [--calibration images.idx.gz]\n\n"
      "Per layer it prints the relative (Frobenius) error of the quantized weights, of the layer's output\n"
      "on the calibration batch given the FP32 input, and of the whole FP8 chain's output so far, all\n"
      "computed with the fast CPU forward (activations quantized per 1x128 group to E4M3).",
      argc, argv);
  return fp8serve::Run();
}
