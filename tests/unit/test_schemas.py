"""engine/schemas.py lets jsonschema-rs decide and fastjsonschema explain: the two must agree on every
document an input topic can carry, or a valid message would be dead-lettered (or a bad one applied)."""
from __future__ import annotations

from typing import Any

import fastjsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import SchemaViolation
from engine.schemas import MESSAGE_SCHEMAS, load_schema, validate_message, validator

ENVELOPE = {"specversion": "1.0", "id": "m1", "source": "crm", "time": "2026-12-05T10:00:00Z", "workspace": "demo"}
CHANGE = {"op": "upsert", "object_type": "contact", "id": "c1", "version": 3, "fields": {"city": "Berlin", "tags": ["a"]}}
EVENT = {"id": "e1", "object_type": "contact", "record_id": "c1", "name": "purchase", "at": 1_790_000_000_000,
         "properties": {"amount": 12.5}}
VALID: list[dict[str, Any]] = [
    dict(ENVELOPE, type="record.change", data=CHANGE),
    dict(ENVELOPE, type="record.changes", data={"changes": [CHANGE, dict(CHANGE, op="delete", id="c2")]}),
    dict(ENVELOPE, type="record.event", data=EVENT),
    dict(ENVELOPE, type="record.events", data={"events": [EVENT, dict(EVENT, at="2026-12-05T10:00:00")]}),
    dict(ENVELOPE, type="conversation.created", data={"conversation_id": "v1", "contact_id": "c1", "at": 5}),
    dict(ENVELOPE, type="segment.import", data={"object_type": "contact", "segment_id": "vip", "mode": "add",
                                                "record_ids": ["c1", "c2"], "segment_version": 2}),
    dict(ENVELOPE, type="engine.tick", data={"now": 1_790_000_000_000}),
    dict(ENVELOPE, type="engine.sync", data={}),
]

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8), st.text(alphabet="ab\n-_.", min_size=0, max_size=3), st.text(min_size=199, max_size=202),
    st.sampled_from(["upsert", "delete", "contact", "purchase", "record.change", "1.0", "add", "9x", ""]),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["op", "id", "x", "fields", "at"]), inner, max_size=3)),
    max_leaves=6)


def paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document a mutation can touch (the document itself included)."""
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += paths(value, prefix + (key,))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += paths(value, prefix + (index,))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid message with a few places replaced, removed or added to (as a producer's bug would)."""
    document = orjson.loads(orjson.dumps(draw(st.sampled_from(VALID))))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(document)))
        if not path:
            continue
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "type", "data", "fields", "version"]))] = draw(json_values)
    return orjson.loads(orjson.dumps(document))  # what orjson hands the engine


def explained_valid(name: str, document: Any) -> bool:
    explain = fastjsonschema.compile(load_schema(name), handlers={"schema": load_schema}, use_formats=False,
                                     use_default=False)
    try:
        explain(document)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


@pytest.mark.parametrize("message", VALID, ids=[m["type"] for m in VALID])
def test_valid_messages_pass(message: dict[str, Any]) -> None:
    validate_message(message)


@settings(max_examples=600, deadline=None)
@given(mutated())
def test_the_deciding_and_the_explaining_validator_agree(document: dict[str, Any]) -> None:
    kind = document.get("type")
    name = MESSAGE_SCHEMAS.get(kind) if isinstance(kind, str) else None
    if name is None:
        with pytest.raises(SchemaViolation, match="unknown message type"):
            validate_message(document)
        return
    accepted = explained_valid(name, document)
    try:
        validator(name)(document)
        decided = True
    except fastjsonschema.JsonSchemaException:
        decided = False
    assert decided == accepted, (name, document)


def test_a_refusal_names_the_field_in_fastjsonschemas_words() -> None:
    bad = dict(ENVELOPE, type="record.change", data=dict(CHANGE, version=-1))
    with pytest.raises(SchemaViolation, match=r"record-change.json: data.data.version must be bigger than or equal to 0"):
        validate_message(bad)
