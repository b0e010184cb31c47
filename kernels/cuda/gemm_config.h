// Choosing how to run one FP8 GEMM: a GemmShape and the device's traits go in, a GemmConfig (which
// kernel, block sizes, pipeline stages, split-K, grid) comes out. Pure C++ with no CUDA include, so
// the heuristic is unit-tested on any machine; the launchers take the config and hold no magic
// numbers of their own.
//
// The device layout every FP8 kernel takes (DeviceMlp builds it at upload):
//  - K is padded with zero codes to a multiple of 128 (kQuantBlock) in both operands, so the main
//    loops have no K tail. A zero code adds nothing to a dot product, to a group's amax or to a
//    1x128 group, so padding leaves the contract's numbers unchanged.
//  - N (B's rows, the output columns) is padded the same way. Padded weight rows are zero, their
//    bias 0 and their scales 1, so a requantized output's padded columns are exact zeros: the next
//    layer reads them as its own zero K padding.
//  - M is never padded: every kernel predicates rows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/numerics/fp8.h"

namespace fp8serve::cuda {

inline constexpr int kGemmBlockK = 128;  // one 1x128 activation group / one 128x128 weight block

enum class GemmKernel : uint8_t {
  kSm90Wgmma,    // Hopper: TMA + wgmma, warp-specialized, persistent, split-K for few tiles (sm90_fp8_gemm.cuh)
  kSm89MmaSync,  // Ada and Hopper: cp.async + mma.sync, split-K for small M (sm89_fp8_gemm.cuh)
};
const char* GemmKernelName(GemmKernel k);  // "sm90_wgmma" / "sm89_mma_sync"

// How B (the weights) lies in device memory.
//  - kRowMajor: [n, k] row-major, the nn.Linear layout every kernel reads.
//  - kTiled128: the sm90 kernel's streaming layout. 128 x 128 blocks, block (t, g) = rows
//    [128 t, 128 t + 128) x K bytes [128 g, 128 g + 128), each stored as one contiguous 16 KB run
//    (row-major inside), blocks t-major: element (r, c) at Tiled128Offset(r, c, k). A weight tile's
//    TMA box is then one contiguous 16 KB read instead of 128 separate 128-byte row pieces.
//    The sm90 kernel only; the sm89 launcher refuses it.
enum class WeightLayout : uint8_t { kRowMajor, kTiled128 };
const char* WeightLayoutName(WeightLayout l);  // "row_major" / "tiled128"

constexpr size_t Tiled128Offset(int row, int col, int k) {
  const size_t block = static_cast<size_t>(row / 128) * static_cast<size_t>(k / 128) + static_cast<size_t>(col / 128);
  return (block * 128 + static_cast<size_t>(row % 128)) * 128 + static_cast<size_t>(col % 128);
}

// Tiled B is read by TMA as [n * k / 128, 128] rows, and TMA coordinates are int32.
constexpr bool Tiled128RowsFit(int n, int k) { return static_cast<int64_t>(n) * (k / kGemmBlockK) <= INT32_MAX; }
// Host: writes the kTiled128 form of the row-major [n, k] `row_major` (n and k multiples of 128)
// into `tiled` (n * k bytes). INVALID_ARGUMENT for other shapes or null pointers.
absl::Status TileWeights128(const uint8_t* row_major, int n, int k, uint8_t* tiled);
// The arguments' checks TileWeights128 and its device form (TileWeights128Async) share.
absl::Status CheckTileWeights128(const uint8_t* row_major, int n, int k, const uint8_t* tiled);

enum class GemmOutput : uint8_t {
  kE4M3,  // requantized with 1x128 scales for the next layer (hidden layers)
  kBF16,
  kF32,   // logits
};
const char* GemmOutputName(GemmOutput o);

// The largest m, n or k the heuristic and the launchers take: they count rows, columns and tiles
// in int, and a dimension of 2^30 leaves room for rounding up to a tile (tests/fuzz/gemm_plan_fuzz).
inline constexpr int kMaxGemmDim = 1 << 30;

// One GEMM D[m, n] = epilogue(A[m, k] . B[n, k]^T) in the padded device layout.
struct GemmShape {
  int m = 0;  // rows, any >= 1
  int n = 0;  // padded output columns, a multiple of 128
  int k = 0;  // padded depth, a multiple of 128
  Fp8Format b_format = Fp8Format::kE4M3;
  GemmOutput output = GemmOutput::kF32;
  WeightLayout b_layout = WeightLayout::kRowMajor;  // (the wide tile reads row-major B only)
};

// What the heuristic needs to know about the GPU (filled from cudaGetDeviceProperties).
inline constexpr int kMaxDeviceSms = 1 << 16;  // the planners refuse a device that reports more
struct DeviceTraits {
  int cc_major = 9;
  int cc_minor = 0;
  int num_sms = 132;
  int smem_per_block_optin = 227 * 1024;  // bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin
};
// What is implausible about `d` (SMs outside [1, kMaxDeviceSms], negative shared memory), or empty.
// The GEMM heuristic and the fused kernel's planner refuse such a device instead of computing with it.
std::string DeviceTraitsProblem(const DeviceTraits& d);

// Kernel template instances that exist (the launchers instantiate exactly these; gemm_config_test
// checks that every config the heuristic returns is one of them).
inline constexpr int kSm90BlockMs[] = {64, 128};
inline constexpr int kSm90BlockN = 128;  // the wgmma kernel's tile width: every output, split-K, tiled B
// The wide tile (WithSm90BlockN): BLOCK_M 128 x 192 columns, for large GEMMs with BF16 or FP32
// output. Per 128-K group a CTA reads 40 KB for 1.5x the MMAs of a 128 x 128 tile's 32 KB, so each
// FLOP costs 17% less L2 and shared-memory traffic. Its tiles straddle the 128-column scale blocks
// (Sm90TileScaleBlocks) and the 1x128 output groups, so it takes no E4M3 output; it splits no K and
// reads row-major B only. N need not be a multiple of 192: the last tile's columns past n read
// zeros and are not stored.
inline constexpr int kSm90WideBlockN = 192;
constexpr int Sm90TilesN(int n, int block_n) { return n / block_n + (n % block_n != 0); }  // (no n + block_n - 1: n may be near 2^31)
inline constexpr int kSm90MaxStages = 8;  // the deepest wgmma pipeline the heuristic picks
inline constexpr int kSm90MaxKSplits = 8;  // the most K splits the heuristic gives the wgmma kernel
// The wgmma kernel splits only long K streams: each split keeps at least this many 128-K groups.
// NOTES: measured on an H200, splitting short ones costs more (the fixup's partial-sum round trip
// and its last-warp sum) than the extra CTAs save: 1024 x 256 x 784 took 13.2 us with 3 splits of
// 2-3 groups against 9.3 us unsplit, 1 x 256 x 784 10.3 against 8.6.
inline constexpr int kSm90MinGroupsPerSplit = 8;
inline constexpr int kSm90MaxClusterDim = 2;  // cluster_m and cluster_n are 1 or 2
inline constexpr int kSm89BlockMs[] = {16, 32, 64};
inline constexpr int kSm89BlockN = 128;
inline constexpr int kSm89Stages = 4;
inline constexpr int kHopperMmaSyncMaxM = 1;  // SelectGemmConfig on Hopper: mma.sync up to this many rows

// Variants of the sm90 consumers' main loop for the 128-wide tile, each giving the default's bits
// (the same products summed in the same order); the benchmark times them against the default.
// NOTES: Nsight Compute on an H200 (8192^3, session 7) put 35% of the 128 x 128 kernel's warp stall
// samples on its promotion FFMAs, 21 points of them "dispatch" stalls; the wide tile had a quarter
// of the dispatch stalls per issued instruction. Two differences between them are tested here:
//  - kCrossBank: in the 128-wide kernel every promotion FFMA (result += s * acc) reads its
//    accumulator and its result register from the same register bank (equal parity: the split-K
//    path's 64-bit partial-sum stores pin result[i] to the parity of acc[i]); in the wide tile,
//    which splits no K, 2 of 192 do (BF16 output). kCrossBank stores and reloads those pairs
//    swapped (the workspace is private to the launch), which lets ptxas put every result in the
//    other bank (checked in the SASS: 128 of 128 promotion FFMAs at both BLOCK_Ms;
//    tools/device/sass_promotion.py counts them).
//  - kOneAccumulator: the wide tile's loop (wait for the group's wgmmas, promote, issue the next)
//    instead of two accumulators, where a warp promotes one group while its own next group's
//    wgmmas run on the other accumulator. Its FFMAs keep the default's same-bank registers;
//  - kOneAccumulatorCrossBank: both, like the wide tile.
//  - kYieldFfma: the default's source, compiled as an instance of its own so that its SASS can be
//    edited after the build: tools/device/ffma_yield.py clears both flags of the promotion FFMAs
//    that ptxas marked "reuse operand B, do not yield" (every other one), so that the warp
//    scheduler may switch warps between any two of them and the other warpgroup's
//    instructions get in among a promotion's 64 FFMAs (session 7's profile: the promotion FFMAs held
//    34% of the stall samples, 20 points of it dispatch stalls). Neither flag changes what an
//    instruction computes. Unedited (the normal build: tools/device/gpu_check.sh edits the GPU
//    bundle's library) it is the default loop. The only variant the wide tile has too.
enum class Sm90MainLoop : uint8_t { kDefault, kCrossBank, kOneAccumulator, kOneAccumulatorCrossBank, kYieldFfma };
// The opt-in variants, for the benchmark and the tests to walk
inline constexpr Sm90MainLoop kSm90OptInMainLoops[] = {Sm90MainLoop::kCrossBank, Sm90MainLoop::kOneAccumulator,
                                                       Sm90MainLoop::kOneAccumulatorCrossBank, Sm90MainLoop::kYieldFfma};
// "default" / "cross_bank" / "one_accumulator" / "one_accumulator_cross_bank" / "yield_ffma"
const char* Sm90MainLoopName(Sm90MainLoop l);
// Whether the loop keeps the split-K workspace's pairs swapped (the cross-bank variants).
constexpr bool Sm90SwapsPairs(Sm90MainLoop l) {
  return l == Sm90MainLoop::kCrossBank || l == Sm90MainLoop::kOneAccumulatorCrossBank;
}
// Whether the wide tile (kSm90WideBlockN) has the loop: the default, and kYieldFfma (the default
// in source); the others are the 128-wide tile's.
constexpr bool Sm90WideTileHasLoop(Sm90MainLoop l) {
  return l == Sm90MainLoop::kDefault || l == Sm90MainLoop::kYieldFfma;
}
constexpr bool Sm90OneAccumulator(Sm90MainLoop l) {
  return l == Sm90MainLoop::kOneAccumulator || l == Sm90MainLoop::kOneAccumulatorCrossBank;
}

struct GemmConfig {
  GemmKernel kernel = GemmKernel::kSm89MmaSync;
  int block_m = 64;
  int block_n = 128;
  int block_k = kGemmBlockK;
  int stages = 3;        // shared-memory pipeline depth
  int k_splits = 1;      // split-K factor; each split owns whole 128-K groups (at least one)
  int grid = 1;          // CTAs launched: persistent over the tiles x splits (<= num_sms) for sm90,
                         // all tiles x splits for sm89
  int raster_group = 1;  // sm90 tile order: groups of this many M-tiles walk N together (L2 reuse)
  // sm90: the producer issues two consecutive K groups' loads back to back (waiting until two stages
  // are free), so the same weight rows' adjacent 128-byte segments reach DRAM together. Needs
  // stages >= 3. TuneSm90Config turns it on where the benchmark measured it ahead.
  bool pair_loads = false;
  // sm90: a thread-block cluster of cluster_m x cluster_n CTAs works on cluster_m x cluster_n
  // adjacent tiles at a time and shares their operands through TMA multicast: the CTAs of one
  // M-tile (cluster_n of them) each load 1/cluster_n of its A tile for all of them, the CTAs of one
  // N-tile each 1/cluster_m of its B tile, so each operand byte leaves L2 once per cluster instead
  // of once per CTA. 1 x 1 is a plain launch. Needs k_splits == 1, a grid that is a multiple of
  // the cluster size, and N-tiles (Sm90TilesN(n, block_n)) a multiple of cluster_n
  // (WithSm90Cluster() makes such a config). Off in the heuristic: measured level or behind on an H200.
  int cluster_m = 1;
  int cluster_n = 1;
  // sm90 wide tile (block_n kSm90WideBlockN) only: its two consumer warpgroups issue each K group's
  // wgmmas in turn (warpgroup 0, then 1, then 0 ...; two named barriers), so that the tensor cores
  // run one warpgroup's group while the other promotes its last one (it orders the issue, which
  // orders the work as long as each sub-partition's tensor core runs wgmmas in issue order). Off:
  // measured 2-4% behind the unordered wide tile on an H200 (the benchmark times both).
  bool ordered_consumers = false;
  // sm90 128-wide tile (and kYieldFfma on the wide one): the consumers' main loop (Sm90MainLoop).
  // The default everywhere; the others are opt-in for the benchmark to time against it (instances
  // for E4M3 weights and BF16 output).
  Sm90MainLoop main_loop = Sm90MainLoop::kDefault;
  size_t smem_bytes = 0; // dynamic shared memory per CTA
};

std::string DescribeGemmConfig(const GemmConfig& c);

// Shared memory one CTA of each kernel gets (the kernels static_assert against these).
// sm90: one stage holds an A tile and a B tile of 128 K-bytes each (one 128-byte swizzle row per tile
// row) and its full/empty barrier pair (16 bytes); 1 KB more aligns the base up to the 1024 bytes the
// 128-byte swizzle needs. (Activation scales are read from global memory, not staged.)
constexpr size_t Sm90SmemBytes(int block_m, int block_n, int stages) {
  return 1024 + static_cast<size_t>(stages) * ((block_m + block_n) * 128 + 16);
}
// sm89: the stage ring of 128-byte rows (XOR-swizzled, so no padding), the epilogue's cross-warp
// amax table (4 warps x BLOCK_M floats) and the split-K "last CTA" flag.
constexpr size_t Sm89SmemBytes(int block_m, int block_n, int stages) {
  return static_cast<size_t>(stages) * (block_m + block_n) * 128 + 4 * block_m * sizeof(float) + 16;
}

// The heuristic: what every launch in serving uses. On Hopper it is the base wgmma config
// (SelectGemmConfigFor) with the measured tunings of TuneSm90Config applied, except for GEMMs of
// at most kHopperMmaSyncMaxM rows on row-major weights, which take the mma.sync kernel (measured on
// an H200 in two runs: 1 x 10 x 256 6.6 us against 8.4, 1 x 256 x 784 9.3 against 9.9, 1 x 4096 x
// 16384 28.6-29.6 against 31.3-31.8, 1 x 16384 x 4096 level at 25.8 / 25.6; at 16 rows wgmma was
// ahead at three shapes of four). INVALID_ARGUMENT for a shape outside the layout above,
// FAILED_PRECONDITION for a device without FP8 tensor cores (compute capability < 8.9).
absl::StatusOr<GemmConfig> SelectGemmConfig(const GemmShape& shape, const DeviceTraits& device);

// The base config for a named kernel (tests and benchmarks force each path with it, and the
// benchmark's variants start from it): block sizes, stages, split-K and grid, without the opt-in
// features (wide tile, paired loads, clusters). FAILED_PRECONDITION when the device cannot run that
// kernel.
absl::StatusOr<GemmConfig> SelectGemmConfigFor(GemmKernel kernel, const GemmShape& shape,
                                               const DeviceTraits& device);

// The opt-in features SelectGemmConfig turns on for an sm90 base config, each only where the
// benchmark measured it ahead of the base (fp8_gemm_bench on an H200, variants against
// ours/sm90_wgmma in one run; figures in the definition's NOTES):
//  - the wide 128 x 192 tile for large GEMMs (m and n >= kSm90WideMinMN, m x n >= kSm90WideMinMxN)
//    that the base runs in 128-row tiles without split-K, with BF16/F32 output and row-major B;
//  - paired loads for the 128-wide tile when K is long (>= kSm90PairMinK) or M >= kSm90PairMinM.
// Any other config comes back unchanged. (SelectGemmConfig also takes the mma.sync kernel for one
// row on Hopper: kHopperMmaSyncMaxM.)
inline constexpr int kSm90WideMinMN = 4096;
inline constexpr long long kSm90WideMinMxN = 1LL << 26;
inline constexpr int kSm90PairMinK = 8192;
inline constexpr int kSm90PairMinM = 256;
absl::StatusOr<GemmConfig> TuneSm90Config(const GemmConfig& base, const GemmShape& shape,
                                          const DeviceTraits& device);

// `config` (an sm90 config without split-K) turned into a cluster_m x cluster_n multicast config:
// the grid becomes the most whole clusters that fit the SMs and the cluster tiles (a CTA whose tile
// lies below the matrix still loads and computes its share, and stores nothing), and the raster
// group counts cluster tiles. The launcher may shrink the grid further to the clusters the device
// can run at once (cudaOccupancyMaxActiveClusters). INVALID_ARGUMENT for a split-K or non-sm90
// config, a cluster dimension outside [1, kSm90MaxClusterDim], or cluster_n not dividing the
// N-tiles (Sm90TilesN(n, config.block_n)).
absl::StatusOr<GemmConfig> WithSm90Cluster(const GemmConfig& config, const GemmShape& shape,
                                           const DeviceTraits& device, int cluster_m, int cluster_n);

// Why the sm90 kernel cannot run an n-column GEMM with `k_splits` in cluster_m x cluster_n clusters
// of block_n-wide tiles (dimensions outside [1, kSm90MaxClusterDim], split-K in a cluster, cluster_n
// not dividing the N-tiles), or empty when it can. WithSm90Cluster and the launcher both ask it.
std::string Sm90ClusterProblem(int cluster_m, int cluster_n, int k_splits, int n, int block_n);

// Why the sm90 kernel cannot run block_n-wide tiles with this config and problem (block_n neither
// kSm90BlockN nor kSm90WideBlockN; for the wide tile: block_m other than 128, split-K, E4M3 output,
// tiled B), or empty when it can. WithSm90BlockN and the launcher both ask it.
std::string Sm90BlockNProblem(int block_n, int block_m, int k_splits, GemmOutput output, WeightLayout b_layout);

// `config` (an sm90 config with block_m 128, no split-K and no cluster yet) with block_n-wide tiles:
// the pipeline as deep as shared memory allows and the grid over the new tiles (apply
// WithSm90Cluster after this, not before). B's layout is shape.b_layout. INVALID_ARGUMENT for what
// Sm90BlockNProblem() names or a clustered config, FAILED_PRECONDITION when two stages do not fit
// the device's shared memory.
absl::StatusOr<GemmConfig> WithSm90BlockN(const GemmConfig& config, const GemmShape& shape,
                                          const DeviceTraits& device, int block_n);

// The heuristic's sm90 config for `shape` with 128-row tiles and no split-K, made wide by
// WithSm90BlockN(kSm90WideBlockN): what the benchmark's +n192 variants and the tests start from.
absl::StatusOr<GemmConfig> SelectSm90WideTileConfig(const GemmShape& shape, const DeviceTraits& device);

// Split-K workspace layout. The int32 arrival counters come first, at the same place for every
// launch: they must read zero at the start of each launch (zeroed once at allocation; the last
// split to arrive at a counter resets it), and one workspace serves every layer and batch size of
// a model, so no launch's partial sums may ever land on them. The partial sums [k_splits][m][n]
// (FP32, row stride n) follow. sm89 counts arrivals per tile; sm90 per (tile, consumer warp), since
// each warp of its consumer warpgroups reduces and finishes its own 16 rows of the tile.
inline constexpr int kSplitKMaxTiles = 4096;  // counters; the heuristics split only grids of < 2 x #SMs tiles
inline constexpr size_t kSplitKCounterBytes = kSplitKMaxTiles * sizeof(int32_t);
inline constexpr int kSm90SplitKRowsPerCounter = 16;  // one consumer warp's rows of a wgmma tile
// Counters a split-K launch of the sm90 kernel uses (<= kSplitKMaxTiles).
constexpr long long Sm90SplitKCounters(int m, int n, int block_m) {
  return static_cast<long long>((m + block_m - 1) / block_m) * (n / kSm90BlockN) * (block_m / kSm90SplitKRowsPerCounter);
}

// Scratch a launch with this config needs in Fp8GemmArgs::workspace (layout above); 0 when
// k_splits == 1.
size_t GemmWorkspaceBytes(const GemmShape& shape, const GemmConfig& c);

}  // namespace fp8serve::cuda
