"""Peak RSS of a real worker owning 4 and 24 partitions after the same load: RocksDB memory is bounded by
SEGMENT_ENGINE_MEMORY_BUDGET_MB (engine/storage.py), not by the partition count (issue 17, item 4).

Each run: a fresh embedded broker (its memory is not the worker's), topics with P partitions, 100 random
segments, one `segment-engine worker` process with the budget, then the same N full contact creates (record.changes
batches of 100) published and waited for until applied. VmHWM (/proc/PID/status) is read just before the
worker is killed. `--faust-defaults` adds runs with budget 0 (Faust's own per-partition RocksDB options).

    .venv/bin/python -m bench.memory [--records N] [--faust-defaults]
"""
from __future__ import annotations

import argparse
import base64
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import topics
from bench.harness import (WORKSPACE, creates_for, dir_bytes, encode_batches, metric_sum, scrape, send_all, spawn, stop,
                           tail, vm_hwm_mb, wait_until, worker_env)
from bench.segments import random_segments
from engine.admin import ensure_topics
from engine.broker import LocalBroker, free_port
from engine.client import Publisher
from engine.settings import SAMPLES, Settings

PARTITIONS = (4, 24)
NOTES_FIELD = "notes"  # a long text custom field (CRM notes), so a run writes hundreds of MB in two minutes
CHUNK = 10_000  # records encoded and published at a time (the bench holds no more than that in memory)


@dataclass(frozen=True)
class Run:
    partitions: int
    records: int
    budget_mb: int
    peak_rss_mb: float
    data_dir_mb: float  # RocksDB files the worker left (write-ahead logs and SSTs): what it wrote, roughly
    load_s: float


def workspaces_with_notes(tmp: Path) -> Path:
    """The sample workspaces, the demo contact with one more custom field: a long text."""
    doc = orjson.loads((SAMPLES / "workspaces.json").read_bytes())
    doc["workspaces"][WORKSPACE]["custom_fields"]["contact"][NOTES_FIELD] = "string"
    path = tmp / "workspaces.json"
    path.write_bytes(orjson.dumps(doc))
    return path


def creates(first: int, count: int, notes_bytes: int, rng: random.Random) -> list[dict[str, Any]]:
    """Full creates of contacts c<first>.., each with `notes_bytes` of text (random, so it does not compress)."""
    out = creates_for([f"c{i}" for i in range(first, first + count)], seed=1)
    for change in out:
        change["fields"][f"custom.{NOTES_FIELD}"] = base64.b64encode(rng.randbytes(notes_bytes * 3 // 4)).decode()
    return out


def measure(tmp: Path, partitions: int, records: int, notes_bytes: int, budget_mb: int, timeout: float) -> Run:
    """One worker on a fresh broker: start, load `records` creates, read its peak RSS, kill it."""
    run = f"mem-{partitions}-{budget_mb}-{uuid.uuid4().hex[:6]}"
    with LocalBroker() as broker:
        settings = Settings(broker=broker.address, app_id=run, topic_prefix=f"{run}-", partitions=partitions,
                            data_dir=tmp / run, web_port=free_port(), session_timeout=3.0,
                            workspaces_file=workspaces_with_notes(tmp))
        ensure_topics(settings)
        publisher = Publisher(settings, source="bench", validate=False)
        version = int(time.time() * 1000)
        for segment in random_segments(random.Random(1), 100):
            publisher.define_segment(WORKSPACE, dict(segment, version=version))
        publisher.flush()
        log = tmp / f"{run}.log"
        proc = spawn(["-m", "engine.cli", "worker"],
                     worker_env(settings, SEGMENT_ENGINE_MEMORY_BUDGET_MB=str(budget_mb)), log)
        base = f"http://127.0.0.1:{settings.web_port}"

        def applied() -> float | None:
            text = scrape(f"{base}/metrics")
            return None if text is None else sum(metric_sum(text, "segment_engine_changes_total").values())

        try:
            wait_until(lambda: 1.0 if scrape(f"{base}/health/ready", timeout=5) is not None else None, 1, proc, log,
                       timeout)
            records_topic = topics.RECORD_CHANGES.full_name(settings.topic_prefix)
            rng = random.Random(1)  # the same notes in every run
            started = time.monotonic()
            for first in range(0, records, CHUNK):
                count = min(CHUNK, records - first)
                send_all(publisher, records_topic,
                         encode_batches(creates(first, count, notes_bytes, rng), partitions, 100, check=False))
                # Paced: a chunk at a time, so what is measured is the state, not a backlog of fetched messages.
                wait_until(applied, first + count, proc, log, timeout)
            load_s = time.monotonic() - started
            peak = vm_hwm_mb(proc.pid)
            if peak is None:
                raise RuntimeError(f"worker exited:\n{tail(log)}")
            return Run(partitions, records, budget_mb, peak, dir_bytes(settings.data_dir) / 2**20, load_s)
        finally:
            stop(proc)
            publisher.close(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=250_000, help="contact creates loaded into each worker")
    parser.add_argument("--notes-bytes", type=int, default=2048, help="long text field of each contact, bytes")
    parser.add_argument("--budget-mb", type=int, default=Settings().memory_budget_mb,
                        help="SEGMENT_ENGINE_MEMORY_BUDGET_MB of the budgeted runs")
    parser.add_argument("--faust-defaults", action="store_true",
                        help="also run each partition count with budget 0 (Faust's per-partition RocksDB options)")
    parser.add_argument("--timeout", type=float, default=300, help="per phase (start, load), seconds")
    args = parser.parse_args()
    budgets = [args.budget_mb] + ([0] if args.faust_defaults else [])
    rows: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="segment-bench-memory-") as tmp_name:
        for budget in budgets:
            for partitions in PARTITIONS:
                row = measure(Path(tmp_name), partitions, args.records, args.notes_bytes, budget, args.timeout)
                print(f"  {partitions} partitions, budget {budget or 'none (Faust defaults)'}: peak RSS "
                      f"{row.peak_rss_mb:.0f} MB after {row.records:,} records in {row.load_s:.0f} s", flush=True)
                rows.append(row)
    print()
    print(f"{'partitions':>10}  {'records':>9}  {'data dir MB':>11}  {'peak RSS MB':>11}  {'budget MB':>9}")
    for row in rows:
        budget = str(row.budget_mb) if row.budget_mb else "0 (Faust)"
        print(f"{row.partitions:>10}  {row.records:>9,}  {row.data_dir_mb:>11.0f}  {row.peak_rss_mb:>11.0f}  {budget:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
