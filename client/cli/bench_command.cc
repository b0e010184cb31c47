// bench: concurrency and rate sweeps with the load generator; table, JSON, CSV and SVG out.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/bench_report.h"
#include "client/cli/common.h"
#include "client/cli/flags.h"
#include "client/cli/input_files.h"
#include "client/cli/load_generator.h"
#include "client/tensor.h"

namespace fp8serve::client::cli {

namespace {

constexpr const char* kCmd = "bench";

absl::StatusOr<std::vector<LoadLevel>> Levels() {
  std::vector<LoadLevel> levels;
  auto add = [&](const std::vector<std::string>& values, bool open_loop) -> absl::Status {
    for (const std::string& v : values) {
      double x;
      if (!absl::SimpleAtod(v, &x) || !(x > 0) || (!open_loop && (x != static_cast<int64_t>(x) || x > 100000))) {
        return absl::InvalidArgumentError(
            absl::StrCat(open_loop ? "--rate" : "--concurrency", " value '", v,
                         open_loop ? "' is not a positive number" : "' is not a whole number from 1 to 100000"));
      }
      levels.push_back(LoadLevel{open_loop, x});
    }
    return absl::OkStatus();
  };
  if (absl::Status st = add(absl::GetFlag(FLAGS_concurrency), false); !st.ok()) return st;
  if (absl::Status st = add(absl::GetFlag(FLAGS_rate), true); !st.ok()) return st;
  if (levels.empty()) levels.push_back(LoadLevel{false, 1});
  return levels;
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// Rewrites one terminal line: what the step is doing, its rate over the last interval.
class ProgressLine {
 public:
  explicit ProgressLine(bool enabled) : enabled_(enabled) {}
  void Update(const LoadLevel& level, const LiveStatus& s) {
    if (!enabled_) return;
    if (s.phase != phase_) {  // a new phase counts from zero
      phase_ = s.phase;
      last_elapsed_ = 0;
      last_completed_ = 0;
    }
    const double dt = s.elapsed_s - last_elapsed_;
    const double rate = dt > 0 && s.completed >= last_completed_ ? (s.completed - last_completed_) / dt : 0;
    last_elapsed_ = s.elapsed_s;
    last_completed_ = s.completed;
    const std::string planned = s.planned_s > 0 ? absl::StrFormat("/%.1f", s.planned_s) : "";
    std::fprintf(stderr, "\r\033[K%-8s %-7s %5.1f%s s  %9.0f req/s  ok %lld  errors %lld  in flight %lld",
                 LoadLevelName(level).c_str(), s.phase, s.elapsed_s, planned.c_str(), rate,
                 static_cast<long long>(s.ok), static_cast<long long>(s.errors), static_cast<long long>(s.in_flight));
    std::fflush(stderr);
  }
  void Clear() {
    if (enabled_) std::fprintf(stderr, "\r\033[K");
    phase_ = nullptr;
  }

 private:
  bool enabled_;
  const char* phase_ = nullptr;
  double last_elapsed_ = 0;
  int64_t last_completed_ = 0;
};

}  // namespace

int RunBench(const std::vector<std::string>& args) {
  if (!args.empty()) return UsageError(kCmd, absl::StrCat("unexpected argument '", args[0], "'"));
  absl::StatusOr<std::vector<LoadLevel>> levels = Levels();
  if (!levels.ok()) return UsageError(kCmd, std::string(levels.status().message()));
  absl::StatusOr<TransportMode> mode = ParseTransportMode(absl::GetFlag(FLAGS_mode));
  if (!mode.ok()) return UsageError(kCmd, std::string(mode.status().message()));
  for (const LoadLevel& l : *levels) {
    if (l.open_loop && *mode == TransportMode::kSync) {
      return UsageError(kCmd, "--rate (open loop) needs --mode async or stream");
    }
  }
  LoadOptions o;
  o.mode = *mode;
  const double warmup = absl::GetFlag(FLAGS_warmup_secs), duration = absl::GetFlag(FLAGS_duration_secs);
  if (warmup < 0 || !(duration > 0)) return UsageError(kCmd, "--warmup-secs must be >= 0 and --duration-secs > 0");
  o.warmup = absl::Seconds(warmup);
  o.duration = absl::Seconds(duration);
  o.requests = absl::GetFlag(FLAGS_requests);
  if (o.requests < 0) return UsageError(kCmd, "--requests must be >= 0");
  o.request_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  o.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  if (o.max_in_flight < 1) return UsageError(kCmd, "--max-in-flight must be positive");
  o.seed = static_cast<uint64_t>(absl::GetFlag(FLAGS_seed));
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  o.threads = absl::GetFlag(FLAGS_threads) > 0 ? absl::GetFlag(FLAGS_threads) : std::clamp(hw / 4, 1, 8);
  if (o.threads > 256) return UsageError(kCmd, "--threads must be at most 256");
  WireType wire = WireType::kFp32;
  if (const std::string w = absl::GetFlag(FLAGS_wire); !w.empty()) {
    absl::StatusOr<WireType> parsed = ParseWireType(w);
    if (!parsed.ok()) return UsageError(kCmd, std::string(parsed.status().message()));
    wire = *parsed;
  }
  std::optional<InputRows> file_rows;
  if (const std::string input = absl::GetFlag(FLAGS_input); !input.empty()) {
    absl::StatusOr<InputRows> r =
        ReadInputRows(input, absl::GetFlag(FLAGS_limit), static_cast<float>(absl::GetFlag(FLAGS_scale)));
    if (!r.ok()) return UsageError(kCmd, std::string(r.status().message()));
    file_rows = *std::move(r);
  }

  absl::StatusOr<std::unique_ptr<InferenceClient>> control = ConnectClient();
  if (!control.ok()) return Fail(kCmd, control.status());
  absl::StatusOr<ModelInfo> model = ResolveModel(**control);
  if (!model.ok()) return Fail(kCmd, model.status());
  absl::StatusOr<int> batch = RowsPerRequest(*model, 1);
  if (!batch.ok()) return UsageError(kCmd, std::string(batch.status().message()));

  // The one request every call sends: rows from --input (repeated if it has fewer), else random.
  std::vector<float> values(static_cast<size_t>(*batch * model->width));
  if (file_rows.has_value()) {
    if (file_rows->width != model->width) {
      return UsageError(kCmd, absl::StrCat(absl::GetFlag(FLAGS_input), " has rows of ", file_rows->width,
                                           " values; model ", model->name, " takes ", model->width));
    }
    for (size_t i = 0; i < values.size(); ++i) values[i] = file_rows->values[i % file_rows->values.size()];
  } else {
    std::mt19937 rng(static_cast<uint32_t>(o.seed));
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (float& v : values) v = u(rng);
  }
  inference::ModelInferRequest req;
  req.set_model_name(model->name);
  req.set_model_version(model->version);
  std::vector<int64_t> shape = {*batch, model->width};
  if (model->max_batch_size <= 0) shape.assign(model->input_shape.begin(), model->input_shape.end());
  if (absl::Status st = AddInput(req, model->input_name, values, shape, wire); !st.ok()) return Fail(kCmd, st);

  // One client per connection; each connects before the first step so that no step pays for it.
  std::vector<std::unique_ptr<InferenceClient>> owned;
  std::vector<InferenceClient*> clients;
  for (int i = 0; i < o.threads; ++i) {
    absl::StatusOr<std::unique_ptr<InferenceClient>> c = MakeClient(/*own_connection=*/o.threads > 1);
    if (!c.ok()) return Fail(kCmd, c.status());
    if (absl::Status st = (*c)->WaitForConnected(absl::Milliseconds(absl::GetFlag(FLAGS_connect_timeout_ms)));
        !st.ok()) {
      return Fail(kCmd, st);
    }
    clients.push_back(c->get());
    owned.push_back(*std::move(c));
  }

  BenchSetup setup{.url = absl::GetFlag(FLAGS_url),
                   .model = model->name,
                   .mode = TransportModeName(o.mode),
                   .wire = WireTypeName(wire),
                   .batch = *batch,
                   .threads = o.threads,
                   .warmup_s = warmup,
                   .duration_s = duration,
                   .requests = o.requests};
  std::fprintf(
      stderr, "bench %s on %s: %s, batch %d, %d connection%s, warm-up %.1f s, %s per step\n", model->name.c_str(),
      setup.url.c_str(), setup.mode.c_str(), *batch, o.threads, o.threads > 1 ? "s" : "", warmup,
      o.requests > 0 ? absl::StrCat(o.requests, " requests").c_str() : absl::StrFormat("%.1f s", duration).c_str());

  LoadGenerator generator(clients, std::move(req), o);
  ProgressLine progress(absl::GetFlag(FLAGS_progress) && isatty(STDERR_FILENO));
  std::vector<StepResult> steps;
  for (const LoadLevel& level : *levels) {
    absl::StatusOr<StepResult> r = generator.RunStep(level, [&](const LiveStatus& s) { progress.Update(level, s); });
    progress.Clear();
    if (!r.ok()) return Fail(kCmd, r.status());
    std::fprintf(stderr, "%-8s %9.0f req/s  p50 %.3f ms  p99 %.3f ms  sent %lld  ok %lld  errors %lld%s\n",
                 LoadLevelName(level).c_str(), r->requests_per_second(), r->p50_ms, r->p99_ms,
                 static_cast<long long>(r->sent), static_cast<long long>(r->ok),
                 static_cast<long long>(r->error_count()), r->accounted() ? "" : "  (ACCOUNTING MISMATCH)");
    steps.push_back(*std::move(r));
  }
  std::printf("%s", FormatBenchTable(steps).c_str());

  for (const auto& [path, text] : {std::pair{absl::GetFlag(FLAGS_json), BenchJson(setup, steps)},
                                   std::pair{absl::GetFlag(FLAGS_csv), BenchCsv(steps)},
                                   std::pair{absl::GetFlag(FLAGS_plot), BenchSvg(setup, steps)}}) {
    if (path.empty()) continue;
    if (absl::Status st = WriteFile(path, text); !st.ok()) return Fail(kCmd, st);
    std::fprintf(stderr, "wrote %s\n", path.c_str());
  }
  // A step with no successful request at all means the numbers describe nothing.
  for (const StepResult& s : steps) {
    if (s.ok == 0) return kExitFailure;
  }
  return kExitOk;
}

}  // namespace fp8serve::client::cli
