"""Turn raw record-change messages into validated, normalised changes, or say exactly why not.

Everything that can be wrong with input is decided here, before any state is touched, so the agent can
dead-letter the bad part and apply the rest.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson
from kafka.partitioner.default import murmur2

from engine.assignment import Conversation
from engine.envelope import record_key
from engine.errors import MalformedJson, MessageTooLarge, UnknownWorkspace, WrongPartition
from engine.membership import Change, Event
from engine.rules import normalize_fields, parse_datetime_ms
from engine.rules.errors import FieldValueError
from engine.schemas import validate_message
from engine.workspaces import Workspaces


@lru_cache(maxsize=262_144)
def partition_for(key: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), the same one every Kafka client uses for keyed messages.

    Cached: kafka-python's murmur2 is a Python loop (about 8 µs a key), and busy records repeat."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def decode_message(raw: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Bytes → schema-valid message dict; raises a BadMessage subclass."""
    if raw is None:
        raise MalformedJson("empty message")
    if len(raw) > max_bytes:
        raise MessageTooLarge(f"message is {len(raw)} bytes, limit {max_bytes}")
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJson(f"not JSON: {exc}") from None
    validate_message(message)
    return message  # type: ignore[no-any-return]


def message_changes(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The raw change items of a record.change or record.changes message."""
    if message["type"] == "record.change":
        return [message["data"]]
    return message["data"]["changes"]  # type: ignore[no-any-return]


def parse_change(
    item: dict[str, Any],
    workspace: str,
    workspaces: Workspaces,
    partition: int,
    partitions: int,
) -> Change:
    """Validate one change item against its workspace's catalog and the partition it arrived on.

    Raises an EngineError whose code is the dead-letter reason.
    """
    object_type = item["object_type"]
    catalog = workspaces.catalog(workspace, object_type)
    if catalog is None:
        raise UnknownWorkspace(f"workspace {workspace!r} is not configured")
    key = record_key(workspace, object_type, item["id"])
    expected = partition_for(key, partitions)
    if expected != partition:
        raise WrongPartition(f"record {key!r} belongs to partition {expected}, message arrived on {partition}")
    # A field of the wrong type or unknown to the catalog raises FieldValueError (code field_type /
    # unknown_field): the change is dead-lettered with that code.
    fields = normalize_fields(item.get("fields") or {}, catalog) if item["op"] == "upsert" else {}
    return Change(item["op"], object_type, item["id"], item["version"], fields)


def message_events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The raw event items of a record.event or record.events message."""
    if message["type"] == "record.event":
        return [message["data"]]
    return message["data"]["events"]  # type: ignore[no-any-return]


def parse_event(item: dict[str, Any], workspace: str, workspaces: Workspaces, partition: int, partitions: int) -> Event:
    """Validate one behavioural event against its workspace and the partition it arrived on."""
    object_type = item["object_type"]
    if workspaces.catalog(workspace, object_type) is None:
        raise UnknownWorkspace(f"workspace {workspace!r} is not configured")
    key = record_key(workspace, object_type, item["record_id"])
    expected = partition_for(key, partitions)
    if expected != partition:
        raise WrongPartition(f"record {key!r} belongs to partition {expected}, message arrived on {partition}")
    try:
        at = parse_datetime_ms(item["at"])
    except ValueError as exc:
        raise FieldValueError("field_type", "at", f"event 'at': {exc}") from None
    return Event(item["id"], object_type, item["record_id"], item["name"], at, item.get("properties") or {})


def parse_conversation(data: dict[str, Any], workspace: str, workspaces: Workspaces, partition: int,
                       partitions: int) -> Conversation:
    """Validate a conversation.created against its workspace and the partition it arrived on (its contact's)."""
    if workspaces.catalog(workspace, "contact") is None:
        raise UnknownWorkspace(f"workspace {workspace!r} is not configured")
    key = record_key(workspace, "contact", data["contact_id"])
    expected = partition_for(key, partitions)
    if expected != partition:
        raise WrongPartition(f"contact {key!r} belongs to partition {expected}, message arrived on {partition}")
    at = None
    if data.get("at") is not None:
        try:
            at = parse_datetime_ms(data["at"])
        except ValueError as exc:
            raise FieldValueError("field_type", "at", f"conversation 'at': {exc}") from None
    return Conversation(data["conversation_id"], data["contact_id"], at)
