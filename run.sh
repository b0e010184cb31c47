#!/usr/bin/env bash
# One entry point for people and CI. Each command installs what is missing first (Debian/Ubuntu
# packages with apt-get, Python packages into ./.venv with pip), then builds, then does its job.
#
#   ./run.sh serve      set up, build, and serve the bundled model on 0.0.0.0:8001 (extra args go to fp8serve)
#   ./run.sh test       set up, build, and run every test (GPU tests skip loudly without a GPU)
#   ./run.sh accuracy   Fashion-MNIST test accuracy: FP32 vs FP8 per-channel vs FP8 128x128 block
#   ./run.sh bench      CPU benchmarks: quantizer speed, fast FP8 forward vs FP32 OpenBLAS forward
#   ./run.sh model      retrain the FP32 checkpoints and re-quantize the bundled model
#   ./run.sh sanitize [thread]
#                       every test again, built with AddressSanitizer + UBSan (in build-sanitize);
#                       with "thread": the CUDA kernels' emulation tests under ThreadSanitizer
#                       (build-tsan): conflicting shared/global accesses without a barrier between
#   ./run.sh fuzz [SECONDS] [TARGET...]
#                       libFuzzer on the fuzz targets (tests/fuzz; clang, in build-fuzz), SECONDS
#                       each (default 60); findings land in build-fuzz/findings
#   ./run.sh deps | build
#
# Environment: BUILD_DIR (default build), BUILD_TYPE (default Release), JOBS (default nproc).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
BUILD_TYPE=${BUILD_TYPE:-Release}
JOBS=${JOBS:-$(nproc)}
VENV=$ROOT/.venv

APT_PACKAGES=(
  cmake ninja-build g++ pkg-config python3 python3-venv python3-pip
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  prometheus-cpp-dev nlohmann-json3-dev libspdlog-dev zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev libopenblas-dev
  dataset-fashion-mnist libb64-0d
  prometheus chromium docker-compose
)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

deps() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating Python virtual environment in .venv"
    python3 -m venv "$VENV"
  fi
  if ! cmp -s requirements.txt "$VENV/.requirements.installed"; then
    log "installing Python packages (requirements.txt)"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt
    cp requirements.txt "$VENV/.requirements.installed"
  fi
  # Triton's perf_analyzer, for the compatibility tests (PyPI's perf-analyzer is a placeholder).
  [ -x "$VENV/bin/perf_analyzer" ] || tools/install_perf_analyzer.sh
}

build() {
  log "building ($BUILD_TYPE) in $BUILD_DIR"
  local gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD_DIR" "${gen[@]}" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" -DFP8SERVE_PYTHON="$VENV/bin/python"
  fi
  cmake --build "$BUILD_DIR" -j "$JOBS"
}

test_all() {
  log "running tests"
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" --timeout 900
}

serve() {
  log "serving models/ on 0.0.0.0:8001 (gRPC, KServe v2 / Triton protocol); Ctrl-C stops"
  exec "$BUILD_DIR/server/fp8serve" --model-repository models "$@"
}

accuracy() {
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  local models=()
  for arch in 784_256_10 784_512_256_10; do
    local f32=tools/trained/fashion_mlp_${arch}.f32.safetensors
    models+=("$f32")
    for g in channel block; do
      "$BUILD_DIR/tools/fp8serve-quantize" --quiet --input "$f32" --output "$tmp/${arch}_${g}.safetensors" --granularity "$g"
      models+=("$tmp/${arch}_${g}.safetensors")
    done
  done
  local IFS=,
  "$BUILD_DIR/tools/fp8serve-eval" --markdown --models "${models[*]}"
}

bench() {
  "$BUILD_DIR/kernels/bench/quantize_bench"
  "$BUILD_DIR/kernels/bench/cpu_forward_bench" --model=models/fashion_mlp/1/model.safetensors
}

model() {
  "$VENV/bin/python" tools/train_fashion_mlp.py --arch 784-256-10 --out tools/trained/fashion_mlp_784_256_10.f32.safetensors
  "$VENV/bin/python" tools/train_fashion_mlp.py --arch 784-512-256-10 --out tools/trained/fashion_mlp_784_512_256_10.f32.safetensors
  "$BUILD_DIR/tools/fp8serve-quantize" --input tools/trained/fashion_mlp_784_256_10.f32.safetensors \
    --output models/fashion_mlp/1/model.safetensors --format e4m3 --granularity channel \
    --calibration /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
}

# The host code with ASan + UBSan: every test (GPU ones skip without a GPU; the CUDA kernels' emulation
# tests run the kernels' own code under the sanitizers too). Leak checks stay on.
sanitize() {
  local kind=${1:-address}
  case "$kind" in
    address)
      BUILD_DIR=build-sanitize
      log "building with -fsanitize=address,undefined in $BUILD_DIR"
      if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
        cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS=-g1 \
          -DFP8SERVE_SANITIZE=address,undefined -DFP8SERVE_BUILD_BENCHMARKS=OFF -DFP8SERVE_PYTHON="$VENV/bin/python"
      fi
      cmake --build "$BUILD_DIR" -j "$JOBS"
      ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} test_all
      ;;
    thread)
      # Only the emulation tests: each CUDA thread is a std::thread there, so ThreadSanitizer checks
      # the kernels' shared- and global-memory accesses against their barriers, mbarriers, atomics
      # and warp collectives. (The server's locks are Debian's absl::Mutex, built without TSan
      # annotations: TSan would report races that are not there.) About 16x slower than plain.
      BUILD_DIR=build-tsan
      local targets=(small_kernels_emu_test sm90_gemm_emu_test sm89_gemm_emu_test sm89_gemm_emu_ada_test fused_mlp_emu_test)
      log "building the kernels' emulation tests with -fsanitize=thread in $BUILD_DIR"
      if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
        cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS=-g1 \
          -DFP8SERVE_SANITIZE=thread -DFP8SERVE_BUILD_BENCHMARKS=OFF -DFP8SERVE_PYTHON="$VENV/bin/python"
      fi
      cmake --build "$BUILD_DIR" -j "$JOBS" --target "${targets[@]}"
      [ -x "$BUILD_DIR/tests/sm90_gemm_emu_test" ] || { log "no emulation tests: they need nvcc (CUDA) at configure time"; return 1; }
      local failed=0
      for t in "${targets[@]}"; do
        log "$t under ThreadSanitizer"
        OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:history_size=4} \
          FP8SERVE_SOURCE_DIR="$ROOT" "$BUILD_DIR/tests/$t" || failed=1
      done
      return $failed
      ;;
    *) echo "sanitize: address (default) or thread, not '$kind'" >&2; return 2 ;;
  esac
}

fuzz() {
  local seconds=60
  if [[ "${1:-}" =~ ^[0-9]+$ ]]; then seconds=$1; shift; fi
  local targets=("$@")
  [ ${#targets[@]} -gt 0 ] || targets=(model_file_fuzz model_config_fuzz infer_request_fuzz input_files_fuzz)
  # With nvcc, the kernels' host side too.
  if [ $# -eq 0 ] && { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; }; then targets+=(gemm_plan_fuzz); fi
  command -v clang++ >/dev/null && dpkg-query -W -f='${Status}' libclang-rt-dev 2>/dev/null | grep -q "ok installed" || {
    log "installing clang and its libFuzzer runtime"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends clang libclang-rt-dev >/dev/null
  }
  BUILD_DIR=build-fuzz
  if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    # nvcc keeps g++ as its host compiler (only gemm_plan_fuzz needs CUDA, for its headers).
    CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS=-g1 \
      -DFP8SERVE_FUZZ=ON -DCMAKE_CUDA_HOST_COMPILER=g++ -DFP8SERVE_BUILD_BENCHMARKS=OFF -DFP8SERVE_PYTHON="$VENV/bin/python"
  fi
  cmake --build "$BUILD_DIR" -j "$JOBS" --target "${targets[@]}"
  local failed=0
  for t in "${targets[@]}"; do
    # New inputs go to a work folder (the checked-in corpus is read only); crashes to findings/.
    local work="$BUILD_DIR/fuzz-work/$t" found="$BUILD_DIR/findings/$t"
    mkdir -p "$work" "$found"
    log "fuzzing $t for ${seconds}s (corpus: tests/fuzz/corpus/$t + $work)"
    "$BUILD_DIR/tests/fuzz/$t" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096 -timeout=30 \
      -print_final_stats=1 -artifact_prefix="$found/" "$work" "tests/fuzz/corpus/$t" || failed=1
  done
  if [ "$failed" -ne 0 ]; then
    log "a fuzz target failed: the input that did it is in $BUILD_DIR/findings/ (replay: $BUILD_DIR/tests/fuzz/TARGET FILE)"
    return 1
  fi
}

case "${1:-}" in
  deps) deps ;;
  build) deps; build ;;
  test) deps; build; test_all ;;
  serve) shift; deps; build; serve "$@" ;;
  accuracy) deps; build; accuracy ;;
  bench) deps; build; bench ;;
  model) deps; build; model ;;
  sanitize) shift; deps; sanitize "$@" ;;
  fuzz) shift; deps; fuzz "$@" ;;
  *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ] || exit 2 ;;
esac
