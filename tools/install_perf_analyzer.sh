#!/usr/bin/env bash
# Installs Triton's real perf_analyzer into ./.venv, taken from the tritonclient 2.41.0 wheel (the
# PyPI "perf-analyzer" package is a placeholder; later tritonclient wheels no longer ship it).
#
#   .venv/libexec/perf_analyzer   the binary from tritonclient-2.41.0.data/data/bin/
#   .venv/bin/perf_analyzer       a wrapper that puts the venv's libcudart.so.12 on LD_LIBRARY_PATH
#
# Only the binary is extracted: the venv's own tritonclient (2.73) is untouched. Idempotent: does
# nothing when the binary is already there and runs. Needs Debian's libb64-0d (apt-get install
# libb64-0d), libssl3 and zlib1g, and PyPI's nvidia-cuda-runtime-cu12 in the venv (for libcudart;
# perf_analyzer loads it even without a GPU).
#
# Environment: VENV (default <repo>/.venv), PERF_ANALYZER_VERSION (default 2.41.0).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
VERSION=${PERF_ANALYZER_VERSION:-2.41.0}
CACHE=$VENV/cache/perf_analyzer
BIN=$VENV/libexec/perf_analyzer
WRAPPER=$VENV/bin/perf_analyzer

die() { printf 'install_perf_analyzer: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

[ -x "$VENV/bin/python" ] || die "no Python venv at $VENV (run ./run.sh deps first)"
PY=$VENV/bin/python

# libcudart.so.12 from nvidia-cuda-runtime-cu12 (found through Python so the path is exact).
CUDART_DIR=$("$PY" - <<'EOF' 2>/dev/null || true
import os, nvidia.cuda_runtime as m
d = os.path.join(list(m.__path__)[0], "lib")
print(d if os.path.exists(os.path.join(d, "libcudart.so.12")) else "")
EOF
)
[ -n "$CUDART_DIR" ] || die "libcudart.so.12 not found in $VENV: run '$VENV/bin/pip install nvidia-cuda-runtime-cu12'"

# System libraries perf_analyzer links against.
have_lib() { /sbin/ldconfig -p 2>/dev/null | grep -q "$1" || ls /lib/*-linux-gnu/"$1"* /usr/lib/*-linux-gnu/"$1"* >/dev/null 2>&1; }
have_lib libb64.so.0d || die "libb64.so.0d is missing: install Debian's libb64-0d (apt-get install libb64-0d)"
have_lib libssl.so.3 || die "libssl.so.3 is missing: install libssl3 (Debian 12) / libssl3t64 (Ubuntu 24.04)"

write_wrapper() {
  mkdir -p "$(dirname "$WRAPPER")"
  cat >"$WRAPPER.tmp" <<EOF
#!/bin/sh
# Triton perf_analyzer $VERSION (installed by tools/install_perf_analyzer.sh): the real binary is
# $BIN; it needs libcudart.so.12, which the venv's nvidia-cuda-runtime-cu12 provides.
export LD_LIBRARY_PATH="$CUDART_DIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$BIN" "\$@"
EOF
  chmod +x "$WRAPPER.tmp"
  mv -f "$WRAPPER.tmp" "$WRAPPER"
}

works() { [ -x "$BIN" ] && [ -x "$WRAPPER" ] && "$WRAPPER" --version >/dev/null 2>&1; }

if [ -x "$BIN" ]; then
  write_wrapper  # cheap; keeps the library path right if the venv moved
  if works; then
    log "perf_analyzer $VERSION already installed: $WRAPPER"
    exit 0
  fi
fi

mkdir -p "$CACHE" "$(dirname "$BIN")"
WHEEL=$(ls "$CACHE"/tritonclient-"$VERSION"-*manylinux*x86_64.whl 2>/dev/null | head -n1 || true)
if [ -z "$WHEEL" ]; then
  log "downloading the tritonclient $VERSION wheel (for its perf_analyzer binary) into $CACHE"
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux1_x86_64 --python-version 3 --implementation py \
    -d "$CACHE" "tritonclient==$VERSION" || die "pip download tritonclient==$VERSION failed"
  WHEEL=$(ls "$CACHE"/tritonclient-"$VERSION"-*manylinux*x86_64.whl 2>/dev/null | head -n1 || true)
  [ -n "$WHEEL" ] || die "no manylinux x86_64 tritonclient $VERSION wheel in $CACHE"
fi

# A wheel is a zip: pull out the one member, without touching site-packages.
"$PY" - "$WHEEL" "$BIN.tmp" "$VERSION" <<'EOF' || die "could not extract perf_analyzer from $WHEEL"
import shutil, sys, zipfile
wheel, out, version = sys.argv[1:]
member = f"tritonclient-{version}.data/data/bin/perf_analyzer"
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
chmod +x "$BIN.tmp"
mv -f "$BIN.tmp" "$BIN"
write_wrapper

if ! works; then
  LD_LIBRARY_PATH="$CUDART_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$BIN" | grep 'not found' >&2 || true
  die "$BIN does not run (missing libraries above?)"
fi
log "installed perf_analyzer $VERSION: $WRAPPER (binary: $BIN)"
