"""deploy/ is correct by construction: what can be checked without Docker or Kubernetes is checked here.

- Prometheus: `promtool check config` (rule files resolved), `promtool check rules`, `promtool test rules`
  (the alert unit tests), every alert has `for`, a severity and on-call annotations.
- Grafana: the dashboard is valid JSON, every panel has queries on the templated datasource, and every
  query is valid PromQL (checked by promtool).
- Metric names: every metric that a dashboard query, a dashboard variable or a rule reads is exported on
  a real worker's /metrics after some traffic (or is a recording rule of alerts.yml, or Prometheus' `up`),
  histogram buckets named in rules (`le="1.0"`) exist, and `rate()` only reads counters and histograms.
- Compose, Kubernetes and the Dockerfile: every SEGMENT_ENGINE_* variable they set is a setting that
  engine.settings.load_settings reads, probes hit routes the engine serves, ports agree with the web
  port, the data directory is a volume (a volumeClaimTemplate on Kubernetes), and the pieces refer to
  each other correctly (scrape targets, Grafana mounts, Kafka listener, partitions, topics Job).
"""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.api.routes import all_routes
from engine.rules.errors import error_codes
from engine.settings import PREFIX, Settings, load_settings
from engine.workspaces import load_workspaces
from tests.tools import promtool_binary

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "segment-engine.json"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"

WORKER_SERVICES = ("worker-1", "worker-2")
LIVE, READY = "/health/live", "/health/ready"


# ---- tools ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> Path:
    """promtool from Debian's prometheus package, unpacked into .cache/prometheus on first use."""
    return promtool_binary()


def run_promtool(promtool: Path, *args: str, cwd: Path = REPO) -> str:
    result = subprocess.run([str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


# ---- PromQL --------------------------------------------------------------------------------------------

PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                   "offset", "atan2", "inf", "nan", "start", "end"}
GRAFANA_INTERVALS = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}


def without_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


def metric_names(expr: str) -> set[str]:
    """Names of the series a PromQL expression reads (functions, keywords, labels and durations removed)."""
    text = without_strings(expr)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def grafana_to_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced, so promtool can parse it."""
    def replace(match: re.Match[str]) -> str:
        name = (match.group(1) or match.group(2)).split(":")[0]
        return "5m" if name in GRAFANA_INTERVALS else "x"

    return re.sub(r"\$\{([^}]*)\}|\$(\w+)", replace, expr)


def test_metric_names_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (kind, le) (rate(segment_engine_evaluation_seconds_bucket'
            '{job=~"$job", le="1.0"}[$__rate_interval]))) / on (job) group_left up offset 5m '
            '> bool 1 and absent(job:recorded:ratio_rate5m) or topk(10, x_total)')
    assert metric_names(expr) == {"segment_engine_evaluation_seconds_bucket", "up", "job:recorded:ratio_rate5m",
                                  "x_total"}
    assert grafana_to_promql('rate(a{i=~"$instance"}[$__rate_interval]) + ${datasource}') == 'rate(a{i=~"x"}[5m]) + x'


# ---- the files -----------------------------------------------------------------------------------------


def load_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows
    return panels


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target."""
    return [(f"panel {p['id']} {p['title']!r} {t.get('refId')}", t["expr"])
            for p in dashboard_panels(dashboard) if p["type"] != "row" for t in p.get("targets", [])]


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, selector) of the query variables: label_values(selector, label) reads `selector`."""
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query)
        assert match, f"variable {var['name']}: expected label_values(selector, label), got {query!r}"
        out.append((f"variable {var['name']}", match.group(1)))
    return out


def rule_queries() -> list[tuple[str, str]]:
    return [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in load_rules()]


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml_docs(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"{key} defined twice"
            objects[key] = doc
    return objects


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return env


def container_env(container: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    """A container's environment as Kubernetes builds it: envFrom ConfigMaps, then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert ("ConfigMap", name) in objects, f"container {container['name']}: no ConfigMap {name}"
        env.update({k: str(v) for k, v in objects[("ConfigMap", name)]["data"].items()})
    for item in container.get("env", []):
        env[item["name"]] = str(item.get("value", ""))
    return env


def statefulset(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    sets = [doc for (kind, _), doc in objects.items() if kind == "StatefulSet"]
    assert len(sets) == 1, "expected one StatefulSet"
    return sets[0]


# ---- Prometheus ----------------------------------------------------------------------------------------


def test_promtool_check_config(promtool: Path) -> None:
    output = run_promtool(promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert "1 rule files found" in output, output


def test_promtool_check_rules(promtool: Path) -> None:
    run_promtool(promtool, "check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))


def test_promtool_alert_unit_tests(promtool: Path) -> None:
    output = run_promtool(promtool, "test", "rules", "alerts_test.yml", cwd=PROMETHEUS_DIR)
    assert "SUCCESS" in output, output


def test_alert_unit_tests_prove_firing_and_silence() -> None:
    """The DLQ and worker-down alerts (at least) have a case where they fire and one where they stay silent."""
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    fires: set[str] = set()
    silent: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {r["alert"] for r in load_rules() if "alert" in r}
    assert fires <= alerts and silent <= alerts, f"tests name unknown alerts: {(fires | silent) - alerts}"
    for required in ("SegmentEngineDeadLetters", "SegmentEngineWorkerDown"):
        assert required in fires and required in silent, f"{required}: needs a firing and a silent case"
    untested = alerts - fires
    assert not untested, f"alerts without a firing test case: {sorted(untested)}"


def test_alerts_tell_the_on_call_what_to_do() -> None:
    alerts = [r for r in load_rules() if "alert" in r]
    assert {a["alert"] for a in alerts} >= {
        "SegmentEngineConsumerLagGrowing", "SegmentEngineDeadLetters", "SegmentEngineWorkerDown",
        "SegmentEngineWorkerNotReady", "SegmentEngineLatencyBudgetBurnFast", "SegmentEngineSchedulerBacklogGrowing"}
    for alert in alerts:
        name = alert["alert"]
        assert alert.get("for"), f"{name}: no `for`"
        assert alert.get("labels", {}).get("severity") in ("critical", "warning", "info"), f"{name}: severity"
        annotations = alert.get("annotations", {})
        assert annotations.get("summary"), f"{name}: no summary"
        assert len(annotations.get("description", "")) > 100, f"{name}: the description should say what to do"


def test_slo_burn_uses_multiple_windows() -> None:
    rules = {r.get("alert") or r.get("record"): r for r in load_rules()}
    fast = rules["SegmentEngineLatencyBudgetBurnFast"]["expr"]
    used = {name for name in metric_names(fast)}
    assert {"job:segment_engine_change_to_event_slow:ratio_rate5m", "job:segment_engine_change_to_event_slow:ratio_rate1h",
            "job:segment_engine_change_to_event_slow:ratio_rate30m", "job:segment_engine_change_to_event_slow:ratio_rate6h"} <= used
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        expr = rules[f"job:segment_engine_change_to_event_slow:ratio_rate{window}"]["expr"]
        assert f"[{window}]" in expr and 'le="1.0"' in expr and "segment_engine_change_to_event_seconds_count" in expr


# ---- Grafana -------------------------------------------------------------------------------------------


def test_dashboard_panels_have_queries_on_the_templated_datasource() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds_vars = [name for name, v in variables.items() if v["type"] == "datasource" and v["query"] == "prometheus"]
    assert ds_vars, "the datasource must be a template variable"
    allowed_uids = {f"${{{name}}}" for name in ds_vars} | {"${DS_PROMETHEUS}"}
    panels = [p for p in dashboard_panels(dashboard) if p["type"] != "row"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        assert panel.get("title") and panel.get("gridPos"), where
        assert panel.get("targets"), f"{where}: no query"
        assert panel["datasource"]["uid"] in allowed_uids, f"{where}: datasource {panel['datasource']}"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{where}: empty query {target}"
            assert target.get("refId"), f"{where}: query without refId"
            assert target.get("datasource", panel["datasource"])["uid"] in allowed_uids, where
    for name, var in variables.items():
        if var["type"] == "query":
            assert var["datasource"]["uid"] in allowed_uids, f"variable {name}"


def test_dashboard_covers_the_operational_questions() -> None:
    """One panel (at least) per question of the issue, found by the metrics the panels read."""
    read = {name for _, expr in dashboard_queries(load_dashboard()) for name in metric_names(expr)}
    for metric in ("segment_engine_changes_total", "segment_engine_behaviour_events_total",
                   "segment_engine_consumer_lag", "segment_engine_change_to_event_seconds_bucket",
                   "segment_engine_evaluation_seconds_bucket", "segment_engine_segment_transitions_total",
                   "segment_engine_segment_members", "segment_engine_dead_letters_total",
                   "segment_engine_scheduler_backlog", "segment_engine_backfill_pending_records",
                   "faust_rebalance_done_latency_count", "segment_engine_ready"):
        assert metric in read, f"no panel reads {metric}"
    exprs = [expr for _, expr in dashboard_queries(load_dashboard())]
    for quantile in ("0.5", "0.99"):
        assert any(f"histogram_quantile({quantile}, " in e and "change_to_event_seconds_bucket" in e for e in exprs)


def test_dashboard_queries_are_valid_promql(promtool: Path, tmp_path: Path) -> None:
    queries = dashboard_queries(load_dashboard())
    rules = [{"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)} for i, (_, expr) in enumerate(queries)]
    rules += [{"record": f"dashboard:variable_{i}", "expr": grafana_to_promql(selector)}
              for i, (_, selector) in enumerate(variable_queries(load_dashboard()))]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool(promtool, "check", "rules", str(path))


@pytest.mark.parametrize("where,expr", dashboard_queries(load_dashboard()) + rule_queries())
def test_queries_are_shaped_right(where: str, expr: str) -> None:
    """histogram_quantile aggregates keep `le`; rate/increase read counters or histogram series only."""
    text = without_strings(expr)
    if "histogram_quantile" in text:
        clauses = re.findall(r"\bby\s*\(([^)]*)\)", text)
        assert clauses and all("le" in [c.strip() for c in clause.split(",")] for clause in clauses), \
            f"{where}: every aggregation under histogram_quantile must keep le: {expr}"
    for name in re.findall(r"\b(?:rate|irate|increase)\(\s*([a-zA-Z_:][\w:]*)", text):
        assert name.endswith(("_total", "_bucket", "_count", "_sum")), f"{where}: rate() of {name}, not a counter"


# ---- against a real worker: exported metric names and the probe routes ---------------------------------


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def exported_names(exposition: str) -> set[str]:
    """Series names a Prometheus scrape of this text has, including families with no samples yet."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            names.add(name)
            if kind == "histogram":
                names |= {name + "_bucket", name + "_sum", name + "_count", name + "_created"}
            elif kind == "summary":
                names |= {name + "_sum", name + "_count", name + "_created"}
            elif kind == "counter":
                names |= {name.removesuffix("_total") + "_total", name.removesuffix("_total") + "_created"}
        elif line and not line.startswith("#"):
            match = re.match(r"[a-zA-Z_:][\w:]*", line)
            if match:
                names.add(match.group(0))
    return names


def sample_value(exposition: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in exposition.splitlines():
        match = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match:
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(match.group(2))
    return total


def test_every_metric_the_deploy_reads_is_exported(harness: Any) -> None:
    h = harness
    h.define_fixture_segments("acme")
    worker = h.start_worker()
    # Traffic that touches every labelled family: joins (pl-high-value), a behavioural event, a
    # conversation and a poison pill for the dead-letter counter.
    for i in range(20):
        h.publisher.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": f"c{i}", "version": 1,
                                            "fields": {"country": "PL", "lifetime_value": 5000}})
    h.publisher.publish_events("acme", [{"id": "o-1", "object_type": "contact", "record_id": "c1", "name": "purchase",
                                         "at": "2026-11-27T10:00:00Z", "properties": {"amount": 120}}])
    h.publisher.publish_conversation("acme", "conv-1", "c1")
    h.publisher.publish_raw(b"{not json", key=b"poison", partition=0)
    h.publisher.flush()

    def traffic_seen() -> str | None:
        status, text = scrape(worker.web_port)
        if status != 200:
            return None
        done = (sample_value(text, "segment_engine_changes_total", outcome="applied") >= 20
                and sample_value(text, "segment_engine_dead_letters_total") >= 1
                and sample_value(text, "segment_engine_change_to_event_seconds_count") >= 1)
        return text if done else None

    exposition = h.wait_for(traffic_seen, timeout=60, what="the traffic in /metrics")
    exported = exported_names(exposition)
    recorded = {r["record"] for r in load_rules() if "record" in r}
    available = exported | recorded | {"up"}

    missing: dict[str, list[str]] = {}
    dashboard = load_dashboard()
    for where, expr in dashboard_queries(dashboard) + variable_queries(dashboard) + rule_queries():
        for name in sorted(metric_names(expr) - available):
            missing.setdefault(name, []).append(where)
    assert not missing, "metrics read by deploy/ but not on a worker's /metrics:\n" + "\n".join(
        f"  {name}: {', '.join(wheres)}" for name, wheres in sorted(missing.items()))

    # Histogram buckets that rules and panels select by `le` must be real bucket boundaries.
    for where, expr in dashboard_queries(dashboard) + rule_queries():
        for metric, le in re.findall(r'([a-zA-Z_:][\w:]*_bucket)\{[^}]*\ble="([^"]+)"', expr):
            assert re.search(rf'^{metric}\{{[^}}]*le="{re.escape(le)}"', exposition, re.M), \
                f"{where}: {metric} has no bucket le=\"{le}\""

    # The probe paths answer on a real worker: live at once, ready once the registry and tables are in.
    assert scrape(worker.web_port, LIVE)[0] == 200
    h.wait_for(lambda: scrape(worker.web_port, READY)[0] == 200, timeout=30, what=f"{READY} = 200")


def test_every_outcome_series_exists_at_zero_before_the_first_incident(harness: Any) -> None:
    """An alert on `increase(segment_engine_dead_letters_total{code="state_too_large"}[10m]) > 0` must fire on
    a worker's first such dead letter: a series that only appears at its first increment has no earlier
    sample to increase from, and a dashboard shows "no data" instead of 0. So a worker that has seen no
    bad input at all already exports every dead-letter code and every outcome label, at 0."""
    worker = harness.start_worker()
    status, exposition = scrape(worker.web_port)
    assert status == 200
    series = dict(re.findall(r'^(segment_engine_\w+\{[^}]*\}) (\S+)$', exposition, re.M))
    codes = list(error_codes())
    # The codes come from the error classes; these are the ones README, "Bad input", and the hostile-input
    # tests name, so a broken derivation cannot pass by exporting nothing.
    assert {"malformed_json", "schema_violation", "unknown_workspace", "wrong_partition", "message_too_large",
            "field_type", "unknown_field", "not_importable", "invalid_rule", "state_too_large",
            "internal_error", "invalid_assignment_rules"} <= set(codes), codes
    expected = [f'segment_engine_dead_letters_total{{code="{code}"}}' for code in codes]
    expected += [f'segment_engine_changes_total{{outcome="{o}"}}' for o in ("applied", "stale", "deadlettered")]
    expected += [f'segment_engine_behaviour_events_total{{outcome="{o}"}}' for o in ("applied", "ignored")]
    expected += [f'segment_engine_conversations_total{{outcome="{o}"}}'
                 for o in ("assigned", "unassigned", "duplicate", "deadlettered")]
    expected += [f'segment_engine_imported_members_total{{mode="{m}"}}' for m in ("add", "remove")]
    expected += [f'segment_engine_membership_events_total{{cause="{c}",type="segment.{t}"}}'
                 for t in ("entered", "exited") for c in ("change", "delete", "backfill", "import", "event", "time")]
    missing = [name for name in expected if name not in series]
    assert not missing, "series missing on a fresh worker:\n  " + "\n  ".join(missing)
    nonzero = {name: series[name] for name in expected if float(series[name]) != 0}
    assert not nonzero, f"a worker that saw no input counted something: {nonzero}"


# ---- settings, probes and ports in compose, Kubernetes and the Dockerfile ------------------------------

SETTING_VARIABLES = {PREFIX + f.name.upper(): f.name for f in dataclasses.fields(Settings)}


def engine_variables() -> list[tuple[str, str, str]]:
    """(where, variable, value) of every SEGMENT_ENGINE_* variable that deploy/ sets."""
    out = [("Dockerfile", k, v) for k, v in dockerfile_env().items()]
    for name, service in compose()["services"].items():
        out += [(f"compose service {name}", k, v) for k, v in compose_env(service).items()]
    for (kind, name), doc in k8s_objects().items():
        if kind == "ConfigMap":
            out += [(f"ConfigMap {name}", k, str(v)) for k, v in doc.get("data", {}).items()]
        for container in pod_spec(doc).get("containers", []):
            out += [(f"{kind} {name} env", item["name"], str(item.get("value", ""))) for item in container.get("env", [])]
    return [(where, k, v) for where, k, v in out if k.startswith(PREFIX)]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc.get("spec", {}).get("template", {}).get("spec", {}) if doc["kind"] in ("StatefulSet", "Job") else {}


@pytest.mark.parametrize("where,variable,value", engine_variables(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_variable_is_a_setting(where: str, variable: str, value: str) -> None:
    assert variable in SETTING_VARIABLES, (
        f"{where} sets {variable}, which engine/settings.py does not read "
        f"(settings: {', '.join(sorted(SETTING_VARIABLES))})")
    setting = SETTING_VARIABLES[variable]
    parsed = getattr(load_settings({variable: value}), setting)
    assert str(parsed) == value or parsed == type(parsed)(value), f"{where}: {variable}={value!r} read as {parsed!r}"


def test_variables_agree_across_services() -> None:
    """Everything of one engine must agree on the partition count, app id and topic prefix."""
    for name in ("SEGMENT_ENGINE_PARTITIONS", "SEGMENT_ENGINE_APP_ID", "SEGMENT_ENGINE_TOPIC_PREFIX",
                 "SEGMENT_ENGINE_BROKER"):
        values = {compose_env(s).get(name) for n, s in compose()["services"].items() if n in
                  (*WORKER_SERVICES, "topics", "cli")}
        assert len(values) == 1, f"compose: the engine services differ on {name}: {values}"
        if name in ("SEGMENT_ENGINE_PARTITIONS", "SEGMENT_ENGINE_BROKER"):
            assert None not in values, f"compose: set {name} explicitly"


def test_probe_paths_are_public_engine_routes() -> None:
    routes = all_routes()
    for path in (LIVE, READY):
        assert "get" in routes.handlers.get(path, {}), f"the engine serves no GET {path}"
        assert path in routes.public, f"{path} must answer without a token (probes carry none)"


def test_dockerfile() -> None:
    instructions = dockerfile_instructions()
    words = [w for w, _ in instructions]
    args = {w: r for w, r in instructions}  # the last of each
    env = dockerfile_env()
    assert args["FROM"] == "python:3.11-slim"
    user = args["USER"].split(":")[0]
    assert user not in ("root", "0") and words.index("USER") > words.index("RUN"), "must run as a non-root user"
    assert any(w == "RUN" and "pip install ." in r for w, r in instructions)
    for word, rest in instructions:
        if word == "COPY":
            for source in rest.split()[:-1]:
                if not source.startswith("--"):
                    assert (REPO / source).exists(), f"COPY {source}: not in the build context (the repository root)"
    data_dir = env["SEGMENT_ENGINE_DATA_DIR"]
    assert json.loads(args["VOLUME"]) == [data_dir]
    web_port = env.get("SEGMENT_ENGINE_WEB_PORT", str(Settings().web_port))
    assert args["EXPOSE"] == web_port == "6066"
    assert json.loads(args["ENTRYPOINT"]) + json.loads(args["CMD"]) == ["segment-engine", "worker"]
    assert READY in args["HEALTHCHECK"]
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    assert "**" in ignore.split(), "the build context should be an allow-list (no .venv, .git or data)"


def test_compose_stack() -> None:
    doc = compose()
    services = doc["services"]
    volumes = set(doc.get("volumes") or {})
    docker_env = dockerfile_env()

    kafka = services["kafka"]
    kafka_env = compose_env(kafka)
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka_env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, "single-node KRaft"
    advertised = kafka_env["KAFKA_ADVERTISED_LISTENERS"]

    topics_service = services["topics"]
    assert topics_service["command"] == ["topics", "create"]
    assert topics_service["depends_on"]["kafka"]["condition"] == "service_healthy"

    data_volumes = set()
    for name in WORKER_SERVICES:
        service = services[name]
        env = {**docker_env, **compose_env(service)}
        broker = env["SEGMENT_ENGINE_BROKER"]
        assert broker == "kafka:9092" and f"//{broker}" in advertised, f"{name}: broker {broker} not advertised"
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
        port = env.get("SEGMENT_ENGINE_WEB_PORT", str(Settings().web_port))
        assert any(str(p).split(":")[-1] == port for p in service.get("ports", [])), f"{name}: web port not published"
        health = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{port}{READY}" in health, f"{name}: healthcheck must GET {READY} on port {port}"
        data_dir = env["SEGMENT_ENGINE_DATA_DIR"]
        mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
        assert data_dir in mounts and mounts[data_dir] in volumes, f"{name}: no named volume at {data_dir}"
        data_volumes.add(mounts[data_dir])
        assert service.get("stop_grace_period"), f"{name}: give Faust time to leave the group"
        assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]) .resolve() == DOCKERFILE
    assert len(data_volumes) == len(WORKER_SERVICES), "each worker needs its own data volume"

    # Prometheus scrapes exactly the workers' web ports and reads the rules from the mounted folder.
    prometheus = services["prometheus"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in prometheus["volumes"]}
    assert mounts["./prometheus"] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for sc in jobs["segment-engine"]["static_configs"] for t in sc["targets"]}
    expected = {f"{name}:{compose_env(services[name]).get('SEGMENT_ENGINE_WEB_PORT', '6066')}" for name in WORKER_SERVICES}
    assert targets == expected and jobs["segment-engine"].get("metrics_path", "/metrics") == "/metrics"
    assert config["rule_files"] == ["alerts.yml"]

    # Grafana: provisioning and dashboards mounted where the provisioning files say.
    grafana = services["grafana"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in grafana["volumes"]}
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/dashboards.yml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == [mounts["./grafana/dashboards"]]
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert [(d["type"], d["url"]) for d in datasources] == [("prometheus", "http://prometheus:9090")]
    assert "9090:9090" in prometheus["ports"] and "prometheus" in services


def test_kubernetes_manifests() -> None:
    objects = k8s_objects()
    sts = statefulset(objects)
    spec = sts["spec"]
    pod = spec["template"]
    assert spec["replicas"] == 2
    (container,) = pod["spec"]["containers"]
    env = container_env(container, objects)
    web_port = int(env.get("SEGMENT_ENGINE_WEB_PORT", Settings().web_port))

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == web_port

    def probe(kind: str) -> dict[str, Any]:
        get = container[kind]["httpGet"]
        assert get["port"] in ("http", web_port), f"{kind} port {get['port']}"
        return container[kind]

    assert probe("livenessProbe")["httpGet"]["path"] == LIVE
    assert probe("readinessProbe")["httpGet"]["path"] == READY
    startup = probe("startupProbe")
    assert startup["httpGet"]["path"] in (LIVE, READY)
    assert startup["failureThreshold"] * startup.get("periodSeconds", 10) >= 300, "table recovery can take minutes"

    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(web_port)
    assert annotations["prometheus.io/path"] == "/metrics"

    assert pod["spec"]["terminationGracePeriodSeconds"] >= 30, "Faust commits and leaves the group on SIGTERM"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    # The RocksDB data directory is a volumeClaimTemplate mounted where SEGMENT_ENGINE_DATA_DIR points.
    data_dir = env["SEGMENT_ENGINE_DATA_DIR"]
    claims = {c["metadata"]["name"] for c in spec["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts.get(data_dir) in claims, f"no volumeClaimTemplate mounted at {data_dir}"

    # Files named by settings are mounted.
    for variable in ("SEGMENT_ENGINE_WORKSPACES_FILE", "SEGMENT_ENGINE_TOKENS_FILE"):
        path = env[variable]
        assert any(path.startswith(m.rstrip("/") + "/") for m in mounts), f"{variable}={path} is not mounted"

    # Services: the headless one of the StatefulSet, and one for the API and metrics; both select the pods.
    labels = pod["metadata"]["labels"]
    services = {name: doc for (kind, name), doc in objects.items() if kind == "Service"}
    headless = services[spec["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert any(s["spec"].get("clusterIP") != "None" for s in services.values()), "no Service for the API"
    for name, service in services.items():
        assert service["spec"]["selector"].items() <= labels.items(), f"Service {name} selects no worker"
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ("http", web_port), f"Service {name} targets port {port['targetPort']}"
    assert env.get("SEGMENT_ENGINE_WEB_HOST", "").endswith("." + spec["serviceName"])

    # The one-shot topics Job: same image and settings as the workers.
    jobs = [doc for (kind, _), doc in objects.items() if kind == "Job"]
    assert len(jobs) == 1
    (job_container,) = jobs[0]["spec"]["template"]["spec"]["containers"]
    assert job_container["args"] == ["topics", "create"]
    assert job_container["image"] == container["image"]
    job_env = container_env(job_container, objects)
    for variable in ("SEGMENT_ENGINE_BROKER", "SEGMENT_ENGINE_PARTITIONS", "SEGMENT_ENGINE_APP_ID",
                     "SEGMENT_ENGINE_TOPIC_PREFIX"):
        assert job_env.get(variable) == env.get(variable), f"topics Job and workers differ on {variable}"
    assert jobs[0]["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")

    # The workspaces file shipped in the ConfigMap is one the engine loads.
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    workspaces_path = Path(env["SEGMENT_ENGINE_WORKSPACES_FILE"])
    mount_name = mounts[str(workspaces_path.parent)]
    config_map = objects[("ConfigMap", volumes[mount_name]["configMap"]["name"])]
    assert load_workspaces_text(config_map["data"][workspaces_path.name]).names

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_workspaces_text(text: str) -> Any:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        file.write(text)
        file.flush()
        return load_workspaces(Path(file.name))


def test_deploy_readme_covers_operations() -> None:
    text = (DEPLOY / "README.md").read_text()
    for topic in ("docker compose", "SEGMENT_ENGINE_PARTITIONS", "changelog", LIVE, READY, "faust_", "Alerts"):
        assert topic in text, f"deploy/README.md does not mention {topic}"
