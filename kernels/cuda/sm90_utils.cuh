// Device code: thin wrappers over the Hopper (sm_90a) instructions the wgmma GEMM is built from:
// mbarriers, TMA tensor loads, register reallocation (setmaxnreg), wgmma shared-memory matrix
// descriptors and the FP8 wgmma itself. Every wrapper is one PTX instruction (or a wait loop around
// one), so a reader can check it against the PTX ISA line by line.
//
// Only sm_90a code may call these (wgmma and setmaxnreg exist on the `a` target only). They are
// inline functions, so a translation unit that also builds for sm_89 emits them only where an
// sm_90a kernel body calls them.
#pragma once

#include <cuda.h>  // CUtensorMap (a plain struct: no driver library is linked)

#include <cstdint>

#include "kernels/cuda/wgmma_desc.h"  // MakeSmemDescSw128
#include "kernels/numerics/fp8.h"

namespace fp8serve::cuda::sm90 {

// The 32-bit shared-window address of a generic pointer into shared memory.
__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// The kernel's dynamic shared memory. NOTES: declared 16-byte aligned, not 1024: the kernels align
// the base up by hand, and a larger declared alignment would let the compiler assume one the runtime
// does not promise and fold the round-up away.
__device__ __forceinline__ uint8_t* DynamicSmem() {
  extern __shared__ __align__(16) uint8_t sm90_smem_raw[];
  return sm90_smem_raw;
}

// ---------------------------------------------------------------------------------------------
// mbarrier (one 8-byte object in shared memory; all addresses are shared-window addresses)

__device__ __forceinline__ void MbarInit(uint32_t bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
}

// NOTES: makes the initialized barriers visible to the async proxy (TMA's complete_tx) and to the
// other threads; a __syncthreads() must follow before any thread uses them.
__device__ __forceinline__ void FenceBarrierInit() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// One arrival that also announces `bytes` of TMA traffic the phase must wait for.
__device__ __forceinline__ void MbarArriveExpectTx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void MbarArrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

// Blocks until the phase with parity `parity` has completed. A freshly initialized barrier is in
// phase 0, so waiting for parity 1 returns at once ("the phase before the first one").
// NOTES: the retry loop lives inside one asm block (its labels are local to the braces), so no
// compiler-generated branch splits the warp around it; ptxas reconverges the warp at its end, ready
// for the .aligned wgmma that follows a wait.
// NOTES: a wait that never ends (a phase or byte-count mistake) would hang the GPU until the
// process is killed, and take every later test's result with it. After kMbarMaxTries failed tries
// (each try_wait itself waits a while, so this is seconds; no correct wait of this kernel comes
// near it, even under compute-sanitizer) the thread traps: the launch fails with
// cudaErrorLaunchFailure and the test names the case. (No printf here: its stack frame makes the
// kernel spill.)
inline constexpr uint32_t kMbarMaxTries = 1u << 26;

// The bounded wait loop, with the acquire at `scope` ("cta" or "cluster").
#define FP8SERVE_MBAR_WAIT_ASM(scope)                                               \
  "{\n"                                                                             \
  ".reg .pred ready, more;\n"                                                       \
  ".reg .u32 tries;\n"                                                              \
  "mov.u32 tries, 0;\n"                                                             \
  "WAIT_RETRY:\n"                                                                   \
  "mbarrier.try_wait.parity.acquire." scope ".shared::cta.b64 ready, [%0], %1;\n"   \
  "@ready bra WAIT_DONE;\n"                                                         \
  "add.u32 tries, tries, 1;\n"                                                      \
  "setp.lt.u32 more, tries, %2;\n"                                                  \
  "@more bra WAIT_RETRY;\n"                                                         \
  "trap;\n"                                                                         \
  "WAIT_DONE:\n"                                                                    \
  "}\n"

// kClusterScope: acquire at cluster scope, so that what other CTAs of the cluster released onto
// this barrier (st.async complete-tx, remote arrivals) is visible after the wait.
template <bool kClusterScope = false>
__device__ __forceinline__ void MbarWait(uint32_t bar, uint32_t parity) {
  if constexpr (kClusterScope) {
    asm volatile(FP8SERVE_MBAR_WAIT_ASM("cluster")::"r"(bar), "r"(parity), "n"(kMbarMaxTries) : "memory");
  } else {
    asm volatile(FP8SERVE_MBAR_WAIT_ASM("cta")::"r"(bar), "r"(parity), "n"(kMbarMaxTries) : "memory");
  }
}

#undef FP8SERVE_MBAR_WAIT_ASM

// ---------------------------------------------------------------------------------------------
// TMA

// Pulls the tensor map (a __grid_constant__ kernel parameter) into the descriptor cache.
__device__ __forceinline__ void PrefetchTensorMap(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// Copies the box at (c0 = innermost coordinate, c1) of `map` into shared memory at `dst` and
// completes `bytes` of the barrier's transaction count when the data has landed. Out-of-bounds
// elements of the box are written as zeros and still count towards the bytes.
__device__ __forceinline__ void TmaLoad2d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}

// The multicast form: the same box lands at offset `dst` of the shared memory of every CTA of the
// cluster whose bit is set in `cta_mask` (bit r = cluster rank r), and completes `bytes` on the
// mbarrier at offset `bar` of each of them (`dst` and `bar` are this CTA's addresses; the offsets
// are the same in every CTA of the cluster).
__device__ __forceinline__ void TmaLoad2dMulticast(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1,
                                                   uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar), "h"(cta_mask)
      : "memory");
}

// ---------------------------------------------------------------------------------------------
// Thread-block clusters

// This CTA's rank in its cluster (0 in a launch without clusters, whose CTAs are clusters of one).
__device__ __forceinline__ uint32_t ClusterCtaRank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}

// The cluster-wide barrier, split: every thread of every CTA of the cluster arrives, then waits.
// The relaxed arrive publishes nothing (for "I am running" / "I am done storing into others"); the
// release arrive also publishes this thread's earlier writes to the threads that wait after it.
__device__ __forceinline__ void ClusterArriveRelaxed() {
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void ClusterArriveRelease() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void ClusterWait() { asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory"); }

// The shared::cluster address of the same shared-memory byte in CTA `rank` of the cluster.
__device__ __forceinline__ uint32_t MapSharedToRank(uint32_t smem_addr, uint32_t rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(smem_addr), "r"(rank));
  return r;
}

// One arrival on an mbarrier of any CTA of the cluster (a shared::cluster address from
// MapSharedToRank).
// NOTES: release at CTA scope, on purpose. The GEMM's consumers arrive to say "my wgmmas have
// finished reading this stage" (wgmma.wait_group already ordered those asynchronous reads); no
// data of theirs is published, and the producer's overwrite (a TMA) follows its observation of the
// arrival. .release.cluster compiled to MEMBAR.ALL.CTA + MEMBAR.ALL.GPU + two error barriers in
// front of every remote arrive, once per K group; .release.cta is the bare arrive instruction.
__device__ __forceinline__ void MbarArriveRemote(uint32_t cluster_bar) {
  asm volatile("mbarrier.arrive.release.cta.shared::cluster.b64 _, [%0];\n" ::"r"(cluster_bar) : "memory");
}

// ---------------------------------------------------------------------------------------------
// Register reallocation between warpgroups (every warp of a warpgroup executes the same one)

template <int kRegs>
__device__ __forceinline__ void SetMaxNRegDec() {
  static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg takes a multiple of 8 in [24, 256]");
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

template <int kRegs>
__device__ __forceinline__ void SetMaxNRegInc() {
  static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg takes a multiple of 8 in [24, 256]");
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

// ---------------------------------------------------------------------------------------------
// wgmma

// Named barrier `id` (1..15; 0 is __syncthreads) over `threads` threads, a multiple of 32 counted
// per warp: bar.sync counts this warp and waits until `threads` have arrived; bar.arrive counts this
// warp and goes on (the producer side of an ordering).
__device__ __forceinline__ void NamedBarrierSync(uint32_t id, uint32_t threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void NamedBarrierArrive(uint32_t id, uint32_t threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Orders this thread's earlier register and shared-memory accesses before the wgmma that follows
// (needed before the first wgmma and whenever the accumulator registers were touched in between).
__device__ __forceinline__ void WgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }

__device__ __forceinline__ void WgmmaCommitGroup() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }

template <int kPending>
__device__ __forceinline__ void WgmmaWaitGroup() {
  static_assert(kPending >= 0 && kPending <= 7, "wgmma.wait_group takes 0..7");
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}

// Keeps the compiler from moving accesses to an accumulator register across the asynchronous
// wgmma region (the asm statements alone do not tell it that the tensor core owns the register).
__device__ __forceinline__ void FenceOperand(float& r) { asm volatile("" : "+f"(r)::"memory"); }

template <int N>
__device__ __forceinline__ void FenceOperands(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) FenceOperand(r[i]);
}

// Operand lists of the wgmma accumulators: %0..%31 and d[0..31] (N = 64), extended to %63 and
// d[63] (N = 128) and to %95 and d[95] (N = 192).
#define FP8SERVE_WGMMA_DREGS_0_31 \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, " \
  "%24, %25, %26, %27, %28, %29, %30, %31"
#define FP8SERVE_WGMMA_OUTS_0_31(d) \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
  "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
  "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
  "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define FP8SERVE_WGMMA_DREGS_0_63 \
  FP8SERVE_WGMMA_DREGS_0_31 ", " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, " \
  "%54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define FP8SERVE_WGMMA_OUTS_0_63(d) \
  FP8SERVE_WGMMA_OUTS_0_31(d), \
  "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
  "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
  "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
  "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
#define FP8SERVE_WGMMA_N128_DREGS "{" FP8SERVE_WGMMA_DREGS_0_63 "}"
#define FP8SERVE_WGMMA_N128_OUTS(d) FP8SERVE_WGMMA_OUTS_0_63(d)

// The asm of a wgmma with both operands in shared memory (descriptors %desc_a, %desc_b), E4M3 A and
// BTYPE ("e4m3" / "e5m2") B, FP32 accumulators DREGS bound to OUTS; SCALE_D is the operand that,
// when zero, starts from zero instead of adding to the accumulators.
#define FP8SERVE_WGMMA_SS(SHAPE, BTYPE, DREGS, OUTS, DESC_A, DESC_B, SCALE_D)                                 \
  asm volatile("{\n"                                                                                          \
               ".reg .pred p;\n"                                                                              \
               "setp.ne.b32 p, " SCALE_D ", 0;\n"                                                             \
               "wgmma.mma_async.sync.aligned." SHAPE ".f32.e4m3." BTYPE " " DREGS ", " DESC_A ", " DESC_B      \
               ", p, 1, 1;\n"                                                                                 \
               "}\n"                                                                                          \
               : OUTS                                                                                         \
               : "l"(desc_a), "l"(desc_b), "r"(scale_d))

// D[64 x 128] (+)= A[64 x 32] . B[128 x 32]^T, both operands FP8 in shared memory (descriptors),
// FP32 accumulators in registers. scale_d == 0 starts from zero instead of adding to d.
// Accumulator layout (thread t of the warpgroup, warp w = t / 32, lane l = t % 32), for
// j = 0..15:  d[4j + 0], d[4j + 1]: row 16w + l/4,     columns 8j + 2(l%4) + {0, 1}
//             d[4j + 2], d[4j + 3]: row 16w + l/4 + 8, the same columns.
// A is always E4M3 (the activations); B is E4M3 or E5M2 (the weights).
template <Fp8Format kBFormat>
__device__ __forceinline__ void WgmmaM64N128K32(float (&d)[64], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
  if constexpr (kBFormat == Fp8Format::kE4M3) {
    FP8SERVE_WGMMA_SS("m64n128k32", "e4m3", FP8SERVE_WGMMA_N128_DREGS, FP8SERVE_WGMMA_N128_OUTS(d), "%64", "%65", "%66");
  } else {
    FP8SERVE_WGMMA_SS("m64n128k32", "e5m2", FP8SERVE_WGMMA_N128_DREGS, FP8SERVE_WGMMA_N128_OUTS(d), "%64", "%65", "%66");
  }
}

#define FP8SERVE_WGMMA_N192_DREGS \
  "{" FP8SERVE_WGMMA_DREGS_0_63 ", " \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, " \
  "%86, %87, %88, %89, %90, %91, %92, %93, %94, %95" "}"
#define FP8SERVE_WGMMA_N192_OUTS(d) \
  FP8SERVE_WGMMA_OUTS_0_63(d), \
  "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
  "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), \
  "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), \
  "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])

// D[64 x 192] (+)= A[64 x 32] . B[192 x 32]^T: WgmmaM64N128K32 with a 192-row B (the wide tile,
// gemm_config.h). Accumulator layout as WgmmaM64N128K32's, for j = 0..23.
template <Fp8Format kBFormat>
__device__ __forceinline__ void WgmmaM64N192K32(float (&d)[96], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
  if constexpr (kBFormat == Fp8Format::kE4M3) {
    FP8SERVE_WGMMA_SS("m64n192k32", "e4m3", FP8SERVE_WGMMA_N192_DREGS, FP8SERVE_WGMMA_N192_OUTS(d), "%96", "%97", "%98");
  } else {
    FP8SERVE_WGMMA_SS("m64n192k32", "e5m2", FP8SERVE_WGMMA_N192_DREGS, FP8SERVE_WGMMA_N192_OUTS(d), "%96", "%97", "%98");
  }
}

#undef FP8SERVE_WGMMA_N128_DREGS
#undef FP8SERVE_WGMMA_N128_OUTS
#undef FP8SERVE_WGMMA_N192_DREGS
#undef FP8SERVE_WGMMA_N192_OUTS
#undef FP8SERVE_WGMMA_SS

// The m64nNk32 wgmma of an N-wide tile (N = 128 or 192), accumulators float[N / 2].
template <int N, Fp8Format kBFormat>
__device__ __forceinline__ void WgmmaM64NK32(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
  static_assert(N == 128 || N == 192, "wgmma wrappers exist for N = 128 and 192");
  if constexpr (N == 128) {
    WgmmaM64N128K32<kBFormat>(d, desc_a, desc_b, scale_d);
  } else {
    WgmmaM64N192K32<kBFormat>(d, desc_a, desc_b, scale_d);
  }
}

#define FP8SERVE_WGMMA_N64_DREGS "{" FP8SERVE_WGMMA_DREGS_0_31 "}"
#define FP8SERVE_WGMMA_N64_OUTS(d) FP8SERVE_WGMMA_OUTS_0_31(d)

// D[64 x 64] (+)= A[64 x 32] . B[64 x 32]^T with A (E4M3) in registers and B (E4M3 or E5M2) in
// shared memory (descriptor), FP32 accumulators. scale_d == 0 starts from zero.
// A's registers (thread t, warp w = t / 32 of the warpgroup, lane l, g = l / 4, q = l % 4): a[0] =
// row 16w + g, k 4q..4q+3; a[1] = row 16w + g + 8, the same k; a[2], a[3] = the same rows, k 16 + 4q..
// (byte i of a register = k + i): per warp, exactly mma.m16n8k32's A fragment, which ldmatrix.x4
// gives. D: as WgmmaM64N128K32's, for j = 0..7.
template <Fp8Format kBFormat>
__device__ __forceinline__ void WgmmaM64N64K32RS(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b,
                                                 uint32_t scale_d) {
  if constexpr (kBFormat == Fp8Format::kE4M3) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 " FP8SERVE_WGMMA_N64_DREGS
        ", {%32, %33, %34, %35}, %36, p, 1, 1;\n"
        "}\n"
        : FP8SERVE_WGMMA_N64_OUTS(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
  } else {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e5m2 " FP8SERVE_WGMMA_N64_DREGS
        ", {%32, %33, %34, %35}, %36, p, 1, 1;\n"
        "}\n"
        : FP8SERVE_WGMMA_N64_OUTS(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
  }
}

#undef FP8SERVE_WGMMA_N64_DREGS
#undef FP8SERVE_WGMMA_N64_OUTS
#undef FP8SERVE_WGMMA_DREGS_0_63
#undef FP8SERVE_WGMMA_OUTS_0_63
#undef FP8SERVE_WGMMA_DREGS_0_31
#undef FP8SERVE_WGMMA_OUTS_0_31

// Makes this thread's completed generic-proxy writes to shared memory (st.shared, cp.async) visible
// to the async proxy, which wgmma reads its shared-memory operands through; a barrier after it
// extends that to the other threads' wgmmas.
__device__ __forceinline__ void FenceProxyAsyncShared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

}  // namespace fp8serve::cuda::sm90
