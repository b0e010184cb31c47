#!/usr/bin/env python3
"""Checks that a KServe-v2 gRPC server (fp8serve, or the PyTriton server) classifies Fashion-MNIST
test images like the numpy forward of fashion_numpy_forward.py.

  .venv/bin/python tools/bench/check_numpy_forward.py --url 127.0.0.1:PORT [--n 1000] [--min-agree 0.995]

Sends the first --n test images (pixel/255) in requests of --batch rows, compares the argmax of the
served logits with the numpy forward's; prints agreement, accuracy of each and the largest logit
difference; exits 1 when agreement < --min-agree.
"""
import argparse
import gzip
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import fashion_numpy_forward as fwd  # noqa: E402

FASHION = pathlib.Path("/usr/share/datasets/fashion-mnist")


def load_test(n):
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 784)[:n].astype(np.float32) / np.float32(255)
    with gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read()[8:], np.uint8)[:n]
    return x, y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model-name", default="fashion_mlp")
    ap.add_argument("--model", type=pathlib.Path, default=HERE.parents[1] / "models/fashion_mlp/1/model.safetensors")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--min-agree", type=float, default=0.995)
    ap.add_argument("--label", default="server")
    args = ap.parse_args()

    import tritonclient.grpc as grpcclient

    x, y = load_test(args.n)
    ref = fwd.forward(fwd.load_mlp(args.model), x)
    client = grpcclient.InferenceServerClient(args.url)
    served = []
    for lo in range(0, len(x), args.batch):
        chunk = x[lo:lo + args.batch]
        inp = grpcclient.InferInput("input", list(chunk.shape), "FP32")
        inp.set_data_from_numpy(np.ascontiguousarray(chunk))
        res = client.infer(args.model_name, [inp], outputs=[grpcclient.InferRequestedOutput("logits")])
        served.append(res.as_numpy("logits"))
    served = np.concatenate(served)
    if served.shape != ref.shape:
        print(f"{args.label}: logits shape {served.shape}, expected {ref.shape}")
        return 1
    agree = float((served.argmax(1) == ref.argmax(1)).mean())
    diff = float(np.abs(served - ref).max())
    print(f"{args.label}: {len(x)} images: argmax agreement with numpy forward {agree:.2%} "
          f"(need >= {args.min_agree:.1%}); accuracy served {float((served.argmax(1) == y).mean()):.2%}, "
          f"numpy {float((ref.argmax(1) == y).mean()):.2%}; max |logit diff| {diff:.3g}")
    return 0 if agree >= args.min_agree else 1


if __name__ == "__main__":
    sys.exit(main())
