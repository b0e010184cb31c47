"""tools/device/ffma_yield.py on a synthetic library: a cubin (ELF64 with .text.<kernel> sections)
embedded in other bytes, and a stand-in cuobjdump that extracts it (-xelf) and lists its kernels'
instructions (-sass -fun) in cuobjdump's format from the cubin's own bytes. The encodings are the
ones ptxas gave the sm90 GEMM's promotion (reuse on operand B with the yield hint set, every other
FFMA); the edit was also checked on the real library against cuobjdump (see the tool's README
entry)."""
import importlib.util
import json
import os
import pathlib
import random
import stat
import struct
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools/device/ffma_yield.py"
_spec = importlib.util.spec_from_file_location("ffma_yield", TOOL)
fy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fy)

YIELD_FN = "_ZN8fp8serve4cuda20sm90_fp8_gemm_kernelILi128ELi128ELNS_9Fp8FormatE0ELNS0_10GemmOutputE1ELb1ELNS0_12Sm90MainLoopE4EEEv14CUtensorMap_stS5_NS0_14Sm90GemmParamsE"
DEFAULT_FN = YIELD_FN.replace("Sm90MainLoopE4E", "Sm90MainLoopE0E")
FLAGGED_HI = 0x080FE200000000C9  # reuse B, yield hint set (as ptxas wrote the promotion's)
PLAIN_HI = 0x000FC200000000C9    # the same with both cleared (its neighbours' encoding)
FFMA_LO = 0x000000D258C97223
OTHER_LO, OTHER_HI = 0x0000000000007918, 0x000FE20000000000  # any non-FFMA instruction


def instructions(n_ffma, reuse_a=False):
    """[(text, lo, hi)]: two other instructions, n_ffma promotion FFMAs alternating flagged and
    plain (reuse_a: the flagged ones also reuse operand A), then one more other instruction."""
    out = [("NOP", OTHER_LO, OTHER_HI), ("MOV R1, c[0x0][0x28]", OTHER_LO + 1, OTHER_HI)]
    for i in range(n_ffma):
        flagged = i % 2 == 0
        hi = FLAGGED_HI | ((1 << 58) if reuse_a else 0) if flagged else PLAIN_HI
        out.append((f"FFMA R{200 + i}, R{80 + i}, R210{'.reuse' if flagged else ''}, R{200 + i}", FFMA_LO + i, hi))
    out.append(("EXIT", OTHER_LO + 2, OTHER_HI))
    return out


def make_cubin(functions):
    """An ELF64 little-endian file: a null section, .shstrtab, and .text.<name> per function."""
    names = b"\0.shstrtab\0" + b"".join(b".text." + n.encode() + b"\0" for n in functions)
    body = bytearray(b"\x7fELF\x02\x01\x01" + bytes(57))  # e_ident + the rest of a 64-byte header
    sections = [(0, 0, 0)]  # (name offset, data offset, size)
    sections.append((1, len(body), len(names)))
    body += names
    name_at = len(b"\0.shstrtab\0")
    for n, ins in functions.items():
        body += bytes(-len(body) % 128)  # code is 128-byte aligned
        code = b"".join(struct.pack("<QQ", lo, hi) for _, lo, hi in ins)
        sections.append((name_at, len(body), len(code)))
        body += code
        name_at += len(".text." + n) + 1
    body += bytes(-len(body) % 8)
    shoff = len(body)
    for name, off, size in sections:
        body += struct.pack("<IIQQQQIIQQ", name, 1, 0, 0, off, size, 0, 0, 1, 0)
    struct.pack_into("<Q", body, 0x28, shoff)
    struct.pack_into("<HHH", body, 0x3A, 64, len(sections), 1)
    return bytes(body)


FAKE_CUOBJDUMP = textwrap.dedent('''\
    # cuobjdump -xelf all LIB: the cubin as it now lies in LIB; cuobjdump -sass -fun F,... CUBIN: each
    # function's instructions, read from CUBIN's bytes (or the listing the test overrides)
    import json, os, struct, sys
    spec = json.load(open(os.environ["FAKE_SPEC"]))
    args = sys.argv[1:]
    if args[:2] == ["-xelf", "all"]:
        lib = open(args[2], "rb").read()
        cubin = lib[spec["cubin_at"]:spec["cubin_at"] + spec["cubin_size"]]
        open(os.path.join(os.getcwd(), "sm90_fp8_gemm.sm_90a.cubin"), "wb").write(cubin)
        sys.exit(0)
    if args[0] == "-sass" and args[1] == "-fun":
        cubin = open(args[3], "rb").read()
        for fn in args[2].split(","):
            print("\\t\\tFunction : " + fn)
            rows = spec["override"].get(fn)
            if rows is None:
                rows = [(16 * i, text) + struct.unpack_from("<QQ", cubin, spec["code_at"][fn] + 16 * i)
                        for i, text in enumerate(spec["texts"][fn])]
            for addr, text, lo, hi in rows:
                print("        /*%04x*/                   %s ;   /* 0x%016x */" % (addr, text, lo))
                print("                                          /* 0x%016x */" % hi)
        sys.exit(0)
    sys.exit("unexpected arguments: " + " ".join(args))
''')


def setup_library(tmp_path, functions, copies=1, listing_override=None):
    cubin = make_cubin(functions)
    rng = random.Random(5)
    lib = bytes(rng.randrange(256) for _ in range(3000))
    cubin_at = len(lib)
    for _ in range(copies):
        lib += cubin + bytes(rng.randrange(256) for _ in range(777))
    lib_path = tmp_path / "libfp8serve_cuda.so"
    lib_path.write_bytes(lib)
    sections = fy.text_sections(cubin)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "cubin_at": cubin_at, "cubin_size": len(cubin),
        "code_at": {fn: sections[fn][0] for fn in functions},
        "texts": {fn: [text for text, _, _ in ins] for fn, ins in functions.items()},
        "override": listing_override or {}}))
    tool = tmp_path / "cuobjdump"
    tool.write_text(f"#!{sys.executable}\n" + FAKE_CUOBJDUMP)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    os.environ["FAKE_SPEC"] = str(spec)
    return lib_path, lib, cubin


def run_tool(lib_path, tool_dir, *extra):
    return subprocess.run([sys.executable, str(TOOL), str(lib_path), "--cuobjdump", str(tool_dir / "cuobjdump"), *extra],
                          capture_output=True, text=True, env=os.environ.copy())


def test_the_flagged_promotion_ffmas_of_the_yield_instance_are_edited_and_nothing_else(tmp_path):
    functions = {DEFAULT_FN: instructions(64), YIELD_FN: instructions(64)}
    lib_path, before, cubin = setup_library(tmp_path, functions)
    done = run_tool(lib_path, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "edited 32 FFMAs" in done.stdout
    after = lib_path.read_bytes()
    assert len(after) == len(before)
    cubin_at = before.find(cubin)
    code_at = cubin_at + fy.text_sections(cubin)[YIELD_FN][0]
    changed = [i for i in range(len(before)) if before[i] != after[i]]
    # exactly two bits of each flagged FFMA's high word (bytes 8..15 of the instruction): 45, 59
    want = set()
    for k, (text, lo, hi) in enumerate(functions[YIELD_FN]):
        if hi == FLAGGED_HI:
            at = code_at + 16 * k + 8
            assert struct.unpack_from("<Q", after, at)[0] == PLAIN_HI, text
            want |= {at + 45 // 8, at + 59 // 8}
    assert set(changed) == want
    # the default instance is untouched, and a second run edits nothing
    again = run_tool(lib_path, tmp_path)
    assert again.returncode == 0 and "0 FFMAs to edit" in again.stdout
    assert lib_path.read_bytes() == after


def test_dry_run_changes_nothing(tmp_path):
    lib_path, before, _ = setup_library(tmp_path, {YIELD_FN: instructions(64)})
    done = run_tool(lib_path, tmp_path, "--dry-run")
    assert done.returncode == 0 and "32 FFMAs to edit (dry run" in done.stdout
    assert lib_path.read_bytes() == before


def test_other_flags_other_ffmas_and_too_few_are_left_alone(tmp_path):
    # flagged FFMAs that also reuse operand A are not the pattern: nothing edited
    lib_path, before, _ = setup_library(tmp_path, {YIELD_FN: instructions(64, reuse_a=True)})
    done = run_tool(lib_path, tmp_path)
    assert done.returncode == 0 and "0 FFMAs to edit" in done.stdout
    # an FFMA that does not accumulate into its own destination is not a promotion FFMA
    ins = instructions(64) + [("FFMA R5, R6, R210.reuse, R8", FFMA_LO, FLAGGED_HI)]
    lib_path, before, _ = setup_library(tmp_path, {YIELD_FN: ins})
    done = run_tool(lib_path, tmp_path)
    assert done.returncode == 0 and "edited 32 FFMAs" in done.stdout
    after = lib_path.read_bytes()
    code_at = before.find(make_cubin({YIELD_FN: ins})) + fy.text_sections(make_cubin({YIELD_FN: ins}))[YIELD_FN][0]
    last = code_at + 16 * (len(ins) - 1)
    assert after[last:last + 16] == before[last:last + 16]
    # fewer promotion FFMAs than one 128-wide group has: not a promoting instance, an error
    lib_path, before, _ = setup_library(tmp_path, {YIELD_FN: instructions(8)})
    done = run_tool(lib_path, tmp_path)
    assert done.returncode == 1 and "fewer than 64" in done.stderr
    assert lib_path.read_bytes() == before


def test_a_listing_that_does_not_match_the_bytes_edits_nothing(tmp_path):
    ins = instructions(64)
    wrong = [(16 * i, text, lo ^ (1 if i == 20 else 0), hi) for i, (text, lo, hi) in enumerate(ins)]
    lib_path, before, _ = setup_library(tmp_path, {YIELD_FN: ins}, listing_override={YIELD_FN: wrong})
    done = run_tool(lib_path, tmp_path)
    assert done.returncode == 1 and "the bytes there are not" in done.stderr
    assert lib_path.read_bytes() == before


def test_an_ambiguous_or_missing_cubin_edits_nothing(tmp_path):
    lib_path, before, _ = setup_library(tmp_path, {YIELD_FN: instructions(64)}, copies=2)
    done = run_tool(lib_path, tmp_path)
    assert done.returncode == 1 and "more than once" in done.stderr
    assert lib_path.read_bytes() == before
    lib_path, before, _ = setup_library(tmp_path, {DEFAULT_FN: instructions(64)})
    done = run_tool(lib_path, tmp_path)
    assert done.returncode == 1 and "no sm90_fp8_gemm_kernel instance with main loop 4" in done.stderr


def test_no_cuobjdump_is_reported(tmp_path):
    lib_path = tmp_path / "lib.so"
    lib_path.write_bytes(b"x")
    done = subprocess.run([sys.executable, str(TOOL), str(lib_path), "--cuobjdump", str(tmp_path / "missing")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no cuobjdump" in done.stderr


def test_the_high_word_rule():
    assert fy.edit_high_word(FLAGGED_HI) == PLAIN_HI
    assert fy.edit_high_word(PLAIN_HI) is None                   # already plain
    assert fy.edit_high_word(FLAGGED_HI | 1 << 58) is None       # reuse on A too
    assert fy.edit_high_word(FLAGGED_HI & ~(1 << 45)) is None    # reuse without the yield hint
    assert fy.edit_high_word(PLAIN_HI | 1 << 45) is None         # the hint without reuse
