// The model repository: Triton-shaped folders under one or more roots,
//   <root>/<model>/config.pbtxt
//   <root>/<model>/<version>/model.safetensors
// loaded into ServableModels and looked up by (name, version) on every request.
//
// BEHAVIOR
// - Control modes (as in Triton): kNone loads every model at start and never changes; kExplicit
//   loads the models named in startup_models ("*" = all) and then only what Load/Unload ask;
//   kPoll loads every model at start and Poll() (called every poll interval by the server)
//   picks up added, changed and removed models.
// - A model that fails to load (a bad config, bad weights, a config that contradicts its
//   weights) is recorded as UNAVAILABLE with the reason; the other models serve on.
// - A reload is atomic per model: the new versions load completely next to the old ones, then
//   replace them in one step. A reload that fails keeps the old versions serving. Replaced versions
//   are shut down after the swap: they stop accepting, finish everything queued, and go away when
//   the last in-flight request lets go of them. Requests are never failed or dropped by a reload.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "model_config.pb.h"
#include "server/execution/servable_model.h"
#include "server/metrics/metrics.h"

namespace fp8serve {

enum class ModelControlMode { kNone, kExplicit, kPoll };
absl::StatusOr<ModelControlMode> ParseModelControlMode(const std::string& s);  // none | explicit | poll

class ModelRepository {
 public:
  struct Options {
    std::vector<std::string> roots;
    ModelControlMode mode = ModelControlMode::kNone;
    std::vector<std::string> startup_models;  // kExplicit only; "*" loads all
    BackendKind backend = BackendKind::kAuto;
    // CUDA backend: streams per instance and CUDA graphs, for every model (see BackendOptions).
    int cuda_streams_per_instance = 2;
    bool cuda_graphs = true;
    // Builds every model's backend (empty: CreateBackend). For tests.
    BackendFactory backend_factory;
    // Optional, not owned, outlives the repository: every loaded version gets its series from it,
    // and the repository publishes which versions are ready after every change.
    ServerMetrics* metrics = nullptr;
  };

  // Scans the roots and loads per the mode. Fails only when a root is unreadable or the options
  // are wrong; a bad model is recorded and reported through Index().
  static absl::StatusOr<std::unique_ptr<ModelRepository>> Create(const Options& options);
  ~ModelRepository();
  ModelRepository(const ModelRepository&) = delete;
  ModelRepository& operator=(const ModelRepository&) = delete;

  // A ready version and the config it was loaded with. Both stay valid for as long as the caller
  // holds them, across reloads.
  struct Served {
    std::shared_ptr<ServableModel> model;
    std::shared_ptr<const inference::ModelConfig> config;
  };
  // `version` 0 means the highest ready one. NOT_FOUND names what is missing.
  absl::StatusOr<Served> Get(const std::string& name, int64_t version) const;
  // Ready versions of a model, ascending (empty if none).
  std::vector<int64_t> ReadyVersions(const std::string& name) const;

  struct IndexEntry {
    std::string name;
    std::string version;  // empty for a model with no loaded version
    std::string state;    // READY | UNAVAILABLE (with a reason: "unloaded", or why it failed)
    std::string reason;   // why not ready; on a READY version, why the last reload failed (if it did)
  };
  // Every model found in the roots or loaded; `ready_only` keeps the READY versions.
  std::vector<IndexEntry> Index(bool ready_only) const;

  // Loads or reloads a model by name from the roots (kExplicit; also used by Poll and at start).
  absl::Status Load(const std::string& name);
  absl::Status Unload(const std::string& name);
  // Rescans the roots: loads new and changed models, unloads removed ones.
  void Poll();

  ModelControlMode mode() const { return options_.mode; }
  // True when every model the repository is meant to serve has a ready version.
  bool AllReady() const;

 private:
  struct Entry {
    std::shared_ptr<const inference::ModelConfig> config;
    std::map<int64_t, std::shared_ptr<ServableModel>> versions;  // ready versions
    std::string fingerprint;  // of the files last loaded, for Poll
    std::string state = "UNAVAILABLE";
    std::string reason;
  };

  explicit ModelRepository(const Options& options) : options_(options) {}
  absl::StatusOr<std::string> FindModelDir(const std::string& name) const;
  std::vector<std::string> ScanModelNames() const;
  absl::Status LoadLocked(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  void UnloadLocked(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  // Tells the metrics (if any) what serves now: fp8serve_model_ready and fp8serve_model_instances.
  void PublishStatesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  absl::Mutex load_mu_;  // serializes Load/Unload/Poll: loads are slow and run outside mu_
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> models_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fp8serve
