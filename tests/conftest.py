"""Shared fixtures: one real local broker per test session, and per test its own topics, app id, data
directory and worker processes, so tests are independent."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

import topics
from engine.admin import ensure_topics
from engine.broker import LocalBroker, free_port
from engine.client import Publisher
from engine.settings import Settings
from engine.workspaces import load_workspaces

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    with LocalBroker() as local:
        yield local


class WorkerProcess:
    """`segment-engine worker` as a real OS process, so tests can SIGKILL it."""

    def __init__(self, settings: Settings, data_dir: Path, log_path: Path) -> None:
        self.env = dict(
            os.environ,
            SEGMENT_ENGINE_BROKER=settings.broker,
            SEGMENT_ENGINE_APP_ID=settings.app_id,
            SEGMENT_ENGINE_TOPIC_PREFIX=settings.topic_prefix,
            SEGMENT_ENGINE_PARTITIONS=str(settings.partitions),
            SEGMENT_ENGINE_DATA_DIR=str(data_dir),
            SEGMENT_ENGINE_WEB_PORT=str(free_port()),
            SEGMENT_ENGINE_WORKSPACES_FILE=str(settings.workspaces_file),
            SEGMENT_ENGINE_TOKENS_FILE=str(settings.tokens_file),
            SEGMENT_ENGINE_SESSION_TIMEOUT=str(settings.session_timeout),
            SEGMENT_ENGINE_CLOCK=settings.clock,
            SEGMENT_ENGINE_TICK_MS=str(settings.tick_ms),
            SEGMENT_ENGINE_LOG_LEVEL="info",
        )
        self.web_port = int(self.env["SEGMENT_ENGINE_WEB_PORT"])
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "WorkerProcess":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker"], env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        return self

    def wait_ready(self, timeout: float = 60.0) -> "WorkerProcess":
        """Until /health says the registry is loaded (the HTTP API answers from then on)."""
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit, no producer flush."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Harness:
    """One test's engine: settings with unique topics, a publisher, workers and topic readers."""

    settings: Settings
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    _publisher: Publisher | None = None

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = Publisher(self.settings, source="tests")
        return self._publisher

    def catalog(self, workspace: str = "acme", object_type: str = "contact") -> Any:
        catalog = load_workspaces(self.settings.workspaces_file).catalog(workspace, object_type)
        assert catalog is not None
        return catalog

    def start_worker(self, data_dir: str = "data") -> WorkerProcess:
        """A worker process, returned once it has loaded the segment registry and serves HTTP."""
        return self.launch_worker(data_dir).wait_ready()

    def launch_worker(self, data_dir: str = "data") -> WorkerProcess:
        """A worker process, returned at once (tests that kill it while it starts up)."""
        n = len(self.workers)
        worker = WorkerProcess(self.settings, self.tmp / data_dir, self.tmp / f"worker-{n}.log").start()
        self.workers.append(worker)
        return worker

    def define_fixture_segments(self, workspace: str = "acme") -> dict[str, dict[str, Any]]:
        """Publish tests/fixtures/segments.json; return segment id -> rule."""
        segments = orjson.loads((FIXTURES / "segments.json").read_bytes())
        for segment in segments:
            self.publisher.define_segment(workspace, segment)
        self.publisher.flush()
        return {s["id"]: s["rule"] for s in segments}

    def read_topic(self, spec: topics.TopicSpec) -> list[dict[str, Any]]:
        """Everything currently on a topic, in per-partition order."""
        name = spec.full_name(self.settings.topic_prefix)
        consumer = KafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
                                 enable_auto_commit=False, auto_offset_reset="earliest")
        try:
            tps = [TopicPartition(name, p) for p in range(spec.partition_count(self.settings.partitions))]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            messages: list[dict[str, Any]] = []
            while any(consumer.position(tp) < end[tp] for tp in tps):
                for records in consumer.poll(timeout_ms=500).values():
                    messages.extend(orjson.loads(r.value) for r in records)
            # The local broker's end offsets can lag behind what a fetch returns (measured: an idle
            # partition reported 100 while 107 records were there), so read on until a poll is empty.
            while batch := consumer.poll(timeout_ms=300):
                for records in batch.values():
                    messages.extend(orjson.loads(r.value) for r in records)
            return messages
        finally:
            consumer.close()

    def events(self) -> list[dict[str, Any]]:
        return self.read_topic(topics.SEGMENT_EVENTS)

    def wait_for(self, check: Callable[[], Any], timeout: float = 90.0, what: str = "condition") -> Any:
        """Poll `check` until it returns something truthy; fail with the workers' logs otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                logs = "\n---\n".join(w.log_tail() for w in self.workers)
                pytest.fail(f"timed out after {timeout}s waiting for {what}\nworker logs:\n{logs}")
            time.sleep(0.5)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        if self._publisher is not None:
            self._publisher.close()


@contextmanager
def harness_in(broker: LocalBroker, tmp: Path, **settings: Any) -> Iterator[Harness]:
    """A harness with its own topics and app id, its files under `tmp`; its workers are killed on exit."""
    run = uuid.uuid4().hex[:8]
    defaults: dict[str, Any] = dict(broker=broker.address, app_id=f"test-{run}", topic_prefix=f"t{run}-", partitions=4,
                                    data_dir=tmp / "data", workspaces_file=FIXTURES / "workspaces.json",
                                    session_timeout=3.0)
    h = Harness(settings=Settings(**{**defaults, **settings}), tmp=tmp)
    ensure_topics(h.settings)
    try:
        yield h
    finally:
        h.close()


@contextmanager
def shared_harness(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory, name: str,
                   tokens: dict[str, Any] | None = None, **settings: Any) -> Iterator[Harness]:
    """A harness for a module- or session-scoped site, so its tests share one worker (a start costs ~5-10 s).

    Tokens are tests/fixtures/tokens.json's, or `tokens` when the module needs a team of its own."""
    tmp = tmp_path_factory.mktemp(name)
    tokens_file = FIXTURES / "tokens.json"
    if tokens is not None:
        tokens_file = tmp / "tokens.json"
        tokens_file.write_bytes(orjson.dumps({"tokens": tokens}))
    with harness_in(broker, tmp, tokens_file=tokens_file, **settings) as h:
        yield h


@pytest.fixture
def harness(broker: LocalBroker, tmp_path: Path) -> Iterator[Harness]:
    with harness_in(broker, tmp_path) as h:
        yield h
