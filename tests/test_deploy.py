"""deploy/: the alert rules, dashboard, unit, image and manifests are checked for real.

* every PromQL expression (alerts and dashboard) parses: ``promtool check rules`` when
  Debian's ``prometheus`` package is installed, else a structural fallback;
* every alert fires under its fault and stays silent otherwise: ``promtool test rules``;
* every metric name they reference exists in the registry the daemon exposes;
* with a ``prometheus`` binary: a real Prometheus scrapes the daemon running against the
  simulator, every dashboard query returns data, and alerts fire under simulator faults;
* ``systemd-analyze verify`` on the unit; the example config loads and names every option;
  the k8s shard wrapper derives ``--shard`` from the pod ordinal and the count from
  ``spec.replicas`` (``kubectl kustomize``); the image installs its dependencies before its
  source, every sink client, a default command that runs as shipped, and a HEALTHCHECK that
  succeeds against a live ``/healthz`` on the port from the environment.

Tests that run another program (promtool, systemd-analyze, sh, kubectl, Prometheus) are
marked ``integration``: the unit tier runs no subprocess.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry

from orderbook.types import Book, BookDelta
from sinks.fanout import Fanout, OverflowPolicy, SinkSpec
from sinks.gate import PublishGate
from sinks.memory import MemorySink
from sinks.records import Record
from streamer.app import Discovery
from streamer.config import Settings, load_settings
from streamer.feed.budget import RatePacer
from streamer.feed.feed import Feed
from streamer.feed.supervisor import run_feed
from streamer.feed.universe import Universe
from streamer.ha.lease import Lease, make_backend, parse_lease_url
from streamer.ops.health import serve_http
from streamer.ops.metrics import Metrics
from streamer.simulator import Simulator, SimulatorConfig
from streamer.transport.rest import RestClient, RetryPolicy
from tests.test_metrics import FakeFeed, add_market

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

KUBECTL = shutil.which("kubectl")

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed "
                                    "(apt-get install prometheus)")

_NAME_RE = re.compile(r"\b((?:limitless_streamer|process|python)_[a-zA-Z0-9_]+)")
_RANGE_RE = re.compile(r"\[\d+[smhd]\]")
_ALERT_RE = re.compile(r"^\s*- alert: (\w+)\s*$", re.M)


# -- reading the files ------------------------------------------------------------------------


def alert_rules() -> list[tuple[str, str]]:
    """``(alert name, expr)`` from deploy/alerts.yml.

    A small reader for the file's own layout (inline ``expr:`` or an ``expr: |`` block),
    since PyYAML is not a dependency; promtool (below) is the authoritative parser and
    the tests check that both see the same number of rules.
    """
    lines = (DEPLOY / "alerts.yml").read_text().splitlines()
    rules: list[tuple[str, str]] = []
    name = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        found = _ALERT_RE.match(line)
        if found:
            name = found[1]
        stripped = line.strip()
        if stripped.startswith("expr:"):
            inline = stripped[len("expr:"):].strip()
            if inline not in ("|", ">"):
                rules.append((name, inline))
            else:
                indent = len(line) - len(line.lstrip())
                block = []
                i += 1
                while i < len(lines) and (not lines[i].strip()
                                          or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i].strip())
                    i += 1
                rules.append((name, " ".join(b for b in block if b)))
                continue
        i += 1
    return rules


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    return data


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs(rate_interval: str = "1m") -> list[tuple[str, str]]:
    """``(panel title, expr)`` with Grafana variables replaced by concrete PromQL."""
    return [(panel["title"], grafana_to_promql(target["expr"], rate_interval))
            for panel in panels(dashboard()) for target in panel.get("targets", [])]


def grafana_to_promql(expr: str, rate_interval: str = "1m") -> str:
    for var in ("$__rate_interval", "$__interval", "$__range"):
        expr = expr.replace(var, rate_interval)
    return re.sub(r"\$(job|instance|market)\b", ".*", expr)


def variable_queries() -> list[tuple[str, str, str]]:
    """``(variable, metric selector, label)`` of every ``label_values`` variable."""
    out = []
    for var in dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"]["query"])
        assert found, var["name"]
        out.append((var["name"], grafana_to_promql(found[1]), found[2]))
    return out


def all_exprs() -> list[tuple[str, str]]:
    return ([(f"alert {n}", e) for n, e in alert_rules()]
            + [(f"panel {t}", e) for t, e in dashboard_exprs()]
            + [(f"variable {v}", s) for v, s, _ in variable_queries()])


# -- the registry the daemon exposes ----------------------------------------------------------


def exposed_names() -> set[str]:
    """Every sample name the daemon's registry can expose (families with no samples too)."""
    metrics = Metrics(CollectorRegistry())
    feed = FakeFeed()
    add_market(feed.universe, "btc", ts=int(time.time() * 1000))
    metrics.bind(feed=feed, fanout=Fanout([SinkSpec(sink=MemorySink(name="mem"))]))
    spec = parse_lease_url("redis://127.0.0.1:1/0?key=lease")
    gate = PublishGate()
    metrics.bind(lease=Lease(spec, make_backend(spec), gate, on_acquired=print), gate=gate)
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "summary": ("_count", "_sum", "")}
    for family in metrics.registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.update(sample.name for sample in family.samples)
    return names


def test_deploy_every_referenced_metric_exists_in_the_registry() -> None:
    exposed = exposed_names()
    missing: dict[str, str] = {}
    for where, expr in all_exprs():
        for name in _NAME_RE.findall(expr):
            if name not in exposed:
                missing.setdefault(name, where)
    assert not missing, f"names not exposed by the daemon: {missing}"


def test_deploy_dashboard_covers_the_required_panels() -> None:
    dash = dashboard()
    titles = " | ".join(p["title"].lower() for p in panels(dash))
    for topic in ("feed connected", "reconnects", "frames / s", "events / s", "decode",
                  "rest requests", "429", "feed latency", "in-process latency", "queue depth",
                  "dropped", "spool", "staleness", "spreads"):
        assert topic in titles, topic
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))
    for panel in panels(dash):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]


def test_deploy_every_alert_has_a_firing_unit_test() -> None:
    tests = (DEPLOY / "alerts.test.yml").read_text()
    fired = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", tests))
    names = {n for n, _ in alert_rules()}
    assert len(names) >= 10
    assert names - fired == set()
    required = {"LimitlessFeedDown", "LimitlessNoData", "LimitlessMarketStale",
                "LimitlessBookDivergence", "LimitlessSinkDropping", "LimitlessSpoolFilling",
                "LimitlessRestThrottled"}
    assert required <= names


# -- PromQL parsing ---------------------------------------------------------------------------


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, check=False)


@pytest.mark.integration
@needs_promtool
def test_deploy_alert_rules_pass_promtool_check() -> None:
    result = _promtool("check", "rules", str(DEPLOY / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"SUCCESS: (\d+) rules found", result.stdout)
    assert found and int(found[1]) == len(alert_rules())


@pytest.mark.integration
@needs_promtool
def test_deploy_alert_rules_pass_promtool_unit_tests() -> None:
    result = _promtool("test", "rules", "alerts.test.yml", cwd=DEPLOY)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
@needs_promtool
def test_deploy_dashboard_queries_parse_with_promtool(tmp_path: Path) -> None:
    exprs = [e for _, e in dashboard_exprs()] + [s for _, s, _ in variable_queries()]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quoted = False
    for char in expr:
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack and not quoted


_FUNCTIONS = frozenset({"sum", "max", "min", "count", "topk", "rate", "increase", "deriv",
                        "changes", "histogram_quantile", "max_over_time", "time", "by",
                        "on", "and", "or", "unless", "label_values"})


def test_deploy_promql_structural_fallback() -> None:
    """Runs everywhere (no promtool needed): brackets balance, only known functions."""
    for where, expr in all_exprs():
        assert _balanced(expr), where
        calls = set(re.findall(r"\b([a-z_]+)\s*\(", expr))
        assert calls <= _FUNCTIONS, (where, calls - _FUNCTIONS)


# -- systemd, config, k8s, image --------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
def test_deploy_systemd_unit_verifies(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    text = (DEPLOY / "limitless-streamer.service").read_text()
    binary = "/opt/limitless-streamer/bin/limitless-streamer"
    assert f"ExecStart={binary} run" in text
    # verify checks that ExecStart is executable: point it at this interpreter's install.
    local = shutil.which("limitless-streamer") or sys.executable
    unit = tmp_path / "limitless-streamer.service"
    unit.write_text(text.replace(binary, local))
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True,
                            text=True, timeout=60, check=False)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if "limitless-streamer.service" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr
    for key in ("Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
                "CapabilityBoundingSet=\n", "EnvironmentFile=", "StateDirectory=",
                "SystemCallFilter=@system-service", "TimeoutStopSec=15", "MemoryMax="):
        assert key in text, key


def _settings_keys(struct: type[msgspec.Struct], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for field in msgspec.structs.fields(struct):
        name = prefix + field.name
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            keys |= _settings_keys(field.type, name + ".")
        else:
            keys.add(name)
    return keys


def _toml_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        if isinstance(value, dict):
            keys |= _toml_keys(value, prefix + key + ".")
        else:
            keys.add(prefix + key)
    return keys


def _commented_keys(text: str) -> set[str]:
    """Keys shown as ``# key = value`` (documented, left at their default)."""
    keys, prefix = set(), ""
    for line in text.splitlines():
        header = re.fullmatch(r"\[([\w.]+)\]", line.strip())
        if header:
            prefix = header[1] + "."
        found = re.match(r"#\s?(\w+) = \S", line)
        if found:
            keys.add(prefix + found[1])
    return keys


def test_deploy_example_config_loads_and_documents_every_option() -> None:
    path = DEPLOY / "config.example.toml"
    load_settings(str(path), {})
    text = path.read_text()
    present = _toml_keys(tomllib.loads(text)) | _commented_keys(text)
    assert _settings_keys(Settings) - present == set()


def _shard_script() -> str:
    text = (DEPLOY / "k8s.yaml").read_text()
    found = re.search(r"args:\n\s+- \|\n((?:\s{14}.*\n)+)", text)
    assert found, "shard wrapper script not found in k8s.yaml"
    return textwrap.dedent(found[1])


def _run_shard_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "limitless-streamer"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    return subprocess.run(["/bin/sh", "-c", _shard_script()],
                          env={"PATH": f"{tmp_path}:/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.integration
@pytest.mark.parametrize(("env", "expected"), [
    ({"POD_NAME": "limitless-streamer-0", "POD_INDEX": ""}, "0/3"),
    ({"POD_NAME": "limitless-streamer-2", "POD_INDEX": ""}, "2/3"),
    ({"POD_NAME": "x", "POD_INDEX": "1"}, "1/3"),  # the pod-index label wins
])
def test_deploy_k8s_shard_wrapper_derives_shard_from_ordinal(
    tmp_path: Path, env: dict[str, str], expected: str,
) -> None:
    result = _run_shard_script(tmp_path, SHARD_COUNT="3", **env)
    assert result.returncode == 0, result.stderr
    assert f"--shard {expected}" in result.stdout
    assert "--metrics-addr 0.0.0.0:9464" in result.stdout


@pytest.mark.integration
@pytest.mark.parametrize(("env", "words"), [
    ({"POD_NAME": "streamer", "SHARD_COUNT": "3"}, "ordinal"),
    ({"POD_NAME": "limitless-streamer-3", "SHARD_COUNT": "3"}, "not below SHARD_COUNT=3"),
    ({"POD_NAME": "limitless-streamer-0", "SHARD_COUNT": "from spec.replicas"}, "apply -k"),
])
def test_deploy_k8s_shard_wrapper_refuses_a_wrong_ordinal_or_count(
    tmp_path: Path, env: dict[str, str], words: str,
) -> None:
    result = _run_shard_script(tmp_path, **env)
    assert result.returncode == 2
    assert words in result.stderr and result.stdout == ""


def test_deploy_k8s_manifest_wires_probes_scrape_shards_and_disruption_budget() -> None:
    text = (DEPLOY / "k8s.yaml").read_text()
    assert re.search(r"^\s+replicas: \d+", text, re.M)
    # The count has one home, spec.replicas; no second literal to keep in step.
    assert not re.search(r'name: SHARD_COUNT\n\s+value: "\d+"', text)
    for needle in ("kind: StatefulSet", "path: /healthz", "path: /readyz",
                   'prometheus.io/scrape: "true"', 'prometheus.io/port: "9464"',
                   "kind: Secret", "secretRef:", "runAsNonRoot: true",
                   "kind: PodDisruptionBudget", "maxUnavailable: 1",
                   "apps.kubernetes.io/pod-index"):
        assert needle in text, needle
    kustomization = (DEPLOY / "kustomization.yaml").read_text()
    assert "fieldPath: spec.replicas" in kustomization and "SHARD_COUNT" in kustomization


@pytest.mark.integration
@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
def test_deploy_kustomize_copies_replicas_into_shard_count() -> None:
    assert KUBECTL is not None
    result = subprocess.run([KUBECTL, "kustomize", str(DEPLOY)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    replicas = re.search(r"^\s+replicas: (\d+)", result.stdout, re.M)
    count = re.search(r'name: SHARD_COUNT\n\s+value: "(\d+)"', result.stdout)
    assert replicas and count and replicas[1] == count[1]
    assert "kind: PodDisruptionBudget" in result.stdout


def _dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def test_deploy_dockerfile_pins_the_base_and_installs_dependencies_before_the_source() -> None:
    text = _dockerfile()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base[1])
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    deps = text.index("COPY pyproject.toml deploy/requirements.py ./")
    install_deps = text.index("pip install -r requirements.txt")
    source = text.index("COPY . .")
    assert deps < install_deps < source
    assert "pip install --no-build-isolation '.[all]'" in text[source:]
    user = re.search(r"^USER (\S+)", text, re.M)
    assert user and not user[1].startswith(("root", "0"))
    assert "EXPOSE 9464" in text and "METRICS_PORT=9464" in text


def test_deploy_requirements_helper_lists_every_sink_client() -> None:
    import runpy

    helper = runpy.run_path(str(DEPLOY / "requirements.py"))
    pyproject = DEPLOY.parent / "pyproject.toml"
    reqs = helper["requirements"](pyproject, ["all"])
    base = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    assert reqs[: len(base)] == base
    names = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}
    assert {"nats-py", "redis"} <= names
    assert not any(r.startswith("limitless-streamer") for r in reqs)
    with pytest.raises(SystemExit, match="no extra named"):
        helper["requirements"](pyproject, ["carrier-pigeon"])


def test_deploy_dockerfile_default_command_runs_without_edits() -> None:
    from streamer.cli import _overrides, build_parser, preflight_sinks

    text = _dockerfile()
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd
    args = json.loads(cmd[1])
    ns = build_parser().parse_args(["run", "--metrics-addr", "0.0.0.0:9464", *args])
    settings = load_settings(ns.config, _overrides(ns))
    preflight_sinks(settings)
    assert settings.all_markets and settings.sinks == ("stdout:",)


@pytest.mark.integration
def test_deploy_dockerfile_entrypoint_passes_the_port_and_the_arguments(tmp_path: Path) -> None:
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", _dockerfile(), re.M)
    assert entry
    argv = json.loads(entry[1])
    fake = tmp_path / "limitless-streamer"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "METRICS_PORT": "9500"}
    result = subprocess.run([*argv, "--all-markets", "--sink", "file:/x y"], env=env,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "run --metrics-addr 0.0.0.0:9500 --all-markets --sink file:/x y"


@pytest.mark.integration
@pytest.mark.anyio
async def test_deploy_dockerfile_healthcheck_command_succeeds_against_healthz() -> None:
    check = re.search(r'CMD \["python", "-c", "(.+)"\]', _dockerfile())
    assert check and "/healthz" in check[1] and "METRICS_PORT" in check[1]
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    async with anyio.create_task_group() as tg:
        port = await tg.start(partial(serve_http, "127.0.0.1:0", metrics, metrics.readiness))
        result = await anyio.run_process([sys.executable, "-c", check[1]], check=False,
                                         env={"METRICS_PORT": str(port)})
        assert result.returncode == 0, result.stderr
        tg.cancel_scope.cancel()


def test_deploy_dashboard_imports_with_a_data_source_input() -> None:
    dash = dashboard()
    inputs = dash["__inputs"]
    assert [(i["name"], i["type"], i["pluginId"]) for i in inputs] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"
    market = variables["market"]
    assert not market["includeAll"] and market["current"] == {}  # first market, not All
    topk = [t for p in panels(dash) for t in p.get("targets", []) if "topk(" in t["expr"]]
    assert len(topk) >= 3
    assert all(t.get("instant") is True and t.get("range") is False for t in topk)


# -- a real Prometheus against the daemon on the simulator ------------------------------------


class TimedSink:
    """Delegates to a sink and reports each written batch, like the fan-out hook will.

    It also observes exchange → receive latency from the book records: the same quantity
    the feed observes once it owns ``stats.latency``.
    """

    def __init__(self, inner: Any, metrics: Metrics, *, delay_s: float = 0.0) -> None:
        self.inner, self.name, self._metrics, self._delay_s = inner, inner.name, metrics, delay_s

    async def open(self) -> None:
        await self.inner.open()

    async def write(self, batch: Sequence[Record]) -> None:
        if self._delay_s:
            await anyio.sleep(self._delay_s)
        await self.inner.write(batch)
        self._metrics.on_written(self.name, batch)
        for record in batch:
            if isinstance(record, Book | BookDelta):
                self._metrics.feed_latency.observe((record.recv_ts - record.ts) / 1000.0)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def run_daemon(settings: Settings, metrics: Metrics, specs: list[SinkSpec], *,
                     task_status: TaskStatus[Feed] = anyio.TASK_STATUS_IGNORED) -> None:
    """``streamer.app.run``'s wiring plus the metrics bindings it makes."""
    fanout = Fanout(specs, drain_timeout_s=1.0)
    budget = RatePacer(settings.rest.max_in_flight, settings.rest.min_interval_s)
    metrics.bind(fanout=fanout, budget=budget, sinks=[spec.sink for spec in specs])
    async with httpx.AsyncClient(timeout=settings.rest.timeout_s) as http:
        rest = RestClient(http, base_url=settings.api_url, observer=metrics.rest,
                          retry=RetryPolicy(max_attempts=settings.rest.max_attempts,
                                            backoff=settings.rest.backoff))
        async with anyio.create_task_group() as tg:
            await tg.start(fanout.run)
            feed = Feed(settings, rest, fanout, Universe())
            discovery = Discovery(settings, rest, feed)
            feed.on_market_event = discovery.on_market_event
            metrics.bind(feed=feed)
            await tg.start(discovery.run)
            await tg.start(run_feed, feed, settings.ws_url, settings.feed, None)
            task_status.started(feed)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


FAST_WINDOW = "2s"
"""Every range of the rules and dashboards, in the real-Prometheus test: four scrapes."""
SCRAPE_INTERVAL = "500ms"


def fast_rules() -> str:
    """alerts.yml with every range at FAST_WINDOW and every ``for`` at 0 s (not minutes)."""
    text = (DEPLOY / "alerts.yml").read_text()
    text = _RANGE_RE.sub(f"[{FAST_WINDOW}]", text)
    return re.sub(r"for: \d+[smh]", "for: 0s", text)


@dataclass
class PromApi:
    client: httpx.AsyncClient

    async def query(self, expr: str) -> list[dict[str, Any]]:
        reply = await self.client.get("/api/v1/query", params={"query": expr})
        body = reply.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def firing(self) -> set[str]:
        reply = await self.client.get("/api/v1/alerts")
        return {a["labels"]["alertname"] for a in reply.json()["data"]["alerts"]
                if a["state"] == "firing"}

    async def wait(self, predicate: Any, what: str, timeout_s: float = 30.0) -> None:
        with anyio.move_on_after(timeout_s):
            while not await predicate():
                await anyio.sleep(0.2)
            return
        pytest.fail(f"timed out waiting for {what}")


@asynccontextmanager
async def prometheus(tmp_path: Path, target_port: int) -> AsyncIterator[PromApi]:
    assert PROMETHEUS is not None
    port = _free_port()
    (tmp_path / "rules.yml").write_text(fast_rules())
    config = {"global": {"scrape_interval": SCRAPE_INTERVAL,
                         "evaluation_interval": SCRAPE_INTERVAL, "scrape_timeout": "450ms"},
              "rule_files": [str(tmp_path / "rules.yml")],
              "scrape_configs": [{"job_name": "limitless-streamer", "static_configs": [
                  {"targets": [f"127.0.0.1:{target_port}"]}]}]}
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))
    log = (tmp_path / "prometheus.log").open("wb")
    command = [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
               f"--storage.tsdb.path={tmp_path / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}"]
    try:
        async with await anyio.open_process(command, stdout=log, stderr=log) as process:
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                             timeout=5) as client:
                    with anyio.fail_after(30):
                        while True:
                            try:
                                if (await client.get("/-/ready")).status_code == 200:
                                    break
                            except httpx.TransportError:
                                pass
                            await anyio.sleep(0.2)
                    yield PromApi(client)
            finally:
                process.terminate()
                with anyio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    finally:
        log.close()


def _expected_empty(feed: Feed, metrics: Metrics) -> set[str]:
    """Metrics that may have no samples in this run, and why."""
    empty = set()
    if not any(getattr(s, "spool", None) is not None for s in metrics.sinks):
        empty.add("limitless_streamer_sink_spool_bytes")  # no spooled broker sink here
    if not feed.stats.last_frame_monotonic:
        empty.add("limitless_streamer_feed_last_frame_age_seconds")  # feed does not stamp it
    if metrics.lease is None:  # no --lease here (tests/brokers/test_lease_failover.py has it)
        empty |= {"limitless_streamer_lease_held", "limitless_streamer_lease_takeovers_total"}
    return empty


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed "
                    "(apt-get install prometheus)")
@pytest.mark.anyio
async def test_deploy_real_prometheus_scrapes_daemon_dashboards_and_alerts(
    tmp_path: Path,
) -> None:
    config = SimulatorConfig(seed=4, markets=4, groups=0, rate_hz=60.0, rest_429_rate=0.3,
                             ping_interval_ms=300, ping_timeout_ms=300)
    metrics = Metrics(CollectorRegistry())
    main_sink = TimedSink(MemorySink(name="memory"), metrics)
    slow_sink = TimedSink(MemorySink(name="slow"), metrics, delay_s=0.2)
    specs = [SinkSpec(sink=main_sink),
             SinkSpec(sink=slow_sink, policy=OverflowPolicy.DROP_NEWEST, queue_size=4)]
    sim = Simulator(config)
    async with anyio.create_task_group() as tg:
        address = await tg.start(sim.run)
        settings = load_settings(None, {
            "api_url": address.api_url, "ws_url": address.ws_url, "all_markets": True,
            "shutdown_grace_s": 1.0,
            "feed": {"connect_timeout_s": 1.0,
                     "backoff": {"initial_s": 0.05, "cap_s": 0.2}},
            "rest": {"backoff": {"initial_s": 0.05, "cap_s": 0.2}},
            # Continuous REST audits: checks, divergence series and 429s keep flowing.
            "health": {"audit_interval_s": 0.5, "audit_sample": 2, "probe_check_s": 0.5},
        })
        feed = await tg.start(partial(run_daemon, settings, metrics, specs))
        http_scope = anyio.CancelScope()

        async def serve(*, task_status: TaskStatus[int]) -> None:
            with http_scope:
                await serve_http("127.0.0.1:0", metrics, metrics.readiness,
                                 task_status=task_status)

        port = await tg.start(serve)
        async with prometheus(tmp_path, port) as prom:  # its first scrape takes ~5 s
            for kicks in (1, 2):  # reconnect series (by reason) and resubscribe re-seeds
                await wait_until(lambda: feed.stats.connected and all(
                    e.sync.seeded for e in feed.universe.active()) and feed.universe.active())
                sim.kick_all()
                await wait_until(lambda k=kicks: sum(feed.stats.disconnects.values()) >= k)

            # 1. Every dashboard query and variable returns data from the live daemon.
            async def scraped_enough() -> bool:
                result = await prom.query("count_over_time(limitless_streamer_feed_frames_total"
                                          "[30s]) >= 6")
                return bool(result)

            await prom.wait(scraped_enough, "six scrapes of the daemon")
            assert fanout_has_drops(metrics), "the slow drop-newest sink should drop"
            empty_ok = _expected_empty(feed, metrics)
            missing = []
            for title, expr in dashboard_exprs(rate_interval=FAST_WINDOW):
                if not await prom.query(expr) and not set(_NAME_RE.findall(expr)) & empty_ok:
                    missing.append((title, expr))
            for name, selector, label in variable_queries():
                if not await prom.query(f"count by ({label}) ({selector})"):
                    missing.append((f"variable {name}", selector))
            assert not missing, f"queries without data: {missing}"

            # 2. Alerts fire under the simulator's faults (fast windows, for: 0s).
            def firing(*names: str) -> Any:
                async def check() -> bool:
                    return set(names) <= await prom.firing()
                return check

            await prom.wait(firing("LimitlessRestThrottled", "LimitlessSinkDropping"),
                            "RestThrottled (429s) and SinkDropping (slow drop-newest sink)")
            assert "LimitlessNoData" not in await prom.firing()  # the short window is enough
            sim.pause()  # books freeze, pings go on: connected but no data
            await prom.wait(firing("LimitlessNoData"), "NoData while paused")
            sim.stall(30.0)  # total silence: heartbeat timeout, reconnects stall
            await prom.wait(firing("LimitlessFeedDown", "LimitlessNotReady"),
                            "FeedDown and NotReady during a stall")
            http_scope.cancel()  # the endpoint disappears
            await prom.wait(firing("LimitlessStreamerAbsent"), "StreamerAbsent")
        tg.cancel_scope.cancel()


async def wait_until(predicate: Any, timeout_s: float = 20.0) -> None:
    with anyio.fail_after(timeout_s):
        while not predicate():
            await anyio.sleep(0.05)


def fanout_has_drops(metrics: Metrics) -> bool:
    return metrics.fanout is not None and metrics.fanout.stats["slow"].dropped > 0


def test_deploy_fast_rules_rewrite_every_window() -> None:
    text = fast_rules()
    assert not re.search(rf"\[(?!{FAST_WINDOW}\])", text.split("groups:", 1)[1])
    assert "for: 0s" in text and not re.search(r"for: [1-9]", text)


def test_readme_lists_every_exported_metric() -> None:
    readme = (DEPLOY.parent / "README.md").read_text()
    exported = {n.removeprefix("limitless_streamer_").removesuffix("_total")
                for n in exposed_names() if n.startswith("limitless_streamer_")}
    exported = {re.sub(r"_(bucket|count|sum)$", "", n) for n in exported}
    missing = {n for n in exported if f"`{n}" not in readme and f"`{n}_total`" not in readme}
    assert not missing, missing

