"""Turn raw record-change messages into validated, normalised changes, or say exactly why not.

Everything that can be wrong with input is decided here, before any state is touched, so the agent can
dead-letter the bad part and apply the rest.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import fastjsonschema
import orjson
from kafka.partitioner.default import murmur2

from engine.assignment import Conversation
from engine.envelope import record_key
from engine.errors import MalformedJson, MessageTooLarge, SchemaViolation, UnknownWorkspace, WrongPartition
from engine.membership import Change, Event
from engine.rules import normalize_fields, parse_datetime_ms
from engine.rules.errors import FieldValueError
from engine.schemas import validate_message, validator
from engine.workspaces import Workspaces

#: What the agent applies from its input topics (record changes, behavioural events, conversations). Any
#: other type that passes its schema (a membership event, a segment definition, a dead letter published
#: to an input topic by mistake) would be read and ignored without a trace; it is dead-lettered instead.
INPUT_TYPES = frozenset({"record.change", "record.changes", "record.event", "record.events", "engine.sync",
                         "engine.tick", "segment.import", "conversation.created"})

#: Batch type -> (list attribute, item schema, a valid stand-in item). When a batch fails its schema only
#: because of some items, those items alone are dead-lettered (with their index) and the rest applied,
#: like a change with a bad field; a batch whose envelope is bad is rejected whole.
BATCH_ITEMS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "record.changes": ("changes", "change.json",
                       {"op": "delete", "object_type": "contact", "id": "-", "version": 0}),
    "record.events": ("events", "behaviour-event.json",
                      {"id": "-", "object_type": "contact", "record_id": "-", "name": "x", "at": 0}),
}


class InvalidItem:
    """Takes the place of a batch item that failed its schema; parse_change / parse_event raise its error,
    so the agent dead-letters that item alone, with its index."""

    __slots__ = ("error",)

    def __init__(self, error: SchemaViolation) -> None:
        self.error = error


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
    try:
        validate_message(message)
    except SchemaViolation:
        isolated = _isolate_bad_items(message)
        if isolated is None:
            raise
        message = isolated
    if message["type"] not in INPUT_TYPES:
        raise SchemaViolation(f"message type {message['type']!r} is not accepted on the input topics")
    return message  # type: ignore[no-any-return]


def _isolate_bad_items(message: Any) -> dict[str, Any] | None:
    """The batch with each schema-invalid item replaced by an InvalidItem, if those items are all that is
    wrong with it; None otherwise (the message is rejected whole). Only runs for messages that failed."""
    kind = message.get("type") if isinstance(message, dict) else None
    spec = BATCH_ITEMS.get(kind) if isinstance(kind, str) else None
    data = message.get("data") if spec is not None else None
    if spec is None or not isinstance(data, dict) or not isinstance(data.get(spec[0]), list):
        return None
    attribute, schema, stand_in = spec
    check = validator(schema)
    marked: list[Any] = []
    for index, item in enumerate(data[attribute]):
        try:
            check(item)
            marked.append(item)
        except fastjsonschema.JsonSchemaValueException as exc:
            what = "change" if attribute == "changes" else "event"
            marked.append(InvalidItem(SchemaViolation(f"{what} #{index}: {exc.message}")))
    if not any(isinstance(item, InvalidItem) for item in marked):
        return None
    standing_in = [stand_in if isinstance(item, InvalidItem) else item for item in marked]
    try:
        validate_message(dict(message, data=dict(data, **{attribute: standing_in})))
    except SchemaViolation:
        return None
    return dict(message, data=dict(data, **{attribute: marked}))


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
    if isinstance(item, InvalidItem):
        raise item.error
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
    if isinstance(item, InvalidItem):
        raise item.error
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
