"""Cost per record of the scheduler (relative dates) and of behavioural aggregates.

Two parts, both called from `make bench` (`python -m bench.run`; `--time-behaviour off|only`), or alone
with `python -m bench.time_and_behaviour`:

* **In-process** (pure core, no Kafka, no disk): µs per call of `apply_time` on a record whose
  time-dependent segment flips, of `next_due` alone, of `apply_event` with the "High-value customer"
  rule (30-day windowed count + sum) on records with 0, 100 and 1,000 prior events, and of
  `RecordState.to_bytes` / `from_bytes` for those records (a stored state is decoded and encoded once
  per message that touches it).
* **End to end** (embedded broker, a real `segment-engine worker` with SEGMENT_ENGINE_CLOCK=manual):
  - scheduler: contacts whose `created_at` makes them all cross "more than 30 days ago" between two clock
    values. The clock is set to T0, the creates are published (batched) and applied (timed: the reference
    row, changes/s), then one tick moves the clock to T1 and every record is due; rate =
    `segment_engine_scheduled_evaluations_total` per s. Segments: "Older than 30 days" + 10 random ones.
  - aggregates: purchase events (`record.events` batches) over a few thousand contacts, all published
    before the worker starts, with the High-value segment and 10 random ones; rate = applied events per s.

Rates are measured like the other rows of bench/run.py: from the first poll that saw progress to the
poll that saw the last record, so process start and group join are not in them.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from engine.broker import LocalBroker
from engine.client import Publisher
from engine.membership import Event, RecordState, apply_event, apply_time, evaluate, next_due
from engine.registry import SegmentRegistry, SegmentSet
from engine.rules import normalize_fields
from engine.sample_data import full_contact
from engine.settings import SAMPLES
from engine.workspaces import load_workspaces

from bench.run import RESULTS, fresh_settings, metric_sum, scrape, spawn, stop, watch, worker_env
from bench.segments import random_segments

MINUTE = 60_000
DAY = 86_400_000
T0 = 1_780_000_000_000 + 20_000  # 2026-05-28, 20 s into a minute; the manual clock's first value
CROSSING_S = 3_600  # the scheduler's contacts cross "more than 30 days ago" within this hour after T0
T1 = T0 + (CROSSING_S + 60) * 1000  # a clock value at which all of them are due
TARGET_S = 0.4  # each in-process measurement runs about this long

OLDER_THAN_30_DAYS = {"combinator": "and", "rules": [
    {"field": "created_at", "operator": "moreThanAgo", "value": "30 days"},
]}
HIGH_VALUE = {"combinator": "or", "rules": [
    {"field": "events.purchase.count", "operator": ">=", "value": 2, "window": "30 days"},
    {"field": "events.purchase.sum.amount", "operator": ">=", "value": 1000, "window": "30 days"},
]}
AMOUNTS = [20, 90, 250, 600]


# ---- in-process ------------------------------------------------------------------------------------


@dataclass
class Micro:
    """One in-process measurement: µs per call of `op` for `case`."""

    op: str
    case: str
    us_per_op: float
    iterations: int
    state_bytes: int | None = None
    note: str = ""


def timed(fn: Callable[[int], Any], per_call_hint_us: float = 50.0) -> tuple[float, int]:
    """µs per call of fn(i), i = 0..n-1, with n chosen so the run takes about TARGET_S (one warm-up pass)."""
    n = max(50, int(TARGET_S * 1e6 / per_call_hint_us))
    for i in range(min(n, 20)):
        fn(i)
    # Calibrate on a short run, then run for ~TARGET_S.
    start = time.perf_counter()
    probe = max(10, n // 20)
    for i in range(probe):
        fn(i)
    per = (time.perf_counter() - start) / probe
    n = max(50, int(TARGET_S / max(per, 1e-7)))
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n * 1e6, n


def demo_registry(segments: list[dict[str, Any]]) -> SegmentRegistry:
    """A registry with the demo workspace (the bench segments' catalog) and `segments` defined."""
    registry = SegmentRegistry(load_workspaces(SAMPLES / "workspaces.json"))
    for version, segment in enumerate(segments, start=1):
        registry.apply({"type": "segment.defined", "workspace": "demo",
                        "data": {**segment, "version": version, "status": "active"}})
    return registry


def relative_condition(rng: random.Random) -> dict[str, Any]:
    """A time-dependent condition of the kind CRM users add: created/last contacted/renewal relative to now."""
    days = f"{rng.choice([7, 14, 30, 60, 90, 180, 365])} days"
    return rng.choice([
        {"field": "created_at", "operator": "moreThanAgo", "value": days},
        {"field": "created_at", "operator": "withinLast", "value": days},
        {"field": "last_contact_at", "operator": "withinLast", "value": days},
        {"field": "last_contact_at", "operator": "moreThanAgo", "value": days},
        {"field": "custom.renewal_at", "operator": "withinNext", "value": days},
    ])


def timed_segments(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` time-dependent segments: "Older than 30 days", then random bench segments AND one relative
    condition (so every one of them is in the scope's timed set and is re-evaluated when time moves)."""
    rng = random.Random(seed)
    out = [{"id": "older-30d", "object_type": "contact", "name": "Older than 30 days", "rule": OLDER_THAN_30_DAYS}]
    for segment in random_segments(rng, count - 1):
        rule = {"combinator": "and", "rules": [segment["rule"], relative_condition(rng)]}
        out.append({**segment, "id": f"timed-{segment['id']}", "rule": rule})
    return out


def contact_fields(rng: random.Random, catalog: Any, created_at: int) -> dict[str, Any]:
    raw = full_contact(rng)
    raw["created_at"] = created_at
    raw["last_contact_at"] = created_at + rng.randint(0, 20) * DAY
    raw["custom.renewal_at"] = T0 + rng.randint(1, 400) * DAY
    return normalize_fields(raw, catalog)


def micro_apply_time(scope_sizes: list[int], seed: int) -> list[Micro]:
    """apply_time on a record whose "Older than 30 days" membership flips at its due instant, and next_due."""
    rows: list[Micro] = []
    rng = random.Random(seed)
    for size in scope_sizes:
        registry = demo_registry(timed_segments(size, seed + size))
        segments = registry.segment_set("demo", "contact")
        assert len(segments.timed_ids) == size, (len(segments.timed_ids), size)
        catalog = registry.workspaces.catalog("demo", "contact")
        fields = contact_fields(rng, catalog, T0 - 30 * DAY + 600_000)  # crosses 30 days 10 min after T0
        state = RecordState(1, fields, set())
        evaluate(state, segments.evaluated_ids, segments, T0, "change")
        state.due = next_due(state, segments, T0)
        assert state.due is not None and state.due <= T0 + 600_001, state.due
        due = state.due
        raw = state.to_bytes()
        probe = RecordState.from_bytes(raw)
        flips = apply_time(probe, segments, due)
        assert any(t.segment_id == "older-30d" for t in flips), flips
        # apply_time updates the state: time it on fresh copies (decoded outside the timed loop).
        per_hint = 5.0 * size
        n = max(200, int(TARGET_S * 1e6 / per_hint))
        copies = [RecordState.from_bytes(raw) for _ in range(n)]
        start = time.perf_counter()
        for copy in copies:
            apply_time(copy, segments, due)
        us = (time.perf_counter() - start) / n * 1e6
        rows.append(Micro("apply_time", f"{size} timed segments, 1 flips", us, n, len(raw),
                          note=f"{len(flips)} transition(s)"))
        us, n = timed(lambda i: next_due(state, segments, T0), per_hint / 2)
        rows.append(Micro("next_due", f"{size} timed segments", us, n))
    return rows


def purchase(rng: random.Random, at: int) -> Event:
    return Event(uuid.UUID(int=rng.getrandbits(128)).hex, "contact", "c1", "purchase", at,
                 {"amount": rng.choice(AMOUNTS), "currency": "EUR"})


def state_with_events(rng: random.Random, segments: SegmentSet, fields: dict[str, Any], prior: int) -> RecordState:
    """A contact with `prior` purchases spread over the last 60 days before T0, folded in as the engine would."""
    state = RecordState(1, fields, set())
    for at in sorted(T0 - rng.randint(0, 60 * DAY) for _ in range(prior)):
        outcome = apply_event(state, purchase(rng, at), segments, T0)
        assert outcome.state is not None
        state = outcome.state
    return state


def micro_events(prior_counts: list[int], seed: int) -> list[Micro]:
    """apply_event (High-value + 10 random segments) and state (de)serialisation by prior event count."""
    rows: list[Micro] = []
    rng = random.Random(seed)
    high_value = {"id": "high-value", "object_type": "contact", "name": "High-value customer", "rule": HIGH_VALUE}
    registry = demo_registry([high_value, *random_segments(random.Random(seed), 10)])
    segments = registry.segment_set("demo", "contact")
    catalog = registry.workspaces.catalog("demo", "contact")
    fields = contact_fields(rng, catalog, T0 - 100 * DAY)
    for prior in prior_counts:
        state = state_with_events(rng, segments, fields, prior)
        raw = state.to_bytes()
        buckets = len(state.activity.get("purchase", {}).get("b", []))
        events = [purchase(rng, T0 - rng.randint(0, 60_000)) for _ in range(50_000)]
        hint = 30.0 + prior * 1.0

        def one(i: int) -> None:
            apply_event(state, events[i % len(events)], segments, T0)

        us, n = timed(one, hint)
        rows.append(Micro("apply_event", f"{prior} prior events", us, n, len(raw),
                          note=f"{buckets} minute buckets, {len(state.seen)} seen ids"))
        us, n = timed(lambda i: state.to_bytes(), 5.0 + prior * 0.1)
        rows.append(Micro("RecordState.to_bytes", f"{prior} prior events", us, n, len(raw)))
        us, n = timed(lambda i: RecordState.from_bytes(raw), 5.0 + prior * 0.1)
        rows.append(Micro("RecordState.from_bytes", f"{prior} prior events", us, n, len(raw)))
    return rows


def run_in_process(seed: int = 1, scope_sizes: tuple[int, ...] = (10, 100),
                   prior_counts: tuple[int, ...] = (0, 100, 1000)) -> list[Micro]:
    return micro_apply_time(list(scope_sizes), seed) + micro_events(list(prior_counts), seed)


def print_micro(rows: list[Micro]) -> None:
    head = f"{'in-process (pure core)':<24} {'case':<30} {'µs/op':>9} {'ops/s':>9} {'iters':>7} {'state B':>8}  note"
    print(head)
    print("-" * len(head))
    for r in rows:
        size = f"{r.state_bytes:,}" if r.state_bytes is not None else "-"
        print(f"{r.op:<24} {r.case:<30} {r.us_per_op:>9.1f} {1e6 / r.us_per_op:>9,.0f} {r.iterations:>7,} "
              f"{size:>8}  {r.note}")


# ---- end to end ------------------------------------------------------------------------------------
# ---- end to end ------------------------------------------------------------------------------------


@dataclass
class E2E:
    """One end-to-end measurement on a real worker."""

    scenario: str
    segments: int
    count: int  # changes applied, records re-evaluated by time, or behavioural events applied
    seconds: float  # measured window (first poll with progress -> poll that saw the last one)
    rate: float
    unit: str
    reference_rate: float | None = None  # changes/s of the batched creates (the first row), same segments
    entered: float = 0.0  # segment.entered events of this phase
    exited: float = 0.0
    startup_s: float = 0.0  # worker start -> first progress (creates and aggregates rows)
    latency_s: float = 0.0  # tick published -> last due record seen done, polling included (scheduler row)
    extra: dict[str, Any] = field(default_factory=dict)


class Worker:
    """A `segment-engine worker` (manual clock) on fresh topics, read through its /metrics."""

    def __init__(self, broker: LocalBroker, tmp: Path, tag: str) -> None:
        self.settings = fresh_settings(broker, tmp, tag)
        self.publisher = Publisher(self.settings, source="bench")
        self.url = f"http://127.0.0.1:{self.settings.web_port}/metrics"
        self.log = tmp / f"{self.settings.app_id}.log"
        self.proc: Any = None

    def start(self) -> None:
        self.publisher.flush()
        self.proc = spawn(["-m", "engine.cli", "worker"], worker_env(self.settings, SEGMENT_ENGINE_CLOCK="manual"),
                          self.log)

    def counter(self, name: str, label: str = "") -> Callable[[], float | None]:
        """Reads the sum of a counter's samples whose labels contain `label` (None while the worker is not up)."""
        def read() -> float | None:
            text = scrape(self.url)
            return None if text is None else sum(v for k, v in metric_sum(text, name).items() if label in k)
        return read

    def flips(self, cause: str) -> tuple[float, float]:
        """(entered, exited) membership events with this cause so far."""
        samples = metric_sum(scrape(self.url) or "", "segment_engine_membership_events_total")

        def count(event_type: str) -> float:
            return sum(v for k, v in samples.items() if f'type="{event_type}"' in k and f'cause="{cause}"' in k)
        return count("segment.entered"), count("segment.exited")

    def close(self) -> None:
        stop(self.proc)
        self.publisher.close()


def scheduler_rows(broker: LocalBroker, tmp: Path, records: int, batch: int, seed: int, timeout: float) -> list[E2E]:
    """`records` contacts cross "more than 30 days ago" between T0 and T1. Clock T0, batched creates (timed:
    the reference row), then one tick to T1 makes every record due (timed: the scheduler row)."""
    rng = random.Random(seed)
    segments = [{"id": "older-30d", "object_type": "contact", "name": "Older than 30 days",
                 "rule": OLDER_THAN_30_DAYS}, *random_segments(random.Random(seed + 10), 10)]
    base = T0 - 30 * DAY
    creates = []
    for i in range(records):
        fields = full_contact(rng)
        fields["created_at"] = base + 1 + (i * CROSSING_S * 1000) // records  # crosses 30 days before T1
        creates.append({"op": "upsert", "object_type": "contact", "id": f"c{i}", "version": 1, "fields": fields})
    worker = Worker(broker, tmp, "scheduler")
    try:
        for segment in segments:
            worker.publisher.define_segment("demo", segment)
        worker.publisher.set_clock(T0)  # ahead of the creates on every partition: they are applied at T0
        messages = worker.publisher.publish_batches("demo", creates, batch)
        worker.start()
        applied = watch(worker.counter("segment_engine_changes_total", 'outcome="applied"'), records, worker.proc,
                        worker.log, timeout)
        created_in, created_out = worker.flips("change")
        sent = time.monotonic()
        worker.publisher.set_clock(T1)
        worker.publisher.flush()
        due = watch(worker.counter("segment_engine_scheduled_evaluations_total"), records, worker.proc, worker.log,
                    timeout)
        timed_in, timed_out = worker.flips("time")
    finally:
        worker.close()
    creates_row = E2E(scenario=f"creates, batched x{batch} (clock T0: reference)", segments=len(segments),
                      count=records, seconds=applied.last_t - applied.first_t, rate=applied.rate, unit="changes/s",
                      entered=created_in, exited=created_out, startup_s=applied.first_t - applied.started,
                      extra={"messages": messages})
    scheduler_row = E2E(scenario="scheduler: all due after one tick", segments=len(segments), count=records,
                        seconds=due.last_t - due.first_t, rate=due.rate, unit="records/s",
                        reference_rate=applied.rate, entered=timed_in, exited=timed_out, latency_s=due.last_t - sent,
                        extra={"timed_segments": 1, "due_per_tick_message": 2000})
    return [creates_row, scheduler_row]


def aggregates_row(broker: LocalBroker, tmp: Path, events: int, records: int, batch: int, seed: int,
                   timeout: float, reference_rate: float | None) -> E2E:
    """`events` purchase events over `records` contacts in record.events batches of `batch`, all published
    before the worker starts (like bench/run.py's rows). The contacts are known from their events only
    (version 0, no fields): event processing reads activity, not fields, and pre-publishing creates too
    would interleave them with the events."""
    rng = random.Random(seed)
    high_value = {"id": "high-value", "object_type": "contact", "name": "High-value customer", "rule": HIGH_VALUE}
    segments = [high_value, *random_segments(random.Random(seed + 10), 10)]
    purchases = [
        {"id": uuid.UUID(int=rng.getrandbits(128)).hex, "object_type": "contact",
         "record_id": f"c{rng.randrange(records)}", "name": "purchase", "at": T0 - rng.randint(0, 29 * DAY),
         "properties": {"amount": rng.choice(AMOUNTS), "currency": "EUR"}}
        for _ in range(events)
    ]
    worker = Worker(broker, tmp, "aggregates")
    try:
        for segment in segments:
            worker.publisher.define_segment("demo", segment)
        worker.publisher.set_clock(T0)
        messages = worker.publisher.publish_events("demo", purchases, batch)
        worker.start()
        progress = watch(worker.counter("segment_engine_behaviour_events_total", 'outcome="applied"'), events,
                         worker.proc, worker.log, timeout)
        entered, exited = worker.flips("event")
    finally:
        worker.close()
    return E2E(scenario=f"aggregates: purchase events, batched x{batch}", segments=len(segments), count=events,
               seconds=progress.last_t - progress.first_t, rate=progress.rate, unit="events/s",
               reference_rate=reference_rate, entered=entered, exited=exited,
               startup_s=progress.first_t - progress.started,
               extra={"contacts": records, "messages": messages, "window": "30 days"})


def run_end_to_end(broker: LocalBroker, tmp: Path, scheduled: int = 20_000, events: int = 40_000,
                   event_records: int = 4_000, batch: int = 100, seed: int = 1, timeout: float = 120) -> list[E2E]:
    rows: list[E2E] = []
    if scheduled:
        rows += scheduler_rows(broker, tmp, scheduled, batch, seed, timeout)
        print(f"{rows[0].scenario}: {rows[0].rate:,.0f} {rows[0].unit}; "
              f"{rows[1].scenario}: {rows[1].rate:,.0f} {rows[1].unit}", flush=True)
    if events:
        reference = rows[0].rate if rows else None
        rows.append(aggregates_row(broker, tmp, events, event_records, batch, seed, timeout, reference))
        print(f"{rows[-1].scenario}: {rows[-1].rate:,.0f} {rows[-1].unit}", flush=True)
    return rows


def print_e2e(rows: list[E2E], batched_change_rate: float | None = None) -> None:
    """The end-to-end table; `batched_change_rate`: bench/run.py's batched x100, 10-segment row of this run."""
    if not rows:
        return
    extra = f" {'x batched':>9}" if batched_change_rate else ""
    head = (f"{'end to end (worker, manual clock)':<46} {'segs':>4} {'count':>7} {'secs':>5} {'rate':>10} "
            f"{'unit':<10} {'x creates':>9}{extra} {'entered':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = f"{r.rate / r.reference_rate:.2f}" if r.reference_rate else "-"
        vs_batched = f" {r.rate / batched_change_rate:>9.2f}" if batched_change_rate else ""
        print(f"{r.scenario:<46} {r.segments:>4} {r.count:>7,} {r.seconds:>5.1f} {r.rate:>10,.0f} {r.unit:<10} "
              f"{ratio:>9}{vs_batched} {r.entered:>8,.0f}")
    print("x creates = rate / the creates row (this run, 11 segments, batched x100)"
          + ("; x batched = rate / the engine's batched x100, 10-segment row above" if batched_change_rate else ""))


def run_all(broker: LocalBroker, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Both parts (prints progress lines); the tables are printed by `report`."""
    micro = run_in_process(args.seed)
    print(f"in-process: {len(micro)} measurements", flush=True)
    e2e = run_end_to_end(broker, tmp, args.scheduled, args.events, args.event_records, args.batch_size, args.seed,
                         args.timeout)
    return {"in_process": micro, "end_to_end": e2e}


def report(results: dict[str, Any], batched_change_rate: float | None = None) -> None:
    print()
    print_micro(results["in_process"])
    if results["end_to_end"]:
        print()
        print_e2e(results["end_to_end"], batched_change_rate)


def as_json(results: dict[str, Any], batched_change_rate: float | None = None) -> dict[str, Any]:
    e2e = []
    for r in results["end_to_end"]:
        doc = asdict(r)
        doc["ratio_to_creates"] = r.rate / r.reference_rate if r.reference_rate else None
        doc["ratio_to_batched_changes"] = r.rate / batched_change_rate if batched_change_rate else None
        e2e.append(doc)
    return {"in_process": [asdict(m) for m in results["in_process"]], "end_to_end": e2e}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared with bench/run.py."""
    parser.add_argument("--scheduled", type=int, default=20_000,
                        help="contacts made due by one tick in the scheduler rows (0 skips them)")
    parser.add_argument("--events", type=int, default=40_000, help="purchase events in the aggregates row (0 skips it)")
    parser.add_argument("--event-records", type=int, default=4_000, help="contacts the purchase events are spread over")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=120, help="per phase, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--in-process-only", action="store_true", help="skip the end-to-end rows (no broker)")
    args = parser.parse_args()
    if args.in_process_only:
        args.scheduled = args.events = 0
    started = time.monotonic()
    if args.scheduled or args.events:
        with tempfile.TemporaryDirectory(prefix="segment-bench-") as tmp_name, LocalBroker() as broker:
            results = run_all(broker, Path(tmp_name), args)
    else:
        results = {"in_process": run_in_process(args.seed), "end_to_end": []}
    report(results)
    total = time.monotonic() - started
    print(f"\ntotal runtime {total:.0f}s")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-time-behaviour.json"
    path.write_text(json.dumps({"runtime_s": round(total, 1), "args": vars(args), **as_json(results)}, indent=2))
    print(f"wrote {path.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
