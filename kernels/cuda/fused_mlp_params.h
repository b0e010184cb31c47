// The fused MLP kernel's shape constants and parameter block (plain C++): shared by the kernel
// (fused_mlp.cuh), its launcher (fused_mlp.cu), the host code that plans a launch and fills the
// parameters (fused_mlp_plan.cc) and the kernel's host emulation test.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "kernels/cuda/fused_mlp.h"
#include "kernels/cuda/host_device.h"

namespace fp8serve::cuda {

// ---- Shape constants shared by the kernel and its launcher ----------------------------------------

inline constexpr int kFusedNumThreads = 256;
inline constexpr int kFusedBarrierBytes = 2 * kFusedMaxLayers * 8;  // partial and activation mbarrier per layer
inline constexpr int kFusedNumWarps = kFusedNumThreads / 32;
inline constexpr int kFusedTileN = 128;  // output columns per weight tile: exactly one output 1x128 group
inline constexpr int kFusedTileK = 128;  // K per pipeline stage: exactly one promotion group
inline constexpr int kFusedStageWeightBytes = kFusedTileN * kFusedTileK;
inline constexpr int kFusedStageColScaleOffset = kFusedStageWeightBytes;
inline constexpr int kFusedStageBiasOffset = kFusedStageColScaleOffset + kFusedTileN * 4;
inline constexpr int kFusedStageBScaleOffset = kFusedStageBiasOffset + kFusedTileN * 4;
// NOTES: a stage's weight chunk is also wgmma's B operand (Hopper): a 128-byte-swizzle tile whose
// 8-row x 128-byte atoms must start 1024-byte aligned, so stages are padded to 1 KB multiples and
// the wgmma kernel aligns the dynamic shared memory base by hand (kFusedSmemAlign more bytes).
inline constexpr int kFusedSmemAlign = 1024;
inline constexpr int kFusedStageBytes =
    (kFusedStageBScaleOffset + 128 + kFusedSmemAlign - 1) / kFusedSmemAlign * kFusedSmemAlign;
static_assert(kFusedStageBytes % kFusedSmemAlign == 0, "stages must keep 1024-byte alignment for the swizzle atoms");
static_assert(kFusedTileK == 128, "one stage is one promotion group of the numeric contract");

// Warp grid of a CTA: BLOCK_M 16 -> 1 x 8 warps of 16 x 16; 32 -> 2 x 4 of 16 x 32; 64 -> 2 x 4 of 32 x 32.
FP8SERVE_HOST_DEVICE constexpr int FusedWarpsM(int block_m) { return block_m >= 32 ? 2 : 1; }
FP8SERVE_HOST_DEVICE constexpr int FusedWarpsN(int block_m) { return kFusedNumWarps / FusedWarpsM(block_m); }

// ---- Kernel parameters (filled by the launcher) ---------------------------------------------------

struct FusedLayerParams {
  const uint8_t* w = nullptr;          // [tiles * 128, k_pad] codes, 16-byte aligned
  const float* b_scales = nullptr;     // [tiles, groups]
  const float* col_scales = nullptr;   // [tiles * 128] or nullptr, 16-byte aligned
  const float* bias = nullptr;         // [tiles * 128] or nullptr, 16-byte aligned
  int n = 0;                           // logical output columns
  int k = 0;                           // logical input columns
  int k_pad = 0;                       // padded input columns (row stride of w and of the input activations)
  int groups = 0;                      // k_pad / 128
  int tiles = 0;                       // n_pad / 128
  int e5m2 = 0;                        // weight codes are E5M2 (else E4M3)
  int parts = 1;                       // CTAs sharing one tile's K groups (1: whole tiles round-robin)
  uint32_t slot_offset = 0;            // this layer's partial-sum slots in shared memory (parts > 1 only)
  // Work of cluster rank r (filled by the launcher from parts, see the header comment): bits 0-7 its
  // first tile (>= tiles: no work in this layer), 8-15 the first and 16-23 one past the last K group
  // of its range. A table, so that the kernel never divides by parts.
  uint32_t rank_work[kFusedMaxCluster] = {};
  // Per rank, from the launcher's FusedPlan (the kernel computes none of it): the bytes its partial
  // and activation mbarriers of this layer receive, and the ranks it copies its owned output tiles to.
  uint32_t partial_bytes[kFusedMaxCluster] = {};
  uint32_t act_bytes[kFusedMaxCluster] = {};
  uint32_t receivers[kFusedMaxCluster] = {};
  // Split layers: the rank a contributor sends its partial to and the slot there (from the plan)
  int8_t partial_owner[kFusedMaxCluster] = {};
  int8_t partial_slot[kFusedMaxCluster] = {};
};

struct FusedMlpParams {
  FusedLayerParams layers[kFusedMaxLayers];
  int num_layers = 0;
  int m = 0;
  int k_in = 0;                        // columns of x (= layers[0].n of the input, unpadded)
  int relu = 1;
  int x_vec4 = 0;                      // x is 16-byte aligned and k_in % 4 == 0: float4 loads
  const float* x = nullptr;            // [m, k_in]
  float* y = nullptr;                  // [m, layers[num_layers - 1].n]
  uint32_t act_offset[2] = {0, 0};     // dynamic shared memory byte offsets
  uint32_t scale_offset[2] = {0, 0};
  uint32_t red_offset = 0;
  uint32_t bar_offset = 0;             // mbarriers: [2][kFusedMaxLayers] x 8 bytes (cluster_size > 1 only)
  int cluster_size = 1;                // CTAs per row block (a cluster along x when > 1; sm_90 only)
  int last_send[kFusedMaxCluster] = {};  // per rank: the last layer it stores into another CTA; -1: never
  uint64_t* trace = nullptr;           // FusedMlpArgs::trace (nullptr: no timeline)
};

// The kernel instances: (BLOCK_M, kNumStages). The first three serve small, mid and large batches;
// the last is the fallback for devices with less shared memory (Ada: 99 KB per block), and the one
// FusedMlpSupported measures the model against.
struct FusedInstance {
  int block_m;
  int stages;
};
inline constexpr FusedInstance kFusedInstances[] = {{16, 5}, {32, 5}, {64, 4}, {16, 3}};
inline constexpr int kFusedNumInstances = static_cast<int>(sizeof(kFusedInstances) / sizeof(kFusedInstances[0]));

// Everything a launch of the fused kernel needs: the plan, the kernel parameters filled from it,
// and the instance (index into kFusedInstances) it runs.
struct FusedLaunch {
  FusedPlan plan;
  FusedMlpParams params;
  int instance = 0;
};

// The launch LaunchFusedMlp would make for these arguments (its INVALID_ARGUMENT where it would
// refuse them). Host code only: no CUDA call.
absl::StatusOr<FusedLaunch> PrepareFusedLaunch(const FusedMlpArgs& args, const DeviceTraits& device);

}  // namespace fp8serve::cuda
