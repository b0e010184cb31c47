#include "client/cli/input_files.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/cli/npy.h"
#include "tools/datasets/idx.h"

namespace fp8serve::client {

namespace {

absl::StatusOr<std::string> ReadHead(const std::string& path, size_t n) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return absl::InvalidArgumentError(absl::StrCat(path, " is a directory"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::string head(n, '\0');
  in.read(head.data(), static_cast<std::streamsize>(n));
  head.resize(static_cast<size_t>(in.gcount()));
  return head;
}

absl::StatusOr<std::string> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Splits a CSV line into fields: commas, semicolons, tabs and spaces all separate.
std::vector<absl::string_view> Fields(absl::string_view line) {
  return absl::StrSplit(line, absl::ByAnyChar(",; \t"), absl::SkipEmpty());
}

}  // namespace

const char* InputFormatName(InputFormat f) {
  switch (f) {
    case InputFormat::kNpy: return "npy";
    case InputFormat::kIdx: return "idx";
    case InputFormat::kCsv: return "csv";
  }
  return "?";
}

absl::StatusOr<InputFormat> DetectInputFormat(const std::string& path) {
  absl::StatusOr<std::string> head = ReadHead(path, 6);
  if (!head.ok()) return head.status();
  if (head->empty()) return absl::InvalidArgumentError(absl::StrCat(path, " is empty"));
  if (head->rfind("\x93NUMPY", 0) == 0) return InputFormat::kNpy;
  // gzip (1f 8b), or an IDX magic: two zero bytes, then the type (0x08 = unsigned byte).
  const auto b = [&](size_t i) { return i < head->size() ? static_cast<uint8_t>((*head)[i]) : 0xff; };
  if ((b(0) == 0x1f && b(1) == 0x8b) || (b(0) == 0 && b(1) == 0 && b(2) == 0x08)) return InputFormat::kIdx;
  return InputFormat::kCsv;
}

absl::StatusOr<InputRows> ParseCsvRows(const std::string& text, const std::string& name, int64_t limit) {
  InputRows out;
  out.format = InputFormat::kCsv;
  int line_no = 0;
  bool header_skipped = false;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    if (limit > 0 && out.rows >= limit) break;
    const std::vector<absl::string_view> fields = Fields(line);
    std::vector<float> row;
    row.reserve(fields.size());
    bool numeric = true;
    for (absl::string_view f : fields) {
      float v;
      if (!absl::SimpleAtof(f, &v)) {
        numeric = false;
        break;
      }
      row.push_back(v);
    }
    if (!numeric) {
      if (out.rows == 0 && !header_skipped) {  // one header line before any data
        header_skipped = true;
        continue;
      }
      return absl::InvalidArgumentError(absl::StrCat(name, ":", line_no, ": not a number in this row"));
    }
    // Separators alone ("," or ";;") are a row without values: it would count as a row while adding
    // nothing, and the rows would no longer match the values read.
    if (row.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ":", line_no, ": a row without values"));
    if (out.rows == 0) {
      out.width = static_cast<int64_t>(row.size());
    } else if (static_cast<int64_t>(row.size()) != out.width) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ":", line_no, ": ", row.size(), " values, earlier rows have ", out.width));
    }
    out.values.insert(out.values.end(), row.begin(), row.end());
    ++out.rows;
  }
  if (out.rows == 0) return absl::InvalidArgumentError(absl::StrCat(name, ": no rows of numbers"));
  return out;
}

absl::StatusOr<InputRows> ReadInputRows(const std::string& path, int64_t limit, float scale) {
  absl::StatusOr<InputFormat> format = DetectInputFormat(path);
  if (!format.ok()) return format.status();
  InputRows out;
  out.format = *format;
  switch (*format) {
    case InputFormat::kIdx: {
      int n = 0, pixels = 0;
      absl::StatusOr<std::vector<float>> images =
          ReadIdxImagesAsFloat(path, &n, &pixels, static_cast<int>(std::max<int64_t>(0, limit)));
      if (!images.ok()) return images.status();
      out.rows = n;
      out.width = pixels;
      out.values = *std::move(images);
      return out;
    }
    case InputFormat::kNpy: {
      absl::StatusOr<NpyArray> a = ReadNpy(path);
      if (!a.ok()) return a.status();
      if (a->shape.size() == 1) {
        out.rows = 1;
        out.width = a->shape[0];
      } else if (a->shape.size() == 2) {
        out.rows = a->shape[0];
        out.width = a->shape[1];
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": a .npy input must be [N, width] or [width], this one has ", a->shape.size(), " dimensions"));
      }
      if (a->values.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": the array has shape (", absl::StrJoin(a->shape, ", "),
                                                       "): no values to send"));
      }
      out.float16 = a->float16;
      out.values = std::move(a->values);
      break;
    }
    case InputFormat::kCsv: {
      absl::StatusOr<std::string> text = ReadAll(path);
      if (!text.ok()) return text.status();
      absl::StatusOr<InputRows> rows = ParseCsvRows(*text, path, limit);
      if (!rows.ok()) return rows.status();
      out = *std::move(rows);
      break;
    }
  }
  if (limit > 0 && out.rows > limit) {
    out.rows = limit;
    out.values.resize(static_cast<size_t>(limit * out.width));
  }
  if (scale != 1.0f) {
    for (float& v : out.values) v *= scale;
    out.float16 = false;  // scaled values need not be FP16 any more
  }
  return out;
}

absl::StatusOr<std::vector<int>> ReadLabels(const std::string& path, int64_t limit) {
  absl::StatusOr<InputFormat> format = DetectInputFormat(path);
  if (!format.ok()) return format.status();
  if (*format == InputFormat::kIdx) return ReadIdxLabels(path, static_cast<int>(std::max<int64_t>(0, limit)));
  if (*format == InputFormat::kNpy)
    return absl::InvalidArgumentError(absl::StrCat(path, ": labels must be IDX or CSV"));
  absl::StatusOr<std::string> text = ReadAll(path);
  if (!text.ok()) return text.status();
  std::vector<int> labels;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    for (absl::string_view f : Fields(line)) {
      int v;
      if (!absl::SimpleAtoi(f, &v) || v < 0) {
        if (labels.empty() && line_no == 1) break;  // a header line
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line_no, ": '", std::string(f), "' is not a class index (0, 1, ...)"));
      }
      labels.push_back(v);
    }
    if (limit > 0 && static_cast<int64_t>(labels.size()) >= limit) break;
  }
  if (limit > 0 && static_cast<int64_t>(labels.size()) > limit) labels.resize(static_cast<size_t>(limit));
  if (labels.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no labels"));
  return labels;
}

}  // namespace fp8serve::client
