"""What a change costs the engine, in process: the fixed part per change, the part per rule evaluated and
the part per flip (a record entering or leaving a segment), in µs of one core.

No broker and no Faust: the agent's per-record steps as engine/app.py takes them (decode and validate,
`Processor.apply`, the state store's writes and applied position) and the local half of a commit
(engine/commit.py: one RocksDB write batch, the changelog's records in order, every outgoing record and
changelog record appended to aiokafka record batches as `Checkpoint.send_batches` builds them), over a
real RocksDB file. What is left out is what crosses the network (the sends and their acknowledgements).

Two workloads on the same stored contacts, each contact alternating between two sets of values, timed
several times (the fastest pass is kept):
* `fixed`: a field no segment reads (no rule runs, nothing flips): the fixed part per change;
* `rules`: lifetime_value and lead_score between two values that every segment's conditions treat alike
  (far above their thresholds and ranges), so the rules reading them run and nothing flips: per rule =
  (this - fixed) / rules run (read from the engine's own metrics).
A third, `flips` (every field, between the pool's contact matching the most segments and one matching
none), is printed for reference. The part per flip is timed on its own: a record's transitions through
`Processor.membership_events` (event built and encoded, counted) and the state store (member index entry
and count), then their share of the commit (RocksDB batch, changelog and event records in record batches).
`python -m bench.costs` prints them for 10 and 1,000 segments; `make bench` puts them in the results JSON.
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import faust_rocksdb_options
from bench.segments import random_segments
from engine import metrics
from engine.client import Change
from engine.envelope import encode, envelope
from engine.intake import decode_message
from engine.processor import Processor, Work
from engine.registry import SegmentRegistry
from engine.sample_data import realistic_contact
from engine.settings import Settings
from engine.state import OneDatabase, StateStore
from engine.workspaces import load_workspaces

WORKSPACE = "demo"
SAMPLES = Path(__file__).resolve().parent.parent / "engine" / "samples"
TOPIC = "record-changes"
GROUP = 100  # records per commit, about a busy fetch of one partition
NOW = 1_790_000_000_000  # the partition's time (epoch ms)


class _Record:
    """What the agent reads of an aiokafka record."""

    __slots__ = ("topic", "partition", "offset", "timestamp", "key", "value")

    def __init__(self, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.timestamp, self.key, self.value = (
            TOPIC, 0, offset, NOW, None, value)


class Pipeline:
    """One partition's processor, state store and commit, in process."""

    def __init__(self, tmp: Path, segments: list[dict[str, Any]]) -> None:
        from aiokafka.record.default_records import DefaultRecordBatchBuilder
        from rocksdict import Rdict

        self.batch_builder = DefaultRecordBatchBuilder
        self.settings = Settings(broker="127.0.0.1:1", data_dir=tmp, partitions=1)
        self.registry = SegmentRegistry(load_workspaces(SAMPLES / "workspaces.json"))
        for segment in segments:
            self.registry.apply({"type": "segment.defined", "workspace": WORKSPACE, "data": dict(segment, version=1)})
        self.processor = Processor(self.settings, self.registry, _Assignments(),
                                   {"events": "events", "assignments": "assignments", "dead_letters": "dead-letters"})
        self.db = Rdict(str(tmp / "costs.db"), options=faust_rocksdb_options())
        self.state = StateStore(OneDatabase(self.db))
        self.offset = 0

    def run(self, changes: list[Change]) -> float:
        """Apply `changes` (one per message) and commit every GROUP of them; seconds of CPU taken."""
        messages = [encode(envelope("record.change", change, workspace=WORKSPACE, source="bench")) for change in changes]
        started = time.process_time()
        for start in range(0, len(messages), GROUP):
            out: list[Any] = []
            for value in messages[start:start + GROUP]:
                self.offset += 1
                self.apply(_Record(self.offset, value), out)
            self.commit(out)
        return time.process_time() - started

    def apply(self, record: _Record, out: list[Any]) -> None:
        """What Engine.apply_message and Engine.handle do for a record change (no sync, no tick)."""
        self.state.applied_position(0, record.topic)
        self.state.begin(0)
        message = decode_message(record.value, self.settings.max_message_bytes)
        work = Work(self.state)
        started = time.perf_counter()
        label = self.processor.apply(record, message, NOW, work)
        metrics.EVALUATION_SECONDS_BY_KIND[label].observe(time.perf_counter() - started)
        out.extend(work.out)
        self.state.write((record.topic, record.offset, 1), work.membership, work.pending.items(), work.serialised)
        self.state.set_position(record.topic, record.offset)

    def commit(self, out: list[Any]) -> None:
        """Checkpoint.commit_pending without the network: outgoing records and the changelog's records into
        record batches, the RocksDB write batch (and the flips' metrics, which the agent counts per fetch)."""
        self.processor.flush_metrics()
        self.batches(out)
        ended = self.state.end()
        for writes in ended:
            writes.apply_locally()
            self.batches([("changelog", key, value) for key, value in writes.changelog_order()])
        self.state.landed(ended)

    def batches(self, records: list[Any]) -> None:
        builder = self.batch_builder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                     producer_epoch=-1, base_sequence=-1, batch_size=1_048_576)
        for _topic, key, value in records:
            if builder.append(0, timestamp=None, key=key, value=value, headers=[]) is None:
                builder.build()
                builder = self.batch_builder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                             producer_epoch=-1, base_sequence=-1, batch_size=1_048_576)
                builder.append(0, timestamp=None, key=key, value=value, headers=[])
        builder.build()

    def counters(self) -> tuple[float, float]:
        """(rules evaluated, flips) so far, from the engine's own metrics."""
        evaluated = metrics.SEGMENTS_EVALUATED.collect()[0]
        rules = next(s.value for s in evaluated.samples if s.name.endswith("_sum"))
        flips = sum(s.value for s in metrics.MEMBERSHIP_EVENTS.collect()[0].samples if s.name.endswith("_total"))
        return rules, flips

    def close(self) -> None:
        self.db.close()


class _Assignments:
    def get(self, workspace: str) -> Any:
        return None


def contact_pair(registry: SegmentRegistry, rng: random.Random, pool: int = 2_000) -> tuple[dict, dict]:
    """The pool's contact matching the most segments, and one matching none."""
    from engine.rules import Context, normalize_fields

    context = Context(NOW)
    group = registry.segment_set(WORKSPACE, "contact")
    catalog = registry.workspaces.catalog(WORKSPACE, "contact")
    scored = []
    for _ in range(pool):
        fields = realistic_contact(rng)
        record = normalize_fields(fields, catalog)
        scored.append((sum(1 for s in group.segments.values() if s.rule is not None and s.rule.matches(record, context)), fields))
    scored.sort(key=lambda pair: pair[0])
    return scored[-1][1], scored[0][1]


def alternating(contacts: int, first: dict[str, Any], second: dict[str, Any], version: int) -> list[Change]:
    """Every contact set to `first`, then every contact to `second` (versions from `version` up)."""
    return [{"object_type": "contact", "id": f"c{i}", "version": version + round_, "op": "upsert",
             "fields": fields} for round_, fields in enumerate((first, second)) for i in range(contacts)]


def measure(segment_count: int, contacts: int = 2_500, repeats: int = 3, seed: int = 1) -> dict[str, Any]:
    """Fixed, per-rule and per-flip µs at `segment_count` segments (bench/segments.py rules)."""
    rng = random.Random(seed)
    segments = random_segments(random.Random(seed + segment_count), segment_count)
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="segment-costs-") as tmp:
        pipeline = Pipeline(Path(tmp), segments)
        try:
            most, none = contact_pair(pipeline.registry, rng)
            pipeline.run(alternating(contacts, none, none, 1))  # created, in no segment
            pairs = {"fixed": ({"first_name": "Ann"}, {"first_name": "Bob"}),
                     "rules": ({"lifetime_value": 10**9, "lead_score": 10**6},
                               {"lifetime_value": 10**9 + 1, "lead_score": 10**6 + 1}),
                     "flips": (most, none)}
            version = 10
            for name, (first, second) in pairs.items():
                passes = []
                for _ in range(repeats + 1):  # the first pass settles (the contacts leave what they were in)
                    batch = alternating(contacts, first, second, version)
                    version += 2
                    rules0, flips0 = pipeline.counters()
                    seconds = pipeline.run(batch)
                    rules1, flips1 = pipeline.counters()
                    passes.append({"us_per_change": seconds / len(batch) * 1e6,
                                   "rules_per_change": (rules1 - rules0) / len(batch),
                                   "flips_per_change": (flips1 - flips0) / len(batch)})
                best = min(passes[1:], key=lambda row: row["us_per_change"])
                rows[name] = best
                pipeline.run(alternating(contacts, none, none, version))  # back to no segment
                version += 2
            per_flip = flip_cost(pipeline)
        finally:
            pipeline.close()
    fixed, rules = rows["fixed"], rows["rules"]
    return {"segments": segment_count, "contacts": contacts, "workloads": rows,
            "fixed_us_per_change": fixed["us_per_change"],
            "us_per_rule": (rules["us_per_change"] - fixed["us_per_change"]) / max(rules["rules_per_change"], 1e-9),
            "us_per_flip": per_flip, "us_to_encode_an_event": encode_cost()}


def flip_cost(pipeline: Pipeline, flips_per_record: int = 40, records: int = 2_000) -> float:
    """µs per flip: `records` records entering (then leaving) `flips_per_record` segments each, through
    the processor's events and the state store's writes, committed every GROUP records."""
    from engine.membership import ENTERED, EXITED, Transition

    segment_ids = sorted(pipeline.registry.segment_set(WORKSPACE, "contact").segments)
    segment_ids = (segment_ids * (flips_per_record // max(len(segment_ids), 1) + 1))[:flips_per_record]
    started = time.process_time()
    out: list[Any] = []
    for k in range(records):
        kind = ENTERED if k // GROUP % 2 == 0 else EXITED  # a group enters, the next one leaves
        transitions = [Transition(kind, sid, 1, k, "change", "") for sid in dict.fromkeys(segment_ids)]
        pipeline.offset += 1
        pipeline.state.begin(0)
        record_id = f"flip{k % GROUP}"
        out.extend(pipeline.processor.membership_events(WORKSPACE, "contact", record_id, transitions, NOW))
        pipeline.state.write((TOPIC, pipeline.offset, 1), [(WORKSPACE, "contact", record_id, transitions)], [])
        if k % GROUP == GROUP - 1:
            pipeline.commit(out)
            out = []
    flips = records * len(dict.fromkeys(segment_ids))
    return (time.process_time() - started) / flips * 1e6


def encode_cost(events: int = 20_000) -> float:
    """µs to build and encode one segment.entered event as the processor does (the floor for a flip)."""
    from engine.envelope import transition_id, utc_now_iso

    started = time.process_time()
    for i in range(events):
        data = {"object_type": "contact", "segment_id": "s1", "record_id": f"c{i}", "record_version": i,
                "segment_version": 1, "cause": "change", "at": NOW}
        event_id = transition_id(WORKSPACE, "contact", f"c{i}", "s1", 1, i, "segment.entered", None)
        encode(envelope("segment.entered", data, workspace=WORKSPACE, id_=event_id, time=utc_now_iso()))
    return (time.process_time() - started) / events * 1e6


def summary(result: dict[str, Any]) -> str:
    return (f"fixed {result['fixed_us_per_change']:.1f} µs/change, {result['us_per_rule']:.2f} µs/rule, "
            f"{result['us_per_flip']:.1f} µs/flip (encoding an event: {result['us_to_encode_an_event']:.1f} µs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", default="10,1000", help="segment counts, comma-separated")
    parser.add_argument("--contacts", type=int, default=2_500, help="contacts; each workload pass changes each twice")
    args = parser.parse_args()
    print(f"{'segs':>6} {'workload':>8} {'µs/chg':>8} {'rules/chg':>10} {'flips/chg':>10}")
    for n in (int(x) for x in args.segments.split(",")):
        result = measure(n, args.contacts)
        for name, row in result["workloads"].items():
            print(f"{n:>6} {name:>8} {row['us_per_change']:8.1f} {row['rules_per_change']:10.2f} "
                  f"{row['flips_per_change']:10.2f}")
        print(f"{n:>6}  {summary(result)}")


if __name__ == "__main__":
    main()
