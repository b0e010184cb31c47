// Device code of the fused MLP: the whole forward of a small FP8 MLP in one launch (host API in
// fused_mlp.h, launcher in fused_mlp.cu). Works on sm_89 and sm_90: cp.async + ldmatrix + mma.sync;
// on sm_90 a row block can be shared by a thread-block cluster (below), and the MMAs can be wgmma
// instead (kWgmma): the two warpgroups each multiply the row block (A, from the same ldmatrix
// fragments, in registers) by 64 of the tile's weight rows (B, the stage itself, through a
// 128-byte-swizzle descriptor), with the same accumulator layout, so everything else is shared.
// NOTES: on sm_90 ptxas widens FP8 mma.sync to FP16 (two HMMA.16816 and a dozen unpacks per
// m16n8k32); wgmma is Hopper's native FP8 instruction.
//
// A row block of BLOCK_M rows is owned by a cluster of C CTAs (C = 1, 2, 4 or 8; C = 1 is a plain
// launch, the only one on sm_89):
//   1. each CTA quantizes the K groups of its FP32 input rows that its layer-0 work reads to E4M3
//      with 1x128 scales, straight into shared memory;
//   2. every layer's work units are its (128-column output tile, 128-K group) chunks, dealt out to
//      the C CTAs by rank r (FusedLayerParams::parts, chosen by the launcher):
//        parts == 1 (tiles >= C, or at most two K groups): CTA r owns tiles r, r + C, ... whole;
//        parts == P > 1 (tiles < C): tile j goes to the P CTAs j * P .. j * P + P - 1, contributor
//          q = r % P takes K groups [q * G / P, (q + 1) * G / P), and q = 0 owns the tile;
//        a folded last layer (FusedMlpArgs::fold_last_layer; one output tile, G <= C groups): K
//          group j goes to the owner of tile j of the layer before, which holds that input already,
//          and the owner of group 0 owns the tile;
//      for each of its chunks a CTA streams the weight chunk W[tile rows, group] (16 KB) through a
//      kNumStages-deep cp.async ring, and the eight warps (kWarpsM x kWarpsN, each owning WARP_M
//      rows x WARP_N columns of the tile) run 4 x m16n8k32 MMAs into a fresh accumulator and
//      promote it in FP32:  acc += (a_scale[row, group] * b_scale[tile, group]) * P_group;
//   3. a split tile's other contributors store their FP32 partial sums into a slot of the owner's
//      shared memory (distributed shared memory, st.async counted in bytes on the owner's partial
//      mbarrier of the layer; owner and slot from the plan, slots in K order); only the owner waits
//      for them. It adds the slots to its own partial in slot order,
//      acc = ((P_0 + P_1) + P_2) + ..., a fixed order, so the result is the
//      same bits on every run. The only difference to a single CTA is FP32 summation order across
//      K groups, which the numeric contract allows;
//   4. the tile's owner runs the epilogue: v = acc * col_scale + bias; hidden layers apply ReLU and
//      requantize the tile (one 1x128 output group per row, so the amax stays inside the CTA) into
//      the other activation buffer, then copy the tile's codes and scales into that buffer of every
//      CTA that works in the next layer (st.async counted on the receiver's activation mbarrier of
//      the layer; none when the next layer is folded); a CTA waits for it before its first chunk of
//      the next layer. The last layer's owners write FP32 logits to global memory.
// A CTA's own chunk sequence (layer, tile, group) is flat, so the ring prefetches the next tile's and
// the next layer's weights while the current tile's epilogue and the waits for other CTAs run. Only
// bytes that can be nonzero are streamed: weight rows up to round_up(n, 16) of a tile and K columns up to
// round_up(k, 32) of a group (a 10-wide last layer loads 16 rows, not 128; a 784-wide input's last
// group 32 columns). With C = 1 every tile is whole in one CTA, and the kernel is exactly the
// one-CTA-per-row-block forward: each output element computed by one thread in a fixed order.
//
// Synchronization in a cluster (every decision behind it is uniform over the CTA; who works where,
// who sends what to whom and how many bytes each barrier waits for all come from the launcher's
// FusedPlan, whose sums the host tests check against the senders' side for every shape):
//   start barrier (barrier.cluster): arrive after thread 0 has initialized the CTA's mbarriers and
//          announced the bytes each will receive, wait after the input quantization: every CTA of
//          the cluster is running with its barriers set up before anyone stores into it;
//   mbarriers, one per layer and kind, each completing once (phase 0): partial(l) in the owner of
//          a split tile, (parts - 1) slots of bytes; activation(l) in each CTA that works in layer
//          l + 1, BLOCK_M x (128 + 4) bytes per tile of layer l that another CTA owns. st.async's
//          complete-tx is a release at cluster scope and the waits acquire at cluster scope, so a
//          wait makes the data visible, and orders everything the sender did before (its reads of
//          its own input included) before what the waiter does after;
//   exit barrier (barrier.cluster): arrive once the CTA has issued its last store into another CTA,
//          wait before exiting. Every byte sent to a CTA is also awaited by it (a CTA only receives
//          what it consumes), so this is a second line: no CTA leaves while a peer may still store.
// Partial slots are separate per split layer, so no slot is ever written twice. An activation buffer
// is written (layer l's output) only by CTAs that have waited for all of layer l - 1's output, which
// was sent after every reader of that buffer (layer l - 1's input) was done with it.
//
// NOTES: the weight format (E4M3 / E5M2) is a per-layer runtime property. The MMA loop is a
// template on it and the kernel branches once per chunk on the layer's flag (warp-uniform, free),
// so one kernel serves every mix of formats instead of 2^layers instances.
//
// Shared memory (byte offsets computed by the launcher, FusedSmemLayout):
//   [stage 0 .. kNumStages-1]  each: W chunk [128 rows][128 B] swizzled | col_scales[128] | bias[128] | b_scale
//   act[0], act[1]             E4M3 activations [BLOCK_M][width], 128-byte K groups swizzled
//   act_scales[0], [1]         FP32 [BLOCK_M][width / 128]
//   red                        FP32 [kWarpsN][BLOCK_M]: per-warp row amax of the tile being requantized
//   slots of each split layer  FP32 [parts - 1][BLOCK_M x 128] partial tiles from contributors, in
//                              the accumulator's register order ([mt][nt] float4, then thread)
//   mbarriers                  partial[kFusedMaxLayers], activation[kFusedMaxLayers] (8 bytes each)
// Layer l reads act[l % 2] and writes act[(l + 1) % 2].
//
// Fragment layouts of mma.m16n8k32 with 8-bit A/B (PTX ISA, "Matrix Fragments for mma.m16n8k32"),
// with g = lane / 4 and t = lane % 4:
//   A (16 x 32, row): a[0] = A[g][4t..4t+3], a[1] = A[g+8][4t..4t+3], a[2] = A[g][16+4t..16+4t+3],
//                     a[3] = A[g+8][16+4t..16+4t+3] (byte i of a register = column +i)
//   B (32 x 8, col):  b[0] = B[4t..4t+3][g], b[1] = B[16+4t..16+4t+3][g]; with B[k][n] = W[n][k] these
//                     are the 4 contiguous bytes W[g][4t..4t+3] and W[g][16+4t..16+4t+3]
//   C/D (16 x 8 f32): d[0], d[1] = D[g][2t], D[g][2t+1]; d[2], d[3] = D[g+8][2t], D[g+8][2t+1]
// ldmatrix.m8n8.x4.b16 gives lane (g, t) bytes 4t..4t+3 of row g of each 8 x 16-byte matrix, which is
// exactly the register above when the matrix is 8 rows x 16 K-bytes of A (or of W).
#pragma once

#include <cuda_fp8.h>

#include <cstdint>

#include "kernels/cuda/fp16_widen.cuh"
#include "kernels/cuda/fused_mlp.h"
#include "kernels/cuda/fused_mlp_params.h"
#include "kernels/cuda/fused_mlp_ptx.cuh"
#include "kernels/cuda/requant.cuh"
#include "kernels/cuda/sm90_utils.cuh"

namespace fp8serve::cuda {

namespace fused_detail {

// ---- MMAs on widened operands ----------------------------------------------------------------------

// The widened path (FusedMma::kMmaSyncF16, Hopper): the same m16n8k32 product as MmaFp8, done as
// two FP16 m16n8k16 MMAs on operands unpacked by the kernel (fp16_widen.cuh); only the FP32
// summation order differs from the FP8 instruction (the contract allows it).
//
// WidenA: an FP8 A fragment (mma.m16n8k32, 4 registers of E4M3 activations) widened for the two
// FP16 MMAs: half 0 from the low bytes of each register, half 1 from the high bytes. Any pairing of
// K between A and B gives the same products as long as both sides use it: with B's halves in
// MmaWidened, half h holds K {4t + 2h, 4t + 2h + 1, 16 + 4t + 2h, 16 + 4t + 2h + 1} of the k32 step
// (t = lane % 4), the pairing ptxas's own widening uses. Widened once per k32 step, it serves every
// n-tile of the warp (ptxas's widening of an FP8 mma.sync repeats it for each).
__device__ __forceinline__ void WidenA(const uint32_t (&a)[4], uint32_t (&a16)[2][4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) WidenFp8x4<Fp8Format::kE4M3>(a[i], a16[0][i], a16[1][i]);
}

// MmaFp8's product on a widened A: B's two FP8 registers widened to the halves WidenA pairs with.
template <bool kE5M2>
__device__ __forceinline__ void MmaWidened(float (&d)[4], const uint32_t (&a16)[2][4], uint32_t b0, uint32_t b1) {
  constexpr Fp8Format kB = kE5M2 ? Fp8Format::kE5M2 : Fp8Format::kE4M3;
  uint32_t b0_lo, b0_hi, b1_lo, b1_hi;
  WidenFp8x4<kB>(b0, b0_lo, b0_hi);
  WidenFp8x4<kB>(b1, b1_lo, b1_hi);
  MmaM16N8K16F16(d, a16[0][0], a16[0][1], a16[0][2], a16[0][3], b0_lo, b1_lo);
  MmaM16N8K16F16(d, a16[1][0], a16[1][1], a16[1][2], a16[1][3], b0_hi, b1_hi);
}

// Byte offset of 16-byte chunk `chunk` (0..7) of `row` inside a 128-byte K group.
// NOTES: rows are 128-byte multiples apart, so without the XOR the 8 row addresses of one ldmatrix
// matrix would all hit the same four banks (8-way conflict); chunk ^ (row % 8) spreads them over
// all 32 banks. Writers (cp.async, the input quantizer, the epilogue) use the same function.
__device__ __forceinline__ uint32_t Swizzle(int row, int chunk) {
  return static_cast<uint32_t>((chunk ^ (row & 7)) << 4);
}

// Position in this CTA's chunk sequence: layer, output tile, K group, the end of the tile's K range
// that this CTA works on, and whether it owns the tile (runs its epilogue: its range starts at
// group 0). layer == num_layers: past the end.
struct ChunkCursor {
  int layer = 0;
  int tile = 0;
  int group = 0;
  int group_end = 0;
  bool owner = false;
};

// This CTA's (rank's) first tile of `layer` and its K range (the launcher's rank_work table, see
// the header comment for the split); false when the CTA has no work in the layer.
__device__ __forceinline__ bool FirstOfLayer(const FusedMlpParams& p, int layer, int rank, ChunkCursor& c) {
  const FusedLayerParams& l = p.layers[layer];
  const uint32_t w = l.rank_work[rank];
  c.layer = layer;
  c.tile = static_cast<int>(w & 0xffu);
  c.group = static_cast<int>((w >> 8) & 0xffu);
  c.group_end = static_cast<int>(w >> 16);
  c.owner = c.group == 0;
  return c.tile < l.tiles;
}

// Moves `c` to this CTA's first chunk in `layer` or a later layer, or past the end.
__device__ __forceinline__ void SeekLayer(const FusedMlpParams& p, int layer, int rank, ChunkCursor& c) {
  for (; layer < p.num_layers; ++layer) {
    if (FirstOfLayer(p, layer, rank, c)) return;
  }
  c.layer = p.num_layers;
}

// Next chunk of this CTA: next K group of the range, else its next whole tile (parts == 1: every
// cluster-th tile), else the next layer where it has work. With cluster 1 this walks every
// (layer, tile, group) in order.
__device__ __forceinline__ void Advance(ChunkCursor& c, const FusedMlpParams& p, int rank, int cluster) {
  if (++c.group < c.group_end) return;
  const FusedLayerParams& l = p.layers[c.layer];
  if (l.parts == 1 && c.tile + cluster < l.tiles) {
    c.tile += cluster;
    c.group = 0;  // group_end stays l.groups
    return;
  }
  SeekLayer(p, c.layer + 1, rank, c);
}

// Weight rows of `tile` that hold real columns, rounded up to whole 16-row ldmatrix pairs (rows
// past n are zero in the padded layout, so loading up to the round-up is exact).
__device__ __forceinline__ int RowsToLoad(const FusedLayerParams& l, int tile) {
  const int rows = ((l.n - tile * kFusedTileN) + 15) / 16 * 16;
  return rows < kFusedTileN ? rows : kFusedTileN;
}

// k32 MMA steps of K `group` that hold real input columns (4, except in a partial last group).
// NOTES: columns past k are zero codes in both operands, so skipping whole k32 steps past
// round_up(k, 32) changes no partial sum, and their weight bytes are never loaded: for a 784-wide
// input that is 3/4 of the last group.
__device__ __forceinline__ int KStepsOf(const FusedLayerParams& l, int group) {
  const int steps = (l.k - group * kFusedTileK + 31) / 32;
  return steps < kFusedTileK / 32 ? steps : kFusedTileK / 32;
}

// Issues the cp.asyncs of one chunk into `stage` (the caller commits the group). kFullK: every
// 16-byte chunk of the group's 128 K bytes (the wgmma kernel runs all four k32 steps, so the zero
// padding past k must be in shared memory, not stale bytes), else only the k32 steps KStepsOf runs.
template <bool kFullK>
__device__ __forceinline__ void IssueChunk(const FusedMlpParams& p, const ChunkCursor& c, uint8_t* stage) {
  const FusedLayerParams& l = p.layers[c.layer];
  const int rows = RowsToLoad(l, c.tile);
  const int chunks = kFullK ? kFusedTileK / 16 : KStepsOf(l, c.group) * 2;  // 16-byte chunks per row
  const uint8_t* src = l.w + static_cast<size_t>(c.tile) * kFusedTileN * l.k_pad + c.group * kFusedTileK;
  const uint32_t dst = SmemAddr(stage);
  // Weights: rows x 8 chunks of 16 bytes, 4 per thread at most: this thread's are chunk tid % 8 of
  // rows tid / 8 + 32 i, so the chunk test, the swizzle and the first addresses are computed once and
  // each copy adds a fixed step (32 rows).
  // NOTES: indexed per copy (row and chunk from tid + 256 i), every copy recomputed its addresses
  // under its own predicate: about 60 SASS instructions for the four, paid by every warp per chunk.
  const int tid = static_cast<int>(threadIdx.x);
  constexpr int kRowStep = kFusedNumThreads / 8;
  const int r0 = tid >> 3, ch = tid & 7;
  if (ch < chunks) {
    const uint32_t d0 = dst + r0 * kFusedTileK + Swizzle(r0, ch);  // (the swizzle repeats every 8 rows)
    const uint8_t* s0 = src + static_cast<size_t>(r0) * l.k_pad + ch * 16;
    const size_t src_step = static_cast<size_t>(kRowStep) * l.k_pad;
#pragma unroll
    for (int i = 0; i < kFusedTileN / kRowStep; ++i) {
      if (r0 + i * kRowStep < rows) CpAsync16(d0 + i * kRowStep * kFusedTileK, s0 + i * src_step);
    }
  }
  static_assert(kRowStep % 8 == 0, "rows 32 apart share their swizzle");
  // The tile's epilogue operands ride with the owner's last K group of the tile.
  if (c.group == c.group_end - 1 && c.owner) {
    if (tid < 32) {
      if (l.col_scales != nullptr)
        CpAsync16(dst + kFusedStageColScaleOffset + tid * 16, l.col_scales + c.tile * kFusedTileN + tid * 4);
    } else if (tid < 64) {
      if (l.bias != nullptr)
        CpAsync16(dst + kFusedStageBiasOffset + (tid - 32) * 16, l.bias + c.tile * kFusedTileN + (tid - 32) * 4);
    }
  }
  if (tid == 64) CpAsync4(dst + kFusedStageBScaleOffset, l.b_scales + c.tile * l.groups + c.group);
}

// Quantizes K groups [group0, group0 + num_groups) of the CTA's FP32 input rows to E4M3 1x128
// groups in act / scales (row stride k_pad; the other groups are left unwritten: this CTA's layer-0
// chunks never read them). One warp per (row, group): warp w takes rows w, w + 8, ... of every group;
// each lane holds 4 consecutive columns, so it writes one 32-bit word. Rows past m and columns past
// k_in are zeros (code 0, and scale 1 for an all-zero group).
// The work comes in batches of up to kBatch (row, group) tasks per warp: Load(b) puts batch b's
// inputs in flight into registers, Quantize(b) reduces and stores them. The kernel loads the first
// batch before it issues its first weight chunks, so that the two memory round trips overlap.
// NOTES: a 16-row block has at most 2 rows x 8 groups = 16 tasks per warp, so its whole input (up
// to 64 KB) is one batch and costs one memory round trip, not one per group. Rows and groups of a
// task are compile-time offsets from two base pointers (no index division), and a warp stops at
// the CTA's last group, so a CTA with one or two groups runs one or two tasks' worth of code per row.
template <int BLOCK_M>
struct InputQuantizer {
  static constexpr int kRowsPerWarp = BLOCK_M / kFusedNumWarps;
  static constexpr int kBatch = 16;
  static constexpr int kGroupsPerBatch = kBatch / kRowsPerWarp;
  static_assert(BLOCK_M % kFusedNumWarps == 0, "every warp takes the same rows of every group");
  static_assert(kGroupsPerBatch >= 1, "a batch holds at least one group of every row of the warp");

  const FusedMlpParams& p;
  int block_row, group0, num_groups, warp, lane;
  float v[kGroupsPerBatch][kRowsPerWarp][4];

  // Batch b covers groups group0 + b * kGroupsPerBatch .. (fewer in the last)
  __device__ __forceinline__ int NumBatches() const { return (num_groups + kGroupsPerBatch - 1) / kGroupsPerBatch; }

  // NOTES: the x_vec4 choice is made once per batch, so that each form is straight-line predicated
  // loads; tested per task it made every task a nest of branches, ahead of the weights' issue.
  __device__ __forceinline__ void Load(int b) {
    if (p.x_vec4) {
      LoadAs<true>(b);
    } else {
      LoadAs<false>(b);
    }
  }

  template <bool kVec4>
  __device__ __forceinline__ void LoadAs(int b) {
    const int gb = b * kGroupsPerBatch, k = p.k_in;
    // Column of this lane in the batch's first group; row j's pointer to it
    const int c0 = (group0 + gb) * kFusedTileK + lane * 4;
    const float* xr[kRowsPerWarp];
    bool row_ok[kRowsPerWarp];
#pragma unroll
    for (int j = 0; j < kRowsPerWarp; ++j) {
      const int row = block_row + warp + j * kFusedNumWarps;
      xr[j] = p.x + static_cast<size_t>(row) * k + c0;
      row_ok[j] = row < p.m;
    }
#pragma unroll
    for (int i = 0; i < kGroupsPerBatch; ++i) {
      if (gb + i >= num_groups) break;  // warp-uniform
      const int c = c0 + i * kFusedTileK;
#pragma unroll
      for (int j = 0; j < kRowsPerWarp; ++j) {
        const float* src = xr[j] + i * kFusedTileK;
        if constexpr (kVec4) {
          // (k is a multiple of 4: the lane's 4 columns are all inside or all past k)
          float4 f = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
          if (row_ok[j] && c < k) f = __ldg(reinterpret_cast<const float4*>(src));
          v[i][j][0] = f.x, v[i][j][1] = f.y, v[i][j][2] = f.z, v[i][j][3] = f.w;
        } else {
#pragma unroll
          for (int e = 0; e < 4; ++e) v[i][j][e] = row_ok[j] && c + e < k ? __ldg(src + e) : 0.0f;
        }
      }
    }
  }

  __device__ __forceinline__ void Quantize(int b, uint8_t* act, float* scales) {
    const int gb = b * kGroupsPerBatch, groups = p.layers[0].groups, stride = p.layers[0].k_pad;
#pragma unroll
    for (int i = 0; i < kGroupsPerBatch; ++i) {
      if (gb + i >= num_groups) break;  // warp-uniform
      const int grp = group0 + gb + i;
#pragma unroll
      for (int j = 0; j < kRowsPerWarp; ++j) {
        const int r = warp + j * kFusedNumWarps;
        // Group amax (fmaxf ignores NaN, like the CPU), then the scale and the codes
        float amax = fmaxf(fmaxf(fabsf(v[i][j][0]), fabsf(v[i][j][1])), fmaxf(fabsf(v[i][j][2]), fabsf(v[i][j][3])));
#pragma unroll
        for (int off = 16; off > 0; off /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
        const float s = E4M3GroupScale(amax);
        uint16_t codes[2];
        E4M3Requant(s).Pairs<2>(v[i][j], codes);
        *reinterpret_cast<uint32_t*>(act + r * stride + grp * kFusedTileK + Swizzle(r, lane >> 2) + (lane & 3) * 4) =
            codes[0] | (static_cast<uint32_t>(codes[1]) << 16);
        if (lane == 0) scales[r * groups + grp] = s;
      }
    }
  }
};

// One K group of one tile for one warp: P = sum of 4 x k32 MMAs (fresh), then acc += (sa * sb) * P.
// kParts = 2 splits P into two interleaved accumulators (even / odd k32 steps) summed in FP32 before
// the promotion: a warp with only 2 MMA tiles then has 4 independent chains of 2 instead of 2 of 4,
// which halves the group's latency (the small-batch critical path); the difference is FP32
// summation order only. kWiden: the MMAs widened to FP16 (FusedMma::kMmaSyncF16, MmaWidened), A
// once per k32 step for all the warp's n-tiles.
// a_group: shared address of the input activations' column `group * 128` in row 0; w_stage: the
// stage's weight chunk. row0 / col0: the warp's first row in the block / column in the tile.
template <int kMmaM, int kMmaN, int kParts, bool kE5M2, bool kWiden = false>
__device__ __forceinline__ void MmaGroup(uint32_t a_group, int a_stride, uint32_t w_stage, const float* a_scales,
                                         int a_scale_stride, int group, float b_scale, int row0, int col0,
                                         int pairs_valid, int ksteps, int lane, float (&acc)[kMmaM][kMmaN][4]) {
  static_assert(kParts == 1 || kParts == 2, "one or two partial accumulators");
  float part[kParts][kMmaM][kMmaN][4];
#pragma unroll
  for (int q = 0; q < kParts; ++q)
#pragma unroll
    for (int mt = 0; mt < kMmaM; ++mt)
#pragma unroll
      for (int nt = 0; nt < kMmaN; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) part[q][mt][nt][i] = 0.0f;

  // The fragments of a k32 step are loaded two steps ahead of its MMAs (two buffers), so that the
  // ldmatrix round trips overlap the MMAs. NOTES: loaded in the step itself, the code ran
  // ldmatrix -> unpack -> MMA -> MMA -> FADD per step in series (the FADDs and the reuse of the
  // fragment registers both wait for the MMAs); all four steps loaded up front made the 16-row
  // block spill (it sits at its 128 registers).
  // A: matrices (rows 0-7, k 0-15), (rows 8-15, k 0-15), (rows 0-7, k 16-31), (rows 8-15, k 16-31)
  // B: per pair of n8 tiles, matrices (n 0-7, k 0-15), (n 0-7, k 16-31), (n 8-15, k 0-15), (n 8-15, k 16-31)
  // A step past `ksteps` may be loaded (stale shared memory: its weights were never streamed) but is
  // never multiplied.
  constexpr int kSteps = kFusedTileK / 32;
  uint32_t a[2][kMmaM][4];
  uint32_t b[2][kMmaN][2];
  const auto load_step = [&](int ks, uint32_t(&af)[kMmaM][4], uint32_t(&bf)[kMmaN][2]) {
#pragma unroll
    for (int mt = 0; mt < kMmaM; ++mt) {
      const int r = row0 + mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      LdMatrixX4(a_group + r * a_stride + Swizzle(r, ks * 2 + (lane >> 4)), af[mt]);
    }
#pragma unroll
    for (int pr = 0; pr < kMmaN / 2; ++pr) {
      uint32_t r4[4] = {0u, 0u, 0u, 0u};
      if (pr < pairs_valid) {
        const int nr = col0 + pr * 16 + (lane & 7) + (lane >> 4) * 8;
        LdMatrixX4(w_stage + nr * kFusedTileK + Swizzle(nr, ks * 2 + ((lane >> 3) & 1)), r4);
      }
      bf[2 * pr][0] = r4[0], bf[2 * pr][1] = r4[1];
      bf[2 * pr + 1][0] = r4[2], bf[2 * pr + 1][1] = r4[3];
    }
  };
  load_step(0, a[0], b[0]);
  load_step(1, a[1], b[1]);
#pragma unroll
  for (int ks = 0; ks < kSteps; ++ks) {
    if (ks >= ksteps) break;  // warp-uniform: the rest of the group is zero padding
    const int buf = ks % 2;
#pragma unroll
    for (int mt = 0; mt < kMmaM; ++mt) {
      if constexpr (kWiden) {
        uint32_t a16[2][4];
        WidenA(a[buf][mt], a16);
#pragma unroll
        for (int nt = 0; nt < kMmaN; ++nt)
          if (nt / 2 < pairs_valid) MmaWidened<kE5M2>(part[ks % kParts][mt][nt], a16, b[buf][nt][0], b[buf][nt][1]);
      } else {
#pragma unroll
        for (int nt = 0; nt < kMmaN; ++nt)
          if (nt / 2 < pairs_valid) MmaFp8<kE5M2>(part[ks % kParts][mt][nt], a[buf][mt], b[buf][nt][0], b[buf][nt][1]);
      }
    }
    if (ks + 2 < kSteps) load_step(ks + 2, a[buf], b[buf]);
  }
  if constexpr (kParts == 2) {
#pragma unroll
    for (int mt = 0; mt < kMmaM; ++mt)
#pragma unroll
      for (int nt = 0; nt < kMmaN; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) part[0][mt][nt][i] += part[1][mt][nt][i];
  }

  // Promote: scale product first, then one FMA per element (the numeric contract)
  const int g = lane >> 2;
#pragma unroll
  for (int mt = 0; mt < kMmaM; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = row0 + mt * 16 + g + h * 8;
      const float s = a_scales[r * a_scale_stride + group] * b_scale;
#pragma unroll
      for (int nt = 0; nt < kMmaN; ++nt) {
        acc[mt][nt][2 * h] = fmaf(s, part[0][mt][nt][2 * h], acc[mt][nt][2 * h]);
        acc[mt][nt][2 * h + 1] = fmaf(s, part[0][mt][nt][2 * h + 1], acc[mt][nt][2 * h + 1]);
      }
    }
  }
}

// The same K group with wgmma (Hopper): the warpgroup of this warp computes rows 0..63 x its 64
// columns col0.. of the tile with 4 x m64n64k32, A (the activations) from registers, B (the
// stage's weight rows col0..col0 + 63) from shared memory. Warp w of the warpgroup supplies and gets
// rows row0 = 16 w ..: its A fragment is mma.sync's (the same ldmatrix), and its accumulator is
// mma.sync's C fragments for n-tiles j = 0..7, so acc is [1][8][4] in the same order and the
// epilogue and the partial-sum exchange are shared. A warp past the row block (`active` false:
// row0 >= BLOCK_M) feeds zero rows and keeps a zero acc.
// All four k32 steps run, unconditionally: K past the layer's k is zero codes in both operands
// (the activations' padding, and the weights' which IssueChunk<true> loads), so they add nothing.
// NOTES: a wgmma under a data-dependent branch makes ptxas serialize the warpgroup's wgmmas.
// NOTES: weight columns past the layer's n (rows of the chunk that were never loaded) give garbage
// in those columns only; the epilogue forces them to zero before anything reads them.
template <bool kE5M2>
__device__ __forceinline__ void MmaGroupWgmma(uint32_t a_group, int a_stride, uint32_t w_stage, const float* a_scales,
                                              int a_scale_stride, int group, float b_scale, int row0, int col0,
                                              bool active, int lane, float (&acc)[1][8][4]) {
  constexpr Fp8Format kBFormat = kE5M2 ? Fp8Format::kE5M2 : Fp8Format::kE4M3;
  // A fragments of the group's k32 steps
  uint32_t a[kFusedTileK / 32][4];
#pragma unroll
  for (int ks = 0; ks < kFusedTileK / 32; ++ks) {
#pragma unroll
    for (int i = 0; i < 4; ++i) a[ks][i] = 0u;
    if (active) {
      const int r = row0 + (lane & 7) + ((lane >> 3) & 1) * 8;
      LdMatrixX4(a_group + r * a_stride + Swizzle(r, ks * 2 + (lane >> 4)), a[ks]);
    }
  }
  // P = the group's partial sum, fresh
  float part[32];
  WgmmaGroupM64N64<kBFormat>(part, a, w_stage + static_cast<uint32_t>(col0 * kFusedTileK));
  if (!active) return;
  // Promote: scale product first, then one FMA per element (the numeric contract)
  const int g = lane >> 2;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = row0 + g + h * 8;
    const float s = a_scales[r * a_scale_stride + group] * b_scale;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      acc[0][j][2 * h] = fmaf(s, part[4 * j + 2 * h], acc[0][j][2 * h]);
      acc[0][j][2 * h + 1] = fmaf(s, part[4 * j + 2 * h + 1], acc[0][j][2 * h + 1]);
    }
  }
}

// 16-column pairs of the warp at column col0 of `tile` that hold real output columns (warp-uniform).
template <int kMmaN>
__device__ __forceinline__ int PairsValid(const FusedLayerParams& l, int tile, int col0) {
  const int pairs = (l.n - tile * kFusedTileN - col0 + 15) / 16;
  return pairs < 0 ? 0 : (pairs > kMmaN / 2 ? kMmaN / 2 : pairs);
}

// A contributor's partial tile into the owner's slot (shared::cluster address `slot`, counted on
// the owner's partial mbarrier `bar`), in register order: float4 (mt, nt) of slot thread i at index
// (mt * kMmaN + nt) * kSlotThreads + i, so the owner's thread with the same slot index reads back
// exactly its own fragment positions, 16 contiguous bytes per lane. Every slot thread sends its
// whole fragment (zeros in a warp without real columns), so the owner expects exactly one slot of
// bytes (BLOCK_M x 128 floats) per contributor.
// slot_tid / kSlotThreads: the thread's index among the kSlotThreads threads that hold rows of the
// block (all 256 with mma.sync; with wgmma only the warps whose 16 rows are inside the block).
template <int kMmaM, int kMmaN, int kSlotThreads>
__device__ __forceinline__ void SendPartial(uint32_t slot, uint32_t bar, const float (&acc)[kMmaM][kMmaN][4],
                                            int slot_tid) {
#pragma unroll
  for (int mt = 0; mt < kMmaM; ++mt)
#pragma unroll
    for (int nt = 0; nt < kMmaN; ++nt)
      StoreAsync(slot + static_cast<uint32_t>(((mt * kMmaN + nt) * kSlotThreads + slot_tid) * 16), acc[mt][nt], bar);
}

// The owner adds one contributor's partial tile (local slot, SendPartial's order) to its own.
template <int kMmaM, int kMmaN, int kSlotThreads>
__device__ __forceinline__ void AddPartial(const float* slot, float (&acc)[kMmaM][kMmaN][4], int slot_tid) {
#pragma unroll
  for (int mt = 0; mt < kMmaM; ++mt) {
#pragma unroll
    for (int nt = 0; nt < kMmaN; ++nt) {
      const float4 v = reinterpret_cast<const float4*>(slot)[(mt * kMmaN + nt) * kSlotThreads + slot_tid];
      acc[mt][nt][0] += v.x;
      acc[mt][nt][1] += v.y;
      acc[mt][nt][2] += v.z;
      acc[mt][nt][3] += v.w;
    }
  }
}

template <int kMmaM, int kMmaN>
__device__ __forceinline__ void ZeroAcc(float (&acc)[kMmaM][kMmaN][4]) {
#pragma unroll
  for (int mt = 0; mt < kMmaM; ++mt)
#pragma unroll
    for (int nt = 0; nt < kMmaN; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;
}

// Epilogue of output tile `tile` of the row block, whose full FP32 sums are in acc: v = acc *
// col_scale + bias (from `stage`), columns past n forced to zero; the last layer writes FP32 logits
// to y, a hidden layer applies ReLU and requantizes the tile (one 1x128 group per row) into
// act_out / scales_out and copies it into the same place in every other CTA of the cluster.
// kWarpsN warps share a row's 128 columns; a warp that is not `active` (its rows lie past the row
// block: wgmma's idle warps) writes nothing. Contains __syncthreads: call it CTA-uniformly.
template <int BLOCK_M, int kMmaM, int kMmaN, int kWarpsN>
__device__ __forceinline__ void TileEpilogue(const FusedMlpParams& p, const FusedLayerParams& l, bool last, int tile,
                                             const uint8_t* stage, float (&acc)[kMmaM][kMmaN][4], int block_row,
                                             int warp_n, int row0, int col0, bool active, int lane, float* red,
                                             uint8_t* act_out, float* scales_out, uint32_t receivers,
                                             uint32_t act_bar) {
  const int g = lane >> 2, t = lane & 3;
  const float* cs = reinterpret_cast<const float*>(stage + kFusedStageColScaleOffset);
  const float* bias = reinterpret_cast<const float*>(stage + kFusedStageBiasOffset);
  const int tile_col = tile * kFusedTileN;
#pragma unroll
  for (int nt = 0; nt < kMmaN; ++nt) {
    const int col = col0 + nt * 8 + t * 2;
    float2 cs2 = make_float2(1.0f, 1.0f), b2 = make_float2(0.0f, 0.0f);
    if (l.col_scales != nullptr) cs2 = *reinterpret_cast<const float2*>(cs + col);
    if (l.bias != nullptr) b2 = *reinterpret_cast<const float2*>(bias + col);
#pragma unroll
    for (int mt = 0; mt < kMmaM; ++mt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float v = acc[mt][nt][i];
        // Two roundings, never contracted into one FMA: the contract's order, as in the GEMMs
        if (l.col_scales != nullptr) v = __fmul_rn(v, (i & 1) ? cs2.y : cs2.x);
        if (l.bias != nullptr) v = __fadd_rn(v, (i & 1) ? b2.y : b2.x);
        if (!last && p.relu) v = v < 0.0f ? 0.0f : v;  // NaN stays NaN, like the CPU
        if (tile_col + col + (i & 1) >= l.n) v = 0.0f;
        acc[mt][nt][i] = v;
      }
    }
  }

  if (last) {
    // Logits: FP32, real rows and columns only
    if (!active) return;
#pragma unroll
    for (int mt = 0; mt < kMmaM; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = block_row + row0 + mt * 16 + g + h * 8;
        if (row >= p.m) continue;
        float* yr = p.y + static_cast<size_t>(row) * l.n;
#pragma unroll
        for (int nt = 0; nt < kMmaN; ++nt) {
          const int col = tile_col + col0 + nt * 8 + t * 2;
          if (col < l.n) yr[col] = acc[mt][nt][2 * h];
          if (col + 1 < l.n) yr[col + 1] = acc[mt][nt][2 * h + 1];
        }
      }
    }
    return;
  }

  // Requantize the tile (one 1x128 group per row) into the next layer's A operand.
  // Row amax over this warp's columns: lanes t = 0..3 of a row differ in lane bits 0-1
#pragma unroll
  for (int mt = 0; mt < kMmaM; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (!active) break;
      float amax = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kMmaN; ++nt)
        amax = fmaxf(amax, fmaxf(fabsf(acc[mt][nt][2 * h]), fabsf(acc[mt][nt][2 * h + 1])));
      amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
      amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
      if (t == 0) red[warp_n * BLOCK_M + row0 + mt * 16 + g + h * 8] = amax;
    }
  }
  __syncthreads();
  // Whole-row amax over the kWarpsN warps of the tile (max is exact in any order), scale, codes
  const int out_stride = l.tiles * kFusedTileN, out_groups = l.tiles;
#pragma unroll
  for (int mt = 0; mt < kMmaM; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (!active) break;
      const int r = row0 + mt * 16 + g + h * 8;
      float amax = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarpsN; ++w) amax = fmaxf(amax, red[w * BLOCK_M + r]);
      const float s = E4M3GroupScale(amax);
      uint8_t* dst = act_out + r * out_stride + tile_col;
      uint16_t codes[kMmaN];
      E4M3Requant(s).FragmentRow(acc, mt, h, codes);
#pragma unroll
      for (int nt = 0; nt < kMmaN; ++nt) {
        const int col = col0 + nt * 8 + t * 2;
        *reinterpret_cast<uint16_t*>(dst + Swizzle(r, col >> 4) + (col & 15)) = codes[nt];
      }
      if (warp_n == 0 && t == 0) scales_out[r * out_groups + tile] = s;
    }
  }

  if (receivers != 0) {
    // Copy the tile's codes ([BLOCK_M][128 B], 16-byte chunks at the same offsets, swizzle included)
    // and its scale column to the CTAs of the cluster that work in the next layer (bit d of
    // receivers: rank d), counted on their activation mbarrier act_bar of this layer:
    // BLOCK_M * (128 + 4) bytes per tile and receiver
    __syncthreads();
    const int tid = static_cast<int>(threadIdx.x);
    for (int i = tid; i < BLOCK_M * 9; i += kFusedNumThreads) {
      if (i < BLOCK_M * 8) {
        const int off = (i >> 3) * out_stride + tile_col + (i & 7) * 16;
        const uint4 v = *reinterpret_cast<const uint4*>(act_out + off);
        const uint32_t addr = SmemAddr(act_out + off);
        for (uint32_t m = receivers; m != 0; m &= m - 1) {
          const int d = __ffs(static_cast<int>(m)) - 1;
          StoreAsync(MapToRank(addr, d), v, MapToRank(act_bar, d));
        }
      } else {
        float* src = scales_out + (i - BLOCK_M * 8) * out_groups + tile;
        const float v = *src;
        const uint32_t addr = SmemAddr(src);
        for (uint32_t m = receivers; m != 0; m &= m - 1) {
          const int d = __ffs(static_cast<int>(m)) - 1;
          StoreAsync(MapToRank(addr, d), v, MapToRank(act_bar, d));
        }
      }
    }
  }
}

// ---- Timeline (FusedMlpArgs::trace; thread 0 of each CTA) --------------------------------------------

// Writes this CTA's timeline slots (fused_mlp.h, FusedTraceSlot): events as SM cycles since entry.
// Inactive (no buffer, or not thread 0): every call is one uniform predicated-off branch.
// NOTES: it keeps a flag and a 32-bit entry clock across the kernel (the slot address is
// recomputed per event from the parameter): a 64-bit slot pointer and a 64-bit clock kept live
// took the 16-row mma.sync instances, at their 128 registers, into spills. Differences of the
// 32-bit clock are exact for spans under 2^32 cycles.
struct Timeline {
  const FusedMlpParams& p;
  bool on = false;
  uint32_t t0 = 0;
  __device__ __forceinline__ void Mark(int slot) const {
    if (on) Put(slot, static_cast<uint32_t>(clock()) - t0);
  }
  __device__ __forceinline__ void Put(int slot, uint64_t v) const {
    if (on) p.trace[static_cast<size_t>(blockIdx.x) * kFusedTraceSlots + slot] = v;
  }
};

}  // namespace fused_detail

// The fused forward. Grid: ceil(m / BLOCK_M) * cluster_size CTAs of kFusedNumThreads (clusters of
// cluster_size consecutive CTAs along x share a row block); dynamic shared memory as the launcher's
// FusedSmemLayout says (kFusedSmemAlign bytes more with kWgmma).
// kWgmma (sm_90a only): the MMAs are wgmma (MmaGroupWgmma) and the warp grid is the two
// warpgroups' (4 x 2 warps of 16 rows x 64 columns; warps whose rows lie past BLOCK_M idle through
// the epilogue); else mma.sync on FusedWarpsM x FusedWarpsN warps, with kWiden as two FP16 MMAs
// per FP8 one on operands the kernel widens (MmaWidened; FusedMma::kMmaSyncF16).
template <int BLOCK_M, int kNumStages, bool kWgmma, bool kWiden = false>
__global__ void __launch_bounds__(kFusedNumThreads, BLOCK_M == 16 && !kWgmma ? 2 : 1)
    fused_mlp_kernel(const __grid_constant__ FusedMlpParams p) {
  using namespace fused_detail;
  constexpr int kWarpsM = kWgmma ? 4 : FusedWarpsM(BLOCK_M), kWarpsN = kWgmma ? 2 : FusedWarpsN(BLOCK_M);
  constexpr int WARP_M = kWgmma ? 16 : BLOCK_M / kWarpsM, WARP_N = kFusedTileN / kWarpsN;
  constexpr int kMmaM = WARP_M / 16, kMmaN = WARP_N / 8;
  constexpr int kParts = kMmaM * kMmaN <= 2 ? 2 : 1;  // see MmaGroup
  constexpr int kSlotFloats = BLOCK_M * kFusedTileN;   // one partial tile
  // Warps (per warp column) that hold rows of the block, and the threads that send partial sums
  constexpr int kActiveWarpsM = kWgmma ? BLOCK_M / 16 : kWarpsM;
  constexpr int kSlotThreads = kActiveWarpsM * kWarpsN * 32;
  static_assert(BLOCK_M == 16 || BLOCK_M == 32 || BLOCK_M == 64, "BLOCK_M must be 16, 32 or 64");
  static_assert(kWarpsM * kWarpsN == kFusedNumWarps, "the warp grid must use every warp");
  static_assert(WARP_M % 16 == 0, "a warp covers whole m16 MMA tiles");
  static_assert(WARP_N % 16 == 0, "B fragments are loaded as pairs of n8 tiles (ldmatrix.x4)");
  static_assert(!kWgmma || (kMmaM == 1 && kMmaN == 8), "wgmma: each warp holds 16 rows x 64 columns");
  static_assert(kNumStages >= 2, "the ring needs at least two stages");
  static_assert(!(kWgmma && kWiden), "the widened MMAs are mma.sync's");
  static_assert(kMmaM * kMmaN * 4 * kSlotThreads == kSlotFloats, "a slot holds every active thread's accumulators");
  static_assert(kWarpsN <= FusedWarpsN(BLOCK_M), "the launcher sizes the amax table for FusedWarpsN warps");

  uint8_t* const smem_raw = DynamicSmem();
  // NOTES: wgmma's B tiles need 1024-byte aligned atoms; the runtime promises less, so the base is
  // aligned by hand (the same pad in every CTA of a cluster, so offsets still match across CTAs).
  const uint32_t smem_pad =
      kWgmma ? (kFusedSmemAlign - (SmemAddr(smem_raw) & (kFusedSmemAlign - 1))) & (kFusedSmemAlign - 1) : 0u;
  uint8_t* const smem = smem_raw + smem_pad;
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32, lane = tid % 32;
  // wgmma: warp w of warpgroup q takes rows 16 w.., columns 64 q..
  const int warp_m = kWgmma ? warp % 4 : warp / kWarpsN, warp_n = kWgmma ? warp / 4 : warp % kWarpsN;
  const int row0 = warp_m * WARP_M, col0 = warp_n * WARP_N;
  const bool active = !kWgmma || row0 < BLOCK_M;  // (every mma.sync warp holds rows of the block)
  // This thread's index in a partial-sum slot (the active threads, numbered warp column-major)
  const int slot_tid = kWgmma ? (warp_n * kActiveWarpsM + warp_m) * 32 + lane : tid;
  // The cluster: the launcher sets cluster_size > 1 only for a cluster launch on sm_90
  const int cluster = HasClusters() ? p.cluster_size : 1;
  const int rank = cluster > 1 ? ClusterRank() : 0;
  const int block_row = static_cast<int>(blockIdx.x) / cluster * BLOCK_M;
  // mbarriers of this CTA: partial sums of layer l at bars + 8 l, the next layer's activations
  // made by layer l at bars + 8 (kFusedMaxLayers + l); each completes once (phase 0)
  const uint32_t bars = SmemAddr(smem + p.bar_offset);
  const auto part_bar = [&](int l) { return bars + static_cast<uint32_t>(8 * l); };
  const auto act_bar = [&](int l) { return bars + static_cast<uint32_t>(8 * (kFusedMaxLayers + l)); };
  // Timeline (benchmark only): thread 0 of each CTA, when the caller passed a buffer
  Timeline timeline{p};
  if (p.trace != nullptr && tid == 0) {
    timeline.on = true;
    timeline.t0 = static_cast<uint32_t>(clock());
    timeline.Put(kFusedTraceStartNs, GlobalTimerNs());
    timeline.Put(kFusedTraceSm, SmId());
    timeline.Put(kFusedTraceRank, static_cast<uint64_t>(rank));
  }
  // The last layer in which this CTA stores into another CTA (a partial, or a hidden tile's copies);
  // -1: never. It arrives on the exit barrier after that layer.
  const int last_send = cluster > 1 ? p.last_send[rank] : -1;
  if (cluster > 1) {
    // Every barrier gets its one arrival now, with the bytes it will receive (the launcher's plan);
    // the start barrier publishes the inits before any other CTA sends
    if (tid == 0) {
      for (int l = 0; l < p.num_layers; ++l) {
        MbarInit(part_bar(l), 1);
        MbarInit(act_bar(l), 1);
      }
      MbarInitFence();
      for (int l = 0; l < p.num_layers; ++l) {
        MbarArriveExpectTx(part_bar(l), p.layers[l].partial_bytes[rank]);
        MbarArriveExpectTx(act_bar(l), p.layers[l].act_bytes[rank]);
      }
    }
    // Start barrier, first half: this CTA is running and its barriers are initialized
    ClusterArriveRelaxed();
  }
  // NOTES: buffers are picked with selects, never by indexing a local array with the layer's parity,
  // which would put the array in local memory.
  uint8_t* const act0 = smem + p.act_offset[0];
  uint8_t* const act1 = smem + p.act_offset[1];
  float* const act_scales0 = reinterpret_cast<float*>(smem + p.scale_offset[0]);
  float* const act_scales1 = reinterpret_cast<float*>(smem + p.scale_offset[1]);
  float* const red = reinterpret_cast<float*>(smem + p.red_offset);

  // This CTA's first chunk (layer > 0: none in layer 0). NOTES: layer 0 first, outside SeekLayer's
  // loop, so that its fields are read at fixed parameter offsets rather than through a layer index.
  ChunkCursor load_cursor;
  if (!FirstOfLayer(p, 0, rank, load_cursor)) SeekLayer(p, 1, rank, load_cursor);
  const ChunkCursor first = load_cursor;
  // The input groups this CTA's layer-0 chunks read, quantized batch by batch (none: one pass that
  // only issues the weights). The first batch goes in flight ahead of the weights, so that the two
  // memory round trips overlap, and is quantized under the weight loads.
  // NOTES: one loop with the issue inside its first pass, rather than a load before it and one in
  // it: two copies of the load code cost ~800 SASS instructions per instance.
  InputQuantizer<BLOCK_M> input{p, block_row, first.group, first.layer == 0 ? first.group_end - first.group : 0, warp,
                                lane};
  for (int b = 0; b == 0 || b < input.NumBatches(); ++b) {
    input.Load(b);
    if (b == 0) {
      // Start streaming this CTA's first kNumStages - 1 weight chunks (one commit group each, empty
      // past the end)
      for (int s = 0; s < kNumStages - 1; ++s) {
        if (load_cursor.layer < p.num_layers) {
          IssueChunk<kWgmma>(p, load_cursor, smem + s * kFusedStageBytes);
          Advance(load_cursor, p, rank, cluster);
        }
        CpAsyncCommit();
      }
      timeline.Mark(kFusedTraceSetup);
    }
    input.Quantize(b, act0, act_scales0);
  }
  timeline.Mark(kFusedTraceQuantized);
  if (cluster > 1) {
    // Start barrier, second half: every CTA of the cluster is running with its barriers set up, so
    // stores into its shared memory are safe from here on
    ClusterWait();
    if (last_send < 0) ClusterArriveRelaxed();  // exit barrier: this CTA sends nothing
  }
  timeline.Mark(kFusedTraceStarted);

  float acc[kMmaM][kMmaN][4];
  ZeroAcc(acc);

  ChunkCursor cur = first;
  int read_stage = 0, write_stage = kNumStages - 1;
  const uint8_t* owner_stage = smem;  // the stage holding the epilogue operands of this CTA's split tile
  for (int layer = 0; layer < p.num_layers; ++layer) {
    const FusedLayerParams& l = p.layers[layer];
    const bool last = layer == p.num_layers - 1;
    const bool odd = (layer & 1) != 0;  // layer reads act1 (else act0) and writes the other
    const uint8_t* const act_in = odd ? act1 : act0;
    const float* const scales_in = odd ? act_scales1 : act_scales0;
    uint8_t* const act_out = odd ? act0 : act1;
    float* const scales_out = odd ? act_scales0 : act_scales1;
    float* const slots = reinterpret_cast<float*>(smem + l.slot_offset);
    // Ranks that take copies of this layer's output tiles (none for the last layer or without a cluster)
    const uint32_t receivers = cluster > 1 ? l.receivers[rank] : 0u;
    const int trace_at = kFusedTraceLayer0 + kFusedTraceEventsPerLayer * layer;

    // This layer's input tiles from the other CTAs' epilogues (when this CTA works in the layer)
    if (cluster > 1 && layer > 0 && cur.layer == layer) MbarWaitCluster(act_bar(layer - 1), 0);
    timeline.Mark(trace_at);

    // This CTA's chunks of the layer
    bool first_chunk = true;  // (for the timeline)
    for (; cur.layer == layer; Advance(cur, p, rank, cluster)) {
      // Wait for the chunk's group (this thread's copies), then for every thread's: after this
      // barrier the chunk is visible to all, and every warp is done with the previous chunk, whose
      // stage is refilled next
      CpAsyncWait<kNumStages - 2>();
      if constexpr (kWgmma) FenceProxyAsyncShared();  // cp.async wrote it; wgmma reads it (async proxy)
      __syncthreads();
      if (first_chunk) timeline.Mark(trace_at + 1);
      if (load_cursor.layer < p.num_layers) {
        IssueChunk<kWgmma>(p, load_cursor, smem + write_stage * kFusedStageBytes);
        Advance(load_cursor, p, rank, cluster);
      }
      CpAsyncCommit();
      if (first_chunk) timeline.Mark(trace_at + 2);
      write_stage = write_stage + 1 == kNumStages ? 0 : write_stage + 1;
      const uint8_t* stage = smem + read_stage * kFusedStageBytes;
      read_stage = read_stage + 1 == kNumStages ? 0 : read_stage + 1;
      const int pairs_valid = PairsValid<kMmaN>(l, cur.tile, col0);

      // MMA + promotion of this K group
      if (pairs_valid > 0) {
        const uint32_t a_group = SmemAddr(act_in) + cur.group * kFusedTileK;
        const float b_scale = *reinterpret_cast<const float*>(stage + kFusedStageBScaleOffset);
        const int ksteps = KStepsOf(l, cur.group);
        if constexpr (kWgmma) {
          // pairs_valid is uniform over the warpgroup (its four warps share col0)
          if (l.e5m2) {
            MmaGroupWgmma<true>(a_group, l.k_pad, SmemAddr(stage), scales_in, l.groups, cur.group, b_scale, row0, col0,
                                active, lane, acc);
          } else {
            MmaGroupWgmma<false>(a_group, l.k_pad, SmemAddr(stage), scales_in, l.groups, cur.group, b_scale, row0,
                                 col0, active, lane, acc);
          }
        } else if (l.e5m2) {
          MmaGroup<kMmaM, kMmaN, kParts, true, kWiden>(a_group, l.k_pad, SmemAddr(stage), scales_in, l.groups,
                                                       cur.group, b_scale, row0, col0, pairs_valid, ksteps, lane, acc);
        } else {
          MmaGroup<kMmaM, kMmaN, kParts, false, kWiden>(a_group, l.k_pad, SmemAddr(stage), scales_in, l.groups,
                                                        cur.group, b_scale, row0, col0, pairs_valid, ksteps, lane, acc);
        }
      }
      if (first_chunk) timeline.Mark(trace_at + 3);
      first_chunk = false;

      if (cur.group == cur.group_end - 1) {
        if (l.parts == 1) {
          // A whole tile: its epilogue now
          TileEpilogue<BLOCK_M, kMmaM, kMmaN, kWarpsN>(p, l, last, cur.tile, stage, acc, block_row, warp_n, row0, col0,
                                                       active, lane, red, act_out, scales_out, receivers,
                                                       act_bar(layer));
          ZeroAcc(acc);
        } else if (!cur.owner) {
          // A contributor of a split tile: partial sums into its slot of the tile's owner (the plan's)
          const int owner = l.partial_owner[rank], slot = l.partial_slot[rank];
          if (active) {
            SendPartial<kMmaM, kMmaN, kSlotThreads>(MapToRank(SmemAddr(slots + slot * kSlotFloats), owner),
                                                    MapToRank(part_bar(layer), owner), acc, slot_tid);
          }
          ZeroAcc(acc);
        } else {
          // The owner of a split tile keeps its partial for the layer end. NOTES: this is its last
          // chunk of the layer, and a stage is refilled only at the next chunk, after the layer end
          owner_stage = stage;
        }
      }
    }
    timeline.Mark(trace_at + 4);

    bool waited_for_partials = false;  // (for the timeline)
    if (cluster > 1 && l.parts > 1) {
      ChunkCursor mine;
      if (FirstOfLayer(p, layer, rank, mine) && mine.owner) {
        // Owner of a split tile: wait for its contributors' slots only (the other CTAs go on), add
        // them in slot order (their K order), then the tile's epilogue
        MbarWaitCluster(part_bar(layer), 0);
        timeline.Mark(trace_at + 5);
        waited_for_partials = true;
        if (active && PairsValid<kMmaN>(l, mine.tile, col0) > 0) {
          for (int q = 1; q < l.parts; ++q) {
            AddPartial<kMmaM, kMmaN, kSlotThreads>(slots + (q - 1) * kSlotFloats, acc, slot_tid);
          }
        }
        TileEpilogue<BLOCK_M, kMmaM, kMmaN, kWarpsN>(p, l, last, mine.tile, owner_stage, acc, block_row, warp_n, row0,
                                                     col0, active, lane, red, act_out, scales_out, receivers,
                                                     act_bar(layer));
        ZeroAcc(acc);
      }
    }
    if (!waited_for_partials) timeline.Mark(trace_at + 5);
    timeline.Mark(trace_at + 6);
    // Exit barrier, first half: this CTA's stores into other CTAs are all issued
    if (cluster > 1 && layer == last_send) ClusterArriveRelaxed();
  }
  // Exit barrier, second half: no CTA leaves while another may still store into it
  if (cluster > 1) ClusterWait();
  timeline.Mark(kFusedTraceExit);
  timeline.Put(kFusedTraceEndNs, GlobalTimerNs());
}

}  // namespace fp8serve::cuda
