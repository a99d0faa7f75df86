"""A real Prometheus server (Debian's package, fetched by the test set-up) scrapes a real worker: after
traffic, the series an SRE's dashboard and alerts use are there with the right values, including the
recording rules of deploy/prometheus/."""
from __future__ import annotations

import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from engine.broker import free_port
from tests.conftest import REPO, Harness
from tests.oracle import Oracle, fold_events
from tests.tools import prometheus_binary


class Prometheus:
    def __init__(self, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.port, self.process, self.log = port, process, log

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = orjson.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]["result"]  # type: ignore[no-any-return]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(targets: list[str]) -> Prometheus:
        rules = tmp_path / "rules"
        rules.mkdir()
        for name in ("alerts.yml",):
            shutil.copy(REPO / "deploy" / "prometheus" / name, rules / name)
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {rules}/*.yml\n"
            "scrape_configs:\n  - job_name: segment-engine\n    static_configs:\n"
            f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
        )
        port = free_port()
        log = tmp_path / "prometheus.log"
        process = subprocess.Popen(
            [str(prometheus_binary()), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=open(log, "wb"), stderr=subprocess.STDOUT,
        )
        prometheus = Prometheus(port, process, log)
        started.append(prometheus)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return prometheus
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready:\n{log.read_text()[-2000:]}")

    yield start
    for prometheus in started:
        prometheus.process.terminate()
        prometheus.process.wait(timeout=15)


def test_prometheus_scrapes_the_series_dashboards_and_alerts_use(harness: Harness, prometheus_for: Any) -> None:
    rules = harness.define_fixture_segments()
    worker = harness.start_worker()
    prometheus = prometheus_for([f"127.0.0.1:{worker.web_port}"])
    changes = [{"op": "upsert", "object_type": "contact", "id": f"c{i}", "version": 1,
                "fields": {"country": "PL" if i % 3 else "DE", "lifetime_value": 500 * (i % 5),
                           "is_subscribed": i % 2 == 0, "tags": ["vip"] if i % 4 == 0 else []}} for i in range(200)]
    batches = harness.publisher.publish_batches("acme", changes[:100], batch_size=10)
    for change in changes[100:]:
        harness.publisher.publish_change("acme", change)
    harness.publisher.publish_raw(b"{not json", key=b"acme/contact/x", partition=0)
    harness.publisher.flush()
    oracle = Oracle(harness.catalog(), rules).apply_all(changes)
    harness.wait_for(lambda: fold_events(harness.events()) == oracle.membership(), what="stream settled")

    def scraped(expr: str, expected: float) -> bool:
        return prometheus.value(expr) == expected

    harness.wait_for(lambda: scraped('segment_engine_changes_total{outcome="applied"}', 200), timeout=60,
                     what="applied changes scraped")
    assert prometheus.value('up{job="segment-engine"}') == 1
    assert prometheus.value('segment_engine_dead_letters_total{code="malformed_json"}') == 1
    assert prometheus.value("segment_engine_ready") == 1
    assert prometheus.value("segment_engine_partitions_owned") == 4
    # Segment sizes summed over workers equal the oracle's member counts.
    for sid in rules:
        expected = sum(1 for _, s in oracle.membership() if s == sid)
        harness.wait_for(lambda: (prometheus.value(f'sum(segment_engine_segment_members{{segment="{sid}"}})') or 0)
                         == expected, timeout=30, what=f"size of {sid}")
    entered = prometheus.value('sum(segment_engine_segment_transitions_total{type="entered"})')
    assert entered == len(oracle.membership())
    lag = prometheus.query("segment_engine_consumer_lag")
    assert {(s["metric"]["topic"].removeprefix(harness.settings.topic_prefix), s["metric"]["partition"]) for s in lag} \
        >= {("record-changes", str(p)) for p in range(4)}
    assert all(float(s["value"][1]) == 0 for s in lag)
    assert len(prometheus.query("segment_engine_scheduler_backlog")) == 4
    assert prometheus.value('segment_engine_evaluation_seconds_count{kind="changes"}') == batches + 100  # messages
    assert prometheus.value("segment_engine_segments_evaluated_per_change_count") == 200
    p99 = prometheus.value("histogram_quantile(0.99, sum by (le) (segment_engine_change_to_event_seconds_bucket))")
    assert p99 is not None and 0 < p99 < 30
    assert prometheus.query("faust_total_rebalances") and prometheus.query("faust_topic_partition_end_offset")
    # The recording rules of deploy/prometheus/alerts.yml evaluate on the real series; no alert fires.
    harness.wait_for(lambda: prometheus.value('job:segment_engine_consumer_lag:sum{job="segment-engine"}') == 0,
                     timeout=30, what="the lag recording rule")
    firing = [a for a in prometheus.query("ALERTS") if a["metric"].get("alertstate") == "firing"]
    assert [a["metric"]["alertname"] for a in firing] in ([], ["SegmentEngineDeadLetters"])
