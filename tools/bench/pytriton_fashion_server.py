#!/usr/bin/env python3
"""Serves an fp8serve MLP (default: models/fashion_mlp) through real NVIDIA Triton, via PyTriton.

The forward is numpy (fashion_numpy_forward.py): FP8 weights dequantized once, activations
quantize-dequantized to E4M3 1x128 per layer, matmul + bias + ReLU. The model is bound with the same
name, tensor names/shapes and batching as fp8serve's config: input "input" FP32 [-1,784], output
"logits" FP32 [-1,10], max_batch_size 1024, dynamic batching with --max-queue-delay-us.

Run it with the PyTriton venv (tools/bench/serving_bench.sh creates build-bench/venv-pytriton):
  build-bench/venv-pytriton/bin/python tools/bench/pytriton_fashion_server.py --grpc-port 8101
Prints "READY grpc=127.0.0.1:PORT ..." on stdout once Triton serves the model; stops on SIGINT/SIGTERM.
"""
import argparse
import logging
import pathlib
import signal
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import fashion_numpy_forward as fwd  # noqa: E402


def _use_this_interpreters_libpython():
    """Triton's Python-backend stub links libpython3.X.so.1.0 dynamically and then runs with this venv's
    stdlib. If the loader finds another build of the same minor version first (here: Debian's 3.11.2
    in /lib while the venv is pyenv's 3.11.7), the stub dies at model load with
    "AttributeError: '_thread.RLock' object has no attribute '_recursion_count'". Put this
    interpreter's own libpython first on LD_LIBRARY_PATH, which tritonserver and the stub inherit."""
    import os
    import sysconfig

    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if libdir and soname and os.path.exists(os.path.join(libdir, soname)):
        paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
        if libdir not in paths:
            os.environ["LD_LIBRARY_PATH"] = ":".join([libdir] + paths)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grpc-port", type=int, default=8101)
    ap.add_argument("--http-port", type=int, default=0, help="0 (default): HTTP disabled")
    ap.add_argument("--metrics-port", type=int, default=0, help="0 (default): metrics disabled")
    ap.add_argument("--max-queue-delay-us", type=int, default=200)
    ap.add_argument("--max-batch-size", type=int, default=1024)
    ap.add_argument("--preferred-batch-size", default="64,256",
                    help="comma-separated, as fp8serve's config.pbtxt; '' for none")
    ap.add_argument("--model", type=pathlib.Path,
                    default=ROOT / "models" / "fashion_mlp" / "1" / "model.safetensors",
                    help="fp8serve safetensors file")
    ap.add_argument("--model-name", default="fashion_mlp")
    ap.add_argument("--log-verbose", type=int, default=0)
    args = ap.parse_args()

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    _use_this_interpreters_libpython()
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

    layers = fwd.load_mlp(args.model)
    in_features = layers[0][0].shape[0]
    out_features = layers[-1][0].shape[1]
    fwd.forward(layers, np.zeros((2, in_features), np.float32))  # warm up numpy/BLAS

    @batch
    def infer(input):  # noqa: A002  (the tensor is called "input")
        return {"logits": fwd.forward(layers, input)}

    preferred = [int(v) for v in args.preferred_batch_size.split(",") if v.strip()]
    config = TritonConfig(
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        allow_http=args.http_port > 0,
        http_address="127.0.0.1",
        http_port=args.http_port if args.http_port > 0 else None,
        allow_metrics=args.metrics_port > 0,
        metrics_port=args.metrics_port if args.metrics_port > 0 else None,
        allow_gpu_metrics=False,
        log_verbose=args.log_verbose,
    )
    # PyTriton (>= 0.7) puts the statistics endpoint (and model-repository, shared-memory, trace,
    # logging) behind an access token by default; perf_analyzer reads the server-side queue/compute
    # split from statistics, so leave that one open and keep the rest restricted.
    security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    triton = Triton(config=config, security_config=security)

    def _stop(signum, _frame):
        print(f"signal {signum}: stopping", flush=True)
        triton.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    with triton:
        triton.bind(
            model_name=args.model_name,
            infer_func=infer,
            inputs=[Tensor(name="input", dtype=np.float32, shape=(in_features,))],
            outputs=[Tensor(name="logits", dtype=np.float32, shape=(out_features,))],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=args.max_queue_delay_us,
                    preferred_batch_size=preferred or None,
                ),
            ),
            strict=True,
        )
        triton.run()
        print(f"\nREADY grpc=127.0.0.1:{args.grpc_port} model={args.model_name} "
              f"max_queue_delay_us={args.max_queue_delay_us} max_batch_size={args.max_batch_size} "
              f"preferred={preferred}", flush=True)
        triton.serve()


if __name__ == "__main__":
    main()
