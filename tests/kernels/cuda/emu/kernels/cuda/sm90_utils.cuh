// Host version of kernels/cuda/sm90_utils.cuh for the emulation tests (see
// tests/kernels/cuda/emu/emu_runtime.h): the same functions, each doing what its PTX instruction is
// defined to do. The descriptor encoder is the kernel's own (wgmma_desc.h); the wgmma here decodes
// descriptors from the ISA's field definitions.
#pragma once

#include <cuda.h>  // CUtensorMap

#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#include "kernels/cuda/sm90_params.h"
#include "kernels/cuda/wgmma_desc.h"
#include "kernels/numerics/fp8.h"
#include "tests/kernels/cuda/emu/emu_runtime.h"

namespace fp8serve::cuda::sm90 {

inline uint8_t* DynamicSmem() { return emu::SmemBase(); }

inline uint32_t SmemAddr(const void* p) { return emu::SharedOffset(p); }

// ---- mbarriers (emu_runtime.h) -----------------------------------------------------------------

inline void MbarInit(uint32_t bar, uint32_t arrivals) { emu::MbarInit(bar, arrivals); }
inline void FenceBarrierInit() {}
inline void MbarArriveExpectTx(uint32_t bar, uint32_t bytes) { emu::MbarUpdate(emu::CurrentCta(), bar, 1, bytes); }
inline void MbarArrive(uint32_t bar) { emu::MbarUpdate(emu::CurrentCta(), bar, 1, 0); }
template <bool kClusterScope = false>
inline void MbarWait(uint32_t bar, uint32_t parity) {
  emu::MbarWaitParity(bar, parity);
}

// ---- TMA ----------------------------------------------------------------------------------------

// What the emulation keeps in a CUtensorMap's 128 opaque bytes (EncodeEmuOperandMap).
struct EmuOperandMap {
  uint64_t magic = 0;
  Sm90OperandMap op;
};
inline constexpr uint64_t kEmuMapMagic = 0x454D552D544D4150ull;  // "EMU-TMAP"
static_assert(sizeof(EmuOperandMap) <= sizeof(CUtensorMap), "the emulated map must fit a CUtensorMap");

// The emulation's stand-in for cuTensorMapEncodeTiled over what the launcher plans (sm90_params.h):
// a [rows, cols] byte array read in [box_rows, 128] boxes through the 128-byte swizzle.
inline CUtensorMap EncodeEmuOperandMap(const Sm90OperandMap& op) {
  CUtensorMap map;
  std::memset(&map, 0, sizeof(map));
  EmuOperandMap e;
  e.magic = kEmuMapMagic;
  e.op = op;
  std::memcpy(static_cast<void*>(&map), &e, sizeof(e));
  return map;
}

inline void PrefetchTensorMap(const CUtensorMap*) {}

// cp.async.bulk.tensor.2d ... multicast::cluster: the box at (c0 = K byte, c1 = row) of `map`, read
// from global memory now (rows or bytes past the array as zeros), lands at offset `dst` of every CTA
// in `mask` and completes its bytes on the mbarrier at offset `bar` there: at once, or later on the
// cluster's copy engine (async TMA).
inline void TmaLoadBox(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1, uint16_t mask) {
  EmuOperandMap e;
  std::memcpy(static_cast<void*>(&e), map, sizeof(e));
  if (e.magic != kEmuMapMagic) emu::Fail("a TMA load through a tensor map the emulation did not encode");
  const Sm90OperandMap& op = e.op;
  if (dst % 128 != 0) emu::Fail("a TMA destination (128-byte swizzle) not 128-byte aligned");
  if (op.cols % 16 != 0 || op.box_rows < 1 || op.box_rows > 256) emu::Fail("a tensor map TMA cannot encode");
  if (c0 % 16 != 0) emu::Fail("a TMA box whose inner coordinate is not 16-byte aligned");
  emu::Cluster& cluster = *emu::CurrentCta()->cluster;
  if (mask == 0 || (mask >> cluster.ctas.size()) != 0) emu::Fail("a TMA multicast mask outside the cluster");
  emu::TmaBox box;
  box.dst = dst;
  box.bar = bar;
  box.mask = mask;
  box.bytes.assign(static_cast<size_t>(op.box_rows) * 128, 0);
  for (int r = 0; r < op.box_rows; ++r) {
    const long long row = static_cast<long long>(c1) + r;
    if (row < 0 || row >= op.rows) continue;
    for (int c = 0; c < 128; ++c) {
      const long long col = static_cast<long long>(c0) + c;
      if (col < 0 || col >= op.cols) continue;
      box.bytes[static_cast<size_t>(r) * 128 + c] = op.base[row * op.cols + col];
    }
  }
  if (emu::tl_options->async_tma) {
    {
      std::lock_guard<std::mutex> lock(cluster.tma_mu);
      cluster.tma_queue.push_back(std::move(box));
    }
    cluster.tma_cv.notify_one();
  } else {
    emu::LandTmaBox(cluster, box);
  }
}

inline void TmaLoad2d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1) {
  TmaLoadBox(dst, map, bar, c0, c1, static_cast<uint16_t>(1u << emu::CurrentCta()->rank));
}
inline void TmaLoad2dMulticast(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1,
                               uint16_t cta_mask) {
  TmaLoadBox(dst, map, bar, c0, c1, cta_mask);
}

// ---- Clusters ------------------------------------------------------------------------------------

inline uint32_t ClusterCtaRank() { return static_cast<uint32_t>(emu::CurrentCta()->rank); }
inline void ClusterArriveRelaxed() { emu::ClusterArrive(); }
inline void ClusterArriveRelease() { emu::ClusterArrive(); }
inline void ClusterWait() { emu::ClusterWait(); }
inline uint32_t MapSharedToRank(uint32_t smem_addr, uint32_t rank) {
  return emu::MapToRank(smem_addr, static_cast<int>(rank));
}
inline void MbarArriveRemote(uint32_t cluster_bar) {
  uint32_t bar = 0;
  emu::Cta* target = emu::ClusterTarget(cluster_bar, bar);
  emu::MbarUpdate(target, bar, 1, 0);
}

// ---- Register reallocation: nothing to emulate ----------------------------------------------------

template <int kRegs>
inline void SetMaxNRegDec() {
  static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg takes a multiple of 8 in [24, 256]");
}
template <int kRegs>
inline void SetMaxNRegInc() {
  static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg takes a multiple of 8 in [24, 256]");
}

// ---- Named barriers ---------------------------------------------------------------------------------

// bar.sync / bar.arrive `id` over `threads` threads (a multiple of 32; every thread of a warp takes
// part, so each counts one): arrivals of one generation must all name the same count.
inline void NamedBarrier(uint32_t id, uint32_t threads, bool wait) {
  emu::Cta* cta = emu::CurrentCta();
  if (id == 0 || id >= 16 || threads % 32 != 0 || threads == 0 || static_cast<int>(threads) > cta->threads) {
    emu::Fail("a named barrier with a bad id or thread count");
  }
  std::unique_lock<std::mutex> lock(cta->named_mu);
  emu::NamedBarrier& b = cta->named[id];
  if (b.arrived == 0) b.expected = static_cast<int>(threads);
  if (b.expected != static_cast<int>(threads)) emu::Fail("a named barrier's arrivals name different counts");
  const uint64_t generation = b.generation;
  if (++b.arrived == b.expected) {
    b.arrived = 0;
    b.generation += 1;
    cta->named_cv.notify_all();
    return;
  }
  if (wait && !cta->named_cv.wait_for(lock, std::chrono::seconds(60), [&] { return b.generation != generation; })) {
    emu::Fail("a named barrier that never completes");
  }
}
inline void NamedBarrierSync(uint32_t id, uint32_t threads) { NamedBarrier(id, threads, true); }
inline void NamedBarrierArrive(uint32_t id, uint32_t threads) { NamedBarrier(id, threads, false); }

// ---- wgmma ----------------------------------------------------------------------------------------

// One issued wgmma m64nNk32 with both operands in shared memory: this thread's part of it (its
// accumulator fragment), computed at issue or when wait_group retires its group (late wgmma).
struct PendingWgmma {
  float* d = nullptr;
  int n = 0;
  uint64_t desc_a = 0, desc_b = 0;
  bool accumulate = true;  // scale-d: false starts from zero
  bool b_e5m2 = false;
};

inline thread_local std::vector<PendingWgmma> tl_wgmma_open;                 // issued, not committed
inline thread_local std::vector<std::vector<PendingWgmma>> tl_wgmma_groups;  // committed, oldest first

// The shared-memory address of byte k of row r of a K-major operand with 128-byte swizzle, from
// its descriptor (PTX ISA, "matrix descriptor"): start address bits [0, 14) << 4, stride-dimension
// byte offset (between 8-row groups) bits [32, 46) << 4, base offset bits [49, 52), swizzle mode
// bits [62, 64) = 1 (128-byte). Rows of a group are 128 bytes apart; the swizzle XOR applies to
// the final address. The base offset must name the start's row phase in its 1024-byte atom.
inline uint32_t OperandAddress(uint64_t desc, int r, int k) {
  const uint32_t start = static_cast<uint32_t>(desc & 0x3FFFu) << 4;
  const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3FFFu) << 4;
  return emu::Swizzle128(start + static_cast<uint32_t>(r / 8) * sbo + static_cast<uint32_t>(r % 8) * 128 +
                         static_cast<uint32_t>(k));
}

// The descriptor's checks, and the shared memory its `rows` x 32-byte operand spans.
inline emu::SmemRange CheckDescriptor(uint64_t desc, int rows) {
  const uint32_t start = static_cast<uint32_t>(desc & 0x3FFFu) << 4;
  const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3FFFu) << 4;
  const uint32_t base_offset = static_cast<uint32_t>((desc >> 49) & 7u);
  if ((desc >> 62) != 1) emu::Fail("a wgmma descriptor without the 128-byte swizzle");
  if (base_offset != ((start >> 7) & 7u)) emu::Fail("a wgmma descriptor whose base offset misnames the start's row phase");
  if (start % 16 != 0 || (start & 127u) + 32 > 128) emu::Fail("a wgmma k32 step outside its 128-byte rows");
  const uint32_t atom = start & ~1023u;
  const uint32_t end = atom + static_cast<uint32_t>((rows + 7) / 8 - 1) * sbo + 1024;
  if (end > emu::CurrentCta()->smem.size()) emu::Fail("a wgmma operand past the end of shared memory");
  return {atom, end};
}

// This thread's accumulators of D[64 x n] (+)= A[64 x 32] . B[n x 32]^T: thread t of the warpgroup
// (warp w = t / 32 % 4, lane l) holds, for j = 0..n/8-1, d[4j], d[4j+1] = D[16w + l/4][8j + 2(l%4)
// + {0, 1}] and d[4j+2], d[4j+3] = D[16w + l/4 + 8][the same columns]. Products summed in FP32 in
// k order.
inline void ComputeWgmma(const PendingWgmma& w) {
  const int t = static_cast<int>(threadIdx.x % 128u);
  const int warp = t / 32, lane = t % 32;
  const int rows[2] = {16 * warp + lane / 4, 16 * warp + lane / 4 + 8};
  const uint8_t* smem = emu::SmemBase();
  float a[2][32];
  for (int h = 0; h < 2; ++h) {
    for (int k = 0; k < 32; ++k) a[h][k] = DecodeE4M3(smem[OperandAddress(w.desc_a, rows[h], k)]);
  }
  for (int j = 0; j < w.n / 8; ++j) {
    for (int c = 0; c < 2; ++c) {
      const int col = 8 * j + 2 * (lane % 4) + c;
      float b[32];
      for (int k = 0; k < 32; ++k) {
        const uint8_t code = smem[OperandAddress(w.desc_b, col, k)];
        b[k] = w.b_e5m2 ? DecodeE5M2(code) : DecodeE4M3(code);
      }
      for (int h = 0; h < 2; ++h) {
        float s = 0.0f;
        for (int k = 0; k < 32; ++k) s += a[h][k] * b[k];
        float& d = w.d[4 * j + 2 * h + c];
        d = w.accumulate ? d + s : s;
      }
    }
  }
}

template <int N, Fp8Format kBFormat>
inline void WgmmaIssue(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
  emu::Cta* cta = emu::CurrentCta();
  const emu::SmemRange ra = CheckDescriptor(desc_a, 64), rb = CheckDescriptor(desc_b, N);
  {
    std::lock_guard<std::mutex> lock(cta->mbar_mu);
    cta->wgmma_reads[threadIdx.x].push_back(ra);
    cta->wgmma_reads[threadIdx.x].push_back(rb);
  }
  PendingWgmma w{d, N, desc_a, desc_b, scale_d != 0, kBFormat == Fp8Format::kE5M2};
  if (!emu::tl_options->late_wgmma) {
    ComputeWgmma(w);
    w.d = nullptr;  // done: only its shared-memory reads stay registered until the wait
  }
  tl_wgmma_open.push_back(w);
  emu::tl_wgmma_pending += 1;  // (the launch fails a thread that leaves with any)
}

template <Fp8Format kBFormat>
inline void WgmmaM64N128K32(float (&d)[64], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
  WgmmaIssue<128, kBFormat>(d, desc_a, desc_b, scale_d);
}
template <Fp8Format kBFormat>
inline void WgmmaM64N192K32(float (&d)[96], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
  WgmmaIssue<192, kBFormat>(d, desc_a, desc_b, scale_d);
}
template <int N, Fp8Format kBFormat>
inline void WgmmaM64NK32(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
  static_assert(N == 128 || N == 192, "wgmma wrappers exist for N = 128 and 192");
  WgmmaIssue<N, kBFormat>(d, desc_a, desc_b, scale_d);
}

inline void WgmmaFence() {}
inline void WgmmaCommitGroup() {
  tl_wgmma_groups.push_back(std::move(tl_wgmma_open));
  tl_wgmma_open.clear();
}

// wgmma.wait_group N: retires the oldest committed groups until at most N are pending (late wgmma:
// computing them now), and releases their shared-memory reads. .sync.aligned: no thread of the warp
// goes on before every thread of it has executed the wait (so a lane that hands a stage back
// speaks for its whole warp).
template <int kPending>
inline void WgmmaWaitGroup() {
  static_assert(kPending >= 0 && kPending <= 7, "wgmma.wait_group takes 0..7");
  emu::Cta* cta = emu::CurrentCta();
  while (static_cast<int>(tl_wgmma_groups.size()) > kPending) {
    size_t retired = 0;
    for (const PendingWgmma& w : tl_wgmma_groups.front()) {
      if (w.d != nullptr) ComputeWgmma(w);
      retired += 2;
    }
    emu::tl_wgmma_pending -= static_cast<int>(tl_wgmma_groups.front().size());
    tl_wgmma_groups.erase(tl_wgmma_groups.begin());
    std::lock_guard<std::mutex> lock(cta->mbar_mu);
    auto& reads = cta->wgmma_reads[threadIdx.x];
    reads.erase(reads.begin(), reads.begin() + static_cast<std::ptrdiff_t>(retired));
  }
  emu::WarpSync();
}

inline void FenceOperand(float&) {}
template <int N>
inline void FenceOperands(float (&)[N]) {}
inline void FenceProxyAsyncShared() {}

}  // namespace fp8serve::cuda::sm90

