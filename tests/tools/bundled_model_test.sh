#!/usr/bin/env bash
# The bundled model is real: it loads, it reaches the accuracy the README promises on the full
# Fashion-MNIST test set through the CPU reference, and it is exactly what the quantizer makes
# from the committed FP32 checkpoint (so anyone can reproduce it).
#   usage: bundled_model_test.sh FP8SERVE_EVAL FP8SERVE_QUANTIZE SOURCE_DIR
set -euo pipefail
eval_bin=$1 quantize_bin=$2 src=$3
model=$src/models/fashion_mlp/1/model.safetensors
fp32=$src/tools/trained/fashion_mlp_784_256_10.f32.safetensors
data=/usr/share/datasets/fashion-mnist
[ -f "$data/t10k-images-idx3-ubyte.gz" ] || { echo "FAIL: Fashion-MNIST missing: apt-get install dataset-fashion-mnist"; exit 1; }

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$quantize_bin" --quiet --input "$fp32" --output "$tmp/requantized.safetensors" --format e4m3 --granularity channel
cmp "$model" "$tmp/requantized.safetensors" || { echo "FAIL: $model differs from quantizing $fp32"; exit 1; }
echo "ok: bundled model is reproducible from $fp32"

"$eval_bin" --models "$fp32,$model" | tee "$tmp/eval.txt"
acc_fp32=$(awk 'NR==2 {print $(NF-2)}' "$tmp/eval.txt")
acc_fp8=$(awk 'NR==3 {print $(NF-2)}' "$tmp/eval.txt")
python3 - "$acc_fp32" "$acc_fp8" <<'PY'
import sys
fp32, fp8 = map(float, sys.argv[1:])
ok = fp8 >= 0.883 and fp32 - fp8 <= 0.003
print(f"{'ok' if ok else 'FAIL'}: FP32 {fp32:.4f}, FP8 {fp8:.4f} (want FP8 >= 0.883 and within 0.3 points of FP32)")
sys.exit(0 if ok else 1)
PY
