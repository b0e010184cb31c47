#include "client/cli/bench_report.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli/svg_plot.h"
#include "nlohmann/json.hpp"

namespace fp8serve::client {

namespace {

std::string ErrorsText(const StepResult& s) {
  std::vector<std::string> parts;
  for (const auto& [code, n] : s.errors) parts.push_back(absl::StrCat(code, " ", n));
  if (s.dropped > 0) parts.push_back(absl::StrCat("dropped ", s.dropped));
  return parts.empty() ? "0" : absl::StrJoin(parts, ", ");
}

}  // namespace

std::string FormatBenchTable(const std::vector<StepResult>& steps) {
  std::string out =
      absl::StrFormat("%-10s %9s %10s %8s %8s %8s %8s %9s %9s %9s  %s\n", "load", "req/s", "rows/s", "p50 ms", "p90 ms",
                      "p99 ms", "p99.9 ms", "srv queue", "srv comp", "sent", "errors");
  absl::StrAppend(&out, absl::StrFormat("%-10s %9s %10s %8s %8s %8s %8s %9s %9s %9s\n", "", "", "", "", "", "", "",
                                        "us/req", "us/req", ""));
  for (const StepResult& s : steps) {
    const std::string srv_q = s.have_server ? absl::StrFormat("%.0f", s.server_queue_us()) : "-";
    const std::string srv_c = s.have_server ? absl::StrFormat("%.0f", s.server_compute_us()) : "-";
    absl::StrAppend(
        &out, absl::StrFormat("%-10s %9.0f %10.0f %8.3f %8.3f %8.3f %8.3f %9s %9s %9d  %s\n", LoadLevelName(s.level),
                              s.requests_per_second(), s.rows_per_second(), s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms,
                              srv_q, srv_c, s.sent, ErrorsText(s)));
  }
  for (const StepResult& s : steps) {
    if (!s.first_error.empty()) {
      absl::StrAppend(&out, LoadLevelName(s.level), " first error: ", s.first_error, "\n");
    }
  }
  return out;
}

std::string BenchJson(const BenchSetup& setup, const std::vector<StepResult>& steps) {
  nlohmann::json j;
  j["setup"] = {{"url", setup.url},           {"model", setup.model},           {"mode", setup.mode},
                {"wire", setup.wire},         {"batch", setup.batch},           {"threads", setup.threads},
                {"warmup_s", setup.warmup_s}, {"duration_s", setup.duration_s}, {"requests", setup.requests}};
  j["steps"] = nlohmann::json::array();
  for (const StepResult& s : steps) {
    nlohmann::json e = {
        {"load", LoadLevelName(s.level)},
        {s.level.open_loop ? "rate" : "concurrency", s.level.value},
        {"seconds", s.seconds},
        {"sent", s.sent},
        {"ok", s.ok},
        {"errors", s.errors},
        {"dropped", s.dropped},
        {"accounted", s.accounted()},
        {"requests_per_second", s.requests_per_second()},
        {"rows_per_second", s.rows_per_second()},
        {"latency_ms",
         {{"p50", s.p50_ms},
          {"p90", s.p90_ms},
          {"p99", s.p99_ms},
          {"p99.9", s.p999_ms},
          {"mean", s.mean_ms},
          {"max", s.max_ms}}},
    };
    if (s.level.open_loop) e["max_send_lag_ms"] = s.max_send_lag_ms;
    if (!s.first_error.empty()) e["first_error"] = s.first_error;
    if (s.have_server) {
      e["server"] = {{"success", s.server.success},
                     {"fail", s.server.fail},
                     {"inference_count", s.server.inference_count},
                     {"execution_count", s.server.execution_count},
                     {"queue_us_per_request", s.server_queue_us()},
                     {"compute_us_per_request", s.server_compute_us()}};
    }
    j["steps"].push_back(std::move(e));
  }
  return j.dump(2) + "\n";
}

std::string BenchCsv(const std::vector<StepResult>& steps) {
  std::string out =
      "load,concurrency,rate,seconds,sent,ok,errors,dropped,requests_per_second,rows_per_second,p50_ms,p90_ms,"
      "p99_ms,p99.9_ms,mean_ms,max_ms,server_success,server_fail,server_queue_us,server_compute_us\n";
  for (const StepResult& s : steps) {
    absl::StrAppend(
        &out, absl::StrFormat(
                  "%s,%s,%s,%.4f,%d,%d,%d,%d,%.2f,%.2f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%s,%s,%s,%s\n",
                  LoadLevelName(s.level), s.level.open_loop ? "" : absl::StrCat(static_cast<int64_t>(s.level.value)),
                  s.level.open_loop ? absl::StrFormat("%g", s.level.value) : "", s.seconds, s.sent, s.ok,
                  s.error_count(), s.dropped, s.requests_per_second(), s.rows_per_second(), s.p50_ms, s.p90_ms,
                  s.p99_ms, s.p999_ms, s.mean_ms, s.max_ms, s.have_server ? absl::StrCat(s.server.success) : "",
                  s.have_server ? absl::StrCat(s.server.fail) : "",
                  s.have_server ? absl::StrFormat("%.2f", s.server_queue_us()) : "",
                  s.have_server ? absl::StrFormat("%.2f", s.server_compute_us()) : ""));
  }
  return out;
}

std::string BenchSvg(const BenchSetup& setup, const std::vector<StepResult>& steps) {
  PlotSpec spec;
  spec.title = absl::StrCat(setup.model, ": throughput vs latency (", setup.mode, ", batch ", setup.batch, ")");
  spec.x_label = "throughput (requests/s)";
  spec.y_label = "latency (ms)";
  PlotSeries p50, p99;
  p50.name = "p50 latency";
  p50.color = "#1f77b4";
  p99.name = "p99 latency";
  p99.color = "#d62728";
  p99.dashed = true;
  double lo = 1e300, hi = 0;
  for (const StepResult& s : steps) {
    if (s.ok == 0) continue;
    p50.points.emplace_back(s.requests_per_second(), s.p50_ms);
    p50.point_labels.push_back(LoadLevelName(s.level));
    p99.points.emplace_back(s.requests_per_second(), s.p99_ms);
    p99.point_labels.emplace_back();
    lo = std::min(lo, s.p50_ms);
    hi = std::max(hi, s.p99_ms);
  }
  // Latencies that span orders of magnitude read better on a log axis.
  spec.log_y = lo > 0 && hi / lo > 30;
  spec.series = {p50, p99};
  return RenderSvgPlot(spec);
}

}  // namespace fp8serve::client
