"""Helpers shared by the hostile-input, security and soak scenarios: a producer that reports where each
message landed (so every dead letter can be matched to the exact message that caused it), HTTP and
Prometheus readers, and the worker's resident memory."""
from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from engine.settings import Settings

#: Big enough for a message far over SEGMENT_ENGINE_MAX_MESSAGE_BYTES (the engine must refuse it, not us).
RAW_MAX_REQUEST_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Sent:
    """One message as the broker stored it, and what the test expects the engine to do with it."""

    topic: str
    partition: int
    offset: int
    label: str
    code: str | None = None  # expected dead-letter code; None for a good message
    change_index: int | None = None  # for a batch with one bad item: which item


@dataclass
class RawProducer:
    """Unchecked bytes to any topic and partition, each send acknowledged and its offset recorded.

    The engine's Publisher validates what it sends, so poison pills need their own producer. One producer
    and synchronous sends keep the messages of a partition in exactly the order they are sent."""

    settings: Settings
    log: list[Sent] = field(default_factory=list)
    _producer: KafkaProducer | None = None

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, acks="all",
                                           max_request_size=RAW_MAX_REQUEST_BYTES, linger_ms=0,
                                           max_in_flight_requests_per_connection=1)
        return self._producer

    def send(self, topic: str, value: bytes | None, *, key: bytes | None, partition: int, label: str,
             code: str | None = None, change_index: int | None = None) -> Sent:
        metadata = self.producer.send(topic, value=value, key=key, partition=partition).get(timeout=30)
        sent = Sent(topic, metadata.partition, metadata.offset, label, code, change_index)
        self.log.append(sent)
        return sent

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)


def http(port: int, path: str, token: str | None = None, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes]:
    """(status, body bytes) of one request to a worker; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    return call_json(port, "GET", path, token)


def call_json(port: int, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    """(status, decoded JSON answer or None) of one request with `body` sent as JSON."""
    status, raw = http(port, path, token, method=method, body=None if body is None else orjson.dumps(body))
    return status, (orjson.loads(raw) if raw else None)


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The worker's /metrics as {(sample name, sorted labels): value}."""
    status, raw = http(port, "/metrics", timeout=10)
    assert status == 200, raw[:300]
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(raw.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """One sample (0 when the series does not exist yet: counters appear on first increment)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def labelled(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, label: str) -> dict[str, float]:
    """Every series of `name` by the value of one label, e.g. dead letters by code."""
    return {dict(labels)[label]: value for (sample, labels), value in samples.items()
            if sample == name and label in dict(labels)}


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# The worker's web server exactly as `segment-engine worker` builds it (same Engine, same settings from the
# same environment), initialised but not started: every (method, path) its router will serve, whoever
# registered it (engine/api, Faust's built-in views, the Prometheus sensor).
_DUMP_ROUTES = """
import json
from engine.app import Engine
from engine.settings import load_settings
web = Engine(load_settings()).app.web
web.init_server()
print(json.dumps(sorted({(r.method, r.resource.canonical) for r in web.web_app.router.routes()})))
"""


def served_routes(env: dict[str, str], cwd: Path, data_dir: Path) -> set[tuple[str, str]]:
    """{(method, path template)} a worker started with `env` in `cwd` serves (HEAD included: aiohttp adds one
    per view); `data_dir` keeps the probe away from the real worker's RocksDB."""
    import subprocess
    import sys

    env = dict(env, SEGMENT_ENGINE_DATA_DIR=str(data_dir), SEGMENT_ENGINE_LOG_LEVEL="error")
    done = subprocess.run([sys.executable, "-c", _DUMP_ROUTES], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return {(method, path) for method, path in orjson.loads(done.stdout.strip().splitlines()[-1])}
