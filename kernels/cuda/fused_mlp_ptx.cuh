// The fused MLP kernel's PTX: every instruction it issues through inline assembly (copies, MMAs,
// the cluster's barriers, mbarriers and st.async), and its dynamic shared memory, behind small
// functions (fused_mlp.cuh has the kernel). The host emulation test (tests/kernels/cuda/emu)
// supplies its own header of this name with the same functions, so the kernel's own code runs
// unchanged on the CPU.
#pragma once

#include <cstdint>

#include "kernels/cuda/sm90_utils.cuh"
#include "kernels/numerics/fp8.h"

namespace fp8serve::cuda::fused_detail {

using sm90::SmemAddr;  // a plain address conversion, valid on sm_89 too

// The dynamic shared memory (the launcher sizes it)
__device__ __forceinline__ uint8_t* DynamicSmem() {
  extern __shared__ __align__(128) uint8_t smem_raw[];
  return smem_raw;
}

// NOTES: .cg bypasses L1: every weight chunk is read once per CTA, and L2 is where it stays hot
// between forwards and between the CTAs of one forward.
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void CpAsync4(uint32_t dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void LdMatrixX4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// d += A (16 x 32 E4M3) . B (32 x 8, E4M3 or E5M2), FP32 accumulate.
template <bool kE5M2>
__device__ __forceinline__ void MmaFp8(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (kE5M2) {
    asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e5m2.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// ---- wgmma (FusedMma::kWgmma; the launcher runs those instances on compute capability 9.0 only) --

// P = A . B^T over one 128-K group, fresh: A = 64 rows x 128 K in registers (a[ks] is the calling
// warp's mma.m16n8k32 A fragment of k32 step ks, rows 16 (warp % 4) ..), B = 64 weight rows x 128
// K bytes, 128-byte swizzled, at shared address `b`; four wgmma.m64n64k32, then waited for. P is
// the warpgroup's accumulator: this thread's 32 values in mma.sync's C order for n-tiles 0..7.
template <Fp8Format kBFormat>
__device__ __forceinline__ void WgmmaGroupM64N64(float (&part)[32], const uint32_t (&a)[4][4], uint32_t b) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#pragma unroll
  for (int i = 0; i < 32; ++i) part[i] = 0.0f;  // (the first k32 step overwrites; defined operands)
  const uint64_t desc_b = sm90::MakeSmemDescSw128(b);
  sm90::WgmmaFence();
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) sm90::WgmmaM64N64K32RS<kBFormat>(part, a[ks], desc_b + 2 * ks, ks == 0 ? 0u : 1u);
  sm90::WgmmaCommitGroup();
  sm90::WgmmaWaitGroup<0>();
  sm90::FenceOperands(part);
#else
  __trap();
#endif
}

// Makes the CTA's completed cp.async writes visible to wgmma's reads (the async proxy)
__device__ __forceinline__ void FenceProxyAsyncShared() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  sm90::FenceProxyAsyncShared();
#endif
}

__device__ __forceinline__ uint64_t GlobalTimerNs() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
  return t;
}

__device__ __forceinline__ uint32_t SmId() {
  uint32_t id;
  asm volatile("mov.u32 %0, %%smid;\n" : "=r"(id));
  return id;
}

// ---- Cluster primitives (sm_90; on sm_89 the launcher only ever runs cluster_size 1) ------------

// Whether this compilation has thread-block clusters; without them the kernel's cluster size is
// the constant 1 and every cluster branch folds away.
__device__ __forceinline__ constexpr bool HasClusters() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  return true;
#else
  return false;
#endif
}

__device__ __forceinline__ int ClusterRank() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  return static_cast<int>(sm90::ClusterCtaRank());
#else
  return 0;
#endif
}

// Arrive without publishing anything: the start barrier ("this CTA is running, its mbarriers are
// initialized") and the exit barrier ("this CTA has issued all its stores into other CTAs").
__device__ __forceinline__ void ClusterArriveRelaxed() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  sm90::ClusterArriveRelaxed();
#endif
}
__device__ __forceinline__ void ClusterWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  sm90::ClusterWait();
#endif
}

// The shared::cluster address of the same shared-memory byte in CTA `rank` of the cluster.
__device__ __forceinline__ uint32_t MapToRank(uint32_t smem_addr, int rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  return sm90::MapSharedToRank(smem_addr, static_cast<uint32_t>(rank));
#else
  return smem_addr;
#endif
}

// The mbarrier operations of sm90_utils.cuh, compiled out on sm_89 (where the kernel has no cluster):
// init with an arrival count of `count` (one thread; fence before any other thread of the cluster
// uses it), the fence that makes this thread's inits visible to the cluster (with the start
// cluster barrier after it), and the barrier's one arrival of phase 0, announcing `bytes` of
// st.async data to come.
__device__ __forceinline__ void MbarInit(uint32_t bar, uint32_t count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  sm90::MbarInit(bar, count);
#endif
}
__device__ __forceinline__ void MbarInitFence() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  sm90::FenceBarrierInit();
#endif
}
__device__ __forceinline__ void MbarArriveExpectTx(uint32_t bar, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  sm90::MbarArriveExpectTx(bar, bytes);
#endif
}
// Waits until phase `parity` of the local barrier completes. Acquire at cluster scope: the data
// that other CTAs' st.async counted on it (whose complete-tx is a release at cluster scope) is
// visible to this thread afterwards.
// A byte count that never arrives traps after sm90::kMbarMaxTries tries (the launch then fails with
// cudaErrorLaunchFailure) instead of hanging the GPU.
__device__ __forceinline__ void MbarWaitCluster(uint32_t bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  sm90::MbarWait</*kClusterScope=*/true>(bar, parity);
#endif
}

// Stores into another CTA's shared memory (shared::cluster addresses of the destination and of an
// mbarrier of the same CTA), counted in bytes on that mbarrier when they land.
__device__ __forceinline__ void StoreAsync(uint32_t cluster_addr, const uint4& v, uint32_t cluster_bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];\n" ::"r"(
                   cluster_addr),
               "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w), "r"(cluster_bar)
               : "memory");
#endif
}
__device__ __forceinline__ void StoreAsync(uint32_t cluster_addr, const float (&v)[4], uint32_t cluster_bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.f32 [%0], {%1, %2, %3, %4}, [%5];\n" ::"r"(
                   cluster_addr),
               "f"(v[0]), "f"(v[1]), "f"(v[2]), "f"(v[3]), "r"(cluster_bar)
               : "memory");
#endif
}
__device__ __forceinline__ void StoreAsync(uint32_t cluster_addr, float v, uint32_t cluster_bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.f32 [%0], %1, [%2];\n" ::"r"(cluster_addr),
               "f"(v), "r"(cluster_bar)
               : "memory");
#endif
}

}  // namespace fp8serve::cuda::fused_detail
