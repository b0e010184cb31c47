#!/usr/bin/env bash
# Nsight Compute profile of chosen kernels on the GPU machine (device-bundle/ carried, as for
# gpu_check.sh). Each entry of PROFILE_RUNS is "LABEL|KERNEL_REGEX|BENCH_FLAGS[|NAME_BASE]": ncu
# profiles the first matching launch after a skip of 2 (warm code and L2 as in the bench) with the
# sections that say where a kernel's time goes; the details go to $OUT/ncu-LABEL.txt, a digest to
# the console. NAME_BASE is what the regex sees (ncu --kernel-name-base: function, demangled or
# mangled; default function); "mangled" tells template instances apart (the fused kernel's wgmma
# instances end their template arguments in Lb1E).
#
#   usage (device tool): run(command="tools/device/profile.sh", carry=["device-bundle"], timeout_s=...)
#   env: PROFILE_RUNS (newline-separated entries; default: the fused forward at batch 64 with
#        mma.sync and with wgmma, the wgmma GEMM at 8192^3 with the default main loop, +yield, the
#        cross-bank one and one accumulator, the GEMM at 64x16384x4096, the 128x192 tile at 8192^3
#        plain and +yield (bench --profile_variant)), OUT, BUNDLE
#        PROFILE_SASS (entries of the same form plus an optional fifth field of extra ncu flags;
#        default: the 128-wide wgmma GEMM at 8192^3 with the default, +yield and cross-bank loops,
#        and the fused forward at batch 64 at the shortest sampling interval): ncu's source page per
#        SASS instruction, digested to the 30 instructions with the most warp-stall samples and to
#        a table per opcode with its largest stall reasons ($OUT/sass-LABEL.txt; the report beside it)
set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
OUT=${OUT:-$PWD/profile-out}
B=${BUNDLE:-device-bundle}
mkdir -p "$OUT"
if [ -f "$B/bundle.tar.xz" ] && [ ! -f "$B/.unpacked" ]; then
  tar -xJf "$B/bundle.tar.xz" -C "$B" && touch "$B/.unpacked" || { echo "*** cannot unpack $B"; exit 2; }
fi
export LD_LIBRARY_PATH="$PWD/$B/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
# The +yield variants profiled below need their SASS edit (a no-op when gpu_check.sh made it already)
if [ -f "$B/lib/libfp8serve_cuda.so" ]; then
  timeout -k 5 60 python3 tools/device/ffma_yield.py "$B/lib/libfp8serve_cuda.so" \
    --cuobjdump "$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)" | tail -n 1 ||
    echo "*** ffma_yield.py failed: the +yield profiles show the default loop"
fi
ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
[ -n "$ncu" ] || { echo "*** ncu not found"; exit 2; }
runs=${PROFILE_RUNS:-"fused64|fused_mlp|--skip_gemm --mlp_batches=64 --iters=5 --warmup=2
fused64w|fused_mlp_kernelI.*Lb1E|--skip_gemm --mlp_batches=64 --iters=5 --warmup=2|mangled
wgmma8192|sm90_fp8_gemm|--skip_mlp --shapes=8192x8192x8192 --iters=3 --warmup=1 --profile_variant=ours/sm90_wgmma
wgmma8192yield|sm90_fp8_gemm|--skip_mlp --shapes=8192x8192x8192 --iters=3 --warmup=1 --profile_variant=ours/sm90_wgmma+yield
m64_ffn|fp8_gemm|--skip_mlp --shapes=64x16384x4096 --iters=3 --warmup=1
wgmma8192xbank|sm90_fp8_gemm|--skip_mlp --shapes=8192x8192x8192 --iters=3 --warmup=1 --profile_variant=ours/sm90_wgmma+xbank
wgmma8192oneacc|sm90_fp8_gemm|--skip_mlp --shapes=8192x8192x8192 --iters=3 --warmup=1 --profile_variant=ours/sm90_wgmma+oneacc
wgmma8192wide|sm90_fp8_gemm|--skip_mlp --shapes=8192x8192x8192 --iters=3 --warmup=1 --profile_variant=ours/sm90_wgmma+n192
wgmma8192wideyield|sm90_fp8_gemm|--skip_mlp --shapes=8192x8192x8192 --iters=3 --warmup=1 --profile_variant=ours/sm90_wgmma+n192+yield"}
sections="--section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active"
while IFS='|' read -r label regex flags base; do
  [ -n "$label" ] || continue
  echo "==== $label: kernels matching /$regex/, bench $flags"
  # shellcheck disable=SC2086  # flags and sections are word lists
  timeout -k 5 120 "$ncu" --clock-control none --kernel-name-base "${base:-function}" --kernel-name "regex:$regex" \
    --launch-skip 2 --launch-count 1 $sections \
    "$B/fp8_gemm_bench" $flags --model=models/fashion_mlp/1/model.safetensors >"$OUT/ncu-$label.txt" 2>&1
  echo "rc=$?"
  grep -E '^  [a-z_0-9]+.*\(|Duration|Registers Per|Dynamic Shared|Achieved Occupancy|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|DRAM Throughput|Stall|Issue Slot|No Eligible|Eligible Warps|Grid Size|Block Size|Executed Ipc' \
    "$OUT/ncu-$label.txt" | grep -v stalled | head -n 40
  # The largest stall reasons (warps stalled per issued instruction)
  grep -E 'smsp__average_warps_issue_stalled_' "$OUT/ncu-$label.txt" | awk '{print $NF, $1}' | sort -rn | head -n 6
done <<<"$runs"

# Where the stalls sit, instruction by instruction: ncu's SourceCounters, read back as its source
# page (SASS, CSV) and digested to the instructions with the most warp-stall samples.
sass_runs=${PROFILE_SASS:-"wgmma8192|sm90_fp8_gemm|--skip_mlp --shapes=8192x8192x8192 --iters=3 --warmup=1 --profile_variant=ours/sm90_wgmma
wgmma8192yield|sm90_fp8_gemm|--skip_mlp --shapes=8192x8192x8192 --iters=3 --warmup=1 --profile_variant=ours/sm90_wgmma+yield
wgmma8192xbank|sm90_fp8_gemm|--skip_mlp --shapes=8192x8192x8192 --iters=3 --warmup=1 --profile_variant=ours/sm90_wgmma+xbank
fused64|fused_mlp|--skip_gemm --mlp_batches=64 --iters=5 --warmup=2|function|--sampling-interval 0"}
# (a fifth field: extra ncu flags, e.g. the shortest sampling interval for a kernel of a few us)
while IFS='|' read -r label regex flags base extra; do
  [ -n "$label" ] || continue
  rep=$OUT/sass-$label
  echo "==== SASS stalls, $label: kernels matching /$regex/, bench $flags"
  # shellcheck disable=SC2086  # flags and extra are word lists
  timeout -k 5 120 "$ncu" --clock-control none --kernel-name-base "${base:-function}" --kernel-name "regex:$regex" \
    --launch-skip 2 --launch-count 1 --section SourceCounters --section WarpStateStats --import-source no ${extra:-} \
    -f -o "$rep" \
    "$B/fp8_gemm_bench" $flags --model=models/fashion_mlp/1/model.safetensors >"$rep.log" 2>&1
  echo "rc=$?"
  timeout 60 "$ncu" -i "$rep.ncu-rep" --page source --csv --print-source sass >"$rep.csv" 2>>"$rep.log" || echo "rc=$? (source page)"
  python3 - "$rep.csv" <<'PY' | tee "$rep.txt" | head -n 40
import csv, sys
rows = list(csv.reader(open(sys.argv[1], errors="replace")))
head = next((i for i, r in enumerate(rows) if any("Stall Sampling (All" in c for c in r)), None)
if head is None:
    sys.exit("no stall-sampling column in the source page")
cols = rows[head]
allc = next(i for i, c in enumerate(cols) if "Stall Sampling (All" in c)
notc = next((i for i, c in enumerate(cols) if "Stall Sampling (Not" in c), None)
src = next((i for i, c in enumerate(cols) if c.strip() in ("Source", "SASS")), len(cols) - 1)
addr = next((i for i, c in enumerate(cols) if "Address" in c), 0)
def num(r, i):
    try:
        return float(r[i].replace(",", ""))
    except (IndexError, ValueError):
        return 0.0
body = [r for r in rows[head + 1:] if len(r) > allc]
total = sum(num(r, allc) for r in body) or 1.0
print(f"{len(body)} instructions, {total:.0f} stall samples; the 30 with the most (share, samples, not-issued, address, SASS):")
for r in sorted(body, key=lambda r: -num(r, allc))[:30]:
    print(f"{100 * num(r, allc) / total:5.1f}% {num(r, allc):8.0f} {num(r, notc) if notc is not None else 0:8.0f}  {r[addr]:>8}  {r[src].strip()[:90]}")
# Per opcode (predicate and modifiers dropped): its share of the samples, how often it ran, and its
# largest stall reasons in points of the total (the per-reason columns ncu names stall_*)
reasons = [(i, c) for i, c in enumerate(cols) if c.startswith("stall_") and "Not Issued" not in c]
execc = next((i for i, c in enumerate(cols) if c.strip() == "Instructions Executed"), None)
by_op = {}
for r in body:
    words = [w for w in r[src].split() if not w.startswith("@")]
    op = words[0].split(".")[0] if words else "?"
    e = by_op.setdefault(op, [0.0, 0.0, {}])
    e[0] += num(r, allc)
    e[1] += num(r, execc) if execc is not None else 0.0
    for i, c in reasons:
        e[2][c] = e[2].get(c, 0.0) + num(r, i)
print("by opcode (share of samples, instructions executed, top stall reasons in points):")
for op, (samples, ran, why) in sorted(by_op.items(), key=lambda kv: -kv[1][0])[:12]:
    top = ", ".join(f"{c[6:]} {100 * v / total:.1f}" for c, v in sorted(why.items(), key=lambda kv: -kv[1])[:4] if v)
    print(f"  {op:<12} {100 * samples / total:5.1f}%  {ran:>12.0f}  [{top}]")
PY
done <<<"$sass_runs"
