#!/usr/bin/env python3
"""Checks that the kernels' host emulation tests have teeth: plants known bugs in the kernels, one at a
time, rebuilds the emulation test that should catch each, runs it, and requires it to fail.

Each mutation edits one line of a kernel source in place (the text must occur exactly once) and is
undone afterwards, also on an error or Ctrl-C. It refuses to start when a file it would edit has
uncommitted changes. A mutant "caught" means the test exited non-zero (a failed check, or the
emulation aborting on a hazard); "MISSED" means it passed with the bug in, which fails this tool.

  tools/emu_mutants.py                 # every mutation, build dir ./build
  tools/emu_mutants.py --build DIR --only sm90_early_release
  tools/emu_mutants.py --list

Takes about 15 minutes on 2 cores (each mutant rebuilds one test program and runs all of it; the
wrong-parity mutant waits out the emulation's one-minute deadlock timeout).
"""
import argparse
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SM90 = "kernels/cuda/sm90_fp8_gemm.cuh"
SM89 = "kernels/cuda/sm89_fp8_gemm.cuh"
ACT = "kernels/cuda/act_quant.cuh"
FUSED = "kernels/cuda/fused_mlp.cuh"

# (name, file, text, replacement, test program, what the bug is)
MUTATIONS = [
    ("sm90_early_release", SM90,
     "          sm90::WgmmaWaitGroup<1>();\n        } else {\n          sm90::WgmmaWaitGroup<0>();\n"
     "        }\n        sm90::FenceOperands(accum0);\n        release_group();",
     "          release_group();\n          sm90::WgmmaWaitGroup<1>();\n        } else {\n          release_group();\n"
     "          sm90::WgmmaWaitGroup<0>();\n        }\n        sm90::FenceOperands(accum0);",
     "sm90_gemm_emu_test", "a stage handed back before its wgmmas were waited for"),
    ("sm90_no_drain", SM90,
     "      if (cluster_size > 1) {\n        for (int i = 0; i < num_stages; ++i) {",
     "      if (cluster_size > 1000) {\n        for (int i = 0; i < num_stages; ++i) {",
     "sm90_gemm_emu_test", "the producer leaves before its cluster's last releases"),
    ("sm90_multicast_share", SM90,
     "const uint32_t a_share = static_cast<uint32_t>(rank_n * a_rows * BLOCK_K);",
     "const uint32_t a_share = 0u * static_cast<uint32_t>(rank_n * a_rows * BLOCK_K);",
     "sm90_gemm_emu_test", "every CTA multicasts its A share to the same place"),
    ("sm90_b_kstep", SM90,
     "sm90::WgmmaM64NK32<BLOCK_N, kBFormat>(acc, desc_a + step, desc_b + step,",
     "sm90::WgmmaM64NK32<BLOCK_N, kBFormat>(acc, desc_a + step, desc_b + (step ^ 2),",
     "sm90_gemm_emu_test", "B's k32 steps out of step with A's"),
    ("sm90_counter_not_reset", SM90,
     "if (last) atomicExch(counter, 0);",
     "if (last && p.m < 0) atomicExch(counter, 0);",
     "sm90_gemm_emu_test", "a split-K counter left non-zero for the next launch"),
    ("sm90_wide_scale_block", SM90,
     "const bool mid_lo = !kTwoBlocks || MiddleChunksInLo(blocks.lo_chunks);",
     "const bool mid_lo = !kTwoBlocks || !MiddleChunksInLo(blocks.lo_chunks);",
     "sm90_gemm_emu_test", "the wide tile's middle chunks take the wrong scale block"),
    ("sm90_empty_parity", SM90,
     "sm90::MbarWait(empty_bars + 8 * s, (s < stage ? phase ^ 1 : phase) ^ 1);",
     "sm90::MbarWait(empty_bars + 8 * s, (s < stage ? phase ^ 1 : phase));",
     "sm90_gemm_emu_test", "the producer waits for the wrong empty-barrier parity (deadlock)"),
    ("sm89_wait_short", SM89,
     "    cp_async_wait<kNumStages - 2>();",
     "    cp_async_wait<kNumStages - 1>();",
     "sm89_gemm_emu_test", "a cp.async wait one group short"),
    ("sm89_ldmatrix_chunk", SM89,
     "ldmatrix_x4(a_frag[mt], a_base + swizzle(mt * 16 + a_ld_row, 2 * ks + a_ld_chunk));",
     "ldmatrix_x4(a_frag[mt], a_base + swizzle(mt * 16 + a_ld_row, 2 * ks + (a_ld_chunk ^ 1)));",
     "sm89_gemm_emu_ada_test", "A fragments loaded from the wrong 16-byte chunk"),
    ("fused_b_chunk", FUSED,
     "LdMatrixX4(w_stage + nr * kFusedTileK + Swizzle(nr, ks * 2 + ((lane >> 3) & 1)), r4);",
     "LdMatrixX4(w_stage + nr * kFusedTileK + Swizzle(nr, ks * 2 + (((lane >> 3) & 1) ^ 1)), r4);",
     "fused_mlp_emu_test", "the fused kernel's B fragments from the wrong 16-byte chunk"),
    ("fused_wait_short", FUSED,
     "      CpAsyncWait<kNumStages - 2>();",
     "      CpAsyncWait<kNumStages - 1>();",
     "fused_mlp_emu_test", "the fused kernel's cp.async wait one group short"),
    ("fused_wgmma_columns", FUSED,
     "WgmmaGroupM64N64<kBFormat>(part, a, w_stage + static_cast<uint32_t>(col0 * kFusedTileK));",
     "WgmmaGroupM64N64<kBFormat>(part, a, w_stage + static_cast<uint32_t>((col0 ^ 64) * kFusedTileK));",
     "fused_mlp_emu_test", "the fused kernel's wgmma pointed at the other 64 weight columns"),
    ("act_quant_short_shuffle", ACT,
     "for (int offset = 16; offset > 0; offset /= 2)",
     "for (int offset = 16; offset > 1; offset /= 2)",
     "small_kernels_emu_test", "the group amax reduced over half the warp"),
]


def run(cmd, timeout=None, log=None):
    with open(log, "w") if log else open(os.devnull, "w") as out:
        return subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", help="the configured CMake build directory (default: build)")
    ap.add_argument("--only", action="append", help="run only this mutation (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--timeout", type=int, default=600, help="seconds a mutant's test may run (default 600)")
    args = ap.parse_args()

    if args.list:
        for name, path, _, _, test, what in MUTATIONS:
            print(f"{name:26s} {test:24s} {what}")
        return 0
    chosen = [m for m in MUTATIONS if not args.only or m[0] in args.only]
    unknown = set(args.only or []) - {m[0] for m in MUTATIONS}
    if unknown:
        print(f"unknown mutation(s): {', '.join(sorted(unknown))} (see --list)", file=sys.stderr)
        return 2
    build = os.path.join(ROOT, args.build)
    if not os.path.exists(os.path.join(build, "build.ninja")):
        print(f"{build} is not a configured Ninja build directory (run ./run.sh test once)", file=sys.stderr)
        return 2
    files = sorted({m[1] for m in chosen})
    dirty = subprocess.run(["git", "status", "--porcelain", "--"] + files, cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    if dirty:
        print(f"refusing to edit files with uncommitted changes:\n{dirty}", file=sys.stderr)
        return 2

    originals = {}

    def restore():
        for path, text in originals.items():
            with open(os.path.join(ROOT, path), "w") as f:
                f.write(text)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    logdir = os.path.join(build, "emu_mutants")
    os.makedirs(logdir, exist_ok=True)
    results = []
    try:
        for i, (name, path, old, new, test, what) in enumerate(chosen, 1):
            full = os.path.join(ROOT, path)
            with open(full) as f:
                text = f.read()
            if text.count(old) != 1:
                results.append((name, "STALE", 0.0, f"the text to mutate occurs {text.count(old)} times in {path}"))
                print(f"[{i}/{len(chosen)}] {name}: STALE (update the mutation)", flush=True)
                continue
            originals[path] = text
            with open(full, "w") as f:
                f.write(text.replace(old, new))
            start = time.time()
            log = os.path.join(logdir, f"{name}.log")
            if run(["ninja", "-C", build, f"tests/{test}"], log=log + ".build") != 0:
                verdict = "BUILD-FAILED"
            else:
                try:
                    rc = run([os.path.join(build, "tests", test)], timeout=args.timeout, log=log)
                    verdict = "caught" if rc != 0 else "MISSED"
                except subprocess.TimeoutExpired:
                    verdict = "caught (timeout)"
            restore()
            originals.pop(path)
            results.append((name, verdict, time.time() - start, what))
            print(f"[{i}/{len(chosen)}] {name}: {verdict} ({time.time() - start:.0f} s) - {what}", flush=True)
    finally:
        restore()
        # Rebuild the restored tests so the build directory matches the sources again
        for test in sorted({m[4] for m in chosen}):
            run(["ninja", "-C", build, f"tests/{test}"])

    print(f"\n{'mutation':26s} {'result':16s} {'s':>5s}  bug")
    for name, verdict, secs, what in results:
        print(f"{name:26s} {verdict:16s} {secs:5.0f}  {what}")
    bad = [r for r in results if not r[1].startswith("caught")]
    print(f"\n{len(results) - len(bad)} of {len(results)} mutants caught (logs in {logdir})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
