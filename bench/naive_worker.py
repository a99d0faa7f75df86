"""BASELINE, not the engine: the same job done the naive way, as a first Faust version would do it.

Per record change: decode and schema-check the message, normalise the fields against the catalog, read the
record's state from a RocksDB-backed Faust table (with a changelog, like the engine's), merge the change,
evaluate EVERY segment (no field index), send a segment.entered / segment.exited event for each flip
(`topic.send`: buffered, no waiting for acknowledgements) and write the state back: one table write per
change, nothing batched. Segment rules are the engine's own compiled rules (`engine.rules.load_rule` over
the demo workspace's catalog), read from a JSON file at start, so both evaluate exactly the same predicates.

What it does not do (the engine does): field index, crash-safe ordering (events acknowledged before state is
written), member index and counts, offsets-in-state, scheduler, behavioural events, dead letters.

Configured by env: BENCH_BROKER, BENCH_TOPIC (record changes), BENCH_EVENTS_TOPIC, BENCH_APP_ID,
BENCH_PARTITIONS, BENCH_WEB_PORT, BENCH_DATA_DIR, BENCH_SESSION_TIMEOUT, BENCH_SEGMENTS_FILE (a JSON list of
segment definitions: id, rule). Counts are served as JSON at http://127.0.0.1:<port>/count.
"""
from __future__ import annotations

import os
import time
from typing import Any

import faust
import orjson
from faust.worker import Worker

from bench.faust_app import baseline_app
from engine.envelope import encode, envelope, record_key, transition_id
from engine.rules import Context, load_rule, normalize_fields
from engine.schemas import validate_message
from engine.settings import SAMPLES
from engine.workspaces import load_workspaces

WORKSPACE, OBJECT_TYPE = "demo", "contact"


def build_app(env: dict[str, str]) -> faust.App:
    partitions = int(env.get("BENCH_PARTITIONS", "4"))
    catalog = load_workspaces(SAMPLES / "workspaces.json").catalog(WORKSPACE, OBJECT_TYPE)
    assert catalog is not None
    definitions = orjson.loads(open(env["BENCH_SEGMENTS_FILE"], "rb").read())
    rules = [(d["id"], load_rule(d["rule"], catalog).matches) for d in definitions]
    app = baseline_app(env, "rocksdb://", table_standby_replicas=0)
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    changes_topic = app.topic(env["BENCH_TOPIC"], partitions=partitions, **raw)
    events_topic = app.topic(env["BENCH_EVENTS_TOPIC"], partitions=partitions, **raw)
    table = app.Table("naive-state", partitions=partitions, key_type=bytes, value_type=bytes)
    counts = {"changes": 0, "events": 0, "rules": len(rules)}

    async def apply(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            message = orjson.loads(msg.value)
            validate_message(message)
            if message["type"] == "record.change":
                items = [message["data"]]
            elif message["type"] == "record.changes":
                items = message["data"]["changes"]
            else:
                continue
            now = int(msg.timestamp * 1000) if msg.timestamp else time.time_ns() // 1_000_000
            for item in items:
                await apply_change(item, now)

    async def apply_change(item: dict[str, Any], now: int) -> None:
        record_id = item["id"]
        key = record_key(WORKSPACE, OBJECT_TYPE, record_id).encode()
        raw_state = table.get(key)
        state = orjson.loads(raw_state) if raw_state is not None else None
        version = item["version"]
        if state is not None and version <= state["v"]:
            return  # stale
        before = set(state["m"]) if state is not None and not state["d"] else set()
        if item["op"] == "delete":
            state = {"v": version, "f": {}, "m": [], "d": True}
            after: set[str] = set()
        else:
            fields = dict(state["f"]) if state is not None and not state["d"] else {}
            for name, value in normalize_fields(item.get("fields") or {}, catalog).items():
                if value is None:
                    fields.pop(name, None)
                else:
                    fields[name] = value
            context = Context(now, before)
            after = {sid for sid, matches in rules if matches(fields, context)}  # every segment, every change
            state = {"v": version, "f": fields, "m": sorted(after), "d": False}
        for sid in sorted(after - before):
            await emit("segment.entered", sid, record_id, version, key, now)
        for sid in sorted(before - after):
            await emit("segment.exited", sid, record_id, version, key, now)
        table[key] = orjson.dumps(state)  # one table write per change
        counts["changes"] += 1

    async def emit(event_type: str, segment_id: str, record_id: str, version: int, key: bytes, now: int) -> None:
        data = {"object_type": OBJECT_TYPE, "segment_id": segment_id, "record_id": record_id,
                "record_version": version, "segment_version": 1, "cause": "change", "at": now}
        event_id = transition_id(WORKSPACE, OBJECT_TYPE, record_id, segment_id, 1, version, event_type)
        await events_topic.send(key=key, value=encode(envelope(event_type, data, workspace=WORKSPACE, id_=event_id)))
        counts["events"] += 1

    async def count_page(web: Any, request: Any) -> Any:
        return web.json(counts)

    app.agent(changes_topic, name="naive-apply")(apply)
    app.page("/count")(count_page)
    return app


if __name__ == "__main__":
    Worker(build_app(dict(os.environ)), loglevel=os.environ.get("BENCH_LOG_LEVEL", "warning"), quiet=True).execute_from_commandline()
