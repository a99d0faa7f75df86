"""The pure parts of engine.client, with an in-memory stand-in for KafkaProducer: grouping by partition,
the batch helper, versions, validation before sending and delivery errors surfacing at flush."""
from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from kafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from kafka.future import Future

from engine.client import (InvalidMessage, Publisher, PublishFailed, Versions, batches_by_partition,
                           group_by_partition, version_from)
from engine.envelope import record_key
from engine.errors import SchemaViolation
from engine.intake import partition_for
from engine.sample_data import contact_changes
from engine.settings import Settings

PARTITIONS = 4
SETTINGS = Settings(broker="127.0.0.1:1", partitions=PARTITIONS)


class FakeProducer:
    """Records sends; each returns a future the test resolves (by default: acknowledged at flush)."""

    def __init__(self, partitions: int = PARTITIONS) -> None:
        self.partitions = partitions
        self.sent: list[tuple[str, bytes | None, dict[str, Any], int | None, Future]] = []
        self.fail_with: BaseException | None = None  # fail the sends at flush
        self.raise_on_send: BaseException | None = None

    def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None) -> Future:
        if self.raise_on_send is not None:
            raise self.raise_on_send
        future = Future()
        self.sent.append((topic, key, orjson.loads(value), partition, future))
        return future

    def flush(self, timeout: float | None = None) -> None:
        for _, _, _, _, future in self.sent:
            if not future.is_done:
                future.failure(self.fail_with) if self.fail_with else future.success(None)

    def close(self, timeout: float | None = None) -> None:
        pass

    def messages(self, type_: str | None = None) -> list[tuple[str, bytes | None, dict[str, Any], int | None]]:
        return [(t, k, m, p) for t, k, m, p, _ in self.sent if type_ is None or m["type"] == type_]


def publisher(**kwargs: Any) -> tuple[Publisher, FakeProducer]:
    fake = FakeProducer()
    return Publisher(SETTINGS, source="unit", producer=fake, **kwargs), fake


def key_partition(key: str) -> int:
    return partition_for(key, PARTITIONS)


# -- grouping by partition ---------------------------------------------------------------------------


def test_group_by_partition_never_mixes_partitions_and_keeps_each_records_order() -> None:
    changes = list(contact_changes(random.Random(5), 2000, records=150))
    chunks = list(batches_by_partition("acme", changes, PARTITIONS, 7))
    assert sum(len(c) for _, c in chunks) == len(changes)
    for partition, chunk in chunks:
        assert 1 <= len(chunk) <= 7
        assert {key_partition(record_key("acme", c["object_type"], c["id"])) for c in chunk} == {partition}
    emitted = [c for _, chunk in chunks for c in chunk]
    for record in {c["id"] for c in changes}:
        assert [c for c in emitted if c["id"] == record] == [c for c in changes if c["id"] == record]
        versions = [c["version"] for c in emitted if c["id"] == record]
        assert versions == sorted(versions)


def test_group_by_partition_yields_full_chunks_as_they_fill() -> None:
    """Streaming: a full chunk comes out before the input is exhausted."""
    seen: list[int] = []

    def items() -> Any:
        for i in range(100):
            seen.append(i)
            yield f"r{i}"

    first_partition, first = next(group_by_partition(items(), lambda r: f"acme/contact/{r}", PARTITIONS, 3))
    assert len(first) == 3 and len(seen) < 100


def test_batch_helper_groups_by_partition_in_order_and_sends_the_rest_on_exit() -> None:
    pub, fake = publisher()
    rng = random.Random(11)
    added: list[dict[str, Any]] = []
    with pub.batch("acme", size=5) as b:
        for i in range(300):
            rid = f"c{rng.randrange(40)}"
            if rng.random() < 0.1:
                b.delete("contact", rid, version=i + 1)
                added.append({"op": "delete", "id": rid, "version": i + 1})
            else:
                b.upsert("contact", rid, {"country": rng.choice(["PL", "DE"])}, version=i + 1)
                added.append({"op": "upsert", "id": rid, "version": i + 1})
            if i % 3 == 0:
                b.event("contact", rid, "purchase", 1_767_225_600_000 + i, {"amount": 10}, id=f"e{i}")
        sent_before_exit = len(fake.sent)
    assert 0 < sent_before_exit < len(fake.sent), "full batches go out as they fill, the rest on exit"
    assert all(f.is_done for *_, f in fake.sent)

    batches = fake.messages("record.changes")
    assert {t for t, *_ in batches} == {pub.records_topic}
    assert {t for t, *_ in fake.messages("record.events")} == {pub.behaviour_topic}
    assert not fake.messages("record.change") and not fake.messages("record.event")
    for topic, key, message, partition in fake.messages():
        items = message["data"].get("changes") or message["data"]["events"]
        assert 1 <= len(items) <= 5
        record_ids = {i["record_id"] if "record_id" in i else i["id"] for i in items}
        assert {key_partition(f"acme/contact/{r}") for r in record_ids} == {partition}
        assert key is not None and key_partition(key.decode()) == partition
        assert message["workspace"] == "acme" and message["source"] == "unit"
    sent_changes = [c for *_, m, _ in batches for c in m["data"]["changes"]]
    assert len(sent_changes) == len(added) == b.changes
    for rid in {a["id"] for a in added}:
        assert [c["version"] for c in sent_changes if c["id"] == rid] == [a["version"] for a in added if a["id"] == rid]
    assert b.messages == len(fake.sent)
    with pytest.raises(RuntimeError, match="closed"):
        b.upsert("contact", "c1", {}, version=1)


def test_an_oversized_batch_is_split_in_order_instead_of_being_dead_lettered() -> None:
    fake = FakeProducer(partitions=1)
    pub = Publisher(Settings(broker="x:1", partitions=1, max_message_bytes=4000), producer=fake)
    changes = [{"op": "upsert", "object_type": "contact", "id": "c1", "version": v, "fields": {"email": "x" * 300}}
               for v in range(1, 41)]
    messages = pub.publish_batches("acme", changes, batch_size=40)
    assert messages == len(fake.sent) > 1
    assert all(len(orjson.dumps(m)) <= 4000 for *_, m, _ in fake.messages())
    assert [c["version"] for *_, m, _ in fake.messages() for c in m["data"]["changes"]] == list(range(1, 41))
    with pytest.raises(InvalidMessage, match="bytes") as info:
        pub.publish_change("acme", dict(changes[0], fields={"email": "x" * 5000}))
    assert info.value.code == "message_too_large"


# -- versions ----------------------------------------------------------------------------------------


def test_versions_strictly_increase_when_the_clock_stalls_or_steps_back() -> None:
    ticks = iter([5_000, 5_000, 5_000, 4_000, 1_000, 5_001, 9_000, 9_000, 8_999])
    versions = Versions(clock=lambda: next(ticks))
    got = [versions.next() for _ in range(9)]
    assert got == [5_000, 5_001, 5_002, 5_003, 5_004, 5_005, 9_000, 9_001, 9_002]
    assert versions.last == 9_002


def test_versions_resume_after_a_stored_version_and_follow_the_wall_clock() -> None:
    assert Versions(after=10**17, clock=lambda: 1).next() == 10**17 + 1
    now_us = int(datetime.now(timezone.utc).timestamp() * 1_000_000)
    v = Versions()
    first = v()
    assert abs(first - now_us) < 5_000_000 and first < 2**53


def test_versions_are_unique_and_increasing_across_threads() -> None:
    versions = Versions(clock=lambda: 42)  # a frozen clock: everything rests on last + 1
    results: list[list[int]] = [[] for _ in range(4)]

    def work(out: list[int]) -> None:
        for _ in range(2000):
            out.append(versions.next())

    threads = [threading.Thread(target=work, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [v for r in results for v in r]
    assert len(set(flat)) == 8000 and all(r == sorted(r) for r in results)


def test_version_from_uses_the_same_microsecond_scale() -> None:
    at = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=timezone.utc)
    us = 1_795_773_600_123_456
    assert version_from(at) == us
    assert version_from(at.replace(tzinfo=None)) == us  # naive = UTC
    assert version_from(at.astimezone(timezone(timedelta(hours=2)))) == us
    assert version_from("2026-11-27T10:00:00.123456Z") == us
    assert version_from(1_795_773_600_123) == us - 456  # epoch ms, the engine's convention
    assert version_from(1_795_773_600.5, unit="s") == 1_795_773_600_500_000
    assert version_from(us, unit="us") == us
    assert version_from(at) < version_from(at + timedelta(microseconds=1))
    with pytest.raises(ValueError):
        version_from(-1)
    with pytest.raises(TypeError):
        version_from(True)


def test_publisher_fills_missing_versions_only_when_asked() -> None:
    pub, fake = publisher(versions=Versions(clock=lambda: 7))
    pub.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": "c1", "fields": {}})
    with pub.batch("acme") as b:
        b.upsert("contact", "c1", {"country": "PL"})
        b.delete("contact", "c1")
    assert [m["data"]["version"] for *_, m, _ in fake.messages("record.change")] == [7]
    assert [c["version"] for *_, m, _ in fake.messages("record.changes") for c in m["data"]["changes"]] == [8, 9]

    pub, fake = publisher()
    with pytest.raises(InvalidMessage, match="no version.*Versions"):
        pub.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": "c1", "fields": {}})
    assert not fake.sent


# -- validation --------------------------------------------------------------------------------------


def test_a_bad_change_raises_in_the_caller_naming_the_record_and_the_problem() -> None:
    pub, fake = publisher()
    with pytest.raises(InvalidMessage) as info:
        pub.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": "c9", "version": "7"})
    text = str(info.value)
    assert "contact/c9" in text and "version must be integer" in text and "'7'" in text
    assert isinstance(info.value, ValueError) and isinstance(info.value, SchemaViolation)
    assert info.value.code == "schema_violation"  # the code the engine would dead-letter it with

    for bad, problem in [
        ({"op": "merge", "object_type": "contact", "id": "c1", "version": 1}, "op must be one of"),
        ({"op": "upsert", "object_type": "person", "id": "c1", "version": 1}, "object_type must be one of"),
        ({"op": "upsert", "object_type": "contact", "id": "", "version": 1}, "id must be longer"),
        ({"op": "upsert", "object_type": "contact", "id": "c1", "version": -3}, "version must be bigger"),
        ({"op": "upsert", "object_type": "contact", "id": "c1", "version": 1, "feilds": {}}, "feilds"),
        ({"op": "upsert", "object_type": "contact", "id": "c1", "version": 1, "fields": [1]}, "fields must be object"),
    ]:
        with pytest.raises(InvalidMessage, match=problem):
            pub.publish_change("acme", bad)
    assert not fake.sent


def test_a_bad_item_in_a_batch_sends_nothing_and_names_its_position() -> None:
    pub, fake = publisher()
    changes = list(contact_changes(random.Random(1), 50, records=10))
    changes[37] = dict(changes[37], version="late")
    with pytest.raises(InvalidMessage, match=r"change #37 \(contact/c\d+\): version must be integer"):
        pub.publish_batches("acme", changes, batch_size=5)
    events = [{"id": "e1", "object_type": "contact", "record_id": "c1", "name": "Purchase!", "at": 1}]
    with pytest.raises(InvalidMessage, match=r"event #0 \(contact/c1/e1\): name must match pattern"):
        pub.publish_events("acme", events, batch_size=10)
    assert not fake.sent


def test_the_batch_helper_rejects_a_bad_item_at_the_call_that_adds_it() -> None:
    pub, fake = publisher()
    with pytest.raises(InvalidMessage, match="invalid envelope: workspace must match pattern"):
        pub.batch("not a workspace")
    with pytest.raises(InvalidMessage, match=r"change #1 \(contact/c2\): fields must be object"):
        with pub.batch("acme", size=10) as b:
            b.upsert("contact", "c1", {"country": "PL"}, version=1)
            b.add_change({"op": "upsert", "object_type": "contact", "id": "c2", "version": 1, "fields": "PL"})
    # What was added before the error still went out (the block's exception wins).
    assert [c["id"] for *_, m, _ in fake.messages("record.changes") for c in m["data"]["changes"]] == ["c1"]
    with pytest.raises(ValueError, match="between 1 and 10000"):
        pub.batch("acme", size=10_001)


def test_validation_can_be_switched_off_for_trusted_input() -> None:
    pub, fake = publisher(validate=False)
    pub.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": "c1", "version": "7"})
    assert len(fake.sent) == 1


# -- delivery errors ---------------------------------------------------------------------------------


def test_flush_raises_when_sends_failed_with_the_count_and_first_error() -> None:
    pub, fake = publisher()
    pub.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": "c1", "version": 1})
    pub.flush()  # acknowledged: nothing to report
    fake.fail_with = NotLeaderForPartitionError("leader moved")
    for i in range(3):
        pub.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": f"c{i}", "version": 2})
    with pytest.raises(PublishFailed, match=r"3 of 3 message\(s\) were not delivered.*leader moved") as info:
        pub.flush()
    assert info.value.failed == 3 and info.value.total == 3
    assert isinstance(info.value.first, NotLeaderForPartitionError)
    pub.flush()  # reported once: the next flush covers only later sends


def test_leaving_a_batch_raises_on_delivery_failure() -> None:
    pub, fake = publisher()
    fake.fail_with = KafkaTimeoutError("Expiring 2 record(s)")
    with pytest.raises(PublishFailed, match="Expiring"):
        with pub.batch("acme") as b:
            b.upsert("contact", "c1", {"country": "PL"}, version=1)
            b.event("contact", "c1", "purchase", datetime(2026, 1, 1), id="o-1")
    event = fake.messages("record.events")[0][2]["data"]["events"][0]
    assert event["at"] == 1_767_225_600_000  # a datetime becomes epoch ms


def test_an_error_raised_by_send_itself_is_a_publish_failure_at_once() -> None:
    pub, fake = publisher()
    fake.raise_on_send = KafkaTimeoutError("Failed to update metadata after 2.0 secs.")
    with pytest.raises(PublishFailed, match="metadata"):
        pub.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": "c1", "version": 1})


def test_acknowledged_futures_are_pruned_between_flushes() -> None:
    pub, fake = publisher()
    for i in range(25_000):
        pub.publish_raw(b"{}", key=b"k", partition=0)
        fake.sent[-1][-1].success(None)
    assert len(pub._futures) < 10_000  # memory stays bounded however long nobody flushes
    pub.flush()


def test_a_topic_with_another_partition_count_is_refused() -> None:
    fake = FakeProducer(partitions=8)
    pub = Publisher(SETTINGS, producer=fake)
    with pytest.raises(RuntimeError, match="8 partitions but SEGMENT_ENGINE_PARTITIONS=4"):
        pub.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": "c1", "version": 1})
