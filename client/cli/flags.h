// fp8serve-client's flags. absl flags are global, so every subcommand sees them all; each Command
// (common.h) lists the ones it takes, which its --help shows and which it accepts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/declare.h"

// Connection (every subcommand).
ABSL_DECLARE_FLAG(std::string, url);
ABSL_DECLARE_FLAG(int, timeout_ms);
ABSL_DECLARE_FLAG(int, connect_timeout_ms);
ABSL_DECLARE_FLAG(bool, tls);
ABSL_DECLARE_FLAG(std::string, tls_root_certs);
ABSL_DECLARE_FLAG(std::string, tls_client_cert);
ABSL_DECLARE_FLAG(std::string, tls_client_key);
ABSL_DECLARE_FLAG(std::string, tls_target_name);
// Model and data.
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, model_version);
ABSL_DECLARE_FLAG(std::string, input);
ABSL_DECLARE_FLAG(int, batch);
ABSL_DECLARE_FLAG(std::string, wire);
ABSL_DECLARE_FLAG(double, scale);
ABSL_DECLARE_FLAG(int64_t, limit);
// infer.
ABSL_DECLARE_FLAG(std::string, labels);
ABSL_DECLARE_FLAG(int, top_k);
ABSL_DECLARE_FLAG(std::string, class_names);
ABSL_DECLARE_FLAG(int, show);
// bench.
ABSL_DECLARE_FLAG(std::vector<std::string>, concurrency);
ABSL_DECLARE_FLAG(std::vector<std::string>, rate);
ABSL_DECLARE_FLAG(std::string, mode);
ABSL_DECLARE_FLAG(int, threads);
ABSL_DECLARE_FLAG(double, warmup_secs);
ABSL_DECLARE_FLAG(double, duration_secs);
ABSL_DECLARE_FLAG(int64_t, requests);
ABSL_DECLARE_FLAG(int64_t, max_in_flight);
ABSL_DECLARE_FLAG(int, seed);
ABSL_DECLARE_FLAG(std::string, json);
ABSL_DECLARE_FLAG(std::string, csv);
ABSL_DECLARE_FLAG(std::string, plot);
ABSL_DECLARE_FLAG(bool, progress);
// health, metadata, config.
ABSL_DECLARE_FLAG(std::string, service);
ABSL_DECLARE_FLAG(std::string, format);
