#include "server/repository/model_config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/batching/batch_queue.h"

namespace fp8serve {

namespace {

// Collects TextFormat's complaints with their positions instead of printing them to stderr.
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    if (!errors.empty()) errors += "; ";
    absl::StrAppend(&errors, "line ", line + 1, " column ", column + 1, ": ", message);
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  std::string errors;
};

std::string BaseName(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

absl::Status ConfigError(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

std::string DimsString(const google::protobuf::RepeatedField<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

}  // namespace

absl::StatusOr<inference::ModelConfig> ReadModelConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.pbtxt";
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open (every model folder needs a config.pbtxt)"));
  std::stringstream text;
  text << in.rdbuf();
  inference::ModelConfig config;
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text.str(), &config)) return ConfigError(path, errors.errors);
  const std::string dir_name = BaseName(model_dir);
  if (config.name().empty()) config.set_name(dir_name);
  if (config.name() != dir_name) {
    return ConfigError(path, absl::StrCat("name '", config.name(), "' does not match its folder '", dir_name, "'"));
  }
  if (absl::Status st = ValidateModelConfig(config, path); !st.ok()) return st;
  return config;
}

absl::Status ValidateModelConfig(const inference::ModelConfig& c, const std::string& path) {
  const std::string platform = c.platform().empty() ? c.backend() : c.platform();
  if (platform != kPlatform) {
    return ConfigError(path, absl::StrCat("platform '", platform, "' is not served by fp8serve (want \"", kPlatform, "\")"));
  }
  if (c.max_batch_size() < 0) return ConfigError(path, "max_batch_size must be >= 0");
  if (c.input_size() != 1 || c.output_size() != 1) {
    return ConfigError(path, absl::StrCat("an MLP has exactly one input and one output; the config has ", c.input_size(),
                                          " inputs and ", c.output_size(), " outputs"));
  }
  for (const auto* t : {&c.input(0).dims(), &c.output(0).dims()}) {
    if (t->size() != 1 || (*t)[0] <= 0) {
      return ConfigError(path, absl::StrCat("input and output dims must be one positive width (e.g. [ 784 ]), not ",
                                            DimsString(*t)));
    }
  }
  if (c.input(0).name().empty() || c.output(0).name().empty()) return ConfigError(path, "input and output need names");
  if (c.input(0).data_type() != inference::TYPE_FP32) {
    return ConfigError(path, absl::StrCat("input '", c.input(0).name(), "' must be TYPE_FP32 (requests may still send FP16 "
                                          "or BF16), not ", inference::DataType_Name(c.input(0).data_type())));
  }
  if (c.output(0).data_type() != inference::TYPE_FP32) {
    return ConfigError(path, absl::StrCat("output '", c.output(0).name(), "' must be TYPE_FP32, not ",
                                          inference::DataType_Name(c.output(0).data_type())));
  }
  if (c.has_dynamic_batching()) {
    const auto& db = c.dynamic_batching();
    const int max = std::max(1, c.max_batch_size());
    for (int64_t p : db.preferred_batch_size()) {
      if (p < 1 || p > max) {
        return ConfigError(path, absl::StrCat("preferred_batch_size ", p, " is outside 1..max_batch_size (", max, ")"));
      }
    }
    if (db.priority_levels() > static_cast<uint64_t>(kMaxPriorityLevels)) {
      return ConfigError(path, absl::StrCat("priority_levels ", db.priority_levels(), " is more than fp8serve's limit of ",
                                            kMaxPriorityLevels));
    }
    if (db.priority_levels() > 0 &&
        (db.default_priority_level() < 1 || db.default_priority_level() > db.priority_levels())) {
      return ConfigError(path, absl::StrCat("default_priority_level ", db.default_priority_level(),
                                            " is outside 1..priority_levels (", db.priority_levels(), ")"));
    }
  }
  if (c.has_dynamic_batching()) {
    // Microseconds are read into signed 64-bit durations: larger values would wrap negative.
    const auto& db = c.dynamic_batching();
    constexpr uint64_t kMaxMicros = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    if (db.max_queue_delay_microseconds() > kMaxMicros) {
      return ConfigError(path, absl::StrCat("max_queue_delay_microseconds ", db.max_queue_delay_microseconds(),
                                            " is out of range (at most ", kMaxMicros, ")"));
    }
    if (db.default_queue_policy().default_timeout_microseconds() > kMaxMicros) {
      return ConfigError(path, absl::StrCat("default_timeout_microseconds ",
                                            db.default_queue_policy().default_timeout_microseconds(),
                                            " is out of range (at most ", kMaxMicros, ")"));
    }
  }
  for (const auto& g : c.instance_group()) {
    if (g.count() < 0 || g.count() > 64) return ConfigError(path, "instance_group count must be in 0..64");
  }
  return absl::OkStatus();
}

absl::Status CheckConfigMatchesWeights(const inference::ModelConfig& c, const MlpWeights& w, const std::string& config_path,
                                       const std::string& weights_path) {
  const auto fail = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, " contradicts ", weights_path, ": ", what));
  };
  if (c.input(0).dims(0) != w.input_dim()) {
    return fail(absl::StrCat("input '", c.input(0).name(), "' has dims [", c.input(0).dims(0), "] but the first layer takes ",
                             w.input_dim(), " inputs"));
  }
  if (c.output(0).dims(0) != w.output_dim()) {
    return fail(absl::StrCat("output '", c.output(0).name(), "' has dims [", c.output(0).dims(0),
                             "] but the last layer gives ", w.output_dim(), " outputs"));
  }
  const auto& params = c.parameters();
  if (auto it = params.find("num_layers"); it != params.end()) {
    if (it->second.string_value() != std::to_string(w.layers.size())) {
      return fail(absl::StrCat("parameter num_layers is '", it->second.string_value(), "' but the weights have ",
                               w.layers.size(), " layers"));
    }
  }
  if (auto it = params.find("weight_format"); it != params.end()) {
    std::string have;
    for (const MlpLayer& l : w.layers) {
      const std::string f = l.quantized ? Fp8FormatName(l.format) : "fp32";
      have = have.empty() || have == f ? f : "mixed";
    }
    if (it->second.string_value() != have) {
      return fail(absl::StrCat("parameter weight_format is '", it->second.string_value(), "' but the weights are ", have));
    }
  }
  return absl::OkStatus();
}

std::vector<int64_t> SelectVersions(const inference::ModelConfig& c, std::vector<int64_t> available) {
  std::sort(available.begin(), available.end());
  const auto& policy = c.version_policy();
  if (policy.has_all()) return available;
  if (policy.has_specific()) {
    std::vector<int64_t> out;
    for (int64_t v : policy.specific().versions()) {
      if (std::binary_search(available.begin(), available.end(), v)) out.push_back(v);
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }
  const size_t n = policy.has_latest() && policy.latest().num_versions() > 0 ? policy.latest().num_versions() : 1;
  if (available.size() > n) available.erase(available.begin(), available.end() - static_cast<std::ptrdiff_t>(n));
  return available;
}

ServableModel::Options ServableOptionsFromConfig(const inference::ModelConfig& c, int64_t version, BackendKind backend) {
  ServableModel::Options o;
  o.name = c.name();
  o.version = version;
  o.max_batch_size = std::max(1, c.max_batch_size());
  o.backend = backend;
  for (const auto& g : c.instance_group()) {
    InstanceGroupSpec spec;
    switch (g.kind()) {
      case inference::ModelInstanceGroup::KIND_GPU: spec.kind = InstanceGroupSpec::Kind::kGpu; break;
      case inference::ModelInstanceGroup::KIND_CPU: spec.kind = InstanceGroupSpec::Kind::kCpu; break;
      default: spec.kind = InstanceGroupSpec::Kind::kAuto; break;  // KIND_AUTO, KIND_MODEL
    }
    spec.count = g.count() > 0 ? g.count() : 1;  // Triton's default count is 1
    spec.gpus.assign(g.gpus().begin(), g.gpus().end());
    o.instance_groups.push_back(std::move(spec));
  }
  if (c.has_dynamic_batching()) {
    const auto& db = c.dynamic_batching();
    o.max_queue_delay = absl::Microseconds(static_cast<int64_t>(db.max_queue_delay_microseconds()));
    o.preferred_batch_sizes.assign(db.preferred_batch_size().begin(), db.preferred_batch_size().end());
    o.priority_levels = db.priority_levels() > 0 ? static_cast<int>(db.priority_levels()) : 1;
    o.default_priority_level = db.priority_levels() > 0 ? static_cast<int>(db.default_priority_level()) : 1;
    o.max_queue_size = static_cast<size_t>(db.default_queue_policy().max_queue_size());
  }
  return o;
}

absl::Duration DefaultRequestTimeout(const inference::ModelConfig& c) {
  if (!c.has_dynamic_batching()) return absl::InfiniteDuration();
  const uint64_t us = c.dynamic_batching().default_queue_policy().default_timeout_microseconds();
  return us == 0 ? absl::InfiniteDuration() : absl::Microseconds(static_cast<int64_t>(us));
}

}  // namespace fp8serve
