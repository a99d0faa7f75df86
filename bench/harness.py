"""What every bench row shares: the workload (pre-encoded messages), worker processes (the engine, the naive
baseline) driven phase by phase through their counters, peak RSS, data-dir sizes and latency from events.

Rows are measured by polling a worker's counter every POLL_S; peers too fast to poll time themselves.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

import topics
from bench.reference_job import BATCH_BYTES, send_batches
from engine.admin import ensure_topics
from engine.broker import LocalBroker, free_port
from engine.client import Publisher, group_by_partition
from engine.envelope import encode, envelope, record_key
from engine.intake import partition_for
from engine.sample_data import contact_create
from engine.schemas import MESSAGE_SCHEMAS, validator
from engine.settings import Settings

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
POLL_S = 0.1
WORKSPACE = "demo"

Change = dict[str, Any]


# ---- processes and pages ------------------------------------------------------------------------------


def scrape(url: str, timeout: float = 2.0) -> str | None:
    """Body of a worker web page, or None while it is not up yet (or too busy to answer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode()
    except OSError:
        return None


def metric_sum(text: str, name: str) -> dict[str, float]:
    """Samples of one Prometheus metric, keyed by their label string (`outcome="applied"`)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, value = line.rsplit(" ", 1)
            out[head[len(name):].strip("{}")] = float(value)
    return out


@dataclass
class Progress:
    first_t: float
    first_n: float
    last_t: float
    last_n: float
    started: float

    @property
    def rate(self) -> float:
        return (self.last_n - self.first_n) / (self.last_t - self.first_t)


def watch(read: Callable[[], float | None], target: float, proc: subprocess.Popen[bytes], log: Path,
          timeout: float, after: float | None = None) -> Progress:
    """Poll `read` until it reaches `target`; fail if the process dies or time runs out.

    The window opens at the first poll that saw progress (after `after`, a monotonic time, if given:
    e.g. when the publisher finished) and closes at the poll that saw `target`."""
    started = time.monotonic()
    first: tuple[float, float] | None = None
    n: float | None = None
    while True:
        now = time.monotonic()
        n = read()
        if n is not None and first is None and (after is None or now >= after) and (after is not None or n > 0):
            first = (now, n)
        if n is not None and n >= target and first is not None:
            if now == first[0]:
                raise RuntimeError("everything was consumed between two polls; raise the change count")
            return Progress(first[0], first[1], now, n, started)
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}; log tail:\n{tail(log)}")
        if now - started > timeout:
            raise TimeoutError(f"only {n} of {target} after {timeout:.0f}s; log tail:\n{tail(log)}")
        time.sleep(_next_poll(first, now, n, target))


def _next_poll(first: tuple[float, float] | None, now: float, n: float | None, target: float) -> float:
    """POLL_S near the end of a window, up to 1 s while much is left (every scrape costs the worker CPU:
    the engine's /metrics reads gauges from its state)."""
    if first is None or n is None or n <= first[1] or now <= first[0]:
        return POLL_S
    remaining_s = (target - n) / ((n - first[1]) / (now - first[0]))
    return min(1.0, max(POLL_S, remaining_s / 5))


def wait_until(read: Callable[[], float | None], target: float, proc: subprocess.Popen[bytes], log: Path,
               timeout: float) -> float:
    """Poll `read` until it reaches `target` (no window: for set-up phases); returns the monotonic time it did."""
    started = time.monotonic()
    while True:
        n = read()
        now = time.monotonic()
        if n is not None and n >= target:
            return now
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}; log tail:\n{tail(log)}")
        if now - started > timeout:
            raise TimeoutError(f"only {n} of {target} after {timeout:.0f}s; log tail:\n{tail(log)}")
        time.sleep(POLL_S)


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _idle_scheduling() -> None:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def spawn(args: list[str], env: dict[str, str], log: Path, idle: bool = False) -> subprocess.Popen[bytes]:
    """A Python child (`sys.executable args`); `idle`: under SCHED_IDLE (only CPU nobody else wants)."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, *args], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=_idle_scheduling if idle else None)


def normal_scheduling(pid: int) -> None:
    """Back to SCHED_OTHER, every thread of the process (threads inherit SCHED_IDLE at creation)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setscheduler(int(tid), os.SCHED_OTHER, os.sched_param(0))
        except ProcessLookupError:
            pass


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL: nothing of the process is needed afterwards (RocksDB reopens from its WAL), and it is instant."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set size of a live process: VmHWM from /proc/<pid>/status, in MiB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def dir_bytes(path: Path, suffix: str = "") -> int:
    """Apparent size (st_size) of the files under `path` (ending in `suffix`)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            if name.endswith(suffix):
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except FileNotFoundError:
                    pass
    return total


def rocksdb_dirs(path: Path) -> list[Path]:
    return sorted(p.parent for p in path.rglob("CURRENT"))


def faust_rocksdb_options() -> Any:
    """The options Faust opens its RocksDB tables with (rocksdict driver)."""
    from faust.stores.rocksdb import RocksDBOptions

    return RocksDBOptions(use_rocksdict=True).as_options()


def compacted_sst_bytes(path: Path) -> int:
    """Reopen every RocksDB under `path` (after its process died: the WAL is replayed), flush the memtable,
    compact everything, and return the bytes of the SST files: the stored data alone, without WAL, logs,
    manifests or not-yet-compacted overwrites."""
    from rocksdict import Rdict

    total = 0
    for db_path in rocksdb_dirs(path):
        db = Rdict(str(db_path), options=faust_rocksdb_options())
        try:
            db.flush()
            db.compact_range(None, None)
        finally:
            db.close()
        total += dir_bytes(db_path, ".sst")
    return total


# ---- topics and messages ------------------------------------------------------------------------------


def fresh_settings(broker: LocalBroker, tmp: Path, tag: str) -> Settings:
    run = f"{tag}-{uuid.uuid4().hex[:6]}"
    settings = Settings(broker=broker.address, app_id=f"bench-{run}", topic_prefix=f"bench-{run}-",
                        data_dir=tmp / run, web_port=free_port(), session_timeout=3.0)
    ensure_topics(settings)
    return settings


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment of a `segment-engine worker` process for `settings` (plus SEGMENT_ENGINE_* `extra`)."""
    return dict(
        os.environ,
        SEGMENT_ENGINE_BROKER=settings.broker,
        SEGMENT_ENGINE_APP_ID=settings.app_id,
        SEGMENT_ENGINE_TOPIC_PREFIX=settings.topic_prefix,
        SEGMENT_ENGINE_PARTITIONS=str(settings.partitions),
        SEGMENT_ENGINE_DATA_DIR=str(settings.data_dir),
        SEGMENT_ENGINE_WEB_PORT=str(settings.web_port),
        SEGMENT_ENGINE_WORKSPACES_FILE=str(settings.workspaces_file),
        SEGMENT_ENGINE_SESSION_TIMEOUT=str(settings.session_timeout),
        SEGMENT_ENGINE_LOG_LEVEL="warning",
        **extra,
    )


@dataclass(frozen=True)
class Msg:
    """One encoded message of the record-change topic and the changes it carries."""

    key: bytes
    partition: int
    value: bytes
    changes: tuple[tuple[str, int], ...]  # (record id, version) of each change


def _key(change: Change) -> str:
    return record_key(WORKSPACE, change["object_type"], change["id"])


def encode_single(changes: Iterable[Change], partitions: int, source: str = "bench") -> list[Msg]:
    """record.change messages, one per change, schema-checked once here."""
    check = validator(MESSAGE_SCHEMAS["record.change"])
    out = []
    for change in changes:
        message = envelope("record.change", change, workspace=WORKSPACE, source=source)
        check(message)
        key = _key(change)
        out.append(Msg(key.encode(), partition_for(key, partitions), encode(message), ((change["id"], change["version"]),)))
    return out


def encode_batches(changes: Iterable[Change], partitions: int, size: int, source: str = "bench",
                   check: bool = True) -> list[Msg]:
    """record.changes messages of up to `size` changes of one partition each (each record's changes in order),
    the way `Publisher.publish_batches` forms them."""
    validate = validator(MESSAGE_SCHEMAS["record.changes"])
    out = []
    for partition, chunk in group_by_partition(changes, _key, partitions, size):
        message = envelope("record.changes", {"changes": chunk}, workspace=WORKSPACE, source=source)
        if check:
            validate(message)
        out.append(Msg(_key(chunk[0]).encode(), partition, encode(message),
                       tuple((c["id"], c["version"]) for c in chunk)))
    return out


def creates_for(ids: Iterable[str], seed: int) -> list[Change]:
    """Full creates (version 1) of the given contact ids, the same contact for the same id and seed."""
    return [contact_create(record_id, seed=seed) for record_id in ids]


def send_all(publisher: Publisher, topic: str, messages: Iterable[Msg]) -> None:
    """Produce pre-encoded messages (in order per partition) and wait until the broker acknowledged all of them.

    As aiokafka record batches of 512 KiB: kafka-python's per-message `send` publishes ~12,000 messages/s here,
    slower than the engine applies single changes at 10 segments, so a phase's backlog never built up."""
    asyncio.run(_send_batches(publisher.settings.bootstrap_servers, topic, messages))


async def _send_batches(bootstrap_servers: list[str], topic: str, messages: Iterable[Msg]) -> None:
    by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
    for m in messages:
        by_partition.setdefault(m.partition, []).append((m.key, m.value))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=0,
                                max_batch_size=BATCH_BYTES, max_request_size=2 * 1_048_576)
    await producer.start()
    try:
        futures = []
        for partition, records in by_partition.items():
            futures += await send_batches(producer, topic, partition, records)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


# ---- a worker process driven phase by phase -------------------------------------------------------------


@dataclass
class Throughput:
    changes: int
    messages: int
    seconds: float
    rate: float  # changes/s in the window
    events_per_change: float
    backlog_at_window_start: float  # changes still to apply when the window opened (publisher ahead of the worker)
    startup_s: float = 0.0


@dataclass
class Latency:
    offered_per_s: float
    changes: int
    samples: int  # changes that emitted at least one event (latency is measured on those)
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    kept_up: bool  # the worker applied the last change within 2 s of its publication
    drain_s: float  # last publication -> the worker's counter showed every change applied (polling included)
    histogram: dict[str, Any] = field(default_factory=dict)  # engine only: its own change->event histogram


class WorkerSession:
    """One worker process (the engine, or the naive baseline) on its own topics and data directory."""

    def __init__(self, kind: str, broker: LocalBroker, tmp: Path, segments: list[dict[str, Any]],
                 idle: bool = False) -> None:
        assert kind in ("engine", "naive")
        self.kind = kind
        self.segments = segments
        self.settings = fresh_settings(broker, tmp, f"{kind}-{len(segments)}")
        self.publisher = Publisher(self.settings, source="bench", validate=False)
        self.records_topic = topics.RECORD_CHANGES.full_name(self.settings.topic_prefix)
        self.events_topic = topics.SEGMENT_EVENTS.full_name(self.settings.topic_prefix)
        self.log = tmp / f"{self.settings.app_id}.log"
        port = self.settings.web_port
        self.url = f"http://127.0.0.1:{port}/metrics" if kind == "engine" else f"http://127.0.0.1:{port}/count"
        self.ready_url = f"http://127.0.0.1:{port}/health/ready" if kind == "engine" else self.url
        self.idle = idle
        self.idle_started = idle
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0
        self.ready_after_s: float | None = None
        self.records: set[str] = set()  # contact ids this worker stores (warmed up)
        self.footprint: dict[str, Any] = {}

    # -- lifecycle --

    def start(self) -> None:
        if self.kind == "engine":
            version = int(time.time() * 1000)
            for segment in self.segments:
                self.publisher.define_segment(WORKSPACE, dict(segment, version=version))
            self.publisher.flush()
            env = worker_env(self.settings)
            args = ["-m", "engine.cli", "worker"]
        else:
            seg_file = self.settings.data_dir.parent / f"{self.settings.app_id}-segments.json"
            seg_file.write_bytes(orjson.dumps(self.segments))
            s = self.settings
            env = dict(os.environ, BENCH_BROKER=s.broker, BENCH_TOPIC=self.records_topic,
                       BENCH_EVENTS_TOPIC=self.events_topic, BENCH_APP_ID=s.app_id, BENCH_PARTITIONS=str(s.partitions),
                       BENCH_WEB_PORT=str(s.web_port), BENCH_DATA_DIR=str(s.data_dir),
                       BENCH_SESSION_TIMEOUT=str(s.session_timeout), BENCH_SEGMENTS_FILE=str(seg_file))
            args = ["-m", "bench.naive_worker"]
        self.spawned_at = time.monotonic()
        self.proc = spawn(args, env, self.log, idle=self.idle)

    def wait_ready(self, timeout: float) -> float:
        """Until the worker answers (the engine: /health/ready is 200: registry loaded, tables recovered)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while scrape(self.ready_url, timeout=5) is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} worker exited with {self.proc.returncode}:\n{tail(self.log)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind} worker not ready after {timeout:.0f}s:\n{tail(self.log)}")
            time.sleep(0.5)
        if self.ready_after_s is None:
            self.ready_after_s = time.monotonic() - self.spawned_at
        return self.ready_after_s

    def normal_priority(self) -> None:
        if self.idle and self.proc is not None:
            normal_scheduling(self.proc.pid)
            self.idle = False

    def close(self) -> None:
        """Peak RSS, the data directory as the worker left it, then kill it and measure the compacted data."""
        if self.proc is not None and self.proc.poll() is None:
            self.footprint["vm_hwm_mb"] = vm_hwm_mb(self.proc.pid)
            self.footprint["data_dir_bytes"] = dir_bytes(self.settings.data_dir)
        stop(self.proc)
        try:
            self.publisher.close(timeout=10)
        except Exception:  # noqa: BLE001 - nothing left to deliver matters now
            pass
        if "data_dir_bytes" in self.footprint:
            self.footprint["sst_bytes_compacted"] = compacted_sst_bytes(self.settings.data_dir)
            self.footprint["records"] = len(self.records)

    # -- counters --

    def counts(self) -> tuple[float, float] | None:
        """(changes applied, membership events emitted) so far; None while the worker does not answer."""
        text = scrape(self.url)
        if text is None:
            return None
        if self.kind == "naive":
            doc = orjson.loads(text)
            return float(doc["changes"]), float(doc["events"])
        changes = sum(metric_sum(text, "segment_engine_changes_total").values())
        events = sum(metric_sum(text, "segment_engine_membership_events_total").values())
        return changes, events

    def applied(self) -> float | None:
        c = self.counts()
        return None if c is None else c[0]

    def _wait(self, target: float, timeout: float, after: float | None = None) -> Progress:
        assert self.proc is not None
        return watch(self.applied, target, self.proc, self.log, timeout, after)

    # -- phases --

    def warm_up(self, changes: list[Change], seed: int, batch: int, timeout: float) -> int:
        """Create (in full, batched) the contacts of `changes` this worker does not store yet; wait until applied."""
        ids = sorted({c["id"] for c in changes} - self.records)
        if not ids:
            return 0
        before = self.applied() or 0.0
        send_all(self.publisher, self.records_topic, encode_batches(creates_for(ids, seed), self.settings.partitions,
                                                                    batch, check=False))
        assert self.proc is not None
        wait_until(self.applied, before + len(ids), self.proc, self.log, timeout)
        self.settle()
        self.records.update(ids)
        return len(ids)

    def settle(self, interval_s: float = 0.3, timeout: float = 60.0) -> None:
        """Until the worker's events topic stops growing: a change counts as applied before its group's
        events are produced and acknowledged, so a warm-up's last commit (thousands of creates' events at
        1,000 segments) would otherwise still be in flight when the measured phase starts, and delay it."""
        consumer = KafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
                                 enable_auto_commit=False)
        try:
            tps = [TopicPartition(self.events_topic, p) for p in range(self.settings.partitions)]
            last = None
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                ends = consumer.end_offsets(tps)
                if ends == last:
                    return
                last = ends
                time.sleep(interval_s)
        finally:
            consumer.close()

    def throughput(self, messages: list[Msg], timeout: float) -> Throughput:
        """Publish `messages`, then time the worker from the first poll after the publisher finished (so the
        publisher is not competing for CPU in the window) to the poll that saw the last change applied."""
        counts = self.counts()
        assert counts is not None
        changes = sum(len(m.changes) for m in messages)
        send_all(self.publisher, self.records_topic, messages)
        published = time.monotonic()
        progress = self._wait(counts[0] + changes, timeout, after=published)
        after = self.counts() or (progress.last_n, counts[1])
        return Throughput(changes=changes, messages=len(messages), seconds=progress.last_t - progress.first_t,
                          rate=progress.rate, events_per_change=(after[1] - counts[1]) / changes,
                          backlog_at_window_start=counts[0] + changes - progress.first_n)

    def latency(self, messages: list[list[Msg]], tick_s: float, offered: float, timeout: float) -> Latency:
        """Publish `messages[i]` at i * tick_s (a fixed offered load), then match every change that emitted
        an event with its first event: latency = the event's Kafka timestamp (CreateTime, stamped by the
        worker's producer when it sent the event) - the moment the bench handed the change's message to
        its producer (time.time() just before send())."""
        counts = self.counts()
        assert counts is not None and self.proc is not None
        hist_before = self._histogram()
        consumer = KafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
                                 enable_auto_commit=False)
        tps = [TopicPartition(self.events_topic, p) for p in range(self.settings.partitions)]
        start = consumer.end_offsets(tps)
        producer = KafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, linger_ms=0, acks="all",
                                 max_request_size=self.settings.max_message_bytes * 2)
        sent: dict[tuple[str, int], float] = {}
        total = sum(len(m.changes) for tick in messages for m in tick)
        t0 = time.monotonic() + 0.05
        for i, tick in enumerate(messages):
            delay = t0 + i * tick_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for m in tick:
                now = time.time()
                producer.send(self.records_topic, value=m.value, key=m.key, partition=m.partition)
                for change in m.changes:
                    sent[change] = now
        producer.flush()
        last_sent = time.monotonic()
        producer.close()
        done = wait_until(self.applied, counts[0] + total, self.proc, self.log, timeout)
        drain_s = done - last_sent
        time.sleep(0.5)  # events of the last changes: acknowledged before the counter moved (engine), buffered (naive)
        end = consumer.end_offsets(tps)
        arrived: dict[tuple[str, int], float] = {}
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp])
        remaining = {tp: end[tp] - start[tp] for tp in tps}
        deadline = time.monotonic() + 30
        while any(n > 0 for n in remaining.values()) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500, max_records=10_000).items():
                for record in records:
                    if record.offset >= end[tp]:
                        continue
                    remaining[tp] -= 1
                    data = orjson.loads(record.value)["data"]
                    change = (data.get("record_id"), data.get("record_version"))
                    stamp = record.timestamp / 1000
                    if change in sent and (change not in arrived or stamp < arrived[change]):
                        arrived[change] = stamp
        consumer.close()
        samples = sorted((arrived[c] - sent[c]) * 1000 for c in arrived)
        hist = self._histogram_delta(hist_before) if self.kind == "engine" else {}
        return Latency(offered_per_s=offered, changes=total, samples=len(samples), p50_ms=percentile(samples, 50),
                       p99_ms=percentile(samples, 99), max_ms=samples[-1] if samples else None,
                       kept_up=drain_s < 2.0, drain_s=drain_s, histogram=hist)

    # -- the engine's own change->event histogram (a cross-check of the latency above) --

    def _histogram(self) -> dict[str, float]:
        if self.kind != "engine":
            return {}
        return metric_sum(scrape(self.url) or "", "segment_engine_change_to_event_seconds_bucket")

    def _histogram_delta(self, before: dict[str, float]) -> dict[str, Any]:
        after = self._histogram()
        buckets = []
        for label, value in after.items():
            le = label.split('"')[1]
            buckets.append((float("inf") if le == "+Inf" else float(le), value - before.get(label, 0.0)))
        buckets.sort()
        return {"observations": buckets[-1][1] if buckets else 0,
                "p50_ms_estimate": _bucket_quantile(buckets, 0.5), "p99_ms_estimate": _bucket_quantile(buckets, 0.99),
                "method": "linear interpolation inside the histogram's buckets (Prometheus histogram_quantile)"}


def _bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """histogram_quantile over cumulative (upper bound, count) buckets, in ms."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound * 1000
            width = count - lower_count
            return (lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 1.0)) * 1000
        lower_bound, lower_count = bound, count
    return None


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    index = max(0, min(len(sorted_values) - 1, int(-(-p * len(sorted_values) // 100)) - 1))
    return sorted_values[index]


def paced(changes: list[Change], mode: str, rate: float, partitions: int, batch: int,
          batch_interval_s: float = 0.1) -> tuple[list[list[Msg]], float]:
    """The latency phase's messages, grouped per send instant, and the interval between instants: one
    record.change every 1/rate s, or every `batch_interval_s` the changes due in it as record.changes
    messages per partition."""
    if mode == "single":
        return [[m] for m in encode_single(changes, partitions)], 1.0 / rate
    per_tick = max(1, round(rate * batch_interval_s))
    ticks = [encode_batches(changes[i:i + per_tick], partitions, batch, check=False)
             for i in range(0, len(changes), per_tick)]
    return ticks, batch_interval_s


def rng_for(seed: int, *parts: object) -> random.Random:
    return random.Random("/".join(str(p) for p in (seed, *parts)))
