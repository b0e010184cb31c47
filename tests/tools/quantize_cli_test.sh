#!/usr/bin/env bash
# fp8serve-quantize as a user meets it: a PyTorch nn.Sequential state dict in BF16 goes in, an FP8
# model comes out at every format and granularity, the per-layer report is printed, and bad usage
# gets a one-line error and a non-zero exit.
#   usage: quantize_cli_test.sh FP8SERVE_QUANTIZE FP8SERVE_EVAL PYTHON
set -euo pipefail
quantize=$1 eval_bin=$2 python=$3
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# nn.Sequential(Linear(784, 64), ReLU(), Linear(64, 10)) as its state dict names it, in BF16.
"$python" - "$tmp/seq.safetensors" <<'PY'
import sys, numpy as np, ml_dtypes
from safetensors.numpy import save_file
rng = np.random.default_rng(3)
t = lambda *s: (rng.standard_normal(s) * 0.05).astype(ml_dtypes.bfloat16)
save_file({"net.0.weight": t(64, 784), "net.0.bias": t(64), "net.2.weight": t(10, 64), "net.2.bias": t(10)}, sys.argv[1])
PY

for fmt in e4m3 e5m2; do
  for g in tensor channel block; do
    out="$tmp/q_${fmt}_${g}.safetensors"
    "$quantize" --input "$tmp/seq.safetensors" --output "$out" --format "$fmt" --granularity "$g" > "$tmp/log" \
      || fail "quantize $fmt $g: $(cat "$tmp/log")"
    grep -q "^0 .*64x784" "$tmp/log" || fail "no per-layer line for layer 0 ($fmt $g)"
    grep -q "^1 .*10x64" "$tmp/log" || fail "no per-layer line for layer 1 ($fmt $g)"
    "$eval_bin" --models "$out" --limit 200 > "$tmp/eval" || fail "the $fmt $g model does not load: $(cat "$tmp/eval")"
    grep -q "FP8 $fmt $g" "$tmp/eval" || fail "eval does not describe the $fmt $g model: $(cat "$tmp/eval")"
  done
done
echo "ok: 6 format/granularity combinations quantized and loaded"

expect_error() {  # expect_error WHAT PATTERN -- ARGS...
  local what=$1 pattern=$2; shift 3
  if "$quantize" "$@" > "$tmp/out" 2> "$tmp/err"; then fail "$what: exit 0"; fi
  [ "$(wc -l < "$tmp/err")" -le 2 ] || fail "$what: more than a short error: $(cat "$tmp/err")"
  grep -q "$pattern" "$tmp/err" || fail "$what: error '$(cat "$tmp/err")' does not mention '$pattern'"
}
expect_error "missing input" "required" -- --output "$tmp/x.safetensors"
expect_error "missing file" "cannot open" -- --input "$tmp/nope.safetensors" --output "$tmp/x.safetensors"
expect_error "bad format" "e4m3 or e5m2" -- --input "$tmp/seq.safetensors" --output "$tmp/x.safetensors" --format fp4
expect_error "bad granularity" "tensor, channel or block" -- --input "$tmp/seq.safetensors" --output "$tmp/x.safetensors" --granularity row
expect_error "FP8 input" "already quantized" -- --input "$tmp/q_e4m3_block.safetensors" --output "$tmp/x.safetensors"
"$quantize" --help > "$tmp/help" 2>&1 || true
for f in --input --output --format --granularity --calibration; do grep -q -- "$f" "$tmp/help" || fail "--help lacks $f"; done
echo "ok: bad usage gets one-line errors; --help documents every option"
