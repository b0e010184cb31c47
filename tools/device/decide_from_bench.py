#!/usr/bin/env python3
"""Reads fp8_gemm_bench's CSV (--csv=FILE; gpu_check.sh keeps it as bench.csv) and says, per opt-in
variant of our kernels, where it beats the base sm90 configuration, whether the heuristic's own
choice ("ours": the base with TuneSm90Config's tunings) does, and where the P3 targets stand. It
decides nothing by itself: the heuristic (kernels/cuda/gemm_config.cc) and the fused launcher
change only by hand, from what this prints.

    python3 tools/device/decide_from_bench.py bench.csv [--margin 0.03]

GEMM variants are compared with ours/sm90_wgmma (the base sm90 config, SelectGemmConfigFor) on the
same shape in the same run; a stacked variant (base+a+b) is also compared with the variant without
its last feature (base+a), which says what that feature adds on top. A variant is "ahead" in a
class of shapes (weight streaming: M <= 128; compute: M >= 256) when it is faster by more than the
margin at every shape of that class the run measured, "behind" when it is slower by more than the
margin at any of them, and "level" otherwise. Variants whose output check failed in the run
(check_rel_err above --max_check) are listed and left out; a variant that should equal another bit
for bit and does not says so in bench.log (MISMATCH lines).
The fused target is judged both on a whole graph replay (launch latency included; an empty kernel
timed so is printed beside it) and on the kernel's own span on the GPU (fused_span rows: first CTA
entry to last CTA exit by %globaltimer). Rows of tools/device/torch_forward_bench.py (variant
"torch/...", appended by gpu_check.sh) set the forward beside PyTorch's. Standard library only: it
runs on the GPU machine, which has python3 but no pip.
"""
import argparse
import csv
import math
import sys
from collections import defaultdict

BASELINE = "ours/sm90_wgmma"
HEURISTIC = "ours"  # the serving default: the baseline's config with TuneSm90Config's tunings
LT_TENSOR = "cublaslt/tensor"
# The P3 targets (issue 4): best of ours vs cuBLASLt per-tensor, and the fused forward at batch 64.
TARGET_8192 = 1.1
TARGET_SMALL_M = 1.3
TARGET_FUSED_US = 5.0


def read_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "section" not in rows[0]:
        raise ValueError(f"{path}: not an fp8_gemm_bench CSV (no 'section' column)")
    out = []
    for r in rows:
        try:
            r["m"], r["n"], r["k"] = int(r["m"]), int(r["n"]), int(r["k"])
            # (float() reads the bench's "nan"; an empty field counts as not measured)
            r["us"] = float(r["us"] or "nan")
            r["check"] = float(r.get("check_rel_err") or "nan")
        except (KeyError, ValueError) as e:
            raise ValueError(f"{path}: bad row {r}: {e}") from e
        out.append(r)
    return out


CLASSES = ("streaming (M<=128)", "compute (M>=256)")


def shape_class(m):
    return CLASSES[0] if m <= 128 else CLASSES[1]


def fmt_x(v):
    return "-" if v is None or not math.isfinite(v) else f"x{v:.2f}"


def column_label(variant):
    """A variant's column: what it adds to the baseline ("n192+mc2x1"), or its own name."""
    return variant.split("+", 1)[1] if "+" in variant else variant


def geomean(values):
    values = [v for v in values if math.isfinite(v) and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


AHEAD = "AHEAD at every shape"


def verdict(speedups, margin):
    """AHEAD when faster by more than the margin at every shape, behind when slower by more than it
    at any, level otherwise."""
    if all(x > 1 + margin for x in speedups):
        return AHEAD
    if any(x < 1 - margin for x in speedups):
        return "behind at some shape"
    return "level"


def summary(speedups, margin):
    return (f"geomean {fmt_x(geomean(speedups)):>6}  min {fmt_x(min(speedups)):>6}  "
            f"max {fmt_x(max(speedups)):>6}  {verdict(speedups, margin)}")


def gemm_report(rows, margin, max_check, out):
    shapes = defaultdict(dict)  # (m, n, k) -> variant -> row
    for r in rows:
        if r["section"] == "gemm":
            shapes[(r["m"], r["n"], r["k"])][r["variant"]] = r
    if not shapes:
        print("no GEMM rows in the CSV", file=out)
        return {}
    # The opt-in variants, then "ours" itself: the heuristic with its tunings (TuneSm90Config), which
    # should be level with or ahead of the base wherever it differs from it
    variants = sorted({v for per in shapes.values() for v in per
                       if v.startswith(BASELINE + "+")})
    if any(HEURISTIC in per for per in shapes.values()):
        variants.append(HEURISTIC)
    # A check the run made and failed (NaN: not compared, e.g. cuBLASLt not offered)
    failed = sorted({(v, s) for s, per in shapes.items() for v, r in per.items()
                     if v.startswith("ours") and math.isfinite(r["check"]) and r["check"] > max_check})
    print("== GEMM: each variant's speedup over " + BASELINE + " (same shape, same run)", file=out)
    header = f"{'M x N x K':>20} {'base us':>9} " + " ".join(f"{column_label(v):>12}" for v in variants)
    print(header + f" {'best/cuBLASLt':>14}  best", file=out)
    # per variant, per class: list of speedups
    by_class = defaultdict(lambda: defaultdict(list))
    best_vs_lt = {}
    for s in sorted(shapes):
        per = shapes[s]
        base = per.get(BASELINE)
        if base is None or not math.isfinite(base["us"]):
            continue
        cells = []
        for v in variants:
            r = per.get(v)
            if r is None or not math.isfinite(r["us"]) or (v, s) in failed:
                cells.append(f"{'-':>12}")
                continue
            x = base["us"] / r["us"]
            by_class[v][shape_class(s[0])].append(x)
            cells.append(f"{fmt_x(x):>12}")
        ours = [(r["us"], v) for v, r in per.items()
                if v.startswith("ours") and math.isfinite(r["us"]) and (v, s) not in failed]
        best_us, best_name = min(ours) if ours else (math.nan, "-")
        lt = per.get(LT_TENSOR)
        ratio = lt["us"] / best_us if lt is not None and math.isfinite(lt["us"]) else math.nan
        best_vs_lt[s] = (ratio, best_name, best_us, lt["us"] if lt else math.nan)
        print(f"{s[0]:>6} x{s[1]:>6} x{s[2]:>6} {base['us']:>9.1f} " + " ".join(cells) +
              f" {fmt_x(ratio):>14}  {best_name}", file=out)
    for v, s in failed:
        print(f"  CHECK FAILED, left out: {v} at {s[0]}x{s[1]}x{s[2]}", file=out)

    print(f"\n== GEMM variants by class of shapes (margin {margin:.0%})", file=out)
    for v in variants:
        for cls in CLASSES:
            xs = by_class[v].get(cls, [])
            if not xs:
                continue
            note = ": a candidate for the heuristic" if verdict(xs, margin) == AHEAD else ""
            print(f"  {v:<32} {cls:<20} {len(xs)} shapes  {summary(xs, margin)}{note}", file=out)
    marginal_report(shapes, failed, margin, out)
    return best_vs_lt


def marginal_report(shapes, failed, margin, out):
    """What the last feature of a stacked variant adds: ours/sm90_wgmma+paired+xbank against
    ours/sm90_wgmma+paired on the same shape, for every variant whose name without its last "+tag"
    was measured too. Per tag and class of shapes: how many pairs, their geomean, min and max, and
    the same verdict as above (margin)."""
    by_tag = defaultdict(lambda: defaultdict(list))  # tag -> class -> [(speedup, "over what")]
    for s, per in shapes.items():
        for v, r in per.items():
            if not v.startswith(BASELINE + "+") or "+" not in v[len(BASELINE) + 1:]:
                continue  # one feature: the table above has it against the base
            under, tag = v.rsplit("+", 1)
            b = per.get(under)
            if b is None or (v, s) in failed or (under, s) in failed:
                continue
            if not (math.isfinite(r["us"]) and math.isfinite(b["us"])):
                continue
            by_tag[tag][shape_class(s[0])].append((b["us"] / r["us"], column_label(under)))
    if not by_tag:
        return
    print(f"\n== What a stacked variant's last feature adds (V+tag against V, same shape; margin {margin:.0%})",
          file=out)
    for tag in sorted(by_tag):
        for cls in CLASSES:
            pairs = by_tag[tag].get(cls, [])
            if not pairs:
                continue
            xs = [x for x, _ in pairs]
            over = ", ".join(sorted({u for _, u in pairs}))
            print(f"  +{tag:<20} {cls:<20} {len(xs)} pairs (over {over})  {summary(xs, margin)}", file=out)


def fused_report(rows, out):
    # The model(s) the fused kernel ran on (a serving-size model in the same CSV has no fused rows)
    fused_models = {(r["k"], r["n"]) for r in rows
                    if r["section"] == "forward" and r["variant"] == "fused" and math.isfinite(r["us"])}
    fwd = defaultdict(dict)  # batch -> variant -> us
    for r in rows:
        if r["section"] == "forward" and ((r["k"], r["n"]) in fused_models or r["variant"] == "empty_kernel"):
            fwd[r["m"]][r["variant"]] = r["us"]
    if not fwd:
        print("\nno forward rows in the CSV", file=out)
        return None
    print("\n== Fused forward of the bundled model (us; graph replays)", file=out)
    empty = next((per.get("empty_kernel") for per in fwd.values() if "empty_kernel" in per), math.nan)
    kinds = sorted({v for per in fwd.values() for v in per if v.startswith("fused/") and v.endswith("clusterauto")})
    print(f"{'batch':>7} {'fused':>8} {'b2b':>8} {'chain':>8} {'lt/layer':>9} " +
          " ".join(f"{k[len('fused/'):-len('/clusterauto')]:>16}" for k in kinds), file=out)
    fused64 = None
    for batch in sorted(fwd):
        per = fwd[batch]
        if "fused" not in per:
            continue
        spans = sorted((us, v[len("fused_span/"):]) for v, us in per.items()
                       if v.startswith("fused_span/") and math.isfinite(us))
        cells = " ".join(f"{per.get(k, math.nan):>16.1f}" for k in kinds)
        print(f"{batch:>7} {per.get('fused', math.nan):>8.1f} {per.get('fused/back_to_back', math.nan):>8.1f} "
              f"{per.get('chain', math.nan):>8.1f} {per.get('cublaslt_per_layer', math.nan):>9.1f} {cells}", file=out)
        if spans:
            print(f"{'':>7} kernel span (first CTA entry to last CTA exit, %globaltimer): " +
                  ", ".join(f"{name} {us:.2f}" for us, name in spans), file=out)
        if batch == 64:
            candidates = [per.get(k, math.nan) for k in ["fused"] + kinds]
            candidates = [c for c in candidates if math.isfinite(c)]
            fused64 = (min(candidates) if candidates else math.nan, per.get("fused/back_to_back", math.nan),
                       spans[0] if spans else (math.nan, "-"))
    if math.isfinite(empty):
        print(f"  an empty kernel timed the same way: {empty:.1f} us", file=out)
    for batch in sorted(fwd):
        per = fwd[batch]
        base = per.get("fused/mma_sync/clusterauto")
        if base is None or not math.isfinite(base):
            continue
        for k in kinds:
            if k == "fused/mma_sync/clusterauto" or not math.isfinite(per.get(k, math.nan)):
                continue
            print(f"  batch {batch:>6}: {k[len('fused/'):]:<28} {fmt_x(base / per[k])} vs mma_sync", file=out)
    return fused64


TORCH = "torch/"  # tools/device/torch_forward_bench.py's rows (gpu_check.sh appends them)
BUNDLED = (784, 10)  # the bundled model's input and output widths: the fused target's model


def torch_report(rows, out):
    """Our forward beside PyTorch's, batch by batch, in the same run: ours = the faster of our two
    paths (the fused kernel, the GEMM chain) against each PyTorch variant, per graph replay and back
    to back. torch_forward_bench.py judges its variants' checks itself (exit status 2, which
    gpu_check.sh reports); a row whose check gave no finite error is left out here."""
    models = defaultdict(lambda: defaultdict(dict))  # (input width, output width) -> batch -> variant -> row
    floors = set()
    for r in rows:
        if r["section"] != "forward":
            continue
        if r["variant"] in ("empty_kernel", TORCH + "one_small_kernel"):
            floors.add((r["variant"], r["us"]))
        else:
            models[(r["k"], r["n"])][r["m"]][r["variant"]] = r
    at64 = None
    for (k, n), fwd in sorted(models.items()):
        names = sorted({v[len(TORCH):] for per in fwd.values() for v in per
                        if v.startswith(TORCH) and not v.endswith("/back_to_back")})
        if names:
            print(f"\n== The forward of the {k} -> ... -> {n} model beside PyTorch (same run, same timing: "
                  "graph replays, L2 warm; us)", file=out)
            print(f"{'batch':>7} {'ours':>8} {'(path)':<7} " + " ".join(f"{x:>11}" for x in names) +
                  f" {'ours vs best PyTorch':>21}", file=out)
            at = model_beside_torch(fwd, names, out)
            if (k, n) == BUNDLED and at is not None:
                at64 = at
    if floors and any(v.startswith(TORCH) for v, _ in floors):
        print("  floors, timed the same way: " + ", ".join(f"{v} {us:.1f}" for v, us in sorted(floors)), file=out)
    return at64


def model_beside_torch(fwd, names, out):
    """One model's table rows; returns the batch-64 comparison (or None)."""
    at64 = None
    for batch in sorted(fwd):
        per = fwd[batch]
        ours = [(per[v]["us"], v) for v in ("fused", "chain") if v in per and math.isfinite(per[v]["us"])]
        theirs = {n: per[TORCH + n]["us"] for n in names if TORCH + n in per
                  and math.isfinite(per[TORCH + n]["us"]) and math.isfinite(per[TORCH + n]["check"])}
        if not ours or not theirs:
            continue
        us, path = min(ours)
        best_name = min(theirs, key=theirs.get)
        cells = " ".join(f"{theirs[n]:>11.1f}" if n in theirs else f"{'-':>11}" for n in names)
        print(f"{batch:>7} {us:>8.1f} {path:<7} {cells} {fmt_x(theirs[best_name] / us):>10} ({best_name})", file=out)
        b2b_ours = per.get("fused/back_to_back")
        b2b_theirs = {n: per[TORCH + n + "/back_to_back"]["us"] for n in theirs if TORCH + n + "/back_to_back" in per}
        if b2b_ours is not None and math.isfinite(b2b_ours["us"]) and b2b_theirs:
            b = min(b2b_theirs, key=b2b_theirs.get)
            print(f"{'':>7} back to back: fused {b2b_ours['us']:.1f}, PyTorch {b} {b2b_theirs[b]:.1f} "
                  f"({fmt_x(b2b_theirs[b] / b2b_ours['us'])})", file=out)
        if batch == 64:
            at64 = (us, path, best_name, theirs[best_name])
    return at64


def targets_report(best_vs_lt, fused64, out, torch64=None):
    print("\n== P3 targets (best of ours vs cuBLASLt per-tensor, same run)", file=out)
    for s, (ratio, name, ours_us, lt_us) in sorted(best_vs_lt.items()):
        if s == (8192, 8192, 8192):
            goal = TARGET_8192
        elif s[0] <= 128 and s[1] * s[2] >= 4096 * 4096:
            goal = TARGET_SMALL_M
        else:
            continue
        state = "met" if ratio >= goal else f"missed: needs {lt_us / goal:.1f} us, has {ours_us:.1f}"
        print(f"  {s[0]:>5} x {s[1]:>5} x {s[2]:>5}  {fmt_x(ratio)} (goal x{goal})  {name}  {state}", file=out)
    if fused64 is not None:
        # Judged twice: on a whole graph replay (launch latency included) and on the kernel's own
        # span on the GPU (first CTA entry to last CTA exit)
        best, b2b, (span, span_name) = fused64

        def state(us):
            if not math.isfinite(us):
                return "not measured"
            return "met" if us <= TARGET_FUSED_US else f"missed by {us - TARGET_FUSED_US:.1f} us"
        print(f"  fused 784-256-10 at batch 64 (goal <= {TARGET_FUSED_US} us): {best:.1f} us per replay "
              f"({state(best)}); {b2b:.1f} us back to back; kernel span {span:.2f} us, {span_name} "
              f"({state(span)})", file=out)
    if torch64 is not None:
        us, path, name, theirs = torch64
        print(f"  the forward at batch 64 beside PyTorch (the peer): ours ({path}) {us:.1f} us, PyTorch "
              f"{name} {theirs:.1f} us: {fmt_x(theirs / us)}", file=out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", help="fp8_gemm_bench --csv output")
    ap.add_argument("--margin", type=float, default=0.03,
                    help="relative speed difference below which two variants count as level (default 0.03)")
    ap.add_argument("--max_check", type=float, default=1e-2,
                    help="largest check_rel_err a variant may have and still count (default 1e-2, the bench's)")
    args = ap.parse_args(argv)
    if not 0 <= args.margin < 1:
        ap.error("--margin must be in [0, 1)")
    try:
        rows = read_rows(args.csv)
    except (OSError, ValueError) as e:
        print(f"decide_from_bench: {e}", file=sys.stderr)
        return 2
    best_vs_lt = gemm_report(rows, args.margin, args.max_check, sys.stdout)
    fused64 = fused_report(rows, sys.stdout)
    torch64 = torch_report(rows, sys.stdout)
    targets_report(best_vs_lt, fused64, sys.stdout, torch64)
    return 0


if __name__ == "__main__":
    sys.exit(main())
