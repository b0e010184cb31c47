// A host emulation of the CUDA execution model, enough for the fused MLP kernel (fused_mlp.cuh) to
// run its own code on the CPU: a CTA is 256 std::threads with a CTA barrier and per-warp barriers,
// shared memory is a byte vector, and warp collectives exchange values through a per-warp table.
// The kernel's inline PTX lives behind fused_mlp_ptx.cuh and fp16_widen.cuh; this directory holds
// host versions of those two headers (found first on the emulation test's include path), written
// from the PTX ISA's definitions of each instruction, independently of the kernel's own code.
//
// What it checks: the kernel's indexing, fragment layouts, pipeline bookkeeping (cp.async groups
// may land at issue or as late as the wait allows), barriers, numerics, and with clusters the
// hand-overs between CTAs (the cluster's CTAs run at the same time; st.async stores land in the
// other CTA's shared memory and count their bytes on its mbarrier, which must balance exactly), with
// every MMA kind: mma.sync (the FP8 instruction and the widened FP16 form) and wgmma (B read through
// the 128-byte swizzle its descriptor names). What it cannot: timing, and the hardware's own
// rounding inside an MMA (the emulated MMAs sum in FP32 in k order).
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <strings.h>

#include <barrier>
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

inline constexpr int kThreads = 256;  // the fused kernel's CTA (kFusedNumThreads)
inline constexpr int kWarps = kThreads / 32;

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

struct Cluster;

// An mbarrier of the kernel's kind: one phase (each completes once), done when every expected
// arrival has come and its transaction bytes balance.
struct Mbarrier {
  int pending_arrivals = 0;
  long long tx_bytes = 0;  // expected minus landed
  bool Complete() const { return pending_arrivals == 0 && tx_bytes == 0; }
};

// One CTA's shared state
struct Cta {
  Cta(size_t smem_bytes, bool late_copies) : smem(smem_bytes, 0xFF), late(late_copies) {
    for (auto& w : warp_bar) w = std::make_unique<std::barrier<>>(32);
  }
  std::vector<uint8_t> smem;  // 0xFF bytes: a read of never-written shared memory shows as NaN codes
  std::barrier<> bar{kThreads};
  std::unique_ptr<std::barrier<>> warp_bar[kWarps];
  uint64_t exchange[kWarps][32][8] = {};  // per-warp lane table for collectives
  bool late;  // cp.async copies land at the wait (the latest the PTX allows) instead of at issue
  int rank = 0;
  Cluster* cluster = nullptr;
  std::mutex mbar_mu;  // the mbarriers, keyed by shared-memory offset
  std::map<uint32_t, Mbarrier> mbars;
};

// A thread-block cluster: its CTAs run at the same time and share a cluster barrier.
struct Cluster {
  explicit Cluster(int size) : bar(size * kThreads) {}
  std::vector<Cta*> ctas;
  std::barrier<> bar;
};

struct Copy {
  uint32_t dst;
  const void* src;
  int bytes;
};

inline thread_local Cta* tl_cta = nullptr;
inline Cta* CurrentCta() { return tl_cta; }
inline thread_local Dim3 tl_thread, tl_block;
inline thread_local std::optional<std::barrier<>::arrival_token> tl_cluster_arrival;
inline thread_local std::vector<std::vector<Copy>> tl_groups;  // committed cp.async groups, oldest first
inline thread_local std::vector<Copy> tl_open;                 // issued, not yet committed
inline thread_local std::mt19937 tl_rng;

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
// mma.sync's operand exchange: each lane publishes its six fragment registers (A's four, B's two) in
// the warp's table; after the returned reference, every lane's are readable. The caller reads them,
// then calls WarpSync() before the table is reused.
inline uint64_t (&ShareFragments(uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                 uint32_t b1))[32][8] {
  auto& x = CurrentCta()->exchange[Warp()];
  const uint32_t regs[6] = {a0, a1, a2, a3, b0, b1};
  for (int i = 0; i < 6; ++i) x[Lane()][i] = regs[i];
  WarpSync();
  return x;
}

// d += A . B on this lane's accumulator fragment of an m16n8 MMA (d0, d1 = D[g][2t, 2t + 1], d2,
// d3 = D[g + 8][2t, 2t + 1] with g = lane / 4, t = lane % 4), summed in FP32 in k order.
template <int K>
inline void AccumulateFragment(float (&d)[4], const float (&A)[16][K], const float (&B)[K][8]) {
  const int g = Lane() / 4, t = Lane() % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
    float s = 0.0f;
    for (int k = 0; k < K; ++k) s += A[row][k] * B[k][col];
    d[i] += s;
  }
}

inline void Land(const Copy& c) { std::memcpy(SmemBase() + c.dst, c.src, static_cast<size_t>(c.bytes)); }

// Runs `body` (the kernel for one CTA) as `grid` CTAs in clusters of `cluster_size` consecutive
// ones: the CTAs of a cluster at the same time, each on kThreads threads, one cluster after another.
// Fails (aborts) if a thread leaves with cp.async copies never committed or never waited for, or a
// CTA with an mbarrier whose arrivals or bytes did not balance.
inline void Launch(unsigned grid, int cluster_size, size_t smem_bytes, bool late_copies,
                   const std::function<void()>& body) {
  if (cluster_size < 1 || grid % static_cast<unsigned>(cluster_size) != 0) Fail("grid not a multiple of the cluster");
  for (unsigned first = 0; first < grid; first += static_cast<unsigned>(cluster_size)) {
    Cluster cluster(cluster_size);
    std::vector<std::unique_ptr<Cta>> ctas;
    for (int r = 0; r < cluster_size; ++r) {
      ctas.push_back(std::make_unique<Cta>(smem_bytes, late_copies));
      ctas.back()->rank = r;
      ctas.back()->cluster = &cluster;
      cluster.ctas.push_back(ctas.back().get());
    }
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(cluster_size) * kThreads);
    for (int r = 0; r < cluster_size; ++r) {
      for (unsigned t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, r, t] {
          tl_cta = ctas[r].get();
          tl_thread.x = t;
          tl_block.x = first + static_cast<unsigned>(r);
          tl_rng.seed(tl_block.x * 977u + t * 13u + (late_copies ? 1u : 0u));
          tl_groups.clear();
          tl_open.clear();
          tl_cluster_arrival.reset();
          body();
          if (!tl_open.empty()) Fail("cp.async copies never committed");
          for (const auto& g : tl_groups) {
            if (!g.empty()) Fail("a cp.async group never waited for");
          }
          if (tl_cluster_arrival.has_value()) Fail("a cluster barrier arrival never waited for");
          tl_cta = nullptr;
        });
      }
    }
    for (auto& th : threads) th.join();
    for (const auto& cta : ctas) {
      for (const auto& [offset, m] : cta->mbars) {
        if (!m.Complete()) {
          std::fprintf(stderr, "CTA %u: mbarrier at %u left with %d arrivals and %lld bytes pending\n",
                       first + static_cast<unsigned>(cta->rank), offset, m.pending_arrivals, m.tx_bytes);
          std::abort();
        }
      }
    }
  }
}

}  // namespace fp8serve::emu

#define threadIdx (::fp8serve::emu::tl_thread)
#define blockIdx (::fp8serve::emu::tl_block)

// CUDA device builtins the kernel calls, on the host
inline void __syncthreads() {
  if ((fp8serve::emu::tl_rng() & 7u) == 0) std::this_thread::yield();  // shuffle the arrival order
  fp8serve::emu::CurrentCta()->bar.arrive_and_wait();
}
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  auto& x = fp8serve::emu::CurrentCta()->exchange[fp8serve::emu::Warp()];
  std::memcpy(&x[fp8serve::emu::Lane()][0], &v, 4);
  fp8serve::emu::WarpSync();
  float r;
  std::memcpy(&r, &x[fp8serve::emu::Lane() ^ lane_mask][0], 4);
  fp8serve::emu::WarpSync();
  return r;
}
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
inline int __ffs(int x) { return ffs(x); }
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
