"""tools/device/torch_forward_bench.py (the PyTorch peer of the forward) on the CPU: the model
loads, every variant the CPU offers agrees with the float64 contract reference, the reference agrees
with the numpy forward the serving benchmark uses, and a wrong variant fails the check. PyTorch is
not among the project's test dependencies (it is on the GPU machine, where gpu_check.sh runs the
script): without it these tests skip, loudly."""
import importlib.util
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "models/fashion_mlp/1/model.safetensors"

torch = pytest.importorskip("torch", reason="*** PyTorch not installed: torch_forward_bench.py not checked here")


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tfb = load("torch_forward_bench", ROOT / "tools/device/torch_forward_bench.py")


def test_cpu_variants_agree_with_the_contract(tmp_path, capsys):
    csv_path = tmp_path / "torch.csv"
    rc = tfb.main(["--device", "cpu", "--model", str(MODEL), "--batches", "1,64", "--iters", "2", "--warmup", "0",
                   "--csv", str(csv_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("section,m,n,k,variant,us,")
    variants = {(l.split(",")[1], l.split(",")[4]) for l in lines[1:]}
    for batch in ("1", "64"):
        for v in ("bf16", "fp8_tensor", "fp8_row"):
            assert (batch, "torch/" + v) in variants, out
    for l in lines[1:]:
        err = float(l.split(",")[9])
        assert 0 < err < 0.1, l  # a real difference from the contract, and a small one
    assert "fp8_1x128   not offered here" in out


def test_the_reference_is_the_numpy_forward(tmp_path):
    np = pytest.importorskip("numpy")
    pytest.importorskip("ml_dtypes", reason="*** ml_dtypes not installed: the numpy forward cannot run")
    sys.path.insert(0, str(ROOT / "tools/bench"))
    try:
        fwd = load("fashion_numpy_forward", ROOT / "tools/bench/fashion_numpy_forward.py")
    finally:
        sys.path.pop(0)
    layers, relu = tfb.load_model(MODEL)
    torch.manual_seed(7)
    x = torch.rand(256, layers[0].inp)
    ours = tfb.contract_forward(layers, relu, x).numpy()
    theirs = fwd.forward(fwd.load_mlp(MODEL), x.numpy())
    # float64 against float32 sums: a hidden value near an E4M3 rounding boundary may take the
    # neighbouring code (measured 1.8e-3 of the largest logit at 300 rows)
    assert np.abs(ours - theirs).max() <= 1e-2 * np.abs(theirs).max()
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.99


def test_a_wrong_variant_fails_the_check(tmp_path, monkeypatch, capsys):
    build = tfb.VARIANTS["fp8_row"]

    def transposed_scales(layers, relu, dev):
        fn, note = build(layers, relu, dev)
        return (lambda x: fn(x).flip(1)), note  # the logits in the wrong order
    monkeypatch.setitem(tfb.VARIANTS, "fp8_row", transposed_scales)
    rc = tfb.main(["--device", "cpu", "--model", str(MODEL), "--batches", "64", "--iters", "1", "--warmup", "0",
                   "--variants", "bf16,fp8_row"])
    out = capsys.readouterr().out
    assert rc == 2, out
    assert "CHECK MISMATCH" in [l for l in out.splitlines() if "fp8_row" in l and l.strip().startswith("64")][0]


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        tfb.main(["--batches", "0"])
    with pytest.raises(SystemExit):
        tfb.main(["--variants", "fp4"])
    assert tfb.main(["--device", "cpu", "--model", str(ROOT / "README.md")]) == 1
    assert "torch_forward_bench:" in capsys.readouterr().err


def fake_blockwise_scaled_mm(accept_fp32_out, a_outer_major, use_b_scales=True):
    """torch._scaled_mm as cuBLASLt computes it with 1x128 scales for A and 1x128 (scale_b [K/128, N])
    or 128x128 (scale_b [K/128, N/128]) scales for B, in float64, accepting one layout of A's scales
    only (as a real one may), and FP32 output only when told to."""
    def scaled_mm(a, b, scale_a, scale_b, bias=None, out_dtype=None):
        m, k = a.shape
        n = b.shape[1]
        if scale_a.shape != (m, k // 128) or scale_b.shape[0] != k // 128:
            raise RuntimeError("not a blockwise configuration")
        if (scale_a.stride(0) == 1) != a_outer_major:
            raise RuntimeError("scale_a has the wrong layout")
        if out_dtype == torch.float32 and not accept_fp32_out:
            raise RuntimeError("FP32 output is not supported for blockwise scaling")
        sa = scale_a.double().repeat_interleave(128, 1)
        sb = scale_b.double().repeat_interleave(128, 0)
        if sb.shape[1] != n:
            sb = sb.repeat_interleave(128, 1)[:, :n]
        y = (a.double() * sa) @ (b.double() * (sb if use_b_scales else 1.0))
        if bias is not None:
            y = y + bias.double()
        return y.to(out_dtype)
    return scaled_mm


@pytest.mark.parametrize("accept_fp32_out,a_outer_major", [(True, False), (False, True)])
def test_blockwise_variant_finds_the_layout_that_gives_the_contract(monkeypatch, accept_fp32_out, a_outer_major):
    monkeypatch.setattr(torch, "_scaled_mm", fake_blockwise_scaled_mm(accept_fp32_out, a_outer_major))
    layers, relu = tfb.load_model(MODEL)
    fn, note = tfb.build_blockwise(layers, relu, torch.device("cpu"), lambda: None)
    assert ("float32 out" if accept_fp32_out else "bfloat16 out") in note
    assert ("A scales outer-dim-major" if a_outer_major else "A scales row-major") in note
    torch.manual_seed(3)
    x = torch.rand(100, layers[0].inp)
    assert fn.layer_output_dtype == (torch.float32 if accept_fp32_out else torch.bfloat16)
    # Against the contract whose layer outputs are rounded as this GEMM rounds them. Products formed
    # in another order still differ in the last bits, and a hidden value that lands on another BF16
    # or E4M3 rounding step moves a logit (4.4e-3 of the largest here with BF16 outputs, 1e-6 with
    # FP32): the bench's --contract_tol of 1e-2 holds both
    ref = tfb.contract_forward(layers, relu, x, fn.layer_output_dtype)
    err = (fn(x) - ref).abs().max() / ref.abs().max()
    assert err <= (1e-4 if accept_fp32_out else 1e-2), err
    if not accept_fp32_out:  # BF16 layer outputs are not the contract's: 1.4e-2 of the largest logit here
        plain = tfb.contract_forward(layers, relu, x)
        assert (fn(x) - plain).abs().max() / plain.abs().max() > 1e-3


def test_blockwise_variant_refuses_a_gemm_that_misses_the_contract(monkeypatch):
    monkeypatch.setattr(torch, "_scaled_mm", fake_blockwise_scaled_mm(True, False, use_b_scales=False))
    layers, relu = tfb.load_model(MODEL)
    with pytest.raises(tfb.NotOffered, match="misses the contract"):
        tfb.build_blockwise(layers, relu, torch.device("cpu"), lambda: None)


@pytest.mark.parametrize("granularity", ["tensor", "channel", "block"])
def test_a_random_model_is_written_and_read_back(tmp_path, granularity, capsys):
    path = tmp_path / "random.safetensors"
    rc = tfb.main(["--device", "cpu", "--random_model", "200,300,10", "--granularity", granularity,
                   "--write_model", str(path), "--batches", "8", "--iters", "1", "--warmup", "0",
                   "--variants", "bf16"])
    assert rc == 0, capsys.readouterr().out
    tensors, meta = tfb.random_model([200, 300, 10], granularity, 20261208)  # the default seed
    layers, relu = tfb.load_model(path)
    assert relu and [(l.inp, l.out) for l in layers] == [(200, 300), (300, 10)]
    assert all(l.granularity == granularity for l in layers)
    assert meta["format"] == "fp8serve.mlp.v1" and meta["weight_granularity"] == granularity
    for i, l in enumerate(layers):
        assert torch.equal(l.codes.view(torch.uint8), tensors[f"layers.{i}.weight"].view(torch.uint8))
        assert torch.equal(l.scale, tensors[f"layers.{i}.weight_scale"])
        # the contract's quantizer: amax / 448 maps the largest weight to code +-448
        assert l.codes.float().abs().max() == 448
    # The numpy forward of the serving benchmark reads the file as fp8serve does (same logits)
    if importlib.util.find_spec("numpy") and importlib.util.find_spec("ml_dtypes"):
        sys.path.insert(0, str(ROOT / "tools/bench"))
        try:
            fwd = load("fashion_numpy_forward", ROOT / "tools/bench/fashion_numpy_forward.py")
        finally:
            sys.path.pop(0)
        x = torch.rand(64, 200)
        ours = tfb.contract_forward(layers, relu, x).numpy()
        theirs = fwd.forward(fwd.load_mlp(path), x.numpy())
        assert abs(ours - theirs).max() <= 1e-2 * abs(theirs).max()


def test_write_model_needs_a_random_model():
    with pytest.raises(SystemExit):
        tfb.main(["--device", "cpu", "--write_model", "/tmp/x.safetensors"])
    with pytest.raises(SystemExit):
        tfb.main(["--device", "cpu", "--random_model", "4096"])
