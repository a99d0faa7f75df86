"""`make bench`: engine throughput (single and batched messages, 10 and 1,000 segments) vs an empty Faust agent,
then the cost of the scheduler and of behavioural aggregates (bench/time_and_behaviour.py; --time-behaviour).

Everything runs on one embedded local broker (127.0.0.1). Each row pre-publishes its messages, then starts a
fresh worker process and polls its counter; the rate is measured from the first poll that saw progress to
the poll that saw the last message, so process start, group join and recovery are excluded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from engine.admin import ensure_topics
from engine.broker import LocalBroker, free_port
from engine.client import Publisher
from engine.sample_data import contact_changes
from engine.settings import Settings

from bench.segments import match_rate, random_segments

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
POLL_S = 0.1


@dataclass
class Row:
    """One measured scenario."""

    scenario: str
    segments: int
    messages: int
    changes: int
    seconds: float  # measured window (first poll with progress -> poll that saw everything)
    rate: float  # changes/s for the engine, messages/s for the empty agent
    events_per_change: float | None = None
    startup_s: float = 0.0  # worker start -> first progress seen (not part of the rate)
    publish_s: float = 0.0
    outcomes: dict[str, float] = field(default_factory=dict)


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


def scrape(url: str) -> str | None:
    """Body of a worker web page, or None while it is not up yet."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def metric_sum(text: str, name: str) -> dict[str, float]:
    """Samples of one Prometheus counter, keyed by their label string (`outcome="applied"`)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, value = line.rsplit(" ", 1)
            out[head[len(name):].strip("{}")] = float(value)
    return out


def watch(read: Callable[[], float | None], target: int, proc: subprocess.Popen[bytes], log: Path,
          timeout: float) -> Progress:
    """Poll `read` until it reaches `target`; fail if the process dies or time runs out."""
    started = time.monotonic()
    first: tuple[float, float] | None = None
    while True:
        now = time.monotonic()
        n = read()
        if n and first is None:
            first = (now, n)
        if n is not None and n >= target and first is not None:
            if now == first[0]:
                raise RuntimeError("everything was consumed between two polls; raise the message count")
            return Progress(first[0], first[1], now, n, started)
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}; log tail:\n{tail(log)}")
        if now - started > timeout:
            raise TimeoutError(f"only {n} of {target} after {timeout:.0f}s; log tail:\n{tail(log)}")
        time.sleep(POLL_S)


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, *args], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL: nothing of the worker's state is needed afterwards, and it is instant."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


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


def engine_row(broker: LocalBroker, tmp: Path, segments: list[dict[str, Any]], changes: list[dict[str, Any]],
               batch: int, timeout: float) -> Row:
    """Define segments, pre-publish `changes` (batch 1 = record.change messages), time a fresh worker."""
    settings = fresh_settings(broker, tmp, f"{'batch' if batch > 1 else 'single'}-{len(segments)}")
    publisher = Publisher(settings, source="bench")
    t0 = time.monotonic()
    try:
        for segment in segments:
            publisher.define_segment("demo", segment)
        if batch > 1:
            messages = publisher.publish_batches("demo", changes, batch)
        else:
            for change in changes:
                publisher.publish_change("demo", change)
            messages = len(changes)
    finally:
        publisher.close()
    publish_s = time.monotonic() - t0
    env = worker_env(settings)
    url = f"http://127.0.0.1:{settings.web_port}/metrics"
    log = tmp / f"{settings.app_id}.log"

    def changes_done() -> float | None:
        text = scrape(url)
        return None if text is None else sum(metric_sum(text, "segment_engine_changes_total").values())

    proc = spawn(["-m", "engine.cli", "worker"], env, log)
    try:
        progress = watch(changes_done, len(changes), proc, log, timeout)
        text = scrape(url) or ""
    finally:
        stop(proc)
    outcomes = {k.split('"')[1]: v for k, v in metric_sum(text, "segment_engine_changes_total").items()}
    events = sum(metric_sum(text, "segment_engine_membership_events_total").values())
    return Row(
        scenario=f"engine, {'batched x' + str(batch) if batch > 1 else 'single-change'} messages",
        segments=len(segments), messages=messages, changes=len(changes),
        seconds=progress.last_t - progress.first_t, rate=progress.rate,
        events_per_change=events / len(changes), startup_s=progress.first_t - progress.started,
        publish_s=publish_s, outcomes=outcomes,
    )


def empty_agent_row(broker: LocalBroker, tmp: Path, changes: list[dict[str, Any]], timeout: float) -> Row:
    """The same single-change messages on the baseline's own topic, consumed by bench/empty_agent.py."""
    settings = fresh_settings(broker, tmp, "empty")
    publisher = Publisher(settings, source="bench")
    t0 = time.monotonic()
    try:
        for change in changes:
            publisher.publish_change("demo", change)
    finally:
        publisher.close()
    publish_s = time.monotonic() - t0
    env = dict(
        os.environ,
        BENCH_BROKER=broker.address,
        BENCH_TOPIC=publisher.records_topic,
        BENCH_APP_ID=settings.app_id,
        BENCH_PARTITIONS=str(settings.partitions),
        BENCH_WEB_PORT=str(settings.web_port),
        BENCH_DATA_DIR=str(settings.data_dir),
        BENCH_SESSION_TIMEOUT=str(settings.session_timeout),
    )
    url = f"http://127.0.0.1:{settings.web_port}/count"
    log = tmp / f"{settings.app_id}.log"

    def count() -> float | None:
        text = scrape(url)
        return None if text is None else float(text)

    proc = spawn(["-m", "bench.empty_agent"], env, log)
    try:
        progress = watch(count, len(changes), proc, log, timeout)
    finally:
        stop(proc)
    return Row(scenario="BASELINE: empty Faust agent (counts only)", segments=0, messages=len(changes),
               changes=len(changes), seconds=progress.last_t - progress.first_t, rate=progress.rate,
               startup_s=progress.first_t - progress.started, publish_s=publish_s)


def print_table(rows: list[Row], baseline: float) -> None:
    head = f"{'scenario':<44} {'segments':>8} {'messages':>9} {'changes':>8} {'secs':>6} {'changes/s':>10} {'x empty':>8} {'events/chg':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        unit = f"{r.rate:,.0f}" + ("" if r.events_per_change is not None else " msg/s")
        epc = f"{r.events_per_change:.2f}" if r.events_per_change is not None else "-"
        print(f"{r.scenario:<44} {r.segments:>8} {r.messages:>9,} {r.changes:>8,} {r.seconds:>6.1f} {unit:>10} "
              f"{r.rate / baseline:>8.2f} {epc:>10}")


def main() -> int:
    from bench import time_and_behaviour  # imports this module's helpers: not at the top (no import cycle)

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--single", type=int, default=20_000, help="changes for the single-change rows (and the empty agent)")
    parser.add_argument("--batched", type=int, default=40_000, help="changes for the batched rows")
    parser.add_argument("--heavy-divisor", type=int, default=5,
                        help="rows with more than 100 segments use changes/DIVISOR, to keep each row near 20 s")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--segments", default="10,1000", help="comma-separated segment counts")
    parser.add_argument("--timeout", type=float, default=120, help="per row, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-behaviour", choices=("on", "off", "only"), default="on",
                        help="scheduler and behavioural-aggregate rows (bench/time_and_behaviour.py): "
                             "on (default), off, or only them")
    time_and_behaviour.add_arguments(parser)
    args = parser.parse_args()

    started = time.monotonic()
    counts = [int(c) for c in args.segments.split(",")]
    rng = random.Random(args.seed)
    engine_rows = args.time_behaviour != "only"
    segment_sets = {n: random_segments(random.Random(args.seed + n), n) for n in counts} if engine_rows else {}
    # About ten changes per contact: the first creates it (evaluated against every segment), the rest are updates.
    single = list(contact_changes(rng, args.single, records=max(100, args.single // 10))) if engine_rows else []
    batched = list(contact_changes(rng, args.batched, records=max(100, args.batched // 10))) if engine_rows else []
    rows: list[Row] = []
    baseline: Row | None = None
    extra: dict[str, Any] | None = None
    tb_s = 0.0
    with tempfile.TemporaryDirectory(prefix="segment-bench-") as tmp_name, LocalBroker() as broker:
        tmp = Path(tmp_name)
        if engine_rows:
            baseline = empty_agent_row(broker, tmp, single, args.timeout)
            rows.append(baseline)
            print(f"empty agent: {baseline.rate:,.0f} msg/s", flush=True)
            for batch, changes in ((1, single), (args.batch_size, batched)):
                for n in counts:
                    size = len(changes) // (args.heavy_divisor if n > 100 else 1)
                    row = engine_row(broker, tmp, segment_sets[n], changes[:size], batch, args.timeout)
                    rows.append(row)
                    print(f"{row.scenario}, {n} segments: {row.rate:,.0f} changes/s", flush=True)
        if args.time_behaviour != "off":
            tb_started = time.monotonic()
            extra = time_and_behaviour.run_all(broker, tmp, args)
            tb_s = time.monotonic() - tb_started
    total = time.monotonic() - started
    # The engine's batched change rate with 10 segments, to compare the scheduler and aggregates with.
    batched_10 = next((r.rate for r in rows if r.scenario.startswith("engine, batched") and r.segments == 10), None)
    if baseline is not None:
        print()
        print_table(rows, baseline.rate)
    if extra is not None:
        time_and_behaviour.report(extra, batched_10)
    summary = f"total runtime {total:.0f}s"
    if baseline is not None:
        summary = f"empty agent (baseline): {baseline.rate:,.0f} msg/s;  {summary}"
    if extra is not None:
        summary += f" (time and behaviour rows: {tb_s:.0f}s)"
    print(f"\n{summary}")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}.json"
    doc: dict[str, Any] = {
        "started_utc": stamp, "runtime_s": round(total, 1), "args": vars(args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    if baseline is not None:
        doc.update({
            "segment_match_rate": {n: round(match_rate(s, samples=200), 4) for n, s in segment_sets.items()},
            "empty_agent_msgs_per_s": baseline.rate,
            "rows": [dict(asdict(r), ratio_to_empty=r.rate / baseline.rate) for r in rows],
        })
    if extra is not None:
        doc["time_and_behaviour"] = dict(time_and_behaviour.as_json(extra, batched_10), runtime_s=round(tb_s, 1))
    path.write_text(json.dumps(doc, indent=2))
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
