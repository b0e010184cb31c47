// The sm90 GEMM's persistent tile scheduler (sm90_fp8_gemm.cuh): which unit of work, (tile, K
// split) or cluster tile, every CTA of the grid takes and in what order. Plain C++ that the kernel
// and its launcher share and that gemm_config's host tests replay (sm90_schedule_test), so the
// coverage and the multicast invariants are checked on every machine.
#pragma once

#include "kernels/cuda/gemm_config.h"
#include "kernels/cuda/host_device.h"

namespace fp8serve::cuda {

// Persistent order of the units of work, (tile, split) pairs, filled by the launcher. Tiles follow
// grouped rasterization: groups of `raster_group` M-tiles sweep all N-tiles together (M fastest
// inside a group), so the CTAs running at one time share a few A row blocks and B column blocks in
// L2. The splits of a tile are adjacent units, so they run at the same time and the last finds the
// others' partial sums still in L2. With clusters the same order walks cluster tiles (k_splits is
// then 1), and cluster c of the grid takes units c, c + unit_stride, ...
// NOTES: kernel parameters live in the constant bank, where instructions read them as operands: a
// field here costs the consumers no register across the K loop, where a value computed on the
// device would (these took the consumers past their registers when they were computed in-kernel).
struct Sm90TileScheduler {
  int tiles_m = 0;
  int tiles_n = 0;
  int cluster_m = 1;     // CTAs per cluster along M / N (1 x 1 without clusters)
  int cluster_n = 1;
  int cluster_size = 1;  // cluster_m * cluster_n
  int ctiles_m = 0;      // cluster tiles: ceil(tiles_m / cluster_m) x tiles_n / cluster_n
  int ctiles_n = 0;
  int raster_group = 1;  // 1..ctiles_m, in cluster tiles along M
  int k_splits = 1;      // 1..k/128 (1 with clusters)
  int num_units = 0;     // ctiles_m * ctiles_n * k_splits
  int num_k_groups = 0;  // 128-K groups of the whole K
  int unit_stride = 1;   // clusters in the grid

  FP8SERVE_HOST_DEVICE inline void Unit(int unit, int& tile, int& split) const {
    tile = unit / k_splits;
    split = unit - tile * k_splits;
  }

  // The split's 128-K groups [begin, end): as even as whole groups allow, never empty (the launcher
  // keeps k_splits <= num_k_groups).
  FP8SERVE_HOST_DEVICE inline void GroupRange(int split, int& begin, int& end) const {
    begin = static_cast<int>(static_cast<long long>(split) * num_k_groups / k_splits);
    end = static_cast<int>(static_cast<long long>(split + 1) * num_k_groups / k_splits);
  }

  // The tile CTA (rm, rn) of the cluster works on in cluster tile `tile`; it may lie below the
  // matrix (m_tile >= tiles_m) when tiles_m is not a multiple of cluster_m.
  FP8SERVE_HOST_DEVICE inline void Coords(int tile, int rm, int rn, int& m_tile, int& n_tile) const {
    const int tiles_per_group = raster_group * ctiles_n;
    const int group = tile / tiles_per_group;
    const int first_m = group * raster_group;
    const int group_m = raster_group < ctiles_m - first_m ? raster_group : ctiles_m - first_m;
    const int in_group = tile - group * tiles_per_group;
    m_tile = (first_m + in_group % group_m) * cluster_m + rm;
    n_tile = in_group / group_m * cluster_n + rn;
  }
};

// The 128-column scale blocks of B (b_scales rows) that tile `n_tile` of a BLOCK_N-wide tiling
// spans: its 8-column chunks [0, lo_chunks) lie in block `lo`, the rest in block `hi`. A 128-wide
// tile lies in one block (lo_chunks = 16, hi = lo). A 192-wide tile starts at a multiple of 64, so
// it spans exactly two blocks, the boundary after chunk 16 (even tiles) or 8 (odd tiles); `hi` is
// clamped to the last block of an n-column B, which only columns past n would otherwise need.
struct Sm90TileScaleBlocks {
  int lo = 0;
  int hi = 0;
  int lo_chunks = 0;
};
FP8SERVE_HOST_DEVICE inline Sm90TileScaleBlocks ScaleBlocksOfTile(int n_tile, int block_n, int n) {
  Sm90TileScaleBlocks b;
  const int first_col = n_tile * block_n;
  b.lo = first_col / kGemmBlockK;
  const int lo_cols = (b.lo + 1) * kGemmBlockK - first_col;
  b.lo_chunks = (lo_cols < block_n ? lo_cols : block_n) / 8;
  const int last_block = n / kGemmBlockK - 1;
  b.hi = b.lo_chunks * 8 == block_n ? b.lo : (b.lo + 1 < last_block ? b.lo + 1 : last_block);
  return b;
}

// Which scale block each 8-column chunk j of a tile lies in, the way the wide-tile kernel decides it
// for j unrolled: chunks below 8 in `lo`, chunks from 16 on in `hi`, and chunks 8..15 all in `lo` or
// all in `hi`. A 192-wide tile starts at a multiple of 64 columns, so lo_chunks is 16 (the tile
// starts on a scale block) or 8, and chunk j is in `lo` exactly when j < 8 || (j < 16 &&
// MiddleChunksInLo(lo_chunks)) (sm90_schedule_test checks it for every tile): the kernel selects the
// middle chunks' scale product once per group, not once per chunk.
FP8SERVE_HOST_DEVICE constexpr bool MiddleChunksInLo(int lo_chunks) { return lo_chunks >= 16; }

// The schedule of a launch of `c` (checked by the launcher) for an m x n x k GEMM, with the grid as
// configured (a cluster launch may shrink the grid, and unit_stride with it).
inline Sm90TileScheduler MakeSm90Schedule(int m, int n, int k, const GemmConfig& c) {
  Sm90TileScheduler s;
  s.tiles_m = (m + c.block_m - 1) / c.block_m;
  s.tiles_n = Sm90TilesN(n, c.block_n);
  s.cluster_m = c.cluster_m;
  s.cluster_n = c.cluster_n;
  s.cluster_size = c.cluster_m * c.cluster_n;
  s.ctiles_m = (s.tiles_m + c.cluster_m - 1) / c.cluster_m;
  s.ctiles_n = (s.tiles_n + c.cluster_n - 1) / c.cluster_n;
  s.raster_group = c.raster_group < s.ctiles_m ? c.raster_group : s.ctiles_m;  // cluster tiles along M
  s.k_splits = c.k_splits;
  s.num_units = s.ctiles_m * s.ctiles_n * c.k_splits;
  s.num_k_groups = k / kGemmBlockK;
  s.unit_stride = c.grid / s.cluster_size;
  return s;
}

}  // namespace fp8serve::cuda
