// The bench's outputs: the table printed at the end, --json, --csv and the --plot SVG.
#pragma once

#include <string>
#include <vector>

#include "client/cli/load_generator.h"

namespace fp8serve::client {

// What was run, for the JSON report and the plot's title.
struct BenchSetup {
  std::string url, model, mode, wire;
  int batch = 1, threads = 1;
  double warmup_s = 0, duration_s = 0;
  int64_t requests = 0;
};

std::string FormatBenchTable(const std::vector<StepResult>& steps);
std::string BenchJson(const BenchSetup& setup, const std::vector<StepResult>& steps);
std::string BenchCsv(const std::vector<StepResult>& steps);
// p50 and p99 latency against throughput, one point per step, labelled with its load level.
std::string BenchSvg(const BenchSetup& setup, const std::vector<StepResult>& steps);

}  // namespace fp8serve::client
