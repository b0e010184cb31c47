#!/usr/bin/env bash
# Builds what the GPU machine runs and bundles it, with every shared library that machine lacks,
# into device-bundle/ (ignored by git) for tools/device/gpu_check.sh.
#
#   usage: tools/device/make_bundle.sh [BUILD_DIR]   (default BUILD_DIR: build-device/ in the repository)
#   env:   JOBS             ninja's -j (default 2: the build machine has 2 cores)
#          FP8SERVE_BUNDLER the bundler (default: ../shared/tools/bundle-for-device.sh beside the checkout)
#   then:  device tool run(command="tools/device/gpu_check.sh", carry=["device-bundle"], timeout_s=570)
#
# device-bundle/ holds MANIFEST (the commit the programs were built from) and bundle.tar.xz: every
# GPU test program (*_gpu_test), fp8_gemm_bench, the server (fp8serve), fp8serve-client and their libraries in lib/ (the CUDA
# toolkit's own, cuBLASLt and usually cudart, come from the GPU machine's /usr/local/cuda).
# gpu_check.sh unpacks it in place there first, into device-bundle/{PROGRAMS, lib/}; anything else
# run there without it needs: tar -xJf device-bundle/bundle.tar.xz -C device-bundle.
# models/ travels with the working tree.
#
# NOTES: at most 64 MiB may travel to the GPU machine (the working tree plus carried paths).
# Linked statically, every program would carry its own copy of the kernels' device code (~18 MB
# for sm_90a + sm_89), so the build uses shared libraries (BUILD_SHARED_LIBS=ON, in a build
# directory of its own so that build/ stays as it is) and libfp8serve_cuda.so carries it once. The
# server also needs OpenBLAS (~36 MB, every CPU's kernels), hence the xz archive (~5x smaller).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${1:-$repo/build-device}
bundler=${FP8SERVE_BUNDLER:-$repo/../shared/tools/bundle-for-device.sh}
out=$repo/device-bundle
staging=$build/device-bundle-staging  # the unpacked bundle, before the archive

[ -x "$bundler" ] || { echo "make_bundle: bundler not found or not executable: $bundler" >&2; exit 1; }
command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "make_bundle: no nvcc: the CUDA targets cannot build" >&2; exit 1; }

cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFP8SERVE_CUDA=ON -DBUILD_SHARED_LIBS=ON >/dev/null
# Every GPU test program (the *_gpu_test targets, label gpu), the benchmark, the server and the client.
# (CMake's helper targets such as cmake_object_order_depends_target_<name> are not programs.)
mapfile -t gpu_tests < <(ninja -C "$build" -t targets all | sed -n 's/^\([A-Za-z0-9_]*_gpu_test\): phony$/\1/p' |
  grep -v '^cmake_' | sort -u)
targets=("${gpu_tests[@]}" fp8_gemm_bench fp8serve fp8serve-client)
ninja -C "$build" -j "${JOBS:-2}" "${targets[@]}"

programs=()
for t in "${targets[@]}"; do
  p=$(find "$build" -type f -name "$t" -perm -u+x -not -path '*/CMakeFiles/*' -not -path "$staging/*" | head -n 1)
  [ -n "$p" ] || { echo "make_bundle: built target $t not found under $build" >&2; exit 1; }
  programs+=("$p")
done

rm -rf "$staging" "$out"
"$bundler" "$staging" "${programs[@]}"
mkdir -p "$out"
tar -C "$staging" -cf - . | xz -T0 -6 >"$out/bundle.tar.xz"
{
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  echo "commit: $(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "uncommitted changes: $(git -C "$repo" status --porcelain 2>/dev/null | wc -l) paths"
  echo "nvcc: $("$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" --version | tail -n 1)"
  echo "programs: ${targets[*]}"
} >"$out/MANIFEST"

# Everything that travels (the working tree's tracked and unignored files, plus this bundle) must
# stay under 64 MiB.
size_kb=$(du -sk "$out" | cut -f1)
tree_kb=$(cd "$repo" && git ls-files -z -co --exclude-standard | du -ck --files0-from=- 2>/dev/null | tail -n 1 | cut -f1)
echo "make_bundle: device-bundle $((size_kb / 1024)) MiB ($(du -sh "$staging" | cut -f1) unpacked) + working tree $((tree_kb / 1024)) MiB (limit 64 MiB)"
git -C "$repo" check-ignore -q "$out" || echo "make_bundle: warning: device-bundle/ is not ignored by git" >&2
if [ $((size_kb + tree_kb)) -gt $((64 * 1024)) ]; then
  echo "make_bundle: too large to travel to the GPU machine" >&2
  exit 1
fi
echo "make_bundle: $out ready: ${targets[*]}"
