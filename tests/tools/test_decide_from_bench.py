"""tools/device/decide_from_bench.py on bench CSVs written the way fp8_gemm_bench writes them."""
import csv
import importlib.util
import io
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("decide_from_bench", ROOT / "tools/device/decide_from_bench.py")
decide = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(decide)

HEADER = ["section", "m", "n", "k", "variant", "us", "tflops", "gbps", "speedup_vs_cublaslt_tensor",
          "check_rel_err", "config"]


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for section, m, n, k, variant, us, check in rows:
            w.writerow([section, m, n, k, variant, us, 0, 0, 0, check, "cfg"])


def gemm(m, n, k, variant, us, check=1e-4):
    return ("gemm", m, n, k, variant, us, check)


def run(tmp_path, rows, *args):
    path = tmp_path / "bench.csv"
    write_csv(path, rows)
    out = io.StringIO()
    old = sys.stdout
    sys.stdout = out
    try:
        rc = decide.main([str(path), *args])
    finally:
        sys.stdout = old
    return rc, out.getvalue()


def line_with(text, *words):
    hits = [l for l in text.splitlines() if all(w in l for w in words)]
    assert hits, f"no line with {words} in:\n{text}"
    return hits[0]


def test_a_variant_ahead_at_every_compute_shape_is_a_candidate(tmp_path):
    rows = []
    for m in (1024, 8192):
        rows += [gemm(m, 8192, 8192, "ours", 1000), gemm(m, 8192, 8192, "ours/sm90_wgmma", 1000),
                 gemm(m, 8192, 8192, "ours/sm90_wgmma+mc2x2", 800),   # x1.25: ahead
                 gemm(m, 8192, 8192, "ours/sm90_wgmma+n192", 990),    # x1.01: level
                 gemm(m, 8192, 8192, "cublaslt/tensor", 700, "nan")]
    # at a streaming shape +mc2x2 is slower by 10%
    rows += [gemm(64, 16384, 4096, "ours/sm90_wgmma", 25), gemm(64, 16384, 4096, "ours/sm90_wgmma+mc2x2", 27.5),
             gemm(64, 16384, 4096, "cublaslt/tensor", 23.3, "nan")]
    rc, text = run(tmp_path, rows)
    assert rc == 0
    assert "AHEAD at every shape" in line_with(text, "+mc2x2", "compute")
    assert "behind" in line_with(text, "+mc2x2", "streaming")
    assert "level" in line_with(text, "+n192", "compute")
    # 8192^3: best of ours 800 us against cuBLASLt's 700: x0.88, missed; it would need 636.4 us
    target = line_with(text, "8192 x  8192 x  8192", "goal")
    assert "x0.88" in target and "missed: needs 636.4 us" in target and "+mc2x2" in target
    assert "needs 17.9 us" in line_with(text, "64 x 16384 x  4096", "goal")


def test_a_variant_whose_check_failed_is_left_out(tmp_path):
    rows = [gemm(8192, 8192, 8192, "ours/sm90_wgmma", 1000),
            gemm(8192, 8192, 8192, "ours/sm90_wgmma+mc2x1", 500, 0.3),   # fast but wrong
            gemm(8192, 8192, 8192, "ours/sm90_wgmma+mc2x2", 900),
            gemm(8192, 8192, 8192, "cublaslt/tensor", 1000, "nan")]
    rc, text = run(tmp_path, rows)
    assert rc == 0
    assert "CHECK FAILED, left out: ours/sm90_wgmma+mc2x1 at 8192x8192x8192" in text
    target = line_with(text, "8192 x  8192 x  8192", "goal")
    assert "+mc2x2" in target and "x1.11" in target and "met" in target
    assert not any("+mc2x1" in l and "compute" in l for l in text.splitlines())


def test_fused_target_and_kinds(tmp_path):
    rows = [("forward", 64, 10, 784, "fused", 14.5, "nan"),
            ("forward", 64, 10, 784, "fused/back_to_back", 9.0, "nan"),
            ("forward", 64, 10, 784, "chain", 26.3, "nan"),
            ("forward", 64, 10, 784, "cublaslt_per_layer", 13.6, "nan"),
            ("forward", 64, 10, 784, "fused/mma_sync/clusterauto", 14.5, "nan"),
            ("forward", 64, 10, 784, "fused/wgmma/clusterauto", 4.5, "nan"),
            ("forward", 64, 10, 784, "fused_span/mma_sync/clusterauto", 11.2, "nan"),
            ("forward", 64, 10, 784, "fused_span/wgmma/cluster1", 3.85, "nan"),
            ("forward", 1, 10, 784, "empty_kernel", 3.3, "nan")]
    rc, text = run(tmp_path, rows)
    assert rc == 0
    assert "x3.22 vs mma_sync" in line_with(text, "batch     64", "wgmma/clusterauto")
    assert "wgmma/cluster1 3.85, mma_sync/clusterauto 11.20" in line_with(text, "kernel span (first CTA")
    target = line_with(text, "fused 784-256-10 at batch 64")
    assert "4.5 us per replay (met)" in target
    assert "kernel span 3.85 us, wgmma/cluster1 (met)" in target
    rows[5] = ("forward", 64, 10, 784, "fused/wgmma/clusterauto", 7.0, "nan")
    rows[8] = ("forward", 64, 10, 784, "fused_span/wgmma/cluster1", 6.0, "nan")
    rc, text = run(tmp_path, rows)
    target = line_with(text, "fused 784-256-10 at batch 64")
    assert "7.0 us per replay (missed by 2.0 us)" in target
    assert "kernel span 6.00 us, wgmma/cluster1 (missed by 1.0 us)" in target


def test_not_a_bench_csv_is_an_error(tmp_path, capsys):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    assert decide.main([str(path)]) == 2
    assert "not an fp8_gemm_bench CSV" in capsys.readouterr().err
    assert decide.main([str(tmp_path / "missing.csv")]) == 2
    with pytest.raises(SystemExit):
        decide.main([str(path), "--margin", "1.5"])


def test_the_tuned_heuristic_is_judged_against_the_base(tmp_path):
    # "ours" (the heuristic with its tunings) gets its own column and verdict next to the variants
    rows = []
    for m in (4096, 8192):
        rows += [gemm(m, 8192, 8192, "ours", 900), gemm(m, 8192, 8192, "ours/sm90_wgmma", 1000),
                 gemm(m, 8192, 8192, "ours/sm90_wgmma+n192", 905)]
    rc, text = run(tmp_path, rows)
    assert rc == 0
    header = line_with(text, "M x N x K", "base us")
    assert header.split()[-3:] == ["ours", "best/cuBLASLt", "best"], header
    verdict = [l for l in text.splitlines() if l.split()[:2] == ["ours", "compute"]]
    assert verdict and "AHEAD at every shape" in verdict[0], text
    assert "x1.11" in line_with(text, "8192 x  8192 x  8192", "ours")


def test_a_stacked_variants_last_feature_is_judged_against_the_variant_under_it(tmp_path):
    # +paired+xbank against +paired (x1.20, x1.10: ahead), +oneacc_xbank has nothing under it but
    # the base (the first table's), and a failed check leaves its pair out
    rows = []
    for m, paired, both in ((4096, 900, 750), (8192, 880, 800)):
        rows += [gemm(m, 8192, 8192, "ours/sm90_wgmma", 1000), gemm(m, 8192, 8192, "ours/sm90_wgmma+paired", paired),
                 gemm(m, 8192, 8192, "ours/sm90_wgmma+paired+xbank", both),
                 gemm(m, 8192, 8192, "ours/sm90_wgmma+oneacc_xbank", 950)]
    rows += [gemm(64, 16384, 4096, "ours/sm90_wgmma", 25), gemm(64, 16384, 4096, "ours/sm90_wgmma+paired", 25),
             gemm(64, 16384, 4096, "ours/sm90_wgmma+paired+xbank", 10, 0.5)]   # fast but wrong
    rc, text = run(tmp_path, rows)
    assert rc == 0
    line = line_with(text, "+xbank", "compute", "pairs")
    assert "2 pairs (over paired)" in line and "min  x1.10" in line and "AHEAD at every shape" in line, line
    assert not any("+xbank" in l and "streaming" in l and "pairs" in l for l in text.splitlines()), text
    assert not any("+oneacc_xbank" in l and "pairs" in l for l in text.splitlines()), text


def test_the_forward_beside_pytorch(tmp_path):
    # tools/device/torch_forward_bench.py's rows, appended to the bench's
    rows = [("forward", 64, 10, 784, "fused", 11.8, "nan"),
            ("forward", 64, 10, 784, "fused/back_to_back", 8.7, "nan"),
            ("forward", 64, 10, 784, "chain", 21.7, "nan"),
            ("forward", 64, 10, 784, "torch/bf16", 16.6, 2e-2),
            ("forward", 64, 10, 784, "torch/bf16/back_to_back", 13.0, 2e-2),
            ("forward", 64, 10, 784, "torch/fp8_tensor", 42.5, 4e-2),
            ("forward", 64, 10, 784, "torch/fp8_1x128", 30.0, "nan"),  # no finite check: left out
            ("forward", 16384, 10, 784, "fused", 125.1, "nan"),
            ("forward", 16384, 10, 784, "chain", 64.7, "nan"),
            ("forward", 16384, 10, 784, "torch/bf16", 40.0, 3e-2),
            ("forward", 1, 10, 784, "empty_kernel", 3.4, "nan"),
            ("forward", 1, 10, 784, "torch/one_small_kernel", 4.1, "nan")]
    rc, text = run(tmp_path, rows)
    assert rc == 0
    assert "The forward of the 784 -> ... -> 10 model beside PyTorch" in text
    # batch 64: ours is the fused kernel, the best PyTorch is bf16 (16.6 / 11.8 = x1.41)
    line = line_with(text, "    64 ", "fused", "x1.41", "(bf16)")
    assert "30.0" not in line  # the variant without a finite check
    assert "x1.49" in line_with(text, "back to back: fused 8.7", "PyTorch bf16 13.0")
    # batch 16384: ours is the faster of the two paths, the chain (40.0 / 64.7 = x0.62)
    assert "x0.62" in line_with(text, " 16384 ", "chain")
    assert "empty_kernel 3.4" in line_with(text, "floors")
    assert "x1.41" in line_with(text, "at batch 64 beside PyTorch", "PyTorch bf16 16.6 us")


def test_a_serving_size_model_gets_its_own_table(tmp_path):
    # a random 4096-16384-4096 model in the same CSV: chain rows only (no fused kernel for it), and
    # its own PyTorch rows at a batch the bundled model also has
    rows = [("forward", 64, 10, 784, "fused", 11.8, "nan"),
            ("forward", 64, 10, 784, "chain", 21.7, "nan"),
            ("forward", 64, 10, 784, "torch/bf16", 16.6, 2e-2),
            ("forward", 64, 4096, 4096, "fused", "nan", "nan"),
            ("forward", 64, 4096, 4096, "chain", 100.0, "nan"),
            ("forward", 64, 4096, 4096, "torch/bf16", 80.0, 5e-2),
            ("forward", 64, 4096, 4096, "torch/fp8_row", 90.0, 6e-2)]
    rc, text = run(tmp_path, rows)
    assert rc == 0
    big = text[text.index("4096 -> ... -> 4096 model beside PyTorch"):]
    assert "x0.80" in line_with(big, "    64 ", "chain", "(bf16)")
    small = text[text.index("784 -> ... -> 10 model beside PyTorch"):text.index("4096 -> ... -> 4096")]
    assert "x1.41" in line_with(small, "    64 ", "fused", "(bf16)")
    # the batch-64 verdict is the bundled model's, and the fused table holds the bundled model only
    assert "x1.41" in line_with(text, "at batch 64 beside PyTorch")
    fused = text[text.index("Fused forward of the bundled model"):]
    assert "100.0" not in line_with(fused, "     64 ")


def test_no_pytorch_rows_no_pytorch_section(tmp_path):
    rc, text = run(tmp_path, [("forward", 64, 10, 784, "fused", 11.8, "nan")])
    assert rc == 0
    assert "PyTorch" not in text
