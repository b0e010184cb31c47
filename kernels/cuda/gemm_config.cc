#include "kernels/cuda/gemm_config.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace fp8serve::cuda {

namespace {

// NOTES: on Hopper the wgmma kernel takes every shape. Measured on an H200 (fp8_gemm_bench, L2
// flushed), the mma.sync kernel lost at every M there: Hopper has no FP8 mma.sync, so it runs FP16
// MMAs on widened codes (64 x 16384 x 4096: 63.6 us against 30.7 us for wgmma; 1 x 16384 x 4096:
// 31.1 against 29.8), while below 64 rows the wgmma tile's wasted M tail costs nothing in a GEMM
// that is a weight stream. mma.sync serves Ada.
// sm89 split-K aims at this many CTAs per SM so that a weight-streaming GEMM keeps enough loads in
// flight to cover HBM latency.
constexpr int kSplitKCtasPerSm = 2;
// A split should own at least this many 128-K groups, so the fixup's extra partial-sum traffic stays
// small against the split's own weight traffic (a group of a 128-wide tile is 16 KB of weights
// against 128 x BLOCK_M x 4 bytes of partials).
constexpr int kMinGroupsPerSplit = 2;

int CeilDivInt(int a, int b) { return (a + b - 1) / b; }

absl::Status CheckShape(const GemmShape& s) {
  if (s.m < 1 || s.n < 1 || s.k < 1) {
    return absl::InvalidArgumentError(absl::StrCat("GEMM shape ", s.m, "x", s.n, "x", s.k, " is empty"));
  }
  if (s.n % kGemmBlockK != 0 || s.k % kGemmBlockK != 0) {
    return absl::InvalidArgumentError(absl::StrCat("GEMM shape ", s.m, "x", s.n, "x", s.k,
                                                   ": n and k must be padded to multiples of ", kGemmBlockK));
  }
  // The heuristics count rows, columns, tiles (16 x 128 at the smallest) and splits in int: refuse
  // what would overflow them (found by tests/fuzz/gemm_plan_fuzz; no real GEMM comes near these).
  constexpr long long kMaxTiles = INT32_MAX / kSm90MaxKSplits;
  if (s.m > kMaxGemmDim || s.n > kMaxGemmDim || s.k > kMaxGemmDim ||
      (static_cast<long long>(s.m) + 15) / 16 * (s.n / kGemmBlockK) > kMaxTiles) {
    return absl::InvalidArgumentError(absl::StrCat("GEMM shape ", s.m, "x", s.n, "x", s.k,
                                                   " is too large for one launch (each dimension at most ", kMaxGemmDim,
                                                   ", at most ", kMaxTiles, " output tiles of 16 x 128)"));
  }
  if (s.b_layout == WeightLayout::kTiled128 && !Tiled128RowsFit(s.n, s.k)) {
    return absl::InvalidArgumentError(absl::StrCat("GEMM shape ", s.m, "x", s.n, "x", s.k,
                                                   ": tiled B has more 128-byte rows than TMA coordinates reach"));
  }
  return absl::OkStatus();
}

// The deepest sm90 pipeline (at most kSm90MaxStages) whose shared memory fits the device, or 0
// when not even one stage does.
int DeepestSm90Stages(int block_m, int block_n, const DeviceTraits& d) {
  for (int st = kSm90MaxStages; st >= 1; --st) {
    if (Sm90SmemBytes(block_m, block_n, st) <= static_cast<size_t>(d.smem_per_block_optin)) return st;
  }
  return 0;
}

bool HasFp8TensorCores(const DeviceTraits& d) { return d.cc_major > 8 || (d.cc_major == 8 && d.cc_minor >= 9); }
bool IsHopper(const DeviceTraits& d) { return d.cc_major == 9 && d.cc_minor == 0; }

GemmConfig Sm90Config(const GemmShape& s, const DeviceTraits& d) {
  GemmConfig c;
  c.kernel = GemmKernel::kSm90Wgmma;
  c.block_n = kSm90BlockN;
  const int tiles_n = s.n / kSm90BlockN;
  // 64-row tiles when M fits one (a 128-row tile would be half padding), or when they still make
  // a single wave that keeps more SMs busy than 128-row tiles do; otherwise 128-row tiles, which
  // read each weight tile half as often.
  c.block_m = 128;
  const int tiles64 = CeilDivInt(s.m, 64) * tiles_n, tiles128 = CeilDivInt(s.m, 128) * tiles_n;
  if (s.m <= 64 || (tiles64 <= d.num_sms && tiles128 < tiles64)) c.block_m = 64;
  c.stages = DeepestSm90Stages(c.block_m, c.block_n, d);  // (the caller refuses fewer than 2)
  c.smem_bytes = Sm90SmemBytes(c.block_m, c.block_n, c.stages);
  const int tiles_m = CeilDivInt(s.m, c.block_m);
  const int tiles = tiles_m * tiles_n;
  // NOTES: split-K when the tiles leave at least half the SMs idle. One persistent CTA streams
  // weights about as fast as the kernel needs to keep up with HBM only when (nearly) every SM runs
  // one (measured on an H200: 4096 x 16384 at M <= 64, 32 tiles, took 53 us, cuBLASLt 25; 16384 x
  // 4096, 128 tiles, ran level with it). Each (tile, split) pair is one unit of work; the split
  // count is num_sms / tiles rounded DOWN, so that the units make one wave: one split more would
  // need a second, mostly empty wave that costs more than the shorter splits save (32 tiles on 132
  // SMs: 4 splits of 32 groups each in one wave, against 5 splits of 26 groups in two). Capped by
  // kSm90MaxKSplits and by kSm90MinGroupsPerSplit; one split (no workspace, no fixup) below 2.
  c.k_splits = 1;
  const int groups = s.k / kGemmBlockK;
  if (2 * tiles <= d.num_sms && Sm90SplitKCounters(s.m, s.n, c.block_m) <= kSplitKMaxTiles) {
    const int splits = std::min({d.num_sms / tiles, groups / kSm90MinGroupsPerSplit, kSm90MaxKSplits});
    if (splits >= 2) c.k_splits = splits;
  }
  c.grid = std::min(tiles * c.k_splits, d.num_sms);
  // Groups of M-tiles sweep N together: a group's A rows and the B tiles it shares stay in L2.
  c.raster_group = std::min(tiles_m, 8);
  return c;
}

GemmConfig Sm89Config(const GemmShape& s, const DeviceTraits& d) {
  GemmConfig c;
  c.kernel = GemmKernel::kSm89MmaSync;
  c.block_n = kSm89BlockN;
  c.block_m = kSm89BlockMs[std::size(kSm89BlockMs) - 1];
  for (int bm : kSm89BlockMs) {
    if (s.m <= bm) {
      c.block_m = bm;
      break;
    }
  }
  c.stages = kSm89Stages;
  // Ada's SMs have 100 KB of shared memory: step down to a shorter tile until the pipeline fits.
  for (int i = static_cast<int>(std::size(kSm89BlockMs)) - 1; i >= 0; --i) {
    const int bm = kSm89BlockMs[i];
    if (bm > c.block_m) continue;
    c.block_m = bm;
    if (Sm89SmemBytes(bm, c.block_n, c.stages) <= static_cast<size_t>(d.smem_per_block_optin)) break;
  }
  c.smem_bytes = Sm89SmemBytes(c.block_m, c.block_n, c.stages);
  const int tiles = CeilDivInt(s.m, c.block_m) * (s.n / c.block_n);
  const int groups = s.k / kGemmBlockK;
  c.k_splits = 1;
  const int want_ctas = kSplitKCtasPerSm * d.num_sms;
  if (tiles < want_ctas && tiles <= kSplitKMaxTiles) {
    c.k_splits = std::clamp(CeilDivInt(want_ctas, tiles), 1, std::max(1, groups / kMinGroupsPerSplit));
  }
  c.grid = tiles * c.k_splits;
  return c;
}

}  // namespace

std::string DeviceTraitsProblem(const DeviceTraits& d) {
  if (d.num_sms < 1 || d.num_sms > kMaxDeviceSms) {
    return absl::StrCat("device reports ", d.num_sms, " SMs (1 to ", kMaxDeviceSms, " expected)");
  }
  if (d.smem_per_block_optin < 0) return absl::StrCat("device reports ", d.smem_per_block_optin, " bytes of shared memory");
  return "";
}

const char* GemmKernelName(GemmKernel k) {
  switch (k) {
    case GemmKernel::kSm90Wgmma: return "sm90_wgmma";
    case GemmKernel::kSm89MmaSync: return "sm89_mma_sync";
  }
  return "?";
}

const char* WeightLayoutName(WeightLayout l) {
  switch (l) {
    case WeightLayout::kRowMajor: return "row_major";
    case WeightLayout::kTiled128: return "tiled128";
  }
  return "?";
}

absl::Status CheckTileWeights128(const uint8_t* row_major, int n, int k, const uint8_t* tiled) {
  if (n < 1 || k < 1 || n % 128 != 0 || k % 128 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tiling weights [", n, ", ", k, "]: n and k must be positive multiples of 128"));
  }
  if (row_major == nullptr || tiled == nullptr) return absl::InvalidArgumentError("tiling weights: null pointer");
  return absl::OkStatus();
}

absl::Status TileWeights128(const uint8_t* row_major, int n, int k, uint8_t* tiled) {
  if (absl::Status st = CheckTileWeights128(row_major, n, k, tiled); !st.ok()) return st;
  // Block by block: each block's 128 rows are 128-byte pieces of consecutive source rows
  for (int r0 = 0; r0 < n; r0 += 128) {
    for (int c0 = 0; c0 < k; c0 += 128) {
      uint8_t* dst = tiled + Tiled128Offset(r0, c0, k);
      for (int r = 0; r < 128; ++r) {
        std::memcpy(dst + static_cast<size_t>(r) * 128, row_major + static_cast<size_t>(r0 + r) * k + c0, 128);
      }
    }
  }
  return absl::OkStatus();
}

const char* GemmOutputName(GemmOutput o) {
  switch (o) {
    case GemmOutput::kE4M3: return "e4m3";
    case GemmOutput::kBF16: return "bf16";
    case GemmOutput::kF32: return "f32";
  }
  return "?";
}

std::string DescribeGemmConfig(const GemmConfig& c) {
  return absl::StrCat(GemmKernelName(c.kernel), " block ", c.block_m, "x", c.block_n, "x", c.block_k, " stages ",
                      c.stages, " splits ", c.k_splits, " grid ", c.grid, " raster ", c.raster_group, " smem ",
                      c.smem_bytes, c.pair_loads ? " paired loads" : "",
                      // (not cluster_m * cluster_n > 1: it describes refused configs too, whose fields may be anything)
                      c.cluster_m != 1 || c.cluster_n != 1 ? absl::StrCat(" cluster ", c.cluster_m, "x", c.cluster_n) : "",
                      c.ordered_consumers ? " ordered consumers" : "",
                      c.main_loop != Sm90MainLoop::kDefault ? absl::StrCat(" ", Sm90MainLoopName(c.main_loop)) : "");
}

const char* Sm90MainLoopName(Sm90MainLoop l) {
  switch (l) {
    case Sm90MainLoop::kDefault: return "default";
    case Sm90MainLoop::kCrossBank: return "cross_bank";
    case Sm90MainLoop::kOneAccumulator: return "one_accumulator";
    case Sm90MainLoop::kOneAccumulatorCrossBank: return "one_accumulator_cross_bank";
    case Sm90MainLoop::kYieldFfma: return "yield_ffma";
  }
  return "?";
}

std::string Sm90ClusterProblem(int cluster_m, int cluster_n, int k_splits, int n, int block_n) {
  if (cluster_m < 1 || cluster_m > kSm90MaxClusterDim || cluster_n < 1 || cluster_n > kSm90MaxClusterDim) {
    return absl::StrCat("cluster dimensions outside [1, ", kSm90MaxClusterDim, "]");
  }
  if (cluster_m * cluster_n == 1) return "";
  if (k_splits != 1) return "split-K does not run in clusters";
  if (block_n < 1 || Sm90TilesN(n, block_n) % cluster_n != 0) return "cluster_n must divide the N-tiles";
  return "";
}

std::string Sm90BlockNProblem(int block_n, int block_m, int k_splits, GemmOutput output, WeightLayout b_layout) {
  if (block_n == kSm90BlockN) return "";
  if (block_n != kSm90WideBlockN) return absl::StrCat("block_n must be ", kSm90BlockN, " or ", kSm90WideBlockN);
  if (block_m != 128) return absl::StrCat("the ", block_n, "-column tile needs block_m 128");
  if (k_splits != 1) return absl::StrCat("the ", block_n, "-column tile does not split K");
  if (output == GemmOutput::kE4M3) {
    return absl::StrCat("the ", block_n, "-column tile cannot requantize to E4M3 (its tiles straddle 1x128 groups)");
  }
  if (b_layout != WeightLayout::kRowMajor) return absl::StrCat("the ", block_n, "-column tile reads row-major B only");
  return "";
}

absl::StatusOr<GemmConfig> WithSm90BlockN(const GemmConfig& config, const GemmShape& shape,
                                          const DeviceTraits& device, int block_n) {
  if (absl::Status st = CheckShape(shape); !st.ok()) return st;
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_n ", block_n, " for ", DescribeGemmConfig(config), ": ", why));
  };
  if (config.kernel != GemmKernel::kSm90Wgmma) return bad("only the sm90 kernel has wide tiles");
  if (config.cluster_m * config.cluster_n != 1) return bad("choose the tile width before the cluster");
  if (std::string why = Sm90BlockNProblem(block_n, config.block_m, config.k_splits, shape.output, shape.b_layout);
      !why.empty()) {
    return bad(why);
  }
  if (block_n == config.block_n) return config;
  GemmConfig c = config;
  c.block_n = block_n;
  c.stages = DeepestSm90Stages(c.block_m, c.block_n, device);
  if (c.stages < 2) {
    return absl::FailedPreconditionError(absl::StrCat("block_n ", block_n, ": two stages need ",
                                                      Sm90SmemBytes(c.block_m, c.block_n, 2),
                                                      " bytes of shared memory, the device has ",
                                                      device.smem_per_block_optin));
  }
  c.pair_loads = c.pair_loads && c.stages >= 3;
  c.smem_bytes = Sm90SmemBytes(c.block_m, c.block_n, c.stages);
  const int tiles_m = CeilDivInt(shape.m, c.block_m);
  const long long tiles = static_cast<long long>(tiles_m) * Sm90TilesN(shape.n, c.block_n);
  c.grid = static_cast<int>(std::min<long long>(tiles * c.k_splits, device.num_sms));
  c.raster_group = std::min(tiles_m, std::max(1, config.raster_group));
  return c;
}

absl::StatusOr<GemmConfig> WithSm90Cluster(const GemmConfig& config, const GemmShape& shape,
                                           const DeviceTraits& device, int cluster_m, int cluster_n) {
  if (absl::Status st = CheckShape(shape); !st.ok()) return st;
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("cluster ", cluster_m, "x", cluster_n, " for ", DescribeGemmConfig(config), ": ", why));
  };
  if (config.kernel != GemmKernel::kSm90Wgmma) return bad("only the sm90 kernel runs in clusters");
  if (config.k_splits != 1) return bad("split-K configs do not run in clusters");  // not even 1 x 1
  if (std::string why = Sm90ClusterProblem(cluster_m, cluster_n, config.k_splits, shape.n, config.block_n);
      !why.empty()) {
    return bad(why);
  }
  if (config.block_m <= 0) return bad("block_m must be positive");
  const int size = cluster_m * cluster_n;
  if (device.num_sms < size) return bad("fewer SMs than CTAs in a cluster");
  GemmConfig c = config;
  c.cluster_m = cluster_m;
  c.cluster_n = cluster_n;
  const int cluster_tiles_m = CeilDivInt(CeilDivInt(shape.m, c.block_m), cluster_m);
  const int cluster_tiles_n = Sm90TilesN(shape.n, config.block_n) / cluster_n;
  const long long units = static_cast<long long>(cluster_tiles_m) * cluster_tiles_n;
  c.grid = static_cast<int>(std::min<long long>(units, device.num_sms / size)) * size;
  // The same number of M-tiles per raster group as without clusters
  c.raster_group = std::max(1, std::min(CeilDivInt(config.raster_group, cluster_m), cluster_tiles_m));
  return c;
}

absl::StatusOr<GemmConfig> SelectSm90WideTileConfig(const GemmShape& shape, const DeviceTraits& device) {
  absl::StatusOr<GemmConfig> base = SelectGemmConfigFor(GemmKernel::kSm90Wgmma, shape, device);
  if (!base.ok()) return base.status();
  base->block_m = 128;
  base->k_splits = 1;
  return WithSm90BlockN(*base, shape, device, kSm90WideBlockN);
}

absl::StatusOr<GemmConfig> SelectGemmConfigFor(GemmKernel kernel, const GemmShape& shape, const DeviceTraits& device) {
  if (absl::Status st = CheckShape(shape); !st.ok()) return st;
  if (!HasFp8TensorCores(device)) {
    return absl::FailedPreconditionError(absl::StrCat("compute capability ", device.cc_major, ".", device.cc_minor,
                                                      " has no FP8 tensor cores (8.9 or newer needed)"));
  }
  if (std::string why = DeviceTraitsProblem(device); !why.empty()) return absl::InvalidArgumentError(why);
  switch (kernel) {
    case GemmKernel::kSm90Wgmma: {
      if (!IsHopper(device)) {
        return absl::FailedPreconditionError(absl::StrCat("the wgmma kernel needs compute capability 9.0, not ",
                                                          device.cc_major, ".", device.cc_minor));
      }
      GemmConfig c = Sm90Config(shape, device);
      if (c.stages < 2) return absl::FailedPreconditionError("not enough shared memory for a 2-stage wgmma pipeline");
      return c;
    }
    case GemmKernel::kSm89MmaSync: {
      if (shape.b_layout != WeightLayout::kRowMajor) {
        return absl::InvalidArgumentError(absl::StrCat("the mma.sync kernel reads row-major weights; ",
                                                       WeightLayoutName(shape.b_layout),
                                                       " weights need the wgmma kernel (compute capability 9.0)"));
      }
      GemmConfig c = Sm89Config(shape, device);
      if (c.smem_bytes > static_cast<size_t>(device.smem_per_block_optin)) {
        return absl::FailedPreconditionError("not enough shared memory for the mma.sync pipeline");
      }
      return c;
    }
  }
  return absl::InvalidArgumentError("unknown GEMM kernel");
}

absl::StatusOr<GemmConfig> SelectGemmConfig(const GemmShape& shape, const DeviceTraits& device) {
  // (one row on row-major weights: mma.sync on Hopper too, see the header)
  const bool wgmma = IsHopper(device) && (shape.m > kHopperMmaSyncMaxM || shape.b_layout != WeightLayout::kRowMajor);
  const GemmKernel kernel = wgmma ? GemmKernel::kSm90Wgmma : GemmKernel::kSm89MmaSync;
  absl::StatusOr<GemmConfig> base = SelectGemmConfigFor(kernel, shape, device);
  if (!base.ok() || kernel != GemmKernel::kSm90Wgmma) return base;
  return TuneSm90Config(*base, shape, device);
}

// NOTES: the measurements behind each rule (fp8_gemm_bench, H200, BF16 output, L2 flushed; the
// variant's time against ours/sm90_wgmma's in the same run, session 7):
//  - +n192 (the wide tile): 8192^3 x1.10, 8192 x 4096 x 16384 x1.09, 8192 x 16384 x 4096 x1.05,
//    4096 x 16384 x 4096 x1.06 (paired loads x1.03-1.07 on those); 4096 x 4096 x 16384 x1.00-1.01,
//    where paired loads gave x1.07 (hence the m x n floor); behind wherever M or N was smaller:
//    1024 x 16384 x 4096 x0.93, 1024 x 4096 x 16384 x0.77 (the base splits K there, the wide tile
//    cannot), M >= 256 with N <= 256 x0.66-0.84 (most of a 192-wide tile past n). Clusters added
//    nothing to it (+n192+mc2x1 within 1%), and ordered consumers lost 2-4%.
//  - +paired: K = 16384: M = 128 x1.10, 256 x1.16, 1024 x1.08, 4096 x1.07, 8192 x1.07, M <= 64
//    x0.99-1.01; 8192^3 x1.05; K = 4096 with M >= 256: x1.02-1.04; M <= 128 with K <= 4096:
//    x0.97-1.02 (noise level), so it stays off there.
absl::StatusOr<GemmConfig> TuneSm90Config(const GemmConfig& base, const GemmShape& shape, const DeviceTraits& device) {
  if (absl::Status st = CheckShape(shape); !st.ok()) return st;
  if (base.kernel != GemmKernel::kSm90Wgmma || base.cluster_m != 1 || base.cluster_n != 1 || base.block_n != kSm90BlockN) {
    return base;
  }
  if (shape.m >= kSm90WideMinMN && shape.n >= kSm90WideMinMN &&
      static_cast<long long>(shape.m) * shape.n >= kSm90WideMinMxN &&
      Sm90BlockNProblem(kSm90WideBlockN, base.block_m, base.k_splits, shape.output, shape.b_layout).empty()) {
    absl::StatusOr<GemmConfig> wide = WithSm90BlockN(base, shape, device, kSm90WideBlockN);
    if (wide.ok()) return wide;  // (else: the wide pipeline does not fit this device; stay 128-wide)
  }
  GemmConfig c = base;
  c.pair_loads = c.stages >= 3 && (shape.k >= kSm90PairMinK || shape.m >= kSm90PairMinM);
  return c;
}

size_t GemmWorkspaceBytes(const GemmShape& shape, const GemmConfig& c) {
  if (c.k_splits <= 1) return 0;
  return kSplitKCounterBytes + static_cast<size_t>(c.k_splits) * shape.m * shape.n * sizeof(float);
}

}  // namespace fp8serve::cuda
