#!/usr/bin/env bash
# End-to-end serving benchmark on the GPU machine: the bundled model (models/fashion_mlp) served by
# fp8serve and loaded by `fp8serve-client bench` over loopback, on --backend cuda, then on
# --backend noop (answers zeros without computing: the ceiling that gRPC and batching set) and on
# --backend cpu, one server at a time.
#
#   usage: tools/device/serving_e2e.sh          (from the repository root, or anywhere: it cd's there)
#   env:   FP8SERVE_BUNDLE     the bundle (default device-bundle): programs at $B/<program> or
#                              $B/bin/<program>, libraries in $B/lib (tools/device/make_bundle.sh)
#          FP8SERVE, FP8SERVE_CLIENT   the programs themselves, overriding the bundle's
#          E2E_WORKDIR         where the server logs, client logs and JSON go (default: a new
#                              folder under /tmp, named on the console)
#          E2E_BACKENDS        default "cuda noop cpu"
#          E2E_DURATION_S (2), E2E_WARMUP_S (0.5)   measured and warm-up seconds per step
#          E2E_CLIENT_THREADS  client connections (default 4)
#          E2E_SERVER_ARGS     extra fp8serve flags (e.g. "--cuda-streams-per-instance=3")
#
# Per backend: one-row requests at concurrency 1, 64 and 512, then 64-row requests at concurrency
# 64. Per step: throughput, p50/p99 latency, the server's queue and compute time per request and
# its mean batch size (ModelStatistics, as the client reads them over the step). The last thing
# printed is one table, with cuda/noop at one-row concurrency 512 (target >= 0.8: compute is not
# the bottleneck) and cuda/cpu. About 12 s per backend. Exit status 0 when every step ran without
# errors; the ratio is reported, not enforced.
#
# The console is the log: how each server placed the model (backend, instances, kernel path,
# graphs), every step's figures, the table. tools/device/gpu_check.sh keeps it as $WORK/e2e.log, and
# this script writes nothing else to $OUT (the device tool brings back only a few files).
set -u -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
repo=$PWD
B=${FP8SERVE_BUNDLE:-$repo/device-bundle}
WORK=${E2E_WORKDIR:-$(mktemp -d /tmp/fp8serve-e2e.XXXXXX)}
BACKENDS=${E2E_BACKENDS:-"cuda noop cpu"}
DURATION=${E2E_DURATION_S:-2}
WARMUP=${E2E_WARMUP_S:-0.5}
CLIENT_THREADS=${E2E_CLIENT_THREADS:-4}
MODEL=fashion_mlp
mkdir -p "$WORK" || exit 2
export LD_LIBRARY_PATH="$B/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
find_program() {
  local p
  for p in "$B/$1" "$B/bin/$1"; do
    [ -x "$p" ] && { echo "$p"; return 0; }
  done
  return 1
}
SERVER=${FP8SERVE:-$(find_program fp8serve)} || { log "fp8serve not found in $B (or set FP8SERVE)"; exit 2; }
CLIENT=${FP8SERVE_CLIENT:-$(find_program fp8serve-client)} || { log "fp8serve-client not found in $B (or set FP8SERVE_CLIENT)"; exit 2; }
[ -f "models/$MODEL/config.pbtxt" ] || { log "models/$MODEL not found under $repo"; exit 2; }
command -v python3 >/dev/null || { log "python3 is needed for the report"; exit 2; }
log "server $SERVER, client $CLIENT, logs and JSON in $WORK"

server_pid=
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null
  fi
  [ -n "$server_pid" ] && wait "$server_pid" 2>/dev/null
  server_pid=
}
trap stop_server EXIT

# start_server BACKEND: sets $port; fails when the server does not come up with the model ready.
start_server() {
  local backend=$1 portfile="$WORK/port-$1"
  rm -f "$portfile"
  # shellcheck disable=SC2086  # E2E_SERVER_ARGS is a list of flags
  "$SERVER" --model-repository models --backend "$backend" --grpc-address 127.0.0.1:0 --port-file "$portfile" \
    --metrics-address 127.0.0.1:0 --log-level info ${E2E_SERVER_ARGS:-} >"$WORK/server-$backend.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 600); do
    [ -s "$portfile" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ ! -s "$portfile" ]; then
    log "fp8serve --backend $backend did not start; its log:"
    tail -n 20 "$WORK/server-$backend.log"
    stop_server
    return 1
  fi
  port=$(cat "$portfile")
  # How the server placed the model (backend, instances, kernel path, graphs): from its load log.
  grep -E "backend|loaded model|forward:|CUDA|fall|not served|fail" "$WORK/server-$backend.log" | sed 's/^/    /'
  if ! grep -q "loaded model '$MODEL'" "$WORK/server-$backend.log"; then
    log "model $MODEL did not load on --backend $backend"
    stop_server
    return 1
  fi
}

# bench BACKEND BATCH CONCURRENCIES
bench() {
  local backend=$1 batch=$2 conc=$3 json="$WORK/bench-$1-b$2.json"
  rm -f "$json"
  "$CLIENT" bench --url "127.0.0.1:$port" --model "$MODEL" --batch "$batch" --concurrency "$conc" \
    --duration-secs "$DURATION" --warmup-secs "$WARMUP" --threads "$CLIENT_THREADS" --progress=false \
    --json "$json" >>"$WORK/client-$backend.log" 2>&1
  local rc=$?
  tail -n $(($(tr -cd ',' <<<"$conc" | wc -c) + 3)) "$WORK/client-$backend.log" | sed 's/^/    /'
  return $rc
}

failed=0
for backend in $BACKENDS; do
  log "---- --backend $backend"
  : >"$WORK/client-$backend.log"
  if ! start_server "$backend"; then
    failed=1
    continue
  fi
  bench "$backend" 1 1,64,512 || { log "bench $backend batch 1 failed"; failed=1; }
  bench "$backend" 64 64 || { log "bench $backend batch 64 failed"; failed=1; }
  stop_server
  # Whatever the server complained about while it served.
  grep -E "\[(error|warning)\]" "$WORK/server-$backend.log" | tail -n 5 | sed 's/^/    /'
done

# The table: one row per (backend, batch, concurrency), then the ratios.
python3 - "$WORK" $BACKENDS <<'EOF' | tee "$WORK/e2e-summary.txt"
import json, os, sys
out, backends = sys.argv[1], sys.argv[2:]
rows, rps = [], {}
for b in backends:
    for batch in (1, 64):
        path = os.path.join(out, f"bench-{b}-b{batch}.json")
        if not os.path.exists(path):
            rows.append((b, f"b{batch}", None))
            continue
        with open(path) as f:
            j = json.load(f)
        for s in j["steps"]:
            rows.append((b, f"b{batch} c{int(s['concurrency'])}", s))
            rps[(b, batch, int(s["concurrency"]))] = s["requests_per_second"]
print()
print("==================== SERVING END TO END (fashion_mlp 784-256-10, loopback gRPC) ====================")
print(f"{'backend':8} {'load':10} {'req/s':>9} {'rows/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
      f"{'queue us':>9} {'compute us':>10} {'batch':>7} {'errors':>7}")
for b, load, s in rows:
    if s is None:
        print(f"{b:8} {load:10} {'(no result)':>9}")
        continue
    srv = s.get("server", {})
    execs = srv.get("execution_count", 0)
    batch = srv.get("inference_count", 0) / execs if execs else 0.0
    errors = sum(s.get("errors", {}).values())
    print(f"{b:8} {load:10} {s['requests_per_second']:9.0f} {s['rows_per_second']:10.0f} "
          f"{s['latency_ms']['p50']:8.3f} {s['latency_ms']['p99']:8.3f} "
          f"{srv.get('queue_us_per_request', float('nan')):9.0f} {srv.get('compute_us_per_request', float('nan')):10.0f} "
          f"{batch:7.1f} {errors:7d}")
print("queue/compute: server-side means per request (ModelStatistics); batch: mean rows per executed batch")
def ratio(a, b, key):
    if (a, *key) in rps and (b, *key) in rps and rps[(b, *key)] > 0:
        return rps[(a, *key)] / rps[(b, *key)]
    return None
r = ratio("cuda", "noop", (1, 512))
if r is not None:
    print(f"cuda/noop at one-row concurrency 512: {r:.2f}  (target >= 0.8: {'MET' if r >= 0.8 else 'NOT MET'})")
for key, name in (((1, 512), "one-row concurrency 512"), ((64, 64), "64-row concurrency 64")):
    r = ratio("cuda", "cpu", key)
    if r is not None:
        print(f"cuda/cpu at {name}: {r:.2f}")
EOF
exit $failed
