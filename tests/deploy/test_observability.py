"""deploy/'s monitoring against the real thing: a real fp8serve serving the bundled models/ on
loopback, scraped by a real Prometheus (Debian's /usr/bin/prometheus) that runs deploy/'s own
prometheus.yml (rewritten only in its target addresses and a 1 s scrape interval) and serves
deploy/'s console page, under load from tritonclient (good requests and bad ones).

- test_metrics_*: /metrics exports the contract's families with their types, and Prometheus scraped it.
- test_dashboard_query[...]: every Grafana panel's PromQL, with the dashboard's variables filled in as
  a user sees them (All, and one model), parses and returns data. GPU panels need the CUDA backend:
  on the CPU they must parse, and are skipped for data with the reason.
- test_console_*: the console page's own expressions, evaluated the same way.
- test_screenshot_*: the console page in headless Chromium: its graphs drawn (SVG paths), and a
  screenshot that is not blank (set FP8SERVE_CONSOLE_PNG=docs/console.png to keep it).

Skips loudly ("PROMETHEUS TEST SKIPPED", "CHROMIUM TEST SKIPPED") without those programs.
Environment: FP8SERVE_BIN (server binary), PROMETHEUS_BIN, CHROMIUM_BIN, FP8SERVE_LOAD_SECONDS.
"""
import json
import math
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

import deploy_common as dc

sys.path.insert(0, str(dc.ROOT / "tests" / "python"))
import fp8serve_harness as h  # noqa: E402

LOAD_SECONDS = float(os.environ.get("FP8SERVE_LOAD_SECONDS", "12"))
SCRAPE_INTERVAL = "1s"
RATE_WINDOW = "1m"  # stands for $__rate_interval: covers the whole load and several scrapes
CONSOLE_HASH = "#pctc" + urllib.parse.quote('{"duration":120,"endTime":0}')  # graphs over the last 2 min
WINDOW = (1400, 1500)


def find_program(env, *names):
    """$ENV if set (only it), else the first of names on PATH."""
    if os.environ.get(env):
        return os.environ[env] if os.access(os.environ[env], os.X_OK) else None
    for cand in (shutil.which(n) for n in names):
        if cand:
            return cand
    return None


PROMETHEUS = find_program("PROMETHEUS_BIN", "prometheus")
if PROMETHEUS is None:
    pytest.skip("PROMETHEUS TEST SKIPPED: no prometheus binary (Debian: apt-get install prometheus; or set "
                "PROMETHEUS_BIN)", allow_module_level=True)


def console_libraries():
    """Prometheus' console libraries (prom.lib, menu.lib): where Debian or a tarball puts them."""
    candidates = [os.environ.get("PROMETHEUS_CONSOLE_LIBRARIES"), "/usr/share/prometheus/console_libraries",
                  "/etc/prometheus/console_libraries", "/usr/share/doc/prometheus/examples/console_libraries",
                  str(pathlib.Path(PROMETHEUS).resolve().parent / "console_libraries")]
    for c in candidates:
        if c and (pathlib.Path(c) / "prom.lib").is_file() and (pathlib.Path(c) / "menu.lib").is_file():
            return c
    pytest.fail(f"no console libraries (prom.lib, menu.lib) in any of {candidates[1:]}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode("utf-8", "replace")


def wait_for(what, fn, timeout, log=lambda: ""):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})\n{log()}")


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("fp8serve")
    metrics_port_file = work / "metrics_port"
    s = h.FP8Serve(work, [dc.ROOT / "models"], "--metrics-address", "127.0.0.1:0",
                   "--metrics-port-file", str(metrics_port_file))
    try:
        s.metrics_port = int(wait_for("the metrics port file", lambda: metrics_port_file.exists()
                                      and metrics_port_file.read_text().strip(), 20, s.log))
        s.metrics_url = f"http://127.0.0.1:{s.metrics_port}/metrics"
        yield s
    finally:
        s.stop()


class Prometheus:
    def __init__(self, work, metrics_port):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = yaml.safe_load(dc.PROMETHEUS_CONFIG.read_text())
        # deploy/'s configuration, rewritten only in its targets and the scrape interval.
        for job in cfg["scrape_configs"]:
            if job["job_name"] == "fp8serve":
                job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
                job["scrape_interval"] = SCRAPE_INTERVAL
                job["scrape_timeout"] = SCRAPE_INTERVAL
            elif job["job_name"] == "prometheus":
                job["static_configs"] = [{"targets": [f"127.0.0.1:{self.port}"]}]
        self.config = work / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.log_path = work / "prometheus.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={work / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             f"--web.console.templates={dc.CONSOLE.parent}", f"--web.console.libraries={console_libraries()}"],
            stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_for("Prometheus to be ready", lambda: self.proc.poll() is None and http_get(self.url + "/-/ready")[0] == 200,
                     60, self.log)
        except BaseException:
            self.stop()
            raise

    def log(self):
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def query(self, expr, at=None):
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        req = self.url + "/api/v1/query?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                body = r.read()
        except urllib.error.HTTPError as e:  # 400 with {"status":"error","errorType":"bad_data",...}
            body = e.read()
        return json.loads(body)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def prom(server, tmp_path_factory):
    p = Prometheus(tmp_path_factory.mktemp("prometheus"), server.metrics_port)
    try:
        wait_for("the fp8serve target to be up", lambda: any(
            s["value"][1] == "1" for s in p.query('up{job="fp8serve"}')["data"]["result"]), 30, p.log)
        yield p
    finally:
        p.stop()


def drive_load(url, seconds):
    """Good requests (batches of 1..64 rows from 3 threads) and bad ones (wrong shape, wrong type,
    unknown model) for `seconds`. Returns the counts."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    counts = {"good": 0, "bad": 0, "unexpected": []}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def good(seed):
        rng = random.Random(seed)
        with grpcclient.InferenceServerClient(url) as c:
            while time.monotonic() < stop:
                rows = rng.choice([1, 2, 8, 16, 64])
                x = grpcclient.InferInput("input", [rows, 784], "FP32")
                x.set_data_from_numpy(np.random.default_rng(seed).random((rows, 784), dtype=np.float32))
                out = c.infer("fashion_mlp", [x]).as_numpy("logits")
                with lock:
                    counts["good"] += out.shape[0] == rows

    def bad():
        with grpcclient.InferenceServerClient(url) as c:
            i = 0
            while time.monotonic() < stop:
                i += 1
                if i % 3 == 0:
                    x = grpcclient.InferInput("input", [1, 783], "FP32")        # wrong shape: invalid
                    x.set_data_from_numpy(np.zeros((1, 783), np.float32))
                    model = "fashion_mlp"
                elif i % 3 == 1:
                    x = grpcclient.InferInput("input", [1, 784], "INT32")       # wrong datatype: invalid
                    x.set_data_from_numpy(np.zeros((1, 784), np.int32))
                    model = "fashion_mlp"
                else:
                    x = grpcclient.InferInput("input", [1, 784], "FP32")        # unknown model: not_found
                    x.set_data_from_numpy(np.zeros((1, 784), np.float32))
                    model = "no_such_model"
                try:
                    c.infer(model, [x])
                    with lock:
                        counts["unexpected"].append(f"{model} {x.shape()} {x.datatype()} succeeded")
                except InferenceServerException:
                    with lock:
                        counts["bad"] += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=good, args=(s,)) for s in range(3)] + [threading.Thread(target=bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts


@pytest.fixture(scope="module")
def loaded(server, prom):
    """Runs the load once; returns the time to evaluate queries at (after two more scrapes)."""
    counts = drive_load(server.url, LOAD_SECONDS)
    assert counts["good"] > 0 and counts["bad"] > 0 and not counts["unexpected"], counts
    time.sleep(2.5)
    return time.time()


def values(result):
    """Sample values of an instant query's data (vector or scalar) as floats."""
    data = result["data"]
    if data["resultType"] == "scalar":
        return [float(data["result"][1])]
    return [float(s["value"][1]) for s in data["result"]]


# ------------------------------------------------------------------------------------------- test 2

def test_metrics_endpoint_exports_the_contract(server):
    status, text = http_get(server.metrics_url)
    assert status == 200
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    exported = {n for n in types if n.startswith("fp8serve_")}
    assert exported <= set(dc.CONTRACT), f"not in the contract: {sorted(exported - set(dc.CONTRACT))}"
    for name, (kind, labels) in dc.CONTRACT.items():
        if name in dc.GPU_METRICS:
            continue  # CUDA backend only
        assert types.get(name) == kind, f"{name}: TYPE {types.get(name)}, contract says {kind}"


def test_metrics_scraped_several_times(prom, loaded):
    (n,) = values(prom.query('count_over_time(up{job="fp8serve"}[5m])', loaded))
    assert n >= 5, f"only {n} scrapes"
    (up,) = values(prom.query('up{job="fp8serve"}', loaded))
    assert up == 1


def test_dashboard_variables_find_the_model(prom, loaded):
    for var in dc.dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["definition"])
        series = dc.grafana_substitute(m.group(1), {"model": ".*", "version": ".*"}, RATE_WINDOW)
        url = f"{prom.url}/api/v1/label/{m.group(2)}/values?" + urllib.parse.urlencode({"match[]": series})
        got = json.loads(http_get(url)[1])["data"]
        want = {"model": "fashion_mlp", "version": "1"}[m.group(2)]
        assert want in got, f"variable {var['name']}: {got}"


VARIABLE_SETS = {"all": {"model": ".*", "version": ".*"}, "fashion_mlp": {"model": "fashion_mlp", "version": ".*"}}


@pytest.mark.parametrize("title,ref,expr,gpu", dc.dashboard_queries(), ids=[f"{t}/{r}" for t, r, _, _ in dc.dashboard_queries()])
def test_dashboard_query(prom, loaded, title, ref, expr, gpu):
    for name, variables in VARIABLE_SETS.items():
        q = dc.grafana_substitute(expr, variables, RATE_WINDOW)
        r = prom.query(q, loaded)
        assert r["status"] == "success", f"{title}/{ref} ({name}) does not parse or fails: {r.get('error')}\n{q}"
        got = values(r)
        if gpu and not got:
            pytest.skip(f"GPU panel, no data: fp8serve exports GPU gauges only with the CUDA backend (this run "
                        f"serves on the CPU); the query parsed and ran: {q}")
        assert got, f"{title}/{ref} ({name}) returned no data: {q}"
        assert any(math.isfinite(v) for v in got), f"{title}/{ref} ({name}) returned only {got}: {q}"


def test_console_page_queries_return_data(prom, loaded):
    status, html = http_get(prom.url + "/consoles/fp8serve.html")
    assert status == 200
    exprs = dc.rendered_console_exprs(html)
    assert len(exprs) >= 15, exprs
    empty_gpu = []
    for q in exprs:
        r = prom.query(q, loaded)
        assert r["status"] == "success", f"console query fails: {r.get('error')}\n{q}"
        got = values(r)
        if not got and any(n in q for n in dc.GPU_METRICS):
            empty_gpu.append(q)
            continue
        assert got and any(math.isfinite(v) for v in got), f"console query returned {got}: {q}"
    if empty_gpu:
        print(f"GPU console queries parsed but had no data (CPU backend): {empty_gpu}")


def test_hpa_metric_is_scraped(prom, loaded):
    (hpa,) = [o for o in yaml.safe_load_all((dc.K8S / "hpa.yaml").read_text()) if o and o["kind"] == "HorizontalPodAutoscaler"]
    name = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert values(prom.query(f"sum({name})", loaded)), f"{name} was not scraped"
    rule = yaml.safe_load((dc.K8S / "prometheus-adapter-rules.yaml").read_text())["rules"]["custom"][0]
    assert prom.query(rule["seriesQuery"], loaded)["status"] == "success"


# ------------------------------------------------------------------------------------------- test 3

CHROMIUM = find_program("CHROMIUM_BIN", "chromium", "chromium-browser", "google-chrome")


def chromium(*args, timeout=90):
    if CHROMIUM is None:
        pytest.skip("CHROMIUM TEST SKIPPED: no chromium (Debian: apt-get install chromium; or set CHROMIUM_BIN)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--no-first-run", "--mute-audio", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=10000",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def console_graph_ids():
    return re.findall(r'<div id="(\w+)" class="fp8serve-graph"></div>', dc.CONSOLE.read_text())


def test_screenshot_console_page_html(prom, loaded):
    status, html = http_get(prom.url + "/consoles/fp8serve.html")
    assert status == 200
    for bad in ("error executing template", "template: ", "<no value>"):
        assert bad not in html, f"template error in the page: {bad!r}"
    for gid in console_graph_ids():
        assert f'<div id="{gid}" class="fp8serve-graph"></div>' in html, gid
    assert html.count("new PromConsole.Graph(") == len(console_graph_ids())
    assert "prom_console.js" in html, "the console libraries' head is missing"
    assert "fashion_mlp:1 ready" in html
    status, _ = http_get(prom.url + "/classic/static/js/prom_console.js")
    assert status == 200, "Prometheus does not serve the console JavaScript"


def graph_section(dom, gid):
    """What PromConsole.Graph put into this graph's div (the div ends before its <script>)."""
    start = dom.index(f'id="{gid}"')
    return dom[start:dom.index("<script", start)]


def test_screenshot_console_draws_graphs(prom, loaded):
    out = chromium("--dump-dom", prom.url + "/consoles/fp8serve.html" + CONSOLE_HASH)
    assert out.returncode == 0, out.stderr[-3000:]
    dom = out.stdout
    for gid in console_graph_ids():
        section = graph_section(dom, gid)
        if "Gpu" in gid:
            assert "<svg" in section or "No timeseries returned" in section, f"{gid}: neither a graph nor 'no data'"
            assert "Error loading data" not in section, f"{gid}: {section[:2000]}"
            continue
        assert "<svg" in section and "<path" in section, f"{gid}: no graph drawn\n{section[:2000]}"
        assert "prom_graph_error" not in section, f"{gid}: {section[:2000]}"


def decode_png(data):
    """(width, height, bytes per pixel, rows) of an 8-bit, non-interlaced RGB(A) PNG."""
    import struct
    import zlib
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + n
    w, hgt, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and interlace == 0 and ctype in (2, 6), ihdr
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = w * bpp
    prev, rows = bytearray(stride), []
    for y in range(hgt):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 255
        elif f == 3:
            for i in range(stride):
                line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, hgt, bpp, rows


def test_screenshot_console_png(prom, loaded, tmp_path):
    png = tmp_path / "console.png"
    out = chromium(f"--screenshot={png}", prom.url + "/consoles/fp8serve.html" + CONSOLE_HASH)
    assert out.returncode == 0 and png.is_file(), out.stderr[-3000:]
    data = png.read_bytes()
    assert len(data) > 20_000, f"{len(data)} bytes: blank?"
    w, hgt, bpp, rows = decode_png(data)
    assert (w, hgt) == WINDOW
    colors, non_white = set(), 0
    for r in rows[::2]:
        for i in range(0, len(r), bpp * 2):
            px = r[i:i + 3]
            colors.add(px)
            non_white += px != b"\xff\xff\xff"
    sampled = len(rows[::2]) * len(range(0, w * bpp, bpp * 2))
    assert len(colors) > 50, f"only {len(colors)} distinct colours: blank?"
    assert non_white / sampled > 0.05, f"{non_white / sampled:.1%} of the page is not white: blank?"
    keep = os.environ.get("FP8SERVE_CONSOLE_PNG")
    if keep:
        shutil.copyfile(png, keep)
        print(f"screenshot saved to {keep}")
