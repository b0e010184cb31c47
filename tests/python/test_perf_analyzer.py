"""fp8serve under Triton's real perf_analyzer (2.41.0, from the tritonclient wheel; see
tools/install_perf_analyzer.sh): a concurrency sweep, streaming, and batch size 8. Each run must exit
0, write a CSV row per concurrency with throughput > 0, and show server-side queue/compute figures,
which perf_analyzer computes from our ModelStatistics; those statistics must count at least every
request perf_analyzer reports.

perf_analyzer: $PERF_ANALYZER, else .venv/bin/perf_analyzer (installed on first use by the script).
Skips loudly when it cannot be installed or run. Windows are short (-p 500/1000) and
--stability-percentage 1000 makes each level stop after perf_analyzer's minimum of 3 windows
(this checks compatibility, not performance; a loaded CI machine never looks "stable").
"""
import csv
import os
import re
import subprocess
import sys

import pytest
import tritonclient.grpc as grpcclient

import fp8serve_harness as h

MODEL = "fashion_mlp"


def _perf_analyzer():
    """Path of a runnable perf_analyzer, or the reason there is none."""
    path = os.environ.get("PERF_ANALYZER") or str(h.ROOT / ".venv" / "bin" / "perf_analyzer")
    if not os.access(path, os.X_OK) and not os.environ.get("PERF_ANALYZER"):
        try:
            r = subprocess.run([str(h.ROOT / "tools" / "install_perf_analyzer.sh")], capture_output=True,
                               text=True, timeout=180)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"tools/install_perf_analyzer.sh failed: {e}"
        if r.returncode != 0:
            return None, f"tools/install_perf_analyzer.sh failed: {r.stderr.strip()[-500:]}"
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{path} does not run: {e}"
    if r.returncode != 0:
        return None, f"{path} --version exited {r.returncode}: {(r.stdout + r.stderr).strip()[-500:]}"
    return path, None


@pytest.fixture(scope="module")
def perf_analyzer():
    path, why = _perf_analyzer()
    if path is None:
        sys.__stderr__.write(f"\n*** PERF_ANALYZER TEST SKIPPED: {why}\n")
        pytest.skip(f"*** PERF_ANALYZER TEST SKIPPED: {why}")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = h.make_repository(tmp_path_factory.mktemp("repo"), {MODEL: h.random_mlp([784, 256, 10], 7)})
    s = h.FP8Serve(tmp_path_factory.mktemp("server"), [repo])
    yield s
    assert s.stop() == 0, f"fp8serve did not shut down cleanly on SIGTERM:\n{s.log()}"


def model_stats(url):
    with grpcclient.InferenceServerClient(url) as c:
        (s,) = c.get_inference_statistics(MODEL).model_stats
    return s.inference_stats.success.count, s.inference_count


def run(perf_analyzer, server, tmp_path, *args, timeout=60):
    """Runs perf_analyzer against the server; returns (stdout, CSV rows, success delta, rows delta)."""
    out_csv = tmp_path / "perf.csv"
    before = model_stats(server.url)
    cmd = [perf_analyzer, "-m", MODEL, "-i", "grpc", "-u", server.url, "-f", str(out_csv),
           "--stability-percentage", "1000", *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"perf_analyzer ran past {timeout}s: {' '.join(cmd)}\n{e.stdout}\n{e.stderr}")
    after = model_stats(server.url)
    text = r.stdout + r.stderr
    print(f"$ {' '.join(cmd)}\n{text}")
    assert r.returncode == 0, f"perf_analyzer exited {r.returncode}:\n{text}"
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    return text, rows, after[0] - before[0], after[1] - before[1]


def check_report(text, rows, success_delta, concurrencies):
    # A CSV row per concurrency level (perf_analyzer sorts them by throughput), each with throughput > 0.
    assert sorted(int(r["Concurrency"]) for r in rows) == concurrencies, rows
    assert all(float(r["Inferences/Second"]) > 0 for r in rows), rows
    assert {"Server Queue", "Server Compute Infer"} <= set(rows[0]), rows[0].keys()
    # Server-side figures: perf_analyzer read our statistics at every level.
    server = re.findall(r"Server:\s*\n\s*Inference count: (\d+)\s*\n\s*Execution count: (\d+)\s*\n"
                        r"\s*Successful request count: (\d+)\s*\n\s*Avg request latency: \d+ usec "
                        r"\(overhead \d+ usec \+ queue (\d+) usec \+ compute input \d+ usec \+ "
                        r"compute infer (\d+) usec \+ compute output \d+ usec\)", text)
    assert len(server) == len(concurrencies), f"no server-side queue/compute figures:\n{text}"
    assert all(int(inferences) > 0 and int(successes) > 0 for inferences, _, successes, _, _ in server), server
    # The server counted at least every request perf_analyzer reports (it also sends unreported ones).
    requests = [int(n) for n in re.findall(r"Request count: (\d+)", text)]
    assert len(requests) == len(concurrencies) and all(n > 0 for n in requests), requests
    assert success_delta >= sum(requests), (success_delta, requests)
    return requests


def test_concurrency_sweep(perf_analyzer, server, tmp_path):
    text, rows, successes, _ = run(perf_analyzer, server, tmp_path, "--concurrency-range", "1:8:7", "-p", "1000")
    check_report(text, rows, successes, [1, 8])
    assert "Using synchronous calls" in text


def test_concurrency_64(perf_analyzer, server, tmp_path):
    text, rows, successes, _ = run(perf_analyzer, server, tmp_path, "--concurrency-range", "64", "-p", "1000")
    check_report(text, rows, successes, [64])


def test_streaming(perf_analyzer, server, tmp_path):
    text, rows, successes, _ = run(perf_analyzer, server, tmp_path, "--streaming", "--concurrency-range", "4",
                                   "-p", "500")
    check_report(text, rows, successes, [4])


def test_batch_size_8(perf_analyzer, server, tmp_path):
    text, rows, successes, inferences = run(perf_analyzer, server, tmp_path, "-b", "8", "--concurrency-range", "4",
                                            "-p", "500")
    requests = check_report(text, rows, successes, [4])
    assert "Batch size: 8" in text
    assert inferences >= 8 * sum(requests), (inferences, requests)  # inference_count counts rows
