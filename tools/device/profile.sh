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
#        mma.sync and with wgmma, the wgmma GEMM at 8192^3 plain and in 2x2 multicast clusters, the
#        GEMM at 64x16384x4096 plain and on tiled weights, the 128x192 tile in 2x1 clusters at
#        8192^3 (bench --profile_variant)), OUT, BUNDLE
set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
OUT=${OUT:-$PWD/profile-out}
B=${BUNDLE:-device-bundle}
mkdir -p "$OUT"
if [ -f "$B/bundle.tar.xz" ] && [ ! -f "$B/.unpacked" ]; then
  tar -xJf "$B/bundle.tar.xz" -C "$B" && touch "$B/.unpacked" || { echo "*** cannot unpack $B"; exit 2; }
fi
export LD_LIBRARY_PATH="$PWD/$B/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
[ -n "$ncu" ] || { echo "*** ncu not found"; exit 2; }
runs=${PROFILE_RUNS:-"fused64|fused_mlp|--skip_gemm --mlp_batches=64 --iters=5 --warmup=2
fused64w|fused_mlp_kernelI.*Lb1E|--skip_gemm --mlp_batches=64 --iters=5 --warmup=2|mangled
wgmma8192|sm90_fp8_gemm|--skip_mlp --shapes=8192x8192x8192 --iters=3 --warmup=1
m64_ffn|fp8_gemm|--skip_mlp --shapes=64x16384x4096 --iters=3 --warmup=1
wgmma8192mc|sm90_fp8_gemm|--skip_mlp --shapes=8192x8192x8192 --iters=3 --warmup=1 --profile_variant=ours/sm90_wgmma+mc2x2
m64_ffn_tiled|sm90_fp8_gemm|--skip_mlp --shapes=64x16384x4096 --iters=3 --warmup=1 --profile_variant=ours/sm90_wgmma+tiledB
wgmma8192wide|sm90_fp8_gemm|--skip_mlp --shapes=8192x8192x8192 --iters=3 --warmup=1 --profile_variant=ours/sm90_wgmma+n192+mc2x1"}
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
