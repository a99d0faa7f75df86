"""Seeded workloads for the reliability scenarios: segment definitions, a background stream of record
changes while faults are injected, and raw messages (exact duplicates, repeated batches)."""
from __future__ import annotations

import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

import orjson
from kafka import KafkaConsumer, TopicPartition

import topics
from engine.client import batches_by_partition
from engine.envelope import encode, envelope, record_key
from engine.intake import partition_for
from engine.sample_data import COUNTRIES, LANGUAGES, PLANS, STATUSES, TAGS
from tests.conftest import FIXTURES, Harness, WorkerProcess

Change = dict[str, Any]
Rule = dict[str, Any]
WORKSPACE = "acme"
FIXTURE_RULES: dict[str, Rule] = {s["id"]: s["rule"] for s in orjson.loads((FIXTURES / "segments.json").read_bytes())}


@dataclass(frozen=True)
class Definition:
    """One version of a segment as published: its rule, or None when this version removed the segment."""

    version: int
    rule: Rule | None


def define(harness: Harness, segment_id: str, rule: Rule, version: int) -> Definition:
    """Publish a contact segment at an explicit version (the oracle needs every version) and wait for the ack."""
    harness.publisher.define_segment(WORKSPACE, {"id": segment_id, "object_type": "contact", "name": segment_id,
                                                 "rule": rule, "version": version})
    harness.publisher.flush()
    return Definition(version, rule)


def remove(harness: Harness, segment_id: str, version: int) -> Definition:
    """Publish a segment's removal at an explicit version and wait for the ack."""
    harness.publisher.remove_segment(WORKSPACE, "contact", segment_id, version=version)
    harness.publisher.flush()
    return Definition(version, None)


def define_fixture_segments(harness: Harness, version: int) -> dict[str, list[Definition]]:
    """tests/fixtures/segments.json at one version; segment id -> its definitions so far."""
    return {sid: [define(harness, sid, rule, version)] for sid, rule in FIXTURE_RULES.items()}


def random_rule(rng: random.Random) -> Rule:
    """A valid rule of 1-3 conditions over fields the change workload writes, selective enough that
    records keep entering and leaving (no relative dates: time must not flip anything on its own)."""
    makers = [
        lambda: {"field": "country", "operator": "in", "value": rng.sample(COUNTRIES, 3)},
        lambda: {"field": "lifetime_value", "operator": rng.choice([">=", "<"]),
                 "value": rng.choice([250, 1000, 2500])},
        lambda: {"field": "tags", "operator": "hasAny", "value": rng.sample(TAGS, 2)},
        lambda: {"field": "status", "operator": "=", "value": rng.choice(STATUSES)},
        lambda: {"field": "lead_score", "operator": "between", "value": sorted(rng.sample(range(101), 2))},
        lambda: {"field": "is_subscribed", "operator": "=", "value": rng.random() < 0.5},
        lambda: {"field": "email", "operator": "null"},
        lambda: {"field": "custom.plan", "operator": "!=", "value": rng.choice(PLANS)},
        lambda: {"field": "language", "operator": "notIn", "value": rng.sample(LANGUAGES, 2)},
    ]
    return {"combinator": rng.choice(["and", "or"]), "not": rng.random() < 0.2,
            "rules": [make() for make in rng.sample(makers, rng.randint(1, 3))]}


def publish_chunk(harness: Harness, index: int, chunk: Sequence[Change]) -> None:
    """Even chunks as one message per change, odd ones as record.changes batches: both shapes producers use."""
    if index % 2:
        harness.publisher.publish_batches(WORKSPACE, chunk, batch_size=10)
    else:
        for change in chunk:
            harness.publisher.publish_change(WORKSPACE, change)
    harness.publisher.flush()


class Stream:
    """Publishes changes from a background thread, `chunk` at a time with `pause` seconds between chunks,
    so faults land while changes flow. `published` holds the changes in the order they were acknowledged:
    per record, the order its partition holds them, which is the order the oracle folds them in. `hold()`
    stops it between chunks (a test checks answers while nothing new arrives) and `release()` lets it go on.
    Subclasses publish other units (see `publish` and `record`)."""

    def __init__(self, harness: Harness, changes: Sequence[Any], chunk: int = 30, pause: float = 0.1) -> None:
        self.harness = harness
        self.units: list[Any] = [list(changes[i : i + chunk]) for i in range(0, len(changes), chunk)]
        self.pause = pause
        self.published: list[Any] = []
        self._failure: BaseException | None = None
        self._hurry = threading.Event()
        self._open = threading.Event()
        self._open.set()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)

    def publish(self, index: int, unit: Any) -> None:
        publish_chunk(self.harness, index, unit)

    def record(self, unit: Any) -> None:
        self.published.extend(unit)

    def start(self) -> "Stream":
        self._thread.start()
        return self

    @property
    def flowing(self) -> bool:
        return self._thread.is_alive()

    def hold(self) -> None:
        """Stop before the next unit and wait until the current one is acknowledged."""
        self._open.clear()
        if self.flowing:
            self._idle.wait(60)

    def release(self) -> None:
        self._idle.clear()
        self._open.set()

    def _run(self) -> None:
        try:
            for index, unit in enumerate(self.units):
                if not self._open.is_set():
                    self._idle.set()
                    self._open.wait()
                self.publish(index, unit)
                self.record(unit)
                if not self._hurry.is_set():
                    self._hurry.wait(self.pause)
        except BaseException as exc:  # noqa: BLE001 - re-raised by finish() in the test's thread
            self._failure = exc
        finally:
            self._idle.set()

    def finish(self, timeout: float = 120.0) -> list[Any]:
        """Publish the rest without pauses; everything published, in order."""
        self.release()
        self._hurry.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the stream did not finish publishing within {timeout}s")
        if self._failure is not None:
            raise self._failure
        return self.published


# ---- raw messages ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawMessage:
    """Exact bytes for the record-changes topic, and the changes they carry (in order)."""

    value: bytes
    key: bytes
    partition: int
    changes: tuple[Change, ...]


def single_message(change: Change, partitions: int) -> RawMessage:
    key = record_key(WORKSPACE, "contact", change["id"])
    value = encode(envelope("record.change", change, workspace=WORKSPACE, source="tests"))
    return RawMessage(value, key.encode(), partition_for(key, partitions), (change,))


def batch_messages(changes: Sequence[Change], partitions: int, size: int) -> list[RawMessage]:
    """record.changes messages, each for one partition, each record's changes in input order."""
    out = []
    for partition, chunk in batches_by_partition(WORKSPACE, changes, partitions, size):
        key = record_key(WORKSPACE, "contact", chunk[0]["id"])
        value = encode(envelope("record.changes", {"changes": chunk}, workspace=WORKSPACE, source="tests"))
        out.append(RawMessage(value, key.encode(), partition, tuple(dict(c) for c in chunk)))
    return out


# ---- watching --------------------------------------------------------------------------------------


class NewEvents:
    """Events that reach the segment-events topic after this object was made: lets a test strike the moment
    a worker starts emitting (`with NewEvents(harness) as new: ...; new.wait(30)`)."""

    def __init__(self, harness: Harness) -> None:
        name = topics.SEGMENT_EVENTS.full_name(harness.settings.topic_prefix)
        self.consumer = KafkaConsumer(bootstrap_servers=harness.settings.bootstrap_servers, group_id=None,
                                      enable_auto_commit=False, fetch_max_wait_ms=5)  # see them at once
        partitions = [TopicPartition(name, p) for p in range(harness.settings.partitions)]
        self.consumer.assign(partitions)
        self.consumer.seek_to_end(*partitions)
        while self.consumer.poll(timeout_ms=200):  # the broker's end offsets can lag behind its data
            pass

    def wait(self, timeout: float) -> int:
        """How many new events the first poll that had any returned; 0 after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if batch := self.consumer.poll(timeout_ms=10):
                return sum(len(records) for records in batch.values())
        return 0

    def __enter__(self) -> "NewEvents":
        return self

    def __exit__(self, *exc: object) -> None:
        self.consumer.close()


# ---- workers -----------------------------------------------------------------------------------------


def health(worker: WorkerProcess, host: str = "127.0.0.1") -> dict[str, Any] | None:
    """The worker's /health body (200 or 503), or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{host}:{worker.web_port}/health", timeout=5) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as err:
        return orjson.loads(err.read())
    except (OSError, orjson.JSONDecodeError):
        return None


def settled_ownership(workers: Sequence[WorkerProcess], partitions: int) -> dict[int, list[int]] | None:
    """Web port -> partitions once every worker is ready, each owns some, together they own every partition
    exactly once, and every worker's view of the group agrees; None while that is not so (rebalancing)."""
    owned: dict[int, list[int]] = {}
    views: list[dict[int | None, list[int]]] = []
    for worker in workers:
        body = health(worker)
        if body is None or not body.get("ready") or not body["partitions"]:
            return None
        owned[worker.web_port] = sorted(body["partitions"])
        views.append({urlsplit(url).port: sorted(parts) for url, parts in body["workers"].items()})
    if any(view != owned for view in views):
        return None
    every = sorted(p for parts in owned.values() for p in parts)
    return owned if every == list(range(partitions)) else None


def metric_value(worker: WorkerProcess, name: str, labels: Mapping[str, str]) -> float | None:
    """One sample of the worker's /metrics (None when absent or the worker does not answer)."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return None
