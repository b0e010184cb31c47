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
#include "tests/kernels/cuda/emu/emu_warp_ops.h"

namespace fp8serve::cuda::fused_detail {

inline uint32_t SmemAddr(const void* p) { return emu::SharedOffset(p); }

inline uint8_t* DynamicSmem() { return emu::SmemBase(); }

// cp.async, ldmatrix and mma.sync: emu_warp_ops.h
inline void CpAsync16(uint32_t dst, const void* src) { emu::CpAsync(dst, src, 16, 16); }
inline void CpAsync4(uint32_t dst, const void* src) { emu::CpAsync(dst, src, 4, 4); }
inline void CpAsyncCommit() { emu::CpAsyncCommit(); }
template <int kPending>
inline void CpAsyncWait() {
  emu::CpAsyncWait<kPending>();
}
inline void LdMatrixX4(uint32_t addr, uint32_t (&r)[4]) { emu::LdMatrixX4(addr, r); }
template <bool kE5M2>
inline void MmaFp8(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  emu::MmaFp8<kE5M2>(d, a, b0, b1);
}
using emu::DecodeFragmentA;

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
