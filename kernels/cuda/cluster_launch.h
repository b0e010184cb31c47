// A cudaLaunchConfig_t for a 1-D grid launched in thread-block clusters of `cluster_size`
// consecutive CTAs along x (for cudaLaunchKernelEx and cudaOccupancyMaxActiveClusters). Host only.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace fp8serve::cuda {

class ClusterLaunchConfig {
 public:
  ClusterLaunchConfig(unsigned grid, unsigned threads, size_t smem_bytes, unsigned cluster_size, cudaStream_t stream) {
    attr_[0].id = cudaLaunchAttributeClusterDimension;
    attr_[0].val.clusterDim.x = cluster_size;
    attr_[0].val.clusterDim.y = 1;
    attr_[0].val.clusterDim.z = 1;
    config_.gridDim = dim3(grid, 1, 1);
    config_.blockDim = dim3(threads, 1, 1);
    config_.dynamicSmemBytes = smem_bytes;
    config_.stream = stream;
    config_.attrs = attr_;
    config_.numAttrs = 1;
  }
  // config_ points into this object
  ClusterLaunchConfig(const ClusterLaunchConfig&) = delete;
  ClusterLaunchConfig& operator=(const ClusterLaunchConfig&) = delete;

  const cudaLaunchConfig_t* get() const { return &config_; }

 private:
  cudaLaunchAttribute attr_[1] = {};
  cudaLaunchConfig_t config_ = {};
};

}  // namespace fp8serve::cuda
