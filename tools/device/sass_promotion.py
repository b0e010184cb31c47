#!/usr/bin/env python3
"""Reads the SASS of the sm90 GEMM kernels (cuobjdump -sass) and reports, per template instance, the
register banks of its promotion FFMAs: how many read their accumulator and write their result in
the same bank, which Nsight Compute showed costing "dispatch" stalls (gemm_config.h, Sm90MainLoop),
and how many carry the "do not yield" hint (bit 45 of the encoding's high word), which
tools/device/ffma_yield.py clears in the +yield instances: read after the edit, this shows which
instances ran edited.

    python3 tools/device/sass_promotion.py FILE [--cuobjdump PATH]

FILE is an object file or shared library with the kernels' device code (the cuobjdump found on
PATH, in /usr/local/cuda/bin, or given runs on it), or a text file that already holds cuobjdump
-sass output (.sass / .txt). Only the sm_90 cubins count: in the sm_89 one the kernel's body is a
single __trap() (it never runs there). A promotion FFMA is the accumulate form "FFMA Rd, Ra, Rb,
Rd" (result += scale x partial); its bank is the register number's parity, the two-bank model of
the register file. Per instance it prints: the FFMAs of that form, how many have Ra (or Rb:
whichever is not the loop's shared scale) in the result's bank, how many carry the do-not-yield
hint, and the instance's SASS length.
Standard library only.
The exit status is 0 when it found at least one sm90 GEMM instance, 1 otherwise, 2 on bad input.
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys

KERNEL = "sm90_fp8_gemm_kernel"
FUNCTION = re.compile(r"Function\s*:\s*(\S+)")
ARCH = re.compile(r"code for (sm_\w+)")
HIGH_WORD = re.compile(r"^\s*/\*\s*(0x[0-9a-f]{16})\s*\*/\s*$")  # an instruction's second line
NO_YIELD = 1 << 45
# FFMA Rd, Ra, Rb, Rc (sources possibly negated or absolute, with .reuse flags): d, a, b, c
FFMA = re.compile(r"\bFFMA\s+R(\d+),\s*-?\|?R(\d+)(?:\.reuse)?\|?,\s*-?\|?R(\d+)(?:\.reuse)?\|?,\s*R(\d+)\b")
# The kernel's template arguments in the mangled name: BLOCK_M, BLOCK_N, B format, output, promote
# and (when present) the main loop.
TEMPLATE = re.compile(r"ILi(\d+)ELi(\d+)ELNS_9Fp8FormatE(\d)ELNS0_10GemmOutputE(\d)ELb(\d)(?:ELNS0_12Sm90MainLoopE(\d))?")
FORMATS = ("e4m3", "e5m2")
OUTPUTS = ("e4m3", "bf16", "f32")
LOOPS = ("default", "cross_bank", "one_accumulator", "one_accumulator_cross_bank", "yield_ffma")


def instance_name(mangled):
    m = TEMPLATE.search(mangled)
    if not m:
        return mangled
    bm, bn, fmt, out, promote, loop = m.groups()
    name = f"{bm}x{bn} {FORMATS[int(fmt)]} -> {OUTPUTS[int(out)]}"
    if promote == "0":
        name += " (no promotion)"
    if loop is not None and loop != "0":
        name += f" {LOOPS[int(loop)]}"
    return name


def read_sass(path, cuobjdump):
    if path.endswith((".sass", ".txt")):
        with open(path, errors="replace") as f:
            return f.read()
    tool = cuobjdump or shutil.which("cuobjdump") or "/usr/local/cuda/bin/cuobjdump"
    if not os.path.exists(tool) and shutil.which(tool) is None:
        raise FileNotFoundError("no cuobjdump (give --cuobjdump, or pass a file of cuobjdump -sass output)")
    done = subprocess.run([tool, "-sass", path], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} -sass {path} failed: {done.stderr.strip()[:300]}")
    return done.stdout


def analyze(sass):
    """Per sm90 GEMM function: [instructions, promotion FFMAs, of which the partial sum shares the
    result's bank, of which the do-not-yield hint is set]. Of an FFMA's two sources the scale is the
    one the function's promotion FFMAs share (the register that appears as a source more often), the
    partial sum the other."""
    instructions = collections.OrderedDict()
    ffmas = collections.defaultdict(list)  # function -> [(d, a, b)]
    no_yield = collections.Counter()  # function -> promotion FFMAs with the do-not-yield hint
    current = None
    pending = False  # the line before was a promotion FFMA: this one holds its high word
    arch = "sm_90a"  # (a saved listing of one function may lack the "code for" line)
    for line in sass.splitlines():
        if pending:
            pending = False
            h = HIGH_WORD.match(line)
            if h and int(h.group(1), 16) & NO_YIELD:
                no_yield[current] += 1
            if h:
                continue
        a = ARCH.search(line)
        if a:
            arch = a.group(1)
            continue
        f = FUNCTION.search(line)
        if f:
            # In the sm_89 cubin the kernel's body is a single __trap(): only Hopper's code counts
            current = f.group(1) if KERNEL in f.group(1) and arch.startswith("sm_90") else None
            if current is not None:
                instructions.setdefault(current, 0)
            continue
        if current is None or not re.match(r"\s*/\*[0-9a-f]{4,}\*/", line):
            continue
        instructions[current] += 1
        m = FFMA.search(line)
        if m:
            d, a, b, c = (int(x) for x in m.groups())
            if d == c:  # the accumulate form
                ffmas[current].append((d, a, b))
                pending = True
    stats = collections.OrderedDict()
    for name, n in instructions.items():
        uses = collections.Counter()
        for _, a, b in ffmas[name]:
            uses[a] += 1
            uses[b] += 1
        same = 0
        for d, a, b in ffmas[name]:
            partial = b if uses[a] > uses[b] else a
            same += partial % 2 == d % 2
        stats[name] = [n, len(ffmas[name]), same, no_yield[name]]
    return stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", help="object file / shared library with the kernels, or saved cuobjdump -sass text")
    ap.add_argument("--cuobjdump", help="the cuobjdump to run (default: PATH, then /usr/local/cuda/bin)")
    args = ap.parse_args(argv)
    try:
        sass = read_sass(args.file, args.cuobjdump)
    except (OSError, RuntimeError) as e:
        print(f"sass_promotion: {e}", file=sys.stderr)
        return 2
    stats = analyze(sass)
    if not stats:
        print(f"sass_promotion: no {KERNEL} instance in {args.file}", file=sys.stderr)
        return 1
    print(f"{'instance':<48} {'SASS':>6} {'promotion FFMAs':>16} {'same bank':>10} {'no-yield':>9}")
    for name, (n, ffma, same, hint) in stats.items():
        print(f"{instance_name(name):<48} {n:>6} {ffma:>16} {same:>10} {hint:>9}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # (piped into head)
        sys.exit(0)
