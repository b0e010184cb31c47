"""tools/device/sass_promotion.py on cuobjdump -sass text written the way cuobjdump prints it."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("sass_promotion", ROOT / "tools/device/sass_promotion.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

DEFAULT = ("_ZN8fp8serve4cuda20sm90_fp8_gemm_kernelILi128ELi128ELNS_9Fp8FormatE0ELNS0_10GemmOutputE1ELb1ELNS0_"
           "12Sm90MainLoopE0EEEv14CUtensorMap_stS5_NS0_14Sm90GemmParamsE")
CROSS = DEFAULT.replace("Sm90MainLoopE0", "Sm90MainLoopE1")
OTHER = "_ZN8fp8serve4cuda16fused_mlp_kernelILi16ELi5ELb0EEEvNS0_14FusedMlpParamsE"


FLAGGED = 0x080FE200000000C9  # ptxas's promotion FFMA with operand B's reuse flag: do-not-yield set
PLAIN = 0x000FC200000000C9    # its neighbour's encoding (and what ffma_yield.py leaves)


def function(name, body, high_words=None):
    """cuobjdump's layout: a Function header, then each instruction and its control word on two lines
    (high_words: one per instruction; default 0x000fe20000000000, which has bit 45 set)."""
    lines = [f"\t\tFunction : {name}", "\t.headerflags\t@\"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)\""]
    for i, ins in enumerate(body):
        hi = high_words[i] if high_words else 0x000FE20000000000
        lines.append(f"        /*{16 * i:04x}*/                   {ins} ;  /* 0x000000d6581c7223 */")
        lines.append(f"                                                                 /* 0x{hi:016x} */")
    return "\n".join(lines) + "\n"


def promotion(results, partials, scale):
    """The accumulate-form FFMAs of one promotion: result += partial * scale (cuobjdump's order)."""
    return [f"FFMA R{r}, R{p}, R{scale}{'.reuse' if i % 2 else ''}, R{r}" for i, (r, p) in
            enumerate(zip(results, partials))]


def test_counts_same_bank_partials_and_names_instances():
    same = promotion([202, 203, 198, 199], [88, 89, 92, 93], 214)  # partial parity == result parity
    split = promotion([203, 202, 199, 198], [88, 89, 92, 93], 214)  # every result in the other bank
    sass = (function(DEFAULT, ["LDC R1, c[0x0][0x28]", "QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR16], RZ, !UPT"] +
                     same + ["FADD R1, R2, R3", "FFMA R5, R6, R7, R8"]) +
            function(OTHER, same) + function(CROSS, split + ["EXIT"]))
    stats = tool.analyze(sass)
    assert list(stats) == [DEFAULT, CROSS]  # only the sm90 GEMM's instances
    assert stats[DEFAULT] == [8, 4, 4, 4]  # FFMA R5, R6, R7, R8 is not the accumulate form
    assert stats[CROSS] == [5, 4, 0, 4]
    assert tool.instance_name(DEFAULT) == "128x128 e4m3 -> bf16"
    assert tool.instance_name(CROSS) == "128x128 e4m3 -> bf16 cross_bank"


def test_the_scale_is_the_shared_source_in_either_position():
    # The scale first this time: the partial is still the operand that changes
    body = [f"FFMA R{r}, R{s}, R{p}, R{r}" for r, p, s in [(40, 100, 7), (42, 102, 7), (44, 103, 7), (46, 105, 7)]]
    stats = tool.analyze(function(DEFAULT, body))
    assert stats[DEFAULT] == [4, 4, 2, 4]  # R100 and R102 share the even results' bank, R103 and R105 do not


def test_main_reads_saved_text_and_fails_without_instances(tmp_path, capsys):
    saved = tmp_path / "k.sass"
    saved.write_text(function(DEFAULT, promotion([202, 203], [88, 89], 214)))
    assert tool.main([str(saved)]) == 0
    out = capsys.readouterr().out
    assert "128x128 e4m3 -> bf16" in out and "same bank" in out
    empty = tmp_path / "none.sass"
    empty.write_text(function(OTHER, ["EXIT"]))
    assert tool.main([str(empty)]) == 1
    assert tool.main([str(tmp_path / "missing.o"), "--cuobjdump", str(tmp_path / "no-such-cuobjdump")]) == 2


def test_only_the_hopper_cubin_counts():
    # cuobjdump lists each cubin after a "code for" line; in the sm_89 one the kernel's body is a
    # single __trap() (built for a target without wgmma, never launched there)
    sass = ("\tcode for sm_89\n" + function(DEFAULT, ["BPT.TRAP 0x1", "EXIT"]) +
            "\tcode for sm_90a\n" + function(DEFAULT, promotion([202, 203], [88, 89], 214)))
    assert tool.analyze(sass)[DEFAULT] == [2, 2, 2, 2]


def test_counts_the_do_not_yield_hints_that_ffma_yield_clears():
    # ptxas: every other promotion FFMA flagged (reuse B, do not yield); after ffma_yield.py: none
    body = promotion([202, 203, 198, 199], [88, 89, 92, 93], 214)
    ptxas = function(DEFAULT, body, [FLAGGED, PLAIN, FLAGGED, PLAIN])
    edited = function(DEFAULT.replace("Sm90MainLoopE0", "Sm90MainLoopE4"), body, [PLAIN] * 4)
    stats = tool.analyze(ptxas + edited)
    assert [v[3] for v in stats.values()] == [2, 0]
    assert tool.instance_name(list(stats)[1]) == "128x128 e4m3 -> bf16 yield_ffma"
