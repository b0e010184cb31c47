// Device code: the Hopper FP8 GEMM, D = epilogue(A . B^T) with fine-grained scaling (fp8_gemm.h has
// the exact semantics). TMA + wgmma, warp-specialized and persistent:
//  - one producer warpgroup: a single thread walks the CTA's tiles and streams, per 128-K group, an
//    A tile [BLOCK_M, 128] and a B tile [BLOCK_N, 128] into a ring of shared-memory stages with TMA
//    (128-byte swizzle, M and N tails zero-filled by the hardware);
//  - BLOCK_M / 64 consumer warpgroups: each owns 64 rows of the tile, runs 4 x wgmma m64nBLOCK_Nk32
//    per group into a fresh FP32 accumulator (with BLOCK_N 128 two, alternating, so that the next
//    group's wgmmas run while the last one is promoted; see the wide tile below), hands the stage
//    back, and promotes the partial sum into its FP32 result with
//    acc = fma(a_scale[row] * b_scale, partial, acc);
//  - the epilogue works on registers: column scales, bias, ReLU, then FP32 / BF16 stores or E4M3
//    requantization with fresh 1x128 scales (one 128-column group = one tile row).
// Stage s has a `full` barrier (producer -> consumers: TMA bytes landed) and an `empty` barrier
// (consumers -> producer: every consumer warp has finished reading it). Both sides walk the same
// unit sequence with one running (stage, phase) counter, so phases carry across units.
//
// Split-K (k_splits = S > 1, for grids of few tiles): a unit of work is a (tile, split) pair, and
// split s owns the 128-K groups [s G / S, (s + 1) G / S). Each consumer warp stores its 16 rows of
// the split's promoted FP32 sum in the workspace and counts its arrival on the (tile, warp)
// counter; the warp that arrives last sums the S partials in split order (never arrival order, so
// every run gives the same bits), resets the counter for the next launch, and runs the epilogue.
// Every group is promoted with its own scales exactly as without splitting: only the FP32
// summation order across groups changes.
//
// Clusters (cluster_m x cluster_n CTAs, GemmConfig): a unit of work is a cluster tile of
// cluster_m x cluster_n adjacent tiles, CTA (rm, rn) = (rank % cluster_m, rank / cluster_m) taking
// tile (cluster_m * mc + rm, cluster_n * nc + rn); tiles_n is a multiple of cluster_n (the launcher
// checks), tiles_m need not be. The CTAs of one M-tile need the same A tile: each
// loads rows [rn * BLOCK_M / cluster_n, ...) of it by TMA multicast into all of them; likewise each
// CTA of one N-tile loads 1/cluster_m of the shared B tile. Every CTA's full barrier still counts a
// whole stage of bytes, now landed by several CTAs' TMAs (only its own producer arrives on it). A
// producer may multicast into stage s only when every CTA it writes to has released s, so each
// consumer warp arrives on stage s's empty barrier in every CTA of the cluster. A CTA whose tile
// lies below the matrix (tiles_m not a multiple of cluster_m) loads its share of the last real
// tile's rows, computes with zero scales (its rows are all past m) and stores nothing, so the
// cluster's CTAs all walk the same stage sequence. A producer leaves only after the last releases of every stage have
// reached it: no other CTA arrives on, or writes into, a CTA that has exited. The per-tile
// arithmetic is the same as without clusters, so the bits are too.
//
// The wide tile (BLOCK_N 192, kSm90WideBlockN in gemm_config.h; BLOCK_M 128, BF16/FP32 output, no
// split-K, row-major B): each consumer warpgroup runs 4 x wgmma m64n192k32 per group into one
// accumulator of 96 registers, waits for them, hands the stage back and promotes. Two accumulators
// of 96 and the promoted 96 would pass the 232 registers. NOTES: what keeps the tensor cores busy
// through a promotion is then only the other consumer warpgroup: the tensor cores run the two
// warpgroups' wgmmas one after the other, so after the first group the second finishes later and
// the two promote at different times, one while the other's wgmmas run (about 190 cycles of
// promotion against 380 of wgmmas per warpgroup and group). Not yet measured: if the two stay in
// step, the tensor cores idle for each promotion (up to ~20%); the bench's +n192 variants and
// profile.sh's wgmma8192wide entry say which. GemmConfig::ordered_consumers makes the turns
// explicit (two named barriers, kSm90OrderBar*: warpgroup 1 issues a group only after 0 has, 0 the
// next only after 1 has); it orders the issue only, which orders the work as long as each
// sub-partition's tensor core runs wgmmas in issue order, and it re-staggers the two after both
// woke on one full barrier. The bench times it beside the plain wide tile (+ord). A tile spans two 128-column blocks of
// B's scales (ScaleBlocksOfTile): each 8-column chunk takes its own block's scale product. Its
// columns past n (the last tile, when 192 does not divide n) read zero weights from TMA's fill and
// are neither read from the column scales and bias nor stored. The product of each element is the
// one the 128-wide tile forms, in the same order.
#pragma once

#include <cuda.h>  // CUtensorMap
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/gemm_config.h"
#include "kernels/cuda/requant.cuh"
#include "kernels/cuda/sm90_params.h"
#include "kernels/cuda/sm90_schedule.h"
#include "kernels/cuda/sm90_utils.cuh"

namespace fp8serve::cuda {

// Column pairs an E4M3 epilogue requantizes per E4M3Requant call (one fallback branch each).
inline constexpr int kRequantPairs = 4;

// The named barriers of the wide tile's ordered consumers: warpgroup 0 arrives on the first after
// issuing a group, which warpgroup 1 syncs on before issuing it; warpgroup 1 arrives on the second,
// which warpgroup 0 syncs on before its next group (and once at its end, which matches 1's last
// arrival). Each barrier's arrivals and syncs alternate, so no two generations merge
// (sm90_pipeline_model_test checks the protocol, and that both barriers and the final sync are
// needed).
inline constexpr uint32_t kSm90OrderBarWg0Issued = 1;
inline constexpr uint32_t kSm90OrderBarWg1Issued = 2;
inline constexpr uint32_t kSm90OrderBarThreads = 256;  // both consumer warpgroups

// Shared memory carve-up, from the dynamic base aligned up to 1024 bytes:
//   A tiles [num_stages][BLOCK_M][128], B tiles [num_stages][BLOCK_N][128], full barriers
//   [num_stages], empty barriers [num_stages].
template <int BLOCK_M, int BLOCK_N = kSm90BlockN>
struct Sm90SmemLayout {
  static constexpr uint32_t kTileABytes = BLOCK_M * kGemmBlockK;
  static constexpr uint32_t kTileBBytes = BLOCK_N * kGemmBlockK;
  static constexpr uint32_t kAlign = 1024;  // one 128-byte-swizzle atom: 8 rows x 128 bytes
  static_assert(kTileABytes % kAlign == 0 && kTileBBytes % kAlign == 0, "tiles must keep the 1024-byte alignment");
  // Bytes a launch with `stages` needs, alignment slack included.
  static constexpr size_t Bytes(int stages) {
    return kAlign + static_cast<size_t>(stages) * (kTileABytes + kTileBBytes + 2 * sizeof(uint64_t));
  }
  static_assert(Bytes(1) == Sm90SmemBytes(BLOCK_M, BLOCK_N, 1) &&
                    Bytes(kSm90MaxStages) == Sm90SmemBytes(BLOCK_M, BLOCK_N, kSm90MaxStages),
                "the config heuristic sizes shared memory with Sm90SmemBytes(): keep the two equal");
};

// The epilogue of one consumer thread: its 2 rows x 2 kChunks columns of the tile (see the
// accumulator layout in sm90_utils.cuh; kChunks = BLOCK_N / 8). `row0` is the thread's first row,
// `col0` = n_tile * BLOCK_N + 2 * (lane % 4).
template <GemmOutput kOutput, int kChunks = kSm90BlockN / 8>
__device__ __forceinline__ void Sm90Epilogue(float (&v)[4 * kChunks], const Sm90GemmParams& p, int row0, int col0,
                                             int n_tile, int lane) {
  // Only the wide tile reaches past n (its last tile): those columns read no scale or bias
  constexpr bool kMayPassN = kChunks * 8 != kSm90BlockN;
  // v = acc * col_scale + bias, then ReLU (the contract's order, no contraction into an FMA)
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
    const int c = col0 + 8 * j;
    if (kMayPassN && c >= p.n) continue;
    if (p.col_scales != nullptr) {
      const float s0 = __ldg(p.col_scales + c), s1 = __ldg(p.col_scales + c + 1);
      v[4 * j + 0] = __fmul_rn(v[4 * j + 0], s0);
      v[4 * j + 1] = __fmul_rn(v[4 * j + 1], s1);
      v[4 * j + 2] = __fmul_rn(v[4 * j + 2], s0);
      v[4 * j + 3] = __fmul_rn(v[4 * j + 3], s1);
    }
    if (p.bias != nullptr) {
      const float b0 = __ldg(p.bias + c), b1 = __ldg(p.bias + c + 1);
      v[4 * j + 0] = __fadd_rn(v[4 * j + 0], b0);
      v[4 * j + 1] = __fadd_rn(v[4 * j + 1], b1);
      v[4 * j + 2] = __fadd_rn(v[4 * j + 2], b0);
      v[4 * j + 3] = __fadd_rn(v[4 * j + 3], b1);
    }
    if (p.relu) {
#pragma unroll
      for (int i = 0; i < 4; ++i) v[4 * j + i] = v[4 * j + i] < 0.0f ? 0.0f : v[4 * j + i];
    }
  }

  if constexpr (kOutput == GemmOutput::kE4M3) {
    static_assert(kChunks == 16, "E4M3 output needs the tile to be one 1x128 group wide");
    // Each row's 128 columns (one 1x128 group) live in one quad of lanes: reduce over the thread's
    // 32 values, then across the quad. fmaxf ignores NaN, like the CPU quantizer.
    float amax[2] = {0.0f, 0.0f};
#pragma unroll
    for (int j = 0; j < 16; ++j) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        amax[h] = fmaxf(amax[h], fabsf(v[4 * j + 2 * h + 0]));
        amax[h] = fmaxf(amax[h], fabsf(v[4 * j + 2 * h + 1]));
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      amax[h] = fmaxf(amax[h], __shfl_xor_sync(0xffffffffu, amax[h], 1));
      amax[h] = fmaxf(amax[h], __shfl_xor_sync(0xffffffffu, amax[h], 2));
    }
    uint8_t* d = static_cast<uint8_t*>(p.d);
    const int groups_n = p.n / kGemmBlockK;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = row0 + 8 * h;
      if (row >= p.m) continue;
      // An IEEE division for the scale, and the division's codes (requant.cuh), so scale and codes
      // match the CPU quantizer bit for bit.
      const float s = E4M3GroupScale(amax[h]);
      const E4M3Requant requant(s);
      uint8_t* out = d + static_cast<size_t>(row) * p.ldd;
#pragma unroll
      for (int j0 = 0; j0 < 16; j0 += kRequantPairs) {
        float q[2 * kRequantPairs];
#pragma unroll
        for (int i = 0; i < kRequantPairs; ++i) {
          q[2 * i] = v[4 * (j0 + i) + 2 * h + 0];
          q[2 * i + 1] = v[4 * (j0 + i) + 2 * h + 1];
        }
        uint16_t codes[kRequantPairs];
        requant.Pairs<kRequantPairs>(q, codes);
#pragma unroll
        for (int i = 0; i < kRequantPairs; ++i) {
          // A pair's first code is in the low byte: column c at the lower address.
          const int c = col0 + 8 * (j0 + i);
          if (p.paired_stores) {
            *reinterpret_cast<uint16_t*>(out + c) = codes[i];
          } else {
            out[c] = static_cast<uint8_t>(codes[i] & 0xFFu);
            out[c + 1] = static_cast<uint8_t>(codes[i] >> 8);
          }
        }
      }
      if ((lane & 3) == 0) p.d_scales[static_cast<size_t>(row) * groups_n + n_tile] = s;
    }
  } else {
    using T = std::conditional_t<kOutput == GemmOutput::kF32, float, __nv_bfloat16>;
    T* d = static_cast<T*>(p.d);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = row0 + 8 * h;
      if (row >= p.m) continue;
      T* out = d + static_cast<size_t>(row) * p.ldd;
#pragma unroll
      for (int j = 0; j < kChunks; ++j) {
        const int c = col0 + 8 * j;
        const float x0 = v[4 * j + 2 * h + 0], x1 = v[4 * j + 2 * h + 1];
        if (p.paired_stores && c + 1 < p.n_store) {
          if constexpr (kOutput == GemmOutput::kF32) {
            *reinterpret_cast<float2*>(out + c) = make_float2(x0, x1);
          } else {
            *reinterpret_cast<__nv_bfloat162*>(out + c) = __floats2bfloat162_rn(x0, x1);
          }
        } else {
          if constexpr (kOutput == GemmOutput::kF32) {
            if (c < p.n_store) out[c] = x0;
            if (c + 1 < p.n_store) out[c + 1] = x1;
          } else {
            if (c < p.n_store) out[c] = __float2bfloat16_rn(x0);
            if (c + 1 < p.n_store) out[c + 1] = __float2bfloat16_rn(x1);
          }
        }
      }
    }
  }
}

// Split-K, for one consumer warp: publishes the warp's 16 rows x 128 columns of the split's promoted
// sum `v` (thread layout as in Sm90Epilogue; rows past m are neither stored nor read) and counts the
// arrival on `counter`. Returns whether this warp arrived last at its counter; then `v` holds the
// sum of every split's partials, added in split order 0..S-1 so that the bits do not depend on which
// split finished last, and the counter is zero again. The result is warp-uniform (the epilogue's
// shuffles need the whole warp).
// kSwapPairs (the cross-bank variants of Sm90MainLoop): each 8-byte pair of the workspace holds
// columns (c + 1, c) instead of (c, c + 1). Only this function writes and reads the partials, so the
// sums are the same; what changes is which register of a 64-bit pair each column must sit in (see
// gemm_config.h).
template <bool kSwapPairs = false>
__device__ __forceinline__ bool Sm90SplitKReduce(float (&v)[64], const Sm90GemmParams& p, int row0, int col0,
                                                 int split, int* counter, int lane) {
  const size_t slice = static_cast<size_t>(p.m) * p.n;
  // Publish the split's partial sums (L2 only: the last split may run on another SM)
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + 8 * h;
    if (row >= p.m) continue;
    float* dst = p.partials + split * slice + static_cast<size_t>(row) * p.n + col0;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const float lo = v[4 * j + 2 * h + (kSwapPairs ? 1 : 0)], hi = v[4 * j + 2 * h + (kSwapPairs ? 0 : 1)];
      __stcg(reinterpret_cast<float2*>(dst + 8 * j), make_float2(lo, hi));
    }
  }
  // Make them visible device-wide before the arrival is counted
  __threadfence();
  __syncwarp();
  int last = 0;
  if (lane == 0) {
    const int arrived = atomicAdd(counter, 1);
    // Acquire side: the other splits' partials are read only after their arrivals were seen
    __threadfence();
    last = arrived == p.sched.k_splits - 1;
    // Every split has arrived: leave the counter zero for the next launch / graph replay
    if (last) atomicExch(counter, 0);
  }
  last = __shfl_sync(0xffffffffu, last, 0);
  __syncwarp();
  if (last == 0) return false;
  __threadfence();

  // Sum the partials in split order 0, 1, ..., S - 1 (L2 reads: other SMs wrote them; this split's
  // own are read back too, so that the loop has no per-split select).
  // NOTES: one runtime loop over the splits outside fully unrolled, branch-free (predicated) loads
  // at immediate offsets from two row pointers. ptxas's wgmma pipeline analysis is sensitive to
  // the control flow here: a split loop nested inside per-row branches, or an early return for
  // warps without valid rows, made it serialize every wgmma of the kernel (C7518: a
  // compiler-inserted wait on a divergent path); per-element addresses across the loop spilled.
  // Check -Xptxas -v for C7518 / C7515 after any change to this function.
  // A pair as loaded, in column order (c, c + 1)
  const auto Unswap = [](float2 x) { return kSwapPairs ? make_float2(x.y, x.x) : x; };
  const bool ok0 = row0 < p.m, ok1 = row0 + 8 < p.m;
  const float* src0 = p.partials + static_cast<size_t>(row0) * p.n + col0;  // dereferenced only when ok0
  const float* src1 = src0 + static_cast<size_t>(8) * p.n;                   // and ok1
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    if (ok0) {
      const float2 x = Unswap(__ldcg(reinterpret_cast<const float2*>(src0 + 8 * j)));
      v[4 * j + 0] = x.x;
      v[4 * j + 1] = x.y;
    }
    if (ok1) {
      const float2 x = Unswap(__ldcg(reinterpret_cast<const float2*>(src1 + 8 * j)));
      v[4 * j + 2] = x.x;
      v[4 * j + 3] = x.y;
    }
  }
#pragma unroll 1
  for (int s = 1; s < p.sched.k_splits; ++s) {
    src0 += slice;
    src1 += slice;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      if (ok0) {
        const float2 x = Unswap(__ldcg(reinterpret_cast<const float2*>(src0 + 8 * j)));
        v[4 * j + 0] = __fadd_rn(v[4 * j + 0], x.x);
        v[4 * j + 1] = __fadd_rn(v[4 * j + 1], x.y);
      }
      if (ok1) {
        const float2 x = Unswap(__ldcg(reinterpret_cast<const float2*>(src1 + 8 * j)));
        v[4 * j + 2] = __fadd_rn(v[4 * j + 2], x.x);
        v[4 * j + 3] = __fadd_rn(v[4 * j + 3], x.y);
      }
    }
  }
  return true;
}

// kPromote = false is the test-only variant (LaunchSm90Fp8GemmNoPromotionForTest): the wgmma
// accumulator carries the whole K (zeroed only by the tile's first k32 step), and the scales of
// group 0 are applied once at the end. kLoop: the 128-wide tile's main-loop variants
// (Sm90MainLoop in gemm_config.h), all giving the default's bits.
template <int BLOCK_M, int BLOCK_N, Fp8Format kBFormat, GemmOutput kOutput, bool kPromote,
          Sm90MainLoop kLoop = Sm90MainLoop::kDefault>
__global__ void __launch_bounds__(kSm90MaxThreads, 1)
    sm90_fp8_gemm_kernel(const __grid_constant__ CUtensorMap tmap_a, const __grid_constant__ CUtensorMap tmap_b,
                         const Sm90GemmParams p) {
  static_assert(BLOCK_M == 64 || BLOCK_M == 128, "BLOCK_M must be 64 or 128 (one wgmma M=64 per consumer warpgroup)");
  static_assert(BLOCK_N == kSm90BlockN || (BLOCK_N == kSm90WideBlockN && BLOCK_M == 128 && kPromote &&
                                           kOutput != GemmOutput::kE4M3),
                "BLOCK_N 128, or the wide tile with BLOCK_M 128 and BF16/FP32 output");
  static_assert(kGemmBlockK == 128, "a stage holds one 128-K group: one 128-byte swizzle row per tile row");
  static_assert(kLoop == Sm90MainLoop::kDefault ||
                    (kPromote && (BLOCK_N == kSm90BlockN || Sm90WideTileHasLoop(kLoop))),
                "the main-loop variants are the 128-wide tile's (Sm90WideTileHasLoop: the wide tile's), "
                "with promotion");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Layout = Sm90SmemLayout<BLOCK_M, BLOCK_N>;
  constexpr int kAcc = BLOCK_N / 2;      // accumulator registers per thread: 64 rows x BLOCK_N / 128 threads
  constexpr int kChunks = BLOCK_N / 8;   // 8-column chunks of the tile (4 accumulators each)
  constexpr int BLOCK_K = kGemmBlockK;
  constexpr int kWgmmaK = 32;                       // FP8 wgmma K: 32 bytes of a 128-byte row
  constexpr int kNumConsumerWarpgroups = BLOCK_M / 64;
  constexpr int kNumConsumerThreads = kNumConsumerWarpgroups * 128;
  constexpr int kNumConsumerWarps = kNumConsumerThreads / 32;
  static_assert(kNumConsumerWarps * kSm90SplitKRowsPerCounter == BLOCK_M,
                "split-K counts arrivals per consumer warp: Sm90SplitKCounters() must match");
  constexpr uint32_t kStageBytes = Layout::kTileABytes + Layout::kTileBBytes;
  // NOTES: setmaxnreg moves registers through a per-CTA pool. The kernel starts every thread at
  // the launch bound's 168 (65536 / 384, rounded down to 8). The producer drops to 40, freeing
  // 128 x 128; two consumer warpgroups rise to 232, taking 256 x 64 = the same 16384. With one
  // consumer warpgroup (BLOCK_M 64, 256 threads) the pool has room to spare.
  constexpr int kProducerRegs = 40;
  constexpr int kConsumerRegs = 232;

  // Carve shared memory: the 128-byte swizzle needs 1024-byte aligned tiles (the base is aligned by
  // hand: sm90::DynamicSmem).
  const int num_stages = p.num_stages;
  const uint32_t smem_base = (sm90::SmemAddr(sm90::DynamicSmem()) + Layout::kAlign - 1) & ~(Layout::kAlign - 1);
  const uint32_t smem_a = smem_base;
  const uint32_t smem_b = smem_a + num_stages * Layout::kTileABytes;
  const uint32_t full_bars = smem_b + num_stages * Layout::kTileBBytes;
  const uint32_t empty_bars = full_bars + num_stages * 8;

  const int warpgroup = static_cast<int>(threadIdx.x / 128);
  const int lane = static_cast<int>(threadIdx.x % 32);
  // The cluster (1 x 1 without one) and this CTA's place in it
  const Sm90TileScheduler& sched = p.sched;
  const int cluster_size = sched.cluster_size;
  // NOTES: read where used (consumers: once per unit) rather than kept: a register live across
  // the K loop and the epilogue made the consumers spill
  const auto cluster_rank = [&] { return cluster_size > 1 ? static_cast<int>(sm90::ClusterCtaRank()) : 0; };

  // Initialize the barriers: full expects the producer's one arrival (+ TMA bytes), empty one
  // arrival per consumer warp of every CTA of the cluster.
  if (threadIdx.x == 0) {
    for (int s = 0; s < num_stages; ++s) {
      sm90::MbarInit(full_bars + 8 * s, 1);
      sm90::MbarInit(empty_bars + 8 * s, kNumConsumerWarps * cluster_size);
    }
    sm90::FenceBarrierInit();
  }
  // With a cluster, no CTA may multicast into or arrive on another before that one's barriers exist
  if (cluster_size > 1) {
    sm90::ClusterArriveRelease();
    sm90::ClusterWait();
  } else {
    __syncthreads();
  }

  const int num_k_groups = sched.num_k_groups;
  const int tiles_m = sched.tiles_m;
  // Clusters take units in turn (a CTA is its own cluster without one)
  const int first_unit = static_cast<int>(blockIdx.x) / cluster_size;
  const int unit_stride = sched.unit_stride;

  if (warpgroup == kNumConsumerWarpgroups) {
    // ---- Producer warpgroup: one thread issues every TMA ----
    sm90::SetMaxNRegDec<kProducerRegs>();
    if (threadIdx.x == kNumConsumerThreads) {
      sm90::PrefetchTensorMap(&tmap_a);
      sm90::PrefetchTensorMap(&tmap_b);
      const int rank = cluster_rank();
      const int rank_m = rank % sched.cluster_m, rank_n = rank / sched.cluster_m;
      // This CTA's share of the stage: rows [rank_n * a_rows, +a_rows) of the A tile for the CTAs of
      // its M-tile, rows [rank_m * b_rows, +b_rows) of the B tile for those of its N-tile (the
      // tensor maps' boxes are that tall). Bit r of a mask = cluster rank r.
      const int a_rows = BLOCK_M / sched.cluster_n, b_rows = BLOCK_N / sched.cluster_m;
      const uint32_t a_share = static_cast<uint32_t>(rank_n * a_rows * BLOCK_K);
      const uint32_t b_share = static_cast<uint32_t>(rank_m * b_rows * BLOCK_K);
      uint16_t a_mask = 0, b_mask = 0;
      for (int j = 0; j < sched.cluster_n; ++j) a_mask |= static_cast<uint16_t>(1u << (rank_m + sched.cluster_m * j));
      for (int i = 0; i < sched.cluster_m; ++i) b_mask |= static_cast<uint16_t>(1u << (sched.cluster_m * rank_n + i));
      int stage = 0;
      uint32_t phase = 0;
      for (int unit = first_unit; unit < sched.num_units; unit += unit_stride) {
        int tile, split, m_tile, n_tile, g_begin, g_end;
        sched.Unit(unit, tile, split);
        sched.Coords(tile, rank_m, rank_n, m_tile, n_tile);
        sched.GroupRange(split, g_begin, g_end);
        // A tile past the matrix (m_tile >= tiles_m) loads the last real one's rows instead (shared
        // only by such CTAs, never stored). NOTES: a box may still lie wholly below m (with
        // cluster_n 2, the second share of a last tile that has at most a_rows rows): TMA zero-fills
        // out-of-bounds elements and counts the whole box's bytes either way.
        const int a_row = min(m_tile, tiles_m - 1) * BLOCK_M + rank_n * a_rows;
        // Row-major B: the box at (K byte 128 g, row b_row). Tiled B: block (n_tile, g) is the 128
        // rows at b_row + 128 g of the [n * k / 128, 128] array, at K byte 0.
        const int b_row = (p.b_tiled ? n_tile * num_k_groups * BLOCK_N : n_tile * BLOCK_N) + rank_m * b_rows;
        // With pair_loads, groups go in pairs: both stages are waited for, then both groups' loads
        // are issued back to back. NOTES: a consumer holds two stages (it issues group g + 1 before
        // it releases g), so waiting for two free stages needs three or more (the launcher checks):
        // the second stage's previous group, g + 1 - num_stages, is released once
        // g + 2 - num_stages < g has arrived.
        const int step = p.pair_loads ? 2 : 1;
        for (int g0 = g_begin; g0 < g_end; g0 += step) {
          const int n = g_end - g0 < step ? g_end - g0 : step;
          // Wait consumer release of the step's stages
          for (int i = 0, s = stage; i < n; ++i, s = s + 1 == num_stages ? 0 : s + 1) {
            sm90::MbarWait(empty_bars + 8 * s, (s < stage ? phase ^ 1 : phase) ^ 1);
          }
          // Issue TMA A and B of each (this CTA's shares, multicast where the tile is shared)
          for (int g = g0; g < g0 + n; ++g) {
            const uint32_t full = full_bars + 8 * stage;
            const uint32_t dst_a = smem_a + stage * Layout::kTileABytes + a_share;
            const uint32_t dst_b = smem_b + stage * Layout::kTileBBytes + b_share;
            sm90::MbarArriveExpectTx(full, kStageBytes);
            if (sched.cluster_n > 1) {
              sm90::TmaLoad2dMulticast(dst_a, &tmap_a, full, g * BLOCK_K, a_row, a_mask);
            } else {
              sm90::TmaLoad2d(dst_a, &tmap_a, full, g * BLOCK_K, a_row);
            }
            const int b_c0 = p.b_tiled ? 0 : g * BLOCK_K, b_c1 = p.b_tiled ? b_row + g * BLOCK_N : b_row;
            if (sched.cluster_m > 1) {
              sm90::TmaLoad2dMulticast(dst_b, &tmap_b, full, b_c0, b_c1, b_mask);
            } else {
              sm90::TmaLoad2d(dst_b, &tmap_b, full, b_c0, b_c1);
            }
            if (++stage == num_stages) {
              stage = 0;
              phase ^= 1;
            }
          }
        }
      }
      // With a cluster, stay until every CTA has released every stage this one filled: after that
      // no consumer of the cluster arrives here any more (the waits for stages never filled, or
      // released long ago, return at once).
      // NOTES: these and the empty waits above acquire at CTA scope, also for other CTAs'
      // arrivals: the order that matters (their wgmma reads of a stage before this producer's TMA
      // overwrites it) comes from the arrival being observed before the TMA is issued; nothing the
      // arrivals release is read here. (An acquire at cluster scope would add an L1 invalidation
      // per wait.)
      if (cluster_size > 1) {
        for (int i = 0; i < num_stages; ++i) {
          sm90::MbarWait(empty_bars + 8 * stage, phase ^ 1);
          if (++stage == num_stages) {
            stage = 0;
            phase ^= 1;
          }
        }
      }
    }
    return;
  }

  // ---- Consumer warpgroups: wgmma, promotion, epilogue ----
  sm90::SetMaxNRegInc<kConsumerRegs>();
  const int warp_in_wg = static_cast<int>((threadIdx.x / 32) % 4);
  // This thread's first row inside the tile (the second is 8 below) and first column offset.
  const int tile_row0 = warpgroup * 64 + warp_in_wg * 16 + lane / 4;
  const int quad_col = 2 * (lane % 4);
  const uint32_t a_wg_offset = static_cast<uint32_t>(warpgroup) * 64 * BLOCK_K;

  // NOTES: two wgmma accumulators (128-wide tile). Group g + 1's wgmmas are issued into one while
  // group g's finished partial sum, in the other, is promoted, so the tensor cores keep working
  // through the promotion FMAs (with one accumulator they idle while both consumer warpgroups
  // promote the same stage). 2 x 64 + 64 promoted registers fit the consumers' 232; the wide
  // tile's 2 x 96 + 96 would not, so it keeps one and relies on the other warpgroup (see the top of
  // the file). The one-accumulator variants of Sm90MainLoop run the 128-wide tile that way too.
  constexpr bool kTwoAccumulators = BLOCK_N == kSm90BlockN && !Sm90OneAccumulator(kLoop);
  // wgmma accumulators: one 128-K group's partial sum each (or all of K)
  float accum0[kAcc], accum1[kTwoAccumulators ? kAcc : 1];
  float result[kAcc];  // the promoted FP32 sum
  // The first k32 step overwrites an accumulator (scale-d = 0); zeroing once keeps the asm operands defined.
#pragma unroll
  for (int i = 0; i < kAcc; ++i) accum0[i] = 0.0f;
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(accum1) / sizeof(float)); ++i) accum1[i] = 0.0f;
  // The ring position of the next stage to consume (issue) and of the next to hand back (release).
  int issue_stage = 0, release_stage = 0;
  uint32_t issue_phase = 0;
  bool issued_any = false;  // (the wide tile's ordered consumers: this warpgroup has issued a group)

  // Waits for the next stage's TMA and issues its 4 x k32 wgmmas over the group's 128 bytes of K
  // into `acc` as one commit group (no wait). `zero_first`: the first k32 step starts from zero.
  auto issue_group = [&](float(&acc)[kAcc], bool zero_first) {
    sm90::MbarWait(full_bars + 8 * issue_stage, issue_phase);
    const uint64_t desc_a = sm90::MakeSmemDescSw128(smem_a + issue_stage * Layout::kTileABytes + a_wg_offset);
    const uint64_t desc_b = sm90::MakeSmemDescSw128(smem_b + issue_stage * Layout::kTileBBytes);
    sm90::FenceOperands(acc);
    sm90::WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < BLOCK_K / kWgmmaK; ++kk) {
      const uint64_t step = static_cast<uint64_t>(kk * kWgmmaK) >> 4;  // +32 bytes per k32 step
      sm90::WgmmaM64NK32<BLOCK_N, kBFormat>(acc, desc_a + step, desc_b + step, (kk == 0 && zero_first) ? 0u : 1u);
    }
    sm90::WgmmaCommitGroup();
    sm90::FenceOperands(acc);
    if (++issue_stage == num_stages) {
      issue_stage = 0;
      issue_phase ^= 1;
    }
  };
  // Hands the oldest consumed stage back to the producer (this warp's wgmmas have finished reading it);
  // with a cluster, to every producer that multicasts into it: lane r arrives at cluster rank r.
  // NOTES: who arrives is decided once, not per group: tested inside the lambda, the launch's
  // cluster size (a kernel parameter, reloaded every group) cost each release three compare-and-
  // branch pairs of fixed latency.
  const bool arrive_local = cluster_size == 1 && lane == 0;
  const bool arrive_remote = cluster_size > 1 && lane < cluster_size;
  auto release_group = [&] {
    const uint32_t empty = empty_bars + 8 * release_stage;
    if (arrive_local) sm90::MbarArrive(empty);
    if (arrive_remote) sm90::MbarArriveRemote(sm90::MapSharedToRank(empty, static_cast<uint32_t>(lane)));
    if (++release_stage == num_stages) release_stage = 0;
  };

  for (int unit = first_unit; unit < sched.num_units; unit += unit_stride) {
    int tile, split, m_tile, n_tile, g_begin, g_end;
    const int rank = cluster_rank();
    sched.Unit(unit, tile, split);
    sched.Coords(tile, rank % sched.cluster_m, rank / sched.cluster_m, m_tile, n_tile);
    sched.GroupRange(split, g_begin, g_end);
    const int num_groups = g_end - g_begin;  // this unit's groups, >= 1
    const int row0 = m_tile * BLOCK_M + tile_row0;
    const int row1 = row0 + 8;
    // (A tile past the matrix, m_tile >= tiles_m in a cluster, has no row below m: it is computed
    // with zero scales and stores nothing.)
    const bool row0_ok = row0 < p.m, row1_ok = row1 < p.m;
    // Scale rows from the split's first group (predicated: rows past m read nothing and contribute zero).
    const float* a_scales0 = p.a_scales + static_cast<size_t>(row0_ok ? row0 : 0) * num_k_groups + g_begin;
    const float* a_scales1 = p.a_scales + static_cast<size_t>(row1_ok ? row1 : 0) * num_k_groups + g_begin;
    // The tile's (first) 128-column scale block: n_tile itself when BLOCK_N is 128
    const Sm90TileScaleBlocks blocks = ScaleBlocksOfTile(n_tile, BLOCK_N, p.n);
    const float* b_scales = p.b_scales + static_cast<size_t>(blocks.lo) * num_k_groups + g_begin;

#pragma unroll
    for (int i = 0; i < kAcc; ++i) result[i] = 0.0f;

    if constexpr (kPromote && !kTwoAccumulators) {
      // One accumulator (the wide tile; the 128-wide one in the one-accumulator variants). Chunk j of the tile
      // (columns 8j..8j+7) lies in scale block `lo` or `hi` (ScaleBlocksOfTile, MiddleChunksInLo); a
      // 128-wide tile lies in `lo` alone.
      constexpr bool kTwoBlocks = kChunks > 16;
      static_assert(kChunks == 16 || (kChunks <= 32 && BLOCK_N % 64 == 0),
                    "a tile lies in one scale block (128 wide) or spans exactly two");
      const float* b_scales_hi = p.b_scales + static_cast<size_t>(blocks.hi) * num_k_groups + g_begin;
      // Chunks 0-7 lie in `lo`, chunks 16 on in `hi`, chunks 8-15 in `lo` exactly when the tile
      // starts on a scale block (MiddleChunksInLo): their scale product is selected once per group.
      const bool mid_lo = !kTwoBlocks || MiddleChunksInLo(blocks.lo_chunks);
      // NOTES: the ordered-consumer checks are hoisted out of the loop (two copies of it, chosen
      // once): as runtime tests on a kernel parameter they cost every group of the plain loop three
      // compare-and-branch pairs of fixed latency. With ordered consumers both warpgroups must walk
      // exactly the same groups (no early exit or per-warpgroup split here), or the named barriers'
      // arrivals and syncs stop pairing.
      const auto run_groups = [&](auto ordered) {
        constexpr bool kOrdered = decltype(ordered)::value;
        for (int g = 0; g < num_groups; ++g) {
          // Ordered consumers: issue in turn with the other warpgroup (kSm90OrderBar*)
          if constexpr (kOrdered) {
            if (warpgroup == 1) {
              sm90::NamedBarrierSync(kSm90OrderBarWg0Issued, kSm90OrderBarThreads);
            } else if (issued_any) {
              sm90::NamedBarrierSync(kSm90OrderBarWg1Issued, kSm90OrderBarThreads);
            }
          }
          issue_group(accum0, true);
          if constexpr (kOrdered) {
            sm90::NamedBarrierArrive(warpgroup == 0 ? kSm90OrderBarWg0Issued : kSm90OrderBarWg1Issued,
                                     kSm90OrderBarThreads);
            issued_any = true;
          }
          // The group's scales, loaded while its wgmmas run. NOTES: after the issue (and the arrive),
          // not before: a bar.sync / bar.arrive completes this thread's earlier memory accesses, so
          // loads ahead of them would put their latency in front of the issue.
          const float b_lo = __ldg(b_scales + g), b_hi = kTwoBlocks ? __ldg(b_scales_hi + g) : b_lo;
          const float a0 = row0_ok ? __ldg(a_scales0 + g) : 0.0f;
          const float a1 = row1_ok ? __ldg(a_scales1 + g) : 0.0f;
          sm90::WgmmaWaitGroup<0>();
          sm90::FenceOperands(accum0);
          release_group();
          // The same product (a_scale[row] * b_scale, rounded once) as the 128-wide tile forms
          const float s0_lo = __fmul_rn(a0, b_lo), s1_lo = __fmul_rn(a1, b_lo);
          const float s0_hi = kTwoBlocks ? __fmul_rn(a0, b_hi) : s0_lo;
          const float s1_hi = kTwoBlocks ? __fmul_rn(a1, b_hi) : s1_lo;
          const float s0_mid = mid_lo ? s0_lo : s0_hi, s1_mid = mid_lo ? s1_lo : s1_hi;
#pragma unroll
          for (int j = 0; j < kChunks; ++j) {
            const float s0 = j < 8 ? s0_lo : j < 16 ? s0_mid : s0_hi;
            const float s1 = j < 8 ? s1_lo : j < 16 ? s1_mid : s1_hi;
            result[4 * j + 0] = __fmaf_rn(s0, accum0[4 * j + 0], result[4 * j + 0]);
            result[4 * j + 1] = __fmaf_rn(s0, accum0[4 * j + 1], result[4 * j + 1]);
            result[4 * j + 2] = __fmaf_rn(s1, accum0[4 * j + 2], result[4 * j + 2]);
            result[4 * j + 3] = __fmaf_rn(s1, accum0[4 * j + 3], result[4 * j + 3]);
          }
        }
      };
      // (Ordered consumers are the wide tile's: the launcher refuses them for the 128-wide one.)
      if (kTwoBlocks && p.ordered_consumers) {
        if constexpr (kTwoBlocks) run_groups(std::true_type{});
      } else {
        run_groups(std::false_type{});
      }
    } else if constexpr (kPromote) {
      // Group g's scales, loaded when g is issued and multiplied (a_scale[row] * b_scale, rounded
      // once) only when g is promoted. NOTES: multiplying at load time put the FMULs, and so the
      // wait for the loads, in front of the next group's wgmma issue; now the loads complete under
      // the wgmma wait.
      struct Scales {
        float a0, a1, b;
      };
      auto group_scales = [&](int g, Scales& s) {
        s.b = __ldg(b_scales + g);
        s.a0 = row0_ok ? __ldg(a_scales0 + g) : 0.0f;
        s.a1 = row1_ok ? __ldg(a_scales1 + g) : 0.0f;
      };
      // Promote: one FMA per accumulator element with the group's scale product.
      auto promote = [&](const float(&acc)[64], const Scales& s) {
        const float s0 = __fmul_rn(s.a0, s.b), s1 = __fmul_rn(s.a1, s.b);
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          result[4 * j + 0] = __fmaf_rn(s0, acc[4 * j + 0], result[4 * j + 0]);
          result[4 * j + 1] = __fmaf_rn(s0, acc[4 * j + 1], result[4 * j + 1]);
          result[4 * j + 2] = __fmaf_rn(s1, acc[4 * j + 2], result[4 * j + 2]);
          result[4 * j + 3] = __fmaf_rn(s1, acc[4 * j + 3], result[4 * j + 3]);
        }
      };
      // Even groups run in accum0, odd groups in accum1; at most two commit groups in flight.
      Scales even, odd = {0.0f, 0.0f, 0.0f};
      group_scales(0, even);
      issue_group(accum0, true);
      for (int g = 0; g < num_groups; g += 2) {
        // Group g (accum0) is in flight: issue g + 1 into accum1, then wait for g alone
        if (g + 1 < num_groups) {
          group_scales(g + 1, odd);
          issue_group(accum1, true);
          sm90::WgmmaWaitGroup<1>();
        } else {
          sm90::WgmmaWaitGroup<0>();
        }
        sm90::FenceOperands(accum0);
        release_group();
        promote(accum0, even);
        if (g + 1 >= num_groups) break;
        // Group g + 1 (accum1) is in flight: issue g + 2 into accum0, then wait for g + 1 alone
        if (g + 2 < num_groups) {
          group_scales(g + 2, even);
          issue_group(accum0, true);
          sm90::WgmmaWaitGroup<1>();
        } else {
          sm90::WgmmaWaitGroup<0>();
        }
        sm90::FenceOperands(accum1);
        release_group();
        promote(accum1, odd);
      }
    } else {
      // Test-only: one accumulator carries the whole K; the scales of group 0 are applied once.
      for (int g = 0; g < num_groups; ++g) {
        issue_group(accum0, g == 0);
        sm90::WgmmaWaitGroup<0>();
        sm90::FenceOperands(accum0);
        release_group();
      }
      const float sb = __ldg(b_scales);
      const float s0 = __fmul_rn(row0_ok ? __ldg(a_scales0) : 0.0f, sb);
      const float s1 = __fmul_rn(row1_ok ? __ldg(a_scales1) : 0.0f, sb);
#pragma unroll
      for (int j = 0; j < kChunks; ++j) {
        result[4 * j + 0] = __fmul_rn(s0, accum0[4 * j + 0]);
        result[4 * j + 1] = __fmul_rn(s0, accum0[4 * j + 1]);
        result[4 * j + 2] = __fmul_rn(s1, accum0[4 * j + 2]);
        result[4 * j + 3] = __fmul_rn(s1, accum0[4 * j + 3]);
      }
    }

    // Split-K: only the warp that arrives last at its 16 rows finishes them, with every split's sum
    bool finish = true;
    if constexpr (BLOCK_N == kSm90BlockN) {  // (the wide tile does not split K)
      if (kPromote && p.sched.k_splits > 1) {
        int* counter = p.counters + tile * kNumConsumerWarps + static_cast<int>(threadIdx.x / 32);
        finish = Sm90SplitKReduce<Sm90SwapsPairs(kLoop)>(result, p, row0, n_tile * BLOCK_N + quad_col, split,
                                                          counter, lane);
      }
    }
    if (finish) Sm90Epilogue<kOutput, kChunks>(result, p, row0, n_tile * BLOCK_N + quad_col, n_tile, lane);
  }
  if constexpr (!kTwoAccumulators) {
    // Ordered consumers: warpgroup 0's last sync matches warpgroup 1's last arrival
    if (p.ordered_consumers && warpgroup == 0 && issued_any) {
      sm90::NamedBarrierSync(kSm90OrderBarWg1Issued, kSm90OrderBarThreads);
    }
  }
#else
  // Built for a target without wgmma/TMA (sm_89): the launcher never starts it there.
  __trap();
#endif
}

}  // namespace fp8serve::cuda
