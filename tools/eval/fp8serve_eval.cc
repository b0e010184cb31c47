// fp8serve-eval: test-set accuracy of fp8serve models on an IDX image set (Fashion-MNIST by default).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "kernels/cpu/mlp_fast.h"
#include "kernels/cpu/mlp_reference.h"
#include "server/model/mlp_model.h"
#include "tools/cli/cli.h"
#include "tools/datasets/idx.h"

ABSL_FLAG(std::vector<std::string>, models, {}, "Comma-separated fp8serve model files (safetensors) to evaluate.");
ABSL_FLAG(std::string, images, "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
          "IDX image file (plain or gzip); pixels are scaled by 1/255.");
ABSL_FLAG(std::string, labels, "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz", "IDX label file.");
ABSL_FLAG(std::string, forward, "reference",
          "Which CPU forward computes the logits: reference (the numeric contract, the oracle) or fast (OpenBLAS).");
ABSL_FLAG(int, limit, 0, "Evaluate only the first N images (0: all).");
ABSL_FLAG(bool, markdown, false, "Print the table as Markdown.");

namespace fp8serve {
namespace {

std::string Describe(const MlpWeights& w) {
  const MlpLayer& l = w.layers.front();
  std::string arch = std::to_string(w.input_dim());
  for (const MlpLayer& x : w.layers) arch += "-" + std::to_string(x.out);
  if (!l.quantized) return arch + " FP32";
  return arch + " FP8 " + std::string(Fp8FormatName(l.format)) + " " + std::string(GranularityName(l.granularity));
}

int Run() {
  const std::vector<std::string> models = absl::GetFlag(FLAGS_models);
  if (models.empty()) {
    std::fprintf(stderr, "fp8serve-eval: --models is required (see --help)\n");
    return 2;
  }
  const std::string forward = absl::GetFlag(FLAGS_forward);
  if (forward != "reference" && forward != "fast") {
    std::fprintf(stderr, "fp8serve-eval: --forward must be reference or fast\n");
    return 2;
  }
  int n = 0, px = 0;
  absl::StatusOr<std::vector<float>> x = ReadIdxImagesAsFloat(absl::GetFlag(FLAGS_images), &n, &px, absl::GetFlag(FLAGS_limit));
  absl::StatusOr<std::vector<int>> labels = ReadIdxLabels(absl::GetFlag(FLAGS_labels), absl::GetFlag(FLAGS_limit));
  for (const absl::Status& st : {x.status(), labels.status()}) {
    if (!st.ok()) {
      std::fprintf(stderr, "fp8serve-eval: %s\n", std::string(st.message()).c_str());
      return 1;
    }
  }
  if (static_cast<int>(labels->size()) != n) {
    std::fprintf(stderr, "fp8serve-eval: %d images but %zu labels\n", n, labels->size());
    return 1;
  }

  const bool md = absl::GetFlag(FLAGS_markdown);
  if (md) {
    std::printf("| model | weights | accuracy (%d images) | agrees with first |\n|---|---|---|---|\n", n);
  } else {
    std::printf("%-44s %-36s %9s %9s %8s\n", "file", "model", "accuracy", "agree#1", "seconds");
  }
  std::vector<int> first_pred;
  for (const std::string& path : models) {
    absl::StatusOr<MlpModel> m = LoadMlpModel(path);
    if (!m.ok()) {
      std::fprintf(stderr, "fp8serve-eval: %s\n", std::string(m.status().message()).c_str());
      return 1;
    }
    if (m->weights.input_dim() != px) {
      std::fprintf(stderr, "fp8serve-eval: %s takes %d inputs but the images have %d pixels\n", path.c_str(),
                   m->weights.input_dim(), px);
      return 1;
    }
    const int classes = m->weights.output_dim();
    std::vector<float> logits(static_cast<size_t>(n) * classes);
    const auto t0 = std::chrono::steady_clock::now();
    if (forward == "reference") {
      // In chunks, with a progress line on a terminal: the reference is deliberately simple and
      // takes seconds.
      constexpr int kChunk = 500;
      const bool tty = isatty(fileno(stderr));
      for (int r = 0; r < n; r += kChunk) {
        const int rows = std::min(kChunk, n - r);
        ReferenceForward(m->weights, x->data() + static_cast<size_t>(r) * px, rows,
                         logits.data() + static_cast<size_t>(r) * classes);
        if (tty) std::fprintf(stderr, "  %s: %d/%d\r", path.c_str(), r + rows, n);
      }
      if (tty) std::fprintf(stderr, "%*s\r", static_cast<int>(path.size()) + 24, "");
    } else {
      FastMlp(m->weights).Forward(x->data(), n, logits.data());
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::vector<int> pred(n);
    int correct = 0;
    for (int i = 0; i < n; ++i) {
      const float* row = logits.data() + static_cast<size_t>(i) * classes;
      pred[i] = static_cast<int>(std::max_element(row, row + classes) - row);
      correct += pred[i] == (*labels)[i];
    }
    int agree = 0;
    if (first_pred.empty()) first_pred = pred;
    for (int i = 0; i < n; ++i) agree += pred[i] == first_pred[i];
    const double acc = static_cast<double>(correct) / n;
    const std::string file = path.substr(path.find_last_of('/') + 1);
    if (md) {
      std::printf("| %s | %s | %.4f | %.4f |\n", file.c_str(), Describe(m->weights).c_str(), acc, static_cast<double>(agree) / n);
    } else {
      std::printf("%-44s %-36s %9.4f %9.4f %8.2f\n", file.c_str(), Describe(m->weights).c_str(), acc,
                  static_cast<double>(agree) / n, secs);
    }
  }
  return 0;
}

}  // namespace
}  // namespace fp8serve

int main(int argc, char** argv) {
  fp8serve::ParseCommandLineWithUsage(
      "Reports the test-set accuracy of fp8serve models through a CPU forward.\n\n"
      "  fp8serve-eval --models a.safetensors,b.safetensors [--forward reference|fast]\n\n"
      "Defaults to the Fashion-MNIST test set from Debian's dataset-fashion-mnist package (10,000 images).\n"
      "'agree#1' is the fraction of images on which a model predicts the same class as the first model.",
      argc, argv);
  return fp8serve::Run();
}
