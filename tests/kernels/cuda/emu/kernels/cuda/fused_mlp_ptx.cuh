// Host version of kernels/cuda/fused_mlp_ptx.cuh for the fused kernel's emulation test (see
// tests/kernels/cuda/emu/emu_runtime.h): the same functions, each doing what its PTX instruction is
// defined to do.
#pragma once

#include <cstdint>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include "kernels/numerics/fp8.h"
#include "tests/kernels/cuda/emu/emu_runtime.h"

namespace fp8serve::cuda::fused_detail {

inline uint32_t SmemAddr(const void* p) {
  const uint8_t* base = emu::SmemBase();
  const uint8_t* q = static_cast<const uint8_t*>(p);
  if (q < base || q > base + emu::CurrentCta()->smem.size()) emu::Fail("SmemAddr of a non-shared address");
  return static_cast<uint32_t>(q - base);
}

inline uint8_t* DynamicSmem() { return emu::SmemBase(); }

// cp.async: the copy is recorded in the open group; it lands at issue, or (late copies) when a
// wait retires its group.
inline void CpAsync16(uint32_t dst, const void* src) {
  emu::CheckSmem(dst, 16, 16);
  if (reinterpret_cast<uintptr_t>(src) % 16 != 0) emu::Fail("cp.async 16 from a misaligned address");
  emu::tl_open.push_back({dst, src, 16});
  if (!emu::CurrentCta()->late) emu::Land(emu::tl_open.back());
}
inline void CpAsync4(uint32_t dst, const void* src) {
  emu::CheckSmem(dst, 4, 4);
  if (reinterpret_cast<uintptr_t>(src) % 4 != 0) emu::Fail("cp.async 4 from a misaligned address");
  emu::tl_open.push_back({dst, src, 4});
  if (!emu::CurrentCta()->late) emu::Land(emu::tl_open.back());
}
inline void CpAsyncCommit() {
  emu::tl_groups.push_back(std::move(emu::tl_open));
  emu::tl_open.clear();
}
template <int kPending>
inline void CpAsyncWait() {
  while (static_cast<int>(emu::tl_groups.size()) > kPending) {
    if (emu::CurrentCta()->late) {
      for (const emu::Copy& c : emu::tl_groups.front()) emu::Land(c);
    }
    emu::tl_groups.erase(emu::tl_groups.begin());
  }
}

// ldmatrix.m8n8.x4.b16: lanes 8j..8j+7 give the row addresses of matrix j; lane (g, t) = (lane / 4,
// lane % 4) receives bytes 4t..4t+3 of row g of each matrix, register j from matrix j.
inline void LdMatrixX4(uint32_t addr, uint32_t (&r)[4]) {
  emu::CheckSmem(addr, 16, 16);
  auto& x = emu::CurrentCta()->exchange[emu::Warp()];
  x[emu::Lane()][0] = addr;
  emu::WarpSync();
  const int g = emu::Lane() / 4, t = emu::Lane() % 4;
  for (int j = 0; j < 4; ++j) {
    const uint32_t row = static_cast<uint32_t>(x[8 * j + g][0]);
    std::memcpy(&r[j], emu::SmemBase() + row + 4 * t, 4);
  }
  emu::WarpSync();
}

// mma.sync.m16n8k32 with E4M3 A (row) and E4M3/E5M2 B (col), FP32 accumulate. Fragments (g = lane
// / 4, t = lane % 4; byte i of a register is element +i): A a0 = A[g][4t..], a1 = A[g+8][4t..],
// a2 = A[g][16+4t..], a3 = A[g+8][16+4t..]; B b0 = B[4t..][g], b1 = B[16+4t..][g]; C/D c0, c1 =
// D[g][2t, 2t+1], c2, c3 = D[g+8][2t, 2t+1].
// The warp's 16 x 32 E4M3 A operand from every lane's four fragment registers (table columns 0-3,
// as ShareFragments leaves them): the m16n8k32 layout, which wgmma's register A uses per warp too.
inline void DecodeFragmentA(const uint64_t (&x)[32][8], float (&A)[16][32]) {
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int reg = 0; reg < 4; ++reg) {
      for (int byte = 0; byte < 4; ++byte) {
        const uint8_t code = static_cast<uint8_t>(x[l][reg] >> (8 * byte));
        A[g + 8 * (reg & 1)][4 * t + byte + 16 * (reg >> 1)] = DecodeE4M3(code);
      }
    }
  }
}

template <bool kE5M2>
inline void MmaFp8(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const auto& x = emu::ShareFragments(a[0], a[1], a[2], a[3], b0, b1);
  float A[16][32], B[32][8];
  DecodeFragmentA(x, A);
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int reg = 0; reg < 2; ++reg) {
      for (int byte = 0; byte < 4; ++byte) {
        const uint8_t code = static_cast<uint8_t>(x[l][4 + reg] >> (8 * byte));
        B[4 * t + byte + 16 * reg][g] = kE5M2 ? DecodeE5M2(code) : DecodeE4M3(code);
      }
    }
  }
  emu::WarpSync();
  emu::AccumulateFragment(d, A, B);
}

// wgmma.m64n64k32 x 4 (A from registers, B by a 128-byte-swizzle descriptor), fresh, waited for.
// B[n][k] is byte k of row n at b + 128 n, its 16-byte chunk k / 16 moved to (k / 16) ^ (n % 8).
// Each warp of the warpgroup supplies (and gets) rows 16 (warp % 4) .. + 15, so this thread's
// values need only its own warp's A fragments: D[16 w + g (+8)][8 j + 2 t (+1)] in part[4 j ..].
template <Fp8Format kBFormat>
inline void WgmmaGroupM64N64(float (&part)[32], const uint32_t (&a)[4][4], uint32_t b) {
  if (b % 1024 != 0) emu::Fail("wgmma B operand not 1024-byte aligned");
  emu::CheckSmem(b, 64 * 128, 16);
  for (float& v : part) v = 0.0f;
  for (int ks = 0; ks < 4; ++ks) {
    float A[16][32];
    DecodeFragmentA(emu::ShareFragments(a[ks][0], a[ks][1], a[ks][2], a[ks][3], 0, 0), A);
    emu::WarpSync();
    const int g = emu::Lane() / 4, t = emu::Lane() % 4;
    for (int j = 0; j < 8; ++j) {
      for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i >> 1), n = 8 * j + 2 * t + (i & 1);
        float s = 0.0f;
        for (int kk = 0; kk < 32; ++kk) {
          const int k = 32 * ks + kk;
          const uint8_t code = emu::SmemBase()[b + 128 * n + ((((k / 16) ^ (n % 8)) * 16) + k % 16)];
          s += A[row][kk] * (kBFormat == Fp8Format::kE4M3 ? DecodeE4M3(code) : DecodeE5M2(code));
        }
        part[4 * j + i] += s;
      }
    }
  }
}
inline void FenceProxyAsyncShared() {}

inline uint64_t GlobalTimerNs() { return 0; }
inline uint32_t SmId() { return 0; }

// ---- Clusters (emu_runtime.h has the cluster and mbarrier model) ---------------------------------

inline constexpr bool HasClusters() { return true; }
inline int ClusterRank() { return emu::CurrentCta()->rank; }

// barrier.cluster.arrive.relaxed / barrier.cluster.wait over every thread of the cluster
inline void ClusterArriveRelaxed() { emu::ClusterArrive(); }
inline void ClusterWait() { emu::ClusterWait(); }

inline uint32_t MapToRank(uint32_t smem_addr, int rank) { return emu::MapToRank(smem_addr, rank); }
inline emu::Cta* ClusterTarget(uint32_t cluster_addr, uint32_t& offset) {
  return emu::ClusterTarget(cluster_addr, offset);
}

inline void MbarInit(uint32_t bar, uint32_t count) { emu::MbarInit(bar, count); }
inline void MbarInitFence() {}
inline void MbarArriveExpectTx(uint32_t bar, uint32_t bytes) { emu::MbarUpdate(emu::CurrentCta(), bar, 1, bytes); }
// Waits until the barrier's first phase completes (each of the kernel's mbarriers completes once:
// the launch checks it); an mbarrier that never does fails after a minute instead of hanging.
inline void MbarWaitCluster(uint32_t bar, uint32_t parity) {
  if (parity != 0) emu::Fail("the kernel's mbarriers complete once: a wait for parity 1");
  emu::MbarWaitParity(bar, parity);
}

// st.async: the bytes land in the target CTA's shared memory, then count on its mbarrier.
inline void StoreAsyncBytes(uint32_t cluster_addr, const void* data, int bytes, uint32_t cluster_bar) {
  uint32_t offset = 0, bar = 0;
  emu::Cta* target = ClusterTarget(cluster_addr, offset);
  emu::Cta* bar_cta = ClusterTarget(cluster_bar, bar);
  if (bar_cta != target) emu::Fail("st.async counted on another CTA's mbarrier");
  if (offset % static_cast<uint32_t>(bytes) != 0 || offset + bytes > target->smem.size()) {
    emu::Fail("st.async out of bounds or misaligned");
  }
  std::lock_guard<std::mutex> lock(target->mbar_mu);  // (also orders the bytes before the count)
  if (target->exited) emu::Fail("st.async into a CTA that has exited");
  std::memcpy(target->smem.data() + offset, data, static_cast<size_t>(bytes));
  emu::MbarUpdateLocked(target, bar, 0, -bytes);
}
inline void StoreAsync(uint32_t cluster_addr, const uint4& v, uint32_t cluster_bar) {
  StoreAsyncBytes(cluster_addr, &v, 16, cluster_bar);
}
inline void StoreAsync(uint32_t cluster_addr, const float (&v)[4], uint32_t cluster_bar) {
  StoreAsyncBytes(cluster_addr, v, 16, cluster_bar);
}
inline void StoreAsync(uint32_t cluster_addr, float v, uint32_t cluster_bar) {
  StoreAsyncBytes(cluster_addr, &v, 4, cluster_bar);
}

}  // namespace fp8serve::cuda::fused_detail
