#!/usr/bin/env python3
"""torch_forward_bench: the peer for the MLP forward. Runs an fp8serve model's forward in PyTorch,
checks it, and times it the way fp8_gemm_bench times ours, so that one GPU run compares them.

    python3 tools/device/torch_forward_bench.py [--model FILE] [--batches 64,1,1024,16384]
        [--iters 30] [--warmup 3] [--back_to_back 16] [--csv FILE] [--device cuda|cpu]

The variants are the ways a PyTorch user would run the model:
  bf16        weights dequantized to BF16 (fp8 code x scale), F.linear + ReLU, BF16 activations;
  fp8_tensor  per-tensor FP8: each layer's input quantized to E4M3 with one dynamic scale (amax/448),
              weights re-quantized per tensor from their dequantized values, torch._scaled_mm;
  fp8_row     per-row input scales, the stored per-channel weight scales (torch._scaled_mm rowwise);
  fp8_1x128   the numeric contract itself: 1x128 input scales, weight scales per channel (given to
              cuBLASLt as 1x128 blocks along K) or per 128x128 block, torch._scaled_mm blockwise.
Each FP8 variant quantizes with eager PyTorch ops (abs, amax, divide, clamp, cast), as a user would.

Timing (CUDA): each variant's forward of one batch is captured in a CUDA graph and replayed, L2
warm; ahead of each timed replay a GPU-side spin (torch.cuda._sleep) keeps the host's launch
latency out, as fp8_gemm_bench's forward section does; the figure is the median over --iters
replays (CUDA events). "back_to_back" rows time --back_to_back forwards captured in one graph, per
forward. A graph holding one tiny kernel, timed the same way, gives the floor.

Check: on fresh random inputs in the model's range (uniform [0, 1), as pixel/255), every variant's
logits are compared with a float64 forward of the numeric contract (1x128 E4M3 activations, the
stored weights dequantized). check_rel_err is max|d| over max|reference|. The fp8_1x128 variant
computes the contract, so it must stay within --contract_tol (FP32 summation order; where cuBLASLt
gives BF16 layer outputs only, its reference rounds them to BF16 too); the other variants compute something
else on purpose and are only required to stay within --loose_tol (a misread layout or scale gives
errors of order 1). The graph's output is poisoned (NaN) before its first replay and must then equal
the eager forward. A variant PyTorch or cuBLASLt does not offer (here, or at one batch) is reported
as such, not counted as a failure.

With --csv, rows in fp8_gemm_bench's CSV format (section "forward", variant "torch/<name>") are
written, so that gpu_check.sh can append them to bench.csv and tools/device/decide_from_bench.py
can set our fused kernel beside PyTorch. Exit status: 0, or 2 when a check failed, 1 on other
errors. Needs PyTorch (the GPU machine has it); nothing of fp8serve.
"""
import argparse
import ctypes
import json
import math
import os
import pathlib
import struct
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # reported by main(), so that --help works without it
    torch = None

E4M3_MAX = 448.0
GROUP = 128
ST_DTYPES = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "BF16": "bfloat16", "F16": "float16",
             "F32": "float32"}


def round_up(v, m):
    return (v + m - 1) // m * m


# ---------------------------------------------------------------------------------------------
# The model: safetensors, fp8serve.mlp.v1 (ARCHITECTURE.md "The model repository").

def load_safetensors(path):
    data = pathlib.Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} runs past the file ({len(data)} bytes)")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    body = memoryview(data)[8 + n:]
    tensors = {}
    for name, info in header.items():
        dtype = ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: {name}: dtype {info['dtype']} is not one an fp8serve model uses")
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(body[begin:end]), dtype=torch.uint8) if end > begin else \
            torch.empty(0, dtype=torch.uint8)
        tensors[name] = t.view(getattr(torch, dtype)).reshape(info["shape"])
    return tensors, meta


class Layer:
    """One layer: the stored codes and scales, and the weight they stand for (FP32)."""

    def __init__(self, i, tensors):
        w = tensors.get(f"layers.{i}.weight")
        if w is None or w.dim() != 2:
            raise ValueError(f"layers.{i}.weight: missing or not 2-D")
        self.out, self.inp = w.shape
        self.bias = tensors.get(f"layers.{i}.bias", torch.zeros(self.out)).float()
        self.fp8 = w.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)
        self.codes, self.granularity, self.scale = w, "none", None
        if self.fp8:
            s = tensors[f"layers.{i}.weight_scale"].float()
            if s.numel() == 1:
                self.granularity, full = "tensor", s.reshape(()).expand(self.out, self.inp)
            elif s.dim() == 1 and s.numel() == self.out:
                self.granularity, full = "channel", s[:, None].expand(self.out, self.inp)
            elif s.shape == (math.ceil(self.out / GROUP), math.ceil(self.inp / GROUP)):
                self.granularity = "block"
                full = s.repeat_interleave(GROUP, 0)[:self.out].repeat_interleave(GROUP, 1)[:, :self.inp]
            else:
                raise ValueError(f"layers.{i}.weight_scale: shape {tuple(s.shape)} fits no granularity")
            self.scale = s
            self.weight = w.float() * full
        else:
            self.weight = w.float()
        self._float64 = {}

    def float64_on(self, device):
        """The weight and bias in float64 on `device`, for the reference (made once per device)."""
        if device not in self._float64:
            self._float64[device] = (self.weight.double().to(device), self.bias.double().to(device))
        return self._float64[device]


def load_model(path):
    tensors, meta = load_safetensors(path)
    return model_from_tensors(tensors, meta, path)


def model_from_tensors(tensors, meta, where):
    """The layers and whether hidden layers apply ReLU."""
    if meta.get("format") != "fp8serve.mlp.v1":
        raise ValueError(f"{where}: __metadata__.format is {meta.get('format')!r}, not fp8serve.mlp.v1")
    layers = []
    while f"layers.{len(layers)}.weight" in tensors:
        layers.append(Layer(len(layers), tensors))
    if not layers:
        raise ValueError(f"{where}: no layers.0.weight")
    for a, b in zip(layers, layers[1:]):
        if a.out != b.inp:
            raise ValueError(f"{where}: a layer of width {a.out} feeds one of width {b.inp}")
    act = meta.get("activation", "relu")
    if act not in ("relu", "none", "identity"):
        raise ValueError(f"{where}: activation {act!r} is not supported here")
    return layers, act == "relu"


def random_model(widths, granularity, seed):
    """Tensors and metadata of an fp8serve.mlp.v1 model of these widths with random weights
    (N(0, 1/in)) quantized to E4M3 by the contract's rule (scale = amax / 448 per tensor, output
    channel or 128x128 block), and random biases: a serving-size MLP to time, where no trained one
    travels (the GPU machine is reached by 64 MiB at most)."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for i, (inp, out) in enumerate(zip(widths, widths[1:])):
        w = torch.randn(out, inp, generator=gen) / math.sqrt(inp)
        if granularity == "tensor":
            s = _scale(w.abs().amax())
            full = s
        elif granularity == "channel":
            s = _scale(w.abs().amax(dim=1))
            full = s[:, None]
        else:
            ob, ib = math.ceil(out / GROUP), math.ceil(inp / GROUP)
            blocks = F.pad(w, (0, ib * GROUP - inp, 0, ob * GROUP - out)).view(ob, GROUP, ib, GROUP)
            s = _scale(blocks.abs().amax(dim=(1, 3)))
            full = s.repeat_interleave(GROUP, 0)[:out].repeat_interleave(GROUP, 1)[:, :inp]
        tensors[f"layers.{i}.weight"] = _codes(w, full)
        tensors[f"layers.{i}.weight_scale"] = s.float().contiguous()
        tensors[f"layers.{i}.bias"] = (torch.rand(out, generator=gen) - 0.5) * 0.2
    meta = {"format": "fp8serve.mlp.v1", "activation": "relu", "arch": "-".join(map(str, widths)),
            "weight_format": "e4m3", "weight_granularity": granularity, "seed": str(seed),
            "source": "random weights, tools/device/torch_forward_bench.py --random_model"}
    return tensors, meta


def write_safetensors(path, tensors, meta):
    """Writes the tensors (CPU) and metadata as a safetensors file, atomically."""
    names = {v: k for k, v in ST_DTYPES.items()}
    header, blobs, offset = {"__metadata__": meta}, [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        size = t.numel() * t.element_size()
        header[name] = {"dtype": names[str(t.dtype).replace("torch.", "")], "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}
        blobs.append(ctypes.string_at(t.data_ptr(), size) if size else b"")  # (no numpy on the GPU machine)
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    tmp = pathlib.Path(f"{path}.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Quantizers (eager PyTorch ops). Scale = amax / 448 (1 where amax is 0: the codes are then 0
# whatever the scale); codes = x / scale, saturated, rounded to nearest even by the cast.

def _scale(amax):
    return torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))


def _codes(x, scale, dtype=None):
    dtype = dtype or torch.float8_e4m3fn
    limit = torch.finfo(dtype).max
    return (x / scale).clamp(-limit, limit).to(dtype)


def quantize_tensor(x):
    s = _scale(x.abs().amax().float())
    return _codes(x.float(), s), s


def quantize_rows(x):
    s = _scale(x.abs().amax(dim=1, keepdim=True).float())
    return _codes(x.float(), s), s


def quantize_1x128(x):
    """x [M, K] with K a multiple of 128: codes [M, K], scales [M, K/128]."""
    m, k = x.shape
    g = x.float().view(m, k // GROUP, GROUP)
    s = _scale(g.abs().amax(dim=2, keepdim=True))
    return _codes(g, s).view(m, k), s.view(m, k // GROUP)


# ---------------------------------------------------------------------------------------------
# The reference: the numeric contract in float64.

def contract_forward(layers, relu, x, layer_output_dtype=None):
    """Logits [M, out] (FP32). With layer_output_dtype (torch.bfloat16), every layer's output is
    rounded to it after the bias, as a GEMM that writes that type does, before ReLU and
    requantization."""
    h = x.float()
    for i, l in enumerate(layers):
        k = round_up(l.inp, GROUP)
        q, s = quantize_1x128(F.pad(h, (0, k - l.inp)))
        a = (q.double().view(h.shape[0], k // GROUP, GROUP) * s.double()[:, :, None]).view(h.shape[0], k)[:, :l.inp]
        w, b = l.float64_on(a.device)
        h = a @ w.t() + b
        if relu and i + 1 < len(layers):
            h = h.clamp_min(0)
        h = h.to(layer_output_dtype).float() if layer_output_dtype is not None else h.float()
    return h


# ---------------------------------------------------------------------------------------------
# The variants. Each builder returns (forward(x) -> FP32 logits [M, out], description) or raises
# NotOffered. Weights are laid out once, outside the timed forward.

class NotOffered(Exception):
    pass


def pad2(t, rows, cols, value=0):
    return F.pad(t, (0, cols - t.shape[1], 0, rows - t.shape[0]), value=value)


def build_bf16(layers, relu, dev):
    ws = [(l.weight.to(dev, torch.bfloat16), l.bias.to(dev, torch.bfloat16)) for l in layers]

    def forward(x):
        h = x.to(torch.bfloat16)
        for i, (w, b) in enumerate(ws):
            h = F.linear(h, w, b)
            if relu and i + 1 < len(ws):
                h = F.relu(h)
        return h.float()
    return forward, "BF16 weights (dequantized) and activations, F.linear"


def _fp8_layers(layers, dev, k_multiple, weight_fn):
    """Per layer: the padded input width, output width (a multiple of 16, as cuBLASLt's FP8
    leading dimensions need), B = codes [N, K] as torch._scaled_mm's column-major mat2 (.t()), its
    scale and the bias; the next layer's input width is this padded output width."""
    out = []
    k = round_up(layers[0].inp, k_multiple)
    for l in layers:
        n = round_up(l.out, 16)
        codes, scale = weight_fn(l, n, k)
        bias = pad2(l.bias[None, :], 1, n)[0].to(dev)
        out.append((k, n, codes.to(dev).t(), scale.to(dev), (bias.to(torch.bfloat16), bias)))
        k = n
    return out


def _run_fp8(x, fl, layers, relu, quantize, out_dtype):
    # (F.pad even with nothing to add copies: only where the first layer's width is padded)
    h = x if fl[0][0] == x.shape[1] else F.pad(x, (0, fl[0][0] - x.shape[1]))
    for i, (k, n, b, sb, bias) in enumerate(fl):
        q, sa = quantize(h)
        # (_scaled_mm adds a BF16 bias to BF16 output; to FP32 output it is added after)
        bf16 = out_dtype == torch.bfloat16
        h = torch._scaled_mm(q, b, scale_a=sa, scale_b=sb, bias=bias[0] if bf16 else None, out_dtype=out_dtype)
        if not bf16:
            h = h + bias[1]
        if relu and i + 1 < len(fl):
            h = F.relu(h)
    return h[:, :layers[-1].out].float()


def build_fp8_tensor(layers, relu, dev):
    def weight(l, n, k):
        s = _scale(l.weight.abs().amax())
        return pad2(_codes(l.weight, s), n, k), s.reshape(())
    fl = _fp8_layers(layers, dev, 16, weight)
    return (lambda x: _run_fp8(x, fl, layers, relu, quantize_tensor, torch.bfloat16),
            "per-tensor dynamic input scale, weights re-quantized per tensor, torch._scaled_mm")


def build_fp8_row(layers, relu, dev):
    notes = []

    def weight(l, n, k):
        if l.granularity in ("tensor", "channel"):
            codes, s = l.codes, l.scale.reshape(-1).expand(l.out)
        else:  # 128x128 blocks (or unquantized): re-quantized per channel
            notes.append("re-quantized per channel")
            s = _scale(l.weight.abs().amax(dim=1))
            codes = _codes(l.weight, s[:, None])
        return pad2(codes.view(torch.uint8), n, k).view(codes.dtype), pad2(s[None, :].float(), 1, n, 1.0)
    fl = _fp8_layers(layers, dev, 16, weight)
    note = "per-row dynamic input scales, per-channel weight scales, torch._scaled_mm rowwise"
    return (lambda x: _run_fp8(x, fl, layers, relu, quantize_rows, torch.bfloat16),
            note + ("; weights " + notes[0] if notes else ""))


def build_fp8_1x128(layers, relu, dev):
    if dev.type != "cuda":
        raise NotOffered("blockwise torch._scaled_mm is CUDA-only")
    return build_blockwise(layers, relu, dev, torch.cuda.synchronize)


def build_blockwise(layers, relu, dev, synchronize):
    def weight(l, n, k):
        groups = k // GROUP
        if l.granularity == "block":  # (1x128, 128x128): scale_b [K/128, N/128]
            s = pad2(l.scale.t().contiguous(), groups, math.ceil(n / GROUP), 1.0)
            return pad2(l.codes.view(torch.uint8), n, k).view(l.codes.dtype), s.contiguous()
        if l.granularity in ("tensor", "channel"):  # (1x128, 1x128): scale_b [K/128, N]
            codes, s = l.codes, l.scale.reshape(-1).expand(l.out)
        else:
            s = _scale(l.weight.abs().amax(dim=1))
            codes = _codes(l.weight, s[:, None])
        sb = pad2(s[None, :].float(), 1, n, 1.0).expand(groups, n).contiguous()
        return pad2(codes.view(torch.uint8), n, k).view(codes.dtype), sb

    fl = _fp8_layers(layers, dev, GROUP, weight)
    if any(n % GROUP for _, n, *_ in fl[:-1]):
        raise NotOffered("a hidden width is not a multiple of 128 (the next layer's 1x128 groups)")
    # Which output type and scale layouts this PyTorch and cuBLASLt take (FP32 layer outputs are the
    # contract's; the scales may have to be outer-dim-major): the first combination that runs and
    # gives the contract's logits on a probe batch.
    probe = torch.rand(64, layers[0].inp, device=dev)

    def outer_major(t):
        return t.t().contiguous().t()

    def quantize_outer(h):
        q, sa = quantize_1x128(h)
        return q, outer_major(sa)
    tried = []
    for out_dtype in (torch.float32, torch.bfloat16):
        for a_layout, quantize in (("row-major", quantize_1x128), ("outer-dim-major", quantize_outer)):
            for b_layout in ("row-major", "outer-dim-major"):
                fl_b = fl if b_layout == "row-major" else [(k, n, b, outer_major(sb), bias) for k, n, b, sb, bias in fl]
                what = f"{str(out_dtype).replace('torch.', '')} out, A scales {a_layout}, B scales {b_layout}"
                try:
                    y = _run_fp8(probe, fl_b, layers, relu, quantize, out_dtype)
                    synchronize()
                except RuntimeError as e:
                    tried.append(f"{what}: {str(e).splitlines()[0][:160]}")
                    continue
                ref = contract_forward(layers, relu, probe, out_dtype).double()
                err = (y.double() - ref).abs().max().item() / (ref.abs().max().item() or 1.0)
                if not err <= 1e-2:
                    tried.append(f"{what}: runs but misses the contract (check_rel_err {err:.2e})")
                    continue
                note = f"1x128 dynamic input scales, weight scales as blocks, torch._scaled_mm blockwise ({what})"
                def forward(x, fl_b=fl_b, quantize=quantize, out_dtype=out_dtype):
                    return _run_fp8(x, fl_b, layers, relu, quantize, out_dtype)
                forward.layer_output_dtype = out_dtype  # what its reference rounds to
                return forward, note
    raise NotOffered("; ".join(tried))


VARIANTS = {"bf16": build_bf16, "fp8_tensor": build_fp8_tensor, "fp8_row": build_fp8_row,
            "fp8_1x128": build_fp8_1x128}
CONTRACT_VARIANTS = {"fp8_1x128"}


# ---------------------------------------------------------------------------------------------
# Timing

SPIN_CYCLES = 100_000  # ~50 us at Hopper's clocks, as fp8_gemm_bench's 50 us spin


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def time_graph(fn, iters, warmup, reps):
    """Median us per forward of `reps` forwards captured in one graph, and that graph's output."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture stream, as torch.cuda.graphs asks
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            out = fn()
    out.fill_(math.nan)  # poisoned: the first replay must write every element
    g.replay()
    torch.cuda.synchronize()
    first = out.clone()
    times = []
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for i in range(warmup + iters):
        torch.cuda._sleep(SPIN_CYCLES)
        begin.record()
        g.replay()
        end.record()
        end.synchronize()
        if i >= warmup:
            times.append(begin.elapsed_time(end) * 1000.0 / reps)
    return median(times), first


def time_eager(fn, iters, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return median(times)


# ---------------------------------------------------------------------------------------------

def parse_batches(text):
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batches: {text!r} is not a comma-separated list of integers")
    if not batches or any(b < 1 for b in batches):
        raise argparse.ArgumentTypeError("--batches: give one or more batch sizes >= 1")
    return batches


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", default="models/fashion_mlp/1/model.safetensors")
    ap.add_argument("--random_model", metavar="WIDTHS",
                    help="instead of --model: a model of these widths (e.g. 4096,16384,4096) with random "
                         "weights quantized to E4M3 per --granularity")
    ap.add_argument("--granularity", default="channel", choices=["tensor", "channel", "block"],
                    help="the random model's weight scales (default channel)")
    ap.add_argument("--write_model", metavar="PATH",
                    help="write the random model here (fp8serve.mlp.v1), so that fp8_gemm_bench --model=PATH times ours on it")
    ap.add_argument("--batches", type=parse_batches, default=[64, 1, 1024, 16384],
                    help="comma-separated batch sizes (default 64,1,1024,16384: 64, the target's, first)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--back_to_back", type=int, default=16, help="forwards per graph for the back-to-back rows (0: none)")
    ap.add_argument("--contract_tol", type=float, default=1e-2,
                    help="largest check_rel_err of the contract variant (default 1e-2)")
    ap.add_argument("--loose_tol", type=float, default=0.25,
                    help="largest check_rel_err of the other variants (default 0.25; measured 1-4e-2 on the bundled model)")
    ap.add_argument("--csv", help="write rows in fp8_gemm_bench's CSV format here")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: check the variants and time them eagerly (no graphs), for a dry run")
    ap.add_argument("--seed", type=int, default=20261208)
    args = ap.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # a run cut short by a timeout keeps its lines
    variants = [v for v in args.variants.split(",") if v]
    if unknown := [v for v in variants if v not in VARIANTS]:
        ap.error(f"--variants: unknown {', '.join(unknown)}")
    if args.iters < 1 or args.warmup < 0 or args.back_to_back < 0:
        ap.error("--iters must be >= 1, --warmup and --back_to_back >= 0")
    if args.write_model and not args.random_model:
        ap.error("--write_model writes the --random_model: give its widths")
    if args.random_model:
        try:
            args.widths = [int(w) for w in args.random_model.split(",")]
        except ValueError:
            ap.error(f"--random_model: {args.random_model!r} is not a comma-separated list of widths")
        if len(args.widths) < 2 or any(w < 1 for w in args.widths):
            ap.error("--random_model: give at least two widths >= 1 (input, ..., output)")
    if torch is None:
        print("torch_forward_bench: PyTorch is not installed (import torch failed)", file=sys.stderr)
        return 1
    if args.device == "cuda" and not torch.cuda.is_available():
        print("torch_forward_bench: no CUDA device (torch.cuda.is_available() is False); "
              "--device cpu checks the variants without timing graphs", file=sys.stderr)
        return 1
    try:
        if args.random_model:
            tensors, meta = random_model(args.widths, args.granularity, args.seed)
            source = f"random {meta['arch']} ({args.granularity} scales)"
            if args.write_model:
                write_safetensors(args.write_model, tensors, meta)
                source += f", written to {args.write_model}"
            layers, relu = model_from_tensors(tensors, meta, source)
        else:
            layers, relu = load_model(args.model)
            source = args.model
    except (OSError, ValueError, KeyError) as e:
        print(f"torch_forward_bench: {e}", file=sys.stderr)
        return 1

    dev = torch.device(args.device)
    torch.manual_seed(args.seed)
    arch = " x ".join(str(l.out) for l in layers)
    where = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU"
    print(f"PyTorch {torch.__version__} on {where}: {source} ({layers[0].inp} -> {arch}, weights "
          f"{', '.join(sorted({l.granularity for l in layers}))})")
    if dev.type == "cuda":
        print("CUDA graph replays, L2 warm, a GPU spin ahead of each; median of "
              f"{args.iters}; back to back: {args.back_to_back} forwards per graph")

    built = {}
    for v in variants:
        try:
            built[v] = VARIANTS[v](layers, relu, dev)
            print(f"  {v:<11} {built[v][1]}")
        except NotOffered as e:
            print(f"  {v:<11} not offered here: {e}")

    flops = sum(2 * l.inp * l.out for l in layers)
    failed, not_run = [], []

    # CSV rows are written (and flushed) as they are measured, so that a run cut short by its
    # timeout still leaves what it measured
    csv_file = open(args.csv, "w") if args.csv else None
    if csv_file:
        csv_file.write("section,m,n,k,variant,us,tflops,gbps,speedup_vs_cublaslt_tensor,check_rel_err,config\n")

    def row(batch, variant, us, err, config, weight_bytes):
        io = batch * (layers[0].inp + layers[-1].out) * 4
        tflops = batch * flops / us / 1e6 if us > 0 else math.nan
        gbps = (weight_bytes + io) / us / 1e3 if us > 0 else math.nan
        if csv_file:
            csv_file.write(f"forward,{batch},{layers[-1].out},{layers[0].inp},{variant},{us:.3f},{tflops:.3f},"
                           f"{gbps:.3f},nan,{err:.3e},\"PyTorch {torch.__version__}: {config}\"\n")
            csv_file.flush()

    floor = math.nan
    if dev.type == "cuda":
        t = torch.zeros(1, device=dev)
        floor, _ = time_graph(lambda: t.add_(1), args.iters, args.warmup, 1)
        row(1, "torch/one_small_kernel", floor, math.nan, "a graph of one 1-element add_", 0)

    print(f"\n{'batch':>7} {'variant':<11} {'us':>9} {'b2b us':>9} {'check_rel_err':>14}  result")
    for batch in args.batches:
        x = torch.rand(batch, layers[0].inp, device=dev)
        refs = {}
        for v, (fn, note) in built.items():
            rounding = getattr(fn, "layer_output_dtype", None)
            if rounding not in refs:
                refs[rounding] = contract_forward(layers, relu, x, rounding).double()
            ref = refs[rounding]
            ref_max = ref.abs().max().item() or 1.0
            tol = args.contract_tol if v in CONTRACT_VARIANTS else args.loose_tol
            wbytes = sum(l.inp * l.out for l in layers) * (2 if v == "bf16" else 1)
            try:
                y = fn(x)
                err = ((y.double() - ref).abs().max().item()) / ref_max
                b2b = math.nan
                if dev.type == "cuda":
                    us, from_graph = time_graph(lambda: fn(x), args.iters, args.warmup, 1)
                    if not torch.equal(from_graph, y):  # the graph must give the eager bits
                        d = (from_graph.double() - y.double()).abs().max().item() / ref_max
                        err = max(err, d) if math.isfinite(d) else math.inf
                    if args.back_to_back > 1:
                        b2b, _ = time_graph(lambda: fn(x), args.iters, args.warmup, args.back_to_back)
                else:
                    us = time_eager(lambda: fn(x), args.iters, args.warmup)
            except RuntimeError as e:  # e.g. cuBLASLt offers no algorithm at this batch
                print(f"{batch:>7} {v:<11} {'-':>9} {'-':>9} {'-':>14}  did not run: {str(e).splitlines()[0]}")
                not_run.append(f"{v} at batch {batch}")
                continue
            ok = err <= tol  # (False for NaN)
            if not ok:
                failed.append(f"{v} at batch {batch}: check_rel_err {err:.3e} > {tol}")
            print(f"{batch:>7} {v:<11} {us:>9.1f} {b2b:>9.1f} {err:>14.3e}  "
                  f"{'ok' if ok else 'CHECK MISMATCH'} (tolerance {tol})")
            row(batch, f"torch/{v}", us, err, note, wbytes)
            if math.isfinite(b2b):
                row(batch, f"torch/{v}/back_to_back", b2b, err, note, wbytes)
    if math.isfinite(floor):
        print(f"floor: a graph of one small kernel, timed the same way: {floor:.1f} us")

    if csv_file:
        csv_file.close()
    if not_run:
        print("torch_forward_bench: did not run (PyTorch refused them; not counted): " + ", ".join(not_run))
    if failed:
        print("torch_forward_bench: CHECK FAILED: " + "; ".join(failed))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
