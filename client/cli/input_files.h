// The input files fp8serve-client reads, recognised by their first bytes rather than their names:
// NumPy .npy (float32/float16, [N, width] or [width]), IDX images as MNIST and Fashion-MNIST ship
// them (gzip or not; pixels / 255, each image one row), and CSV (one row per line, numbers separated
// by commas, semicolons or blanks; a first line that is not numbers is a header and is skipped).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fp8serve::client {

enum class InputFormat { kNpy, kIdx, kCsv };
const char* InputFormatName(InputFormat f);  // "npy", "idx", "csv"

// What a file's first bytes say it is (.npy magic; gzip or IDX ubyte magic; else CSV).
absl::StatusOr<InputFormat> DetectInputFormat(const std::string& path);

struct InputRows {
  InputFormat format = InputFormat::kCsv;
  int64_t rows = 0;
  int64_t width = 0;
  std::vector<float> values;  // [rows, width], row-major
  bool float16 = false;       // a float16 .npy: FP16 on the wire loses nothing
};

// `limit` > 0 keeps the first rows only. `scale` multiplies .npy and CSV values (IDX pixels are
// always / 255, the models' convention).
absl::StatusOr<InputRows> ReadInputRows(const std::string& path, int64_t limit = 0, float scale = 1.0f);

// Class labels: an IDX label file (gzip or not), or text/CSV with integers (one per line, or
// separated by commas/blanks). `limit` > 0 keeps the first ones only.
absl::StatusOr<std::vector<int>> ReadLabels(const std::string& path, int64_t limit = 0);

// CSV text as rows of numbers (exposed for tests). `name` labels errors.
absl::StatusOr<InputRows> ParseCsvRows(const std::string& text, const std::string& name, int64_t limit = 0);

}  // namespace fp8serve::client
