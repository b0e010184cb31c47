#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/seed-*).

Seeds are small valid inputs of every kind each target reads, plus a few near misses, so that the
fuzzer starts from the formats' structure instead of from noise. Inputs that once found a bug are
kept next to them as crash-* files and are not written here. Deterministic: rerunning rewrites the
same bytes.

    .venv/bin/python tests/fuzz/make_seeds.py
"""
import gzip
import json
import pathlib
import struct

import ml_dtypes
import numpy as np
from tritonclient.grpc import service_pb2

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"
rng = np.random.default_rng(1234)


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


# ---- safetensors / model files ----------------------------------------------------------------

DTYPES = {"F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2, "BF16": ml_dtypes.bfloat16,
          "F16": np.float16, "F32": np.float32}


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype name, numpy array)."""
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, arr in tensors:
        b = np.ascontiguousarray(arr.astype(DTYPES[dtype])).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def fp8_layer(i, out, inp, dtype="F8_E4M3", scales="channel", bias=True):
    w = rng.normal(0, 1, (out, inp)).astype(np.float32)
    t = [(f"layers.{i}.weight", dtype, w)]
    shape = {"tensor": (), "channel": (out,), "block": ((out + 127) // 128, (inp + 127) // 128)}[scales]
    t.append((f"layers.{i}.weight_scale", "F32", rng.uniform(0.01, 0.1, shape).astype(np.float32)))
    if bias:
        t.append((f"layers.{i}.bias", "F32", rng.normal(0, 0.1, (out,)).astype(np.float32)))
    return t


SERVED = {"format": "fp8serve.mlp.v1", "activation": "relu"}
write("model_file_fuzz", "e4m3-channel", safetensors(fp8_layer(0, 16, 8) + fp8_layer(1, 3, 16), SERVED))
write("model_file_fuzz", "e5m2-tensor", safetensors(fp8_layer(0, 5, 7, "F8_E5M2", "tensor", False), SERVED))
write("model_file_fuzz", "e4m3-block", safetensors(fp8_layer(0, 130, 3, scales="block") + fp8_layer(1, 2, 130, scales="block"),
                                                   {"format": "fp8serve.mlp.v1", "activation": "identity"}))
write("model_file_fuzz", "mixed-f32-layer",
      safetensors(fp8_layer(0, 6, 4) + [("layers.1.weight", "F32", rng.normal(0, 1, (2, 6)))], SERVED))
write("model_file_fuzz", "float-ours", safetensors([("layers.0.weight", "F32", rng.normal(0, 1, (6, 4))),
                                                    ("layers.0.bias", "BF16", rng.normal(0, 1, (6,))),
                                                    ("layers.1.weight", "F16", rng.normal(0, 1, (3, 6)))]))
write("model_file_fuzz", "float-sequential", safetensors([("net.0.weight", "BF16", rng.normal(0, 1, (6, 4))),
                                                          ("net.0.bias", "BF16", rng.normal(0, 1, (6,))),
                                                          ("net.2.weight", "BF16", rng.normal(0, 1, (3, 6))),
                                                          ("net.2.bias", "BF16", rng.normal(0, 1, (3,)))],
                                                         {"note": "a PyTorch state dict"}))
good = safetensors(fp8_layer(0, 4, 4), SERVED)
write("model_file_fuzz", "truncated", good[: len(good) - 5])
write("model_file_fuzz", "huge-header-length", struct.pack("<Q", 1 << 40) + good[8:])
write("model_file_fuzz", "empty-header", struct.pack("<Q", 2) + b"{}")

# ---- config.pbtxt -----------------------------------------------------------------------------

IO = """input [ { name: "input" data_type: TYPE_FP32 dims: [ 8 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""
write("model_config_fuzz", "minimal", f'platform: "fp8_mlp"\n{IO}'.encode())
write("model_config_fuzz", "full", f'''name: "m"
platform: "fp8_mlp"
max_batch_size: 16
{IO}dynamic_batching {{
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
  priority_levels: 3
  default_priority_level: 2
  default_queue_policy {{ max_queue_size: 4 default_timeout_microseconds: 100000 }}
}}
instance_group [ {{ count: 2 kind: KIND_CPU }} ]
version_policy: {{ specific: {{ versions: [ 1, 3, 4 ] }} }}
parameters: {{ key: "num_layers" value: {{ string_value: "2" }} }}
parameters: {{ key: "weight_format" value: {{ string_value: "e4m3" }} }}
'''.encode())
write("model_config_fuzz", "all-versions", f'backend: "fp8_mlp"\nmax_batch_size: 1\n{IO}version_policy: {{ all: {{}} }}\n'.encode())
write("model_config_fuzz", "latest-two", f'platform: "fp8_mlp"\n{IO}version_policy: {{ latest: {{ num_versions: 2 }} }}\n'.encode())
write("model_config_fuzz", "wrong-dims", b'platform: "fp8_mlp"\ninput [ { name: "input" data_type: TYPE_FP32 dims: [ 9 ] } ]\n'
      b'output [ { name: "logits" data_type: TYPE_FP32 dims: [ 3 ] } ]\n')
write("model_config_fuzz", "bad-syntax", b'platform: "fp8_mlp"\ninput [ { name: \n')

# ---- ModelInferRequest ------------------------------------------------------------------------


def request(rows, dtype="FP32", raw=True, shape=None, params=None, outputs=("logits",), name="input"):
    r = service_pb2.ModelInferRequest(model_name="m", id="seed")
    t = r.inputs.add(name=name, datatype=dtype)
    t.shape.extend(shape if shape is not None else [rows, 8])
    x = rng.normal(0, 1, (rows, 8)).astype(np.float32)
    if raw:
        np_type = {"FP32": np.float32, "FP16": np.float16, "BF16": ml_dtypes.bfloat16}[dtype]
        r.raw_input_contents.append(x.astype(np_type).tobytes())
    else:
        t.contents.fp32_contents.extend(x.ravel().tolist())
    for o in outputs:
        r.outputs.add(name=o)
    for k, v in (params or {}).items():
        r.parameters[k].int64_param = v
    return r.SerializeToString(deterministic=True)


write("infer_request_fuzz", "fp32-raw", request(3))
write("infer_request_fuzz", "fp32-typed", request(2, raw=False))
write("infer_request_fuzz", "fp16", request(8, "FP16"))
write("infer_request_fuzz", "bf16", request(1, "BF16", params={"priority": 1, "timeout": 100000}))
write("infer_request_fuzz", "unbatched", request(1, shape=[8], outputs=()))
write("infer_request_fuzz", "priority-3", request(4, params={"priority": 3}))
write("infer_request_fuzz", "too-many-rows", request(9))

# ---- data files -------------------------------------------------------------------------------


def npy(arr):
    header = f"{{'descr': '{arr.dtype.str}', 'fortran_order': False, 'shape': {tuple(arr.shape)}, }}"
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + arr.tobytes()


def idx(arr):
    return struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


images = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
labels = rng.integers(0, 10, (3,), dtype=np.uint8)
write("input_files_fuzz", "npy-f32", npy(rng.normal(0, 1, (3, 5)).astype(np.float32)))
write("input_files_fuzz", "npy-f16-1d", npy(rng.normal(0, 1, (5,)).astype(np.float16)))
write("input_files_fuzz", "idx-images", idx(images))
write("input_files_fuzz", "idx-images-gz", gzip.compress(idx(images), mtime=0))
write("input_files_fuzz", "idx-labels", idx(labels))
write("input_files_fuzz", "csv-header", b"a,b,c\n1,2,3\n4.5;5e-1 6\n")
write("input_files_fuzz", "labels-text", b"1\n2, 3\n7\n")

# ---- the kernels' host side: bytes that pick a device, a GEMM, a config and an MLP ----------------
# All zeros picks the common case everywhere (an H100/H200, 1 x 128 x 128, the first config values);
# the others are random choices among the common values.
write("gemm_plan_fuzz", "zeros", bytes(160))
for i in range(8):
    b = bytearray(rng.integers(0, 224, 160, dtype=np.uint8))
    write("gemm_plan_fuzz", f"random-{i}", bytes(b))
# A fused plan with activation hand-overs between the CTAs of a cluster, which random choices rarely
# reach (found among 40,000 random and mutated inputs; it catches an activation barrier planted
# 16 bytes off, as tests/kernels/cuda/fused_plan_check.h checks it).
write("gemm_plan_fuzz", "cluster-handover", bytes.fromhex(
    "1f767f384d0d819e196b675c432a73957edc9f954f25a921b78ec3dc7d1408ba2c12df8cde4a7571247068759e5179d9"
    "4633beab8e2805abdb933467d40ebeabce6a814c0d1a202cbb462958b9be5105ad43965dc9b9545db3d144cc28bd1264"
    "006fda712d1c367a9f463d4ba95e52767b0111bab0c78a75600776b748a05c461d35805c6321843d50a0c3c4bd5e20c9"
    "b823516b7d3b0e7ad80104759abc864b"))
