// What `fp8serve-client infer` does with logits: softmax, top-k, and (given labels) accuracy and a
// confusion matrix.
#pragma once

#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace fp8serve::client {

// Numerically stable softmax of one row of logits.
std::vector<float> Softmax(std::span<const float> logits);

// The k largest scores as (class, score), highest first; ties go to the lower class index.
std::vector<std::pair<int, float>> TopK(std::span<const float> scores, int k);

// --class-names: "" (indices), "fashion", "mnist", or a comma-separated list.
absl::StatusOr<std::vector<std::string>> ClassNames(const std::string& spec);
// "Coat" for class 4 with Fashion-MNIST names; "4" without names.
std::string ClassLabel(const std::vector<std::string>& names, int index);

class ConfusionMatrix {
 public:
  explicit ConfusionMatrix(int classes) : n_(classes), counts_(static_cast<size_t>(classes * classes), 0) {}
  // A label or prediction outside [0, classes) is counted in total() but not in the matrix.
  void Add(int label, int predicted);
  int classes() const { return n_; }
  long total() const { return total_; }
  long correct() const { return correct_; }
  double accuracy() const { return total_ > 0 ? static_cast<double>(correct_) / total_ : 0.0; }
  long at(int label, int predicted) const { return counts_[static_cast<size_t>(label * n_ + predicted)]; }
  // Rows are true classes, columns predictions, with per-class recall at the end of each row.
  std::string Format(const std::vector<std::string>& names) const;

 private:
  int n_;
  std::vector<long> counts_;
  long total_ = 0;
  long correct_ = 0;
};

}  // namespace fp8serve::client
