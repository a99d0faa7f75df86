"""The per-partition processor (engine/processor.py) without Faust or a broker: decoded messages and
stored states in, transitions, new states and outgoing events out. States live in a real RocksDB file."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from rocksdict import Options, Rdict

from engine.envelope import encode, envelope, transition_id
from engine.intake import decode_message
from engine.processor import Processor, Work
from engine.registry import SegmentRegistry
from engine.settings import Settings
from engine.state import OneDatabase, StateStore
from engine.workspaces import load_workspaces

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NOW = 1_790_000_000_000
PL_HIGH = {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "PL"},
                                          {"field": "lifetime_value", "operator": ">", "value": 1000}]}
TOPICS = {"events": "events", "assignments": "assignments", "dead_letters": "dead-letters"}


class Record:
    """The fields of an aiokafka record the processor reads."""

    def __init__(self, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.timestamp, self.key, self.value = (
            "record-changes", 0, offset, NOW, None, value)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    db = Rdict(str(tmp_path / "state"), Options(raw_mode=True))  # as Faust opens it: bytes keys and values
    yield StateStore(OneDatabase(db))
    db.close()


@pytest.fixture
def processor() -> Processor:
    registry = SegmentRegistry(load_workspaces(FIXTURES / "workspaces.json"))
    registry.apply({"type": "segment.defined", "workspace": "acme",
                    "data": {"id": "pl", "object_type": "contact", "name": "PL", "version": 7, "rule": PL_HIGH}})
    return Processor(Settings(broker="127.0.0.1:1", partitions=1), registry, _NoAssignments(), TOPICS)


class _NoAssignments:
    def get(self, workspace: str) -> Any:
        return None


def apply(processor: Processor, store: StateStore, offset: int, type_: str, data: Any) -> Work:
    """One message through the processor, its writes kept in the store's overlay (as the agent does)."""
    record = Record(offset, encode(envelope(type_, data, workspace="acme")))
    store.begin(0)
    work = Work(store)
    processor.apply(record, decode_message(record.value, 1_000_000), NOW, work)
    store.write((record.topic, offset, 1), work.membership, work.pending.items(), work.serialised)
    return work


def change(version: int, **fields: Any) -> dict[str, Any]:
    return {"op": "upsert", "object_type": "contact", "id": "c1", "version": version, "fields": fields}


def test_a_change_that_enters_a_segment_emits_one_event_with_a_deterministic_id(processor: Processor,
                                                                             store: StateStore) -> None:
    assert apply(processor, store, 0, "record.change", change(1, country="PL", lifetime_value=500)).out == []
    work = apply(processor, store, 1, "record.change", change(2, lifetime_value=1500))
    [(topic, key, value)] = work.out
    event = orjson.loads(value)
    assert (topic, key, event["type"]) == ("events", b"acme/contact/c1", "segment.entered")
    assert event["data"] | {"at": 0} == {"object_type": "contact", "segment_id": "pl", "record_id": "c1",
                                         "record_version": 2, "segment_version": 7, "cause": "change", "at": 0}
    assert event["id"] == transition_id("acme", "contact", "c1", "pl", 7, 2, "segment.entered")
    assert work.pending[b"acme/contact/c1"].members == {"pl"}


def test_a_change_not_newer_than_the_stored_state_changes_nothing(processor: Processor, store: StateStore) -> None:
    apply(processor, store, 0, "record.change", change(2, country="PL", lifetime_value=1500))
    stale = apply(processor, store, 1, "record.change", change(2, country="DE"))
    assert (stale.out, stale.pending, stale.membership) == ([], {}, [])


def test_a_bad_item_of_a_batch_is_dead_lettered_alone(processor: Processor, store: StateStore) -> None:
    items = [change(1, country="PL", lifetime_value=2000),
             dict(change(1, lifetime_value="lots"), id="c2"),  # not a number: refused, named
             dict(change(1, country="PL", lifetime_value=3000), id="c3")]
    work = apply(processor, store, 0, "record.changes", {"changes": items})
    kinds = [(topic, orjson.loads(value)["type"]) for topic, _, value in work.out]
    assert kinds.count(("events", "segment.entered")) == 2
    [dead] = [orjson.loads(value)["data"] for topic, _, value in work.out if topic == "dead-letters"]
    assert dead["change_index"] == 1 and "lifetime_value" in dead["reason"]
    assert sorted(work.pending) == [b"acme/contact/c1", b"acme/contact/c3"]


def test_flips_are_counted_in_the_metrics_once_tallied(processor: Processor, store: StateStore) -> None:
    from prometheus_client import REGISTRY

    def entered() -> float:
        labels = {"type": "segment.entered", "cause": "change"}
        return REGISTRY.get_sample_value("segment_engine_membership_events_total", labels) or 0.0

    before = entered()
    apply(processor, store, 0, "record.change", change(1, country="PL", lifetime_value=5000))
    processor.flush_metrics()
    assert entered() == before + 1


def test_counts_follow_each_commit_of_the_partition(processor: Processor, store: StateStore) -> None:
    """Counts are kept between writes (a /metrics scrape parses no documents twice) and never stale."""
    apply(processor, store, 0, "record.change", change(1, country="PL", lifetime_value=1500))
    for writes in store.end():
        writes.apply_locally()
    assert store.counts(0) == {"acme/contact/pl": 1}
    assert store.counts(0) == {"acme/contact/pl": 1}  # from the cache
    apply(processor, store, 1, "record.change", change(2, lifetime_value=10))
    assert store.counts(0) == {"acme/contact/pl": 1}  # not committed yet: the committed count
    for writes in store.end():
        writes.apply_locally()
    assert store.counts(0) == {"acme/contact/pl": 0}


def test_the_next_group_reads_a_group_whose_commit_is_in_flight(processor: Processor, store: StateStore) -> None:
    """The agent applies the next fetch while the previous group's events are acknowledged: it must see
    that group's states and positions before they reach RocksDB, and drop both if that commit fails."""
    apply(processor, store, 0, "record.change", change(1, country="PL", lifetime_value=1500))
    store.set_position("record-changes", 0)
    landing = store.end()  # handed to a commit, not in RocksDB yet
    assert store.applied_position(0, "record-changes") == 0
    work = apply(processor, store, 1, "record.change", change(2, lifetime_value=10))
    assert [orjson.loads(value)["type"] for _, _, value in work.out] == ["segment.exited"]
    for writes in landing:
        writes.apply_locally()
    store.landed(landing)
    assert store.begin(0).below is None and store.landing == {}
    assert len(store.discard()) == 1 and store.applied_position(0, "record-changes") == 0


def test_groups_land_in_order_while_later_ones_read_through_them(processor: Processor, store: StateStore) -> None:
    """Commits are pipelined: two handed-over groups can be in flight at once. The next group reads
    through both (newest first); once the older lands, reads of the partition still see the newer one."""
    apply(processor, store, 0, "record.change", change(1, country="PL", lifetime_value=1500))
    store.set_position("record-changes", 0)
    first = store.end()
    apply(processor, store, 1, "record.change", change(2, lifetime_value=10))  # record 1 exits
    store.set_position("record-changes", 1)
    second = store.end()
    assert store.applied_position(0, "record-changes") == 1
    work = apply(processor, store, 2, "record.change", change(3, country="PL", lifetime_value=2000))
    assert [orjson.loads(value)["type"] for _, _, value in work.out] == ["segment.entered"]
    for writes in first:
        writes.apply_locally()
    store.landed(first)
    assert all(w.below is None for w in second) and store.applied_position(0, "record-changes") == 1
    assert len(store.discard()) == 2  # the second group, still landing, and the open one
    assert store.applied_position(0, "record-changes") == 0  # what reached RocksDB
