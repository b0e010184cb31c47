"""fp8serve-client against the real fp8serve binary serving the bundled Fashion-MNIST model: infer
from IDX, .npy (float32/float16) and CSV with the accuracy the model is known for, bench with its
JSON/CSV/SVG outputs and exact accounting, health/metadata/config, --help everywhere, and bad usage
(one line on stderr, a non-zero exit, never a hang or a crash).

Binaries: $FP8SERVE_BIN (server) and $FP8SERVE_CLIENT, else build/server/fp8serve and
build/client/fp8serve-client.
"""
import csv
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "python"))
import fp8serve_harness as h  # noqa: E402

CLIENT = os.environ.get("FP8SERVE_CLIENT") or str(h.ROOT / "build" / "client" / "fp8serve-client")
IMAGES = str(h.FASHION / "t10k-images-idx3-ubyte.gz")
LABELS = str(h.FASHION / "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = h.FP8Serve(tmp_path_factory.mktemp("server"), [h.ROOT / "models"])
    yield s
    assert s.stop() == 0, f"fp8serve did not shut down cleanly:\n{s.log()}"


def client(*args, timeout=120):
    start = time.monotonic()
    r = subprocess.run([CLIENT, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    r.seconds = time.monotonic() - start
    print(f"$ fp8serve-client {' '.join(map(str, args))}\n-> {r.returncode}\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return r


def assert_one_line_error(r, code, *words):
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"want one line on stderr, got:\n{r.stderr}"
    for bad in ("Traceback", "terminate called", "Aborted", "Segmentation", "what():"):
        assert bad not in r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def predictions(stdout):
    """Top-1 class per printed row ('#12    7 0.9812 | ...')."""
    return [int(m.group(1)) for m in re.finditer(r"^#\d+\s+(\d+) [0-9.]+", stdout, re.M)]


def test_health(server):
    r = client("health", "-u", server.url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines() == [f"{server.url}: SERVING"]


def test_health_fails_in_one_line_when_nobody_answers():
    # Nothing listens: refused at once.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    r = client("health", "-u", closed)
    assert r.returncode == 1
    assert len(r.stdout.strip().splitlines()) == 1 and "not healthy: UNAVAILABLE" in r.stdout
    # Something listens but never speaks HTTP/2: the deadline ends it.
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        r = client("health", "-u", f"127.0.0.1:{hole.getsockname()[1]}", "--timeout-ms", "500")
    assert r.returncode == 1 and "DEADLINE_EXCEEDED" in r.stdout, r.stdout
    assert r.seconds < 10


def test_infer_fashion_mnist_accuracy(server):
    r = client("infer", "-u", server.url, "--input", IMAGES, "--labels", LABELS, "--class-names", "fashion")
    assert r.returncode == 0, r.stderr
    accuracy = float(re.search(r"^accuracy ([0-9.]+) \((\d+) of 10000\)", r.stdout, re.M).group(1))
    # The bundled model's FP8 accuracy (README: 0.9008), and the numeric contract's own figure.
    images, labels = h.fashion_test()
    want = (h.reference_forward(h.read_mlp(h.BUNDLED_WEIGHTS), images).argmax(1) == labels).mean()
    assert abs(accuracy - want) <= 0.002, (accuracy, want)
    assert accuracy > 0.89
    assert "10000 rows" in r.stdout
    assert re.search(r"^9 Ankle boot\s+(\d+\s+){10}0\.\d{4}$", r.stdout, re.M), "confusion matrix row"
    assert "Ankle boot" in r.stdout.splitlines()[0]


def test_every_input_format_gives_the_same_classes(server, tmp_path):
    images, _ = h.fashion_test(60)
    want = client("infer", "-u", server.url, IMAGES, "--limit", 60, "--show", -1, "-k", 1)
    assert want.returncode == 0, want.stderr
    want = predictions(want.stdout)
    assert len(want) == 60

    np.save(tmp_path / "f32.npy", images)
    np.save(tmp_path / "f16.npy", images.astype(np.float16))
    np.save(tmp_path / "one.npy", images[0])
    np.save(tmp_path / "double.npy", images * 2)  # --scale 0.5 undoes it exactly
    with open(tmp_path / "rows.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"p{i}" for i in range(784)])
        w.writerows([[f"{v:.9g}" for v in row] for row in images])  # 9 digits: the float32 exactly
    for name, extra in [("f32.npy", []), ("rows.csv", []), ("double.npy", ["--scale", 0.5]), ("f16.npy", [])]:
        r = client("infer", "-u", server.url, "--input", tmp_path / name, "--show", -1, "-k", 1, "--batch", 7, *extra)
        assert r.returncode == 0, r.stderr
        got = predictions(r.stdout)
        assert len(got) == 60
        agree = np.mean(np.array(got) == np.array(want))
        # float16 moves pixels by < 0.05%: at most a rare flip of a borderline row.
        assert agree >= (0.98 if name == "f16.npy" else 1.0), (name, agree)
    assert "FP16 on the wire" in r.stdout  # a float16 file travels as FP16
    r = client("infer", "-u", server.url, tmp_path / "one.npy", "-k", 1)
    assert r.returncode == 0 and predictions(r.stdout) == want[:1], r.stdout
    for wire in ("bf16", "fp16"):
        r = client("infer", "-u", server.url, tmp_path / "f32.npy", "--wire", wire, "--show", -1, "-k", 1)
        assert r.returncode == 0 and np.mean(np.array(predictions(r.stdout)) == np.array(want)) >= 0.95


def test_bad_usage_gets_one_line_and_a_nonzero_exit(server, tmp_path):
    np.save(tmp_path / "narrow.npy", np.zeros((3, 100), np.float32))
    np.save(tmp_path / "f64.npy", np.zeros((3, 784)))
    (tmp_path / "labels.csv").write_text("1\n2\n")
    (tmp_path / "garbage.npy").write_bytes(b"\x93NUMPY\x01\x00\xff\xff{")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    u = ["-u", server.url]
    cases = [
        (["infer", *u, "--input", tmp_path / "missing.npy"], 2, ["cannot open", "missing.npy"]),
        (["infer", *u, "--input", tmp_path / "narrow.npy"], 2, ["rows of 100 values", "takes 784"]),
        (["infer", *u, "--input", tmp_path / "f64.npy"], 2, ["<f8 is not supported"]),
        (["infer", *u, "--input", tmp_path / "garbage.npy"], 2, ["garbage.npy"]),
        (["infer", *u, IMAGES, "--labels", tmp_path / "labels.csv", "--limit", 5], 2, ["2 labels for 5 rows"]),
        (["infer", *u, IMAGES, "--batch", 2000], 2, ["max_batch_size 1024"]),
        (["infer", *u, IMAGES, "--model", "nope"], 1, ["NOT_FOUND"]),
        (["infer", "-u", closed, IMAGES, "--connect-timeout-ms", 1000], 1, ["UNAVAILABLE", "cannot connect to " + closed]),
        (["infer", *u], 2, ["no input"]),
        (["infer", *u, "--bogus"], 2, ["unknown flag --bogus"]),
        (["infer", *u, IMAGES, "--batch", "abc"], 2, ["--batch abc: Illegal value"]),
        (["health", "-u"], 2, ["--url needs a value"]),
        (["health", *u, "--concurrency", 8], 2, ["--concurrency does not apply here"]),
        (["bench", *u, "--mode", "turbo"], 2, ["sync, async or stream"]),
        (["bench", *u, "--mode", "sync", "--rate", 100], 2, ["needs --mode async or stream"]),
        (["bench", *u, "-c", "0"], 2, ["--concurrency value '0'"]),
        (["bench", "-u", closed, "--connect-timeout-ms", 500], 1, ["UNAVAILABLE"]),
        (["config", "-u", closed, "--connect-timeout-ms", 500], 1, ["UNAVAILABLE"]),
        (["metadata", *u, "--format", "yaml"], 2, ["text or json"]),
        (["frobnicate"], 2, ["unknown command"]),
    ]
    for args, code, words in cases:
        r = client(*args, timeout=30)
        assert_one_line_error(r, code, *words)
        assert r.seconds < 15
    assert client().returncode == 2  # no command: the usage text, on stderr


def test_help_for_every_subcommand():
    r = client("help")
    assert r.returncode == 0
    for cmd in ("infer", "bench", "health", "metadata", "config"):
        assert re.search(rf"^  {cmd} ", r.stdout, re.M), cmd
    own = {"infer": "--labels", "bench": "--concurrency", "health": "--service", "metadata": "--format",
           "config": "--format"}
    for cmd, flag in own.items():
        for spelling in ([cmd, "--help"], [cmd, "-h"], ["help", cmd]):
            r = client(*spelling)
            assert r.returncode == 0, spelling
            assert r.stdout.startswith(f"Usage: fp8serve-client {cmd}")
            assert flag in r.stdout and "-u, --url" in r.stdout
    assert "--concurrency" not in client("health", "--help").stdout


def test_bench_reports_and_accounting(server, tmp_path):
    out = {k: tmp_path / f"bench.{k}" for k in ("json", "csv", "svg")}
    r = client("bench", "-u", server.url, "-c", "1,4", "--duration-secs", 1, "--warmup-secs", 0.2,
               "--json", out["json"], "--csv", out["csv"], "--plot", out["svg"])
    assert r.returncode == 0, r.stderr
    assert re.search(r"^c=1\s", r.stdout, re.M) and re.search(r"^c=4\s", r.stdout, re.M), r.stdout
    report = json.loads(out["json"].read_text())
    assert [s["load"] for s in report["steps"]] == ["c=1", "c=4"]
    for s in report["steps"]:
        assert s["accounted"] and s["sent"] == s["ok"] > 0 and s["errors"] == {}
        # Nobody else uses the model: the server counted exactly what the client did.
        assert s["server"]["success"] == s["ok"] and s["server"]["fail"] == 0
        assert s["server"]["queue_us_per_request"] >= 0 and s["server"]["compute_us_per_request"] > 0
        lat = s["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    rows = list(csv.DictReader(out["csv"].open()))
    assert [row["load"] for row in rows] == ["c=1", "c=4"]
    svg = ET.parse(out["svg"]).getroot()
    assert svg.tag.endswith("svg")
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "p50 latency" in texts and "p99 latency" in texts and "throughput (requests/s)" in texts


@pytest.mark.parametrize("mode,load", [("stream", ["-c", "8"]), ("sync", ["-c", "4"]), ("async", ["--rate", "300"]),
                                       ("stream", ["--rate", "300"])])
def test_bench_modes(server, tmp_path, mode, load):
    r = client("bench", "-u", server.url, "--mode", mode, *load, "--batch", 4, "--duration-secs", 0.7,
               "--warmup-secs", 0.1, "--threads", 2, "--json", tmp_path / "b.json")
    assert r.returncode == 0, r.stderr
    (s,) = json.loads((tmp_path / "b.json").read_text())["steps"]
    assert s["accounted"] and s["ok"] > 0 and s["server"]["success"] == s["ok"]
    assert s["server"]["inference_count"] == 4 * s["ok"]
    assert abs(s["rows_per_second"] - 4 * s["requests_per_second"]) < 1e-6 * s["rows_per_second"] + 1e-9


def test_metadata_and_config(server):
    r = client("metadata", "-u", server.url)
    assert r.returncode == 0, r.stderr
    assert "fp8serve" in r.stdout and re.search(r"input\s+input\s+FP32\s+\[-1,784\]", r.stdout), r.stdout
    assert re.search(r"fashion_mlp\s+version 1\s+READY", r.stdout)
    r = client("metadata", "-u", server.url, "--format", "json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["models"][0]["outputs"][0]["name"] == "logits"
    r = client("config", "-u", server.url)
    assert r.returncode == 0 and "max_batch_size: 1024" in r.stdout
    r = client("config", "-u", server.url, "-m", "fashion_mlp", "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["max_batch_size"] == 1024
