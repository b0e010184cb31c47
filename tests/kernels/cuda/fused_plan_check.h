// The fused kernel's cluster plan replayed against its protocol (no GPU needed), shared by
// fused_mlp_test and the gemm_plan_fuzz target. The kernel trusts the launcher's byte counts: an
// mbarrier that expects more bytes than are sent never completes (the launch traps), one that
// expects fewer completes early (a race). So a plan is checked against the protocol as fused_mlp.h
// documents it, computed independently of the launcher's own code: each (tile, K group) worked by
// exactly one rank, each tile owned by exactly one rank (the one the kernel sends partial sums to,
// tile x parts), each partial and each requantized tile sent to exactly the barriers that wait for
// it, and every rank's exit-barrier arrival after its last send.
#ifndef FP8SERVE_TESTS_KERNELS_CUDA_FUSED_PLAN_CHECK_H_
#define FP8SERVE_TESTS_KERNELS_CUDA_FUSED_PLAN_CHECK_H_

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/fused_mlp.h"

namespace fp8serve::cuda {

// One layer's checks: "" or the first violation. sent[r] is set for every rank that stores into
// another CTA in this layer.
inline std::string FusedLayerPlanProblem(const FusedMlpArgs& args, const FusedPlan& plan, int i,
                                         std::vector<bool>& sent) {
  const int cluster = plan.cluster, tiles = args.layers[i].n_pad / 128, groups = args.layers[i].k_pad / 128;
  const FusedLayerPlan& l = plan.layers[i];
  const FusedLayerPlan* next = i + 1 < args.num_layers ? &plan.layers[i + 1] : nullptr;
  const std::string at = absl::StrCat("layer ", i, " (", tiles, " tiles, ", groups, " groups, parts ", l.parts, ")");
  if (l.parts < 1) return absl::StrCat(at, ": parts below 1");
  std::vector<int> worked(static_cast<size_t>(tiles) * groups, 0), owner(tiles, -1);
  for (int r = 0; r < kFusedMaxCluster; ++r) {
    const FusedRankWork& w = l.work[r];
    if (w.tile < 0) continue;
    if (r >= cluster) return absl::StrCat(at, ": rank ", r, " is outside the cluster");
    if (w.tile >= tiles) return absl::StrCat(at, ": rank ", r, " works tile ", w.tile);
    if (!(0 <= w.group_begin && w.group_begin < w.group_end && w.group_end <= groups)) {
      return absl::StrCat(at, ": rank ", r, " works groups [", w.group_begin, ", ", w.group_end, ")");
    }
    // parts == 1: whole tiles tile, tile + cluster, ...; else one range of one tile
    for (int t = w.tile; t < tiles; t += (l.parts == 1 ? cluster : tiles)) {
      if (l.parts == 1 && !(w.group_begin == 0 && w.group_end == groups)) {
        return absl::StrCat(at, ": rank ", r, " works part of a whole tile");
      }
      for (int g = w.group_begin; g < w.group_end; ++g) ++worked[static_cast<size_t>(t) * groups + g];
      if (w.group_begin == 0) {
        if (owner[t] != -1) return absl::StrCat(at, ": tile ", t, " has two owners");
        owner[t] = r;
      }
    }
  }
  for (int t = 0; t < tiles; ++t) {
    if (owner[t] < 0) return absl::StrCat(at, ": tile ", t, " has no owner");
    for (int g = 0; g < groups; ++g) {
      const int n = worked[static_cast<size_t>(t) * groups + g];
      if (n != 1) return absl::StrCat(at, ": tile ", t, " group ", g, " is worked ", n, " times");
    }
  }
  if (l.folded) {
    // A folded layer: K group j is worked where tile j of the layer before is owned
    if (i != args.num_layers - 1 || i == 0) return absl::StrCat(at, ": only the last layer (after another) folds");
    const FusedLayerPlan& prev = plan.layers[i - 1];
    for (int r = 0; r < cluster; ++r) {
      const FusedRankWork& w = l.work[r];
      if (w.tile < 0) continue;
      if (w.group_end - w.group_begin != 1) return absl::StrCat(at, ": rank ", r, " works more than one K group");
      const FusedRankWork& pw = prev.work[r];
      const bool owns_prev = pw.tile >= 0 && pw.group_begin == 0 &&
                             (prev.parts > 1 ? pw.tile == w.group_begin
                                             : w.group_begin >= pw.tile && (w.group_begin - pw.tile) % cluster == 0);
      if (!owns_prev) {
        return absl::StrCat(at, ": rank ", r, " works K group ", w.group_begin,
                            " but does not own that tile of the layer before");
      }
    }
  }

  // What arrives where, from the senders' side
  const uint64_t slot_bytes = static_cast<uint64_t>(plan.block_m) * 128 * 4;
  const uint64_t tile_bytes = static_cast<uint64_t>(plan.block_m) * (128 + 4);
  std::vector<uint64_t> partial_in(kFusedMaxCluster, 0), act_in(kFusedMaxCluster, 0);
  std::vector<uint32_t> expect_receivers(kFusedMaxCluster, 0);
  std::vector<std::vector<int>> slots_of(tiles);  // each tile's contributors' slots, by K order
  for (int r = 0; r < cluster; ++r) {
    const FusedRankWork& w = l.work[r];
    if (w.tile < 0 || w.group_begin == 0) {
      if (l.partial_owner[r] != -1) return absl::StrCat(at, ": rank ", r, " sends a partial it does not have");
      continue;
    }
    // A contributor: one slot into its tile's owner
    const int o = owner[w.tile];
    if (l.partial_owner[r] != o) {
      return absl::StrCat(at, ": contributor ", r, " sends to ", l.partial_owner[r], ", not ", o);
    }
    if (!(l.partial_slot[r] >= 0 && l.partial_slot[r] < l.parts - 1)) {
      return absl::StrCat(at, ": contributor ", r, " has slot ", l.partial_slot[r]);
    }
    partial_in[o] += slot_bytes;
    sent[r] = true;
    slots_of[w.tile].push_back(r);
  }
  for (int t = 0; t < tiles; ++t) {
    // Slots 0, 1, ... hold the contributors in K order (the owner adds them in slot order)
    std::vector<int>& c = slots_of[t];
    std::sort(c.begin(), c.end(), [&](int a, int b) { return l.work[a].group_begin < l.work[b].group_begin; });
    for (size_t q = 0; q < c.size(); ++q) {
      if (l.partial_slot[c[q]] != static_cast<int>(q)) {
        return absl::StrCat(at, ": tile ", t, "'s slots are not in K order");
      }
    }
  }
  if (next != nullptr) {
    // Who reads K group t of the next layer (tile t of this one): every rank with whole tiles there,
    // else the ranks whose K range holds it
    const auto reads = [&](int d, int t) {
      const FusedRankWork& w = next->work[d];
      return w.tile >= 0 && (next->parts == 1 || (t >= w.group_begin && t < w.group_end));
    };
    for (int t = 0; t < tiles; ++t) {
      for (int d = 0; d < cluster; ++d) {
        // Not folded: every rank working there gets every tile it does not own (the order argument
        // for reusing activation buffers needs it); folded: only the tile's readers
        const bool gets = next->folded ? reads(d, t) : next->work[d].tile >= 0;
        if (d == owner[t] || !gets) continue;
        act_in[d] += tile_bytes;
        expect_receivers[owner[t]] |= 1u << d;
      }
      for (int d = 0; d < cluster; ++d) {
        if (reads(d, t) && !(d == owner[t] || (expect_receivers[owner[t]] >> d & 1u))) {
          return absl::StrCat(at, ": rank ", d, " reads tile ", t, " but never gets it");
        }
      }
    }
    if (next->folded) {
      // The point of folding: no activation copies at all
      for (int r = 0; r < cluster; ++r) {
        if (expect_receivers[r] != 0) return absl::StrCat(at, ": rank ", r, " copies activations to a folded layer");
      }
    }
  }
  for (int r = 0; r < kFusedMaxCluster; ++r) {
    if (l.partial_bytes[r] != partial_in[r]) {
      return absl::StrCat(at, ": rank ", r, "'s partial barrier waits for ", l.partial_bytes[r], " bytes, ",
                          partial_in[r], " are sent");
    }
    if (l.act_bytes[r] != act_in[r]) {
      return absl::StrCat(at, ": rank ", r, "'s activation barrier waits for ", l.act_bytes[r], " bytes, ", act_in[r],
                          " are sent");
    }
    if (l.receivers[r] != expect_receivers[r]) {
      return absl::StrCat(at, ": rank ", r, "'s receivers are ", l.receivers[r], ", not ", expect_receivers[r]);
    }
    if (expect_receivers[r] != 0) sent[r] = true;
  }
  return "";
}

// The whole plan: "" or the first violation.
inline std::string FusedPlanProblem(const FusedMlpArgs& args, const FusedPlan& plan, const DeviceTraits& device) {
  if (!(plan.cluster == 1 || plan.cluster == 2 || plan.cluster == 4 || plan.cluster == 8)) {
    return absl::StrCat("cluster size ", plan.cluster);
  }
  if (!(plan.block_m == 16 || plan.block_m == 32 || plan.block_m == 64)) return absl::StrCat("block_m ", plan.block_m);
  if (plan.row_blocks != (static_cast<long long>(args.m) + plan.block_m - 1) / plan.block_m) {
    return "the row blocks do not cover the rows";
  }
  if (plan.smem_bytes == 0 || plan.smem_bytes > static_cast<size_t>(device.smem_per_block_optin)) {
    return absl::StrCat(plan.smem_bytes, " bytes of shared memory on a device with ", device.smem_per_block_optin);
  }
  if (args.cluster_size != 0 && plan.cluster != args.cluster_size) {
    return absl::StrCat("cluster ", plan.cluster, " where ", args.cluster_size, " was asked for");
  }
  if (args.cluster_size == 0 && plan.cluster > 1 && plan.row_blocks * plan.cluster > device.num_sms) {
    return "an automatic cluster size beyond one CTA per SM";
  }
  int last_send[kFusedMaxCluster];
  std::fill(std::begin(last_send), std::end(last_send), -1);
  for (int i = 0; i < args.num_layers; ++i) {
    std::vector<bool> sent(kFusedMaxCluster, false);
    if (std::string why = FusedLayerPlanProblem(args, plan, i, sent); !why.empty()) return why;
    for (int r = 0; r < kFusedMaxCluster; ++r) {
      if (sent[r]) last_send[r] = i;
    }
  }
  for (int r = 0; r < kFusedMaxCluster; ++r) {
    if (plan.last_send[r] != last_send[r]) {
      return absl::StrCat("rank ", r, " arrives on the exit barrier after layer ", plan.last_send[r],
                          ", its last send is in layer ", last_send[r]);
    }
  }
  if (plan.cluster == 1) {
    for (int i = 0; i < args.num_layers; ++i) {
      if (plan.layers[i].parts != 1) return absl::StrCat("layer ", i, " is split without a cluster");
    }
  }
  return "";
}

}  // namespace fp8serve::cuda

#endif  // FP8SERVE_TESTS_KERNELS_CUDA_FUSED_PLAN_CHECK_H_
