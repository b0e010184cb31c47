#include "server/metrics/gpu_metrics.h"

#include <dlfcn.h>

#include "absl/strings/str_cat.h"

namespace fp8serve {

// The few NVML declarations used, as nvml.h has them (the header is not needed to build).
namespace {
using nvmlReturn_t = int;  // NVML_SUCCESS = 0
using nvmlDevice_t = void*;
struct nvmlUtilization_t {
  unsigned int gpu;     // percent of the last sample period a kernel was running
  unsigned int memory;  // percent of it device memory was read or written
};
struct nvmlMemory_t {  // the v1 struct of nvmlDeviceGetMemoryInfo
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
constexpr unsigned kUuidBufferSize = 96;  // NVML_DEVICE_UUID_V2_BUFFER_SIZE
}  // namespace

struct NvmlCollector::Api {
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*shutdown)() = nullptr;
  const char* (*error_string)(nvmlReturn_t) = nullptr;
  nvmlReturn_t (*device_count)(unsigned*) = nullptr;
  nvmlReturn_t (*device_by_index)(unsigned, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*device_uuid)(nvmlDevice_t, char*, unsigned) = nullptr;
  nvmlReturn_t (*utilization)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t*) = nullptr;

  std::string Error(nvmlReturn_t r) const {
    const char* s = error_string != nullptr ? error_string(r) : nullptr;
    return s != nullptr ? absl::StrCat(s, " (", r, ")") : absl::StrCat("NVML error ", r);
  }
};

namespace {

template <typename F>
bool Bind(void* lib, const char* name, F* out, std::string* missing) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  if (*out == nullptr) *missing = name;
  return *out != nullptr;
}

prometheus::MetricFamily GaugeFamily(const char* name, const char* help) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = prometheus::MetricType::Gauge;
  return f;
}

}  // namespace

std::shared_ptr<NvmlCollector> NvmlCollector::Open(const std::string& library, std::string* why) {
  std::string scratch;
  if (why == nullptr) why = &scratch;
  void* lib = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* e = dlerror();
    *why = absl::StrCat("cannot load ", library, ": ", e != nullptr ? e : "unknown error");
    return nullptr;
  }
  std::shared_ptr<NvmlCollector> c(new NvmlCollector());
  c->lib_ = lib;  // closed by the destructor from here on
  c->api_ = std::make_unique<Api>();
  Api& a = *c->api_;
  std::string missing;
  const bool bound = Bind(lib, "nvmlInit_v2", &a.init, &missing) && Bind(lib, "nvmlShutdown", &a.shutdown, &missing) &&
                     Bind(lib, "nvmlDeviceGetCount_v2", &a.device_count, &missing) &&
                     Bind(lib, "nvmlDeviceGetHandleByIndex_v2", &a.device_by_index, &missing) &&
                     Bind(lib, "nvmlDeviceGetUUID", &a.device_uuid, &missing) &&
                     Bind(lib, "nvmlDeviceGetUtilizationRates", &a.utilization, &missing) &&
                     Bind(lib, "nvmlDeviceGetMemoryInfo", &a.memory, &missing);
  Bind(lib, "nvmlErrorString", &a.error_string, &scratch);  // optional
  if (!bound) {
    *why = absl::StrCat(library, " has no ", missing);
    a.shutdown = nullptr;  // nothing was initialized
    return nullptr;
  }
  if (nvmlReturn_t r = a.init(); r != 0) {
    *why = absl::StrCat("nvmlInit failed: ", a.Error(r));
    a.shutdown = nullptr;
    return nullptr;
  }
  unsigned count = 0;
  if (nvmlReturn_t r = a.device_count(&count); r != 0) {
    *why = absl::StrCat("nvmlDeviceGetCount failed: ", a.Error(r));
    return nullptr;
  }
  for (unsigned i = 0; i < count; ++i) {
    nvmlDevice_t h = nullptr;
    if (a.device_by_index(i, &h) != 0) continue;  // e.g. a GPU this process may not see
    char uuid[kUuidBufferSize] = {};
    if (a.device_uuid(h, uuid, kUuidBufferSize) != 0) uuid[0] = '\0';
    c->devices_.push_back({h, std::to_string(i), uuid});
  }
  if (c->devices_.empty()) {
    *why = absl::StrCat("NVML found no usable GPU (", count, " reported)");
    return nullptr;
  }
  *why = absl::StrCat("NVML: ", c->devices_.size(), " GPU(s)");
  return c;
}

NvmlCollector::~NvmlCollector() {
  if (api_ != nullptr && api_->shutdown != nullptr) api_->shutdown();
  if (lib_ != nullptr) dlclose(lib_);
}

std::vector<prometheus::MetricFamily> NvmlCollector::Collect() const {
  prometheus::MetricFamily util = GaugeFamily(
      "fp8serve_gpu_utilization_ratio", "Fraction of the last NVML sample period (1/6 s to 1 s) a kernel ran on the GPU");
  prometheus::MetricFamily used = GaugeFamily("fp8serve_gpu_memory_used_bytes", "GPU memory in use, in bytes (all processes)");
  prometheus::MetricFamily total = GaugeFamily("fp8serve_gpu_memory_total_bytes", "GPU memory installed, in bytes");
  absl::MutexLock lock(&mu_);
  for (const Device& d : devices_) {
    prometheus::ClientMetric m;
    m.label = {{"gpu", d.index}, {"uuid", d.uuid}};
    nvmlUtilization_t u{};
    if (api_->utilization(d.handle, &u) == 0) {
      m.gauge.value = u.gpu / 100.0;
      util.metric.push_back(m);
    }
    nvmlMemory_t mem{};
    if (api_->memory(d.handle, &mem) == 0) {
      m.gauge.value = static_cast<double>(mem.used);
      used.metric.push_back(m);
      m.gauge.value = static_cast<double>(mem.total);
      total.metric.push_back(m);
    }
  }
  std::vector<prometheus::MetricFamily> out;
  for (prometheus::MetricFamily* f : {&util, &used, &total}) {
    if (!f->metric.empty()) out.push_back(std::move(*f));
  }
  return out;
}

}  // namespace fp8serve
