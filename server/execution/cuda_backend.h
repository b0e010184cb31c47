// The CUDA backend: a model's FP8 forward on one or more GPUs (built only with FP8SERVE_HAVE_CUDA).
//
// LAYOUT
//  - Instances. Each instance_group places `count` instances on each of its GPUs (every visible
//    GPU when the group lists none; see InstanceGroupSpec). Instances are interleaved over the
//    GPUs, so that the first batches already spread over all of them.
//  - Weights. The model is uploaded once per GPU (cuda::DeviceMlp) and shared by that GPU's
//    instances; its forward picks the fused kernel when the model fits it, the GEMM chain
//    otherwise (logged at load).
//  - Slots. Each instance has cuda_streams_per_instance slots. A slot is a non-blocking stream with
//    its own pinned host staging (input and output), device input and output buffers, a
//    DeviceWorkspace and a completion event, all allocated at load for max_rows rows. Slot s
//    belongs to instance s % instances, so the scheduler's rotation over free slots alternates
//    instances (and GPUs) before it doubles up on one.
//  - Graphs. With cuda_graphs, every slot captures its forward at load once per batch-size bucket
//    (powers of two below max_rows, then max_rows) and a batch of r rows replays the smallest
//    bucket >= r: rows are independent, so the bucket's extra rows (stale inputs of earlier
//    batches; zeros at first) only cost their share of a tiny computation, and their outputs are
//    never copied back. Capturing at load keeps the first requests of each size as fast as the
//    rest. If a capture fails the model launches its kernels directly (one warning at load).
//
// A BATCH (Launch): H2D copy of exactly its rows -> graph replay (or the kernels directly) -> D2H
// copy of exactly its rows -> completion event, all queued on the slot's stream; Launch returns at
// once. Poll() queries the event. Nothing on the serving path synchronizes the device, or even a
// stream, except after a failed launch (so that a slot handed back runs nothing any more).
//
// LOAD: every allocation is made at load. Running out of device or pinned memory fails the load
// with RESOURCE_EXHAUSTED naming the GPU, what was being allocated and how much was free, and
// frees everything already allocated (other models keep serving). Before the model is reported
// loaded, each bucket runs once per slot and the results are checked for CUDA errors.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/mlp_weights.h"
#include "server/execution/backend.h"

namespace fp8serve {

// See above. FAILED_PRECONDITION when a layer is not FP8 or the GPU cannot run the kernels (the
// model can serve on the CPU), INVALID_ARGUMENT for a bad placement (a GPU that is not there),
// RESOURCE_EXHAUSTED when out of memory, INTERNAL/UNAVAILABLE for other CUDA errors.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const BackendOptions& options, const MlpWeights& weights);

// The batch sizes a model with `max_rows` rows captures graphs for: 1, 2, 4, ... below max_rows,
// then max_rows itself.
std::vector<int> CudaGraphBuckets(int max_rows);

// "1 CUDA device: GPU 0 NVIDIA H200 (sm_90, 132 SMs, 140 GiB)", for the startup log.
std::string CudaDevicesSummary(int count);

}  // namespace fp8serve
