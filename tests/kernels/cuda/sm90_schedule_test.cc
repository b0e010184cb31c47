// The sm90 GEMM's persistent schedule (sm90_schedule.h), replayed on the host the way the kernel
// walks it: every (tile, K split) is computed by exactly one CTA, the splits of a tile partition its
// K groups, CTAs of a cluster that share an operand tile by multicast really have the same tile, and
// only tiles below the matrix are ever "past" it.
#include "kernels/cuda/sm90_schedule.h"

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cuda/gemm_config.h"

namespace fp8serve::cuda {
namespace {

struct Replay {
  long units_walked = 0;
  long outside = 0;  // CTA-units whose tile lies below the matrix
};

// Walks `s` as every CTA of every cluster would and checks the invariants; `what` names the case.
void Walk(const Sm90TileScheduler& s, const std::string& what, Replay* out) {
  Replay& r = *out;
  std::vector<int> seen(static_cast<size_t>(s.tiles_m) * s.tiles_n * s.k_splits, 0);
  std::vector<int> groups_seen(static_cast<size_t>(s.tiles_m) * s.tiles_n * s.num_k_groups, 0);
  for (int cluster = 0; cluster < s.unit_stride; ++cluster) {
    for (int unit = cluster; unit < s.num_units; unit += s.unit_stride) {
      ++r.units_walked;
      int tile, split, g_begin, g_end;
      s.Unit(unit, tile, split);
      s.GroupRange(split, g_begin, g_end);
      EXPECT_LT(g_begin, g_end) << what << ": empty split " << split;
      std::vector<std::pair<int, int>> at(s.cluster_size);
      for (int rank = 0; rank < s.cluster_size; ++rank) {
        const int rm = rank % s.cluster_m, rn = rank / s.cluster_m;
        int m_tile, n_tile;
        s.Coords(tile, rm, rn, m_tile, n_tile);
        at[rank] = {m_tile, n_tile};
        ASSERT_GE(m_tile, 0) << what;
        ASSERT_GE(n_tile, 0) << what;
        ASSERT_LT(n_tile, s.tiles_n) << what << ": an N-tile past the matrix";
        ASSERT_LT(m_tile, s.ctiles_m * s.cluster_m) << what;
        if (m_tile >= s.tiles_m) {
          ++r.outside;
          continue;
        }
        ++seen[(static_cast<size_t>(m_tile) * s.tiles_n + n_tile) * s.k_splits + split];
        for (int g = g_begin; g < g_end; ++g) {
          ++groups_seen[(static_cast<size_t>(m_tile) * s.tiles_n + n_tile) * s.num_k_groups + g];
        }
      }
      // Multicast: the CTAs of one M-tile (same rm) share A, those of one N-tile (same rn) share B
      for (int a = 0; a < s.cluster_size; ++a) {
        for (int b = 0; b < s.cluster_size; ++b) {
          if (a % s.cluster_m == b % s.cluster_m) {
            EXPECT_EQ(at[a].first, at[b].first) << what << " ranks " << a << ", " << b;
          }
          if (a / s.cluster_m == b / s.cluster_m) {
            EXPECT_EQ(at[a].second, at[b].second) << what << " ranks " << a << ", " << b;
          }
          if (a != b) {
            EXPECT_NE(at[a], at[b]) << what << ": two CTAs of a cluster on one tile";
          }
        }
      }
    }
  }
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i], 1) << what << ": (tile, split) " << i / s.k_splits << ", " << i % s.k_splits;
    if (seen[i] != 1) break;
  }
  for (size_t i = 0; i < groups_seen.size(); ++i) {
    EXPECT_EQ(groups_seen[i], 1) << what << ": K group " << i % s.num_k_groups << " of tile " << i / s.num_k_groups;
    if (groups_seen[i] != 1) break;
  }
}

TEST(Sm90ScheduleTest, EveryTileAndSplitOnceWithAndWithoutClusters) {
  const DeviceTraits h100{9, 0, 132, 227 * 1024};
  long cases = 0, outside = 0;
  for (int m : {1, 64, 65, 129, 300, 1000, 4096}) {
    for (int n : {128, 256, 640, 1024, 4096}) {
      for (int k : {128, 896, 4096}) {
        const GemmShape shape{m, n, k, Fp8Format::kE4M3, GemmOutput::kBF16};
        absl::StatusOr<GemmConfig> base = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, shape, h100);
        ASSERT_TRUE(base.ok()) << base.status();
        for (int block_m : {64, 128}) {
          for (int raster : {1, 2, 3, 8}) {
            GemmConfig c = *base;
            c.block_m = block_m;
            c.raster_group = raster;
            // The heuristic's split (if any), no split, and a forced split of 3
            for (int splits : {base->k_splits, 1, 3}) {
              if (splits > k / kGemmBlockK) continue;
              c.k_splits = splits;
              for (int grid : {1, 5, 132}) {
                c.grid = grid;
                const std::string what = absl::StrCat("m", m, " n", n, " k", k, " ", DescribeGemmConfig(c));
                Replay r;
                Walk(MakeSm90Schedule(m, n, k, c), what, &r);
                EXPECT_EQ(r.outside, 0) << what;
                ++cases;
                if (HasFailure()) return;
              }
            }
            if (base->k_splits != 1) continue;
            for (const auto& [cm, cn] : {std::pair{2, 1}, std::pair{1, 2}, std::pair{2, 2}}) {
              GemmConfig plain = *base;
              plain.block_m = block_m;
              plain.raster_group = raster;
              absl::StatusOr<GemmConfig> mc = WithSm90Cluster(plain, shape, h100, cm, cn);
              if (!mc.ok()) {
                EXPECT_NE((n / kSm90BlockN) % cn, 0) << mc.status();  // the only refusal here
                continue;
              }
              for (int clusters : {1, 3, mc->grid / (cm * cn)}) {
                GemmConfig c = *mc;
                c.grid = clusters * cm * cn;
                const std::string what = absl::StrCat("m", m, " n", n, " k", k, " ", DescribeGemmConfig(c));
                const Sm90TileScheduler s = MakeSm90Schedule(m, n, k, c);
                EXPECT_EQ(s.unit_stride, clusters);
                Replay r;
                Walk(s, what, &r);
                const int tiles_m = (m + block_m - 1) / block_m;
                // Below-the-matrix CTAs: exactly the missing M-tiles of the last cluster row, per N-tile
                EXPECT_EQ(r.outside, static_cast<long>((s.ctiles_m * cm - tiles_m)) * s.tiles_n) << what;
                outside += r.outside;
                ++cases;
                if (HasFailure()) return;
              }
            }
          }
        }
      }
    }
  }
  EXPECT_GT(cases, 2000);
  EXPECT_GT(outside, 0) << "no case had a tile below the matrix";
  std::printf("replayed %ld schedules (%ld CTA-units below the matrix)\n", cases, outside);
}

// The wide tile (192 columns, WithSm90BlockN): N-tiles cover n once even where 192 does not divide
// it (the last tile reaches past n), with and without clusters.
TEST(Sm90ScheduleTest, WideTilesCoverEveryColumnOnce) {
  const DeviceTraits h100{9, 0, 132, 227 * 1024};
  long cases = 0;
  for (int m : {1, 129, 1000, 8192}) {
    for (int n : {128, 256, 384, 640, 1024, 4096, 8192, 16384}) {
      for (int k : {128, 4096}) {
        const GemmShape shape{m, n, k, Fp8Format::kE4M3, GemmOutput::kBF16};
        absl::StatusOr<GemmConfig> wide = SelectSm90WideTileConfig(shape, h100);
        ASSERT_TRUE(wide.ok()) << wide.status();
        const int tiles_n = Sm90TilesN(n, kSm90WideBlockN);
        EXPECT_LT((tiles_n - 1) * kSm90WideBlockN, n) << "a tile wholly past n";
        EXPECT_GE(tiles_n * kSm90WideBlockN, n) << "columns no tile covers";
        for (const auto& [cm, cn] : {std::pair{1, 1}, std::pair{2, 1}, std::pair{1, 2}, std::pair{2, 2}}) {
          absl::StatusOr<GemmConfig> c = WithSm90Cluster(*wide, shape, h100, cm, cn);
          if (!c.ok()) {
            EXPECT_NE(tiles_n % cn, 0) << c.status();  // the only refusal here
            continue;
          }
          EXPECT_EQ(c->block_n, kSm90WideBlockN);
          const std::string what = absl::StrCat("m", m, " n", n, " k", k, " ", DescribeGemmConfig(*c));
          const Sm90TileScheduler s = MakeSm90Schedule(m, n, k, *c);
          EXPECT_EQ(s.tiles_n, tiles_n) << what;
          Replay r;
          Walk(s, what, &r);
          ++cases;
          if (HasFailure()) return;
        }
      }
    }
  }
  EXPECT_GT(cases, 150);
  std::printf("replayed %ld wide-tile schedules\n", cases);
}

// ScaleBlocksOfTile: every column of every tile below n gets the scale block it lies in, and the
// kernel's choice (chunks below 8 in `lo`, from 16 on in `hi`, 8..15 by MiddleChunksInLo) agrees.
TEST(Sm90ScheduleTest, EveryColumnGetsItsScaleBlock) {
  long columns = 0;
  for (int n = 128; n <= 16384; n += 128) {
    for (const int block_n : {kSm90BlockN, kSm90WideBlockN}) {
      for (int t = 0; t < Sm90TilesN(n, block_n); ++t) {
        const Sm90TileScaleBlocks b = ScaleBlocksOfTile(t, block_n, n);
        const std::string what = absl::StrCat("n ", n, " block_n ", block_n, " tile ", t);
        ASSERT_GE(b.lo, 0) << what;
        ASSERT_LE(b.lo, b.hi) << what;
        ASSERT_LT(b.hi, n / kGemmBlockK) << what << ": a scale row past B's";
        if (block_n == kSm90BlockN) {
          EXPECT_EQ(b.lo, t) << what;
          EXPECT_EQ(b.lo_chunks, 16) << what;
        } else {
          // On a scale block or halfway into one: the wide kernel's one select per group relies on it
          ASSERT_TRUE(b.lo_chunks == 8 || b.lo_chunks == 16) << what << ": lo_chunks " << b.lo_chunks;
        }
        for (int j = 0; j < block_n / 8; ++j) {
          const int col = t * block_n + 8 * j;
          if (col >= n) break;
          const int want = col / kGemmBlockK;
          const int got = j < b.lo_chunks ? b.lo : b.hi;
          ASSERT_EQ(got, want) << what << " chunk " << j;
          // The kernel's form of the same choice; a 128-wide tile never reaches chunk 16
          ASSERT_EQ(j < 8 || (j < 16 && MiddleChunksInLo(b.lo_chunks)), j < b.lo_chunks) << what << " chunk " << j;
          // All 8 columns of a chunk lie in one block
          ASSERT_EQ((col + 7) / kGemmBlockK, want) << what << " chunk " << j;
          ++columns;
        }
      }
    }
  }
  EXPECT_GT(columns, 100000);
}

}  // namespace
}  // namespace fp8serve::cuda
