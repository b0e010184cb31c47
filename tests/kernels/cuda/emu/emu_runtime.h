// A host emulation of the CUDA execution model, enough for every kernel in kernels/cuda (the fused
// MLP, the Hopper and the mma.sync GEMMs, the activation quantizer, the weight re-layout) to run its
// own code on the CPU: a CTA is one std::thread per CUDA thread (128 to 384) with a CTA barrier,
// named barriers and per-warp barriers, shared memory is a byte vector, and warp collectives
// exchange values through per-warp tables. The kernels' inline PTX lives behind fused_mlp_ptx.cuh,
// fp16_widen.cuh, sm90_utils.cuh and sm89_ptx.cuh; this directory holds host versions of those
// headers (found first on the emulation tests' include path; emu_warp_ops.h has what they share),
// written from the PTX ISA's definitions of each instruction, independently of the kernels' own
// code.
//
// What it checks: the kernels' indexing, fragment layouts, pipeline bookkeeping, barriers and
// numerics, and with clusters the hand-overs between CTAs (the cluster's CTAs run at the same time).
//  - cp.async copies land at issue, or as late as each wait allows (late copies);
//  - mbarriers have phases: arrivals and transaction bytes must balance exactly, a wait for a phase
//    that never completes fails after a minute instead of hanging, and at the end no mbarrier may be
//    left inside a phase;
//  - TMA (the GEMM): boxes land through the 128-byte swizzle, out-of-bounds rows as zeros, in every
//    CTA of a multicast mask; at issue, or later on a separate thread in random order (async TMA);
//  - wgmma: computed at issue, or only when a wait_group retires it (late wgmma); the shared memory
//    it reads must not be written (by TMA) until then, and nothing may arrive on, or be written
//    into, a CTA of the cluster that has exited.
// What it cannot: timing, and the hardware's own rounding inside an MMA (the emulated MMAs sum in
// FP32 in k order).
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <strings.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

// Kernel qualifiers the host compiler must ignore
#undef __global__
#define __global__
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __grid_constant__
#define __grid_constant__

namespace fp8serve::emu {

inline constexpr int kMaxThreads = 384;  // the sm90 GEMM's BLOCK_M 128 CTA; the fused kernel has 256
inline constexpr int kMaxWarps = kMaxThreads / 32;

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

struct Cluster;

// How a launch runs the asynchronous operations (each choice is one the PTX allows).
struct LaunchOptions {
  int threads = 256;           // per CTA
  bool late_copies = false;    // cp.async copies land when a wait retires their group, not at issue
  bool async_tma = false;      // TMA boxes land on a separate thread, in random order, not at issue
  bool late_wgmma = false;     // a wgmma computes when wait_group retires it, not at issue
  bool mbarriers_complete_once = false;  // every initialized mbarrier must complete exactly one phase
};

// An mbarrier: the current phase completes when every expected arrival has come and its
// transaction bytes balance; then the next phase starts with the same expected count.
struct Mbarrier {
  int expected = 0;
  int pending_arrivals = 0;
  long long tx_bytes = 0;  // expected minus landed, in this phase
  uint32_t phases = 0;     // completed phases
};

// A named barrier (bar.sync / bar.arrive id, count): threads count one each.
struct NamedBarrier {
  int expected = 0;
  int arrived = 0;
  uint64_t generation = 0;
};

// Shared memory an unfinished wgmma reads: [begin, end), by thread `thread`.
struct SmemRange {
  uint32_t begin = 0, end = 0;
};

// One CTA's shared state
struct Cta {
  Cta(size_t smem_bytes, const LaunchOptions& o)
      : smem(smem_bytes, 0xFF), threads(o.threads), late(o.late_copies), bar(o.threads), alive(o.threads) {
    for (int w = 0; w < threads / 32; ++w) warp_bar[w] = std::make_unique<std::barrier<>>(32);
  }
  std::vector<uint8_t> smem;  // 0xFF bytes: a read of never-written shared memory shows as NaN codes
  int threads;
  bool late;  // cp.async copies land at the wait (the latest the PTX allows) instead of at issue
  std::barrier<> bar;
  std::unique_ptr<std::barrier<>> warp_bar[kMaxWarps];
  // Per-warp lane tables for collectives, two used in turn (ExchangeTable)
  uint64_t exchange[kMaxWarps][2][32][8] = {};
  int rank = 0;
  Cluster* cluster = nullptr;
  // The mbarriers (keyed by shared-memory offset), whether the CTA has exited, and the shared memory
  // that unfinished wgmmas read, all under mbar_mu; mbar_cv wakes waiters when a phase completes.
  std::mutex mbar_mu;
  std::condition_variable mbar_cv;
  std::map<uint32_t, Mbarrier> mbars;
  std::atomic<int> alive;
  bool exited = false;
  std::vector<SmemRange> wgmma_reads[kMaxThreads];
  // Named barriers 1..15
  std::mutex named_mu;
  std::condition_variable named_cv;
  NamedBarrier named[16];
};

// A TMA box on its way to shared memory (async TMA)
struct TmaBox {
  std::vector<uint8_t> bytes;  // the box as read from global memory, row-major [rows][128]
  uint32_t dst = 0;            // shared-memory offset in every target CTA
  uint32_t bar = 0;            // mbarrier offset in every target CTA
  uint16_t mask = 0;           // target cluster ranks
};

// A thread-block cluster: its CTAs run at the same time and share a cluster barrier; with async TMA
// a copy engine thread lands the boxes its CTAs issue.
struct Cluster {
  Cluster(int size, int threads) : bar(size * threads) {}
  std::vector<Cta*> ctas;
  std::barrier<> bar;
  std::mutex tma_mu;
  std::condition_variable tma_cv;
  std::deque<TmaBox> tma_queue;
  bool tma_stop = false;
};

// A cp.async copy: `bytes` to shared offset dst, the first src_bytes read from src (null when
// none), the rest zeros.
struct Copy {
  uint32_t dst;
  const void* src;
  int bytes;
  int src_bytes;
};

inline thread_local Cta* tl_cta = nullptr;
inline Cta* CurrentCta() { return tl_cta; }
inline thread_local Dim3 tl_thread, tl_block, tl_block_dim;
inline thread_local std::optional<std::barrier<>::arrival_token> tl_cluster_arrival;
inline thread_local std::vector<std::vector<Copy>> tl_groups;  // committed cp.async groups, oldest first
inline thread_local std::vector<Copy> tl_open;                 // issued, not yet committed
inline thread_local std::mt19937 tl_rng;
inline thread_local const LaunchOptions* tl_options = nullptr;
inline thread_local int tl_wgmma_pending = 0;  // wgmmas issued and not yet retired by a wait_group

inline int Warp() { return static_cast<int>(tl_thread.x) / 32; }
inline int Lane() { return static_cast<int>(tl_thread.x) % 32; }
inline void WarpSync() { CurrentCta()->warp_bar[Warp()]->arrive_and_wait(); }
inline uint8_t* SmemBase() { return CurrentCta()->smem.data(); }
[[noreturn]] inline void Fail(const char* what) {
  std::fprintf(stderr, "emulated kernel: %s (block %u thread %u)\n", what, tl_block.x, tl_thread.x);
  std::abort();
}
inline void CheckSmem(uint32_t addr, int bytes, int align) {
  if (addr % static_cast<uint32_t>(align) != 0 || addr + bytes > CurrentCta()->smem.size()) {
    Fail("shared memory access out of bounds or misaligned");
  }
}
// The shared-window address (offset) of a generic pointer into this CTA's shared memory.
inline uint32_t SharedOffset(const void* p) {
  const uint8_t* base = SmemBase();
  const uint8_t* q = static_cast<const uint8_t*>(p);
  if (q < base || q > base + CurrentCta()->smem.size()) Fail("a shared-window address of a non-shared pointer");
  return static_cast<uint32_t>(q - base);
}

inline thread_local unsigned tl_exchange_turn = 0;  // this lane's count of warp collectives

// The warp's table for its next collective: each lane writes its own row, WarpSync(), then any lane
// reads any row. The two tables are used in turn, so no second barrier is needed before a table is
// written again: a lane reaches its next write to this table only after the barrier of the
// collective in between, which every lane reaches only after it has read this one.
inline uint64_t (&ExchangeTable())[32][8] { return CurrentCta()->exchange[Warp()][tl_exchange_turn++ & 1u]; }

// mma.sync's operand exchange: each lane publishes its six fragment registers (A's four, B's two) in
// the warp's table; after the returned reference, every lane's are readable (until the warp's next
// collective but one).
inline uint64_t (&ShareFragments(uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                 uint32_t b1))[32][8] {
  auto& x = ExchangeTable();
  const uint32_t regs[6] = {a0, a1, a2, a3, b0, b1};
  for (int i = 0; i < 6; ++i) x[Lane()][i] = regs[i];
  WarpSync();
  return x;
}

// d += A . B on this lane's accumulator fragment of an m16n8 MMA (d0, d1 = D[g][2t, 2t + 1], d2,
// d3 = D[g + 8][2t, 2t + 1] with g = lane / 4, t = lane % 4), from the lane's own operands: rows g
// and g + 8 of A (A[h][k]) and columns 2t and 2t + 1 of B (B[c][k]), summed in FP32 in k order.
template <int K>
inline void AccumulateLaneFragment(float (&d)[4], const float (&A)[2][K], const float (&B)[2][K]) {
  for (int i = 0; i < 4; ++i) {
    float s = 0.0f;
    for (int k = 0; k < K; ++k) s += A[i >> 1][k] * B[i & 1][k];
    d[i] += s;
  }
}

inline void Land(const Copy& c) {
  std::memset(SmemBase() + c.dst, 0, static_cast<size_t>(c.bytes));
  if (c.src_bytes > 0) std::memcpy(SmemBase() + c.dst, c.src, static_cast<size_t>(c.src_bytes));
}

// ---- mbarriers (shared by the fused kernel's and the GEMM's emulated instructions) ---------------

inline Mbarrier& FindMbar(Cta* cta, uint32_t bar) {
  auto it = cta->mbars.find(bar);
  if (it == cta->mbars.end()) Fail("an mbarrier operation on an uninitialized mbarrier");
  return it->second;
}

inline void MbarInit(uint32_t bar, uint32_t count) {
  CheckSmem(bar, 8, 8);
  Cta* cta = CurrentCta();
  std::lock_guard<std::mutex> lock(cta->mbar_mu);
  if (cta->mbars.count(bar) != 0) Fail("an mbarrier initialized twice");
  Mbarrier& m = cta->mbars[bar];
  m.expected = m.pending_arrivals = static_cast<int>(count);
}

// `arrivals` arrivals and `tx` transaction bytes (positive: expected, negative: landed) on the
// mbarrier at `bar` of `cta`, whose mbar_mu the caller holds; completes the phase when both balance.
inline void MbarUpdateLocked(Cta* cta, uint32_t bar, int arrivals, long long tx) {
  if (cta->exited) Fail("an mbarrier operation on a CTA that has exited");
  Mbarrier& m = FindMbar(cta, bar);
  if (arrivals > m.pending_arrivals) Fail("more arrivals on an mbarrier than its phase expects");
  m.pending_arrivals -= arrivals;
  m.tx_bytes += tx;
  if (m.pending_arrivals == 0 && m.tx_bytes < 0) Fail("more bytes on an mbarrier than its phase expects");
  if (m.pending_arrivals == 0 && m.tx_bytes == 0) {
    m.phases += 1;
    m.pending_arrivals = m.expected;
    cta->mbar_cv.notify_all();
  }
}

inline void MbarUpdate(Cta* cta, uint32_t bar, int arrivals, long long tx) {
  std::lock_guard<std::mutex> lock(cta->mbar_mu);
  MbarUpdateLocked(cta, bar, arrivals, tx);
}

// Blocks until the phase with parity `parity` of this CTA's mbarrier at `bar` has completed (the
// phase before the current one, when the current one's parity differs); fails after a minute.
inline void MbarWaitParity(uint32_t bar, uint32_t parity) {
  Cta* cta = CurrentCta();
  std::unique_lock<std::mutex> lock(cta->mbar_mu);
  const Mbarrier& m = FindMbar(cta, bar);
  const bool done = cta->mbar_cv.wait_for(lock, std::chrono::seconds(60), [&] { return (m.phases & 1u) != (parity & 1u); });
  if (!done) Fail("an mbarrier wait that never completes");
}

// The shared-memory byte at `addr` under the 128-byte swizzle, which TMA and wgmma both apply to the
// final address: bits [4, 7) (the 16-byte chunk in a 128-byte row) XORed with bits [7, 10) (the row
// in an 8-row, 1024-byte atom).
inline uint32_t Swizzle128(uint32_t addr) { return addr ^ (((addr >> 7) & 7u) << 4); }

// Lands a TMA box in every CTA of its mask: box row r's byte c at the swizzled shared address of
// dst + 128 r + c, then the box's byte count on each CTA's mbarrier at `bar`. Shared memory that an
// unfinished wgmma reads must not be written (PTX: the operands may not change until the wgmma's
// group is waited for).
inline void LandTmaBox(Cluster& cluster, const TmaBox& box) {
  const uint32_t bytes = static_cast<uint32_t>(box.bytes.size());
  for (int r = 0; r < static_cast<int>(cluster.ctas.size()); ++r) {
    if ((box.mask >> r & 1u) == 0) continue;
    Cta* cta = cluster.ctas[r];
    std::lock_guard<std::mutex> lock(cta->mbar_mu);
    if (cta->exited) Fail("a TMA box into a CTA that has exited");
    if (box.dst + bytes > cta->smem.size()) Fail("a TMA box past the end of shared memory");
    for (int t = 0; t < cta->threads; ++t) {
      for (const SmemRange& read : cta->wgmma_reads[t]) {
        if (box.dst < read.end && read.begin < box.dst + bytes) {
          Fail("a TMA box written over shared memory that an unfinished wgmma reads");
        }
      }
    }
    for (uint32_t i = 0; i < bytes; ++i) cta->smem[Swizzle128(box.dst + i)] = box.bytes[i];
    MbarUpdateLocked(cta, box.bar, 0, -static_cast<long long>(bytes));
  }
}

// The async TMA engine of one cluster: lands queued boxes in random order until stopped and drained.
inline void RunTmaEngine(Cluster& cluster, unsigned seed) {
  std::mt19937 rng(seed);
  for (;;) {
    TmaBox box;
    {
      std::unique_lock<std::mutex> lock(cluster.tma_mu);
      cluster.tma_cv.wait_for(lock, std::chrono::milliseconds(1),
                              [&] { return cluster.tma_stop || !cluster.tma_queue.empty(); });
      if (cluster.tma_queue.empty()) {
        if (cluster.tma_stop) return;
        continue;
      }
      const size_t i = rng() % cluster.tma_queue.size();
      box = std::move(cluster.tma_queue[i]);
      cluster.tma_queue.erase(cluster.tma_queue.begin() + static_cast<std::ptrdiff_t>(i));
    }
    for (unsigned y = rng() % 4; y > 0; --y) std::this_thread::yield();  // let the issuers run on
    LandTmaBox(cluster, box);
  }
}

// Runs `body` (the kernel for one CTA) as `grid` CTAs in clusters of `cluster_size` consecutive
// ones: the CTAs of a cluster at the same time, each on o.threads threads, one cluster after
// another. Fails (aborts) if a thread leaves with cp.async copies never committed or never waited
// for, or wgmmas never waited for, or a CTA with an mbarrier left inside a phase (or, with
// o.mbarriers_complete_once, one that did not complete exactly one phase).
inline void Launch(unsigned grid, int cluster_size, size_t smem_bytes, const LaunchOptions& o,
                   const std::function<void()>& body) {
  if (cluster_size < 1 || grid % static_cast<unsigned>(cluster_size) != 0) Fail("grid not a multiple of the cluster");
  if (o.threads < 32 || o.threads > kMaxThreads || o.threads % 32 != 0) Fail("threads per CTA outside the emulation");
  for (unsigned first = 0; first < grid; first += static_cast<unsigned>(cluster_size)) {
    Cluster cluster(cluster_size, o.threads);
    std::vector<std::unique_ptr<Cta>> ctas;
    for (int r = 0; r < cluster_size; ++r) {
      ctas.push_back(std::make_unique<Cta>(smem_bytes, o));
      ctas.back()->rank = r;
      ctas.back()->cluster = &cluster;
      cluster.ctas.push_back(ctas.back().get());
    }
    std::thread engine;
    if (o.async_tma) engine = std::thread([&] { RunTmaEngine(cluster, first * 31u + 7u); });
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(cluster_size) * o.threads);
    for (int r = 0; r < cluster_size; ++r) {
      for (unsigned t = 0; t < static_cast<unsigned>(o.threads); ++t) {
        threads.emplace_back([&, r, t] {
          Cta* cta = ctas[r].get();
          tl_cta = cta;
          tl_thread.x = t;
          tl_block.x = first + static_cast<unsigned>(r);
          tl_block_dim.x = static_cast<unsigned>(o.threads);
          tl_rng.seed(tl_block.x * 977u + t * 13u + (o.late_copies ? 1u : 0u) + (o.late_wgmma ? 2u : 0u));
          tl_options = &o;
          tl_groups.clear();
          tl_open.clear();
          tl_cluster_arrival.reset();
          tl_wgmma_pending = 0;
          body();
          if (!tl_open.empty()) Fail("cp.async copies never committed");
          for (const auto& g : tl_groups) {
            if (!g.empty()) Fail("a cp.async group never waited for");
          }
          if (tl_cluster_arrival.has_value()) Fail("a cluster barrier arrival never waited for");
          if (tl_wgmma_pending != 0) Fail("wgmmas never committed or waited for");
          if (cta->alive.fetch_sub(1) == 1) {
            std::lock_guard<std::mutex> lock(cta->mbar_mu);
            cta->exited = true;
          }
          tl_cta = nullptr;
        });
      }
    }
    for (auto& th : threads) th.join();
    if (engine.joinable()) {
      {
        std::lock_guard<std::mutex> lock(cluster.tma_mu);
        cluster.tma_stop = true;
      }
      cluster.tma_cv.notify_all();
      engine.join();
    }
    for (const auto& cta : ctas) {
      for (const auto& [offset, m] : cta->mbars) {
        const bool mid_phase = m.pending_arrivals != m.expected || m.tx_bytes != 0;
        if (mid_phase || (o.mbarriers_complete_once && m.phases != 1)) {
          std::fprintf(stderr, "CTA %u: mbarrier at %u left with %d of %d arrivals and %lld bytes pending after %u phases\n",
                       first + static_cast<unsigned>(cta->rank), offset, m.pending_arrivals, m.expected, m.tx_bytes,
                       m.phases);
          std::abort();
        }
      }
    }
  }
}

// ---- Clusters ----------------------------------------------------------------------------------
// A shared::cluster address is (rank + 1) << 24 | offset here (shared memory is far below 16 MB);
// a plain shared offset has no rank bits.

inline uint32_t MapToRank(uint32_t smem_addr, int rank) {
  if ((smem_addr >> 24) != 0 || rank < 0 || rank >= static_cast<int>(CurrentCta()->cluster->ctas.size())) {
    Fail("mapa of a bad address or rank");
  }
  return (static_cast<uint32_t>(rank + 1) << 24) | smem_addr;
}

// The CTA and offset a shared::cluster address names
inline Cta* ClusterTarget(uint32_t cluster_addr, uint32_t& offset) {
  const uint32_t rank_bits = cluster_addr >> 24;
  offset = cluster_addr & 0xFFFFFFu;
  if (rank_bits == 0) Fail("a shared::cluster access without a rank (mapa missing)");
  return CurrentCta()->cluster->ctas.at(rank_bits - 1);
}

// barrier.cluster.arrive / barrier.cluster.wait over every thread of the cluster
inline void ClusterArrive() {
  if (tl_cluster_arrival.has_value()) Fail("a second cluster barrier arrival before the wait");
  tl_cluster_arrival.emplace(CurrentCta()->cluster->bar.arrive());
}
inline void ClusterWait() {
  if (!tl_cluster_arrival.has_value()) Fail("a cluster barrier wait without an arrival");
  CurrentCta()->cluster->bar.wait(std::move(*tl_cluster_arrival));
  tl_cluster_arrival.reset();
}

}  // namespace fp8serve::emu

#define threadIdx (::fp8serve::emu::tl_thread)
#define blockIdx (::fp8serve::emu::tl_block)
#define blockDim (::fp8serve::emu::tl_block_dim)

// CUDA device builtins the kernel calls, on the host
inline void __syncwarp() { fp8serve::emu::WarpSync(); }
inline void __syncthreads() {
  if ((fp8serve::emu::tl_rng() & 7u) == 0) std::this_thread::yield();  // shuffle the arrival order
  fp8serve::emu::CurrentCta()->bar.arrive_and_wait();
}
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  auto& x = fp8serve::emu::ExchangeTable();
  std::memcpy(&x[fp8serve::emu::Lane()][0], &v, 4);
  fp8serve::emu::WarpSync();
  float r;
  std::memcpy(&r, &x[fp8serve::emu::Lane() ^ lane_mask][0], 4);
  return r;
}
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
inline int __ffs(int x) { return ffs(x); }
inline int min(int a, int b) { return a < b ? a : b; }
[[noreturn]] inline void __trap() { fp8serve::emu::Fail("__trap"); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline size_t __cvta_generic_to_shared(const void* p) {
  return static_cast<size_t>(static_cast<const uint8_t*>(p) - fp8serve::emu::SmemBase());
}
using std::isnan;
using std::signbit;
inline int __shfl_sync(unsigned, int v, int src_lane) {
  auto& x = fp8serve::emu::ExchangeTable();
  x[fp8serve::emu::Lane()][0] = static_cast<uint32_t>(v);
  fp8serve::emu::WarpSync();
  return static_cast<int>(static_cast<uint32_t>(x[src_lane & 31][0]));
}
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline int atomicExch(int* p, int v) { return std::atomic_ref<int>(*p).exchange(v); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __stcg(float2* p, float2 v) { *p = v; }
inline float2 __ldcg(const float2* p) { return *p; }
inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
