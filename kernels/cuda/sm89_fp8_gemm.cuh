// Device code: the mma.sync FP8 GEMM (Ada sm_89, and small M on Hopper), with split-K.
//
// One CTA of 4 warps computes a BLOCK_M x 128 output tile over the 128-K groups of its split:
//  - cp.async streams one 128-K chunk of A (BLOCK_M x 128 bytes) and B (128 x 128 bytes) per stage
//    through a kNumStages-deep shared-memory ring; A rows past m are zero-filled.
//  - Each warp owns all BLOCK_M rows and 32 of the 128 columns: BLOCK_M/16 x 4 tiles of
//    mma.m16n8k32 per 32-K step, fragments built with ldmatrix (on sm_90, which has no FP8
//    mma.sync, the fragments are widened to FP16 in registers: see warp_mma_k32).
//  - Each 128-K group gets fresh partial accumulators (4 k32 steps), then is promoted in FP32:
//    acc = fma(a_scale[row, g] * b_scale[tile_n, g], partial, acc).
//  - With one split the epilogue runs from registers. With S splits each split stores its FP32 tile
//    in the workspace, and the last to arrive at the tile's counter sums the S partials in split
//    order (the same bits on every run) and runs the epilogue.
//
// Fragment layouts of mma.m16n8k32 with 8-bit operands (g = lane / 4, t = lane % 4; the lowest
// k of a register sits in its lowest byte):
//   A 16x32, row-major, 4 x b32: a0 = A[g][4t..4t+3], a1 = A[g+8][4t..4t+3],
//                                a2 = A[g][16+4t..16+4t+3], a3 = A[g+8][16+4t..16+4t+3]
//   B 32x8 (k x n), "col" = stored as B[n][k], 2 x b32: b0 = B[n=g][k=4t..4t+3], b1 = B[g][16+4t..16+4t+3]
//   C/D 16x8 f32: c0, c1 = C[g][2t], C[g][2t+1]; c2, c3 = C[g+8][2t], C[g+8][2t+1]
// ldmatrix.x4 hands lane l the 4 bytes at row l/4, bytes 4(l%4).. of each 8x16-byte matrix, so one
// x4 builds a whole A fragment (matrices: rows 0-7/8-15 x bytes 0-15/16-31) or the B fragments of
// two n8 tiles (matrices: n 0-7/8-15 x k bytes 0-15/16-31).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/gemm_config.h"
#include "kernels/cuda/requant.cuh"
#include "kernels/cuda/sm89_params.h"
#include "kernels/cuda/sm89_ptx.cuh"

namespace fp8serve::cuda {
namespace sm89 {

// NOTES: a stage row is 128 bytes = all 32 banks. The 16-byte chunk c of row r is stored at chunk
// c ^ (r % 8), so the 8 rows one ldmatrix phase reads (same logical chunk, 8 consecutive rows) hit 8
// different chunks: conflict-free without padding, which keeps BLOCK_M = 64 with 4 stages inside
// Ada's 99 KB per-block limit.
__device__ __forceinline__ uint32_t swizzle(int row, int chunk) {
  return static_cast<uint32_t>(row * kRowBytes + ((chunk ^ (row & 7)) << 4));
}

// One k32 step of a warp: part[mt][nt] += A tile mt . B tile nt, from m16n8k32 FP8 fragments.
//
// NOTES: Hopper has no FP8 mma.sync (its FP8 tensor cores are reached through wgmma); ptxas would
// lower m16n8k32 to FP16 HMMA itself, with worse register allocation (spills at BLOCK_M = 64). So
// on sm_90 the fragments are widened here, once per step (A once per m-tile, B once per n-tile),
// and each k32 step is two m16n8k16 FP16 MMAs. Widening is exact (every E4M3 and E5M2 value is an
// FP16 value). The k16 MMA wants thread t's k columns {2t, 2t+1} and {2t+8, 2t+9}; the FP8 thread
// holds real k 4t..4t+3. A dot product does not care how k is numbered as long as A and B agree,
// so real k 4t+j maps to FP16 column 2t+j and real 4t+2+j to 2t+8+j (j = 0, 1) on both sides:
//   k 0..15:  A {a0.lo, a1.lo, a0.hi, a1.hi}, B {b0.lo, b0.hi}
//   k 16..31: A {a2.lo, a3.lo, a2.hi, a3.hi}, B {b1.lo, b1.hi}
template <Fp8Format kBFormat, int kMTiles, int kNTiles>
__device__ __forceinline__ void warp_mma_k32(float (&part)[kMTiles][kNTiles][4], const uint32_t (&a_frag)[kMTiles][4],
                                             const uint32_t (&b_frag)[kNTiles][2]) {
  if constexpr (kMmaPath == MmaPath::kWidened) {
  uint32_t b_half[kNTiles][4];
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt) {
    WidenFp8x4<kBFormat>(b_frag[nt][0], b_half[nt][0], b_half[nt][1]);
    WidenFp8x4<kBFormat>(b_frag[nt][1], b_half[nt][2], b_half[nt][3]);
  }
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    uint32_t a_half[4][2];
#pragma unroll
    for (int i = 0; i < 4; ++i) WidenFp8x4<Fp8Format::kE4M3>(a_frag[mt][i], a_half[i][0], a_half[i][1]);
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      MmaM16N8K16F16(part[mt][nt], a_half[0][0], a_half[1][0], a_half[0][1], a_half[1][1], b_half[nt][0],
                       b_half[nt][1]);
      MmaM16N8K16F16(part[mt][nt], a_half[2][0], a_half[3][0], a_half[2][1], a_half[3][1], b_half[nt][2],
                       b_half[nt][3]);
    }
  }
  } else if constexpr (kMmaPath == MmaPath::kFp8) {
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) mma_m16n8k32<kBFormat>(part[mt][nt], a_frag[mt], b_frag[nt][0], b_frag[nt][1]);
  } else {
    __trap();  // no FP8 tensor cores before sm_89; the launchers never run this kernel there
  }
}

}  // namespace sm89

template <int BLOCK_M, Fp8Format kBFormat, GemmOutput kOutput>
__global__ void __launch_bounds__(sm89::kNumThreads)
    sm89_fp8_gemm_kernel(const sm89::Params p) {
  using namespace sm89;
  constexpr int BLOCK_N = kBlockN;
  constexpr int BLOCK_K = kGemmBlockK;
  constexpr int kNumStages = kSm89Stages;
  constexpr int kMTiles = BLOCK_M / 16;  // m16 tiles per warp (every warp spans all rows)
  constexpr int kNTiles = kWarpN / 8;    // n8 tiles per warp
  constexpr int kKSteps = BLOCK_K / 32;  // k32 MMA steps per 128-K group
  constexpr int kStageABytes = BLOCK_M * kRowBytes;
  constexpr int kStageBBytes = BLOCK_N * kRowBytes;
  constexpr int kChunksPerRow = kRowBytes / 16;
  constexpr int kRowsPerPass = kNumThreads / kChunksPerRow;  // rows one pass of 16-byte copies covers
  static_assert(BLOCK_M == 16 || BLOCK_M == 32 || BLOCK_M == 64, "BLOCK_M must be one of kSm89BlockMs");
  static_assert(BLOCK_N == kSm89BlockN, "one b_scale per tile and group needs BLOCK_N == 128");
  static_assert(BLOCK_K == 128 && kRowBytes == BLOCK_K, "a stage holds exactly one 128-K group");
  static_assert(kNumStages >= 2, "the pipeline needs at least two stages");
  static_assert(kNTiles % 2 == 0, "B fragments are loaded two n8 tiles per ldmatrix.x4");
  static_assert(BLOCK_M % kRowsPerPass == 0 && BLOCK_N % kRowsPerPass == 0, "copies must tile the stage rows");
  static_assert(kRowsPerPass % 8 == 0, "a thread's copy rows must share row % 8 (one swizzled offset)");
  static_assert(SmemBytes<BLOCK_M>() == Sm89SmemBytes(BLOCK_M, BLOCK_N, kNumStages),
                "the config heuristic sizes shared memory with Sm89SmemBytes(): keep the two equal");

  uint8_t* const smem = DynamicSmem();
  uint8_t* smem_a = smem;                              // [kNumStages][BLOCK_M][128], swizzled
  uint8_t* smem_b = smem + kNumStages * kStageABytes;  // [kNumStages][BLOCK_N][128], swizzled
  float* smem_amax = reinterpret_cast<float*>(smem_b + kNumStages * kStageBBytes);  // [kNumWarps][BLOCK_M]
  int* smem_last = reinterpret_cast<int*>(smem_amax + kNumWarps * BLOCK_M);

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int gid = lane / 4, tig = lane % 4;

  // This CTA's tile and split. M-tiles vary fastest, so the CTAs that stream the same weight slice
  // run side by side and B comes from DRAM once.
  const int tiles_mn = p.tiles_m * p.tiles_n;
  const int split = static_cast<int>(blockIdx.x) / tiles_mn;
  const int tile = static_cast<int>(blockIdx.x) % tiles_mn;
  const int tile_m = tile % p.tiles_m, tile_n = tile / p.tiles_m;
  const int m0 = tile_m * BLOCK_M, n0 = tile_n * BLOCK_N;
  const int num_k_groups = p.k / BLOCK_K;
  const int g_begin = split * num_k_groups / p.k_splits;
  const int g_end = (split + 1) * num_k_groups / p.k_splits;
  const int num_groups = g_end - g_begin;  // 0 only when k_splits > groups: the split adds zeros

  // Copy assignment: thread t copies chunk t % 8 of rows t / 8 + 16 i. Every row it touches has the
  // same row % 8, so its swizzled chunk offset is one constant.
  const int copy_row = static_cast<int>(threadIdx.x) / kChunksPerRow;
  const int copy_chunk = static_cast<int>(threadIdx.x) % kChunksPerRow;
  const uint32_t copy_smem = swizzle(copy_row, copy_chunk);
  const uint32_t smem_a_u32 = smem_u32(smem_a), smem_b_u32 = smem_u32(smem_b);
  const uint8_t* b_src = p.b + static_cast<size_t>(n0 + copy_row) * p.k + copy_chunk * 16;

  auto load_stage = [&](int stage, int group) {
    const int k0 = group * BLOCK_K;
    // A: rows past m are zero-filled from a clamped (valid) address
#pragma unroll
    for (int i = 0; i < BLOCK_M / kRowsPerPass; ++i) {
      const int row = m0 + copy_row + i * kRowsPerPass;
      const int src_row = row < p.m ? row : p.m - 1;
      cp_async_16(smem_a_u32 + stage * kStageABytes + copy_smem + i * kRowsPerPass * kRowBytes,
                  p.a + static_cast<size_t>(src_row) * p.k + k0 + copy_chunk * 16, row < p.m ? 16 : 0);
    }
    // B: n is a multiple of 128, every row exists
#pragma unroll
    for (int i = 0; i < BLOCK_N / kRowsPerPass; ++i) {
      cp_async_16(smem_b_u32 + stage * kStageBBytes + copy_smem + i * kRowsPerPass * kRowBytes,
                  b_src + static_cast<size_t>(i * kRowsPerPass) * p.k + k0, 16);
    }
  };

  // ldmatrix addresses (stage 0, k32 step 0; chunk offsets are added per step). A: lane l reads row
  // l % 16 of an m16 tile at k-chunk l / 16. B: lane l reads n row 8 (l / 16) + l % 8 of an n8 pair
  // at k-chunk (l / 8) % 2. Both row sets start at multiples of 8, so row % 8 == l % 8.
  const int a_ld_row = lane % 16, a_ld_chunk = lane / 16;
  const int b_ld_row = warp * kWarpN + (lane / 16) * 8 + lane % 8, b_ld_chunk = (lane / 8) % 2;

  float acc[kMTiles][kNTiles][4];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;

  // Prologue: fill kNumStages - 1 stages (one commit group each, empty past the split's end)
#pragma unroll
  for (int s = 0; s < kNumStages - 1; ++s) {
    if (s < num_groups) load_stage(s, g_begin + s);
    cp_async_commit();
  }

  for (int it = 0; it < num_groups; ++it) {
    const int g = g_begin + it;

    // Issue the group's scale loads first: they land while the MMAs run
    float a_scale[kMTiles][2];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m0 + mt * 16 + gid + 8 * h;
        a_scale[mt][h] = row < p.m ? __ldg(p.a_scales + static_cast<size_t>(row) * num_k_groups + g) : 0.0f;
      }
    const float b_scale = __ldg(p.b_scales + static_cast<size_t>(tile_n) * num_k_groups + g);

    // Wait for this group's stage (this thread's copies), then for every thread's
    cp_async_wait<kNumStages - 2>();
    __syncthreads();

    // Refill the stage every warp finished in the previous iteration (all passed the barrier above)
    {
      const int next = it + kNumStages - 1;
      if (next < num_groups) load_stage(next % kNumStages, g_begin + next);
      cp_async_commit();
    }

    const int stage = it % kNumStages;
    const uint32_t a_base = smem_a_u32 + stage * kStageABytes;
    const uint32_t b_base = smem_b_u32 + stage * kStageBBytes;

    // Fresh partial sums for the group: 4 k32 steps on the tensor cores
    float part[kMTiles][kNTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) part[mt][nt][e] = 0.0f;

#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      uint32_t a_frag[kMTiles][4];
      uint32_t b_frag[kNTiles][2];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
        ldmatrix_x4(a_frag[mt], a_base + swizzle(mt * 16 + a_ld_row, 2 * ks + a_ld_chunk));
#pragma unroll
      for (int np = 0; np < kNTiles / 2; ++np) {
        uint32_t r[4];
        ldmatrix_x4(r, b_base + swizzle(b_ld_row + np * 16, 2 * ks + b_ld_chunk));
        b_frag[2 * np][0] = r[0];
        b_frag[2 * np][1] = r[1];
        b_frag[2 * np + 1][0] = r[2];
        b_frag[2 * np + 1][1] = r[3];
      }
      warp_mma_k32<kBFormat>(part, a_frag, b_frag);
    }

    // Promote in FP32: the scale product first, then one FMA per element
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      const float s0 = a_scale[mt][0] * b_scale, s1 = a_scale[mt][1] * b_scale;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        acc[mt][nt][0] = fmaf(s0, part[mt][nt][0], acc[mt][nt][0]);
        acc[mt][nt][1] = fmaf(s0, part[mt][nt][1], acc[mt][nt][1]);
        acc[mt][nt][2] = fmaf(s1, part[mt][nt][2], acc[mt][nt][2]);
        acc[mt][nt][3] = fmaf(s1, part[mt][nt][3], acc[mt][nt][3]);
      }
    }
  }
  // Only empty groups can be pending here; drain them before the CTA may exit
  cp_async_wait<0>();

  // Split-K: publish this split's tile; the last split of the tile to arrive reduces and finishes it
  if (p.k_splits > 1) {
    const size_t slice = static_cast<size_t>(p.m) * p.n;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m0 + mt * 16 + gid + 8 * h;
        if (row >= p.m) continue;
        float* dst = p.partials + split * slice + static_cast<size_t>(row) * p.n + n0 + warp * kWarpN + 2 * tig;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
          __stcg(reinterpret_cast<float2*>(dst + nt * 8), make_float2(acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1]));
      }
    // Make the partials visible device-wide before the arrival is counted
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
      const int arrived = atomicAdd(p.counters + tile, 1);
      // Acquire side: the other splits' partials are read only after their arrivals were seen
      __threadfence();
      const int last = arrived == p.k_splits - 1;
      // Every split has arrived: leave the counter zero for the next launch / graph replay
      if (last) atomicExch(p.counters + tile, 0);
      *smem_last = last;
    }
    __syncthreads();
    if (*smem_last == 0) return;
    __threadfence();

    // Sum the partials in split order 0..S-1 (L2 reads: other SMs wrote them), so every run gives
    // the same bits whichever split arrives last
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m0 + mt * 16 + gid + 8 * h;
        if (row >= p.m) continue;
        const float* src = p.partials + static_cast<size_t>(row) * p.n + n0 + warp * kWarpN + 2 * tig;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          const float2 own = make_float2(acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1]);
          float2 sum = split == 0 ? own : __ldcg(reinterpret_cast<const float2*>(src + nt * 8));
          for (int s = 1; s < p.k_splits; ++s) {
            const float2 v = s == split ? own : __ldcg(reinterpret_cast<const float2*>(src + s * slice + nt * 8));
            sum.x += v.x;
            sum.y += v.y;
          }
          acc[mt][nt][2 * h] = sum.x;
          acc[mt][nt][2 * h + 1] = sum.y;
        }
      }
  }

  // Epilogue math in FP32: v = acc * col_scale + bias, then ReLU (NaN stays NaN)
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int col = n0 + warp * kWarpN + nt * 8 + 2 * tig + e;
      const float cs = p.col_scales != nullptr ? __ldg(p.col_scales + col) : 1.0f;
      const float bs = p.bias != nullptr ? __ldg(p.bias + col) : 0.0f;
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float v = acc[mt][nt][2 * h + e];
          // Two roundings, never contracted to an FMA: the order the contract writes down
          if (p.col_scales != nullptr) v = __fmul_rn(v, cs);
          if (p.bias != nullptr) v = __fadd_rn(v, bs);
          if (p.relu) v = v < 0.0f ? 0.0f : v;
          acc[mt][nt][2 * h + e] = v;
        }
    }

  if constexpr (kOutput == GemmOutput::kE4M3) {
    // Requantize to E4M3 with one scale per row and 128 columns: the row's amax over the quad (32
    // columns of this warp), then across the 4 warps through shared memory
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float amax = 0.0f;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          amax = fmaxf(amax, fabsf(acc[mt][nt][2 * h]));
          amax = fmaxf(amax, fabsf(acc[mt][nt][2 * h + 1]));
        }
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
        if (tig == 0) smem_amax[warp * BLOCK_M + mt * 16 + gid + 8 * h] = amax;
      }
    __syncthreads();

    const int groups_n = p.n / BLOCK_N;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = mt * 16 + gid + 8 * h;
        const int row = m0 + r;
        if (row >= p.m) continue;
        float amax = smem_amax[r];
#pragma unroll
        for (int w = 1; w < kNumWarps; ++w) amax = fmaxf(amax, smem_amax[w * BLOCK_M + r]);
        const float s = E4M3GroupScale(amax);
        if (warp == 0 && tig == 0) p.d_scales[static_cast<size_t>(row) * groups_n + tile_n] = s;
        uint8_t* drow = static_cast<uint8_t*>(p.d) + static_cast<size_t>(row) * p.ldd;
        // The codes of v / s for the row's kNTiles column pairs (requant.cuh: the division's bits)
        uint16_t codes[kNTiles];
        E4M3Requant(s).FragmentRow(acc, mt, h, codes);
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          const int col = n0 + warp * kWarpN + nt * 8 + 2 * tig;
          if (p.pair_stores) {
            *reinterpret_cast<uint16_t*>(drow + col) = codes[nt];
          } else {
            drow[col] = static_cast<uint8_t>(codes[nt] & 0xFFu);
            drow[col + 1] = static_cast<uint8_t>(codes[nt] >> 8);
          }
        }
      }
  } else {
    // FP32 / BF16: rows < m, columns < n_store
    using OutT = std::conditional_t<kOutput == GemmOutput::kBF16, __nv_bfloat16, float>;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m0 + mt * 16 + gid + 8 * h;
        if (row >= p.m) continue;
        OutT* drow = static_cast<OutT*>(p.d) + static_cast<size_t>(row) * p.ldd;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          const int col = n0 + warp * kWarpN + nt * 8 + 2 * tig;
          const float v0 = acc[mt][nt][2 * h], v1 = acc[mt][nt][2 * h + 1];
          if (p.pair_stores && col + 1 < p.n_store) {
            if constexpr (kOutput == GemmOutput::kBF16) {
              *reinterpret_cast<__nv_bfloat162*>(drow + col) = __floats2bfloat162_rn(v0, v1);
            } else {
              *reinterpret_cast<float2*>(drow + col) = make_float2(v0, v1);
            }
          } else {
            if constexpr (kOutput == GemmOutput::kBF16) {
              if (col < p.n_store) drow[col] = __float2bfloat16_rn(v0);
              if (col + 1 < p.n_store) drow[col + 1] = __float2bfloat16_rn(v1);
            } else {
              if (col < p.n_store) drow[col] = v0;
              if (col + 1 < p.n_store) drow[col + 1] = v1;
            }
          }
        }
      }
  }
}

}  // namespace fp8serve::cuda
