// health, metadata, config: the operator's subcommands.
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>

#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/common.h"
#include "client/cli/flags.h"

namespace fp8serve::client::cli {

namespace {

absl::Status CheckNoArgs(const std::vector<std::string>& args) {
  if (args.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", args[0], "'"));
}

absl::StatusOr<bool> JsonFormat() {
  const std::string f = absl::GetFlag(FLAGS_format);
  if (f == "text") return false;
  if (f == "json") return true;
  return absl::InvalidArgumentError(absl::StrCat("--format '", f, "': expected text or json"));
}

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

std::string ShapeText(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

}  // namespace

int RunHealth(const std::vector<std::string>& args) {
  if (absl::Status st = CheckNoArgs(args); !st.ok()) return UsageError("health", std::string(st.message()));
  const std::string url = absl::GetFlag(FLAGS_url);
  absl::StatusOr<std::unique_ptr<InferenceClient>> client = MakeClient();
  if (!client.ok()) return UsageError("health", std::string(client.status().message()));
  // No separate connect step: a refused connection fails the call at once, and --timeout-ms bounds
  // a server that accepts but does not answer. One line either way, for probe logs.
  absl::StatusOr<HealthStatus> h = (*client)->Health(absl::GetFlag(FLAGS_service));
  if (!h.ok()) {
    std::printf("%s: not healthy: %s: %s\n", url.c_str(), StatusCodeName(h.status().code()).c_str(),
                std::string(h.status().message()).c_str());
    return kExitFailure;
  }
  std::printf("%s: %s\n", url.c_str(), HealthStatusName(*h));
  return *h == HealthStatus::kServing ? kExitOk : kExitFailure;
}

int RunMetadata(const std::vector<std::string>& args) {
  if (absl::Status st = CheckNoArgs(args); !st.ok()) return UsageError("metadata", std::string(st.message()));
  absl::StatusOr<bool> json = JsonFormat();
  if (!json.ok()) return UsageError("metadata", std::string(json.status().message()));
  absl::StatusOr<std::unique_ptr<InferenceClient>> client = ConnectClient();
  if (!client.ok()) return Fail("metadata", client.status());
  InferenceClient& c = **client;

  absl::StatusOr<inference::ServerMetadataResponse> server = c.ServerMetadata();
  if (!server.ok()) return Fail("metadata", server.status());
  absl::StatusOr<inference::RepositoryIndexResponse> index = c.RepositoryIndex();
  if (!index.ok()) return Fail("metadata", index.status());
  std::vector<std::string> models;
  const std::string only = absl::GetFlag(FLAGS_model);
  if (!only.empty()) {
    models.push_back(only);
  } else {
    for (const auto& e : index->models()) {
      if (e.state() == "READY" && (models.empty() || models.back() != e.name())) models.push_back(e.name());
    }
  }
  std::vector<inference::ModelMetadataResponse> metas;
  for (const std::string& m : models) {
    absl::StatusOr<inference::ModelMetadataResponse> md = c.ModelMetadata(m, absl::GetFlag(FLAGS_model_version));
    if (!md.ok()) return Fail("metadata", md.status());
    metas.push_back(*std::move(md));
  }

  if (*json) {
    std::string out =
        absl::StrCat("{\n\"server\": ", Json(*server), ",\n\"repository\": ", Json(*index), ",\n\"models\": [");
    for (size_t i = 0; i < metas.size(); ++i) absl::StrAppend(&out, i ? ",\n" : "\n", Json(metas[i]));
    absl::StrAppend(&out, "]\n}\n");
    std::fputs(out.c_str(), stdout);
    return kExitOk;
  }
  const absl::StatusOr<bool> live = c.ServerLive(), ready = c.ServerReady();
  std::printf("server     %s %s (%s)\n", server->name().c_str(), server->version().c_str(),
              absl::GetFlag(FLAGS_url).c_str());
  std::printf("live       %s, ready %s\n", live.ok() ? (*live ? "yes" : "no") : "?",
              ready.ok() ? (*ready ? "yes" : "no") : "?");
  std::printf("extensions %s\n", absl::StrJoin(server->extensions(), ", ").c_str());
  std::printf("repository\n");
  for (const auto& e : index->models()) {
    std::printf("  %-24s version %-4s %s%s%s\n", e.name().c_str(), e.version().empty() ? "-" : e.version().c_str(),
                e.state().c_str(), e.reason().empty() ? "" : ": ", e.reason().c_str());
  }
  for (const auto& md : metas) {
    std::printf("model %s (platform %s, versions %s)\n", md.name().c_str(), md.platform().c_str(),
                absl::StrJoin(md.versions(), ", ").c_str());
    for (const auto& t : md.inputs()) {
      std::printf("  input  %-12s %-5s %s\n", t.name().c_str(), t.datatype().c_str(), ShapeText(t.shape()).c_str());
    }
    for (const auto& t : md.outputs()) {
      std::printf("  output %-12s %-5s %s\n", t.name().c_str(), t.datatype().c_str(), ShapeText(t.shape()).c_str());
    }
  }
  return kExitOk;
}

int RunConfig(const std::vector<std::string>& args) {
  if (absl::Status st = CheckNoArgs(args); !st.ok()) return UsageError("config", std::string(st.message()));
  absl::StatusOr<bool> json = JsonFormat();
  if (!json.ok()) return UsageError("config", std::string(json.status().message()));
  absl::StatusOr<std::unique_ptr<InferenceClient>> client = ConnectClient();
  if (!client.ok()) return Fail("config", client.status());
  std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) {
    absl::StatusOr<ModelInfo> info = ResolveModel(**client);
    if (!info.ok()) return Fail("config", info.status());
    model = info->name;
  }
  absl::StatusOr<inference::ModelConfig> config = (*client)->ModelConfig(model, absl::GetFlag(FLAGS_model_version));
  if (!config.ok()) return Fail("config", config.status());
  std::string out;
  if (*json) {
    out = Json(*config) + "\n";
  } else {
    google::protobuf::TextFormat::PrintToString(*config, &out);
  }
  std::fputs(out.c_str(), stdout);
  return kExitOk;
}

}  // namespace fp8serve::client::cli
