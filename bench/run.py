"""`make bench`: the engine against its peers on one generated workload, on one embedded broker, in one run.

Rows (see bench/README.md): the engine with single-change and batched (x100) messages, and three BASELINES on
the same messages: a bare aiokafka consumer that decodes (the transport limit), an empty Faust agent, and a
naive Faust implementation of the same job (bench/naive_worker.py); and the REFERENCE: the same job as a plain
asyncio process with the engine's rules and durability order (bench/reference_job.py); at 10, 1,000 and 10,000
segments. Columns: changes/s, its ratio to each peer, p50/p99 change->event latency at a fixed offered load, peak RSS,
RocksDB bytes per record; then the backfill time of a new segment (bench/backfill.py).

`python -m bench.run --quick` is a smoke run of about 1.5 minutes (tiny counts, 10 and 1,000 segments).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from engine.broker import LocalBroker
from engine.client import Publisher
from engine.sample_data import zipf_contact_updates

from bench import backfill, costs
from bench.harness import (  # noqa: F401 - re-exported: bench/time_and_behaviour.py imports them from here
    REPO, RESULTS, Latency, Msg, Progress, Throughput, WorkerSession, compacted_sst_bytes, creates_for, dir_bytes,
    encode_batches, encode_single, fresh_settings, metric_sum, paced, scrape, send_all, spawn, stop, tail, vm_hwm_mb,
    watch, worker_env,
)
from bench.segments import match_rate, random_segments

FULL_CHANGES = "10=60000/100000,1000=10000/20000,10000=250/600"
QUICK_CHANGES = "10=1500/3000,1000=150/300"


@dataclass
class Row:
    """One line of the table."""

    scenario: str
    kind: str  # engine | naive | raw | empty | reference
    mode: str  # single | batched
    segments: int
    changes: int
    messages: int
    seconds: float
    rate: float  # changes/s
    events_per_change: float | None = None
    latency: dict[str, Any] | None = None
    latency_note: str = ""
    vm_hwm_mb: float | None = None
    disk_bytes_per_record: float | None = None
    sst_bytes_per_record: float | None = None
    records: int | None = None
    engine_over_reference: float | None = None  # engine rows: changes/s ÷ the reference row's (same mode, segments)
    extra: dict[str, Any] = field(default_factory=dict)


# ---- the workload -------------------------------------------------------------------------------------


@dataclass
class Slices:
    """Where each phase of a segment count's sessions reads the one change stream: single-change phase,
    its latency phase, batched phase, its latency phase, back to back (versions only grow)."""

    single: tuple[int, int]
    single_latency: tuple[int, int]
    batched: tuple[int, int]
    batched_latency: tuple[int, int]


def parse_plan(spec: str) -> dict[int, tuple[int, int]]:
    """"10=15000/30000,1000=3000/6000" -> {segments: (single-change changes, batched changes)}."""
    plan = {}
    for part in spec.split(","):
        segments, counts = part.split("=")
        single, batched = counts.split("/")
        plan[int(segments)] = (int(single), int(batched))
    return dict(sorted(plan.items()))


def slices_for(plan: dict[int, tuple[int, int]], latency_changes: int) -> dict[int, Slices]:
    out = {}
    for n, (single, batched) in plan.items():
        a = single + latency_changes
        b = a + batched
        out[n] = Slices((0, single), (single, a), (a, b), (b, b + latency_changes))
    return out


def take(stream: list[dict[str, Any]], span: tuple[int, int]) -> list[dict[str, Any]]:
    return stream[span[0]:span[1]]


# ---- peers ----------------------------------------------------------------------------------------------


def raw_row(broker: LocalBroker, tmp: Path, messages: list[Msg], mode: str, timeout: float) -> Row:
    """BASELINE: bench/raw_consumer.py over pre-published messages; it times itself (first batch -> last message)."""
    settings = fresh_settings(broker, tmp, f"raw-{mode}")
    publisher = Publisher(settings, source="bench", validate=False)
    try:
        send_all(publisher, publisher.records_topic, messages)
    finally:
        publisher.close()
    env = dict(os.environ, BENCH_BROKER=broker.address, BENCH_TOPIC=publisher.records_topic,
               BENCH_PARTITIONS=str(settings.partitions), BENCH_EXPECT=str(len(messages)), BENCH_TIMEOUT=str(timeout))
    out = subprocess.run([sys.executable, "-m", "bench.raw_consumer"], env=env, cwd=REPO, capture_output=True,
                         timeout=timeout + 30)
    if out.returncode != 0:
        raise RuntimeError(f"raw consumer failed ({out.returncode}): {out.stderr.decode()[-2000:]}")
    result = orjson.loads(out.stdout.splitlines()[-1])
    seconds = result["last"] - result["first"]
    if seconds <= 0:
        raise RuntimeError("the raw consumer got everything in one fetch; raise the change count")
    return Row(scenario=f"BASELINE raw aiokafka+orjson, {mode_label(mode)}", kind="raw", mode=mode, segments=0,
               changes=result["changes"], messages=result["messages"], seconds=seconds,
               rate=result["changes"] / seconds, vm_hwm_mb=result["vm_hwm_kb"] / 1024)


def empty_row(broker: LocalBroker, tmp: Path, messages: list[Msg], mode: str, timeout: float) -> Row:
    """BASELINE: bench/empty_agent.py over pre-published messages, timed by the agent (first -> last message)."""
    settings = fresh_settings(broker, tmp, f"empty-{mode}")
    publisher = Publisher(settings, source="bench", validate=False)
    try:
        send_all(publisher, publisher.records_topic, messages)
    finally:
        publisher.close()
    env = dict(os.environ, BENCH_BROKER=broker.address, BENCH_TOPIC=publisher.records_topic, BENCH_APP_ID=settings.app_id,
               BENCH_PARTITIONS=str(settings.partitions), BENCH_WEB_PORT=str(settings.web_port),
               BENCH_DATA_DIR=str(settings.data_dir), BENCH_SESSION_TIMEOUT=str(settings.session_timeout))
    url = f"http://127.0.0.1:{settings.web_port}/stats"
    log = tmp / f"{settings.app_id}.log"
    proc = spawn(["-m", "bench.empty_agent"], env, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            text = scrape(url)
            stats = orjson.loads(text) if text else None
            if stats and stats["n"] >= len(messages):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"empty agent exited with {proc.returncode}:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"empty agent: {stats} after {timeout:.0f}s:\n{tail(log)}")
            time.sleep(0.1)
        rss = vm_hwm_mb(proc.pid)
    finally:
        stop(proc)
    changes = sum(len(m.changes) for m in messages)
    seconds = stats["last"] - stats["first"]
    if seconds <= 0:
        raise RuntimeError("the empty agent got everything at once; raise the change count")
    return Row(scenario=f"BASELINE empty Faust agent, {mode_label(mode)}", kind="empty", mode=mode, segments=0,
               changes=changes, messages=len(messages), seconds=seconds, rate=changes / seconds, vm_hwm_mb=rss)


def engine_history(stream: list[dict[str, Any]], slices: Slices, mode: str, single_latency_ran: bool,
                   seed: int) -> list[dict[str, Any]]:
    """Every change the engine's worker applied before the measured phase of `mode`, in its order: the warm-up
    creates of the single-change phase; for the batched phase also the single-change phase, its latency phase
    (with its warm-up creates) if it ran, and the batched phase's own warm-up creates. Replayed (untimed) by the
    reference so that it starts the phase from the same record states as the engine."""
    stored: set[str] = set()
    history: list[dict[str, Any]] = []

    def warm(changes: list[dict[str, Any]]) -> None:  # as WorkerSession.warm_up
        ids = sorted({c["id"] for c in changes} - stored)
        history.extend(creates_for(ids, seed))
        stored.update(ids)

    single = take(stream, slices.single)
    warm(single)
    if mode == "single":
        return history
    history.extend(single)
    if single_latency_ran:
        latency = take(stream, slices.single_latency)
        warm(latency)
        history.extend(latency)
    warm(take(stream, slices.batched))
    return history


def reference_row(broker: LocalBroker, tmp: Path, segments: list[dict[str, Any]], history: list[dict[str, Any]],
                  messages: list[Msg], mode: str, args: argparse.Namespace) -> Row:
    """REFERENCE: bench/reference_job.py over pre-published messages (the engine row's), after replaying what the
    engine's worker applied before that phase (`history`, untimed, from its own topic); it times itself (first
    fetch -> last changelog batch acknowledged)."""
    import topics

    n = len(segments)
    settings = fresh_settings(broker, tmp, f"reference-{n}-{mode}")
    warm = fresh_settings(broker, tmp, f"reference-warm-{n}-{mode}")  # only its record-changes topic is used
    warm_topic = topics.RECORD_CHANGES.full_name(warm.topic_prefix)
    publisher = Publisher(settings, source="bench", validate=False)
    warm_msgs = encode_batches(history, settings.partitions, args.batch_size, check=False)
    try:
        send_all(publisher, warm_topic, warm_msgs)
        send_all(publisher, publisher.records_topic, messages)
    finally:
        publisher.close()
    seg_file = tmp / f"{settings.app_id}-segments.json"
    seg_file.write_bytes(orjson.dumps(segments))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    prefix = settings.topic_prefix
    env = dict(os.environ, BENCH_BROKER=broker.address, BENCH_TOPIC=publisher.records_topic,
               BENCH_EXPECT=str(len(messages)), BENCH_WARMUP_TOPIC=warm_topic,
               BENCH_WARMUP_EXPECT=str(len(warm_msgs)), BENCH_EVENTS_TOPIC=topics.SEGMENT_EVENTS.full_name(prefix),
               BENCH_CHANGELOG_TOPIC=topics.RECORD_STATE_CHANGELOG.full_name(prefix),
               BENCH_PARTITIONS=str(settings.partitions), BENCH_DATA_DIR=str(settings.data_dir),
               BENCH_SEGMENTS_FILE=str(seg_file), BENCH_TIMEOUT=str(args.timeout))
    out = subprocess.run([sys.executable, "-m", "bench.reference_job"], env=env, cwd=REPO, capture_output=True,
                         timeout=2 * args.timeout + 60)
    if out.returncode != 0:
        raise RuntimeError(f"reference job failed ({out.returncode}): {out.stderr.decode()[-2000:]}")
    result = orjson.loads(out.stdout.splitlines()[-1])
    seconds = result["last"] - result["first"]
    if seconds <= 0:
        raise RuntimeError("the reference job got everything in one fetch; raise the change count")
    records = result["records"] or None
    return Row(scenario=f"REFERENCE plain asyncio job, {mode_label(mode, args.batch_size)}", kind="reference",
               mode=mode, segments=n, changes=result["changes"], messages=result["messages"], seconds=seconds,
               rate=result["changes"] / seconds, events_per_change=result["events"] / max(1, result["changes"]),
               vm_hwm_mb=result["vm_hwm_kb"] / 1024, records=records,
               disk_bytes_per_record=dir_bytes(settings.data_dir) / records if records else None,
               sst_bytes_per_record=compacted_sst_bytes(settings.data_dir) / records if records else None,
               extra={"replayed_before_phase": len(history)})


def reference_rows(broker: LocalBroker, tmp: Path, n: int, segments: list[dict[str, Any]], stream: list[dict[str, Any]],
                   slices: Slices, rows: list[Row], args: argparse.Namespace, single_msgs: list[Msg],
                   batched_msgs: list[Msg]) -> list[Row]:
    """Both modes of the reference for segment count `n`, once its engine rows are measured (the history it
    replays depends on whether the engine's single-change latency phase ran)."""
    engine_single = next((r for r in rows if r.kind == "engine" and r.mode == "single" and r.segments == n), None)
    latency_ran = engine_single is not None and engine_single.latency is not None
    out = []
    for mode, msgs in (("single", single_msgs), ("batched", batched_msgs)):
        history = engine_history(stream, slices, mode, latency_ran, args.seed)
        row = reference_row(broker, tmp, segments, history, msgs, mode, args)
        out.append(row)
        print(f"  {row.scenario}, {n} segments: {row.rate:,.0f} changes/s", flush=True)
    return out


def mode_label(mode: str, batch: int = 100) -> str:
    return "single-change" if mode == "single" else f"batched x{batch}"


# ---- engine and naive sessions ------------------------------------------------------------------------


def run_session(session: WorkerSession, stream: list[dict[str, Any]], slices: Slices, args: argparse.Namespace,
                single_msgs: list[Msg], batched_msgs: list[Msg]) -> list[Row]:
    """Both modes on one worker: warm up the phase's contacts, time the phase, then (if the worker's capacity
    allows) the latency phase at the fixed offered load. Footprint (RSS, disk) is the session's."""
    rows: list[Row] = []
    name = "engine" if session.kind == "engine" else "BASELINE naive Faust"
    n = len(session.segments)
    partitions = session.settings.partitions
    try:
        if session.proc is None:
            session.start()
        startup = session.wait_ready(args.start_timeout)
        session.normal_priority()
        for mode, span, latency_span, messages in (
            ("single", slices.single, slices.single_latency, single_msgs),
            ("batched", slices.batched, slices.batched_latency, batched_msgs),
        ):
            changes = take(stream, span)
            created = session.warm_up(changes, args.seed, args.batch_size, args.timeout)
            result: Throughput = session.throughput(messages, args.timeout)
            row = Row(scenario=f"{name}, {mode_label(mode, args.batch_size)}", kind=session.kind, mode=mode,
                      segments=n, changes=result.changes, messages=result.messages, seconds=result.seconds,
                      rate=result.rate, events_per_change=result.events_per_change,
                      extra={"warm_up_creates": created, "backlog_at_window_start": result.backlog_at_window_start,
                             "worker_ready_after_s": startup, "started_under_sched_idle": session.idle_started})
            if args.latency_seconds > 0 and result.rate >= args.latency_margin * args.latency_rate:
                latency_changes = take(stream, latency_span)
                session.warm_up(latency_changes, args.seed, args.batch_size, args.timeout)
                ticks, tick_s = paced(latency_changes, mode, args.latency_rate, partitions, args.batch_size)
                lat: Latency = session.latency(ticks, tick_s, args.latency_rate, args.timeout)
                row.latency = asdict(lat)
                if not lat.kept_up:
                    row.latency_note = f"lagging: drained {lat.drain_s:.1f}s after the last change"
            elif args.latency_seconds > 0:
                row.latency_note = (f"saturated: {result.rate:,.0f} changes/s < {args.latency_margin:g} x "
                                    f"{args.latency_rate:,.0f}")
            rows.append(row)
            print(f"  {row.scenario}, {n} segments: {row.rate:,.0f} changes/s"
                  + (f", latency p50 {row.latency['p50_ms']:.0f} ms p99 {row.latency['p99_ms']:.0f} ms"
                     if row.latency and row.latency["p50_ms"] is not None else f" ({row.latency_note or 'no latency'})"),
                  flush=True)
    finally:
        session.close()
    fp = session.footprint
    records = fp.get("records") or None
    for row in rows:
        row.vm_hwm_mb = fp.get("vm_hwm_mb")
        row.records = records
        if records:
            row.disk_bytes_per_record = fp.get("data_dir_bytes", 0) / records
            row.sst_bytes_per_record = fp.get("sst_bytes_compacted", 0) / records
    return rows


# ---- table --------------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    x = a / b
    return f"{x:.2f}" if x >= 0.1 else f"{x:.2g}"


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.1f}" if value < 10 else f"{value:,.0f}")


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    raw = {r.mode: r.rate for r in rows if r.kind == "raw"}
    empty = {r.mode: r.rate for r in rows if r.kind == "empty"}
    naive = {(r.mode, r.segments): r.rate for r in rows if r.kind == "naive"}
    head = (f"{'row':<43} {'segs':>6} {'changes':>7} {'secs':>5} {'changes/s':>10} {'x raw':>8} {'x empty':>8} "
            f"{'x naive':>7} {'eng÷ref':>7} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7} {'disk B/rec':>10} {'SST B/rec':>9} {'ev/chg':>6}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if r.latency and r.latency["p50_ms"] is not None:
            p50, p99 = fmt_ms(r.latency["p50_ms"]), fmt_ms(r.latency["p99_ms"])
            if not r.latency["kept_up"]:
                p99 += "!"
        elif r.latency_note.startswith("saturated"):
            p50 = p99 = "sat."
        else:
            p50 = p99 = "-"
        print(f"{r.scenario:<43} {r.segments or '-':>6} {r.changes:>7,} {r.seconds:>5.1f} {r.rate:>10,.0f} "
              f"{ratio(r.rate, raw.get(r.mode)):>8} {ratio(r.rate, empty.get(r.mode)) if r.kind != 'empty' else '-':>8} "
              f"{ratio(r.rate, naive.get((r.mode, r.segments))) if r.kind == 'engine' else '-':>7} "
              f"{ratio(r.engine_over_reference, 1.0) if r.kind == 'engine' else '-':>7} "
              f"{p50:>7} {p99:>7} {r.vm_hwm_mb or 0:>7,.0f} "
              f"{'-' if r.disk_bytes_per_record is None else format(r.disk_bytes_per_record, ',.0f'):>10} "
              f"{'-' if r.sst_bytes_per_record is None else format(r.sst_bytes_per_record, ',.0f'):>9} "
              f"{'-' if r.events_per_change is None else format(r.events_per_change, '.2f'):>6}")
    plan = ", ".join(f"{n:,} segs: {s:,} / {b:,}" for n, (s, b) in parse_plan(args.changes).items())
    print(f"changes per row (single-change / batched): {plan}; a row is timed from the first poll after the publisher "
          "finished, over the backlog left then (backlog_at_window_start in the JSON).")
    print(f"x raw / x empty = changes/s over that peer's changes/s in the same mode (peers read the "
          f"{min(parse_plan(args.changes))}-segment rows' messages); x naive = over the naive baseline's, same mode "
          "and segments. eng÷ref = engine changes/s ÷ the REFERENCE plain asyncio job's (bench/reference_job.py: the "
          "same messages, the engine's rules, guard index and durability order; no Faust, no schema validation, no "
          "member index, no counts), same mode and segments; the reference times itself (first fetch -> last "
          "changelog batch acknowledged), like the raw baseline.")
    print(f"p50/p99: change -> event latency at {args.latency_rate:,.0f} changes/s offered for {args.latency_seconds:g} s "
          "(event's Kafka timestamp - the bench's send time of the change), over the changes that emitted an event; "
          f"sat. = capacity below {args.latency_margin:g}x the offered load, not run; ! = the worker lagged behind. "
          "On the embedded broker (tansu) a fetch that finds no data waits ~half of its fetch_max_wait even if data "
          "arrives; every Faust worker here uses engine/consumer.py's 20 ms (Faust's own is 1.5 s).")
    print("RSS = peak RSS (VmHWM) of the worker process; disk B/rec = its data dir (RocksDB with WAL, logs) / "
          "records stored; SST B/rec = after reopening, flushing and compacting (stored data only). Engine and naive "
          "rows of one segment count share one worker (both modes), so these three columns are per worker.")


def print_backfill(result: dict[str, Any]) -> None:
    e2e, inproc = result.get("end_to_end"), result.get("in_process")
    if e2e:
        print(f"backfill, end to end: one new segment over {e2e['records']:,} stored contacts "
              f"({e2e['existing_segments']} segments defined; loaded in {e2e['load_seconds']:.0f} s at "
              f"{e2e['load_creates_per_s']:,.0f} creates/s): {e2e['backfill_seconds']:.2f} s from publishing the "
              f"definition to every partition done = {e2e['records_per_s']:,.0f} records/s, {e2e['entered']:,.0f} "
              f"entered; 1M records EXTRAPOLATED (linear): {e2e['extrapolated_1m_seconds']:,.0f} s"
              + (f"; worker SST {e2e['footprint']['sst_bytes_compacted'] / e2e['records']:,.0f} B/record, peak RSS "
                 f"{e2e['footprint']['vm_hwm_mb']:,.0f} MB" if e2e.get("footprint", {}).get("sst_bytes_compacted") else ""))
    if inproc:
        print(f"backfill, in process (engine's backfill code, RocksDB only, no Kafka, 1 partition): "
              f"{inproc['records']:,} stored states: {inproc['total_seconds']:.1f} s = {inproc['records_per_s']:,.0f} "
              f"records/s (scan+evaluate {inproc['scan_evaluate_seconds']:.1f} s, write {inproc['changed_states']:,} "
              f"changed states {inproc['write_seconds']:.2f} s), {inproc['entered']:,} entered; "
              f"SST {inproc['sst_bytes_per_record']:,.0f} B/record at that size")


def git_state() -> dict[str, Any]:
    """The commit and the files that differ from it: the engine measured is the working tree."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"head": git("rev-parse", "HEAD"), "dirty": git("status", "--porcelain").splitlines()}


# ---- main ---------------------------------------------------------------------------------------------


def main() -> int:
    from bench import time_and_behaviour  # imports this module's helpers: not at the top (no import cycle)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: --changes {QUICK_CHANGES}, 3 s latency phases, 10 s backfill load, "
                             "50,000 in-process records, the 1,000-segment engine worker started in the background")
    parser.add_argument("--changes", default=None,
                        help=f"segment counts and changes per row, SEGMENTS=SINGLE/BATCHED,... (default {FULL_CHANGES})")
    parser.add_argument("--records", type=int, default=50_000, help="contact ids the Zipf law draws from")
    parser.add_argument("--zipf-s", type=float, default=1.0, help="Zipf exponent of the record ids")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--latency-rate", type=float, default=1000, help="offered load of the latency phases, changes/s")
    parser.add_argument("--latency-seconds", type=float, default=None, help="length of a latency phase (0: none; default 10)")
    parser.add_argument("--latency-margin", type=float, default=1.1,
                        help="a latency phase runs only if the row's changes/s >= MARGIN x the offered load")
    parser.add_argument("--background-from", type=int, default=None,
                        help="engine workers with at least this many segments are started at the beginning under "
                             "SCHED_IDLE (their registry load takes minutes) and measured last (default 5000; "
                             "0: never)")
    parser.add_argument("--backfill-load-seconds", type=float, default=None,
                        help="end-to-end backfill: seconds of loading contacts (default 60; 0 skips it)")
    parser.add_argument("--backfill-records", type=int, default=None,
                        help="in-process backfill: stored states (default 1,000,000; 0 skips it)")
    parser.add_argument("--costs", default="10,1000",
                        help="segment counts of the in-process cost rows (bench/costs.py: µs per change, per rule, "
                             "per flip); empty: skip them")
    parser.add_argument("--timeout", type=float, default=180, help="per phase, seconds")
    parser.add_argument("--start-timeout", type=float, default=900, help="worker start (registry load), seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-behaviour", choices=("on", "off", "only"), default="off",
                        help="also the scheduler and behavioural-aggregate rows (bench/time_and_behaviour.py, "
                             "~70 s): off (default), on, or only them")
    time_and_behaviour.add_arguments(parser)
    args = parser.parse_args()
    quick = args.quick
    args.changes = args.changes or (QUICK_CHANGES if quick else FULL_CHANGES)
    if args.latency_seconds is None:
        args.latency_seconds = 3.0 if quick else 10.0
    if args.background_from is None:
        args.background_from = 1000 if quick else 5000
    if args.backfill_load_seconds is None:
        args.backfill_load_seconds = 10.0 if quick else 60.0
    if args.backfill_records is None:
        args.backfill_records = 50_000 if quick else 1_000_000
    if quick:
        args.scheduled, args.events, args.event_records = 2_000, 4_000, 400

    started = time.monotonic()
    load_at_start = os.getloadavg()
    rows: list[Row] = []
    backfill_result: dict[str, Any] = {}
    cost_rows: list[dict[str, Any]] = []
    extra: dict[str, Any] | None = None
    tb_s = 0.0
    engine_rows = args.time_behaviour != "only"
    plan = parse_plan(args.changes)
    latency_changes = int(args.latency_rate * args.latency_seconds)
    slices = slices_for(plan, latency_changes)
    stream: list[dict[str, Any]] = []
    workload: dict[str, Any] = {}
    segment_sets: dict[int, list[dict[str, Any]]] = {}
    if engine_rows:
        total = max(s.batched_latency[1] for s in slices.values())
        stream = zipf_contact_updates(random.Random(args.seed), total, args.records, args.zipf_s, seed=args.seed)
        segment_sets = {n: random_segments(random.Random(args.seed + n), n) for n in plan}
        workload = {
            "stream_changes": total, "record_ids": args.records, "zipf_s": args.zipf_s,
            "distinct_ids_in_stream": len({c["id"] for c in stream}),
            "deletes": sum(c["op"] == "delete" for c in stream),
            "re_creates": sum(1 for c in stream if c["op"] == "upsert" and len(c["fields"]) > 3),
            "segment_match_rate": {n: round(match_rate(s, samples=100), 4) for n, s in segment_sets.items()},
            "slices": {n: asdict(s) for n, s in slices.items()},
        }
        print(f"workload: {total:,} changes over {workload['distinct_ids_in_stream']:,} of {args.records:,} contact "
              f"ids (Zipf s={args.zipf_s:g}); segment counts {list(plan)}", flush=True)

    with tempfile.TemporaryDirectory(prefix="segment-bench-") as tmp_name, LocalBroker() as broker, \
            contextlib.ExitStack() as leftovers:
        tmp = Path(tmp_name)
        if engine_rows:
            partitions = 4
            smallest = min(plan)
            single_all = encode_single(take(stream, slices[smallest].single), partitions)
            single_msgs = {n: single_all[:plan[n][0]] if plan[n][0] <= len(single_all)
                           else encode_single(take(stream, slices[n].single), partitions) for n in plan}
            batched_msgs = {n: encode_batches(take(stream, slices[n].batched), partitions, args.batch_size) for n in plan}

            background: dict[int, WorkerSession] = {}
            if args.background_from > 0:
                for n in plan:
                    if n >= args.background_from:
                        session = WorkerSession("engine", broker, tmp, segment_sets[n], idle=True)
                        session.start()
                        # Killed however the run ends: a failure later on once left this worker running.
                        leftovers.callback(lambda proc=session: stop(proc.proc))
                        background[n] = session
                        print(f"engine worker with {n:,} segments started in the background (SCHED_IDLE)", flush=True)

            print("peers (BASELINES):", flush=True)
            for make in (raw_row, empty_row):
                for mode, msgs in (("single", single_msgs[smallest]), ("batched", batched_msgs[smallest])):
                    row = make(broker, tmp, msgs, mode, args.timeout)
                    rows.append(row)
                    print(f"  {row.scenario}: {row.rate:,.0f} changes/s", flush=True)

            for n in plan:
                print(f"{n:,} segments:", flush=True)
                kinds = ("naive",) if n in background else ("engine", "naive")
                for kind in kinds:
                    rows += run_session(WorkerSession(kind, broker, tmp, segment_sets[n]), stream, slices[n], args,
                                        single_msgs[n], batched_msgs[n])
                if n not in background:
                    rows += reference_rows(broker, tmp, n, segment_sets[n], stream, slices[n], rows, args,
                                           single_msgs[n], batched_msgs[n])

            backfill_segments = segment_sets.get(10) or random_segments(random.Random(args.seed + 10), 10)
            new_segment = dict(random_segments(random.Random(args.seed + 999), 1)[0], id="backfill-new",
                               name="Backfill: new segment")
            if args.backfill_load_seconds > 0:
                print("backfill, end to end:", flush=True)
                backfill_result["end_to_end"] = backfill.end_to_end(
                    broker, tmp, backfill_segments, new_segment, args.backfill_load_seconds, args.seed, args.timeout)
                print(f"  {backfill_result['end_to_end']['records']:,} records: "
                      f"{backfill_result['end_to_end']['backfill_seconds']:.2f} s", flush=True)
            if args.backfill_records > 0:
                print("backfill, in process:", flush=True)
                backfill_result["in_process"] = backfill.in_process(tmp, backfill_segments, new_segment,
                                                                    args.backfill_records, args.seed)
                print(f"  {args.backfill_records:,} records: {backfill_result['in_process']['total_seconds']:.1f} s",
                      flush=True)

            for n in (int(x) for x in args.costs.split(",") if x):
                print(f"costs, in process, {n:,} segments:", flush=True)
                cost_rows.append(costs.measure(n, contacts=500 if quick else 2_500))
                print("  " + costs.summary(cost_rows[-1]), flush=True)

            for n, session in background.items():
                print(f"{n:,} segments (engine worker started in the background):", flush=True)
                engine_session_rows = run_session(session, stream, slices[n], args, single_msgs[n], batched_msgs[n])
                position = next((i for i, r in enumerate(rows) if r.kind == "naive" and r.segments == n), len(rows))
                rows[position:position] = engine_session_rows
                reference = reference_rows(broker, tmp, n, segment_sets[n], stream, slices[n], rows, args,
                                           single_msgs[n], batched_msgs[n])
                position = max((i + 1 for i, r in enumerate(rows) if r.segments == n), default=len(rows))
                rows[position:position] = reference
        if args.time_behaviour != "off":
            tb_started = time.monotonic()
            extra = time_and_behaviour.run_all(broker, tmp, args)
            tb_s = time.monotonic() - tb_started

    total_s = time.monotonic() - started
    reference = {(r.mode, r.segments): r.rate for r in rows if r.kind == "reference"}
    for r in rows:
        if r.kind == "engine" and reference.get((r.mode, r.segments)):
            r.engine_over_reference = r.rate / reference[(r.mode, r.segments)]
    if rows:
        print()
        print_table(rows, args)
    if backfill_result:
        print()
        print_backfill(backfill_result)
    if cost_rows:
        print("\ncosts in process (bench/costs.py; µs of one core, network sends left out):")
        for row in cost_rows:
            print(f"  {row['segments']:>6,} segments: " + costs.summary(row))
    if extra is not None:
        batched_10 = next((r.rate for r in rows if r.kind == "engine" and r.mode == "batched" and r.segments == 10), None)
        time_and_behaviour.report(extra, batched_10)
    load_at_end = os.getloadavg()
    print(f"\ntotal runtime {total_s:.0f}s" + (f" (time and behaviour rows: {tb_s:.0f}s)" if extra is not None else "")
          + f"; load average (1 min) at start {load_at_start[0]:.2f}, at end {load_at_end[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}.json"
    doc: dict[str, Any] = {
        "started_utc": stamp, "runtime_s": round(total_s, 1), "args": vars(args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_at_start": load_at_start, "loadavg_at_end": load_at_end},
        "git": git_state(),
        "workload": workload,
        "rows": [asdict(r) for r in rows],
        "reference": [{"segments": r.segments, "mode": r.mode, "reference_changes_per_s": reference.get((r.mode, r.segments)),
                       "engine_changes_per_s": r.rate, "engine_over_reference": r.engine_over_reference}
                      for r in rows if r.kind == "engine"],
        "backfill": backfill_result,
        "costs": cost_rows,
    }
    if extra is not None:
        batched_10 = next((r.rate for r in rows if r.kind == "engine" and r.mode == "batched" and r.segments == 10), None)
        doc["time_and_behaviour"] = dict(time_and_behaviour.as_json(extra, batched_10), runtime_s=round(tb_s, 1))
    path.write_text(json.dumps(doc, indent=2, default=str))
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
