"""Numpy forward of an fp8serve MLP (README "Numeric contract"), for serving it through real Triton.

- load_mlp(path): parses the safetensors file by hand (8-byte LE header length, JSON header, raw
  data; safetensors' numpy loader has no F8), dequantizes the E4M3 weights once:
  W = fp8 x scale (per tensor [], per channel [out] or per 128x128 block).
- forward(layers, x): per layer, quantize-dequantize the activations to E4M3 with one scale per row
  and 128-column group (scale = amax/448, or 1 when amax is not positive), then x @ W.T + bias,
  ReLU on hidden layers. Same values as fp8serve's fast CPU path; only FP32 rounding differs.

Needs numpy and ml_dtypes only, so it runs in either venv.
"""
import json
import struct

import ml_dtypes
import numpy as np

E4M3 = ml_dtypes.float8_e4m3fn
E4M3_MAX = np.float32(448.0)
GROUP = 128
_DTYPES = {"F8_E4M3": E4M3, "F8_E5M2": ml_dtypes.float8_e5m2, "F32": np.float32, "F16": np.float16,
           "BF16": ml_dtypes.bfloat16}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = _DTYPES[info["dtype"]]
        lo, hi = info["data_offsets"]
        out[name] = np.frombuffer(data[lo:hi], dtype=dt).reshape(info["shape"]).copy()
    return out, header.get("__metadata__", {})


def _dequantize(q, scale):
    w = q.astype(np.float32)
    scale = np.asarray(scale, np.float32)
    out_f, in_f = w.shape
    if scale.ndim == 0 or scale.size == 1:
        return w * scale.reshape(())
    if scale.ndim == 1:
        return w * scale[:, None]
    # 128x128 blocks: [ceil(out/128), ceil(in/128)]
    full = np.repeat(np.repeat(scale, GROUP, axis=0), GROUP, axis=1)[:out_f, :in_f]
    return w * full


def load_mlp(path):
    """Returns [(W_dequantized [out,in] float32, bias [out] float32), ...]."""
    t, _ = read_safetensors(path)
    layers, i = [], 0
    while f"layers.{i}.weight" in t:
        q = t[f"layers.{i}.weight"]
        s = t.get(f"layers.{i}.weight_scale", np.float32(1.0))
        b = t.get(f"layers.{i}.bias")
        w = _dequantize(q, s)
        if b is None:
            b = np.zeros(w.shape[0], np.float32)
        layers.append((np.ascontiguousarray(w.T), b.astype(np.float32)))  # keep W.T for x @ W.T
        i += 1
    if not layers:
        raise ValueError(f"{path}: no layers.0.weight")
    return layers


def quant_dequant_1x128(x):
    """E4M3 quantize-dequantize with one scale per row and 128-column group (NaN ignored in amax)."""
    x = np.asarray(x, np.float32)
    rows, cols = x.shape
    groups = -(-cols // GROUP)
    pad = groups * GROUP - cols
    xp = np.pad(x, ((0, 0), (0, pad))) if pad else x
    g = xp.reshape(rows, groups, GROUP)
    amax = np.nanmax(np.abs(g), axis=2, keepdims=True) if np.isnan(g).any() else np.abs(g).max(axis=2, keepdims=True)
    s = amax / E4M3_MAX
    s = np.where(s > 0, s, np.float32(1.0)).astype(np.float32)
    q = np.clip(g / s, -E4M3_MAX, E4M3_MAX).astype(E4M3)  # saturating, round to nearest even
    y = (q.astype(np.float32) * s).reshape(rows, groups * GROUP)
    return y[:, :cols] if pad else y


def forward(layers, x):
    x = np.asarray(x, np.float32)
    for i, (wt, b) in enumerate(layers):
        x = quant_dequant_1x128(x) @ wt + b
        if i + 1 < len(layers):
            x = np.maximum(x, np.float32(0.0))  # ReLU; np.maximum keeps NaN, as the contract does
    return x.astype(np.float32, copy=False)
