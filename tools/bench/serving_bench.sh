#!/usr/bin/env bash
# Serving benchmark: fp8serve vs. the real NVIDIA Triton server (through PyTriton, numpy forward of
# the same FP8 model), both driven by Triton's own perf_analyzer over gRPC. One server at a time, so
# they don't compete for the CPU cores.
#
#   tools/bench/serving_bench.sh            # everything; prints a Markdown table last
#
# For each max_queue_delay in $DELAYS (default "0 500" µs) it makes a copy of models/fashion_mlp with
# that delay, then:
#   1. fp8serve --backend cpu:   perf_analyzer at each concurrency in $CONCURRENCIES (default 1 8 64)
#   2. fp8serve --backend noop:  concurrency 64 (the ceiling: gRPC + batching, no math)
#   3. Triton (PyTriton, tools/bench/pytriton_fashion_server.py, same batching): each concurrency
# Before the runs it checks, on 1,000 Fashion-MNIST test images, that fp8serve's and Triton's
# predictions agree with the numpy forward (>= 99.5%).
#
# Environment (all optional):
#   OUT               results folder (default build-bench/serving-bench); logs, CSVs, table.md
#   FP8SERVE          server binary (default build-bench/server/fp8serve, else build/server/fp8serve);
#                     copied into $OUT/bin first so a concurrent rebuild can't swap it mid-run
#   FP8SERVE_ARGS     extra fp8serve flags (e.g. "--allow_metrics=false" once the binary has it)
#   DELAYS, CONCURRENCIES, NOOP_CONCURRENCY (64)
#   PA_INTERVAL_MS (3000)  perf_analyzer -p
#   PA_STABILITY (25)      perf_analyzer -s; a run that can't stabilize within PA_MAX_TRIALS windows is
#   PA_MAX_TRIALS (10)     retried once with -s $PA_STABILITY_RETRY (100), and its row is marked
#   PA_TIMEOUT_S (240)     hard bound on each perf_analyzer run (timeout)
#   PA_ATTEMPTS (8)        perf_analyzer runs per point at most (see run_pa)
#   PA_EXTRA               extra perf_analyzer flags (e.g. "--async")
#   BLAS_THREADS           if set, OPENBLAS_NUM_THREADS/OMP_NUM_THREADS for both servers (default:
#                          unset, each library's own default: one thread per core)
#   TRITON_GRPC_PORT (8101)
#   PYTRITON_VENV (build-bench/venv-pytriton), PYTRITON_VERSION (0.7.0): created/installed if missing
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH=$ROOT/tools/bench
OUT=${OUT:-$ROOT/build-bench/serving-bench}
DELAYS=${DELAYS:-"0 500"}
CONCURRENCIES=${CONCURRENCIES:-"1 8 64"}
NOOP_CONCURRENCY=${NOOP_CONCURRENCY:-64}
PA_INTERVAL_MS=${PA_INTERVAL_MS:-3000}
PA_STABILITY=${PA_STABILITY:-25}
PA_STABILITY_RETRY=${PA_STABILITY_RETRY:-100}
PA_MAX_TRIALS=${PA_MAX_TRIALS:-10}
PA_TIMEOUT_S=${PA_TIMEOUT_S:-240}
PA_ATTEMPTS=${PA_ATTEMPTS:-8}
PA_EXTRA=${PA_EXTRA:-}
TRITON_GRPC_PORT=${TRITON_GRPC_PORT:-8101}
PYTRITON_VENV=${PYTRITON_VENV:-$ROOT/build-bench/venv-pytriton}
PYTRITON_VERSION=${PYTRITON_VERSION:-0.7.0}
VENV_PY=$ROOT/.venv/bin/python
PA=$ROOT/.venv/bin/perf_analyzer
MODEL=fashion_mlp
if [ -n "${BLAS_THREADS:-}" ]; then
  export OPENBLAS_NUM_THREADS=$BLAS_THREADS OMP_NUM_THREADS=$BLAS_THREADS
fi

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/progress.log" >&2; }
die() { log "ERROR: $*"; exit 1; }
load1() { cut -d' ' -f1 /proc/loadavg; }

mkdir -p "$OUT" || exit 1
: >"$OUT/progress.log"
rm -f "$OUT"/results.tsv "$OUT"/table.md "$OUT"/pa-*.csv "$OUT"/pa-*.log "$OUT"/check-*.log  # no stale files from an earlier run
log "results in $OUT"
log "start: $(uptime)"
UPTIME_START=$(uptime)

# ------------------------------------------------------------------------------------------ setup
[ -x "$VENV_PY" ] || die "no $ROOT/.venv (run ./run.sh deps)"
if ! "$PA" --version >/dev/null 2>&1 && ! [ -x "$ROOT/.venv/libexec/perf_analyzer" ]; then
  log "installing perf_analyzer (tools/install_perf_analyzer.sh)"
  bash "$ROOT/tools/install_perf_analyzer.sh" || die "perf_analyzer install failed"
fi
[ -x "$PA" ] || die "no perf_analyzer at $PA"

if ! "$PYTRITON_VENV/bin/python" -c 'import pytriton, ml_dtypes' 2>/dev/null; then
  log "creating $PYTRITON_VENV with nvidia-pytriton==$PYTRITON_VERSION"
  python3 -m venv "$PYTRITON_VENV" || die "python3 -m venv failed"
  "$PYTRITON_VENV/bin/pip" install -q --disable-pip-version-check "nvidia-pytriton==$PYTRITON_VERSION" ml_dtypes \
    || die "pip install nvidia-pytriton==$PYTRITON_VERSION failed"
fi
PA_VER=$("$PA" --version 2>&1 | head -n 1)
PYTRITON_VER=$("$PYTRITON_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("nvidia-pytriton"))')

# fp8serve: wait a little if a colleague's rebuild has the binary out of place, then freeze a copy.
if [ -z "${FP8SERVE:-}" ]; then
  for _ in $(seq 30); do
    [ -x "$ROOT/build-bench/server/fp8serve" ] && break
    log "waiting for build-bench/server/fp8serve (being rebuilt?)"; sleep 5
  done
  if [ -x "$ROOT/build-bench/server/fp8serve" ]; then FP8SERVE=$ROOT/build-bench/server/fp8serve
  else FP8SERVE=$ROOT/build/server/fp8serve; fi
fi
[ -x "$FP8SERVE" ] || die "no fp8serve binary ($FP8SERVE)"
mkdir -p "$OUT/bin"
cp -f "$FP8SERVE" "$OUT/bin/fp8serve" || die "copying $FP8SERVE"
log "fp8serve: $FP8SERVE (built $(date -r "$FP8SERVE" '+%F %T'), sha256 $(sha256sum "$OUT/bin/fp8serve" | cut -c1-12)), frozen copy $OUT/bin/fp8serve"
FP8=$OUT/bin/fp8serve

# Model repositories: one per delay.
for d in $DELAYS; do
  repo=$OUT/repo-delay$d
  rm -rf "$repo"; mkdir -p "$repo"
  cp -r "$ROOT/models/$MODEL" "$repo/" || die "copying models/$MODEL"
  sed -i -E "s/max_queue_delay_microseconds:[[:space:]]*[0-9]+/max_queue_delay_microseconds: $d/" "$repo/$MODEL/config.pbtxt"
  grep -q "max_queue_delay_microseconds: $d\$" "$repo/$MODEL/config.pbtxt" || die "could not set the delay in $repo"
done

# ------------------------------------------------------------------------------------------ servers
SERVER_PID=""
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null
  for _ in $(seq 60); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$SERVER_PID" 2>/dev/null
  wait "$SERVER_PID" 2>/dev/null
  SERVER_PID=""
  sleep 1  # let the port and the cores settle
}
trap 'stop_server' EXIT
trap 'log "interrupted"; exit 130' INT TERM

PORT=""
start_fp8serve() {  # backend delay
  local backend=$1 d=$2 pf=$OUT/fp8serve-$1-delay$2.port
  rm -f "$pf"
  setsid "$FP8" --model-repository "$OUT/repo-delay$d" --grpc-address 127.0.0.1:0 --port-file "$pf" \
    --backend "$backend" --log-level warn ${FP8SERVE_ARGS:-} >"$OUT/fp8serve-$backend-delay$d.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do [ -s "$pf" ] && break; kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  [ -s "$pf" ] || { cat "$OUT/fp8serve-$backend-delay$d.log" >&2; die "fp8serve ($backend, delay $d) did not start"; }
  PORT=$(cat "$pf")
  wait_ready "$PORT" 30 || die "fp8serve ($backend, delay $d) not ready on $PORT"
  log "fp8serve --backend $backend (delay $d us) ready on 127.0.0.1:$PORT (pid $SERVER_PID)"
}

start_triton() {  # delay
  local d=$1 lf=$OUT/triton-delay$1.log
  if "$VENV_PY" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$TRITON_GRPC_PORT))!=0)"; then
    die "port $TRITON_GRPC_PORT is in use: set TRITON_GRPC_PORT"
  fi
  setsid "$PYTRITON_VENV/bin/python" -u "$BENCH/pytriton_fashion_server.py" --grpc-port "$TRITON_GRPC_PORT" \
    --max-queue-delay-us "$d" --model "$ROOT/models/$MODEL/1/model.safetensors" >"$lf" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 180); do grep -q 'READY grpc=' "$lf" && break; kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 1; done
  grep -q 'READY grpc=' "$lf" || { tail -30 "$lf" >&2; die "Triton (delay $d) did not become ready: see $lf"; }
  PORT=$TRITON_GRPC_PORT
  wait_ready "$PORT" 30 || die "Triton (delay $d) not ready on $PORT"
  log "Triton $(server_version "$PORT") via PyTriton $PYTRITON_VER (delay $d us) ready on 127.0.0.1:$PORT (pid $SERVER_PID)"
}

wait_ready() {  # port seconds
  "$VENV_PY" - "$1" "$2" <<'EOF'
import sys, time, tritonclient.grpc as g
c = g.InferenceServerClient(f"127.0.0.1:{sys.argv[1]}")
end = time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        if c.is_server_ready() and c.is_model_ready("fashion_mlp"):
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.2)
sys.exit(1)
EOF
}

server_version() {
  "$VENV_PY" -c "import sys,tritonclient.grpc as g; m=g.InferenceServerClient('127.0.0.1:$1').get_server_metadata(); print(m.name, m.version)" 2>/dev/null
}

# ------------------------------------------------------------------------------------------ runs
printf 'server\tdelay_us\tconcurrency\tthroughput\tp50_us\tp99_us\tqueue_us\tcompute_in_us\tcompute_infer_us\tcompute_out_us\tstability\tload1\taborts\n' >"$OUT/results.tsv"

# One perf_analyzer measurement. Retries: a run that can't stabilize at ±PA_STABILITY% is rerun at
# ±PA_STABILITY_RETRY% (row marked); a run where perf_analyzer aborts ("Server side statistics compute
# counts must be the same": a torn statistics snapshot from the server) is rerun as it was (counted
# in the row's "aborts"); at most PA_ATTEMPTS runs in all.
run_pa() {  # label delay concurrency
  local label=$1 d=$2 c=$3 base stab=$PA_STABILITY rc l attempt aborts=0
  base=$OUT/pa-$label-delay$d-c$c
  l=$(load1)
  for attempt in $(seq "$PA_ATTEMPTS"); do
    rm -f "$base.csv"
    log "perf_analyzer: $label delay=$d us concurrency=$c (-p $PA_INTERVAL_MS -s $stab -r $PA_MAX_TRIALS; load $(load1); try $attempt)"
    # shellcheck disable=SC2086
    { timeout --kill-after=10 "$PA_TIMEOUT_S" "$PA" -m "$MODEL" -i grpc -u "127.0.0.1:$PORT" \
      --concurrency-range "$c" -p "$PA_INTERVAL_MS" -s "$stab" -r "$PA_MAX_TRIALS" $PA_EXTRA \
      -f "$base.csv" --verbose-csv >"$base.try$attempt.log" 2>&1; } 2>/dev/null  # no "Aborted" job notice
    rc=$?
    cp -f "$base.try$attempt.log" "$base.log"
    if [ $rc -eq 0 ] && [ -s "$base.csv" ]; then
      "$VENV_PY" - "$base.csv" "$label" "$d" "$c" "$stab" "$l" "$aborts" >>"$OUT/results.tsv" <<'EOF2'
import csv, sys
path, label, d, c, stab, load, aborts = sys.argv[1:]
row = next(csv.DictReader(open(path)))
g = lambda k: row.get(k, "").strip() or "-"
print("\t".join([label, d, c, g("Inferences/Second"), g("p50 latency"), g("p99 latency"), g("Server Queue"),
                 g("Server Compute Input"), g("Server Compute Infer"), g("Server Compute Output"), stab, load, aborts]))
EOF2
      tail -n 1 "$OUT/results.tsv" | awk -F'\t' '{printf "    -> %s infer/s, p50 %s us, p99 %s us, queue %s us, compute infer %s us\n", $4, $5, $6, $7, $9}' | tee -a "$OUT/progress.log" >&2
      return 0
    fi
    if grep -q "compute counts must be the same" "$base.log"; then
      aborts=$((aborts + 1))
      log "    perf_analyzer aborted (rc=$rc): 'Server side statistics compute counts must be the same'; rerunning"
    elif grep -q "Failed to obtain stable measurement" "$base.log"; then
      log "    not stable within $PA_MAX_TRIALS windows at ±$stab%"
      [ "$stab" = "$PA_STABILITY_RETRY" ] && break
      stab=$PA_STABILITY_RETRY
    else
      log "    perf_analyzer failed (rc=$rc): $(grep -v '^\s*$' "$base.log" | tail -n 2 | tr '\n' ' ')"
    fi
  done
  printf '%s\t%s\t%s\tFAILED\t-\t-\t-\t-\t-\t-\t%s\t%s\t%s\n' "$label" "$d" "$c" "$stab" "$l" "$aborts" >>"$OUT/results.tsv"
}

CHECKS=""
first=1
for d in $DELAYS; do
  start_fp8serve cpu "$d"
  if [ $first = 1 ]; then
    "$VENV_PY" "$BENCH/check_numpy_forward.py" --url "127.0.0.1:$PORT" --label "fp8serve (cpu)" 2>&1 | tee "$OUT/check-fp8serve.log" >&2
    CHECKS+="$(tail -n 1 "$OUT/check-fp8serve.log")"$'\n'
  fi
  for c in $CONCURRENCIES; do run_pa fp8serve "$d" "$c"; done
  stop_server

  start_fp8serve noop "$d"
  run_pa fp8serve-noop "$d" "$NOOP_CONCURRENCY"
  stop_server

  start_triton "$d"
  if [ $first = 1 ]; then
    TRITON_VER=$(server_version "$PORT")
    "$VENV_PY" "$BENCH/check_numpy_forward.py" --url "127.0.0.1:$PORT" --label "Triton (PyTriton numpy)" 2>&1 \
      | tee "$OUT/check-triton.log" >&2
    CHECKS+="$(tail -n 1 "$OUT/check-triton.log")"$'\n'
  fi
  for c in $CONCURRENCIES; do run_pa triton "$d" "$c"; done
  stop_server
  first=0
done

UPTIME_END=$(uptime)
log "end: $UPTIME_END"

# ------------------------------------------------------------------------------------------ table
"$VENV_PY" - "$OUT/results.tsv" "$PA_STABILITY" >"$OUT/table.md" <<EOF
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
base_stab = sys.argv[2]
def num(v):
    try: return float(v)
    except ValueError: return None
print("### fp8serve vs Triton (perf_analyzer over gRPC; each request 1 row: random FP32 [1,784])")
print()
print("| server | delay µs | conc | infer/s | p50 µs | p99 µs | queue µs | compute infer µs | compute in+out µs | load1 |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    mark = "" if r["stability"] in (base_stab, "-") else f" (±{r['stability']}%)"
    if r.get("aborts", "0") not in ("0", ""):
        mark += f" †{r['aborts']}"
    io = "-"
    if num(r["compute_in_us"]) is not None and num(r["compute_out_us"]) is not None:
        io = f"{num(r['compute_in_us']) + num(r['compute_out_us']):.0f}"
    tp = num(r["throughput"])
    print(f"| {r['server']}{mark} | {r['delay_us']} | {r['concurrency']} | {f'{tp:.0f}' if tp is not None else r['throughput']} "
          f"| {r['p50_us']} | {r['p99_us']} | {r['queue_us']} | {r['compute_infer_us']} | {io} | {r['load1']} |")
print()
print("| delay µs | conc | throughput fp8serve/Triton | p99 fp8serve/Triton |")
print("|---:|---:|---:|---:|")
by = {(r["server"], r["delay_us"], r["concurrency"]): r for r in rows}
for (srv, d, c), r in by.items():
    if srv != "fp8serve":
        continue
    t = by.get(("triton", d, c))
    a, b = (num(r["throughput"]), num(t["throughput"])) if t else (None, None)
    p, q = (num(r["p99_us"]), num(t["p99_us"])) if t else (None, None)
    tr = f"{a / b:.2f}×" if a and b else "-"
    pr = f"{p / q:.2f}×" if p and q else "-"
    print(f"| {d} | {c} | {tr} | {pr} |")
print()
print("fp8serve: $FP8SERVE; Triton: ${TRITON_VER:-?} via nvidia-pytriton $PYTRITON_VER (Python backend, numpy forward);")
print("$PA_VER: -p $PA_INTERVAL_MS -s $PA_STABILITY -r $PA_MAX_TRIALS ${PA_EXTRA}; rows marked (±N%) only stabilized at ±N%;")
print("†N: perf_analyzer aborted N times on that point ('Server side statistics compute counts must be the same') before the run shown.")
print("BLAS threads: ${BLAS_THREADS:-library default}.")
print("Load at start: $(echo "$UPTIME_START" | sed 's/.*load average/load average/')  |  at end: $(echo "$UPTIME_END" | sed 's/.*load average/load average/')  ($(getconf _NPROCESSORS_ONLN) cores)")
print()
print("Numeric check (1,000 Fashion-MNIST test images vs the numpy forward):")
for line in """$CHECKS""".strip().splitlines():
    print(f"- {line}")
EOF
log "table: $OUT/table.md"
echo
cat "$OUT/table.md"
