// infer: rows from a file through the model; top-k per row, accuracy and confusion matrix.
#include <chrono>
#include <cstdio>
#include <deque>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli/classification.h"
#include "client/cli/common.h"
#include "client/cli/flags.h"
#include "client/cli/input_files.h"
#include "client/tensor.h"

namespace fp8serve::client::cli {

namespace {

constexpr int kDefaultInferBatch = 256;
constexpr size_t kRequestsInFlight = 4;  // a small pipeline: the next batch travels while one computes

}  // namespace

int RunInfer(const std::vector<std::string>& args) {
  const char* kCmd = "infer";
  std::string input = absl::GetFlag(FLAGS_input);
  if (!args.empty()) {
    if (!input.empty() || args.size() > 1) return UsageError(kCmd, "give one input file, as --input FILE or FILE");
    input = args[0];
  }
  if (input.empty()) return UsageError(kCmd, "no input: --input FILE (.npy, IDX or CSV)");
  const int top_k = absl::GetFlag(FLAGS_top_k);
  if (top_k < 1) return UsageError(kCmd, "--top-k must be at least 1");
  absl::StatusOr<std::vector<std::string>> names = ClassNames(absl::GetFlag(FLAGS_class_names));
  if (!names.ok()) return UsageError(kCmd, std::string(names.status().message()));

  // Files first: a bad path fails at once, before any connection is attempted.
  const int64_t limit = absl::GetFlag(FLAGS_limit);
  absl::StatusOr<InputRows> rows = ReadInputRows(input, limit, static_cast<float>(absl::GetFlag(FLAGS_scale)));
  if (!rows.ok()) return UsageError(kCmd, std::string(rows.status().message()));
  std::vector<int> labels;
  if (const std::string path = absl::GetFlag(FLAGS_labels); !path.empty()) {
    absl::StatusOr<std::vector<int>> l = ReadLabels(path, limit);
    if (!l.ok()) return UsageError(kCmd, std::string(l.status().message()));
    if (static_cast<int64_t>(l->size()) < rows->rows) {
      return UsageError(kCmd, absl::StrCat(path, " has ", l->size(), " labels for ", rows->rows, " rows"));
    }
    labels = *std::move(l);
    labels.resize(static_cast<size_t>(rows->rows));
  }
  WireType wire = rows->float16 ? WireType::kFp16 : WireType::kFp32;
  if (const std::string w = absl::GetFlag(FLAGS_wire); !w.empty()) {
    absl::StatusOr<WireType> parsed = ParseWireType(w);
    if (!parsed.ok()) return UsageError(kCmd, std::string(parsed.status().message()));
    wire = *parsed;
  }

  absl::StatusOr<std::unique_ptr<InferenceClient>> client = ConnectClient();
  if (!client.ok()) return Fail(kCmd, client.status());
  absl::StatusOr<ModelInfo> model = ResolveModel(**client);
  if (!model.ok()) return Fail(kCmd, model.status());
  if (rows->width != model->width) {
    return UsageError(kCmd, absl::StrCat(input, " has rows of ", rows->width, " values; model ", model->name,
                                         "'s input '", model->input_name, "' takes ", model->width));
  }
  absl::StatusOr<int> batch = RowsPerRequest(*model, kDefaultInferBatch);
  if (!batch.ok()) return UsageError(kCmd, std::string(batch.status().message()));

  // Requests go out kRequestsInFlight at a time; results are consumed in order.
  const int64_t n = rows->rows;
  std::vector<float> logits;
  int64_t classes = 0, requests = 0;
  std::deque<std::pair<int64_t, std::future<InferResult>>> in_flight;
  const auto start = std::chrono::steady_clock::now();
  int64_t next = 0;
  while (next < n || !in_flight.empty()) {
    while (next < n && in_flight.size() < kRequestsInFlight) {
      const int64_t count = std::min<int64_t>(*batch, n - next);
      inference::ModelInferRequest req;
      req.set_model_name(model->name);
      req.set_model_version(model->version);
      std::vector<int64_t> shape = {count, rows->width};
      if (model->max_batch_size <= 0) shape.assign(model->input_shape.begin(), model->input_shape.end());
      const std::span<const float> values(rows->values.data() + next * rows->width,
                                          static_cast<size_t>(count * rows->width));
      if (absl::Status st = AddInput(req, model->input_name, values, shape, wire); !st.ok()) return Fail(kCmd, st);
      in_flight.emplace_back(count, (*client)->InferFuture(std::move(req)));
      next += count;
      ++requests;
    }
    auto [count, future] = std::move(in_flight.front());
    in_flight.pop_front();
    InferResult r = future.get();
    if (!r.ok()) return Fail(kCmd, r.status());
    absl::StatusOr<FloatTensor> out = OutputTensor(*r, model->output_name);
    if (!out.ok()) return Fail(kCmd, out.status());
    if (out->rows() != count) {
      return Fail(kCmd, absl::DataLossError(absl::StrCat("sent ", count, " rows, got ", out->rows(), " back")));
    }
    classes = out->cols();
    logits.insert(logits.end(), out->values().begin(), out->values().end());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const int show = absl::GetFlag(FLAGS_show);
  const int64_t shown = show < 0 ? n : std::min<int64_t>(show, n);
  ConfusionMatrix confusion(static_cast<int>(classes));
  for (int64_t r = 0; r < n; ++r) {
    const std::span<const float> row(logits.data() + r * classes, static_cast<size_t>(classes));
    const std::vector<float> p = Softmax(row);
    const std::vector<std::pair<int, float>> top = TopK(p, top_k);
    if (!labels.empty()) confusion.Add(labels[static_cast<size_t>(r)], top.front().first);
    if (r >= shown) continue;
    std::vector<std::string> parts;
    for (const auto& [cls, score] : top) parts.push_back(absl::StrFormat("%s %.4f", ClassLabel(*names, cls), score));
    std::string line = absl::StrFormat("#%-5d %s", r, absl::StrJoin(parts, " | "));
    if (!labels.empty()) {
      const int want = labels[static_cast<size_t>(r)];
      absl::StrAppend(&line, "   label: ", ClassLabel(*names, want), top.front().first == want ? "" : "  (wrong)");
    }
    std::printf("%s\n", line.c_str());
  }
  if (shown < n) std::printf("... %lld more rows (--show -1 prints every row)\n", static_cast<long long>(n - shown));
  std::printf("%lld rows of %s (%s) through %s:%s in %lld request%s of up to %d rows (%s on the wire), %.2f s\n",
              static_cast<long long>(n), input.c_str(), InputFormatName(rows->format), model->name.c_str(),
              model->version.empty() ? "latest" : model->version.c_str(), static_cast<long long>(requests),
              requests == 1 ? "" : "s", *batch, WireTypeName(wire), seconds);
  if (!labels.empty()) {
    std::printf("accuracy %.4f (%ld of %ld)\n\n%s", confusion.accuracy(), confusion.correct(), confusion.total(),
                confusion.Format(*names).c_str());
  }
  return kExitOk;
}

}  // namespace fp8serve::client::cli
