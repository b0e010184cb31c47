#!/usr/bin/env bash
# THE prepared GPU check: runs on the device machine, in the repository root, with device-bundle/
# built and bundled here by tools/device/make_bundle.sh and carried over (it unpacks the bundle's
# archive in place first).
#
#   usage (device tool):  run(command="tools/device/gpu_check.sh", carry=["device-bundle"], timeout_s=570)
#   env:  OUT                 where the logs go (the device tool sets it; default ./gpu-check-out)
#         GPU_CHECK_BUDGET_S  the whole script's time in seconds (default 500); later steps get
#                             what earlier ones left, and a step with too little time is skipped
#         BUNDLE              the bundle folder (default device-bundle)
#         BENCH_ARGS          extra flags for fp8_gemm_bench (e.g. "--iters=20")
#         FFN_WIDTHS          the serving-size MLP timed beside PyTorch (default 4096,16384,4096;
#                             empty: skipped); FFN_BATCHES its batch sizes (default 64,4096)
#
# Steps, each under its own timeout: nvidia-smi; tools/device/ffma_yield.py on the bundle's library
# (the +yield GEMM variant's SASS edit); every GPU test binary (--gtest_brief); compute-
# sanitizer memcheck then racecheck over the GEMM and fused tests' Smoke suites; fp8_gemm_bench (and
# its small GEMMs again with L2 warm, when time allows); the same forward in PyTorch, the peer
# (tools/device/torch_forward_bench.py, its rows appended to bench.csv), and a serving-size MLP
# (FFN_WIDTHS, random weights) timed in PyTorch and in ours;
# tools/device/serving_e2e.sh when present; with time left, tools/device/profile.sh (an ncu digest;
# a failure there does not fail the check). The summary at the end includes
# tools/device/decide_from_bench.py's reading of the bench (which opt-in variant wins where). Logs in $OUT (at most 8 files come back): gpu_check.log
# (this console), tests.log, sanitizer.log, bench.log, bench.csv, e2e.tar.gz (the serving run's own
# logs and JSON), profile.tar.gz, summary.txt. The last thing printed is the summary table. Exit status 0 when
# every step that ran passed.
set -u -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
repo=$PWD
OUT=${OUT:-$repo/gpu-check-out}
mkdir -p "$OUT"
B=${BUNDLE:-device-bundle}
budget=${GPU_CHECK_BUDGET_S:-500}
start=$(date +%s)

export LD_LIBRARY_PATH="$repo/$B/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export FP8SERVE_SOURCE_DIR=$repo   # the tests find models/ through it
export FP8SERVE_BUNDLE=$repo/$B    # for serving_e2e.sh
export OUT

elapsed() { echo $(($(date +%s) - start)); }
# append_csv FILE: FILE's rows (a CSV in bench.csv's columns) appended to $OUT/bench.csv (which it
# starts when there is none yet); prints how many rows
append_csv() {
  [ -s "$1" ] || { echo 0; return; }
  if [ -s "$OUT/bench.csv" ]; then tail -n +2 "$1" >>"$OUT/bench.csv"; else cp "$1" "$OUT/bench.csv"; fi
  echo $(($(wc -l <"$1") - 1))
}
# step_timeout WANT RESERVE: WANT seconds, or what is left after keeping RESERVE (seconds of the
# default 500 s budget, scaled to the actual one) for later steps; 0 when fewer than 10 would be left.
step_timeout() {
  local left=$((budget - $(elapsed) - $2 * budget / 500))
  if ((left < 10)); then echo 0; elif ((left < $1)); then echo "$left"; else echo "$1"; fi
}
banner() { printf '\n==== [%4ds] %s\n' "$(elapsed)" "$*"; }

# error_digest NAME LOG: from the tests' per-case lines ("... <kernel or path> [<output>] max|d|/L1 X
# bound used Y ..."), the largest measured error and share of the bound per kernel/path and output.
error_digest() {
  awk -v name="$1" '/max\|d\|\/L1/ && !/^promotion/ {
      for (i = 1; i <= NF; ++i) {
        if ($i == "max|d|/L1") { v = $(i + 1); key = $(i - 1); if (key ~ /^(f32|bf16|e4m3)$/) key = $(i - 2) " " key }
        if ($i == "used") u = $(i + 1)
      }
      if (v != "-" && v + 0 > mx[key]) mx[key] = v + 0
      if (u + 0 > mu[key]) mu[key] = u + 0
      seen[key] = 1
    }
    END { for (k in seen) printf "  %-20s %-22s max|d|/L1 %.3e  bound used %.3f\n", name, k, mx[k], mu[k] }' "$2" | sort
}

summary=()  # rows of the final table
overall=0
add_row() { summary+=("$(printf '%-40s %-22s %s' "$1" "$2" "$3")"); }

main() {
  # ---------------------------------------------------------------------------------------------
  banner "device"
  timeout 20 nvidia-smi || echo "*** nvidia-smi failed (rc=$?)"
  timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  device=$(timeout 10 nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
  if [ ! -d "$B" ]; then
    echo "*** $B/ not found: build it here first with tools/device/make_bundle.sh and carry it"
    return 2
  fi
  [ -f "$B/MANIFEST" ] && cat "$B/MANIFEST"
  # make_bundle.sh packs the programs and libraries into one archive (the carry limit is 64 MiB).
  if [ -f "$B/bundle.tar.xz" ] && [ ! -f "$B/.unpacked" ]; then
    if ! tar -xJf "$B/bundle.tar.xz" -C "$B"; then
      echo "*** cannot unpack $B/bundle.tar.xz"
      return 2
    fi
    touch "$B/.unpacked"
    echo "unpacked $B/bundle.tar.xz ($(du -sh "$B" | cut -f1))"
  fi
  missing=$(ldd "$B"/*_test "$B"/fp8_gemm_bench 2>/dev/null | grep "not found" | sort -u)
  [ -n "$missing" ] && printf '*** libraries not found:\n%s\n' "$missing"

  # ---------------------------------------------------------------------------------------------
  # The +yield GEMM variant (Sm90MainLoop::kYieldFfma) is the default loop until its SASS is edited:
  # tools/device/ffma_yield.py clears the promotion FFMAs' reuse/no-yield flags in the bundle's
  # library (seconds; needs cuobjdump), before the tests check its bits and the bench times it.
  banner "ffma_yield.py (the +yield variant's SASS)"
  if [ ! -f "$B/lib/libfp8serve_cuda.so" ]; then
    add_row "ffma_yield.py" "SKIPPED (no $B/lib/libfp8serve_cuda.so)" "+yield = the default loop"
  else
    timeout -k 5 60 python3 tools/device/ffma_yield.py "$B/lib/libfp8serve_cuda.so" \
      --cuobjdump "$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)"
    rc=$?
    if [ "$rc" -eq 0 ]; then
      add_row "ffma_yield.py" "ok" "+yield instances edited"
    else
      echo "*** ffma_yield.py failed (rc=$rc): the +yield variant runs the default loop's SASS"
      add_row "ffma_yield.py" "FAIL (rc=$rc, not counted)" "+yield = the default loop"
    fi
  fi

  # ---------------------------------------------------------------------------------------------
  # GPU tests: counts from gtest's own summary lines.
  banner "GPU tests"
  : >"$OUT/tests.log"
  digest=$(mktemp)
  gtest_count() {  # gtest_count LOG PASSED|FAILED|SKIPPED
    grep -E "^\[  $2 *\] [0-9]+ tests?" "$1" | tail -n 1 | sed -E 's/^\[ *[A-Z]+ *\] ([0-9]+).*/\1/'
  }
  # The kernel tests first (fixed order), then any other GPU test program in the bundle.
  # The GEMM test runs once per kernel (PROGRAM@KERNELS sets FP8SERVE_GEMM_KERNELS), in separate
  # processes: a kernel that traps leaves its CUDA context unusable, and must not take the other
  # kernel's results with it. The mma.sync kernel first: it is the simpler one.
  tests=(act_quant_gpu_test fp8_gemm_gpu_test@sm89_mma_sync fp8_gemm_gpu_test@heuristic,sm90_wgmma
         fused_mlp_gpu_test)
  for p in "$B"/*_gpu_test; do
    t=$(basename "$p")
    [[ " ${tests[*]} " == *" $t"[\ @]* ]] || tests+=("$t")
  done
  for entry in "${tests[@]}"; do
    t=${entry%%@*}
    kernels=
    [[ $entry == *@* ]] && kernels=${entry#*@}
    case $t in
      act_quant_gpu_test) want=60 ;;
      fp8_gemm_gpu_test) want=150 ;;
      *) want=120 ;;
    esac
    if [ ! -x "$B/$t" ]; then
      echo "*** $t: not in the bundle"
      add_row "$t" "MISSING" ""
      overall=1
      continue
    fi
    # Keep time for the sanitizer (~120 s), the bench (~90 s) and the serving run (~60 s).
    to=$(step_timeout "$want" 270)
    if [ "$to" -eq 0 ]; then
      add_row "$entry" "SKIPPED (time)" ""
      overall=1
      continue
    fi
    log=$(mktemp)
    t0=$(elapsed)
    FP8SERVE_GEMM_KERNELS=$kernels timeout -k 10 "$to" "$B/$t" --gtest_brief=1 --gtest_color=no >"$log" 2>&1
    rc=$?
    { echo "######## $entry (rc=$rc, $(($(elapsed) - t0))s, timeout ${to}s)"; cat "$log"; } >>"$OUT/tests.log"
    passed=$(gtest_count "$log" PASSED)
    failed=$(gtest_count "$log" FAILED)
    skipped=$(gtest_count "$log" SKIPPED)
    if [ "$rc" -eq 0 ]; then
      status=ok
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      status="TIMEOUT (${to}s)"
      overall=1
    else
      status="FAIL (rc=$rc)"
      overall=1
    fi
    echo "$entry: $status, passed ${passed:-0}, failed ${failed:-0}, skipped ${skipped:-0} ($(($(elapsed) - t0))s)"
    # The failures (and loud skips) on the console; every line is in tests.log.
    grep -E '^\[  FAILED  \]|^\*\*\*| FAIL|Failure$|deterministic: NO' "$log" | awk '!seen[$0]++' | head -n 25
    grep -E '^promotion test' "$log" | tee -a "$digest"
    error_digest "$t" "$log" | tee -a "$digest"
    add_row "$entry" "$status" "passed ${passed:-0}  failed ${failed:-0}  skipped ${skipped:-0}"
    rm -f "$log"
  done

  # ---------------------------------------------------------------------------------------------
  # compute-sanitizer over the small Smoke suites.
  banner "compute-sanitizer"
  : >"$OUT/sanitizer.log"
  cs=$(command -v compute-sanitizer || true)
  for c in /usr/local/cuda*/bin/compute-sanitizer /usr/local/cuda*/compute-sanitizer/compute-sanitizer; do
    [ -z "$cs" ] && [ -x "$c" ] && cs=$c
  done
  if [ -z "$cs" ]; then
    echo "*** COMPUTE-SANITIZER NOT FOUND (not on PATH, not under /usr/local/cuda*/bin): sanitizer step skipped"
    add_row "compute-sanitizer" "NOT FOUND" ""
  else
    for tool in memcheck racecheck; do
      for spec in fp8_gemm_gpu_test:'Fp8GemmGpuSmoke.*' fused_mlp_gpu_test:'FusedMlpGpuSmoke.*'; do
        t=${spec%%:*}
        filter=${spec#*:}
        name="$tool ${t%_gpu_test}"
        [ -x "$B/$t" ] || { add_row "$name" "MISSING" ""; continue; }
        to=$(step_timeout 60 150)
        if [ "$to" -eq 0 ]; then
          add_row "$name" "SKIPPED (time)" ""
          continue
        fi
        log=$(mktemp)
        t0=$(elapsed)
        timeout -k 10 "$to" "$cs" --tool "$tool" --print-limit 20 "$B/$t" --gtest_filter="$filter" --gtest_brief=1 \
          --gtest_color=no >"$log" 2>&1
        rc=$?
        { echo "######## $cs --tool $tool $t --gtest_filter=$filter (rc=$rc, $(($(elapsed) - t0))s)"; cat "$log"; } \
          >>"$OUT/sanitizer.log"
        if [ "$tool" = memcheck ]; then
          errors=$(grep -E 'ERROR SUMMARY: [0-9]+ error' "$log" | tail -n 1 | sed -E 's/.*ERROR SUMMARY: ([0-9]+).*/\1/')
        else
          errors=$(grep -E 'RACECHECK SUMMARY: [0-9]+ hazard' "$log" | tail -n 1 | sed -E 's/.*\(([0-9]+) errors?.*/\1/')
          [ -z "$errors" ] && errors=$(grep -E 'ERROR SUMMARY: [0-9]+ error' "$log" | tail -n 1 | sed -E 's/.*ERROR SUMMARY: ([0-9]+).*/\1/')
        fi
        gfailed=$(gtest_count "$log" FAILED)
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
          status="TIMEOUT (${to}s)"
        elif [ "${errors:-x}" = 0 ] && [ "$rc" -eq 0 ]; then
          status=ok
        else
          status="FAIL (rc=$rc)"
          overall=1
        fi
        echo "$name: $status, ${errors:-?} errors, gtest failed ${gfailed:-0} ($(($(elapsed) - t0))s)"
        grep -E '^========= (Invalid|Race|Error|Barrier|Uninitialized|Program hit)' "$log" | sort | uniq -c | sort -rn | head -n 8
        add_row "$name" "$status" "errors ${errors:-?}  gtest failed ${gfailed:-0}"
        rm -f "$log"
      done
    done
  fi

  # ---------------------------------------------------------------------------------------------
  banner "fp8_gemm_bench"
  bench_rc=none
  if [ ! -x "$B/fp8_gemm_bench" ]; then
    echo "*** fp8_gemm_bench: not in the bundle"
    add_row "fp8_gemm_bench" "MISSING" ""
    overall=1
  else
    to=$(step_timeout 150 60)
    if [ "$to" -eq 0 ]; then
      add_row "fp8_gemm_bench" "SKIPPED (time)" ""
      overall=1
    else
      t0=$(elapsed)
      # shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
      timeout -k 10 "$to" "$B/fp8_gemm_bench" --iters=30 --warmup=3 --csv="$OUT/bench.csv" \
        --model=models/fashion_mlp/1/model.safetensors ${BENCH_ARGS:-} >"$OUT/bench.log" 2>&1
      bench_rc=$?
      case $bench_rc in
        0) status=ok ;;
        2) status="CHECK MISMATCH"; overall=1 ;;
        124|137) status="TIMEOUT (${to}s)"; overall=1 ;;
        *) status="FAIL (rc=$bench_rc)"; overall=1 ;;
      esac
      echo "fp8_gemm_bench: $status ($(($(elapsed) - t0))s)"
      grep -E 'MISMATCH|fp8_gemm_bench:' "$OUT/bench.log" | head -n 10
      add_row "fp8_gemm_bench" "$status" "$(grep -c 'MISMATCH' "$OUT/bench.log") mismatch lines, $(($(elapsed) - t0))s"
    fi
    # The small GEMMs again with L2 warm (--flush_l2=false): their floor with the kernels' code and
    # operands cached, against the flushed figures above. Informational (not in the table).
    to=$(step_timeout 40 60)
    if [ "$to" -ge 15 ]; then
      echo "==== small GEMMs with L2 warm (fp8_gemm_bench --flush_l2=false)" | tee -a "$OUT/bench.log"
      # (its log goes into bench.log: at most 8 files come back from the GPU machine)
      warm_log=$(mktemp)
      timeout -k 5 "$to" "$B/fp8_gemm_bench" --skip_mlp --flush_l2=false --iters=30 --warmup=3 \
        --shapes=1x10x256,64x10x256,1x256x784,64x256x784,1x16384x4096,64x16384x4096 >"$warm_log" 2>&1
      echo "rc=$?" >>"$warm_log"
      cat "$warm_log" >>"$OUT/bench.log"
      sed -n '/SUMMARY/,$p' "$warm_log"
      rm -f "$warm_log"
    fi
    # The promotion FFMAs' register banks in the kernels just timed (tools/device/sass_promotion.py,
    # with this machine's cuobjdump; seconds, no GPU): beside the figures of the main-loop variants
    # they explain. Informational (not in the table), appended to bench.log.
    if [ -f "$B/lib/libfp8serve_cuda.so" ] && command -v python3 >/dev/null; then
      echo "==== promotion FFMA register banks (tools/device/sass_promotion.py)" >>"$OUT/bench.log"
      timeout -k 5 60 python3 tools/device/sass_promotion.py "$B/lib/libfp8serve_cuda.so" \
        --cuobjdump "$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)" >>"$OUT/bench.log" 2>&1 ||
        echo "(sass_promotion.py: rc=$?)" >>"$OUT/bench.log"
    fi
  fi

  # ---------------------------------------------------------------------------------------------
  # The peer for the MLP forward: the same model in PyTorch (tools/device/torch_forward_bench.py:
  # bf16 and three FP8 ways, each checked against the contract in float64 and timed as the bench
  # times our forward). Its console joins bench.log and its rows bench.csv (at most 8 files come
  # back), where decide_from_bench.py sets them beside ours. Its failure is reported, not counted:
  # it says nothing of our kernels.
  banner "PyTorch forward (the peer)"
  to=$(step_timeout 60 60)
  if [ "$to" -lt 20 ]; then
    add_row "torch_forward_bench.py" "SKIPPED (time)" ""
  elif ! command -v python3 >/dev/null; then
    echo "*** no python3: the PyTorch comparison is skipped"
    add_row "torch_forward_bench.py" "SKIPPED (no python3)" ""
  else
    torch_log=$(mktemp)
    t0=$(elapsed)
    timeout -k 5 "$to" python3 tools/device/torch_forward_bench.py --model=models/fashion_mlp/1/model.safetensors \
      --iters=30 --warmup=3 --csv="$OUT/torch.csv" >"$torch_log" 2>&1
    rc=$?
    case $rc in
      0) status=ok ;;
      2) status="CHECK MISMATCH (not counted)" ;;
      124|137) status="TIMEOUT (${to}s, not counted)" ;;
      *) if grep -q 'PyTorch is not installed' "$torch_log"; then status="SKIPPED (no torch)"; else status="FAIL (rc=$rc, not counted)"; fi ;;
    esac
    { echo "==== PyTorch forward (tools/device/torch_forward_bench.py, rc=$rc)"; cat "$torch_log"; } >>"$OUT/bench.log"
    cat "$torch_log"
    torch_rows=$(append_csv "$OUT/torch.csv")
    rm -f "$OUT/torch.csv" "$torch_log"
    add_row "torch_forward_bench.py" "$status" "$(($(elapsed) - t0))s, $torch_rows rows into bench.csv"
  fi

  # ---------------------------------------------------------------------------------------------
  # A serving-size MLP beside PyTorch: FFN_WIDTHS (default 4096,16384,4096, PLATFORM.md's PyTorch
  # anchor) with random E4M3 weights and per-channel scales, at FFN_BATCHES (default 64,4096). No such
  # model can travel (64 MiB), so torch_forward_bench.py makes it, times PyTorch on it and writes
  # it; then fp8_gemm_bench times ours on the same file (the GEMM chain: the fused kernel takes
  # widths up to 1024). Rows into bench.csv, console into bench.log; reported, not counted.
  # FFN_WIDTHS= (empty) skips it.
  ffn_widths=${FFN_WIDTHS-4096,16384,4096}
  ffn_batches=${FFN_BATCHES:-64,4096}
  banner "serving-size forward ($ffn_widths at batch $ffn_batches) beside PyTorch"
  to=$(step_timeout 90 60)
  if [ -z "$ffn_widths" ]; then
    echo "FFN_WIDTHS is empty: skipped"
  elif [ "$to" -lt 40 ]; then
    add_row "forward $ffn_widths" "SKIPPED (time)" ""
  elif ! command -v python3 >/dev/null || [ ! -x "$B/fp8_gemm_bench" ]; then
    add_row "forward $ffn_widths" "SKIPPED (no python3 or bench)" ""
  else
    ffn_dir=$(mktemp -d)
    t0=$(elapsed)
    # PyTorch gets at most 60% of the step (making the model included), ours the rest
    timeout -k 5 $((to * 6 / 10)) python3 tools/device/torch_forward_bench.py --random_model="$ffn_widths" \
      --write_model="$ffn_dir/model.safetensors" --batches="$ffn_batches" --back_to_back=0 --iters=20 --warmup=2 \
      --csv="$ffn_dir/torch.csv" >"$ffn_dir/console.log" 2>&1
    trc=$?
    brc=none
    if [ -s "$ffn_dir/model.safetensors" ]; then
      left=$((to - ($(elapsed) - t0)))
      if [ "$left" -ge 10 ]; then
        timeout -k 5 "$left" "$B/fp8_gemm_bench" --skip_gemm --model="$ffn_dir/model.safetensors" \
          --mlp_batches="$ffn_batches" --iters=20 --warmup=2 --csv="$ffn_dir/ours.csv" >>"$ffn_dir/console.log" 2>&1
        brc=$?
      fi
    fi
    rows_in=$(($(append_csv "$ffn_dir/torch.csv") + $(append_csv "$ffn_dir/ours.csv")))
    { echo "==== serving-size forward $ffn_widths at batch $ffn_batches (PyTorch rc=$trc, fp8_gemm_bench rc=$brc)"
      cat "$ffn_dir/console.log"; } >>"$OUT/bench.log"
    grep -E '^ +[0-9]+ (bf16|fp8_)|CHECK|did not run|^  batch |^Forward of' "$ffn_dir/console.log" | head -n 20
    if [ "$trc" = 0 ] && [ "$brc" = 0 ]; then status=ok; else status="PyTorch rc=$trc, ours rc=$brc (not counted)"; fi
    add_row "forward $ffn_widths" "$status" "$(($(elapsed) - t0))s, $rows_in rows into bench.csv"
    rm -rf "$ffn_dir"
  fi

  # ---------------------------------------------------------------------------------------------
  banner "serving end to end"
  if [ -f tools/device/serving_e2e.sh ]; then
    to=$(step_timeout 120 0)
    if [ "$to" -eq 0 ]; then
      add_row "serving_e2e.sh" "SKIPPED (time)" ""
    else
      # Its many logs and JSON files travel back as one archive (at most 8 files come back).
      e2e_dir=$(mktemp -d)
      t0=$(elapsed)
      OUT=$e2e_dir timeout -k 10 "$to" bash tools/device/serving_e2e.sh >"$e2e_dir/e2e-console.log" 2>&1
      rc=$?
      if [ "$rc" -eq 0 ]; then status=ok; elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status="TIMEOUT (${to}s)"; overall=1; else status="FAIL (rc=$rc)"; overall=1; fi
      echo "serving_e2e.sh: $status ($(($(elapsed) - t0))s); its last lines:"
      tail -n 15 "$e2e_dir/e2e-console.log"
      tar -C "$e2e_dir" -czf "$OUT/e2e.tar.gz" .
      add_row "serving_e2e.sh" "$status" "$(($(elapsed) - t0))s, logs in e2e.tar.gz"
    fi
  else
    echo "tools/device/serving_e2e.sh not present: skipped"
    add_row "serving_e2e.sh" "absent" ""
  fi

  # ---------------------------------------------------------------------------------------------
  # With time left: an Nsight Compute digest of the kernels whose speed is being worked on
  # (tools/device/profile.sh; its files travel back as one archive).
  banner "profile"
  if [ -x tools/device/profile.sh ]; then
    to=$(step_timeout 150 0)
    if [ "$to" -lt 45 ]; then
      add_row "profile.sh" "SKIPPED (time)" ""
    else
      prof_dir=$(mktemp -d)
      t0=$(elapsed)
      OUT=$prof_dir BUNDLE=$B timeout -k 10 "$to" bash tools/device/profile.sh 2>&1 | tee "$prof_dir/profile-console.log"
      rc=${PIPESTATUS[0]}
      tar -C "$prof_dir" -czf "$OUT/profile.tar.gz" .
      if [ "$rc" -eq 0 ]; then status=ok; else status="rc=$rc (not counted)"; fi
      add_row "profile.sh (ncu digest)" "$status" "$(($(elapsed) - t0))s, files in profile.tar.gz"
    fi
  fi

  # ---------------------------------------------------------------------------------------------
  # The bench's own summary, then the table of steps: the last thing printed.
  {
    if [ -s "$OUT/bench.log" ]; then
      echo
      sed -n '/==== SUMMARY/,$p' "$OUT/bench.log"
      # Per opt-in variant: where it beats the heuristic's config, and where the P3 targets stand
      if [ -s "$OUT/bench.csv" ] && command -v python3 >/dev/null; then
        echo
        python3 tools/device/decide_from_bench.py "$OUT/bench.csv" || echo "*** decide_from_bench.py failed (rc=$?)"
      fi
      # The fused kernel's own timelines (where its time goes, per cluster rank) and back-to-back times
      if grep -q 'fused kernel timeline' "$OUT/bench.log"; then
        echo
        awk '/back to back in one graph|fused kernel timeline/ {keep = 1; print; next}
             keep && /^      / {print; next} {keep = 0}' "$OUT/bench.log"
      fi
    fi
    if [ -s "${digest:-}" ]; then
      echo
      echo "largest errors measured (max|d|/L1: FP32 outputs against the CPU reference; bound used: 1 = at the bound)"
      cat "$digest"
    fi
    echo
    echo "==================== GPU CHECK SUMMARY ($(elapsed)s of ${budget}s) ===================="
    echo "device: ${device:-unknown}"
    printf '%-40s %-22s %s\n' "step" "result" "details"
    for row in "${summary[@]}"; do echo "$row"; done
    if [ "$overall" -eq 0 ]; then echo "OVERALL: PASS"; else echo "OVERALL: FAIL (details in tests.log, sanitizer.log, bench.log, e2e.tar.gz)"; fi
  } | tee "$OUT/summary.txt"
  return "$overall"
}

# The console also goes to gpu_check.log.
main 2>&1 | tee -a "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
