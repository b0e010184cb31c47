#include "server/repository/model_repository.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/model/mlp_model.h"
#include "server/repository/model_config.h"
#include "spdlog/spdlog.h"

namespace fp8serve {

namespace {

constexpr char kWeightsFile[] = "model.safetensors";

bool IsDir(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != ".." && n[0] != '.') out.push_back(n);
    }
    closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Numbered version folders (positive integers) that hold a weights file.
std::vector<int64_t> VersionsOnDisk(const std::string& model_dir) {
  std::vector<int64_t> out;
  for (const std::string& n : ListDir(model_dir)) {
    int64_t v;
    if (absl::SimpleAtoi(n, &v) && v > 0 && IsDir(model_dir + "/" + n)) out.push_back(v);
  }
  return out;
}

// What Poll compares: identity (device, inode), size, and modification and change times of the config
// and every version's weights. A file replaced by rename (how tools should publish a model) is a new
// inode, so even a same-size replacement within one timestamp tick is seen.
std::string Fingerprint(const std::string& model_dir) {
  std::string fp;
  auto add = [&fp](const std::string& p) {
    struct stat st {};
    if (stat(p.c_str(), &st) == 0) {
      absl::StrAppend(&fp, p, ":", st.st_dev, ":", st.st_ino, ":", st.st_size, ":", st.st_mtim.tv_sec, ".",
                      st.st_mtim.tv_nsec, ":", st.st_ctim.tv_sec, ".", st.st_ctim.tv_nsec, ";");
    }
  };
  add(model_dir + "/config.pbtxt");
  for (int64_t v : VersionsOnDisk(model_dir)) add(absl::StrCat(model_dir, "/", v, "/", kWeightsFile));
  return fp;
}

}  // namespace

absl::StatusOr<ModelControlMode> ParseModelControlMode(const std::string& s) {
  if (s == "none") return ModelControlMode::kNone;
  if (s == "explicit") return ModelControlMode::kExplicit;
  if (s == "poll") return ModelControlMode::kPoll;
  return absl::InvalidArgumentError(absl::StrCat("unknown model control mode '", s, "' (none, explicit, poll)"));
}

absl::StatusOr<std::unique_ptr<ModelRepository>> ModelRepository::Create(const Options& options) {
  if (options.roots.empty()) return absl::InvalidArgumentError("no model repository given");
  for (const std::string& r : options.roots) {
    if (!IsDir(r)) return absl::NotFoundError(absl::StrCat("model repository '", r, "' is not a readable folder"));
  }
  std::unique_ptr<ModelRepository> repo(new ModelRepository(options));
  std::vector<std::string> to_load;
  if (options.mode == ModelControlMode::kExplicit) {
    for (const std::string& n : options.startup_models) {
      if (n == "*") {
        to_load = repo->ScanModelNames();
        break;
      }
      to_load.push_back(n);
    }
  } else {
    to_load = repo->ScanModelNames();
  }
  absl::MutexLock load_lock(&repo->load_mu_);
  for (const std::string& name : to_load) {
    if (absl::Status st = repo->LoadLocked(name); !st.ok()) {
      spdlog::error("model '{}' failed to load: {}", name, std::string(st.message()));
    }
  }
  return repo;
}

ModelRepository::~ModelRepository() {
  absl::MutexLock load_lock(&load_mu_);
  std::vector<std::string> names;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [n, e] : models_) names.push_back(n);
  }
  for (const std::string& n : names) UnloadLocked(n);
}

std::vector<std::string> ModelRepository::ScanModelNames() const {
  std::vector<std::string> names;
  for (const std::string& root : options_.roots) {
    for (const std::string& n : ListDir(root)) {
      if (IsDir(root + "/" + n) && std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
    }
  }
  return names;
}

absl::StatusOr<std::string> ModelRepository::FindModelDir(const std::string& name) const {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a model name"));
  }
  std::vector<std::string> found;
  for (const std::string& root : options_.roots) {
    if (IsDir(root + "/" + name)) found.push_back(root + "/" + name);
  }
  if (found.empty()) return absl::NotFoundError(absl::StrCat("model '", name, "' is not in the model repository"));
  if (found.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", name, "' is in more than one repository: ", found[0], " and ", found[1]));
  }
  return found[0];
}

absl::Status ModelRepository::Load(const std::string& name) {
  if (options_.mode != ModelControlMode::kExplicit) {
    return absl::FailedPreconditionError(
        "loading and unloading models needs --model-control-mode=explicit (this server runs in mode '" +
        std::string(options_.mode == ModelControlMode::kNone ? "none" : "poll") + "')");
  }
  absl::MutexLock load_lock(&load_mu_);
  return LoadLocked(name);
}

absl::Status ModelRepository::Unload(const std::string& name) {
  if (options_.mode != ModelControlMode::kExplicit) {
    return absl::FailedPreconditionError("loading and unloading models needs --model-control-mode=explicit");
  }
  absl::MutexLock load_lock(&load_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (models_.find(name) == models_.end()) return absl::NotFoundError(absl::StrCat("model '", name, "' is not loaded"));
  }
  UnloadLocked(name);
  return absl::OkStatus();
}

absl::Status ModelRepository::LoadLocked(const std::string& name) {
  auto record_failure = [&](const absl::Status& st) {
    absl::MutexLock lock(&mu_);
    Entry& e = models_[name];
    e.reason = std::string(st.message());
    if (e.versions.empty()) e.state = "UNAVAILABLE";
    PublishStatesLocked();
    return st;
  };
  absl::StatusOr<std::string> dir = FindModelDir(name);
  if (!dir.ok()) return record_failure(dir.status());
  const std::string fingerprint = Fingerprint(*dir);
  absl::StatusOr<inference::ModelConfig> config = ReadModelConfig(*dir);
  if (!config.ok()) return record_failure(config.status());

  const std::vector<int64_t> on_disk = VersionsOnDisk(*dir);
  const std::vector<int64_t> wanted = SelectVersions(*config, on_disk);
  if (wanted.empty()) {
    return record_failure(absl::NotFoundError(
        absl::StrCat(*dir, ": no version folder matches the version policy (found ", on_disk.size(), " version folders)")));
  }
  // Load every wanted version before touching what serves now.
  std::map<int64_t, std::shared_ptr<ServableModel>> loaded;
  for (int64_t v : wanted) {
    const std::string weights_path = absl::StrCat(*dir, "/", v, "/", kWeightsFile);
    absl::StatusOr<MlpModel> model = LoadMlpModel(weights_path);
    if (!model.ok()) return record_failure(model.status());
    if (absl::Status st = CheckConfigMatchesWeights(*config, model->weights, *dir + "/config.pbtxt", weights_path); !st.ok()) {
      return record_failure(st);
    }
    ServableModel::Options so = ServableOptionsFromConfig(*config, v, options_.backend);
    so.cuda_streams_per_instance = options_.cuda_streams_per_instance;
    so.cuda_graphs = options_.cuda_graphs;
    so.backend_factory = options_.backend_factory;
    if (options_.metrics != nullptr) so.metrics = options_.metrics->ForModel(name, v);
    absl::StatusOr<std::shared_ptr<ServableModel>> servable = ServableModel::Create(so, model->weights);
    if (!servable.ok()) return record_failure(servable.status());
    spdlog::info("loaded model '{}' version {} from {} ({} layers, {} -> {}; {})", name, v, weights_path,
                 model->weights.layers.size(), model->weights.input_dim(), model->weights.output_dim(),
                 (*servable)->backend_description());
    loaded[v] = *std::move(servable);
  }
  // Swap in one step; shut the replaced versions down outside the lock.
  std::map<int64_t, std::shared_ptr<ServableModel>> old;
  {
    absl::MutexLock lock(&mu_);
    Entry& e = models_[name];
    old.swap(e.versions);
    e.versions = std::move(loaded);
    e.config = std::make_shared<const inference::ModelConfig>(*std::move(config));
    e.fingerprint = fingerprint;
    e.state = "READY";
    e.reason.clear();
    PublishStatesLocked();
  }
  for (auto& [v, m] : old) m->Shutdown();
  return absl::OkStatus();
}

void ModelRepository::UnloadLocked(const std::string& name) {
  std::map<int64_t, std::shared_ptr<ServableModel>> old;
  {
    absl::MutexLock lock(&mu_);
    auto it = models_.find(name);
    if (it == models_.end()) return;
    old.swap(it->second.versions);
    it->second.state = "UNAVAILABLE";  // Triton's word for an unloaded model, with reason "unloaded"
    it->second.reason = "unloaded";
    it->second.fingerprint.clear();
    PublishStatesLocked();
  }
  for (auto& [v, m] : old) {
    m->Shutdown();
    spdlog::info("unloaded model '{}' version {}", name, v);
  }
}

void ModelRepository::PublishStatesLocked() {
  if (options_.metrics == nullptr) return;
  std::vector<ServerMetrics::ModelState> states;
  for (const auto& [name, e] : models_) {
    if (e.versions.empty()) {
      // A model with no ready version shows as not ready while its folder exists. Names that were
      // never in a root (a RepositoryModelLoad of anything at all) and models removed from disk
      // do not: a client must not grow the label set, and dashboards should not keep dead models.
      bool on_disk = false;
      if (!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..") {
        for (const std::string& root : options_.roots) on_disk = on_disk || IsDir(root + "/" + name);
      }
      if (on_disk) states.push_back({name, "", false, 0});
      continue;
    }
    for (const auto& [v, m] : e.versions) states.push_back({name, std::to_string(v), true, m->instances()});
  }
  options_.metrics->SetModelStates(states);
}

void ModelRepository::Poll() {
  absl::MutexLock load_lock(&load_mu_);
  const std::vector<std::string> names = ScanModelNames();
  std::vector<std::string> to_load, to_unload;
  {
    absl::MutexLock lock(&mu_);
    for (const std::string& n : names) {
      absl::StatusOr<std::string> dir = FindModelDir(n);
      if (!dir.ok()) continue;
      auto it = models_.find(n);
      if (it == models_.end() || it->second.fingerprint != Fingerprint(*dir)) to_load.push_back(n);
    }
    for (const auto& [n, e] : models_) {
      if (std::find(names.begin(), names.end(), n) == names.end() && !e.versions.empty()) to_unload.push_back(n);
    }
  }
  for (const std::string& n : to_load) {
    if (absl::Status st = LoadLocked(n); !st.ok()) {
      spdlog::error("poll: model '{}' failed to (re)load, keeping what serves: {}", n, std::string(st.message()));
      // Remember the files that failed so an unchanged bad model is not retried every poll.
      absl::StatusOr<std::string> dir = FindModelDir(n);
      absl::MutexLock lock(&mu_);
      if (dir.ok()) models_[n].fingerprint = Fingerprint(*dir);
    }
  }
  for (const std::string& n : to_unload) UnloadLocked(n);
}

absl::StatusOr<ModelRepository::Served> ModelRepository::Get(const std::string& name, int64_t version) const {
  absl::MutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end() || it->second.versions.empty()) {
    const std::string why = it == models_.end() || it->second.reason.empty() ? "" : ": " + it->second.reason;
    return absl::NotFoundError(absl::StrCat("Request for unknown model: '", name, "' is not found", why));
  }
  const auto& versions = it->second.versions;
  if (version == 0) return Served{versions.rbegin()->second, it->second.config};
  auto v = versions.find(version);
  if (v == versions.end()) {
    return absl::NotFoundError(absl::StrCat("Request for unknown model: '", name, "' version ", version, " is not found"));
  }
  return Served{v->second, it->second.config};
}

std::vector<int64_t> ModelRepository::ReadyVersions(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  std::vector<int64_t> out;
  auto it = models_.find(name);
  if (it != models_.end()) {
    for (const auto& [v, m] : it->second.versions) out.push_back(v);
  }
  return out;
}

std::vector<ModelRepository::IndexEntry> ModelRepository::Index(bool ready_only) const {
  std::vector<IndexEntry> out;
  const std::vector<std::string> on_disk = ScanModelNames();
  absl::MutexLock lock(&mu_);
  for (const auto& [name, e] : models_) {
    if (e.versions.empty()) {
      if (!ready_only) out.push_back({name, "", e.state, e.reason});
      continue;
    }
    // A successful load clears the reason, so a reason here is why the last reload failed while
    // these versions kept serving: show it rather than hide it.
    for (const auto& [v, m] : e.versions) out.push_back({name, std::to_string(v), "READY", e.reason});
  }
  if (!ready_only) {
    for (const std::string& n : on_disk) {
      if (models_.find(n) == models_.end()) out.push_back({n, "", "UNAVAILABLE", "not loaded"});
    }
  }
  std::sort(out.begin(), out.end(), [](const IndexEntry& a, const IndexEntry& b) {
    return a.name != b.name ? a.name < b.name : a.version < b.version;
  });
  return out;
}

bool ModelRepository::AllReady() const {
  absl::MutexLock lock(&mu_);
  for (const auto& [n, e] : models_) {
    if (e.state == "UNAVAILABLE") return false;
  }
  return true;
}

}  // namespace fp8serve
