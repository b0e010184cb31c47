// Host API of the fused MLP kernel (device code in fused_mlp.cuh): the whole forward of a small
// FP8 MLP in one launch. FP32 rows go in, FP32 logits come out; in between, every layer's 1x128
// activation quantization, GEMM with per-group promotion, scale, bias, ReLU and requantization run
// with the activations kept in shared memory. For models like the bundled 784-256-10 at serving
// batch sizes, where a per-layer chain is dominated by launches and quantization passes.
//
// Weights use gemm_config.h's padded device layout (the same buffers the GEMM chain reads).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/gemm_config.h"

namespace fp8serve::cuda {

inline constexpr int kFusedMaxLayers = 4;
inline constexpr int kFusedMaxWidth = 1024;  // padded in/out width of every layer, at most

struct FusedMlpLayer {
  int n = 0;      // logical output width
  int k = 0;      // logical input width
  int n_pad = 0;  // multiple of 128
  int k_pad = 0;  // multiple of 128
  const uint8_t* w = nullptr;         // [n_pad, k_pad]
  Fp8Format w_format = Fp8Format::kE4M3;
  const float* b_scales = nullptr;    // [n_pad/128, k_pad/128]
  const float* col_scales = nullptr;  // [n_pad] or nullptr
  const float* bias = nullptr;        // [n_pad] or nullptr
};

// The tensor-core instructions of the fused kernel's MMAs. mma.sync (m16n8k32) is native FP8 on Ada;
// on Hopper ptxas widens it to FP16 (two HMMA.16816 and unpacks per instruction), and wgmma
// (m64n64k32, A from registers, B from shared memory) is Hopper's own FP8 path.
enum class FusedMma : uint8_t {
  kAuto,      // the launcher's choice: mma.sync (wgmma measured behind it at batch 64 on an H200, level at 1 and 1024)
  kMmaSync,   // any device
  kWgmma,     // compute capability 9.0 only
  // mma.sync's product as two FP16 m16n8k16 MMAs on operands the kernel widens itself, each
  // activation fragment once for all of a warp's n-tiles (ptxas's widening of the FP8 instruction
  // repeats it per n-tile and adds each product to the sum separately). Compute capability 9.0
  // only (Ada has the FP8 instruction); opt-in until measured against kMmaSync.
  kMmaSyncF16,
};
const char* FusedMmaName(FusedMma m);  // "auto" / "mma_sync" / "wgmma" / "mma_sync_f16"

struct FusedMlpArgs {
  int m = 0;                   // rows
  const float* x = nullptr;    // [m, layers[0].k] FP32
  FusedMlpLayer layers[kFusedMaxLayers];
  int num_layers = 0;
  bool relu = true;            // hidden layers' activation (ReLU or identity); the last has none
  float* y = nullptr;          // [m, layers[num_layers-1].n] FP32 logits
  // CTAs that share one row block as a thread-block cluster (compute capability 9.0 only): 0 lets
  // the launcher choose (1 off Hopper); 1, 2, 4 or 8 forces that size (tests). Any size gives the
  // same logits up to FP32 summation order across K groups, and the same bits on every run.
  int cluster_size = 0;
  FusedMma mma = FusedMma::kAuto;  // any choice gives the same logits up to FP32 summation order
  // Rows per row block: 0 lets the launcher choose; 16, 32 or 64 forces it (tests, benchmarks).
  int block_m = 0;
  // With a cluster, when the last layer has one output tile (n <= 128) and the layer before at most
  // cluster_size tiles: each CTA that owns a tile of the layer before computes the last layer's K
  // group of that tile right where it is, and sends its FP32 partial sum to the owner of group 0,
  // instead of copying the tile to the one CTA that computes the whole last layer. The hand-over
  // count stays, the last layer's chunks run in parallel. Ignored where it does not apply. On by
  // default: measured on an H200 (fp8_gemm_bench, the bundled 784-256-10 model, mma.sync, cluster
  // 8 / 8 / 2), graph replays of 12.1 / 11.4 / 19.9 us at batch 1 / 64 / 1024 against 13.2 / 12.4 /
  // 20.5 us unfolded, and kernel spans of 8.19 / 7.46 / 15.87 us against 8.74 / 8.00 / 16.58.
  bool fold_last_layer = true;
  // Optional per-CTA timeline of the launch (benchmark and profiling only; nullptr in serving):
  // grid CTAs x kFusedTraceSlots values, see FusedTraceSlot. Thread 0 of each CTA writes its slots
  // as it passes each point; a slot it never passes keeps what the caller put there.
  uint64_t* trace = nullptr;
};

inline constexpr int kFusedMaxCluster = 8;  // CTAs per row block, at most (the portable cluster size)

// What one launch's trace holds per CTA (CTA i at trace + i * kFusedTraceSlots). kStartNs and kEndNs
// are %globaltimer readings (ns, comparable across SMs); kSm and kRank say where the CTA ran and
// which part of its row block it took; every other slot is SM clock cycles since the CTA's entry.
// Layer l's kFusedTraceEventsPerLayer events are at kLayer0 + kFusedTraceEventsPerLayer l + {0: its
// input activations have arrived from the other CTAs, 1: its first weight chunk is in shared memory
// (the cp.async wait and the CTA barrier passed), 2: the loads of the chunk after it are issued,
// 3: the first chunk's MMAs and promotion are done, 4: its last chunk's MMAs are done (and the
// partial sums sent, for a contributor), 5: the owner of a split tile has its contributors' partial
// sums (everyone else: as 4), 6: its tiles' epilogues are done}. Events 1-3 split one chunk's time
// into waiting, issuing the next loads and the MMAs; 5 splits a split tile's owner's wait from its
// epilogue.
enum FusedTraceSlot : int {
  kFusedTraceStartNs = 0,
  kFusedTraceEndNs = 1,
  kFusedTraceSm = 2,
  kFusedTraceRank = 3,
  kFusedTraceSetup = 4,       // mbarriers set up, the first input batch's and weight chunks' loads issued
  kFusedTraceQuantized = 5,   // this CTA's input groups quantized into shared memory
  kFusedTraceStarted = 6,     // the cluster's start barrier passed
  kFusedTraceExit = 7,        // the cluster's exit barrier passed
  kFusedTraceLayer0 = 8,
  kFusedTraceEventsPerLayer = 7,
  kFusedTraceSlots = kFusedTraceLayer0 + kFusedTraceEventsPerLayer * kFusedMaxLayers,
};

// How the launcher spreads one row block's work over a cluster of CTAs (FusedMlpArgs::cluster_size
// or its own choice), for every layer and cluster rank r. Exposed so that host tests check the
// byte accounting of the hand-overs between CTAs, which the kernel trusts: an mbarrier that waits
// for more bytes than are sent would never complete.
struct FusedRankWork {
  int tile = -1;         // first output tile of the layer that rank r works on; -1: no work in it
  int group_begin = 0;   // its K groups of that tile: [group_begin, group_end)
  int group_end = 0;
};
struct FusedLayerPlan {
  // CTAs sharing one tile's K groups. 1: rank r takes tiles r, r + cluster, ... whole and runs their
  // epilogues. P > 1 (fewer tiles than CTAs): tile j goes to ranks j P .. j P + P - 1; contributor
  // q = r % P takes a contiguous range of the K groups, q = 0 owns the tile (group_begin == 0), the
  // others send it their FP32 partial tile (block_m x 128 x 4 bytes each).
  int parts = 1;
  FusedRankWork work[kFusedMaxCluster];
  // Bytes that rank r's mbarriers of this layer receive: partial tiles from its contributors, and
  // the requantized output tiles (block_m x (128 + 4) bytes each) that other ranks own, when r works
  // in the next layer.
  uint32_t partial_bytes[kFusedMaxCluster] = {};
  uint32_t act_bytes[kFusedMaxCluster] = {};
  // Ranks (bit d: rank d) that rank r copies each output tile it owns to: every other rank that
  // works in the next layer (when the next layer is folded: that reads the tile). 0 for the last layer.
  uint32_t receivers[kFusedMaxCluster] = {};
  // Split layers (parts > 1): where contributor r sends its partial tile, the owner's rank and the
  // slot (0 .. parts - 2: the owner adds slot 0, 1, ... in that order); -1 for others.
  int partial_owner[kFusedMaxCluster];
  int partial_slot[kFusedMaxCluster];
  // FusedMlpArgs::fold_last_layer took this (last) layer: its K group j is worked by the owner of
  // tile j of the layer before.
  bool folded = false;
  FusedLayerPlan() {
    for (int r = 0; r < kFusedMaxCluster; ++r) partial_owner[r] = partial_slot[r] = -1;
  }
};
struct FusedPlan {
  int block_m = 0;       // rows per row block (one cluster each)
  int stages = 0;        // weight-chunk ring depth
  int cluster = 1;       // CTAs per row block
  FusedMma mma = FusedMma::kMmaSync;  // the MMA kind the kernel runs (never kAuto)
  long long row_blocks = 0;
  size_t smem_bytes = 0;  // dynamic shared memory per CTA
  FusedLayerPlan layers[kFusedMaxLayers];
  // The last layer in which rank r stores into another CTA's shared memory; -1: never.
  int last_send[kFusedMaxCluster] = {};
};

// The plan LaunchFusedMlp would run these arguments with (INVALID_ARGUMENT where it would refuse).
absl::StatusOr<FusedPlan> PlanFusedMlp(const FusedMlpArgs& args, const DeviceTraits& device);

// Whether the fused kernel takes this model on this device; when not, `why` says which limit (too
// many layers, a layer too wide, shared memory, compute capability).
bool FusedMlpSupported(const FusedMlpArgs& args, const DeviceTraits& device, std::string* why);

// Launches the fused forward on `stream` (asynchronous; capturable into a CUDA graph).
// INVALID_ARGUMENT when FusedMlpSupported says no or the arguments are inconsistent.
absl::Status LaunchFusedMlp(const FusedMlpArgs& args, const DeviceTraits& device, cudaStream_t stream);

}  // namespace fp8serve::cuda
