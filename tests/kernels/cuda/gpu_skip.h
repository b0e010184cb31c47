// The one way a GPU test skips: loudly, on stderr and in gtest's summary, with the reason the CUDA
// runtime gave (no driver, driver too old, no device).
#pragma once

#include <cstdio>
#include <string>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/cuda/cuda_status.h"

// In a fixture's SetUp() (or a test body): skips the test when no CUDA device is usable.
#define FP8SERVE_SKIP_WITHOUT_GPU()                                                           \
  do {                                                                                        \
    const absl::StatusOr<int> fp8serve_devices_ = ::fp8serve::CudaDeviceCount();              \
    if (!fp8serve_devices_.ok()) {                                                            \
      std::fprintf(stderr, "*** GPU TEST SKIPPED: no usable CUDA device (%s)\n",              \
                   std::string(fp8serve_devices_.status().message()).c_str());                \
      GTEST_SKIP() << "no usable CUDA device: " << fp8serve_devices_.status().message();      \
    }                                                                                         \
  } while (0)
