// Device code of the fused MLP: the whole forward of a small FP8 MLP in one launch (host API in
// fused_mlp.h, launcher in fused_mlp.cu). Works on sm_89 and sm_90: cp.async + ldmatrix + mma.sync.
//
// One CTA owns BLOCK_M rows for the whole forward:
//   1. it quantizes its FP32 input rows to E4M3 with 1x128 scales straight into shared memory;
//   2. for every layer, for every 128-column output tile, for every 128-K group, it streams the
//      weight chunk W[tile rows, group] (16 KB) through a kNumStages-deep cp.async ring, and the
//      eight warps (kWarpsM x kWarpsN, each owning WARP_M rows x WARP_N columns of the tile) run
//      4 x m16n8k32 MMAs into a fresh accumulator and promote it in FP32:
//          acc += (a_scale[row, group] * b_scale[tile, group]) * P_group;
//   3. after a tile's last K group: v = acc * col_scale + bias; hidden layers apply ReLU and
//      requantize the tile (one 1x128 output group per row) into the other activation buffer,
//      which is the next layer's A operand; the last layer writes FP32 logits to global memory.
// The chunk sequence (layer, tile, group) is flat, so the ring prefetches the next tile's and the
// next layer's weights while the current tile's epilogue runs. Only bytes that can be nonzero are
// streamed: weight rows up to round_up(n, 16) of a tile and K columns up to round_up(k, 32) of a
// group (a 10-wide last layer loads 16 rows, not 128; a 784-wide input's last group 32 columns).
// Each output element is computed by one thread in a fixed order, with no atomics and no split
// reduction across warps or CTAs: the result is the same bits on every run.
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

#include "kernels/cuda/fused_mlp.h"

namespace fp8serve::cuda {

// ---- Shape constants shared by the kernel and its launcher ----------------------------------------

inline constexpr int kFusedNumThreads = 256;
inline constexpr int kFusedNumWarps = kFusedNumThreads / 32;
inline constexpr int kFusedTileN = 128;  // output columns per weight tile: exactly one output 1x128 group
inline constexpr int kFusedTileK = 128;  // K per pipeline stage: exactly one promotion group
inline constexpr int kFusedStageWeightBytes = kFusedTileN * kFusedTileK;
inline constexpr int kFusedStageColScaleOffset = kFusedStageWeightBytes;
inline constexpr int kFusedStageBiasOffset = kFusedStageColScaleOffset + kFusedTileN * 4;
inline constexpr int kFusedStageBScaleOffset = kFusedStageBiasOffset + kFusedTileN * 4;
inline constexpr int kFusedStageBytes = kFusedStageBScaleOffset + 128;  // stays a multiple of 128
static_assert(kFusedStageBytes % 128 == 0, "stages must keep 128-byte alignment for the swizzle");
static_assert(kFusedTileK == 128, "one stage is one promotion group of the numeric contract");

// Warp grid of a CTA: BLOCK_M 16 -> 1 x 8 warps of 16 x 16; 32 -> 2 x 4 of 16 x 32; 64 -> 2 x 4 of 32 x 32.
__host__ __device__ constexpr int FusedWarpsM(int block_m) { return block_m >= 32 ? 2 : 1; }
__host__ __device__ constexpr int FusedWarpsN(int block_m) { return kFusedNumWarps / FusedWarpsM(block_m); }

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
};

struct FusedMlpParams {
  FusedLayerParams layers[kFusedMaxLayers];
  int num_layers = 0;
  int total_chunks = 0;                // sum over layers of tiles * groups
  int m = 0;
  int k_in = 0;                        // columns of x (= layers[0].n of the input, unpadded)
  int relu = 1;
  int x_vec4 = 0;                      // x is 16-byte aligned and k_in % 4 == 0: float4 loads
  const float* x = nullptr;            // [m, k_in]
  float* y = nullptr;                  // [m, layers[num_layers - 1].n]
  uint32_t act_offset[2] = {0, 0};     // dynamic shared memory byte offsets
  uint32_t scale_offset[2] = {0, 0};
  uint32_t red_offset = 0;
};

namespace fused_detail {

// ---- PTX wrappers ----------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// NOTES: .cg bypasses L1: every weight chunk is read once per CTA, and L2 is where it stays hot
// between forwards and between the CTAs of one forward.
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void CpAsync4(uint32_t dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void LdMatrixX4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// d += A (16 x 32 E4M3) . B (32 x 8, E4M3 or E5M2), FP32 accumulate.
template <bool kE5M2>
__device__ __forceinline__ void MmaFp8(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (kE5M2) {
    asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e5m2.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Byte offset of 16-byte chunk `chunk` (0..7) of `row` inside a 128-byte K group.
// NOTES: rows are 128-byte multiples apart, so without the XOR the 8 row addresses of one ldmatrix
// matrix would all hit the same four banks (8-way conflict); chunk ^ (row % 8) spreads them over
// all 32 banks. Writers (cp.async, the input quantizer, the epilogue) use the same function.
__device__ __forceinline__ uint32_t Swizzle(int row, int chunk) {
  return static_cast<uint32_t>((chunk ^ (row & 7)) << 4);
}

// E4M3 code of v / s, exactly as the CPU's QuantizeActivations (IEEE division, RNE, satfinite).
__device__ __forceinline__ uint16_t QuantizePair(float v0, float v1, float s) {
  return static_cast<uint16_t>(__nv_cvt_float2_to_fp8x2(make_float2(v0 / s, v1 / s), __NV_SATFINITE, __NV_E4M3));
}

// The contract's 1x128 scale of a group with this amax.
__device__ __forceinline__ float GroupScale(float amax) {
  const float s = amax / 448.0f;
  return s > 0.0f ? s : 1.0f;
}

// Position in the flat chunk sequence: layer, output tile, K group.
struct ChunkCursor {
  int layer = 0;
  int tile = 0;
  int group = 0;
};

__device__ __forceinline__ void Advance(ChunkCursor& c, const FusedMlpParams& p) {
  if (++c.group == p.layers[c.layer].groups) {
    c.group = 0;
    if (++c.tile == p.layers[c.layer].tiles) {
      c.tile = 0;
      ++c.layer;
    }
  }
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

// Issues the cp.asyncs of one chunk into `stage` (the caller commits the group).
__device__ __forceinline__ void IssueChunk(const FusedMlpParams& p, const ChunkCursor& c, uint8_t* stage) {
  const FusedLayerParams& l = p.layers[c.layer];
  const int rows = RowsToLoad(l, c.tile);
  const int chunks = KStepsOf(l, c.group) * 2;  // 16-byte chunks per row
  const uint8_t* src = l.w + static_cast<size_t>(c.tile) * kFusedTileN * l.k_pad + c.group * kFusedTileK;
  const uint32_t dst = SmemAddr(stage);
  // Weights: rows x 8 chunks of 16 bytes, 4 per thread at most.
#pragma unroll
  for (int i = 0; i < kFusedTileN * 8 / kFusedNumThreads; ++i) {
    const int idx = static_cast<int>(threadIdx.x) + i * kFusedNumThreads;
    const int r = idx >> 3, ch = idx & 7;
    if (r < rows && ch < chunks) {
      CpAsync16(dst + r * kFusedTileK + Swizzle(r, ch), src + static_cast<size_t>(r) * l.k_pad + ch * 16);
    }
  }
  // The tile's epilogue operands ride with its last K group.
  const int tid = static_cast<int>(threadIdx.x);
  if (c.group == l.groups - 1) {
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

// Quantizes the CTA's FP32 input rows to E4M3 1x128 groups in act / scales (row stride k_pad).
// One warp per (row, group); each lane holds 4 consecutive columns, so it writes one 32-bit word.
// Rows past m and columns past k_in are zeros (code 0, and scale 1 for an all-zero group).
template <int BLOCK_M>
__device__ __forceinline__ void QuantizeInput(const FusedMlpParams& p, int block_row, uint8_t* act, float* scales,
                                              int warp, int lane) {
  // NOTES: kBatch tasks per warp are loaded before any is reduced: a 16-row block has at most
  // 16 x 8 groups / 8 warps = 16 tasks per warp, so its whole input (up to 64 KB) is in flight at
  // once and costs one memory round trip, not one per group.
  constexpr int kBatch = 16;
  const int groups = p.layers[0].groups, stride = p.layers[0].k_pad, k = p.k_in;
  const int tasks = BLOCK_M * groups;
  for (int t0 = warp; t0 < tasks; t0 += kFusedNumWarps * kBatch) {
    float v[kBatch][4];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int task = t0 + j * kFusedNumWarps;
      const int r = task / groups, grp = task - r * groups;
      const int row = block_row + r, c = grp * 128 + lane * 4;
#pragma unroll
      for (int i = 0; i < 4; ++i) v[j][i] = 0.0f;
      if (task < tasks && row < p.m) {
        const float* src = p.x + static_cast<size_t>(row) * k + c;
        if (p.x_vec4) {
          if (c < k) {
            const float4 f = __ldg(reinterpret_cast<const float4*>(src));
            v[j][0] = f.x, v[j][1] = f.y, v[j][2] = f.z, v[j][3] = f.w;
          }
        } else {
#pragma unroll
          for (int i = 0; i < 4; ++i)
            if (c + i < k) v[j][i] = __ldg(src + i);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int task = t0 + j * kFusedNumWarps;
      if (task >= tasks) break;  // warp-uniform
      const int r = task / groups, grp = task - r * groups;
      // Group amax (fmaxf ignores NaN, like the CPU), then the scale and the codes
      float amax = fmaxf(fmaxf(fabsf(v[j][0]), fabsf(v[j][1])), fmaxf(fabsf(v[j][2]), fabsf(v[j][3])));
#pragma unroll
      for (int off = 16; off > 0; off /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
      const float s = GroupScale(amax);
      const uint32_t lo = QuantizePair(v[j][0], v[j][1], s), hi = QuantizePair(v[j][2], v[j][3], s);
      *reinterpret_cast<uint32_t*>(act + r * stride + grp * 128 + Swizzle(r, lane >> 2) + (lane & 3) * 4) =
          lo | (hi << 16);
      if (lane == 0) scales[r * groups + grp] = s;
    }
  }
}

// One K group of one tile for one warp: P = sum of 4 x k32 MMAs (fresh), then acc += (sa * sb) * P.
// kParts = 2 splits P into two interleaved accumulators (even / odd k32 steps) summed in FP32 before
// the promotion: a warp with only 2 MMA tiles then has 4 independent chains of 2 instead of 2 of 4,
// which halves the group's latency (the small-batch critical path); the difference is FP32
// summation order only.
// a_group: shared address of the input activations' column `group * 128` in row 0; w_stage: the
// stage's weight chunk. row0 / col0: the warp's first row in the block / column in the tile.
template <int kMmaM, int kMmaN, int kParts, bool kE5M2>
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

#pragma unroll
  for (int ks = 0; ks < kFusedTileK / 32; ++ks) {
    if (ks >= ksteps) break;  // warp-uniform: the rest of the group is zero padding
    // A: matrices (rows 0-7, k 0-15), (rows 8-15, k 0-15), (rows 0-7, k 16-31), (rows 8-15, k 16-31)
    uint32_t a[kMmaM][4];
#pragma unroll
    for (int mt = 0; mt < kMmaM; ++mt) {
      const int r = row0 + mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      LdMatrixX4(a_group + r * a_stride + Swizzle(r, ks * 2 + (lane >> 4)), a[mt]);
    }
    // B: per pair of n8 tiles, matrices (n 0-7, k 0-15), (n 0-7, k 16-31), (n 8-15, k 0-15), (n 8-15, k 16-31)
    uint32_t b[kMmaN][2];
#pragma unroll
    for (int pr = 0; pr < kMmaN / 2; ++pr) {
      uint32_t r4[4] = {0u, 0u, 0u, 0u};
      if (pr < pairs_valid) {
        const int nr = col0 + pr * 16 + (lane & 7) + (lane >> 4) * 8;
        LdMatrixX4(w_stage + nr * kFusedTileK + Swizzle(nr, ks * 2 + ((lane >> 3) & 1)), r4);
      }
      b[2 * pr][0] = r4[0], b[2 * pr][1] = r4[1];
      b[2 * pr + 1][0] = r4[2], b[2 * pr + 1][1] = r4[3];
    }
#pragma unroll
    for (int mt = 0; mt < kMmaM; ++mt)
#pragma unroll
      for (int nt = 0; nt < kMmaN; ++nt)
        if (nt / 2 < pairs_valid) MmaFp8<kE5M2>(part[ks % kParts][mt][nt], a[mt], b[nt][0], b[nt][1]);
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

}  // namespace fused_detail

// The fused forward. Grid: ceil(m / BLOCK_M) CTAs of kFusedNumThreads; dynamic shared memory as the
// launcher's FusedSmemLayout says.
template <int BLOCK_M, int kNumStages>
__global__ void __launch_bounds__(kFusedNumThreads, BLOCK_M == 16 ? 2 : 1)
    fused_mlp_kernel(const __grid_constant__ FusedMlpParams p) {
  using namespace fused_detail;
  constexpr int kWarpsM = FusedWarpsM(BLOCK_M), kWarpsN = FusedWarpsN(BLOCK_M);
  constexpr int WARP_M = BLOCK_M / kWarpsM, WARP_N = kFusedTileN / kWarpsN;
  constexpr int kMmaM = WARP_M / 16, kMmaN = WARP_N / 8;
  constexpr int kParts = kMmaM * kMmaN <= 2 ? 2 : 1;  // see MmaGroup
  static_assert(BLOCK_M == 16 || BLOCK_M == 32 || BLOCK_M == 64, "BLOCK_M must be 16, 32 or 64");
  static_assert(kWarpsM * kWarpsN == kFusedNumWarps, "the warp grid must use every warp");
  static_assert(WARP_M % 16 == 0, "a warp covers whole m16 MMA tiles");
  static_assert(WARP_N % 16 == 0, "B fragments are loaded as pairs of n8 tiles (ldmatrix.x4)");
  static_assert(kNumStages >= 2, "the ring needs at least two stages");

  extern __shared__ __align__(128) uint8_t smem[];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int warp_m = warp / kWarpsN, warp_n = warp % kWarpsN;
  const int row0 = warp_m * WARP_M, col0 = warp_n * WARP_N;
  const int g = lane >> 2, t = lane & 3;
  const int block_row = static_cast<int>(blockIdx.x) * BLOCK_M;
  // NOTES: buffers are picked with selects, never by indexing a local array with the layer's parity,
  // which would put the array in local memory.
  uint8_t* const act0 = smem + p.act_offset[0];
  uint8_t* const act1 = smem + p.act_offset[1];
  float* const act_scales0 = reinterpret_cast<float*>(smem + p.scale_offset[0]);
  float* const act_scales1 = reinterpret_cast<float*>(smem + p.scale_offset[1]);
  float* const red = reinterpret_cast<float*>(smem + p.red_offset);

  // Start streaming the first kNumStages - 1 weight chunks (one commit group each, empty past the end)
  ChunkCursor load_cursor;
  for (int s = 0; s < kNumStages - 1; ++s) {
    if (s < p.total_chunks) {
      IssueChunk(p, load_cursor, smem + s * kFusedStageBytes);
      Advance(load_cursor, p);
    }
    CpAsyncCommit();
  }

  // Quantize this CTA's input rows under those loads
  QuantizeInput<BLOCK_M>(p, block_row, act0, act_scales0, warp, lane);

  float acc[kMmaM][kMmaN][4];
#pragma unroll
  for (int mt = 0; mt < kMmaM; ++mt)
#pragma unroll
    for (int nt = 0; nt < kMmaN; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;

  ChunkCursor cur;
  int read_stage = 0, write_stage = kNumStages - 1;
  for (int c = 0; c < p.total_chunks; ++c) {
    // Wait for chunk c's group (this thread's copies), then for every thread's: after this barrier
    // chunk c is visible to all, and every warp is done with chunk c - 1, whose stage is refilled next
    CpAsyncWait<kNumStages - 2>();
    __syncthreads();
    if (c + kNumStages - 1 < p.total_chunks) {
      IssueChunk(p, load_cursor, smem + write_stage * kFusedStageBytes);
      Advance(load_cursor, p);
    }
    CpAsyncCommit();
    write_stage = write_stage + 1 == kNumStages ? 0 : write_stage + 1;

    const FusedLayerParams& l = p.layers[cur.layer];
    const uint8_t* stage = smem + read_stage * kFusedStageBytes;
    const bool odd = (cur.layer & 1) != 0;  // layer reads act1 (else act0) and writes the other
    uint8_t* const act_in = odd ? act1 : act0;
    const float* const scales_in = odd ? act_scales1 : act_scales0;
    // 16-column pairs of this warp that hold real output columns (warp-uniform)
    int pairs_valid = (l.n - cur.tile * kFusedTileN - col0 + 15) / 16;
    pairs_valid = pairs_valid < 0 ? 0 : (pairs_valid > kMmaN / 2 ? kMmaN / 2 : pairs_valid);

    // MMA + promotion of this K group
    if (pairs_valid > 0) {
      const uint32_t a_group = SmemAddr(act_in) + cur.group * kFusedTileK;
      const float b_scale = *reinterpret_cast<const float*>(stage + kFusedStageBScaleOffset);
      const int ksteps = KStepsOf(l, cur.group);
      if (l.e5m2) {
        MmaGroup<kMmaM, kMmaN, kParts, true>(a_group, l.k_pad, SmemAddr(stage), scales_in, l.groups, cur.group, b_scale,
                                     row0, col0, pairs_valid, ksteps, lane, acc);
      } else {
        MmaGroup<kMmaM, kMmaN, kParts, false>(a_group, l.k_pad, SmemAddr(stage), scales_in, l.groups, cur.group,
                                      b_scale, row0, col0, pairs_valid, ksteps, lane, acc);
      }
    }

    if (cur.group == l.groups - 1) {
      // Epilogue of the tile: v = acc * col_scale + bias, columns past n forced to zero
      const bool last = cur.layer == p.num_layers - 1;
      const float* cs = reinterpret_cast<const float*>(stage + kFusedStageColScaleOffset);
      const float* bias = reinterpret_cast<const float*>(stage + kFusedStageBiasOffset);
      const int tile_col = cur.tile * kFusedTileN;
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
      } else {
        // Requantize the tile (one 1x128 group per row) into the next layer's A operand.
        // Row amax over this warp's columns: lanes t = 0..3 of a row differ in lane bits 0-1
#pragma unroll
        for (int mt = 0; mt < kMmaM; ++mt) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
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
        uint8_t* const act_out = odd ? act0 : act1;
        float* const scales_out = odd ? act_scales0 : act_scales1;
        const int out_stride = l.tiles * kFusedTileN, out_groups = l.tiles;
#pragma unroll
        for (int mt = 0; mt < kMmaM; ++mt) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int r = row0 + mt * 16 + g + h * 8;
            float amax = 0.0f;
#pragma unroll
            for (int w = 0; w < kWarpsN; ++w) amax = fmaxf(amax, red[w * BLOCK_M + r]);
            const float s = GroupScale(amax);
            uint8_t* dst = act_out + r * out_stride + tile_col;
#pragma unroll
            for (int nt = 0; nt < kMmaN; ++nt) {
              const int col = col0 + nt * 8 + t * 2;
              *reinterpret_cast<uint16_t*>(dst + Swizzle(r, col >> 4) + (col & 15)) =
                  QuantizePair(acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1], s);
            }
            if (warp_n == 0 && t == 0) scales_out[r * out_groups + cur.tile] = s;
          }
        }
      }
#pragma unroll
      for (int mt = 0; mt < kMmaM; ++mt)
#pragma unroll
        for (int nt = 0; nt < kMmaN; ++nt)
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;
    }

    Advance(cur, p);
    read_stage = read_stage + 1 == kNumStages ? 0 : read_stage + 1;
  }
}

}  // namespace fp8serve::cuda
