#!/usr/bin/env python3
"""Cross-checks fp8serve's FP8 codec against ml_dtypes, the reference FP8 casts used across the ecosystem.

Feeds several million float32 values to the C++ codec (tests/kernels/numerics/fp8_codec_tool.cc) and compares
every byte:
  * non-saturating encode   == ml_dtypes cast (E4M3FN overflow -> NaN, E5M2 overflow -> inf);
  * saturating encode       == ml_dtypes cast of the value clipped to +-max (NaN stays NaN);
  * decode of all 256 codes == ml_dtypes' decode (NaNs compared as NaN).
The inputs are uniformly random bit patterns (every exponent: subnormals, huge values, inf, NaN), values
log-uniform over both formats' ranges, every midpoint between neighbouring FP8 values and the floats next to
it, and special values. Exits non-zero on any mismatch, printing the first few.
"""
import argparse
import subprocess
import sys

import ml_dtypes
import numpy as np

FORMATS = [("e4m3", ml_dtypes.float8_e4m3fn, 448.0), ("e5m2", ml_dtypes.float8_e5m2, 57344.0)]


def make_inputs(rng: np.random.Generator) -> np.ndarray:
    parts = [rng.integers(0, 2**32, size=2_000_000, dtype=np.uint64).astype(np.uint32).view(np.float32)]
    for _, _, fmax in FORMATS:
        mag = np.exp2(rng.uniform(-24, np.log2(fmax) + 2, size=1_000_000)).astype(np.float32)
        parts.append(mag * rng.choice(np.array([-1, 1], dtype=np.float32), size=mag.size))
    for _, dtype, _ in FORMATS:
        vals = np.arange(256, dtype=np.uint8).view(dtype).astype(np.float32)
        vals = np.unique(vals[np.isfinite(vals)])
        mids = ((vals[:-1] + vals[1:]) / 2).astype(np.float32)
        parts += [mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf)), vals]
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 1.17549435e-38, 3.4028235e38, -3.4028235e38,
               448, 464, 465, 480, 57344, 61439, 61440, 65536]
    parts.append(np.array(special, dtype=np.float32))
    parts.append(np.array([0x7F800001, 0x7FBFFFFF, 0xFFC00001, 0x7FFFFFFF], dtype=np.uint32).view(np.float32))
    return np.concatenate(parts).astype(np.float32)


def report(name: str, x: np.ndarray, got: np.ndarray, want: np.ndarray) -> int:
    bad = np.nonzero(got != want)[0]
    for i in bad[:5]:
        print(f"  MISMATCH {name}: x={x[i]!r} (bits {x.view(np.uint32)[i]:#010x}) ours={got[i]:#04x} ml_dtypes={want[i]:#04x}")
    print(f"{name}: {x.size} values, {bad.size} mismatches")
    return int(bad.size)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tool", required=True, help="path to the fp8_codec_tool binary")
    ap.add_argument("--seed", type=int, default=20261127)
    args = ap.parse_args()

    x = make_inputs(np.random.default_rng(args.seed))
    out = subprocess.run([args.tool], input=x.tobytes(), capture_output=True, check=True).stdout
    ours = np.frombuffer(out, dtype=np.uint8).reshape(-1, 4)
    if ours.shape[0] != x.size:
        print(f"codec tool returned {ours.shape[0]} rows for {x.size} inputs")
        return 1

    mismatches = 0
    with np.errstate(invalid="ignore", over="ignore"):
        for k, (name, dtype, fmax) in enumerate(FORMATS):
            nonsat = x.astype(dtype).view(np.uint8)
            sat = np.clip(x, -fmax, fmax).astype(dtype).view(np.uint8)
            mismatches += report(f"{name} saturating", x, ours[:, 2 * k], sat)
            mismatches += report(f"{name} non-saturating", x, ours[:, 2 * k + 1], nonsat)

    table = np.frombuffer(subprocess.run([args.tool, "decode"], capture_output=True, check=True).stdout, dtype=np.float32)
    for k, (name, dtype, _) in enumerate(FORMATS):
        ours_dec = table[256 * k:256 * (k + 1)]
        ref = np.arange(256, dtype=np.uint8).view(dtype).astype(np.float32)
        same = (ours_dec.view(np.uint32) == ref.view(np.uint32)) | (np.isnan(ours_dec) & np.isnan(ref))
        bad = np.nonzero(~same)[0]
        for c in bad[:5]:
            print(f"  MISMATCH {name} decode: code {c:#04x} ours={ours_dec[c]!r} ml_dtypes={ref[c]!r}")
        print(f"{name} decode: 256 codes, {bad.size} mismatches")
        mismatches += int(bad.size)

    print(f"{'PASS' if mismatches == 0 else 'FAIL'}: {mismatches} mismatches in total")
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
