#!/usr/bin/env bash
# fp8serve-client bench against Triton's perf_analyzer: the same server, model, concurrency and
# transport, run back to back (alternating which goes first), ROUNDS times. Prints both tools'
# throughput and p50/p99 latency per round, and checks the agreement the client's issue asks for
# (throughput within 10%, p50 within 15%) on the median of the rounds' ratios: on a shared machine
# the load of other work drifts between two runs, and alternating the order plus the median
# cancels most of that drift. Exit status 1 if the medians disagree.
#
#   tools/bench/compare_perf_analyzer.sh                 # concurrency 8, 3 windows of 3 s, 4 rounds
#   CONCURRENCY=64 MODE=async tools/bench/compare_perf_analyzer.sh
#
# Environment (all optional):
#   CONCURRENCY (8)   closed-loop requests in flight, both tools
#   WINDOW_S (3)      perf_analyzer's measurement window (-p); it averages its last 3, so the bench
#                     measures 3 x WINDOW_S seconds
#   ROUNDS (4)        repetitions; each round runs both tools
#   MODE (sync)       sync: perf_analyzer's default (a thread per request in flight); async:
#                     perf_analyzer --async and fp8serve-client --mode async
#   CONNECTIONS       fp8serve-client --threads (TCP connections). Default: what perf_analyzer opens,
#                     since tritonclient shares a connection among at most 6 clients (its
#                     TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT) and perf_analyzer makes one client
#                     per request in flight plus one of its own: ceil((CONCURRENCY + 1) / 6).
#   BACKEND (cpu)     fp8serve --backend
#   BLAS_THREADS (1)  OpenBLAS threads of the server. One: on a small shared machine OpenBLAS's
#                     spinning workers fight the client's threads for the cores, and that fight,
#                     not the tools, then decides the figures. Empty: OpenBLAS's default.
#   FP8SERVE, FP8SERVE_CLIENT, PERF_ANALYZER  binaries (default: build/ and .venv/bin/perf_analyzer)
#   OUT               folder for logs and reports (default: a temporary folder, printed)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CONCURRENCY=${CONCURRENCY:-8}
WINDOW_S=${WINDOW_S:-3}
ROUNDS=${ROUNDS:-4}
MODE=${MODE:-sync}
BACKEND=${BACKEND:-cpu}
CONNECTIONS=${CONNECTIONS:-$(((CONCURRENCY + 1 + 5) / 6))}
BLAS_THREADS=${BLAS_THREADS-1}
FP8SERVE=${FP8SERVE:-$ROOT/build/server/fp8serve}
FP8SERVE_CLIENT=${FP8SERVE_CLIENT:-$ROOT/build/client/fp8serve-client}
PERF_ANALYZER=${PERF_ANALYZER:-$ROOT/.venv/bin/perf_analyzer}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
OUT=${OUT:-$(mktemp -d /tmp/fp8serve-compare.XXXXXX)}
MODEL=fashion_mlp
mkdir -p "$OUT"

for bin in "$FP8SERVE" "$FP8SERVE_CLIENT" "$PERF_ANALYZER"; do
  [ -x "$bin" ] || { echo "compare_perf_analyzer: $bin is missing (build it / run tools/install_perf_analyzer.sh)" >&2; exit 2; }
done
case "$MODE" in
  sync) PA_MODE=() ;;
  async) PA_MODE=(--async) ;;
  *) echo "compare_perf_analyzer: MODE must be sync or async" >&2; exit 2 ;;
esac

if [ -n "$BLAS_THREADS" ]; then export OPENBLAS_NUM_THREADS=$BLAS_THREADS; fi
"$FP8SERVE" --model-repository "$ROOT/models" --grpc-address 127.0.0.1:0 --port-file "$OUT/port" \
  --backend "$BACKEND" --log-level warn >"$OUT/fp8serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$OUT/port" ] && break; sleep 0.1; done
URL=127.0.0.1:$(cat "$OUT/port")
"$FP8SERVE_CLIENT" health -u "$URL" >/dev/null

run_pa() {  # round
  "$PERF_ANALYZER" -m $MODEL -i grpc -u "$URL" --concurrency-range "$CONCURRENCY" "${PA_MODE[@]}" \
    -p $((WINDOW_S * 1000)) --stability-percentage 1000 -f "$OUT/pa_$1.csv" >"$OUT/pa_$1.log" 2>&1
}
run_bench() {  # round
  "$FP8SERVE_CLIENT" bench -u "$URL" -m $MODEL -c "$CONCURRENCY" --mode "$MODE" --threads "$CONNECTIONS" \
    --warmup-secs 1 --duration-secs $((3 * WINDOW_S)) --progress=false --json "$OUT/bench_$1.json" \
    >"$OUT/bench_$1.log" 2>&1
}

unset OPENBLAS_NUM_THREADS
echo "fp8serve ($BACKEND, OpenBLAS threads ${BLAS_THREADS:-default}) at $URL, $MODEL, concurrency $CONCURRENCY, $MODE;" \
     "perf_analyzer 3 x ${WINDOW_S} s windows, fp8serve-client $((3 * WINDOW_S)) s on $CONNECTIONS connection(s); logs in $OUT" >&2
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then run_pa "$round"; run_bench "$round"; else run_bench "$round"; run_pa "$round"; fi
done

"$PYTHON" - "$OUT" "$ROUNDS" <<'EOF'
import csv, json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
ratios = []
print(f"{'round':>5} {'tool':<16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}   {'thr ratio':>9} {'p50 ratio':>9}")
for r in range(1, rounds + 1):
    with open(f"{out}/pa_{r}.csv", newline="") as f:
        pa = next(csv.DictReader(f))
    pa_thr, pa_p50, pa_p99 = float(pa["Inferences/Second"]), float(pa["p50 latency"]) / 1e3, float(pa["p99 latency"]) / 1e3
    (b,) = json.load(open(f"{out}/bench_{r}.json"))["steps"]
    thr, p50, p99 = b["requests_per_second"], b["latency_ms"]["p50"], b["latency_ms"]["p99"]
    ratios.append((thr / pa_thr, p50 / pa_p50))
    print(f"{r:>5} {'perf_analyzer':<16} {pa_thr:>9.0f} {pa_p50:>8.3f} {pa_p99:>8.3f}")
    print(f"{r:>5} {'fp8serve-client':<16} {thr:>9.0f} {p50:>8.3f} {p99:>8.3f}   {ratios[-1][0]:>9.3f} {ratios[-1][1]:>9.3f}"
          f"   errors {sum(b['errors'].values())}, accounted {b['accounted']}")
thr_ratio = statistics.median(r[0] for r in ratios)
p50_ratio = statistics.median(r[1] for r in ratios)
ok = abs(thr_ratio - 1) <= 0.10 and abs(p50_ratio - 1) <= 0.15
print(f"median ratios (fp8serve-client / perf_analyzer): throughput {thr_ratio:.3f} (within 10%: "
      f"{abs(thr_ratio - 1) <= 0.10}), p50 {p50_ratio:.3f} (within 15%: {abs(p50_ratio - 1) <= 0.15})")
print("AGREE" if ok else "DISAGREE")
sys.exit(0 if ok else 1)
EOF
