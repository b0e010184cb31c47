// The GEMM configuration heuristic, on the CPU: every config it returns names a kernel instance that
// exists, fits the device, covers the problem exactly, and sizes its workspace right; and the
// choices that matter for speed are the intended ones.
#include "kernels/cuda/gemm_config.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fp8serve::cuda {
namespace {

DeviceTraits H100() { return DeviceTraits{9, 0, 132, 227 * 1024}; }
DeviceTraits H100Pcie() { return DeviceTraits{9, 0, 114, 227 * 1024}; }
DeviceTraits L4() { return DeviceTraits{8, 9, 58, 99 * 1024}; }

bool Contains(const int* begin, const int* end, int v) { return std::find(begin, end, v) != end; }

TEST(GemmConfigTest, RejectsShapesOutsideTheDeviceLayout) {
  // ... and shapes whose tile counts would overflow the heuristic's ints (found by gemm_plan_fuzz):
  // a dimension above 2^30, or more than 2^31 / 8 output tiles of 16 x 128.
  for (GemmShape s : {GemmShape{0, 128, 128}, GemmShape{1, 0, 128}, GemmShape{1, 100, 128}, GemmShape{1, 128, 784},
                      GemmShape{-3, 128, 128}, GemmShape{(1 << 30) + 1, 128, 128}, GemmShape{1 << 22, 1 << 20, 128},
                      GemmShape{1819045119, 256, 128}, GemmShape{1, 2147483520, 128}, GemmShape{1, 128, (1 << 30) + 128}}) {
    absl::StatusOr<GemmConfig> c = SelectGemmConfig(s, H100());
    ASSERT_FALSE(c.ok()) << s.m << "x" << s.n << "x" << s.k;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

// A device whose traits cannot be real is refused, not computed with (gemm_plan_fuzz found the
// planners' grid arithmetic overflowing on a huge SM count).
TEST(GemmConfigTest, RejectsImplausibleDeviceTraits) {
  for (const DeviceTraits& d : {DeviceTraits{9, 0, 0, 227 * 1024}, DeviceTraits{9, 0, kMaxDeviceSms + 1, 227 * 1024},
                                DeviceTraits{9, 0, 132, -1}, DeviceTraits{8, 9, -954142223, 99 * 1024}}) {
    absl::StatusOr<GemmConfig> c = SelectGemmConfig(GemmShape{64, 256, 896}, d);
    ASSERT_FALSE(c.ok()) << d.num_sms << " SMs, " << d.smem_per_block_optin << " bytes";
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(c.status().message()), ::testing::HasSubstr("device reports"));
    EXPECT_NE(DeviceTraitsProblem(d), "");
  }
  EXPECT_EQ(DeviceTraitsProblem(H100()), "");
  EXPECT_EQ(DeviceTraitsProblem(L4()), "");
}

TEST(GemmConfigTest, RejectsDevicesWithoutFp8TensorCores) {
  absl::StatusOr<GemmConfig> c = SelectGemmConfig(GemmShape{64, 256, 896}, DeviceTraits{8, 6, 84, 99 * 1024});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(c.status().message().find("8.6"), std::string_view::npos) << c.status().message();
}

TEST(GemmConfigTest, WgmmaOnlyOnHopper) {
  absl::StatusOr<GemmConfig> c = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, GemmShape{4096, 4096, 4096}, L4());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<GemmConfig> big = SelectGemmConfig(GemmShape{4096, 4096, 4096}, L4());
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->kernel, GemmKernel::kSm89MmaSync);
}

// Tiled weights are the wgmma kernel's alone: off Hopper the heuristic refuses them instead of
// handing the mma.sync launcher a config it would refuse (found by tests/fuzz/gemm_plan_fuzz).
TEST(GemmConfigTest, TiledWeightsAreRefusedOffHopper) {
  const GemmShape tiled{64, 256, 1024, Fp8Format::kE4M3, GemmOutput::kBF16, WeightLayout::kTiled128};
  for (const absl::StatusOr<GemmConfig>& c :
       {SelectGemmConfig(tiled, L4()), SelectGemmConfigFor(GemmKernel::kSm89MmaSync, tiled, H100())}) {
    ASSERT_FALSE(c.ok()) << DescribeGemmConfig(*c);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(c.status().message()), ::testing::HasSubstr("tiled128 weights need the wgmma kernel"));
  }
  absl::StatusOr<GemmConfig> hopper = SelectGemmConfig(tiled, H100());
  ASSERT_TRUE(hopper.ok()) << hopper.status();
  EXPECT_EQ(hopper->kernel, GemmKernel::kSm90Wgmma);
}

// Sweeps shapes and devices; checks the invariants the launchers rely on.
TEST(GemmConfigTest, EveryConfigIsALaunchableInstanceThatCoversTheProblem) {
  const std::vector<int> ms = {1, 2, 7, 16, 17, 32, 33, 64, 65, 100, 128, 129, 256, 1000, 1024, 4096, 8192, 16384};
  const std::vector<std::pair<int, int>> nks = {{256, 896}, {128, 256}, {4096, 16384}, {16384, 4096},
                                                {8192, 8192}, {128, 128}, {1024, 128}};
  for (const DeviceTraits& d : {H100(), H100Pcie(), L4()}) {
    for (int m : ms) {
      for (auto [n, k] : nks) {
        for (GemmOutput out : {GemmOutput::kE4M3, GemmOutput::kBF16, GemmOutput::kF32}) {
          const GemmShape s{m, n, k, Fp8Format::kE4M3, out};
          SCOPED_TRACE(testing::Message() << "m=" << m << " n=" << n << " k=" << k << " sms=" << d.num_sms);
          absl::StatusOr<GemmConfig> c = SelectGemmConfig(s, d);
          ASSERT_TRUE(c.ok()) << c.status();
          EXPECT_EQ(c->block_k, kGemmBlockK);
          EXPECT_LE(c->smem_bytes, static_cast<size_t>(d.smem_per_block_optin));
          const int tiles = (m + c->block_m - 1) / c->block_m * Sm90TilesN(n, c->block_n);
          if (c->kernel == GemmKernel::kSm90Wgmma) {
            EXPECT_TRUE(Contains(std::begin(kSm90BlockMs), std::end(kSm90BlockMs), c->block_m));
            // The tunings (TuneSm90Config): the wide tile exactly where its rule holds, paired loads
            // exactly where theirs does (never with the wide tile)
            const bool wide = m >= kSm90WideMinMN && n >= kSm90WideMinMN &&
                              static_cast<long long>(m) * n >= kSm90WideMinMxN && out != GemmOutput::kE4M3 &&
                              c->block_m == 128 && c->k_splits == 1;
            EXPECT_EQ(c->block_n, wide ? kSm90WideBlockN : kSm90BlockN);
            EXPECT_EQ(c->pair_loads, !wide && c->stages >= 3 && (k >= kSm90PairMinK || m >= kSm90PairMinM));
            EXPECT_EQ(c->cluster_m * c->cluster_n, 1);
            EXPECT_FALSE(c->ordered_consumers);
            EXPECT_EQ(c->main_loop, Sm90MainLoop::kDefault);  // the variants are the benchmark's
            EXPECT_EQ(c->smem_bytes, Sm90SmemBytes(c->block_m, c->block_n, c->stages));
            EXPECT_GE(c->stages, 2);
            EXPECT_LE(c->stages, 8);
            EXPECT_GE(c->k_splits, 1);
            EXPECT_LE(c->k_splits, kSm90MaxKSplits);
            // Persistent over (tile, split) units: never more CTAs than SMs.
            EXPECT_EQ(c->grid, std::min(tiles * c->k_splits, d.num_sms));
            EXPECT_GE(c->raster_group, 1);
            const int groups = k / kGemmBlockK;
            const size_t ws = GemmWorkspaceBytes(s, *c);
            if (c->k_splits == 1) {
              EXPECT_EQ(ws, 0u);
              // No split although one would fit: the tiles fill more than half the SMs, or K is
              // too short for two splits of kSm90MinGroupsPerSplit groups, or the counters would not fit.
              EXPECT_TRUE(2 * tiles > d.num_sms || groups < 2 * kSm90MinGroupsPerSplit ||
                          Sm90SplitKCounters(m, n, c->block_m) > kSplitKMaxTiles);
            } else {
              // Only grids that leave at least half the SMs idle split, into one wave of units.
              EXPECT_LE(2 * tiles, d.num_sms);
              EXPECT_LE(tiles * c->k_splits, d.num_sms);
              // Every split owns at least kSm90MinGroupsPerSplit whole 128-K groups.
              EXPECT_GE(groups / c->k_splits, kSm90MinGroupsPerSplit);
              // As many splits as the one wave, the cap and the groups allow.
              EXPECT_TRUE(c->k_splits == kSm90MaxKSplits || c->k_splits == groups / kSm90MinGroupsPerSplit ||
                          tiles * (c->k_splits + 1) > d.num_sms);
              // Counters at a fixed place first (one per tile and consumer warp), then the partials.
              EXPECT_LE(Sm90SplitKCounters(m, n, c->block_m), kSplitKMaxTiles);
              EXPECT_EQ(ws, kSplitKCounterBytes + static_cast<size_t>(c->k_splits) * m * n * sizeof(float));
            }
          } else {
            EXPECT_EQ(n % c->block_n, 0);
            EXPECT_TRUE(Contains(std::begin(kSm89BlockMs), std::end(kSm89BlockMs), c->block_m));
            EXPECT_EQ(c->block_n, kSm89BlockN);
            EXPECT_EQ(c->stages, kSm89Stages);
            EXPECT_EQ(c->smem_bytes, Sm89SmemBytes(c->block_m, c->block_n, c->stages));
            EXPECT_GE(c->k_splits, 1);
            // Every split owns at least one whole 128-K group.
            EXPECT_LE(c->k_splits, k / kGemmBlockK);
            EXPECT_EQ(c->grid, tiles * c->k_splits);
            const size_t ws = GemmWorkspaceBytes(s, *c);
            if (c->k_splits == 1) {
              EXPECT_EQ(ws, 0u);
            } else {
              // Counters at a fixed place first (one per tile), then the partial sums.
              EXPECT_LE(tiles, kSplitKMaxTiles);
              EXPECT_EQ(ws, kSplitKCounterBytes + static_cast<size_t>(c->k_splits) * m * n * sizeof(float));
            }
          }
        }
      }
    }
  }
}

TEST(GemmConfigTest, LargeSquareGemmUsesTheDeepestWgmmaPipeline) {
  absl::StatusOr<GemmConfig> c = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, GemmShape{8192, 8192, 8192}, H100());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kernel, GemmKernel::kSm90Wgmma);
  EXPECT_EQ(c->block_m, 128);
  // 7 stages of 32 KB (and their barriers) fit in 227 KB; 8 do not.
  EXPECT_EQ(c->stages, 7);
  EXPECT_EQ(c->k_splits, 1);
  EXPECT_EQ(c->grid, 132);
  EXPECT_EQ(c->raster_group, 8);
}

TEST(GemmConfigTest, HopperServesEveryBatchAboveOneRowWithWgmma) {
  // Small batches too: Hopper has no FP8 mma.sync (it widens the codes to FP16), and a weight-
  // streaming GEMM loses nothing to the 64-row tile's padding. One row takes mma.sync (measured level
  // or ahead there), except on tiled weights, which only the wgmma kernel reads.
  for (int m : {1, 16, 64, 128}) {
    absl::StatusOr<GemmConfig> c = SelectGemmConfig(GemmShape{m, 16384, 4096}, H100());
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->kernel, m <= kHopperMmaSyncMaxM ? GemmKernel::kSm89MmaSync : GemmKernel::kSm90Wgmma) << m;
    c = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, GemmShape{m, 16384, 4096}, H100());
    ASSERT_TRUE(c.ok()) << c.status();
    // 128 tiles nearly fill the 132 SMs already: no split.
    EXPECT_EQ(c->k_splits, 1);
    // 128 rows: 128 tiles of 128 rows are one wave already; 64-row tiles would need two.
    EXPECT_EQ(c->block_m, m <= 64 ? 64 : 128) << m;
  }
}

TEST(GemmConfigTest, SmallBatchServingShapesSplitKToFillTheGpu) {
  // Ada (mma.sync): one row through a 4096x16384 FFN layer: 32 output tiles alone would use a
  // quarter of the SMs.
  absl::StatusOr<GemmConfig> c = SelectGemmConfig(GemmShape{1, 4096, 16384}, L4());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kernel, GemmKernel::kSm89MmaSync);
  EXPECT_EQ(c->block_m, 16);
  EXPECT_GT(c->k_splits, 1);
  EXPECT_GE(c->grid, L4().num_sms);
  // Already enough tiles: no split.
  absl::StatusOr<GemmConfig> wide = SelectGemmConfig(GemmShape{128, 65536, 1024}, L4());
  ASSERT_TRUE(wide.ok()) << wide.status();
  EXPECT_EQ(wide->k_splits, 1);
}

TEST(GemmConfigTest, HopperDownProjectionSplitsKToFillTheGpu) {
  // 4096 x 16384 (an FFN down-projection) at serving batch sizes: 32 or 64 output tiles alone
  // would stream the 64 MB of weights through a quarter or half of the SMs. The splits make one
  // wave of 128 units: 4 splits of 32 groups for 32 tiles, 2 of 64 groups for 64.
  for (int m : {1, 16, 64, 128}) {
    const GemmShape s{m, 4096, 16384, Fp8Format::kE4M3, GemmOutput::kBF16};
    absl::StatusOr<GemmConfig> c = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, s, H100());
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->kernel, GemmKernel::kSm90Wgmma) << m;
    EXPECT_EQ(c->block_m, 64) << m;
    EXPECT_EQ(c->k_splits, m <= 64 ? 4 : 2) << m;
    EXPECT_EQ(c->grid, 128) << m;
    EXPECT_EQ(GemmWorkspaceBytes(s, *c), kSplitKCounterBytes + static_cast<size_t>(c->k_splits) * m * 4096 * 4) << m;
  }
  // 114 SMs fit 3 splits of 32 tiles in one wave (4 would need a second, mostly empty one).
  absl::StatusOr<GemmConfig> pcie = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, GemmShape{1, 4096, 16384}, H100Pcie());
  ASSERT_TRUE(pcie.ok()) << pcie.status();
  EXPECT_EQ(pcie->k_splits, 3);
  EXPECT_EQ(pcie->grid, 96);
  // One tile: the cap. 16 groups: two splits of 8. 8 groups: no split. The bundled model's first
  // layer (7 groups): no split.
  for (auto [k, splits] : {std::pair{16384, kSm90MaxKSplits}, std::pair{2048, 2}, std::pair{1024, 1}, std::pair{896, 1}}) {
    absl::StatusOr<GemmConfig> one = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, GemmShape{1, 128, k}, H100());
    ASSERT_TRUE(one.ok()) << one.status();
    EXPECT_EQ(one->k_splits, splits) << k;
    EXPECT_EQ(one->grid, splits) << k;
  }
}

TEST(GemmConfigTest, MidSizedGemmUsesShortTilesToFillOneWave) {
  // 256 x 4096: 2 x 32 tiles of 128 rows leave half the SMs idle; 64-row tiles give 128 CTAs.
  absl::StatusOr<GemmConfig> c = SelectGemmConfig(GemmShape{256, 4096, 4096}, H100());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kernel, GemmKernel::kSm90Wgmma);
  EXPECT_EQ(c->block_m, 64);
}

TEST(GemmConfigTest, SmallSharedMemoryStepsDownToATileThatFits) {
  // Ada's 99 KB takes the 64-row tile (about 97 KB); a device with 90 KB gets 32-row tiles.
  absl::StatusOr<GemmConfig> ada = SelectGemmConfig(GemmShape{1024, 4096, 4096}, L4());
  ASSERT_TRUE(ada.ok()) << ada.status();
  EXPECT_EQ(ada->kernel, GemmKernel::kSm89MmaSync);
  EXPECT_EQ(ada->block_m, 64);
  absl::StatusOr<GemmConfig> small = SelectGemmConfig(GemmShape{1024, 4096, 4096}, DeviceTraits{8, 9, 58, 90 * 1024});
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->block_m, 32);
  EXPECT_LE(small->smem_bytes, 90u * 1024);
}

TEST(GemmConfigTest, DescriptionNamesTheKernelAndBlocks) {
  absl::StatusOr<GemmConfig> c = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, GemmShape{8192, 8192, 8192}, H100());
  ASSERT_TRUE(c.ok());
  const std::string d = DescribeGemmConfig(*c);
  EXPECT_NE(d.find("sm90_wgmma"), std::string::npos) << d;
  EXPECT_NE(d.find("128x128x128"), std::string::npos) << d;
}

// Cluster (multicast) configs: every one WithSm90Cluster gives is whole clusters on at most the SMs,
// covers every tile (the cluster tiles times the cluster cover tiles_m x tiles_n, at most one
// partial cluster row of M-tiles), keeps the base config's kernel, pipeline and tile, and reads its
// raster group in cluster tiles; what the kernel cannot run in clusters is refused.
TEST(GemmConfigTest, ClusterConfigsAreWholeClustersOverEveryTile) {
  int checked = 0;
  for (const DeviceTraits& dev : {H100(), H100Pcie()}) {
    for (int m : {1, 64, 65, 128, 129, 1000, 4096, 8192}) {
      for (int n : {256, 512, 1024, 4096, 8192, 16384}) {
        for (int k : {256, 4096, 8192}) {
          const GemmShape shape{m, n, k, Fp8Format::kE4M3, GemmOutput::kBF16};
          absl::StatusOr<GemmConfig> base = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, shape, dev);
          ASSERT_TRUE(base.ok()) << base.status();
          for (int cm = 1; cm <= kSm90MaxClusterDim; ++cm) {
            for (int cn = 1; cn <= kSm90MaxClusterDim; ++cn) {
              absl::StatusOr<GemmConfig> c = WithSm90Cluster(*base, shape, dev, cm, cn);
              if (base->k_splits != 1) {
                ASSERT_FALSE(c.ok()) << DescribeGemmConfig(*base);
                EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
                continue;
              }
              ASSERT_TRUE(c.ok()) << DescribeGemmConfig(*base) << ": " << c.status();
              const int size = cm * cn;
              const int tiles_m = (m + c->block_m - 1) / c->block_m, tiles_n = n / kSm90BlockN;
              const int ctiles_m = (tiles_m + cm - 1) / cm, ctiles_n = tiles_n / cn;
              EXPECT_EQ(c->cluster_m, cm);
              EXPECT_EQ(c->cluster_n, cn);
              EXPECT_EQ(c->grid % size, 0) << DescribeGemmConfig(*c);
              EXPECT_GE(c->grid, size);
              EXPECT_LE(c->grid, dev.num_sms);
              EXPECT_LE(c->grid / size, ctiles_m * ctiles_n) << "a cluster without a unit";
              EXPECT_EQ(ctiles_n * cn, tiles_n);
              EXPECT_GE(ctiles_m * cm, tiles_m);
              EXPECT_LT(ctiles_m * cm - tiles_m, cm);
              EXPECT_GE(c->raster_group, 1);
              EXPECT_LE(c->raster_group, ctiles_m);
              EXPECT_EQ(c->kernel, base->kernel);
              EXPECT_EQ(c->block_m, base->block_m);
              EXPECT_EQ(c->stages, base->stages);
              EXPECT_EQ(c->smem_bytes, base->smem_bytes);
              EXPECT_EQ(c->k_splits, 1);
              ++checked;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 300);

  // 8192^3 on 132 SMs: 66 clusters of 2, or 33 of 4; the raster group keeps 8 M-tiles
  const GemmShape big{8192, 8192, 8192, Fp8Format::kE4M3, GemmOutput::kBF16};
  absl::StatusOr<GemmConfig> base = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, big, H100());
  ASSERT_TRUE(base.ok());
  absl::StatusOr<GemmConfig> two = WithSm90Cluster(*base, big, H100(), 2, 1);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->grid, 132);
  EXPECT_EQ(two->raster_group, 4);
  absl::StatusOr<GemmConfig> four = WithSm90Cluster(*base, big, H100(), 2, 2);
  ASSERT_TRUE(four.ok()) << four.status();
  EXPECT_EQ(four->grid, 132);
  EXPECT_NE(DescribeGemmConfig(*four).find("cluster 2x2"), std::string::npos) << DescribeGemmConfig(*four);
  GemmConfig ordered = *four;
  ordered.ordered_consumers = true;
  EXPECT_NE(DescribeGemmConfig(ordered).find("ordered consumers"), std::string::npos) << DescribeGemmConfig(ordered);
  EXPECT_EQ(DescribeGemmConfig(*base).find("cluster"), std::string::npos) << DescribeGemmConfig(*base);
  // The main-loop variants are named; the default is not
  EXPECT_EQ(DescribeGemmConfig(*base).find("default"), std::string::npos) << DescribeGemmConfig(*base);
  for (const Sm90MainLoop loop : kSm90OptInMainLoops) {
    GemmConfig c = *base;
    c.main_loop = loop;
    EXPECT_NE(DescribeGemmConfig(c).find(Sm90MainLoopName(loop)), std::string::npos) << DescribeGemmConfig(c);
  }

  // Refused: dimensions outside [1, 2], N-tiles that cluster_n does not divide, sm89 configs
  for (const auto& [cm, cn] : {std::pair{0, 1}, std::pair{1, 0}, std::pair{3, 1}, std::pair{1, 4}}) {
    absl::StatusOr<GemmConfig> c = WithSm90Cluster(*base, big, H100(), cm, cn);
    ASSERT_FALSE(c.ok()) << cm << "x" << cn;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  }
  const GemmShape odd{8192, 384, 8192, Fp8Format::kE4M3, GemmOutput::kBF16};
  absl::StatusOr<GemmConfig> odd_base = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, odd, H100());
  ASSERT_TRUE(odd_base.ok());
  EXPECT_FALSE(WithSm90Cluster(*odd_base, odd, H100(), 1, 2).ok()) << "3 N-tiles in clusters of 2 along N";
  EXPECT_TRUE(WithSm90Cluster(*odd_base, odd, H100(), 2, 1).ok());
  absl::StatusOr<GemmConfig> ada = SelectGemmConfig(big, L4());
  ASSERT_TRUE(ada.ok());
  EXPECT_FALSE(WithSm90Cluster(*ada, big, L4(), 2, 1).ok());
}

// The wide tile: WithSm90BlockN keeps the kernel and rows, deepens the pipeline as far as shared
// memory allows, covers the new N-tiles with at most one wave, and refuses what the kernel cannot run.
TEST(GemmConfigTest, WideTileConfigsFitAndCoverTheProblem) {
  int checked = 0;
  for (const DeviceTraits& dev : {H100(), H100Pcie()}) {
    for (int m : {1, 129, 1000, 4096, 8192}) {
      for (int n : {128, 384, 1024, 4096, 8192, 16384}) {
        for (GemmOutput out : {GemmOutput::kBF16, GemmOutput::kF32}) {
          const GemmShape shape{m, n, 4096, Fp8Format::kE4M3, out};
          absl::StatusOr<GemmConfig> c = SelectSm90WideTileConfig(shape, dev);
          ASSERT_TRUE(c.ok()) << c.status();
          EXPECT_EQ(c->block_n, kSm90WideBlockN);
          EXPECT_EQ(c->kernel, GemmKernel::kSm90Wgmma);
          EXPECT_EQ(c->block_m, 128);
          EXPECT_EQ(c->k_splits, 1);
          EXPECT_EQ(c->smem_bytes, Sm90SmemBytes(128, kSm90WideBlockN, c->stages));
          EXPECT_LE(c->smem_bytes, static_cast<size_t>(dev.smem_per_block_optin));
          EXPECT_GT(Sm90SmemBytes(128, kSm90WideBlockN, c->stages + 1), static_cast<size_t>(dev.smem_per_block_optin))
              << "a deeper pipeline fits";
          const int tiles = (m + 127) / 128 * Sm90TilesN(n, kSm90WideBlockN);
          EXPECT_EQ(c->grid, std::min(tiles, dev.num_sms));
          EXPECT_GE(c->raster_group, 1);
          EXPECT_LE(c->raster_group, (m + 127) / 128);
          EXPECT_NE(DescribeGemmConfig(*c).find("x192x"), std::string::npos) << DescribeGemmConfig(*c);
          // Then in clusters: whole clusters over the wide N-tiles
          for (const auto& [cm, cn] : {std::pair{2, 1}, std::pair{1, 2}, std::pair{2, 2}}) {
            absl::StatusOr<GemmConfig> mc = WithSm90Cluster(*c, shape, dev, cm, cn);
            const int tiles_n = Sm90TilesN(n, kSm90WideBlockN);
            if (tiles_n % cn != 0) {
              EXPECT_FALSE(mc.ok()) << DescribeGemmConfig(*c) << " in " << cm << "x" << cn;
              continue;
            }
            ASSERT_TRUE(mc.ok()) << mc.status();
            const int ctiles = ((m + 127) / 128 + cm - 1) / cm * (tiles_n / cn);
            EXPECT_EQ(mc->grid, std::min(ctiles, dev.num_sms / (cm * cn)) * cm * cn) << DescribeGemmConfig(*mc);
            EXPECT_EQ(mc->block_n, kSm90WideBlockN);
            EXPECT_EQ(mc->stages, c->stages);
          }
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 100);
  // Not on Ada, and not for E4M3 output
  EXPECT_EQ(SelectSm90WideTileConfig(GemmShape{4096, 4096, 4096, Fp8Format::kE4M3, GemmOutput::kBF16}, L4())
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(SelectSm90WideTileConfig(GemmShape{4096, 4096, 4096, Fp8Format::kE4M3, GemmOutput::kE4M3}, H100())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // 227 KB: 5 stages of 40 KB
  const GemmShape big{8192, 8192, 8192, Fp8Format::kE4M3, GemmOutput::kBF16};
  absl::StatusOr<GemmConfig> base = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, big, H100());
  ASSERT_TRUE(base.ok());
  absl::StatusOr<GemmConfig> wide = WithSm90BlockN(*base, big, H100(), kSm90WideBlockN);
  ASSERT_TRUE(wide.ok()) << wide.status();
  EXPECT_EQ(wide->stages, 5);
  EXPECT_EQ(wide->grid, 132);
  // Then clusters over the 43 wide N-tiles: 2 x 1 only (43 is odd)
  EXPECT_TRUE(WithSm90Cluster(*wide, big, H100(), 2, 1).ok());
  EXPECT_FALSE(WithSm90Cluster(*wide, big, H100(), 1, 2).ok());
  // 128 stays 128 (the identity, stage count included)
  absl::StatusOr<GemmConfig> same = WithSm90BlockN(*base, big, H100(), kSm90BlockN);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(DescribeGemmConfig(*same), DescribeGemmConfig(*base));
  // also for a split-K config (its grid counts the splits)
  const GemmShape down{64, 4096, 16384, Fp8Format::kE4M3, GemmOutput::kBF16};
  absl::StatusOr<GemmConfig> split_base = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, down, H100());
  ASSERT_TRUE(split_base.ok());
  ASSERT_GT(split_base->k_splits, 1) << DescribeGemmConfig(*split_base);
  absl::StatusOr<GemmConfig> split_same = WithSm90BlockN(*split_base, down, H100(), kSm90BlockN);
  ASSERT_TRUE(split_same.ok()) << split_same.status();
  EXPECT_EQ(DescribeGemmConfig(*split_same), DescribeGemmConfig(*split_base));

  // Refused: other widths, E4M3 output, 64-row tiles, split-K, a cluster chosen first, sm89 configs
  const auto refused = [&](const GemmConfig& c, const GemmShape& s, int block_n, absl::string_view why) {
    absl::StatusOr<GemmConfig> r = WithSm90BlockN(c, s, H100(), block_n);
    ASSERT_FALSE(r.ok()) << why;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << why;
    EXPECT_NE(r.status().message().find(why), std::string_view::npos) << r.status();
  };
  refused(*base, big, 256, "block_n must be");
  refused(*base, GemmShape{8192, 8192, 8192, Fp8Format::kE4M3, GemmOutput::kE4M3}, kSm90WideBlockN, "E4M3");
  GemmConfig short_rows = *base;
  short_rows.block_m = 64;
  refused(short_rows, big, kSm90WideBlockN, "block_m 128");
  GemmConfig split = *base;
  split.k_splits = 2;
  refused(split, big, kSm90WideBlockN, "split");
  absl::StatusOr<GemmConfig> clustered = WithSm90Cluster(*base, big, H100(), 2, 1);
  ASSERT_TRUE(clustered.ok());
  refused(*clustered, big, kSm90WideBlockN, "before the cluster");
  absl::StatusOr<GemmConfig> ada = SelectGemmConfig(big, L4());
  ASSERT_TRUE(ada.ok());
  refused(*ada, big, kSm90WideBlockN, "sm90");
  // The launcher's question, tiled B included
  EXPECT_EQ(Sm90BlockNProblem(kSm90WideBlockN, 128, 1, GemmOutput::kBF16, WeightLayout::kRowMajor), "");
  EXPECT_NE(Sm90BlockNProblem(kSm90WideBlockN, 128, 1, GemmOutput::kBF16, WeightLayout::kTiled128), "");
  EXPECT_EQ(Sm90BlockNProblem(kSm90BlockN, 64, 4, GemmOutput::kE4M3, WeightLayout::kTiled128), "");
}

// The tiled weight layout: a bijection onto [0, n * k), each 128 x 128 block one contiguous 16 KB run
// in (N-tile, K-group) order, and TileWeights128 puts every byte where Tiled128Offset says.
// SelectGemmConfig on Hopper = the base wgmma config plus the measured tunings: the wide tile for
// large BF16/F32 GEMMs on row-major weights, paired loads for long K or M >= 256, nothing else.
TEST(GemmConfigTest, TuningsApplyWhereTheyWereMeasuredAhead) {
  const auto select = [](GemmShape s) {
    absl::StatusOr<GemmConfig> c = SelectGemmConfig(s, H100());
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : GemmConfig{};
  };
  const auto base = [](GemmShape s) {
    absl::StatusOr<GemmConfig> c = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, s, H100());
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : GemmConfig{};
  };
  // 8192^3 with BF16 output: the wide tile, 5 stages, one wave of 132 persistent CTAs
  const GemmShape big{8192, 8192, 8192, Fp8Format::kE4M3, GemmOutput::kBF16};
  GemmConfig c = select(big);
  EXPECT_EQ(c.block_n, kSm90WideBlockN) << DescribeGemmConfig(c);
  EXPECT_EQ(c.stages, 5);
  EXPECT_EQ(c.grid, 132);
  EXPECT_FALSE(c.pair_loads);
  // Requantizing (hidden layers), tiled weights, or a smaller M or N: 128 wide, with paired loads
  // (K >= 8192 here)
  for (GemmShape s : {GemmShape{8192, 8192, 8192, Fp8Format::kE4M3, GemmOutput::kE4M3},
                      GemmShape{8192, 8192, 8192, Fp8Format::kE4M3, GemmOutput::kBF16, WeightLayout::kTiled128},
                      GemmShape{2048, 8192, 8192, Fp8Format::kE4M3, GemmOutput::kBF16},
                      GemmShape{4096, 4096, 8192, Fp8Format::kE4M3, GemmOutput::kBF16},
                      GemmShape{8192, 2048, 8192, Fp8Format::kE4M3, GemmOutput::kBF16}}) {
    c = select(s);
    SCOPED_TRACE(testing::Message() << s.m << "x" << s.n << "x" << s.k << " " << GemmOutputName(s.output) << " "
                                    << WeightLayoutName(s.b_layout));
    EXPECT_EQ(c.block_n, kSm90BlockN);
    EXPECT_TRUE(c.pair_loads);
    GemmConfig want = base(s);
    want.pair_loads = true;
    EXPECT_EQ(DescribeGemmConfig(c), DescribeGemmConfig(want)) << "only the pairing differs from the base";
  }
  // 4096 x 16384 and 16384 x 4096 outputs (2^26 elements): wide
  EXPECT_EQ(select(GemmShape{4096, 16384, 4096, Fp8Format::kE4M3, GemmOutput::kBF16}).block_n, kSm90WideBlockN);
  EXPECT_EQ(select(GemmShape{16384, 4096, 4096, Fp8Format::kE4M3, GemmOutput::kF32}).block_n, kSm90WideBlockN);
  // Paired loads: long K at any M above one row, or M >= 256 at any K; not for short K at small M
  EXPECT_TRUE(select(GemmShape{2, 4096, 16384}).pair_loads);
  EXPECT_TRUE(select(GemmShape{256, 256, 768}).pair_loads);
  EXPECT_FALSE(select(GemmShape{64, 16384, 4096}).pair_loads);
  EXPECT_FALSE(select(GemmShape{128, 256, 896}).pair_loads);
  // One row: the mma.sync kernel's config; on tiled weights (which it cannot read), the wgmma one
  for (GemmShape s : {GemmShape{1, 4096, 16384}, GemmShape{1, 256, 896, Fp8Format::kE4M3, GemmOutput::kE4M3}}) {
    absl::StatusOr<GemmConfig> want = SelectGemmConfigFor(GemmKernel::kSm89MmaSync, s, H100());
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(DescribeGemmConfig(select(s)), DescribeGemmConfig(*want));
    s.b_layout = WeightLayout::kTiled128;
    EXPECT_EQ(select(s).kernel, GemmKernel::kSm90Wgmma);
  }
  // The bundled model's layers at serving batches above one row: the base config unchanged
  for (int m : {16, 64, 128}) {
    const GemmShape s{m, 256, 896, Fp8Format::kE4M3, GemmOutput::kE4M3};
    EXPECT_EQ(DescribeGemmConfig(select(s)), DescribeGemmConfig(base(s))) << m;
  }
  // Ada: the mma.sync config, untouched
  absl::StatusOr<GemmConfig> ada = SelectGemmConfig(big, L4());
  ASSERT_TRUE(ada.ok());
  EXPECT_EQ(ada->kernel, GemmKernel::kSm89MmaSync);
  EXPECT_FALSE(ada->pair_loads);
  // Configs the tunings do not start from come back as they are
  absl::StatusOr<GemmConfig> mc = WithSm90Cluster(base(big), big, H100(), 2, 1);
  ASSERT_TRUE(mc.ok());
  absl::StatusOr<GemmConfig> same = TuneSm90Config(*mc, big, H100());
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(DescribeGemmConfig(*same), DescribeGemmConfig(*mc));
}

TEST(GemmConfigTest, Tiled128LayoutIsContiguousBlocksInTileMajorOrder) {
  const int n = 384, k = 640;
  std::vector<uint8_t> src(static_cast<size_t>(n) * k);
  uint32_t x = 12345;
  for (uint8_t& b : src) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(x >> 24);
  }
  std::vector<uint8_t> tiled(src.size(), 0);
  ASSERT_TRUE(TileWeights128(src.data(), n, k, tiled.data()).ok());
  EXPECT_EQ(TileWeights128(src.data(), n, k - 1, tiled.data()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TileWeights128(nullptr, n, k, tiled.data()).code(), absl::StatusCode::kInvalidArgument);
  std::vector<int> hits(src.size(), 0);
  for (int r = 0; r < n; ++r) {
    for (int c = 0; c < k; ++c) {
      const size_t off = Tiled128Offset(r, c, k);
      ASSERT_LT(off, tiled.size());
      ++hits[off];
      ASSERT_EQ(tiled[off], src[static_cast<size_t>(r) * k + c]) << "row " << r << " col " << c;
    }
  }
  EXPECT_TRUE(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; })) << "not a bijection";
  // Block (t, g) starts at (t * k / 128 + g) * 16 KB; inside it, row r is the 128 bytes at r * 128
  const int groups = k / 128;
  for (int t = 0; t < n / 128; ++t) {
    for (int g = 0; g < groups; ++g) {
      const size_t block = (static_cast<size_t>(t) * groups + g) * 128 * 128;
      for (int r = 0; r < 128; r += 37) {
        EXPECT_EQ(0, std::memcmp(tiled.data() + block + static_cast<size_t>(r) * 128,
                                 src.data() + static_cast<size_t>(t * 128 + r) * k + g * 128, 128))
            << "tile " << t << " group " << g << " row " << r;
      }
    }
  }
  EXPECT_STREQ(WeightLayoutName(WeightLayout::kTiled128), "tiled128");
}

}  // namespace
TEST(Sm90MainLoopTest, NamesAndWhatEachVariantChanges) {
  EXPECT_STREQ(Sm90MainLoopName(Sm90MainLoop::kDefault), "default");
  EXPECT_STREQ(Sm90MainLoopName(Sm90MainLoop::kCrossBank), "cross_bank");
  EXPECT_STREQ(Sm90MainLoopName(Sm90MainLoop::kOneAccumulator), "one_accumulator");
  EXPECT_STREQ(Sm90MainLoopName(Sm90MainLoop::kOneAccumulatorCrossBank), "one_accumulator_cross_bank");
  EXPECT_STREQ(Sm90MainLoopName(Sm90MainLoop::kYieldFfma), "yield_ffma");
  // kYieldFfma is the default loop in source (its difference is made in the SASS)
  EXPECT_FALSE(Sm90SwapsPairs(Sm90MainLoop::kYieldFfma));
  EXPECT_FALSE(Sm90OneAccumulator(Sm90MainLoop::kYieldFfma));
  EXPECT_TRUE(Sm90WideTileHasLoop(Sm90MainLoop::kYieldFfma));
  EXPECT_TRUE(Sm90WideTileHasLoop(Sm90MainLoop::kDefault));
  EXPECT_FALSE(Sm90WideTileHasLoop(Sm90MainLoop::kCrossBank));
  EXPECT_FALSE(Sm90WideTileHasLoop(Sm90MainLoop::kOneAccumulator));
  EXPECT_EQ(std::size(kSm90OptInMainLoops), 4u);
  for (const Sm90MainLoop loop : kSm90OptInMainLoops) EXPECT_NE(loop, Sm90MainLoop::kDefault);
  // The two factors the variants cross: swapped split-K pairs, and one accumulator
  EXPECT_FALSE(Sm90SwapsPairs(Sm90MainLoop::kDefault));
  EXPECT_TRUE(Sm90SwapsPairs(Sm90MainLoop::kCrossBank));
  EXPECT_FALSE(Sm90SwapsPairs(Sm90MainLoop::kOneAccumulator));
  EXPECT_TRUE(Sm90SwapsPairs(Sm90MainLoop::kOneAccumulatorCrossBank));
  EXPECT_FALSE(Sm90OneAccumulator(Sm90MainLoop::kDefault));
  EXPECT_FALSE(Sm90OneAccumulator(Sm90MainLoop::kCrossBank));
  EXPECT_TRUE(Sm90OneAccumulator(Sm90MainLoop::kOneAccumulator));
  EXPECT_TRUE(Sm90OneAccumulator(Sm90MainLoop::kOneAccumulatorCrossBank));
  EXPECT_EQ(GemmConfig{}.main_loop, Sm90MainLoop::kDefault);
}

}  // namespace fp8serve::cuda
