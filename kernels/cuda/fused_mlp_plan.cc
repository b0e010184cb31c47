// The fused MLP kernel's host side (plain C++, no CUDA call): argument checks, the shared memory
// layout, the choice of row block and cluster size, the cluster plan and the kernel parameters.
// fused_mlp.cu launches what PrepareFusedLaunch returns.
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/fused_mlp.h"
#include "kernels/cuda/fused_mlp_params.h"

namespace fp8serve::cuda {

namespace {

constexpr int kFallbackInstance = kFusedNumInstances - 1;

int RoundUp(int v, int to) { return (v + to - 1) / to * to; }

bool Aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Offsets of the shared-memory regions (see fused_mlp.cuh) for one instance and model.
struct FusedSmemLayout {
  uint32_t act_offset[2] = {0, 0};
  uint32_t scale_offset[2] = {0, 0};
  uint32_t red_offset = 0;
  uint32_t slot_offset[kFusedMaxLayers] = {};
  uint32_t bar_offset = 0;
  size_t bytes = 0;
};

// CTAs of a `cluster` that share one tile of layer l (FusedLayerParams::parts): 1 when the layer
// has at least as many tiles as the cluster has CTAs (whole tiles round-robin) or at most two K
// groups per tile, else as many as the cluster holds per tile, at most one per K group.
// NOTES: splitting a tile costs its owner a wait for the contributors' partial tiles (a round trip
// through distributed shared memory, more than one chunk's MMAs); with two K groups it would save
// one chunk, so a small last layer (e.g. 256 -> 10) stays whole in one CTA.
int LayerParts(const FusedMlpLayer& l, int cluster) {
  const int tiles = l.n_pad / kFusedTileN, groups = l.k_pad / kFusedTileK;
  if (tiles >= cluster || groups <= 2) return 1;
  return std::min(cluster / tiles, groups);
}

// Whether FusedMlpArgs::fold_last_layer applies with this cluster: the last layer has one output tile
// and at least two K groups, and the layer before at most one tile per CTA (so each of its tiles,
// the last layer's K groups, has its own owner).
bool FoldApplies(const FusedMlpArgs& a, int cluster) {
  if (!a.fold_last_layer || cluster < 2 || a.num_layers < 2) return false;
  const FusedMlpLayer& last = a.layers[a.num_layers - 1];
  const int groups = last.k_pad / kFusedTileK;
  return last.n_pad / kFusedTileN == 1 && groups >= 2 && groups <= cluster;
}

// FusedLayerPlan::parts of layer l: a folded last layer has one CTA per K group.
int PlannedParts(const FusedMlpArgs& a, int l, int cluster) {
  if (cluster < 2) return 1;
  if (l == a.num_layers - 1 && FoldApplies(a, cluster)) return a.layers[l].k_pad / kFusedTileK;
  return LayerParts(a.layers[l], cluster);
}

// Rank r's work in layer l with `parts` in a cluster of `cluster` CTAs (FusedLayerPlan::work): tiles
// r, r + cluster, ... whole (parts 1; the plan names the first), or contributor q = r % parts of
// tile r / parts, K groups [q * G / parts, (q + 1) * G / parts); no work past the tiles.
FusedRankWork RankWork(const FusedMlpLayer& l, int parts, int cluster, int r) {
  const int tiles = l.n_pad / kFusedTileN, groups = l.k_pad / kFusedTileK;
  FusedRankWork w;
  if (r >= cluster) return w;
  if (parts == 1) {
    if (r < tiles) w = FusedRankWork{r, 0, groups};
    return w;
  }
  const int q = r % parts, tile = r / parts;
  if (tile < tiles) w = FusedRankWork{tile, q * groups / parts, (q + 1) * groups / parts};
  return w;
}

// Output tiles of a layer whose epilogue rank r runs (split tiles: the contributor with group 0).
int OwnedTiles(const FusedLayerPlan& l, int tiles, int cluster, int r) {
  const FusedRankWork& w = l.work[r];
  if (w.tile < 0 || w.group_begin != 0) return 0;
  if (l.parts > 1) return 1;
  return (tiles - w.tile + cluster - 1) / cluster;
}

// The rank that owns (runs the epilogue of) `tile` of a planned layer; -1 if none.
int TileOwner(const FusedLayerPlan& l, int cluster, int tile) {
  for (int r = 0; r < cluster; ++r) {
    const FusedRankWork& w = l.work[r];
    if (w.tile < 0 || w.group_begin != 0) continue;
    if (l.parts > 1 ? w.tile == tile : (tile >= w.tile && (tile - w.tile) % cluster == 0)) return r;
  }
  return -1;
}

// Whether rank r reads K group `group` of a planned layer (all of them with whole tiles).
bool ReadsGroup(const FusedLayerPlan& l, int r, int group) {
  const FusedRankWork& w = l.work[r];
  if (w.tile < 0) return false;
  return l.parts == 1 || (group >= w.group_begin && group < w.group_end);
}

// Packs the plan's work of every rank into FusedLayerParams::rank_work (tile 0xff: none).
void PackRankWork(const FusedLayerPlan& l, uint32_t (&packed)[kFusedMaxCluster]) {
  for (int r = 0; r < kFusedMaxCluster; ++r) {
    const FusedRankWork& w = l.work[r];
    const uint32_t tile = w.tile < 0 ? 0xffu : static_cast<uint32_t>(w.tile);
    packed[r] = tile | (static_cast<uint32_t>(w.group_begin) << 8) | (static_cast<uint32_t>(w.group_end) << 16);
  }
}

// wgmma: kFusedSmemAlign bytes more, for the kernel's hand alignment of the base.
FusedSmemLayout ComputeSmemLayout(const FusedMlpArgs& a, const FusedInstance& inst, int cluster, bool wgmma) {
  // Layer l reads act[l % 2]; a hidden layer writes its output (the next layer's input) to the other.
  int width[2] = {0, 0};
  for (int l = 0; l < a.num_layers; ++l) width[l & 1] = std::max(width[l & 1], a.layers[l].k_pad);
  FusedSmemLayout s;
  size_t off = static_cast<size_t>(inst.stages) * kFusedStageBytes;
  for (int b = 0; b < 2; ++b) {
    s.act_offset[b] = static_cast<uint32_t>(off);
    off += static_cast<size_t>(inst.block_m) * width[b];
  }
  for (int b = 0; b < 2; ++b) {
    s.scale_offset[b] = static_cast<uint32_t>(off);
    off += static_cast<size_t>(RoundUp(inst.block_m * (width[b] / kFusedTileK) * 4, 128));
  }
  s.red_offset = static_cast<uint32_t>(off);
  off += static_cast<size_t>(RoundUp(FusedWarpsN(inst.block_m) * inst.block_m * 4, 128));
  // Every split layer has its own partial-tile slots, one per contributor beyond the owner.
  // NOTES: nothing orders an owner's reads of one layer's slots before a later layer's contributors
  // store into them except a long chain of barriers; separate slots need no argument.
  for (int l = 0; l < a.num_layers; ++l) {
    const int parts = PlannedParts(a, l, cluster);
    if (parts == 1) continue;
    s.slot_offset[l] = static_cast<uint32_t>(off);
    off += static_cast<size_t>(parts - 1) * inst.block_m * kFusedTileN * 4;
  }
  s.bar_offset = static_cast<uint32_t>(off);  // a multiple of 128: every region above is
  off += kFusedBarrierBytes;
  s.bytes = off + (wgmma ? kFusedSmemAlign : 0);
  return s;
}

// The model-and-device checks (no x, y or m): the first reason found, or empty.
std::string UnsupportedReason(const FusedMlpArgs& a, const DeviceTraits& device) {
  if (device.cc_major < 8 || (device.cc_major == 8 && device.cc_minor < 9)) {
    return absl::StrCat("compute capability ", device.cc_major, ".", device.cc_minor,
                        " has no FP8 tensor cores (needs 8.9 or newer)");
  }
  if (std::string why = DeviceTraitsProblem(device); !why.empty()) return why;
  if (a.num_layers < 1 || a.num_layers > kFusedMaxLayers) {
    return absl::StrCat(a.num_layers, " layers (the fused kernel takes 1 to ", kFusedMaxLayers, ")");
  }
  for (int i = 0; i < a.num_layers; ++i) {
    const FusedMlpLayer& l = a.layers[i];
    const std::string at = absl::StrCat("layer ", i, ": ");
    if (l.n < 1 || l.k < 1) return absl::StrCat(at, "shape [", l.n, ", ", l.k, "]");
    // (the width first: it also keeps the rounding up below inside int, which gemm_plan_fuzz found
    // overflowing for a width near 2^31)
    if (l.n > kFusedMaxWidth || l.k > kFusedMaxWidth) {
      return absl::StrCat(at, "shape [", l.n, ", ", l.k, "] is wider than the fused kernel's ", kFusedMaxWidth);
    }
    if (l.n_pad != RoundUp(l.n, kGemmBlockK) || l.k_pad != RoundUp(l.k, kGemmBlockK)) {
      return absl::StrCat(at, "padded shape [", l.n_pad, ", ", l.k_pad, "] is not [", l.n, ", ", l.k,
                          "] rounded up to multiples of ", kGemmBlockK);
    }
    if (i > 0 && l.k != a.layers[i - 1].n) {
      return absl::StrCat(at, "takes ", l.k, " inputs but layer ", i - 1, " gives ", a.layers[i - 1].n);
    }
    if (l.w_format != Fp8Format::kE4M3 && l.w_format != Fp8Format::kE5M2) return absl::StrCat(at, "unknown FP8 format");
    if (l.w == nullptr || l.b_scales == nullptr) return absl::StrCat(at, "no weights or no block scales");
    // NOTES: the kernel copies weights, column scales and bias with 16-byte cp.async.
    if (!Aligned(l.w, 16) || !Aligned(l.col_scales, 16) || !Aligned(l.bias, 16) || !Aligned(l.b_scales, 4)) {
      return absl::StrCat(at, "weights, column scales and bias must be 16-byte aligned, block scales 4-byte");
    }
  }
  const FusedSmemLayout smem = ComputeSmemLayout(a, kFusedInstances[kFallbackInstance], 1, false);
  if (smem.bytes > static_cast<size_t>(device.smem_per_block_optin)) {
    return absl::StrCat("needs ", smem.bytes, " bytes of shared memory per block, the device allows ",
                        device.smem_per_block_optin);
  }
  return "";
}

// The instance for m rows: the largest row block that still gives about one CTA per SM (large
// blocks read the weights from L2 fewer times and feed the tensor cores better; small blocks spread
// small batches over more SMs, since a CTA's weight stream is bound by its SM's L2 bandwidth),
// among those whose shared memory fits the device.
// A forced FusedMlpArgs::block_m takes its instance (or the fallback for 16), or -1 when its shared
// memory does not fit.
int SelectInstance(const FusedMlpArgs& a, const DeviceTraits& device, bool wgmma) {
  const auto fits = [&](int i) {
    return ComputeSmemLayout(a, kFusedInstances[i], 1, wgmma).bytes <= static_cast<size_t>(device.smem_per_block_optin);
  };
  if (a.block_m != 0) {
    for (int i = 0; i < kFusedNumInstances; ++i) {
      if (kFusedInstances[i].block_m == a.block_m && fits(i)) return i;
    }
    return -1;
  }
  const long long target_ctas = std::max(1, device.num_sms * 3 / 4);
  int preferred = 0;  // BLOCK_M 16
  if ((static_cast<long long>(a.m) + 63) / 64 >= target_ctas) {
    preferred = 2;
  } else if ((static_cast<long long>(a.m) + 31) / 32 >= target_ctas) {
    preferred = 1;
  }
  for (int i = preferred; i >= 0; --i) {
    if (ComputeSmemLayout(a, kFusedInstances[i], 1, wgmma).bytes <= static_cast<size_t>(device.smem_per_block_optin)) {
      return i;
    }
  }
  return kFallbackInstance;
}

bool ClustersAvailable(const DeviceTraits& device) { return device.cc_major == 9 && device.cc_minor == 0; }

// The cluster size for `row_blocks` row blocks of instance `inst`: the largest of 8, 4, 2 that
// keeps every CTA on its own SM (row_blocks * C <= SMs), gives every CTA work in the model's widest
// layer (C <= its tiles x K groups), and whose partial-sum slots fit in shared memory; else 1.
// NOTES: a small batch has few row blocks, and a CTA walks its row block's chunks one after another
// (about 3,000 cycles each, a chain of dependent instructions); C CTAs per row block cut that chain
// to about 1/C of the chunks, plus a round trip through distributed shared memory per layer. 8 is
// the portable cluster size limit. Off compute capability 9.0 there are no clusters in this build: 1.
int SelectClusterSize(const FusedMlpArgs& a, const DeviceTraits& device, const FusedInstance& inst,
                      long long row_blocks, bool wgmma) {
  if (!ClustersAvailable(device)) return 1;
  int widest = 0;
  for (int l = 0; l < a.num_layers; ++l) {
    widest = std::max(widest, (a.layers[l].n_pad / kFusedTileN) * (a.layers[l].k_pad / kFusedTileK));
  }
  for (int c : {8, 4, 2}) {
    if (row_blocks * c <= device.num_sms && c <= widest &&
        ComputeSmemLayout(a, inst, c, wgmma).bytes <= static_cast<size_t>(device.smem_per_block_optin)) {
      return c;
    }
  }
  return 1;
}

}  // namespace


const char* FusedMmaName(FusedMma m) {
  switch (m) {
    case FusedMma::kAuto: return "auto";
    case FusedMma::kMmaSync: return "mma_sync";
    case FusedMma::kWgmma: return "wgmma";
    case FusedMma::kMmaSyncF16: return "mma_sync_f16";
  }
  return "unknown";
}

bool FusedMlpSupported(const FusedMlpArgs& args, const DeviceTraits& device, std::string* why) {
  std::string reason = UnsupportedReason(args, device);
  const bool ok = reason.empty();
  if (why != nullptr) *why = std::move(reason);
  return ok;
}

absl::StatusOr<FusedPlan> PlanFusedMlp(const FusedMlpArgs& args, const DeviceTraits& device) {
  if (std::string why = UnsupportedReason(args, device); !why.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("fused MLP: ", why));
  }
  if (args.m < 0) return absl::InvalidArgumentError(absl::StrCat("fused MLP: ", args.m, " rows"));
  if (args.cluster_size != 0 && args.cluster_size != 1 && args.cluster_size != 2 && args.cluster_size != 4 &&
      args.cluster_size != 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("fused MLP: cluster size ", args.cluster_size, " (0 for automatic, or 1, 2, 4, 8)"));
  }
  if (args.cluster_size > 1 && !ClustersAvailable(device)) {
    return absl::InvalidArgumentError(absl::StrCat("fused MLP: cluster size ", args.cluster_size,
                                                   " needs compute capability 9.0, the device has ", device.cc_major,
                                                   ".", device.cc_minor));
  }
  if (args.mma != FusedMma::kAuto && args.mma != FusedMma::kMmaSync && args.mma != FusedMma::kWgmma &&
      args.mma != FusedMma::kMmaSyncF16) {
    return absl::InvalidArgumentError("fused MLP: unknown MMA kind");
  }
  if (args.block_m != 0 && args.block_m != 16 && args.block_m != 32 && args.block_m != 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("fused MLP: row block ", args.block_m, " (0 for automatic, or 16, 32, 64)"));
  }
  // NOTES: kAuto is mma.sync until wgmma has been measured against it on a GPU.
  const bool wgmma = args.mma == FusedMma::kWgmma;
  const bool widen = args.mma == FusedMma::kMmaSyncF16;
  if ((wgmma || widen) && !ClustersAvailable(device)) {
    return absl::InvalidArgumentError(absl::StrCat("fused MLP: ", FusedMmaName(args.mma),
                                                   " needs compute capability 9.0, the device has ", device.cc_major,
                                                   ".", device.cc_minor));
  }
  const int which = SelectInstance(args, device, wgmma);
  if (which < 0) {
    return absl::InvalidArgumentError(absl::StrCat("fused MLP: row block ", args.block_m,
                                                   ": its shared memory does not fit the device's ",
                                                   device.smem_per_block_optin, " bytes"));
  }
  const FusedInstance& inst = kFusedInstances[which];
  FusedPlan plan;
  plan.block_m = inst.block_m;
  plan.stages = inst.stages;
  plan.mma = wgmma ? FusedMma::kWgmma : widen ? FusedMma::kMmaSyncF16 : FusedMma::kMmaSync;
  plan.row_blocks = (static_cast<long long>(args.m) + inst.block_m - 1) / inst.block_m;
  const int cluster = args.cluster_size != 0
                          ? args.cluster_size
                          : SelectClusterSize(args, device, inst, std::max(1LL, plan.row_blocks), wgmma);
  plan.cluster = cluster;
  plan.smem_bytes = ComputeSmemLayout(args, inst, cluster, wgmma).bytes;
  if (plan.smem_bytes > static_cast<size_t>(device.smem_per_block_optin)) {
    return absl::InvalidArgumentError(absl::StrCat("fused MLP: cluster size ", cluster, " needs ", plan.smem_bytes,
                                                   " bytes of shared memory per block, the device allows ",
                                                   device.smem_per_block_optin));
  }

  // Who works where
  const int num_layers = args.num_layers;
  for (int i = 0; i < num_layers; ++i) {
    FusedLayerPlan& l = plan.layers[i];
    l.parts = PlannedParts(args, i, cluster);
    l.folded = i == num_layers - 1 && FoldApplies(args, cluster);
    if (l.folded) {
      // K group j goes to the owner of tile j of the layer before, where that tile already is
      for (int j = 0; j < l.parts; ++j) {
        const int r = TileOwner(plan.layers[i - 1], cluster, j);
        l.work[r] = FusedRankWork{0, j, j + 1};
      }
    } else {
      for (int r = 0; r < kFusedMaxCluster; ++r) l.work[r] = RankWork(args.layers[i], l.parts, cluster, r);
    }
    // Contributors of a split tile: the owner, and a slot each in K order (the owner adds slot 0, 1,
    // ... after its own groups, so the partial sums are added in K order)
    if (l.parts > 1) {
      for (int r = 0; r < cluster; ++r) {
        const FusedRankWork& w = l.work[r];
        if (w.tile < 0 || w.group_begin == 0) continue;
        l.partial_owner[r] = TileOwner(l, cluster, w.tile);
        int slot = 0;
        for (int q = 0; q < cluster; ++q) {
          const FusedRankWork& o = l.work[q];
          if (o.tile == w.tile && o.group_begin != 0 && o.group_begin < w.group_begin) ++slot;
        }
        l.partial_slot[r] = slot;
      }
    }
  }
  // What each rank sends and receives: every byte a barrier waits for is sent to it exactly once
  std::fill(std::begin(plan.last_send), std::end(plan.last_send), -1);
  if (cluster == 1) return plan;
  const uint32_t slot_bytes = static_cast<uint32_t>(inst.block_m * kFusedTileN * 4);
  const uint32_t tile_bytes = static_cast<uint32_t>(inst.block_m * (kFusedTileN + 4));
  for (int i = 0; i < num_layers; ++i) {
    FusedLayerPlan& l = plan.layers[i];
    const int tiles = args.layers[i].n_pad / kFusedTileN;
    const FusedLayerPlan* next = i + 1 < num_layers ? &plan.layers[i + 1] : nullptr;
    for (int r = 0; r < cluster; ++r) {
      const int owned = OwnedTiles(l, tiles, cluster, r);
      // A split tile's owner receives one partial tile from each other contributor
      if (l.parts > 1 && owned > 0) l.partial_bytes[r] = static_cast<uint32_t>(l.parts - 1) * slot_bytes;
      if (next != nullptr && !next->folded) {
        // A rank that works in the next layer receives every output tile it does not own
        // NOTES: every tile, even where it reads only some K groups: a CTA's copies into another's
        // activation buffer are safe because the sender has then seen all of the layer before done,
        // every reader of that buffer's previous contents included (fused_mlp.cuh).
        if (next->work[r].tile >= 0) l.act_bytes[r] = static_cast<uint32_t>(tiles - owned) * tile_bytes;
        // An owner copies its tiles to every other rank that works in the next layer
        if (owned > 0) {
          for (int d = 0; d < cluster; ++d) {
            if (d != r && next->work[d].tile >= 0) l.receivers[r] |= 1u << d;
          }
        }
      } else if (next != nullptr) {
        // The next layer is folded: a tile goes only to other ranks that read its K group (none, as
        // each K group is read by the tile's owner), and nobody writes into another's activations
        for (int j = 0; j < tiles; ++j) {
          const int o = TileOwner(l, cluster, j);
          if (o == r || !ReadsGroup(*next, r, j)) continue;
          l.act_bytes[r] += tile_bytes;
          l.receivers[o] |= 1u << r;
        }
      }
    }
    for (int r = 0; r < cluster; ++r) {
      const bool contributor = l.work[r].tile >= 0 && l.work[r].group_begin != 0;
      if (contributor || l.receivers[r] != 0) plan.last_send[r] = i;
    }
  }
  return plan;
}

absl::StatusOr<FusedLaunch> PrepareFusedLaunch(const FusedMlpArgs& args, const DeviceTraits& device) {
  absl::StatusOr<FusedPlan> plan = PlanFusedMlp(args, device);
  if (!plan.ok()) return plan.status();
  if (args.m > 0 && (args.x == nullptr || args.y == nullptr)) {
    return absl::InvalidArgumentError("fused MLP: null input or output");
  }

  FusedMlpParams p;
  p.num_layers = args.num_layers;
  p.m = args.m;
  p.k_in = args.layers[0].k;
  p.relu = args.relu ? 1 : 0;
  p.x = args.x;
  p.y = args.y;
  p.x_vec4 = (p.k_in % 4 == 0 && Aligned(args.x, 16)) ? 1 : 0;
  p.trace = args.trace;
  int which = -1;
  for (int i = 0; i < kFusedNumInstances && which < 0; ++i) {
    if (kFusedInstances[i].block_m == plan->block_m && kFusedInstances[i].stages == plan->stages) which = i;
  }
  const FusedInstance& inst = kFusedInstances[which];
  const FusedSmemLayout smem = ComputeSmemLayout(args, inst, plan->cluster, plan->mma == FusedMma::kWgmma);
  for (int i = 0; i < args.num_layers; ++i) {
    const FusedMlpLayer& l = args.layers[i];
    const FusedLayerPlan& lp = plan->layers[i];
    FusedLayerParams& d = p.layers[i];
    d.w = l.w;
    d.b_scales = l.b_scales;
    d.col_scales = l.col_scales;
    d.bias = l.bias;
    d.n = l.n;
    d.k = l.k;
    d.k_pad = l.k_pad;
    d.groups = l.k_pad / kFusedTileK;
    d.tiles = l.n_pad / kFusedTileN;
    d.e5m2 = l.w_format == Fp8Format::kE5M2 ? 1 : 0;
    d.parts = lp.parts;
    d.slot_offset = smem.slot_offset[i];
    PackRankWork(lp, d.rank_work);
    for (int r = 0; r < kFusedMaxCluster; ++r) {
      d.partial_owner[r] = static_cast<int8_t>(lp.partial_owner[r]);
      d.partial_slot[r] = static_cast<int8_t>(lp.partial_slot[r]);
    }
    std::copy(std::begin(lp.partial_bytes), std::end(lp.partial_bytes), d.partial_bytes);
    std::copy(std::begin(lp.act_bytes), std::end(lp.act_bytes), d.act_bytes);
    std::copy(std::begin(lp.receivers), std::end(lp.receivers), d.receivers);
  }
  std::copy(std::begin(plan->last_send), std::end(plan->last_send), p.last_send);
  p.cluster_size = plan->cluster;
  for (int b = 0; b < 2; ++b) {
    p.act_offset[b] = smem.act_offset[b];
    p.scale_offset[b] = smem.scale_offset[b];
  }
  p.red_offset = smem.red_offset;
  p.bar_offset = smem.bar_offset;

  FusedLaunch launch;
  launch.plan = *plan;
  launch.params = p;
  launch.instance = which;
  return launch;
}

}  // namespace fp8serve::cuda
