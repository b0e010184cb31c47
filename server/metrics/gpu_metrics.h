// GPU gauges from NVML, loaded at run time with dlopen (the server has no link dependency on the
// driver): fp8serve_gpu_utilization_ratio, fp8serve_gpu_memory_used_bytes and
// fp8serve_gpu_memory_total_bytes, labelled {gpu="<index>", uuid="GPU-..."}. Sampled when scraped,
// on the scraping thread; the request path never touches NVML.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace fp8serve {

class NvmlCollector final : public prometheus::Collectable {
 public:
  // Loads `library` (a soname or path), initializes NVML and lists the GPUs. Returns nullptr, with
  // the reason in *why, when the library is missing, NVML fails to initialize, or there is no GPU.
  static std::shared_ptr<NvmlCollector> Open(const std::string& library, std::string* why);
  ~NvmlCollector() override;

  std::vector<prometheus::MetricFamily> Collect() const override;
  size_t num_gpus() const { return devices_.size(); }

  struct Api;  // the NVML entry points used (defined in the .cc)

 private:
  struct Device {
    void* handle;  // nvmlDevice_t
    std::string index, uuid;
  };
  NvmlCollector() = default;

  void* lib_ = nullptr;
  std::unique_ptr<Api> api_;
  std::vector<Device> devices_;
  mutable absl::Mutex mu_;  // one scrape at a time talks to NVML
};

}  // namespace fp8serve
