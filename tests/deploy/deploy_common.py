"""Shared by the deployment tests: fp8serve's metric contract, a small PromQL reader (which metric
names and label names an expression uses), and where the deploy/ files are.

The contract is the fixed list of metric names the server exports (README, "Metrics"): everything
in deploy/ (Grafana dashboard, Prometheus console, HPA, prometheus-adapter rule) may use only these.
"""
import json
import os
import pathlib
import re

ROOT = pathlib.Path(os.environ.get("FP8SERVE_SOURCE_DIR") or pathlib.Path(__file__).resolve().parents[2])
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "fp8serve.json"
CONSOLE = DEPLOY / "prometheus" / "consoles" / "fp8serve.html"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"

MV = ("model", "version")
GPU = ("gpu", "uuid")
# name -> (type, labels)
CONTRACT = {
    "fp8serve_requests_total": ("counter", MV + ("outcome",)),
    "fp8serve_inferences_total": ("counter", MV),
    "fp8serve_executions_total": ("counter", MV),
    "fp8serve_request_duration_seconds": ("histogram", MV),
    "fp8serve_queue_duration_seconds": ("histogram", MV),
    "fp8serve_compute_input_duration_seconds": ("histogram", MV),
    "fp8serve_compute_infer_duration_seconds": ("histogram", MV),
    "fp8serve_compute_output_duration_seconds": ("histogram", MV),
    "fp8serve_batch_size_rows": ("histogram", MV),
    "fp8serve_pending_requests": ("gauge", MV),
    "fp8serve_inflight_batches": ("gauge", MV),
    "fp8serve_model_ready": ("gauge", MV),
    "fp8serve_model_instances": ("gauge", MV),
    "fp8serve_build_info": ("gauge", ("version", "backend", "cuda")),
    "fp8serve_gpu_utilization_ratio": ("gauge", GPU),
    "fp8serve_gpu_memory_used_bytes": ("gauge", GPU),
    "fp8serve_gpu_memory_total_bytes": ("gauge", GPU),
}
OUTCOMES = {"success", "invalid", "queue_full", "timeout", "cancelled", "unavailable", "backend", "not_found"}
GPU_METRICS = {n for n, (_, labels) in CONTRACT.items() if labels == GPU}
# Labels Prometheus (job, instance) or Kubernetes service discovery (namespace, pod, ...) attach.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "service", "endpoint", "node"}


def series_names():
    """Every series name the contract allows in a query: histograms as _bucket/_sum/_count."""
    names = {}
    for name, (kind, labels) in CONTRACT.items():
        if kind == "histogram":
            names[name + "_bucket"] = set(labels) | {"le"}
            names[name + "_sum"] = set(labels)
            names[name + "_count"] = set(labels)
        else:
            names[name] = set(labels)
    return names


# ------------------------------------------------------------------------------------------ PromQL

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "atan2", "inf", "nan", "start", "end"}
_IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


def promql_usage(expr):
    """(metric names, {metric: label names in its matchers}, grouping label names) of a PromQL
    expression. Enough of PromQL for dashboards: string literals, selectors, ranges, grouping."""
    strings = []

    def keep_string(m):
        strings.append(m.group(0))
        return f'"\x00{len(strings) - 1}"'

    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', keep_string, expr)
    metrics, matchers, grouping = set(), {}, set()
    # name{matchers} and bare {matchers}
    for m in re.finditer(rf"({_IDENT})?\s*\{{([^}}]*)\}}", text):
        name = m.group(1)
        labels = set(re.findall(rf"({_IDENT})\s*(?:=~|!~|!=|=)", m.group(2)))
        if name and name not in _KEYWORDS:
            matchers.setdefault(name, set()).update(labels)
        else:
            matchers.setdefault(None, set()).update(labels)
    text = re.sub(r"\{[^}]*\}", " ", text)
    for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        grouping.update(x.strip() for x in m.group(1).split(",") if x.strip())
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    for m in re.finditer(rf"(?<![\w.:]){_IDENT}", text):
        word = m.group(0)
        rest = text[m.end():].lstrip()
        if rest.startswith("("):  # a function or aggregation
            continue
        if word.lower() in _KEYWORDS or re.fullmatch(r"\d.*", word):
            continue
        metrics.add(word)
    metrics.update(n for n in matchers if n)
    return metrics, matchers, grouping


def check_promql(expr, where):
    """Problems (a list of strings) with the metric and label names an expression uses."""
    allowed = series_names()
    metrics, matchers, grouping = promql_usage(expr)
    problems = []
    if not metrics:
        problems.append(f"{where}: names no metric: {expr}")
    for name in sorted(metrics):
        if name not in allowed:
            problems.append(f"{where}: {name!r} is not in the metric contract: {expr}")
    known = set().union(*(allowed.get(n, set()) for n in metrics)) if metrics else set()
    for name, labels in matchers.items():
        scope = allowed.get(name, known) if name else known
        for label in sorted(labels - scope - TARGET_LABELS - {"__name__"}):
            problems.append(f"{where}: label {label!r} is not a label of {name or 'its metrics'}: {expr}")
    for label in sorted(grouping - known - TARGET_LABELS):
        problems.append(f"{where}: groups by {label!r}, which none of {sorted(metrics)} has: {expr}")
    for value in re.findall(r"outcome\s*(?:=|!=)\s*[\"']([^\"']*)[\"']", expr):
        if value not in OUTCOMES:
            problems.append(f"{where}: outcome {value!r} is not one of {sorted(OUTCOMES)}: {expr}")
    return problems


# --------------------------------------------------------------------------------------- dashboard

def dashboard():
    return json.loads(DASHBOARD.read_text())


def dashboard_panels(dash=None):
    """Every non-row panel, rows' nested panels included."""
    out = []
    for p in (dash or dashboard())["panels"]:
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def dashboard_queries(dash=None):
    """(panel title, refId, expr, is_gpu_panel) for every target of every panel."""
    out = []
    for p in dashboard_panels(dash):
        for t in p.get("targets", []):
            expr = t.get("expr", "")
            gpu = any(n in expr for n in GPU_METRICS)
            out.append((p["title"], t.get("refId", "?"), expr, gpu))
    return out


def grafana_substitute(expr, variables, rate_interval="1m", interval="15s"):
    """Grafana's variables as a user sees them: $__rate_interval, $__interval, ${x}, $x, [[x]]."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("${__rate_interval}", rate_interval)
    expr = expr.replace("$__interval", interval).replace("${__interval}", interval)
    expr = expr.replace("$__range", "1h")
    for name, value in variables.items():
        expr = expr.replace("${" + name + "}", value).replace("[[" + name + "]]", value)
        expr = re.sub(r"\$" + re.escape(name) + r"\b", lambda _: value, expr)
    return expr


# ----------------------------------------------------------------------------------------- console

def console_template_metrics():
    """Every fp8serve_* name in the console template's text (for the contract check)."""
    return set(re.findall(r"\bfp8serve_[a-z0-9_]+", CONSOLE.read_text()))


def rendered_console_exprs(html):
    """The PromConsole.Graph expressions of a console page as Prometheus rendered it (JS strings)."""
    out = []
    for block in re.findall(r"expr:\s*(\[.*?\]|\"(?:[^\"\\]|\\.)*\")\s*,", html, re.S):
        for s in re.findall(r"\"((?:[^\"\\]|\\.)*)\"", block):
            out.append(json.loads('"' + re.sub(r"\\x([0-9a-fA-F]{2})", r"\\u00\1", s) + '"'))
    return out
