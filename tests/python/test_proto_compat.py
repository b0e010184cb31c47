#!/usr/bin/env python3
"""Wire compatibility of proto/*.proto with the Triton protocol as tritonclient knows it.

Compiles nothing: protoc turns our .proto files into a FileDescriptorSet, and every message, enum,
oneof, field and RPC we declare is compared with the descriptors shipped inside the installed
tritonclient package (tritonclient.grpc.service_pb2 / model_config_pb2). Anything we declare must
agree with Triton on name, number, type, label, type name, oneof membership and streaming;
anything of Triton's we leave out must be on the ALLOWED_OMISSIONS list below.

Runs under pytest, or directly: `python test_proto_compat.py [--protoc PATH] [--verbose]`.
Needs protoc (the system one is fine) and `tritonclient[grpc]` in the interpreter's environment.
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
PROTO_FILES = ["grpc_service.proto", "model_config.proto"]

# Triton definitions fp8serve leaves out on purpose (clients calling these RPCs get UNIMPLEMENTED).
ALLOWED_OMISSIONS = {
    "rpc": {
        "SystemSharedMemoryStatus", "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
        "CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
        "TraceSetting", "LogSettings",
    },
    "message_prefix": (
        ".inference.SystemSharedMemory", ".inference.CudaSharedMemory",
        ".inference.TraceSetting", ".inference.LogSettings",
    ),
}


def _find_protoc(explicit=None):
    for cand in (explicit, os.environ.get("PROTOC"), shutil.which("protoc")):
        if cand and os.path.exists(cand):
            return cand
    return None


def _our_files(protoc):
    from google.protobuf import descriptor_pb2
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "ours.pb"
        subprocess.run([protoc, f"-I{PROTO_DIR}", f"--descriptor_set_out={out}", "--include_imports",
                        *PROTO_FILES], check=True, cwd=PROTO_DIR)
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return list(fds.file)


def _their_files():
    from google.protobuf import descriptor_pb2
    from tritonclient.grpc import model_config_pb2, service_pb2
    files = []
    for mod in (model_config_pb2, service_pb2):
        fdp = descriptor_pb2.FileDescriptorProto()
        mod.DESCRIPTOR.CopyToProto(fdp)
        files.append(fdp)
    return files


def _index(files):
    """Flatten files into {full name: (kind, proto)} for messages, enums and services."""
    table = {}

    def walk_msg(prefix, msg):
        full = f"{prefix}.{msg.name}"
        table[full] = ("message", msg)
        for e in msg.enum_type:
            table[f"{full}.{e.name}"] = ("enum", e)
        for n in msg.nested_type:
            walk_msg(full, n)

    for f in files:
        pkg = f".{f.package}" if f.package else ""
        for m in f.message_type:
            walk_msg(pkg, m)
        for e in f.enum_type:
            table[f"{pkg}.{e.name}"] = ("enum", e)
        for s in f.service:
            table[f"{pkg}.{s.name}"] = ("service", s)
    return table


def compare(ours_files, theirs_files):
    """Returns (stats, problems, omissions)."""
    ours, theirs = _index(ours_files), _index(theirs_files)
    stats = {"messages": 0, "fields": 0, "enums": 0, "enum_values": 0, "oneofs": 0, "rpcs": 0}
    problems, omissions = [], []

    for f in ours_files:
        if f.syntax != "proto3" or f.package != "inference":
            problems.append(f"{f.name}: syntax {f.syntax!r} package {f.package!r}")
    names_theirs = sorted(f.name for f in theirs_files)
    if sorted(f.name for f in ours_files) != names_theirs:
        problems.append(f"file names differ from {names_theirs}")

    for name in sorted(set(ours) - set(theirs)):
        problems.append(f"{name}: not in Triton's protocol")

    for name, (kind, theirs_d) in sorted(theirs.items()):
        if name not in ours:
            if name.startswith(ALLOWED_OMISSIONS["message_prefix"]):
                omissions.append(name)
            else:
                problems.append(f"{name}: missing")
            continue
        our_kind, ours_d = ours[name]
        if our_kind != kind:
            problems.append(f"{name}: is a {our_kind}, Triton's is a {kind}")
            continue
        if kind == "message":
            stats["messages"] += 1
            if ours_d.options.map_entry != theirs_d.options.map_entry:
                problems.append(f"{name}: map_entry differs")
            our_oneofs = [o.name for o in ours_d.oneof_decl]
            their_oneofs = [o.name for o in theirs_d.oneof_decl]
            stats["oneofs"] += len(their_oneofs)
            if our_oneofs != their_oneofs:
                problems.append(f"{name}: oneofs {our_oneofs} != {their_oneofs}")
            our_fields = {fd.number: fd for fd in ours_d.field}
            for tf in theirs_d.field:
                stats["fields"] += 1
                of = our_fields.pop(tf.number, None)
                if of is None:
                    problems.append(f"{name}.{tf.name} = {tf.number}: missing")
                    continue
                # json_name is derived from the name (the copies in tritonclient's pb2 leave it unset).
                for attr in ("name", "type", "label", "type_name", "proto3_optional"):
                    if getattr(of, attr) != getattr(tf, attr):
                        problems.append(f"{name}.{tf.name} = {tf.number}: {attr} "
                                        f"{getattr(of, attr)!r} != {getattr(tf, attr)!r}")
                o_oneof = our_oneofs[of.oneof_index] if of.HasField("oneof_index") else None
                t_oneof = their_oneofs[tf.oneof_index] if tf.HasField("oneof_index") else None
                if o_oneof != t_oneof:
                    problems.append(f"{name}.{tf.name}: oneof {o_oneof!r} != {t_oneof!r}")
                if of.options.packed != tf.options.packed or of.options.HasField("packed") != tf.options.HasField("packed"):
                    problems.append(f"{name}.{tf.name}: packed option differs")
            for extra in our_fields.values():
                problems.append(f"{name}.{extra.name} = {extra.number}: not in Triton's protocol")
        elif kind == "enum":
            stats["enums"] += 1
            our_vals = [(v.name, v.number) for v in ours_d.value]
            their_vals = [(v.name, v.number) for v in theirs_d.value]
            stats["enum_values"] += len(their_vals)
            if sorted(our_vals) != sorted(their_vals):
                problems.append(f"{name}: values {our_vals} != {their_vals}")
        elif kind == "service":
            our_rpcs = {m.name: m for m in ours_d.method}
            for tm in theirs_d.method:
                om = our_rpcs.pop(tm.name, None)
                if om is None:
                    if tm.name in ALLOWED_OMISSIONS["rpc"]:
                        omissions.append(f"{name}/{tm.name}")
                    else:
                        problems.append(f"{name}/{tm.name}: missing")
                    continue
                stats["rpcs"] += 1
                for attr in ("input_type", "output_type", "client_streaming", "server_streaming"):
                    if getattr(om, attr) != getattr(tm, attr):
                        problems.append(f"{name}/{tm.name}: {attr} {getattr(om, attr)!r} != "
                                        f"{getattr(tm, attr)!r}")
            for extra in our_rpcs:
                problems.append(f"{name}/{extra}: not in Triton's protocol")
    return stats, problems, omissions


def _bundled_configs_parse(ours_files):
    """Every models/*/config.pbtxt must parse with TextFormat against our schema."""
    from google.protobuf import descriptor_pool, message_factory, text_format
    pool = descriptor_pool.DescriptorPool()
    for f in ours_files:
        pool.Add(f)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))
    parsed = []
    for cfg in sorted((ROOT / "models").glob("*/config.pbtxt")):
        msg = text_format.Parse(cfg.read_text(), cls())  # raises on unknown fields
        parsed.append((cfg, msg))
    return parsed


def test_proto_matches_tritonclient():
    import pytest
    pytest.importorskip("tritonclient.grpc")
    protoc = _find_protoc()
    if protoc is None:
        pytest.skip("protoc not found")
    stats, problems, _ = compare(_our_files(protoc), _their_files())
    assert not problems, "\n".join(problems)
    assert stats["fields"] > 0 and stats["rpcs"] == 12


def test_bundled_configs_parse():
    import pytest
    protoc = _find_protoc()
    if protoc is None:
        pytest.skip("protoc not found")
    for cfg, msg in _bundled_configs_parse(_our_files(protoc)):
        assert msg.name == cfg.parent.name, cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protoc")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    protoc = _find_protoc(args.protoc)
    if protoc is None:
        print("protoc not found", file=sys.stderr)
        return 2
    ours = _our_files(protoc)
    stats, problems, omissions = compare(ours, _their_files())
    from importlib import metadata
    print(f"tritonclient {metadata.version('tritonclient')}: compared "
          + ", ".join(f"{v} {k}" for k, v in stats.items()))
    print(f"omitted on purpose: {len(omissions)}" + ("".join(f"\n  {o}" for o in omissions)
                                                     if args.verbose else ""))
    for cfg, _ in _bundled_configs_parse(ours):
        print(f"parsed {cfg.relative_to(ROOT)}")
    for p in problems:
        print(f"MISMATCH {p}")
    print("OK" if not problems else f"{len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
