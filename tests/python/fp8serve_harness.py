"""Shared helpers for the client-compatibility tests (test_tritonclient.py, test_perf_analyzer.py).

- a model writer for the fp8serve safetensors format (written by hand: safetensors.numpy has no FP8),
- a numpy implementation of the numeric contract (README "Numeric contract"),
- the Fashion-MNIST test set reader,
- FP8Serve: runs the real server binary on 127.0.0.1:0 and tears it down.
"""
import gzip
import json
import os
import pathlib
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import ml_dtypes
import numpy as np

ROOT = pathlib.Path(os.environ.get("FP8SERVE_SOURCE_DIR") or pathlib.Path(__file__).resolve().parents[2])
CONFIG = ROOT / "models" / "fashion_mlp" / "config.pbtxt"
BUNDLED_WEIGHTS = ROOT / "models" / "fashion_mlp" / "1" / "model.safetensors"
FASHION = pathlib.Path("/usr/share/datasets/fashion-mnist")
E4M3 = ml_dtypes.float8_e4m3fn
E4M3_MAX = 448.0
GROUP = 128


# ---------------------------------------------------------------------------------------------- model

def write_safetensors(path, tensors, metadata):
    """tensors: name -> (dtype string, numpy array). Layout: u64 LE header length, JSON, data."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, (dtype, arr) in tensors.items():
        data = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hdr = json.dumps(header).encode()
    hdr += b" " * (-len(hdr) % 8)  # align the data section
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)) + hdr + b"".join(blobs))


def read_mlp(path):
    """Reads an fp8serve model with E4M3 weights and per-channel scales into read/write_mlp's layout."""
    raw = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]

    def tensor(name, dtype):
        e = header[name]
        b, end = e["data_offsets"]
        return np.frombuffer(data[b:end], dtype=dtype).reshape(e["shape"])

    layers, i = [], 0
    while f"layers.{i}.weight" in header:
        assert header[f"layers.{i}.weight"]["dtype"] == "F8_E4M3", "read_mlp reads E4M3 models"
        layers.append((tensor(f"layers.{i}.weight", np.uint8).view(E4M3), tensor(f"layers.{i}.weight_scale", np.float32),
                       tensor(f"layers.{i}.bias", np.float32)))
        i += 1
    return layers


def random_mlp(dims, seed):
    """A random MLP with E4M3 weights and per-channel scales: a list of (q_w [out,in], s_w [out], bias)."""
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        w = rng.normal(0, np.sqrt(2.0 / fan_in), (fan_out, fan_in)).astype(np.float32)
        s_w = (np.abs(w).max(axis=1) / E4M3_MAX).astype(np.float32)
        q_w = np.clip(w / s_w[:, None], -E4M3_MAX, E4M3_MAX).astype(E4M3)
        bias = rng.normal(0, 0.05, fan_out).astype(np.float32)
        layers.append((q_w, s_w, bias))
    return layers


def write_mlp(path, layers):
    tensors = {}
    for i, (q_w, s_w, bias) in enumerate(layers):
        tensors[f"layers.{i}.weight"] = ("F8_E4M3", q_w.view(np.uint8))
        tensors[f"layers.{i}.weight_scale"] = ("F32", s_w)
        tensors[f"layers.{i}.bias"] = ("F32", bias)
    write_safetensors(path, tensors, {"format": "fp8serve.mlp.v1", "activation": "relu", "source": "pytest random"})


def make_repository(root, models):
    """models: name -> layers. Each gets the bundled config.pbtxt (renamed) and version 1."""
    root = pathlib.Path(root)
    text = CONFIG.read_text()
    for name, layers in models.items():
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        cfg = text.replace('name: "fashion_mlp"', f'name: "{name}"')
        # The config may declare the architecture (checked at load): make it describe these weights.
        cfg = re.sub(r'(key:\s*"num_layers"\s*value:\s*\{\s*string_value:\s*")\d+"', rf'\g<1>{len(layers)}"', cfg)
        (root / name / "config.pbtxt").write_text(cfg)
        write_mlp(root / name / "1" / "model.safetensors", layers)
    return root


# -------------------------------------------------------------------------------------------- numerics

def quantize_activations(x):
    """1x128 E4M3: per row and 128-column group, s = amax/448 (1 if not > 0), q = E4M3(x/s)."""
    m, k = x.shape
    groups = -(-k // GROUP)
    q = np.empty((m, k), np.float32)
    s = np.empty((m, groups), np.float32)
    for g in range(groups):
        xg = x[:, g * GROUP:(g + 1) * GROUP]
        amax = np.nanmax(np.abs(xg), axis=1)
        sg = np.where(amax > 0, amax / np.float32(E4M3_MAX), np.float32(1)).astype(np.float32)
        q[:, g * GROUP:(g + 1) * GROUP] = np.clip(xg / sg[:, None], -E4M3_MAX, E4M3_MAX).astype(E4M3).astype(np.float32)
        s[:, g] = sg
    return q, s


def reference_forward(layers, x):
    """The numeric contract in numpy: FP32 partial sums per 128-wide K group, promoted with both scales."""
    y = np.asarray(x, np.float32)
    for i, (q_w, s_w, bias) in enumerate(layers):
        q_x, s_x = quantize_activations(y)
        w = q_w.astype(np.float32)
        acc = np.zeros((y.shape[0], w.shape[0]), np.float32)
        for g in range(s_x.shape[1]):
            cols = slice(g * GROUP, (g + 1) * GROUP)
            acc += (s_x[:, g:g + 1] * s_w[None, :]) * (q_x[:, cols] @ w[:, cols].T)
        y = acc + bias
        if i + 1 < len(layers):
            y = np.where(y < 0, np.float32(0), y)
    return y


def assert_logits_close(got, want, what=""):
    """Tolerance for FP32 summation order (which can move an activation across an E4M3 rounding
    boundary in the next layer): per-row error <= 2% of the row's largest logit; argmax on >= 99%."""
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.isfinite(got).all()
    scale = np.abs(want).max(axis=1, keepdims=True) + 1e-3
    err = (np.abs(got - want) / scale).max()
    assert err <= 0.02, f"{what}: max row-relative error {err:.4f}"
    agree = (got.argmax(1) == want.argmax(1)).mean()
    assert agree >= 0.99, f"{what}: argmax agrees on only {agree:.2%} of rows"


# --------------------------------------------------------------------------------------------- dataset

def _idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_test(n=None):
    """Fashion-MNIST test images as FP32 [n, 784] in [0, 1] (pixel / 255), and labels."""
    images = _idx(FASHION / "t10k-images-idx3-ubyte.gz")[:n].reshape(-1, 784).astype(np.float32) / 255
    labels = _idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:n].astype(np.int64)
    return images, labels


# ---------------------------------------------------------------------------------------------- server

def server_binary():
    path = os.environ.get("FP8SERVE_BIN") or str(ROOT / "build" / "server" / "fp8serve")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"fp8serve binary not found or not executable: {path} (set FP8SERVE_BIN)")
    return path


class FP8Serve:
    """The real server on 127.0.0.1:<ephemeral>; `url` is host:port for tritonclient/perf_analyzer."""

    def __init__(self, workdir, repositories, *args, backend="cpu", startup_timeout=30):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "fp8serve.log"
        port_file = self.workdir / "port"
        port_file.unlink(missing_ok=True)
        cmd = [server_binary(), "--grpc-address", "127.0.0.1:0", "--port-file", str(port_file),
               "--backend", backend, *[f"--model-repository={r}" for r in repositories], *args]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self.port = self._wait_port(port_file, startup_timeout)
            self.url = f"127.0.0.1:{self.port}"
            self._wait_ready(startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_port(self, port_file, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fp8serve exited with {self.proc.returncode} before serving:\n{self.log()}")
            text = port_file.read_text().strip() if port_file.exists() else ""
            if text.isdigit():
                return int(text)
            time.sleep(0.05)
        raise RuntimeError(f"fp8serve wrote no port file within {timeout}s:\n{self.log()}")

    def _wait_ready(self, timeout):
        import tritonclient.grpc as grpcclient
        deadline = time.monotonic() + timeout
        with grpcclient.InferenceServerClient(self.url) as c:
            while time.monotonic() < deadline:
                try:
                    if c.is_server_ready():
                        return
                except Exception:
                    pass
                if self.proc.poll() is not None or "failed to load" in self.log():
                    break
                time.sleep(0.05)
        raise RuntimeError(f"fp8serve not ready (waited at most {timeout}s):\n{self.log()}")

    def log(self):
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
