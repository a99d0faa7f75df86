"""Scenario 4, poison pills: hostile and broken messages on every input topic, interleaved with good
messages on the same partitions, against one real worker process.

What a user relies on (README, "Bad input"): a bad message never stops its partition, it lands on the
dead-letter topic with a specific code and its original bytes, the dead-letter metric counts it, and
nothing is silently dropped. So each test records where every message landed (topic, partition,
offset) and checks, message by message, that exactly the bad ones were dead-lettered with the expected
code and their original bytes, that every good one was applied (each stored record equals the oracle's
replay of the good changes, and membership folded from the events equals the oracle's evaluation), and
that good + dead-lettered == sent, per topic.

The tests share this module's worker and run in file order, the clock one last (should it fail, it would
leave two partitions' clocks in year 3000).
"""
from __future__ import annotations

import base64
import random
import time
import uuid
from collections import Counter
from typing import Any, Callable, Iterator
from urllib.parse import quote

import orjson
import pytest

import topics
from engine.admin import ensure_topics
from engine.broker import LocalBroker
from engine.envelope import encode, envelope, record_key, segment_key
from engine.intake import partition_for
from engine.membership import RecordState
from engine.sample_data import contact_changes
from engine.settings import Settings
from tests.conftest import FIXTURES, Harness, WorkerProcess
from tests.naive_eval import naive_matches
from tests.oracle import Oracle, fold_events
from tests.reliability.hostile import RawProducer, Sent, get_json, labelled, metric, metrics

WS = "acme"
PARTITIONS = 4
LONG = 400_000  # characters of the long pathological strings (a message stays under the 1 MiB limit)
# Text-operator segments whose values are themselves pathological: a needle at the 1,000-character limit
# that makes naive substring search quadratic, a NUL, a right-to-left override, and a casefold expansion.
TEXT_SEGMENTS: dict[str, dict[str, Any]] = {
    "txt-long-needle": {"combinator": "and", "rules": [
        {"field": "email", "operator": "contains", "value": "a" * 999 + "b"}]},
    "txt-nul-suffix": {"combinator": "and", "rules": [
        {"field": "last_name", "operator": "endsWith", "value": "\u0000x"}]},
    "txt-rtl-prefix": {"combinator": "and", "rules": [
        {"field": "first_name", "operator": "beginsWith", "value": "\u202e"}]},
    "txt-strasse": {"combinator": "and", "rules": [
        {"field": "city", "operator": "contains", "value": "straße"}]},
}
# What the dead letter's reason must name, so an operator can see at a glance what was wrong.
NAMED_IN_REASON = {
    "unknown workspace": "initech", "unknown object type": "object_type", "version as text": "version",
    "number field as text": "lifetime_value", "boolean field as text": "is_subscribed",
    "datetime field as prose": "created_at", "tags that are not strings": "tags", "dunder field": "__class__",
    "dotted path field": "a.b.c", "traversal field": "../../etc/passwd", "unknown custom field": "custom.nope",
    "batch item: number field as text": "lead_score", "batch item: dunder field": "__dict__",
    "batch item: version as text": "version", "batch item: unknown object type": "object_type",
    "one byte over the size limit": "1048576", "event: at in prose": "at", "conversation: at in prose": "at",
    "membership event on an input topic": "segment.entered", "segment definition on an input topic": "segment.defined",
}
BUYERS = {"combinator": "and", "rules": [{"field": "events.purchase.count", "operator": ">=", "value": 2}]}


def key_of(record_id: str, object_type: str = "contact") -> bytes:
    return record_key(WS, object_type, record_id).encode()


def partition_of(record_id: str, object_type: str = "contact") -> int:
    return partition_for(record_key(WS, object_type, record_id), PARTITIONS)


def change(record_id: str, version: int, **fields: Any) -> dict[str, Any]:
    return {"op": "upsert", "object_type": "contact", "id": record_id, "version": version, "fields": fields}


def single(data: dict[str, Any], workspace: str | None = WS, type_: str = "record.change") -> bytes:
    return encode(envelope(type_, data, workspace=workspace))


def nested_bytes(depth: int, inner: bytes, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    """JSON nested `depth` levels deep, built as text (orjson refuses to encode that deep)."""
    return open_ * depth + inner + close * depth


def with_raw(message: dict[str, Any], placeholder: str, raw: bytes) -> bytes:
    """Encode `message` with the string `placeholder` replaced by raw JSON text."""
    return encode(message).replace(orjson.dumps(placeholder), raw)


def elsewhere(partition: int) -> str:
    """A record id that does NOT hash to `partition` (for wrong-partition pills)."""
    return next(i for i in (f"w{n}" for n in range(100)) if partition_of(i) != partition)


def ids_on(partition: int, prefix: str, count: int, object_type: str = "contact") -> list[str]:
    """`count` record ids that hash to `partition`."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        if partition_of(f"{prefix}{n}", object_type) == partition:
            found.append(f"{prefix}{n}")
        n += 1
    return found


@pytest.fixture(scope="module")
def engine(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """One worker for the module (each test uses its own object types or topics' offsets)."""
    tmp = tmp_path_factory.mktemp("hostile")
    run = uuid.uuid4().hex[:8]
    settings = Settings(broker=broker.address, app_id=f"test-{run}", topic_prefix=f"t{run}-",
                        partitions=PARTITIONS, data_dir=tmp / "data", workspaces_file=FIXTURES / "workspaces.json",
                        tokens_file=FIXTURES / "tokens.json", session_timeout=3.0)
    ensure_topics(settings)
    harness = Harness(settings=settings, tmp=tmp)
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def raw(engine: Harness) -> Iterator[RawProducer]:
    producer = RawProducer(engine.settings)
    yield producer
    producer.close()


def topic(engine: Harness, spec: topics.TopicSpec) -> str:
    return spec.full_name(engine.settings.topic_prefix)


def dead_letters(engine: Harness, on_topics: set[str]) -> dict[tuple[str, int, int, int | None], dict[str, Any]]:
    """Dead letters of messages from `on_topics`, by (topic, partition, offset, change_index). A letter
    repeated by a re-read carries the same id (README: deterministic) and counts once; two letters with
    different ids for one message would be two different verdicts."""
    found: dict[tuple[str, int, int, int | None], dict[str, Any]] = {}
    ids: dict[tuple[str, int, int, int | None], str] = {}
    for letter in engine.read_topic(topics.DEAD_LETTERS):
        data = letter["data"]
        if data["topic"] in on_topics:
            where = (data["topic"], data["partition"], data["offset"], data.get("change_index"))
            assert ids.setdefault(where, letter["id"]) == letter["id"], f"two different dead letters for {where}"
            found[where] = data
    return found


def check_dead_letters(engine: Harness, sent: list[Sent], values: dict[tuple[str, int, int], bytes | None],
                       on_topics: set[str]) -> dict[tuple[str, int, int, int | None], dict[str, Any]]:
    """Exactly the bad messages (and bad batch items) are dead-lettered, each with its expected code, a
    reason and the original bytes; returns the letters."""
    expected = {(s.topic, s.partition, s.offset, s.change_index): s for s in sent if s.code is not None}
    deadline = time.monotonic() + 30  # the letters of a message go out before its state is written
    while len(letters := dead_letters(engine, on_topics)) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.5)
    labels = {where: s.label for where, s in expected.items()}
    missing = sorted(labels[w] for w in set(expected) - set(letters))
    assert not missing, f"bad messages NOT dead-lettered (silently dropped or applied): {missing}"
    extra = sorted(letters[w]["code"] + ": " + letters[w]["reason"][:120] for w in set(letters) - set(expected))
    assert not extra, f"good messages dead-lettered: {extra}"
    wrong = {s.label: (letters[w]["code"], s.code) for w, s in expected.items() if letters[w]["code"] != s.code}
    assert not wrong, f"dead-letter code (got, expected) not the specific one: {wrong}"
    for where, letter in letters.items():
        assert letter["reason"].strip(), f"{labels[where]}: dead letter without a reason"
        original = values[where[:3]]
        assert base64.b64decode(letter["value_b64"]) == (original or b""), f"{labels[where]}: original bytes lost"
    return letters


def wait_membership(engine: Harness, expected: set[tuple[str, str]], timeout: float = 90) -> None:
    """Until the membership folded from the emitted events equals `expected`; the difference if not."""
    deadline = time.monotonic() + timeout
    while (folded := fold_events(engine.events())) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    missing, extra = sorted(expected - folded), sorted(folded - expected)
    assert not missing and not extra, (f"membership != oracle: {len(missing)} missing {missing[:8]}, "
                                       f"{len(extra)} extra {extra[:8]}")


def wait_drained(engine: Harness, worker: WorkerProcess) -> None:
    """Every partition applied up to its end: the bad messages did not stall any."""
    def drained() -> bool:
        status, health = get_json(worker.web_port, "/health")
        return status == 200 and len(health["lag"]) == PARTITIONS and sum(health["lag"].values()) == 0
    engine.wait_for(drained, timeout=60, what="consumer lag 0 on every partition")


def test_poison_pills_on_every_input_topic_are_dead_lettered_and_nothing_stalls(
        engine: Harness, raw: RawProducer, seed: int) -> None:
    """About 80 bad messages and batch items on record-changes, behaviour-events and conversations, each
    between good messages of its partition; good traffic includes valid but pathological text."""
    rules = engine.define_fixture_segments()
    rules.update(TEXT_SEGMENTS)
    for sid, rule in [*TEXT_SEGMENTS.items(), ("buyers", BUYERS)]:
        engine.publisher.define_segment(WS, {"id": sid, "object_type": "contact", "name": sid, "rule": rule})
    engine.publisher.flush()
    worker = engine.start_worker()
    before = metrics(worker.web_port)
    records = topic(engine, topics.RECORD_CHANGES)
    behaviour = topic(engine, topics.BEHAVIOUR_EVENTS)
    conversations = topic(engine, topics.CONVERSATIONS)
    limit = engine.settings.max_message_bytes
    values: dict[tuple[str, int, int], bytes | None] = {}
    items_sent: Counter[str] = Counter()  # changes, events and conversations sent, per topic, batch items counted

    def send(topic_name: str, value: bytes | None, key: bytes | None, partition: int, label: str,
             code: str | None = None, change_index: int | None = None) -> Sent:
        sent = raw.send(topic_name, value, key=key, partition=partition, label=label, code=code,
                        change_index=change_index)
        values[(sent.topic, sent.partition, sent.offset)] = value
        try:
            items = orjson.loads(value or b"")["data"]
            items_sent[topic_name] += len(items.get("changes") or items.get("events") or [items])
        except Exception:  # noqa: BLE001 - not a readable batch: one item
            items_sent[topic_name] += 1
        return sent

    # ---- good traffic: realistic changes, pathological-but-valid strings, events, conversations ----
    stream = list(contact_changes(random.Random(seed), 700, records=120))
    singles, batched = stream[:450], stream[450:]
    p_ids = {p: ids_on(p, "p", 2) for p in range(PARTITIONS)}
    pathological = [
        change(p_ids[0][0], 1, first_name="\u202eevil\u200f", city="HAUPTSTRASSE 5", last_name="x\u0000x"),
        change(p_ids[1][0], 1, email="a" * LONG + "b", first_name="\u0000" * 1000),
        change(p_ids[2][0], 1, email="a" * LONG, last_name="ab\u0000X", city="\u0130stanbul \U0001F642" * 500),
        change(p_ids[3][0], 1, first_name="\u202e\u0301" * 2000, city="Straße", **{"custom.plan": "enterprise"}),
        change("p/\u202e/ü\u0000/" + "z" * 150, 1, city="Großstraße", language="de"),
        change(p_ids[0][1], 1, first_name="x" * LONG, last_name="\u0000x"),
    ]
    pathological.append(change(p_ids[1][0], 2, email="A" * 999 + "B", first_name=None))  # long value replaced
    good_changes: list[dict[str, Any]] = []

    def send_good_change(item: dict[str, Any]) -> None:
        send(records, single(item), key_of(item["id"]), partition_of(item["id"]), f"good change {item['id']}")
        good_changes.append(item)

    # ---- poison pills for the record-changes topic: (label, bytes for (record id, partition), code) ----
    # Each pill concerns a record of the partition it is sent to (unless it is about the partition), at a
    # version far ahead: applied by mistake, it would show up in the membership.
    def fine(v: str, **fields: Any) -> dict[str, Any]:
        return change(v, 10**12, **(fields or {"country": "PL", "lifetime_value": 5000}))

    def without(message: dict[str, Any], attribute: str) -> bytes:
        message = dict(message)
        del message[attribute]
        return encode(message)

    Pill = tuple[str, Callable[[str, int], "bytes | None"], str]
    record_pills: list[Pill] = [
        ("truncated JSON", lambda v, p: single(fine(v))[:37], "malformed_json"),
        ("invalid UTF-8", lambda v, p: b"\xff\xfe\x00{\"type\": \"record.change\"}", "malformed_json"),
        ("lone surrogate", lambda v, p: with_raw(envelope("record.change", fine(v, city="S"), workspace=WS), "S",
                                                 b'"\\ud800"'), "malformed_json"),
        ("number beyond double", lambda v, p: with_raw(envelope("record.change", fine(v, lifetime_value="N"),
                                                                workspace=WS), "N", b"1e400"), "malformed_json"),
        ("empty value", lambda v, p: b"", "malformed_json"),
        ("tombstone (null value)", lambda v, p: None, "malformed_json"),
        ("JSON nested past the parser's limit", lambda v, p: nested_bytes(5000, b"1"), "malformed_json"),
        ("JSON array", lambda v, p: b"[1, 2, 3]", "schema_violation"),
        ("JSON null", lambda v, p: b"null", "schema_violation"),
        ("no type", lambda v, p: without(envelope("record.change", fine(v), workspace=WS), "type"), "schema_violation"),
        ("unknown type", lambda v, p: single(fine(v), type_="record.upsert"), "schema_violation"),
        ("no data", lambda v, p: without(envelope("record.change", fine(v), workspace=WS), "data"), "schema_violation"),
        ("no workspace", lambda v, p: single(fine(v), workspace=None), "schema_violation"),
        ("version as text", lambda v, p: single(dict(fine(v), version="seven")), "schema_violation"),
        ("negative version", lambda v, p: single(dict(fine(v), version=-1)), "schema_violation"),
        ("id as number", lambda v, p: single(dict(fine(v), id=123)), "schema_violation"),
        ("id over 200 characters", lambda v, p: single(dict(fine(v), id="c" * 201)), "schema_violation"),
        ("missing op", lambda v, p: single({k: x for k, x in fine(v).items() if k != "op"}), "schema_violation"),
        ("unknown op", lambda v, p: single(dict(fine(v), op="merge")), "schema_violation"),
        ("fields as a list", lambda v, p: single(dict(fine(v), fields=[1])), "schema_violation"),
        ("unknown object type", lambda v, p: single(dict(fine(v), object_type="planet")), "schema_violation"),
        ("empty batch", lambda v, p: single({"changes": []}, type_="record.changes"), "schema_violation"),
        ("membership event on an input topic", lambda v, p: single({
            "object_type": "contact", "segment_id": "pl-high-value", "record_id": v, "record_version": 10**12,
            "segment_version": 1, "cause": "change"}, type_="segment.entered"), "schema_violation"),
        ("segment definition on an input topic", lambda v, p: single({
            "id": "sneaky", "object_type": "contact", "name": "sneaky", "version": 1,
            "rule": {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "PL"}]}},
            type_="segment.defined"), "schema_violation"),
        ("dead letter on an input topic", lambda v, p: encode(envelope("deadletter", {
            "code": "x", "reason": "x", "topic": records, "partition": p, "offset": 0, "value_b64": ""})),
         "schema_violation"),
        ("unknown workspace", lambda v, p: single(fine(v), workspace="initech"), "unknown_workspace"),
        ("number field as text", lambda v, p: single(fine(v, lifetime_value="a lot")), "field_type"),
        ("boolean field as text", lambda v, p: single(fine(v, is_subscribed="yes")), "field_type"),
        ("datetime field as prose", lambda v, p: single(fine(v, created_at="next tuesday")), "field_type"),
        ("tags that are not strings", lambda v, p: single(fine(v, tags=[1, {"a": 1}])), "field_type"),
        ("string field as an operator object", lambda v, p: single(fine(v, first_name={"$gt": ""})), "field_type"),
        ("string field nested 500 deep", lambda v, p: with_raw(envelope("record.change", fine(v, city="N"),
                                                                         workspace=WS), "N", nested_bytes(500, b'"x"')),
         "field_type"),
        ("dunder field", lambda v, p: single(fine(v, __class__="x")), "unknown_field"),
        ("dotted path field", lambda v, p: single(fine(v, **{"a.b.c": 1})), "unknown_field"),
        ("traversal field", lambda v, p: single(fine(v, **{"../../etc/passwd": 1})), "unknown_field"),
        ("unknown custom field", lambda v, p: single(fine(v, **{"custom.nope": 1})), "unknown_field"),
        ("record on the wrong partition", lambda v, p: single(fine(elsewhere(p))), "wrong_partition"),
        ("one byte over the size limit", lambda v, p: b"{" + b" " * (limit - 1) + b"}", "message_too_large"),
        ("valid change padded over the size limit", lambda v, p: single(fine(v, first_name="q" * limit)),
         "message_too_large"),
        ("five times the size limit", lambda v, p: b"[" + b"1," * (5 * limit // 2) + b"1]", "message_too_large"),
    ]
    # Interleave: each pill goes to the partition of the next good change, which follows it there.
    step = len(singles) // (len(record_pills) + 1)
    cursor = 0
    for n, (label, make, code) in enumerate(record_pills):
        for item in singles[cursor:cursor + step]:
            send_good_change(item)
        cursor += step
        target = partition_of(singles[cursor]["id"])
        victim = ids_on(target, f"v{n}-", 1)[0]
        send(records, make(victim, target), key_of(victim), target, label, code)
    for item in singles[cursor:] + pathological:
        send_good_change(item)

    # Batches per partition; one batch per partition carries bad items among good ones.
    by_partition: dict[int, list[dict[str, Any]]] = {p: [] for p in range(PARTITIONS)}
    for item in batched:
        by_partition[partition_of(item["id"])].append(item)
    for p, items in by_partition.items():
        for start in range(0, len(items), 20):
            chunk = list(items[start:start + 20])
            bad: dict[int, tuple[str, dict[str, Any] | str, str]] = {}
            if start == 0:
                other = elsewhere(p)
                bad = {
                    1: ("batch item: number field as text", change(chunk[0]["id"], 10**12, lead_score="high"), "field_type"),
                    3: ("batch item: dunder field", change(chunk[0]["id"], 10**12, __dict__={}), "unknown_field"),
                    5: ("batch item: record of another partition", change(other, 1, country="PL"), "wrong_partition"),
                    6: ("batch item: version as text", dict(change(chunk[0]["id"], 1), version="7"), "schema_violation"),
                    8: ("batch item: unknown object type", dict(change(chunk[0]["id"], 1), object_type="planet"),
                        "schema_violation"),
                }
                for index in sorted(bad):
                    chunk.insert(index, bad[index][1])  # type: ignore[arg-type]
            value = single({"changes": chunk}, type_="record.changes")
            sent = send(records, value, key_of(chunk[0]["id"]), p, f"batch p{p}@{start}")
            for index, (label, _, code) in bad.items():
                raw.log.append(Sent(sent.topic, sent.partition, sent.offset, label, code, index))
            good_changes.extend(item for index, item in enumerate(chunk) if index not in bad)

    # ---- behavioural events: good ones (with duplicates) and poison pills on the same partitions ----
    buyer_ids = [f"e{n}" for n in range(12)]
    good_events: list[dict[str, Any]] = []
    now = int(time.time() * 1000)
    for n, rid in enumerate(buyer_ids):
        for k in range(n % 3 + 1):
            good_events.append({"id": f"{rid}-o{k}", "object_type": "contact", "record_id": rid, "name": "purchase",
                                "at": now - k * 1000, "properties": {"amount": 10 * (k + 1), "currency": "EUR"}})
    duplicates = [dict(e) for e in good_events[::4]]
    # Each pill is about the record of the good event it precedes, on that record's partition.
    EventPill = tuple[str, Callable[[dict[str, Any], int], "bytes | None"], str]
    event_pills: list[EventPill] = [
        ("event: truncated JSON", lambda e, p: single(e, type_="record.event")[:50], "malformed_json"),
        ("event: at as boolean", lambda e, p: single(dict(e, at=True), type_="record.event"), "schema_violation"),
        ("event: missing record_id", lambda e, p: single({k: v for k, v in e.items() if k != "record_id"},
                                                         type_="record.event"), "schema_violation"),
        ("event: name with spaces", lambda e, p: single(dict(e, name="Bought It!"), type_="record.event"),
         "schema_violation"),
        ("event: unknown object type", lambda e, p: single(dict(e, object_type="planet"), type_="record.event"),
         "schema_violation"),
        ("event: at in prose", lambda e, p: single(dict(e, at="yesterday"), type_="record.event"), "field_type"),
        ("event: unknown workspace", lambda e, p: single(e, workspace="initech", type_="record.event"),
         "unknown_workspace"),
        ("event: wrong partition", lambda e, p: single(dict(e, record_id=elsewhere(p)), type_="record.event"),
         "wrong_partition"),
        ("event: over the size limit", lambda e, p: single(dict(e, properties={"note": "n" * limit}),
                                                           type_="record.event"), "message_too_large"),
    ]
    event_iter = iter(good_events)
    for n, (event_label, make_event, event_code) in enumerate(event_pills):
        item = next(event_iter)
        target = partition_of(item["record_id"])
        send(behaviour, single(item, type_="record.event"), key_of(item["record_id"]), target, f"good event {item['id']}")
        send(behaviour, make_event(dict(item, id=f"bad-{n}", properties={"amount": 10**6}), target),
             key_of(item["record_id"]), target, event_label, event_code)
    rest = list(event_iter) + duplicates
    events_by_partition: dict[int, list[dict[str, Any]]] = {}
    for item in rest:
        events_by_partition.setdefault(partition_of(item["record_id"]), []).append(item)
    for p, items in events_by_partition.items():
        bad_event = dict(items[0], id=f"bad-{p}", at="not a date")
        batch = items[:1] + [bad_event] + items[1:]
        sent = send(behaviour, single({"events": batch}, type_="record.events"), key_of(items[0]["record_id"]), p,
                    f"event batch p{p}")
        raw.log.append(Sent(sent.topic, sent.partition, sent.offset, f"event batch item p{p}: at not a date",
                            "field_type", 1))
        schema_bad = dict(items[0], id=f"bad2-{p}", name="NOT_SNAKE")
        batch = items[:1] + [schema_bad]
        sent = send(behaviour, single({"events": batch}, type_="record.events"), key_of(items[0]["record_id"]), p,
                    f"event batch 2 p{p}")
        raw.log.append(Sent(sent.topic, sent.partition, sent.offset, f"event batch item p{p}: bad name",
                            "schema_violation", 1))

    # ---- conversations: good ones and poison pills on the same partitions ----
    good_conversations = [{"conversation_id": f"conv-{n}", "contact_id": cid}
                          for n, cid in enumerate(["c1", "c2", "c3", "nobody", "c5", "c7"])]
    ConversationPill = tuple[str, Callable[[dict[str, Any], int], "bytes | None"], str]
    conversation_pills: list[ConversationPill] = [
        ("conversation: truncated JSON", lambda c, p: single(c, type_="conversation.created")[:40], "malformed_json"),
        ("conversation: missing contact_id", lambda c, p: single({"conversation_id": c["conversation_id"]},
                                                                 type_="conversation.created"), "schema_violation"),
        ("conversation: id over 200 characters", lambda c, p: single(dict(c, conversation_id="x" * 201),
                                                                     type_="conversation.created"), "schema_violation"),
        ("conversation: at in prose", lambda c, p: single(dict(c, at="soon"), type_="conversation.created"),
         "field_type"),
        ("conversation: unknown workspace", lambda c, p: single(c, workspace="initech", type_="conversation.created"),
         "unknown_workspace"),
        ("conversation: wrong partition", lambda c, p: single(dict(c, contact_id=elsewhere(p)),
                                                              type_="conversation.created"), "wrong_partition"),
    ]
    for n, ((conversation_label, make_conversation, conversation_code), good) in enumerate(
            zip(conversation_pills, good_conversations, strict=True)):
        p = partition_of(good["contact_id"])
        bad_conversation = dict(good, conversation_id=f"conv-bad-{n}")
        send(conversations, make_conversation(bad_conversation, p), key_of(good["contact_id"]), p,
             conversation_label, conversation_code)
        send(conversations, single(good, type_="conversation.created"), key_of(good["contact_id"]), p,
             f"good conversation {good['conversation_id']}")

    # ---- the invariant: membership equals the oracle, so every partition kept flowing ----
    catalog = engine.catalog()
    oracle = Oracle(catalog, dict(rules, buyers=BUYERS)).apply_all(good_changes)
    expected = oracle.membership()
    history: dict[str, list[dict[str, Any]]] = {}
    for item in good_events + duplicates:
        history.setdefault(item["record_id"], []).append(item)
    buyers = {(rid, "buyers") for rid, events in history.items() if naive_matches(BUYERS, {}, catalog, events=events)}
    assert len(buyers) == 8 and buyers.isdisjoint(expected)
    expected |= buyers
    for sid in TEXT_SEGMENTS:  # the pathological strings really exercised the text operators
        assert any(s == sid for _, s in expected), f"no record in {sid}: the text-operator case proves nothing"
    wait_membership(engine, expected)
    wait_drained(engine, worker)

    on_topics = {records, behaviour, conversations}
    letters = check_dead_letters(engine, raw.log, values, on_topics)
    for s in raw.log:  # the reason names what is wrong (the field, the workspace, the limit)
        if s.code and s.label in NAMED_IN_REASON:
            reason = letters[(s.topic, s.partition, s.offset, s.change_index)]["reason"]
            assert NAMED_IN_REASON[s.label] in reason, f"{s.label}: reason {reason!r} lacks {NAMED_IN_REASON[s.label]!r}"
    decisions: dict[str, set[str]] = {}
    for decision in engine.read_topic(topics.CONVERSATION_ASSIGNMENTS):
        decisions.setdefault(decision["data"]["conversation_id"], set()).add(decision["id"])
    assert sorted(decisions) == sorted(c["conversation_id"] for c in good_conversations), "a decision per good conversation"
    assert all(len(ids) == 1 for ids in decisions.values()), f"two different decisions for a conversation: {decisions}"

    # ---- applied: every good change is in the stored record (version and fields), read over the API ----
    stored_wrong = []
    for rid, version in oracle.versions.items():
        status, got = get_json(worker.web_port, f"/v1/workspaces/{WS}/records/contact/{quote(rid, safe='')}",
                               "acme-admin")
        want = {"version": version, "deleted": rid not in oracle.records, "fields": oracle.records.get(rid, {})}
        if status != 200 or {k: got[k] for k in want} != want and not (want["deleted"] and got["deleted"]
                                                                       and got["version"] == version):
            stored_wrong.append((rid[:40], status, str(got)[:160]))
    assert not stored_wrong, f"{len(stored_wrong)} record(s) not as the good changes left them: {stored_wrong[:5]}"

    # ---- the counters: each rejection by code, and good applied + dead-lettered == sent ----
    after = metrics(worker.web_port)
    codes = Counter(s.code for s in raw.log if s.code is not None)
    got_codes = Counter({code: int(n - labelled(before, "segment_engine_dead_letters_total", "code").get(code, 0))
                         for code, n in labelled(after, "segment_engine_dead_letters_total", "code").items()})
    # At least once per rejection: a message the engine re-reads is dead-lettered again, with the same id
    # (test_without_faults_no_message_is_read_twice holds the count to exactly once).
    assert not codes - got_codes, f"segment_engine_dead_letters_total by code: {dict(got_codes)} < {dict(codes)}"
    assert set(+got_codes) == set(codes), f"rejections counted under other codes: {dict(got_codes)}"

    def delta(name: str, **labels: str) -> int:
        return int(metric(after, name, **labels) - metric(before, name, **labels))

    lettered = Counter(where[0] for where in letters)
    # Every good change is stored (checked above), every bad one dead-lettered: together, all that was sent.
    assert len(good_changes) + lettered[records] == items_sent[records], (len(good_changes), lettered, items_sent)
    assert delta("segment_engine_changes_total", outcome="applied") + delta(
        "segment_engine_changes_total", outcome="stale") >= len(good_changes)
    # Events: the unique ones applied exactly once (a repeated id is ignored), the repeats ignored.
    good_event_count = len(good_events) + len(duplicates) + len(events_by_partition)  # + one repeat per partition
    assert delta("segment_engine_behaviour_events_total", outcome="applied") == len(good_events)
    assert delta("segment_engine_behaviour_events_total", outcome="applied") + delta(
        "segment_engine_behaviour_events_total", outcome="ignored") >= good_event_count
    assert good_event_count + lettered[behaviour] == items_sent[behaviour], (good_event_count, lettered, items_sent)
    assert len(decisions) + lettered[conversations] == items_sent[conversations], (decisions, lettered, items_sent)
    print(f"\nhostile input: {len(good_changes)} good changes, {good_event_count} good events, "
          f"{len(good_conversations)} good conversations; {sum(codes.values())} dead-lettered {dict(codes)}")


def definition(segment_id: str, rule: Any, workspace: str = WS, object_type: str = "deal", **extra: Any) -> dict[str, Any]:
    data = {"id": segment_id, "object_type": object_type, "name": segment_id, "version": int(time.time() * 1000),
            "rule": rule, **extra}
    return envelope("segment.defined", data, workspace=workspace)


def test_bad_segment_definitions_are_dead_lettered_and_later_ones_still_apply(
        engine: Harness, raw: RawProducer) -> None:
    """The definitions topic is written by the API, the CLI and anyone with topic access: a bad
    definition must not wedge the registry of every worker."""
    worker = engine.workers[0] if engine.workers else engine.start_worker()
    before = metrics(worker.web_port)
    defs = topic(engine, topics.SEGMENT_DEFINITIONS)
    pl = {"field": "stage", "operator": "=", "value": "won"}
    group: dict[str, Any] = {"combinator": "and", "rules": [pl]}
    for _ in range(11):
        group = {"combinator": "and", "rules": [group]}
    values: dict[tuple[str, int, int], bytes | None] = {}
    pills: list[tuple[str, bytes | None, str, tuple[str, ...]]] = [
        # (label, bytes, code, words the reason must contain)
        ("truncated JSON", encode(definition("t1", {"combinator": "and", "rules": [pl]}))[:60], "malformed_json", ()),
        ("rule nested past the JSON parser's limit", with_raw(definition("t2", "R"), "R", nested_bytes(
            5000, orjson.dumps(pl), b'{"combinator": "and", "rules": [', b"]}")), "malformed_json", ()),
        ("rule nested 12 levels (limit 8)", encode(definition("t3", group)), "invalid_rule", ("8",)),
        ("dunder field", encode(definition("t4", {"combinator": "and", "rules": [
            {"field": "__class__", "operator": "=", "value": "x"}]})), "invalid_rule", ("__class__", "=")),
        ("path field", encode(definition("t5", {"combinator": "and", "rules": [
            {"field": "name.__globals__", "operator": "contains", "value": "x"}]})), "invalid_rule",
         ("name.__globals__", "contains")),
        ("regex operator", encode(definition("t6", {"combinator": "and", "rules": [
            {"field": "name", "operator": "regex", "value": "(a+)+$"}]})), "invalid_rule", ("name", "regex")),
        ("201 conditions", encode(definition("t7", {"combinator": "or", "rules": [pl] * 201})), "invalid_rule",
         ("200",)),
        ("value over 1,000 characters", encode(definition("t8", {"combinator": "and", "rules": [
            {"field": "name", "operator": "contains", "value": "v" * 1001}]})), "invalid_rule", ("name", "contains")),
        ("missing name", encode(envelope("segment.defined", {"id": "t9", "object_type": "deal", "version": 1,
                                                             "rule": group}, workspace=WS)), "schema_violation", ()),
        ("unknown workspace", encode(definition("t10", {"combinator": "and", "rules": [pl]}, workspace="initech")),
         "unknown_workspace", ()),
        ("record change on the definitions topic", single(change("c1", 1, country="PL")), "schema_violation", ()),
    ]
    for label, value, code, _ in pills:
        sent = raw.send(defs, value, key=segment_key(WS, "deal", label).encode(), partition=0, label=label, code=code)
        values[(sent.topic, sent.partition, sent.offset)] = value
    good = definition("after-the-bad-ones", {"combinator": "and", "rules": [
        {"field": "stage", "operator": "=", "value": "won"}]})
    raw.send(defs, encode(good), key=segment_key(WS, "deal", "after-the-bad-ones").encode(), partition=0,
             label="good definition")
    deal = {"op": "upsert", "object_type": "deal", "id": "d1", "version": 1, "fields": {"stage": "won"}}
    raw.send(topic(engine, topics.RECORD_CHANGES), single(deal), key=key_of("d1", "deal"),
             partition=partition_of("d1", "deal"), label="good deal")

    sent_here = [s for s in raw.log if s.topic == defs]
    letters = check_dead_letters(engine, sent_here, values, {defs})
    by_label = {s.label: letters[(s.topic, s.partition, s.offset, None)] for s in sent_here if s.code}
    for label, _, _, words in pills:
        for word in words:
            assert word in by_label[label]["reason"], f"{label}: reason {by_label[label]['reason']!r} lacks {word!r}"
    # The registry went on: the good definition after the bad ones is served and evaluated.
    status, body = get_json(worker.web_port, f"/v1/workspaces/{WS}/segments/after-the-bad-ones", "acme-admin")
    assert status == 200 and body["rule"] == good["data"]["rule"]
    engine.wait_for(lambda: any(e["type"] == "segment.entered" and e["data"]["segment_id"] == "after-the-bad-ones"
                                and e["data"]["record_id"] == "d1" for e in engine.events()),
                    what="the good definition is evaluated")
    status, listed = get_json(worker.web_port, f"/v1/workspaces/{WS}/segments?object_type=deal", "acme-admin")
    assert [s["id"] for s in listed["segments"]] == ["after-the-bad-ones"], "a bad definition was applied"
    after = metrics(worker.web_port)
    codes = Counter(code for _, _, code, _ in pills)
    for code, n in codes.items():
        got = metric(after, "segment_engine_dead_letters_total", code=code) - metric(
            before, "segment_engine_dead_letters_total", code=code)
        assert got == n, f"dead letters counted for {code}: {got}, expected {n}"


def test_without_faults_no_message_is_read_twice(engine: Harness, raw: RawProducer) -> None:
    """Without any fault, each message is applied once: no offset gap is 'repaired', so the counters are
    exact (changes applied + stale == changes sent). A trickle of single changes a few milliseconds apart is
    what upstream CRMs send most of the day."""
    worker = engine.workers[0] if engine.workers else engine.start_worker()
    engine.publisher.define_segment(WS, {"id": "trickle-de", "object_type": "company", "name": "trickle",
                                         "rule": {"combinator": "and", "rules": [
                                             {"field": "country", "operator": "=", "value": "DE"}]}})
    engine.publisher.flush()
    engine.wait_for(lambda: get_json(worker.web_port, f"/v1/workspaces/{WS}/segments/trickle-de",
                                     "acme-admin")[0] == 200, what="segment applied")
    records = topic(engine, topics.RECORD_CHANGES)
    before = metrics(worker.web_port)
    count = 300
    for n in range(count):  # every change flips its company in or out of the segment: each emits an event
        rid = f"trickle{n % 40}"
        item = {"op": "upsert", "object_type": "company", "id": rid, "version": n // 40 + 1,
                "fields": {"country": "DE" if (n // 40) % 2 == 0 else "PL"}}
        raw.producer.send(records, value=single(item), key=key_of(rid, "company"), partition=partition_of(rid, "company"))
        time.sleep(0.004)
    raw.producer.flush()

    def used() -> int:
        now = metrics(worker.web_port)
        return int(sum(metric(now, "segment_engine_changes_total", outcome=o)
                       - metric(before, "segment_engine_changes_total", outcome=o) for o in ("applied", "stale")))
    engine.wait_for(lambda: used() >= count, what=f"{count} trickled changes applied")
    wait_drained(engine, worker)
    after = metrics(worker.web_port)
    gaps = metric(after, "segment_engine_offset_gaps_total") - metric(before, "segment_engine_offset_gaps_total")
    reread = metric(after, "segment_engine_gap_messages_total") - metric(before, "segment_engine_gap_messages_total")
    assert (gaps, reread, used()) == (0, 0, count), f"{gaps:.0f} gaps, {reread:.0f} messages re-read and applied again"


def test_definition_over_the_size_limit_is_dead_lettered(engine: Harness, raw: RawProducer) -> None:
    """A definition is read by every worker into memory: the size limit must hold on this topic too."""
    worker = engine.workers[0] if engine.workers else engine.start_worker()
    defs = topic(engine, topics.SEGMENT_DEFINITIONS)
    # Valid by every rule limit (1,000 values of at most 1,000 characters per condition), 2 MB in all.
    values = [f"{n:04d}" + "v" * 996 for n in range(1000)]
    rule = {"combinator": "or", "rules": [{"field": "name", "operator": "in", "value": values}] * 2}
    value = encode(definition("oversize", rule))
    assert len(value) > engine.settings.max_message_bytes
    sent = raw.send(defs, value, key=segment_key(WS, "deal", "oversize").encode(), partition=0,
                    label="oversize definition", code="message_too_large")
    marker = definition("after-oversize", {"combinator": "and", "rules": [{"field": "stage", "operator": "=",
                                                                           "value": "lost"}]})
    raw.send(defs, encode(marker), key=segment_key(WS, "deal", "after-oversize").encode(), partition=0,
             label="good definition")
    engine.wait_for(lambda: get_json(worker.web_port, f"/v1/workspaces/{WS}/segments/after-oversize",
                                     "acme-admin")[0] == 200, what="the definition after the oversize one")
    letters = dead_letters(engine, {defs})
    assert letters.get((defs, 0, sent.offset, None), {}).get("code") == "message_too_large"
    assert get_json(worker.web_port, f"/v1/workspaces/{WS}/segments/oversize", "acme-admin")[0] == 404


def letters_at(engine: Harness, sent: list[Sent], timeout: float = 60) -> dict[tuple[str, int, int, int | None], dict[str, Any]]:
    """The dead letters of `sent` (the ones with a code), once all are there; and none for the good ones."""
    on_topics = {s.topic for s in sent}
    wanted = {(s.topic, s.partition, s.offset, s.change_index) for s in sent if s.code is not None}
    deadline = time.monotonic() + timeout
    while not wanted <= set(letters := dead_letters(engine, on_topics)) and time.monotonic() < deadline:
        time.sleep(0.5)
    missing = sorted(s.label for s in sent if s.code and (s.topic, s.partition, s.offset, s.change_index) not in letters)
    assert not missing, f"bad messages NOT dead-lettered: {missing}"
    good = {(s.topic, s.partition, s.offset) for s in sent if s.code is None} - {w[:3] for w in wanted}
    wrongly = sorted(f"{w}: {letter['code']}" for w, letter in letters.items() if w[:3] in good)
    assert not wrongly, f"good messages dead-lettered: {wrongly}"
    wrong = {s.label: (letters[(s.topic, s.partition, s.offset, s.change_index)]["code"], s.code) for s in sent
             if s.code and letters[(s.topic, s.partition, s.offset, s.change_index)]["code"] != s.code}
    assert not wrong, f"dead-letter code (got, expected) not the specific one: {wrong}"
    return letters


def record_of(worker: WorkerProcess, object_type: str, record_id: str) -> tuple[int, Any]:
    return get_json(worker.web_port, f"/v1/workspaces/{WS}/records/{object_type}/{quote(record_id, safe='')}",
                    "acme-admin")


def test_bad_assignment_rules_are_dead_lettered_and_later_ones_still_apply(
        engine: Harness, raw: RawProducer) -> None:
    """The assignment-rules topic is compacted and read by every worker at start: a bad document must not
    wedge the reader (the segment registry follows the same reader), nor be applied."""
    worker = engine.workers[0] if engine.workers else engine.start_worker()
    before = metrics(worker.web_port)
    rules_topic = topic(engine, topics.ASSIGNMENT_RULES)
    limit = engine.settings.max_message_bytes
    version = int(time.time() * 1000)

    def rules(workspace: str = WS, **data: Any) -> dict[str, Any]:
        doc = {"version": version, "rules": [{"id": "r1", "segment_id": "pl-high-value", "assign_to": {"member": "x"}}],
               "groups": {}, **data}
        return envelope("assignment.rules", doc, workspace=workspace)

    def without_data(attribute: str) -> bytes:
        message = rules()
        del message["data"][attribute]
        return encode(message)

    pills: list[tuple[str, bytes | None, str]] = [
        ("truncated JSON", encode(rules())[:50], "malformed_json"),
        ("invalid UTF-8", b"\xff\xfe{}", "malformed_json"),
        ("tombstone (null value)", None, "malformed_json"),
        ("JSON nested past the parser's limit", nested_bytes(5000, b"1"), "malformed_json"),
        ("JSON array", b"[]", "schema_violation"),
        ("no rules", without_data("rules"), "schema_violation"),
        ("no version", without_data("version"), "schema_violation"),
        ("assign_to with two targets", encode(rules(rules=[{"id": "r1", "segment_id": "s", "assign_to": {
            "member": "x", "group": "g"}}])), "schema_violation"),
        ("segment definition on the assignment rules topic", encode(definition("sneaky-rules", {
            "combinator": "and", "rules": [{"field": "stage", "operator": "=", "value": "won"}]})), "schema_violation"),
        ("record change on the assignment rules topic", single(change("c1", 1, country="PL")), "schema_violation"),
        ("unknown workspace", encode(rules(workspace="initech")), "unknown_workspace"),
        ("rule routing to an undefined group", encode(rules(rules=[{"id": "r1", "segment_id": "pl-high-value",
                                                                    "assign_to": {"group": "nobody"}}])),
         "invalid_assignment_rules"),
        ("over the size limit", encode(rules(updated_by="u" * limit)), "message_too_large"),
    ]
    sent: list[Sent] = []
    for label, value, code in pills:
        sent.append(raw.send(rules_topic, value, key=WS.encode(), partition=0, label=label, code=code))
    good = rules(version=version + 1, rules=[{"id": "after-the-bad-ones", "segment_id": "pl-high-value",
                                              "assign_to": {"member": "erin"}}])
    sent.append(raw.send(rules_topic, encode(good), key=WS.encode(), partition=0, label="good rules"))
    # Record changes keep flowing beside it.
    rid = "rules-after"
    sent.append(raw.send(topic(engine, topics.RECORD_CHANGES), single(change(rid, 1, country="PL")), key=key_of(rid),
                         partition=partition_of(rid), label="good change"))

    letters = letters_at(engine, sent)
    for label, value, code in pills:  # the original bytes travel with the letter
        where = next((s.topic, s.partition, s.offset, None) for s in sent if s.label == label)
        assert base64.b64decode(letters[where]["value_b64"]) == (value or b""), f"{label}: original bytes lost"
        assert letters[where]["reason"].strip(), f"{label}: no reason"

    def applied() -> bool:
        status, body = get_json(worker.web_port, f"/v1/workspaces/{WS}/assignment-rules", "acme-admin")
        return status == 200 and [r["id"] for r in body.get("rules", [])] == ["after-the-bad-ones"]
    engine.wait_for(applied, what="the good assignment rules after the bad ones")
    engine.wait_for(lambda: record_of(worker, "contact", rid)[0] == 200, what="a record change after the bad rules")
    after = metrics(worker.web_port)
    for code, n in Counter(code for _, _, code in pills).items():
        got = metric(after, "segment_engine_dead_letters_total", code=code) - metric(
            before, "segment_engine_dead_letters_total", code=code)
        assert got == n, f"dead letters counted for {code}: {got}, expected {n}"


def import_message(segment_id: str, record_ids: list[Any], mode: str = "add", object_type: str = "task",
                   workspace: str = WS, **data: Any) -> dict[str, Any]:
    return envelope("segment.import", {"object_type": object_type, "segment_id": segment_id, "mode": mode,
                                       "record_ids": record_ids, **data}, workspace=workspace)


def test_bad_imports_are_dead_lettered_and_nothing_stalls(engine: Harness, raw: RawProducer) -> None:
    """`segment.import` messages are written by the API and by anyone with access to the record-changes
    topic: an import into a segment that cannot take one, or one that is not a valid import, is
    dead-lettered, and the partition's imports and changes after it apply."""
    worker = engine.workers[0] if engine.workers else engine.start_worker()
    publisher = engine.publisher
    publisher.define_segment(WS, {"id": "task-list", "object_type": "task", "name": "tasks", "kind": "static"})
    publisher.define_segment(WS, {"id": "task-frozen", "object_type": "task", "name": "frozen", "kind": "static",
                                  "status": "inactive"})
    publisher.define_segment(WS, {"id": "task-open", "object_type": "task", "name": "open", "rule": {
        "combinator": "and", "rules": [{"field": "status", "operator": "=", "value": "open"}]}})
    publisher.flush()
    for sid in ("task-list", "task-frozen", "task-open"):
        engine.wait_for(lambda sid=sid: get_json(worker.web_port, f"/v1/workspaces/{WS}/segments/{sid}",
                                                 "acme-admin")[0] == 200, what=f"segment {sid}")
    before = metrics(worker.web_port)
    records = topic(engine, topics.RECORD_CHANGES)
    p = 1
    mine = ids_on(p, "imp-", 3, "task")
    other = next(i for i in (f"imp-x{n}" for n in range(100)) if partition_of(i, "task") != p)

    def with_data(message: dict[str, Any], **data: Any) -> bytes:
        return encode(dict(message, data=dict(message["data"], **data)))

    good_import = import_message("task-list", mine)
    pills: list[tuple[str, bytes, str, int | None]] = [
        ("unknown segment", encode(import_message("no-such-segment", mine)), "not_importable", None),
        ("dynamic segment", encode(import_message("task-open", mine)), "not_importable", None),
        ("inactive segment", encode(import_message("task-frozen", mine)), "not_importable", None),
        ("segment of another object type", encode(import_message("task-list", mine, object_type="deal")),
         "not_importable", None),
        ("unknown workspace", encode(import_message("task-list", mine, workspace="initech")), "unknown_workspace",
         None),
        ("unknown mode", with_data(good_import, mode="merge"), "schema_violation", None),
        ("no record ids", with_data(good_import, record_ids=[]), "schema_violation", None),
        ("record id as a number", with_data(good_import, record_ids=[mine[0], 7]), "schema_violation", None),
        ("record id over 200 characters", with_data(good_import, record_ids=["i" * 201]), "schema_violation", None),
        ("segment id with a path", with_data(good_import, segment_id="../task-list"), "schema_violation", None),
        ("unknown object type", with_data(good_import, object_type="planet"), "schema_violation", None),
        ("an extra attribute", with_data(good_import, owner="mallory"), "schema_violation", None),
        ("segment version as text", with_data(good_import, segment_version="1"), "schema_violation", None),
        ("truncated JSON", encode(good_import)[:60], "malformed_json", None),
        ("a record of another partition", encode(import_message("task-list", [other])), "wrong_partition", 0),
    ]
    sent: list[Sent] = []
    for label, value, code, index in pills:
        sent.append(raw.send(records, value, key=key_of(mine[0], "task"), partition=p, label=label,
                             code=None if index is not None else code))
        if index is not None:
            sent.append(Sent(sent[-1].topic, sent[-1].partition, sent[-1].offset, label, code, index))
    # A good import with one id of another partition: that id alone is dead-lettered, the rest imported.
    mixed = raw.send(records, encode(import_message("task-list", [mine[0], other, mine[1]])),
                     key=key_of(mine[0], "task"), partition=p, label="import with one misplaced id")
    sent += [mixed, Sent(mixed.topic, mixed.partition, mixed.offset, "misplaced id", "wrong_partition", 1)]
    sent.append(raw.send(records, encode(import_message("task-list", [mine[2]])), key=key_of(mine[2], "task"),
                         partition=p, label="good import"))
    sent.append(raw.send(records, single(dict(change(mine[2], 1, status="open"), object_type="task")),
                         key=key_of(mine[2], "task"), partition=p, label="good change"))

    letters = letters_at(engine, sent)
    for s in sent:
        if s.code:
            assert letters[(s.topic, s.partition, s.offset, s.change_index)]["reason"].strip(), f"{s.label}: no reason"

    def members(segment_id: str) -> set[str]:
        status, body = get_json(worker.web_port, f"/v1/workspaces/{WS}/segments/{segment_id}/members", "acme-admin")
        assert status == 200, body
        return set(body["members"])
    engine.wait_for(lambda: members("task-open") == {mine[2]}, what="the change after the bad imports")
    assert members("task-list") == set(mine), "only the good imports' records are members"
    assert members("task-frozen") == set(), "an inactive segment took an import"
    assert record_of(worker, "task", other)[0] == 404, "a misplaced id was imported"
    after = metrics(worker.web_port)
    for code, n in Counter(s.code for s in sent if s.code).items():
        got = metric(after, "segment_engine_dead_letters_total", code=code) - metric(
            before, "segment_engine_dead_letters_total", code=code)
        assert got == n, f"dead letters counted for {code}: {got}, expected {n}"


def test_changes_that_would_grow_a_state_past_the_limit_are_dead_lettered(engine: Harness, raw: RawProducer) -> None:
    """Each change fits in a message, but together they would make a record's state bigger than one
    changelog message may be: that change is refused with state_too_large (the record keeps its previous
    state), and the record, its partition and the batch it came in go on."""
    worker = engine.workers[0] if engine.workers else engine.start_worker()
    before = metrics(worker.web_port)
    records = topic(engine, topics.RECORD_CHANGES)
    limit = engine.settings.max_message_bytes
    third = limit // 3 + 1_000  # three such fields exceed the limit, two do not
    p = 2
    big, small_1, small_2 = ids_on(p, "huge-", 3, "product")

    def product(record_id: str, version: int, **fields: Any) -> dict[str, Any]:
        return dict(change(record_id, version, **fields), object_type="product")

    def send(item: dict[str, Any] | list[dict[str, Any]], label: str, code: str | None = None) -> Sent:
        value = single({"changes": item}, type_="record.changes") if isinstance(item, list) else single(item)
        assert len(value) < limit
        return raw.send(records, value, key=key_of(big, "product"), partition=p, label=label, code=code)

    sent = [send(product(big, 1, name="n" * third), "first third"),
            send(product(big, 2, sku="s" * third, status="live"), "second third")]
    too_big = send(product(big, 3, category="c" * third), "third third, single", "state_too_large")
    sent += [too_big, send(product(big, 4, owner="olga"), "small change after it")]
    batch = send([product(small_1, 1, status="live"), product(big, 5, currency="x" * third),
                  product(small_2, 1, status="live")], "batch with a growing item")
    sent += [batch, Sent(batch.topic, batch.partition, batch.offset, "batch item: third third", "state_too_large", 1)]
    sent.append(send(product(big, 6, price=10), "small change after the batch"))

    letters = letters_at(engine, sent)
    for s in sent:
        if s.code:
            reason = letters[(s.topic, s.partition, s.offset, s.change_index)]["reason"]
            assert str(limit) in reason and big in reason, f"{s.label}: reason {reason!r} names no record or limit"
    engine.wait_for(lambda: record_of(worker, "product", big)[1].get("version") == 6, what="the change after the batch")
    status, stored = record_of(worker, "product", big)
    assert status == 200 and stored["fields"] == {"name": "n" * third, "sku": "s" * third, "status": "live",
                                                  "owner": "olga", "price": 10}, {
        k: (v if len(str(v)) < 40 else f"<{len(v)} chars>") for k, v in stored["fields"].items()}
    for rid in (small_1, small_2):
        assert record_of(worker, "product", rid)[1]["fields"] == {"status": "live"}
    after = metrics(worker.web_port)
    got = metric(after, "segment_engine_dead_letters_total", code="state_too_large") - metric(
        before, "segment_engine_dead_letters_total", code="state_too_large")
    assert got == 2


def test_an_import_that_would_grow_a_state_past_the_limit_is_dead_lettered(
        engine: Harness, raw: RawProducer) -> None:
    """A record whose state is a few bytes under the limit: adding it to a static segment would push it
    over, so that id alone is dead-lettered and the import's other ids are members."""
    worker = engine.workers[0] if engine.workers else engine.start_worker()
    segment_id = "full-" + "f" * 90
    engine.publisher.define_segment(WS, {"id": segment_id, "object_type": "product", "name": "full", "kind": "static"})
    engine.publisher.flush()
    engine.wait_for(lambda: get_json(worker.web_port, f"/v1/workspaces/{WS}/segments/{segment_id}",
                                     "acme-admin")[0] == 200, what="static segment")
    records = topic(engine, topics.RECORD_CHANGES)
    limit = engine.settings.max_message_bytes
    p = 3
    full, other = ids_on(p, "full-rec-", 2, "product")
    # Two fields whose state is 20 bytes under the limit (no product segment is dynamic: no members, no
    # schedule in it); the membership adds the segment id's 100 bytes.
    empty = len(RecordState(1, {"name": "", "sku": ""}, set()).to_bytes())
    half = (limit - 20 - empty) // 2
    fields = {"name": "n" * half, "sku": "s" * (limit - 20 - empty - half)}
    assert len(RecordState(2, fields, set()).to_bytes()) == limit - 20
    sent = [raw.send(records, single(dict(change(full, version + 1, **{name: value}), object_type="product")),
                     key=key_of(full, "product"), partition=p, label=f"field {name}")
            for version, (name, value) in enumerate(fields.items())]
    imported = raw.send(records, encode(import_message(segment_id, [full, other], object_type="product")),
                        key=key_of(full, "product"), partition=p, label="import")
    sent += [imported, Sent(imported.topic, imported.partition, imported.offset, "full record", "state_too_large", 0)]
    letters_at(engine, sent)
    engine.wait_for(lambda: get_json(worker.web_port, f"/v1/workspaces/{WS}/segments/{segment_id}/members",
                                     "acme-admin")[1]["members"] == [other], what="the other id imported")
    status, stored = record_of(worker, "product", full)
    assert status == 200 and stored["version"] == 2 and stored["segments"] == []


YEAR_3000_MS = 32_503_680_000_000


def test_a_message_from_the_future_does_not_move_a_partitions_clock(engine: Harness, raw: RawProducer) -> None:
    """Runs last in this module: it leaves the clock of two partitions of the module's worker in year 3000."""
    worker = engine.workers[0] if engine.workers else engine.start_worker()
    recent = {"combinator": "and", "rules": [{"field": "created_at", "operator": "withinLast", "value": "30 days"}]}
    engine.publisher.define_segment(WS, {"id": "fresh-tickets", "object_type": "ticket", "name": "fresh", "rule": recent})
    engine.publisher.flush()
    engine.wait_for(lambda: get_json(worker.web_port, f"/v1/workspaces/{WS}/segments/fresh-tickets",
                                     "acme-admin")[0] == 200, what="segment applied")
    records = topic(engine, topics.RECORD_CHANGES)
    forged_tick, future_stamp, control = 0, 1, 2
    raw.send(records, encode(envelope("engine.tick", {"now": YEAR_3000_MS})), key=None, partition=forged_tick,
             label="forged tick")
    early = ids_on(future_stamp, "t-early-", 1, "ticket")[0]
    stamped = {"op": "upsert", "object_type": "ticket", "id": early, "version": 1, "fields": {"status": "open"}}
    raw.producer.send(records, value=single(stamped), key=key_of(early, "ticket"), partition=future_stamp,
                      timestamp_ms=YEAR_3000_MS).get(timeout=30)
    created_now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    fresh: dict[int, str] = {}
    for p in (forged_tick, future_stamp, control):
        rid = ids_on(p, "t-fresh-", 1, "ticket")[0]
        fresh[p] = rid
        item = {"op": "upsert", "object_type": "ticket", "id": rid, "version": 1, "fields": {"created_at": created_now}}
        raw.send(records, single(item), key=key_of(rid, "ticket"), partition=p, label=f"ticket created now p{p}")

    def entered() -> set[str]:
        return {e["data"]["record_id"] for e in engine.events()
                if e["type"] == "segment.entered" and e["data"]["segment_id"] == "fresh-tickets"}
    engine.wait_for(lambda: fresh[control] in entered(), what="the control partition's ticket enters")
    wait_drained(engine, worker)
    assert entered() == set(fresh.values()), (
        f"tickets created now but not 'created within the last 30 days': {sorted(set(fresh.values()) - entered())}")
