"""Decoding and validation of record-change messages: every rejection has a stable code."""
from __future__ import annotations

import pytest

from engine.envelope import encode, envelope, record_key
from engine.errors import MalformedJson, MessageTooLarge, SchemaViolation, UnknownWorkspace, WrongPartition
from engine.intake import decode_message, parse_change, partition_for
from engine.rules import FieldValueError
from engine.workspaces import load_workspaces
from tests.conftest import FIXTURES

WORKSPACES = load_workspaces(FIXTURES / "workspaces.json")


def change(**over: object) -> dict[str, object]:
    return {"op": "upsert", "object_type": "contact", "id": "c1", "version": 1, "fields": {"country": "PL"}, **over}


def test_single_and_batch_messages_decode() -> None:
    single = decode_message(encode(envelope("record.change", change(), workspace="acme")), 10_000)
    batch = decode_message(encode(envelope("record.changes", {"changes": [change(), change(id="c2")]}, workspace="acme")), 10_000)
    assert single["data"]["id"] == "c1" and len(batch["data"]["changes"]) == 2


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{not json", MalformedJson),
        (None, MalformedJson),
        (b"[1, 2]", SchemaViolation),
        (encode(envelope("record.change", change(version="7"), workspace="acme")), SchemaViolation),
        (encode(envelope("record.change", change(op="merge"), workspace="acme")), SchemaViolation),
        (encode(envelope("record.changes", {"changes": []}, workspace="acme")), SchemaViolation),
        (encode(envelope("record.upserted", change(), workspace="acme")), SchemaViolation),
        (encode(envelope([], change(), workspace="acme")), SchemaViolation),  # was a TypeError: the agent crashed
        (encode(envelope({"a": 1}, change(), workspace="acme")), SchemaViolation),
        (b"{" + b" " * 2000 + b"}", MessageTooLarge),
    ],
)
def test_bad_messages_raise_with_stable_codes(raw: bytes | None, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        decode_message(raw, 1000)
    assert caught.value.code == error.code  # type: ignore[attr-defined]


def test_changes_are_checked_against_workspace_catalog_and_partition() -> None:
    p = partition_for(record_key("acme", "contact", "c1"), 4)
    parsed = parse_change(change(fields={"country": "PL", "created_at": "2026-01-01T00:00:00Z"}), "acme", WORKSPACES, p, 4)
    assert parsed.fields == {"country": "PL", "created_at": 1767225600000}
    with pytest.raises(UnknownWorkspace):
        parse_change(change(), "initech", WORKSPACES, p, 4)
    with pytest.raises(WrongPartition):
        parse_change(change(), "acme", WORKSPACES, (p + 1) % 4, 4)
    with pytest.raises(FieldValueError) as bad:
        parse_change(change(fields={"lifetime_value": "lots"}), "acme", WORKSPACES, p, 4)
    assert bad.value.code == "field_type" and "lifetime_value" in str(bad.value)
    with pytest.raises(FieldValueError) as unknown:
        parse_change(change(fields={"__class__": 1}), "acme", WORKSPACES, p, 4)
    assert unknown.value.code == "unknown_field"


def test_partitioning_matches_kafkas_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner  # the one Faust's producer uses

    for i in range(200):
        key = record_key("acme", "contact", f"c{i}").encode()
        assert partition_for(key.decode(), 8) == DefaultPartitioner()(key, list(range(8)), list(range(8)))
