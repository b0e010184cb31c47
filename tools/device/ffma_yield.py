#!/usr/bin/env python3
"""Edits the SASS of the sm90 GEMM's kYieldFfma instances (gemm_config.h, Sm90MainLoop) in a built
library or program: on their promotion FFMAs that ptxas marked "reuse operand B, do not yield"
(every other one of the 64 per accumulator), it clears both flags, so that the warp scheduler may
switch warps between any two promotion FFMAs. Neither flag changes what an instruction computes:
the reuse flag only lets the next instruction take a source from the operand cache instead of the
register file, and the yield hint only tells the scheduler whether to keep issuing from this warp.

    python3 tools/device/ffma_yield.py FILE [--loop 4] [--cuobjdump PATH] [--dry-run]

FILE holds the kernels' device code uncompressed in its fat binary (a .so, .a, .o or program built
by this project's CMake; tools/device/gpu_check.sh runs it on the GPU bundle's
libfp8serve_cuda.so). The edit is made in place (through a temporary file), and only where the 16
bytes at the computed offset are exactly the instruction cuobjdump listed there. Editing twice
changes nothing more. Without cuobjdump (the CUDA toolkit's, or give --cuobjdump) nothing is edited.

How an instruction is found: cuobjdump -xelf extracts each sm_90 cubin; the cubin must occur once,
verbatim, in FILE; its ELF section headers give the offset of each kernel's .text section; cuobjdump
-sass lists that kernel's instructions with their offsets and 128-bit encodings. A promotion FFMA
is one of the accumulate form "FFMA Rd, Ra, Rb, Rd" (result += scale x partial), as
tools/device/sass_promotion.py counts them; an instance must have at least 64 (one 128-wide
group's). Bits of the encoding's high 64-bit word: 45 is the yield hint (set: do not yield), 58-61
the reuse flags of operand slots A, B, C and the fourth; a promotion FFMA whose only reuse flag is
B's (bit 59) and whose yield hint is set gets both cleared, which is the encoding of its unflagged
neighbours.

Exit status: 0 when every kYieldFfma instance found was edited or already was; 1 when none was
found or an instruction did not match; 2 on bad input or a missing tool. Standard library only.
"""
import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

# The kernel's name, cuobjdump's line shapes, the accumulate-form FFMA and the do-not-yield bit, as
# the SASS reader beside this tool has them
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sass_promotion import FFMA, FUNCTION, HIGH_WORD, KERNEL, NO_YIELD as YIELD_BIT  # noqa: E402

MIN_PROMOTION_FFMAS = 64  # one 128-wide group: 64 rows x 128 columns over 128 threads
YIELD_FFMA = 4  # Sm90MainLoop::kYieldFfma
REUSE_SHIFT, REUSE_MASK, REUSE_B = 58, 0xF, 0b0010
INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s*(.*?)\s*;?\s*/\*\s*(0x[0-9a-f]{16})\s*\*/\s*$")


class EditError(Exception):
    pass


def find_tool(given):
    tool = given or shutil.which("cuobjdump") or "/usr/local/cuda/bin/cuobjdump"
    if shutil.which(tool) is None and not os.access(tool, os.X_OK):
        raise FileNotFoundError("no cuobjdump (on PATH, in /usr/local/cuda/bin, or give --cuobjdump)")
    return tool


def run(cmd, cwd=None):
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, check=False)
    if done.returncode != 0:
        raise EditError(f"{' '.join(cmd[:3])} ... failed: {(done.stderr or done.stdout).strip()[:300]}")
    return done.stdout


def text_sections(cubin):
    """{function name: (offset, size)} of the ELF64 cubin's .text.<function> sections."""
    if cubin[:4] != b"\x7fELF" or cubin[4] != 2 or cubin[5] != 1:
        raise EditError("not a little-endian ELF64 cubin")
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    if shentsize < 64 or shoff + shnum * shentsize > len(cubin) or shstrndx >= shnum:
        raise EditError("section headers out of range")

    def header(i):
        name, _, _, _, offset, size = struct.unpack_from("<IIQQQQ", cubin, shoff + i * shentsize)
        return name, offset, size
    _, str_off, str_size = header(shstrndx)
    names = cubin[str_off:str_off + str_size]
    out = {}
    for i in range(shnum):
        name_at, offset, size = header(i)
        end = names.find(b"\0", name_at)
        name = names[name_at:end].decode(errors="replace")
        if name.startswith(".text."):
            if offset + size > len(cubin):
                raise EditError(f"section {name} runs past the cubin")
            out[name[len(".text."):]] = (offset, size)
    return out


def parse_sass(sass):
    """{function: [(offset, text, low word, high word)]} from cuobjdump -sass output."""
    functions, current, pending = {}, None, None
    for line in sass.splitlines():
        f = FUNCTION.search(line)
        if f:
            current, pending = f.group(1), None
            functions[current] = []
            continue
        if current is None:
            continue
        m = INSTRUCTION.match(line)
        if m:
            pending = (int(m.group(1), 16), m.group(2).strip(), int(m.group(3), 16))
            continue
        h = HIGH_WORD.match(line)
        if h and pending is not None:
            functions[current].append(pending + (int(h.group(1), 16),))
            pending = None
    return functions


def is_promotion(text):
    """The accumulate form FFMA Rd, Ra, Rb, Rd (unpredicated: the promotion's are)."""
    m = FFMA.match(text)
    return m is not None and m.group(1) == m.group(4)


def edit_high_word(hi):
    """The new high word, or None when this FFMA is not one to edit (already plain, or flagged
    otherwise than with B's reuse alone)."""
    if (hi >> REUSE_SHIFT) & REUSE_MASK != REUSE_B or not hi & YIELD_BIT:
        return None
    return hi & ~(REUSE_B << REUSE_SHIFT) & ~YIELD_BIT


def plan_edits(data, cubin_at, functions, sections, wanted):
    """[(file offset, old 16 bytes, new 16 bytes)] and a per-function report."""
    edits, report = [], []
    for name in sorted(n for n in functions if wanted(n)):
        if name not in sections:
            raise EditError(f"{name}: no .text section in its cubin")
        base = cubin_at + sections[name][0]
        ffmas = edited = plain = 0
        for addr, text, lo, hi in functions[name]:
            if not is_promotion(text):
                continue
            ffmas += 1
            old = struct.pack("<QQ", lo, hi)
            at = base + addr
            if data[at:at + 16] != old:
                raise EditError(f"{name}+{addr:#x}: the bytes there are not {text!r} as listed")
            new_hi = edit_high_word(hi)
            if new_hi is None:
                plain += (hi >> REUSE_SHIFT) & REUSE_MASK == 0 and not hi & YIELD_BIT
                continue
            edits.append((at, old, struct.pack("<QQ", lo, new_hi)))
            edited += 1
        report.append((name, ffmas, edited, plain))
    return edits, report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("file", help="library, object or program with the sm90 GEMM's device code")
    ap.add_argument("--loop", type=int, default=YIELD_FFMA,
                    help=f"the Sm90MainLoop value whose instances to edit (default {YIELD_FFMA}, kYieldFfma)")
    ap.add_argument("--cuobjdump", help="the cuobjdump to run (default: PATH, then /usr/local/cuda/bin)")
    ap.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
    args = ap.parse_args(argv)
    if args.loop < 1:
        ap.error("--loop: the default loop (0) is never edited")
    marker = f"Sm90MainLoopE{args.loop}E"

    def wanted(name):
        return KERNEL in name and marker in name

    try:
        tool = find_tool(args.cuobjdump)
        with open(args.file, "rb") as f:
            data = bytearray(f.read())
        edits, report = [], []
        with tempfile.TemporaryDirectory() as tmp:
            run([tool, "-xelf", "all", os.path.abspath(args.file)], cwd=tmp)
            for cubin_name in sorted(os.listdir(tmp)):
                if not re.search(r"\.sm_90a?\.cubin$", cubin_name):
                    continue
                with open(os.path.join(tmp, cubin_name), "rb") as f:
                    cubin = f.read()
                sections = text_sections(cubin)
                targets = [n for n in sections if wanted(n)]
                if not targets:
                    continue
                cubin_at = data.find(cubin)
                if cubin_at < 0:
                    raise EditError(f"{cubin_name} is not in {args.file} verbatim (a compressed fat binary?)")
                if data.find(cubin, cubin_at + 1) >= 0:
                    raise EditError(f"{cubin_name} occurs more than once in {args.file}")
                sass = run([tool, "-sass", "-fun", ",".join(targets), os.path.join(tmp, cubin_name)])
                e, r = plan_edits(data, cubin_at, parse_sass(sass), sections, wanted)
                edits += e
                report += r
    except FileNotFoundError as e:
        print(f"ffma_yield: {e}", file=sys.stderr)
        return 2
    except (OSError, EditError) as e:
        print(f"ffma_yield: {e}", file=sys.stderr)
        return 1
    if not report:
        print(f"ffma_yield: no {KERNEL} instance with main loop {args.loop} in {args.file}", file=sys.stderr)
        return 1
    print(f"{'kernel instance (' + marker + ')':<60} {'promotion FFMAs':>16} {'edited':>7} {'plain':>6}")
    for name, ffmas, edited, plain in report:
        short = re.sub(r"^_ZN8fp8serve4cuda20sm90_fp8_gemm_kernelI", "", name)[:58]
        print(f"{short:<60} {ffmas:>16} {edited:>7} {plain:>6}")
        if ffmas < MIN_PROMOTION_FFMAS:
            print(f"ffma_yield: {name}: {ffmas} promotion FFMAs, fewer than {MIN_PROMOTION_FFMAS} (not a promoting "
                  "instance?)", file=sys.stderr)
            return 1
    if args.dry_run or not edits:
        print(f"ffma_yield: {len(edits)} FFMAs to edit{' (dry run: nothing changed)' if args.dry_run else ''}")
        return 0
    for at, old, new in edits:
        assert data[at:at + 16] == old
        data[at:at + 16] = new
    tmp_path = f"{args.file}.ffma_yield.tmp"
    with open(tmp_path, "wb") as f:
        f.write(data)
    shutil.copymode(args.file, tmp_path)
    os.replace(tmp_path, args.file)
    print(f"ffma_yield: edited {len(edits)} FFMAs in {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
