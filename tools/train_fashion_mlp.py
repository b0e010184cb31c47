#!/usr/bin/env python3
"""Train an FP32 ReLU MLP on Fashion-MNIST and save it for fp8serve.

This is the reference trainer for the models that fp8serve later quantizes to
FP8. It uses only numpy (float32, mini-batches) and safetensors, so it runs on
a small CPU box without a deep-learning framework.

Input preprocessing (the contract with the server's clients)
    x = pixel_uint8 / 255.0 as float32, image flattened row-major to 784
    values. There is deliberately NO mean/std normalization: clients send x in
    [0, 1], so the model must be trained on exactly that range.

Model
    Linear layers with ReLU between hidden layers; the last layer yields
    logits (no softmax in the file). He-normal weight init, zero biases.

Training
    Softmax cross-entropy, Adam with decoupled weight decay (AdamW; decay
    applied to weights only, not biases), learning rate warmed up linearly over
    the first epoch and then cosine-decayed to zero, and inverted dropout on
    hidden activations during training only (the saved model is a plain MLP).
    Without dropout a plain MLP overfits and stalls near 0.90; random
    flips/shifts were tried and hurt an MLP here. All 60,000 training
    images are used (nothing held out); the 10,000 test images are evaluated
    after every epoch. BLAS is pinned to one thread, so a fixed --seed gives
    bit-identical weights on a given numpy/OpenBLAS build.

Output (safetensors, written with safetensors.numpy.save_file)
    layers.{i}.weight  F32 [out, in]   (PyTorch nn.Linear convention)
    layers.{i}.bias    F32 [out]
    for i = 0..L-1, plus string metadata: format="fp8serve.mlp.v1",
    activation, dataset, input_scaling, arch, test_accuracy, seed (and the
    training hyperparameters, for provenance).

After saving, the file is reloaded and the FP32 test accuracy is recomputed
and checked against the value training reported.

Example
    .venv/bin/python tools/train_fashion_mlp.py --arch 784-256-10 \\
        --out tools/trained/fashion_mlp_784_256_10.f32.safetensors
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import sys
import time

# Single-threaded BLAS, set before numpy loads it. Multi-threaded OpenBLAS
# splits float32 sums differently per thread count, so results (and the saved
# weights) would depend on the machine; one thread keeps a given --seed
# reproducible. On a small, busy CPU box it is also no slower in practice,
# since BLAS worker threads that spin-wait suffer badly under contention.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402  (must follow the thread settings above)
from safetensors.numpy import load_file, save_file

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
FORMAT_TAG = "fp8serve.mlp.v1"
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dims
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dim
INPUT_DIM = 784
NUM_CLASSES = 10


# --------------------------------------------------------------------------
# Data loading (IDX format, gzip-compressed)
# --------------------------------------------------------------------------

def _read_idx(path: str, expected_magic: int, expected_ndim: int) -> np.ndarray:
    """Parse one gzip'd IDX file into a uint8 array, validating the header."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        sys.exit(f"error: data file not found: {path} "
                 "(install Debian's dataset-fashion-mnist or pass --data-dir)")
    except OSError as e:
        sys.exit(f"error: cannot read {path} as gzip: {e}")

    header_len = 4 + 4 * expected_ndim
    if len(raw) < header_len:
        sys.exit(f"error: {path}: truncated header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[0:4], "big")
    if magic != expected_magic:
        sys.exit(f"error: {path}: bad IDX magic {magic}, expected {expected_magic}")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(expected_ndim)]
    expected_bytes = header_len + math.prod(dims)
    if len(raw) != expected_bytes:
        sys.exit(f"error: {path}: size mismatch: header dims {dims} imply "
                 f"{expected_bytes} bytes, file has {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


def load_split(data_dir: str, prefix: str, expected_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (x float32 [N, 784] in [0, 1], y int64 [N]) for 'train' or 't10k'."""
    images = _read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"),
                       IDX_IMAGES_MAGIC, 3)
    labels = _read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"),
                       IDX_LABELS_MAGIC, 1)
    if images.shape != (expected_count, 28, 28):
        sys.exit(f"error: {prefix} images have shape {images.shape}, "
                 f"expected ({expected_count}, 28, 28)")
    if labels.shape != (expected_count,):
        sys.exit(f"error: {prefix} labels have shape {labels.shape}, expected ({expected_count},)")
    if labels.max() >= NUM_CLASSES:
        sys.exit(f"error: {prefix} labels contain value {labels.max()} >= {NUM_CLASSES}")
    # The serving contract: pixel/255 in float32, row-major flatten, nothing else.
    x = images.reshape(expected_count, INPUT_DIM).astype(np.float32) / np.float32(255.0)
    return x, labels.astype(np.int64)


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

def parse_arch(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split("-")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--arch must be dash-separated integers, got {text!r}")
    if len(widths) < 2:
        raise argparse.ArgumentTypeError("--arch needs at least an input and an output width")
    if widths[0] != INPUT_DIM or widths[-1] != NUM_CLASSES:
        raise argparse.ArgumentTypeError(
            f"--arch must start with {INPUT_DIM} and end with {NUM_CLASSES}, got {text!r}")
    if any(w <= 0 for w in widths):
        raise argparse.ArgumentTypeError(f"--arch widths must be positive, got {text!r}")
    return widths


def init_params(widths: list[int], rng: np.random.Generator) -> list[list[np.ndarray]]:
    """He-normal weights (std = sqrt(2 / fan_in), suited to ReLU), zero biases."""
    params = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        w = rng.standard_normal((fan_out, fan_in), dtype=np.float32) * np.float32(math.sqrt(2.0 / fan_in))
        b = np.zeros(fan_out, dtype=np.float32)
        params.append([w, b])
    return params


def forward(params, x: np.ndarray):
    """Inference: logits for a batch (no dropout)."""
    h = x
    last = len(params) - 1
    for i, (w, b) in enumerate(params):
        h = h @ w.T + b          # w is [out, in]; BLAS handles the transpose for free
        if i != last:
            np.maximum(h, 0.0, out=h)  # ReLU in place: the pre-activation is not needed
    return h


def forward_train(params, x: np.ndarray, dropout: float, rng: np.random.Generator):
    """Training forward pass with inverted dropout on hidden activations.

    Returns (logits, acts, masks): acts[i] is the input of layer i, and
    masks[i] (for i >= 1) is d acts[i] / d pre-activation of layer i-1, i.e.
    the ReLU derivative times the dropout keep-mask and its 1/(1-p) rescale.
    Inverted dropout keeps inference a plain MLP with no extra scaling.
    """
    acts, masks = [x], [None]
    h = x
    last = len(params) - 1
    keep = np.float32(1.0 - dropout)
    for i, (w, b) in enumerate(params):
        h = h @ w.T + b
        if i != last:
            mask = (h > 0).astype(np.float32)
            if dropout > 0:
                mask *= (rng.random(h.shape, dtype=np.float32) < keep)
                mask /= keep
            h *= mask
            acts.append(h)
            masks.append(mask)
    return h, acts, masks


def softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy loss and its gradient w.r.t. the logits."""
    z = logits - logits.max(axis=1, keepdims=True)  # shift for numerical stability
    exp_z = np.exp(z)
    sum_exp = exp_z.sum(axis=1, keepdims=True)
    n = logits.shape[0]
    rows = np.arange(n)
    loss = float(np.mean(np.log(sum_exp[:, 0]) - z[rows, y]))
    grad = exp_z / sum_exp
    grad[rows, y] -= 1.0
    grad /= np.float32(n)
    return loss, grad


def backward(params, acts, masks, dlogits: np.ndarray):
    """Gradients [[dW, db], ...] for the params, given dLoss/dlogits."""
    grads = [None] * len(params)
    delta = dlogits
    for i in range(len(params) - 1, -1, -1):
        w, _ = params[i]
        grads[i] = [delta.T @ acts[i], delta.sum(axis=0)]
        if i > 0:
            delta = delta @ w
            delta *= masks[i]  # back through dropout and the ReLU of layer i-1
    return grads


def count_correct(params, x: np.ndarray, y: np.ndarray, batch: int = 2000) -> int:
    """FP32 argmax accuracy (as a count), evaluated in fixed-size chunks."""
    correct = 0
    for start in range(0, x.shape[0], batch):
        logits = forward(params, x[start:start + batch])
        correct += int(np.sum(np.argmax(logits, axis=1) == y[start:start + batch]))
    return correct


# --------------------------------------------------------------------------
# Optimizer
# --------------------------------------------------------------------------

class AdamW:
    """Adam with bias correction and decoupled weight decay (Loshchilov & Hutter).

    Decay is applied only to weight matrices: biases hold few parameters, so
    decaying them adds little regularization and only biases the fit.
    """

    def __init__(self, params, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.weight_decay = weight_decay
        self.m = [[np.zeros_like(p) for p in layer] for layer in params]
        self.v = [[np.zeros_like(p) for p in layer] for layer in params]
        self.t = 0

    def step(self, params, grads, lr: float) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        # Fold both bias corrections into one step size (saves full-size temporaries);
        # this is the paper's "efficient" form, with eps applied to the uncorrected v.
        step = lr * math.sqrt(1.0 - b2 ** self.t) / (1.0 - b1 ** self.t)
        for layer_p, layer_g, layer_m, layer_v in zip(params, grads, self.m, self.v):
            for j, (p, g, m, v) in enumerate(zip(layer_p, layer_g, layer_m, layer_v)):
                m *= b1
                m += (1.0 - b1) * g
                v *= b2
                v += (1.0 - b2) * (g * g)
                if j == 0 and self.weight_decay:
                    p *= np.float32(1.0 - lr * self.weight_decay)
                p -= np.float32(step) * m / (np.sqrt(v) + np.float32(self.eps))


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warmup, then cosine decay to zero."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train an FP32 ReLU MLP on Fashion-MNIST (numpy only) and save it as "
                    "safetensors in the fp8serve.mlp.v1 layout. Inputs are pixel/255 in [0,1], "
                    "flattened row-major, with no mean/std normalization.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", type=parse_arch, default="784-256-10",
                   help="dash-separated layer widths; first must be 784, last 10 "
                        "(e.g. 784-256-10 or 784-512-256-10)")
    p.add_argument("--epochs", type=int, default=40, help="passes over the 60,000 training images")
    p.add_argument("--batch-size", type=int, default=128, help="mini-batch size")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="peak Adam learning rate (1-epoch linear warmup, then cosine decay to 0)")
    p.add_argument("--weight-decay", type=float, default=1e-4,
                   help="decoupled (AdamW) weight decay on weight matrices; 0 disables")
    p.add_argument("--dropout", type=float, default=0.2,
                   help="train-time dropout probability on hidden activations (0 disables)")
    p.add_argument("--seed", type=int, default=20240607,
                   help="RNG seed for init and shuffling (fixed default => deterministic run)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                   help="directory with the four gzip'd IDX files of Fashion-MNIST")
    p.add_argument("--out", required=True, metavar="PATH.safetensors",
                   help="output safetensors file")
    return p


def main(argv=None) -> int:
    args = build_arg_parser().parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        sys.exit("error: --epochs and --batch-size must be >= 1 and --lr > 0")
    if not 0.0 <= args.dropout < 1.0:
        sys.exit("error: --dropout must be in [0, 1)")
    widths = args.arch
    arch_str = "-".join(str(w) for w in widths)

    x_train, y_train = load_split(args.data_dir, "train", 60000)
    x_test, y_test = load_split(args.data_dir, "t10k", 10000)
    n_train, n_test = x_train.shape[0], x_test.shape[0]

    rng = np.random.default_rng(args.seed)
    params = init_params(widths, rng)
    opt = AdamW(params, weight_decay=args.weight_decay)

    steps_per_epoch = math.ceil(n_train / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = min(steps_per_epoch, total_steps)

    print(f"arch {arch_str}  epochs {args.epochs}  batch {args.batch_size}  lr {args.lr:g}  "
          f"wd {args.weight_decay:g}  dropout {args.dropout:g}  seed {args.seed}  train {n_train}  test {n_test}", flush=True)

    t_start = time.perf_counter()
    step = 0
    test_correct = 0
    for epoch in range(1, args.epochs + 1):
        t_epoch = time.perf_counter()
        order = rng.permutation(n_train)
        loss_sum = 0.0
        train_correct = 0
        for start in range(0, n_train, args.batch_size):
            idx = order[start:start + args.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            logits, acts, masks = forward_train(params, xb, args.dropout, rng)
            loss, dlogits = softmax_xent(logits, yb)
            # Running train accuracy/loss over the epoch (weights change along the way,
            # but it avoids a second full pass over 60k images).
            loss_sum += loss * len(idx)
            train_correct += int(np.sum(np.argmax(logits, axis=1) == yb))
            grads = backward(params, acts, masks, dlogits)
            opt.step(params, grads, lr_at(step, total_steps, warmup_steps, args.lr))
            step += 1
        test_correct = count_correct(params, x_test, y_test)
        print(f"epoch {epoch:3d}/{args.epochs}  loss {loss_sum / n_train:.4f}  "
              f"train_acc {train_correct / n_train:.4f}  test_acc {test_correct / n_test:.4f}  "
              f"{time.perf_counter() - t_epoch:6.1f}s", flush=True)
    train_seconds = time.perf_counter() - t_start
    test_acc = test_correct / n_test
    print(f"trained in {train_seconds:.1f}s; final FP32 test accuracy {test_acc:.4f}", flush=True)

    tensors = {}
    for i, (w, b) in enumerate(params):
        tensors[f"layers.{i}.weight"] = np.ascontiguousarray(w, dtype=np.float32)
        tensors[f"layers.{i}.bias"] = np.ascontiguousarray(b, dtype=np.float32)
    metadata = {
        "format": FORMAT_TAG,
        "activation": "relu",
        "dataset": "fashion-mnist",
        "input_scaling": "pixel/255",
        "arch": arch_str,
        "test_accuracy": f"{test_acc:.4f}",
        "seed": str(args.seed),
        "epochs": str(args.epochs),
        "batch_size": str(args.batch_size),
        "lr": f"{args.lr:g}",
        "weight_decay": f"{args.weight_decay:g}",
        "dropout": f"{args.dropout:g}",
        "optimizer": "adamw, 1-epoch linear warmup, cosine decay",
    }
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, args.out, metadata=metadata)

    # Self-check: the file on disk must reproduce exactly the accuracy we report.
    loaded = load_file(args.out)
    n_layers = len(widths) - 1
    expected_names = {f"layers.{i}.{k}" for i in range(n_layers) for k in ("weight", "bias")}
    assert set(loaded) == expected_names, f"unexpected tensor names: {sorted(loaded)}"
    reloaded = [[loaded[f"layers.{i}.weight"], loaded[f"layers.{i}.bias"]] for i in range(n_layers)]
    for i, (w, b) in enumerate(reloaded):
        assert w.dtype == np.float32 and w.shape == (widths[i + 1], widths[i]), (i, w.dtype, w.shape)
        assert b.dtype == np.float32 and b.shape == (widths[i + 1],), (i, b.dtype, b.shape)
    reloaded_correct = count_correct(reloaded, x_test, y_test)
    assert reloaded_correct == test_correct, (
        f"self-check failed: reloaded model gets {reloaded_correct}/{n_test}, "
        f"training reported {test_correct}/{n_test}")
    print(f"saved {args.out}; self-check OK (reloaded FP32 test accuracy "
          f"{reloaded_correct / n_test:.4f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
