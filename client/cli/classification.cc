#include "client/cli/classification.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fp8serve::client {

std::vector<float> Softmax(std::span<const float> logits) {
  std::vector<float> p(logits.size());
  if (logits.empty()) return p;
  const float m = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    p[i] = std::exp(logits[i] - m);  // shifted by the max: no overflow
    sum += p[i];
  }
  for (float& v : p) v = static_cast<float>(v / sum);
  return p;
}

std::vector<std::pair<int, float>> TopK(std::span<const float> scores, int k) {
  std::vector<int> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  k = std::clamp(k, 0, static_cast<int>(idx.size()));
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int a, int b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a < b); });
  std::vector<std::pair<int, float>> out;
  for (int i = 0; i < k; ++i) out.emplace_back(idx[i], scores[idx[i]]);
  return out;
}

absl::StatusOr<std::vector<std::string>> ClassNames(const std::string& spec) {
  if (spec.empty()) return std::vector<std::string>{};
  if (spec == "fashion") {
    return std::vector<std::string>{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  }
  if (spec == "mnist") return std::vector<std::string>{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
  std::vector<std::string> names;
  for (absl::string_view s : absl::StrSplit(spec, ',')) names.emplace_back(absl::StripAsciiWhitespace(s));
  if (names.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("--class-names '", spec, "': expected fashion, mnist or a comma-separated list"));
  }
  return names;
}

std::string ClassLabel(const std::vector<std::string>& names, int index) {
  if (index >= 0 && static_cast<size_t>(index) < names.size()) return names[index];
  return std::to_string(index);
}

void ConfusionMatrix::Add(int label, int predicted) {
  ++total_;
  if (label == predicted) ++correct_;
  if (label >= 0 && label < n_ && predicted >= 0 && predicted < n_)
    ++counts_[static_cast<size_t>(label * n_ + predicted)];
}

std::string ConfusionMatrix::Format(const std::vector<std::string>& names) const {
  // Column headers are class indices (names are too wide); row headers carry the names.
  size_t name_w = 5;
  for (int i = 0; i < n_; ++i) name_w = std::max(name_w, ClassLabel(names, i).size() + 4);
  int cell_w = 5;
  for (long c : counts_) cell_w = std::max(cell_w, static_cast<int>(std::to_string(c).size()) + 1);
  std::string out = absl::StrFormat("%-*s", static_cast<int>(name_w), "true\\pred");
  for (int j = 0; j < n_; ++j) out += absl::StrFormat("%*d", cell_w, j);
  out += "  recall\n";
  for (int i = 0; i < n_; ++i) {
    const std::string head = names.empty() ? std::to_string(i) : absl::StrCat(i, " ", ClassLabel(names, i));
    out += absl::StrFormat("%-*s", static_cast<int>(name_w), head);
    long row = 0;
    for (int j = 0; j < n_; ++j) {
      out += absl::StrFormat("%*d", cell_w, at(i, j));
      row += at(i, j);
    }
    out += row > 0 ? absl::StrFormat("  %6.4f\n", static_cast<double>(at(i, i)) / row) : "       -\n";
  }
  return out;
}

}  // namespace fp8serve::client
