"""Backfill time of a new segment: how long until a segment created now has its members among N stored records.

The issue asks for N = 1M. Loading 1M records through Kafka into a worker takes many minutes at today's
engine speed, so two measurements, each labelled with what it includes:

* **End to end** (`end_to_end`): a real worker with 10 segments is loaded with as many contacts as fit in
  `load_s` seconds (full creates, record.changes batches of 100; at most two chunks ahead of the worker).
  Then one new segment is published and the clock runs until every partition has backfilled it: the
  definition reaches the worker, the registry changes, each partition scans its records, evaluates the new
  segment, produces the segment.entered events, waits for their acknowledgement and writes the changed
  states (through the Faust table: RocksDB + changelog). The end is detected with one probe change per
  partition published once `segment_engine_backfill_records_total` reached N: a partition applies its probe
  only after its backfill, so "all probes applied" = done (the probes' own work, 4 one-field updates, is
  included, and so is up to one poll interval, 0.1 s). records/s = N / that time; the 1M figure is that
  rate extrapolated linearly, and labelled so.
* **In process** (`in_process`): 1M stored states written straight into one RocksDB (rocksdict, Faust's
  options, keys and values exactly as the engine stores them: `RecordState.to_bytes`, member-index entries),
  then the engine's own backfill code over them: the loop of `Engine._backfill_partition` calling
  `Processor.backfill_record` (decode, evaluate the new segment, build the events' bytes with
  `Processor.membership_events`), then `StateStore.write` of the changed states into that RocksDB. No Kafka:
  events are built but not produced, writes go to RocksDB only (no changelog), one partition (the worker has
  4 and scans them one after the other). Values come from a pool of distinct generated contacts, repeated
  under distinct keys (generating 1M distinct contacts in Python would take longer than the backfill).
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from engine.envelope import record_key
from engine.intake import partition_for
from engine.broker import LocalBroker

from bench.harness import (WORKSPACE, WorkerSession, compacted_sst_bytes, creates_for, dir_bytes, encode_batches,
                           faust_rocksdb_options, metric_sum, scrape, send_all, wait_until)


def end_to_end(broker: LocalBroker, tmp: Path, segments: list[dict[str, Any]], new_segment: dict[str, Any],
               load_s: float, seed: int, timeout: float, chunk: int = 5_000, batch: int = 100) -> dict[str, Any]:
    session = WorkerSession("engine", broker, tmp, segments)
    session.start()
    try:
        session.wait_ready(timeout)
        assert session.proc is not None
        partitions = session.settings.partitions
        loaded = 0
        started = time.monotonic()
        while time.monotonic() - started < load_s:
            ids = [f"b{i}" for i in range(loaded, loaded + chunk)]
            send_all(session.publisher, session.records_topic,
                     encode_batches(creates_for(ids, seed), partitions, batch, check=False))
            loaded += chunk
            # Keep at most two chunks in flight, so loading stops close to load_s.
            wait_until(session.applied, loaded - chunk, session.proc, session.log, timeout)
        wait_until(session.applied, loaded, session.proc, session.log, timeout)
        load_time = time.monotonic() - started
        session.records.update(f"b{i}" for i in range(loaded))
        disk_before = dir_bytes(session.settings.data_dir)

        def backfilled() -> float | None:
            text = scrape(session.url)
            return None if text is None else sum(metric_sum(text, "segment_engine_backfill_records_total").values())

        t0 = time.monotonic()
        session.publisher.define_segment(WORKSPACE, dict(new_segment, version=int(time.time() * 1000)))
        session.publisher.flush()
        scanned = wait_until(backfilled, loaded, session.proc, session.log, timeout)
        probes = []
        for p in range(partitions):
            record_id = next(f"b{i}" for i in range(loaded) if partition_for(record_key(WORKSPACE, "contact", f"b{i}"), partitions) == p)
            probes.append({"op": "upsert", "object_type": "contact", "id": record_id, "version": 2,
                           "fields": {"first_name": "Probe"}})
        send_all(session.publisher, session.records_topic, encode_batches(probes, partitions, 1, check=False))
        done = wait_until(session.applied, loaded + len(probes), session.proc, session.log, timeout)
        text = scrape(session.url) or ""
        entered = sum(v for k, v in metric_sum(text, "segment_engine_membership_events_total").items()
                      if 'cause="backfill"' in k)
    finally:
        session.close()
    seconds = done - t0
    rate = loaded / seconds
    return {
        "records": loaded, "existing_segments": len(segments), "load_seconds": round(load_time, 1),
        "load_creates_per_s": loaded / load_time, "backfill_seconds": seconds, "scan_seen_seconds": scanned - t0,
        "records_per_s": rate, "extrapolated_1m_seconds": 1_000_000 / rate, "entered": entered,
        "data_dir_bytes_before": disk_before, "footprint": session.footprint,
    }


def in_process(tmp: Path, segments: list[dict[str, Any]], new_segment: dict[str, Any], records: int, seed: int,
               pool_size: int = 20_000) -> dict[str, Any]:
    from rocksdict import Rdict, WriteBatch

    from engine.app import Engine
    from engine.broker import free_port
    from engine.membership import RecordState, evaluate
    from engine.rules import normalize_fields
    from engine.sample_data import realistic_contact
    from engine.settings import Settings
    from engine.state import FIRST_RECORD_KEY, OneDatabase, StateStore, member_prefix
    from engine.envelope import segment_key

    engine = Engine(Settings(broker="127.0.0.1:1", data_dir=tmp / "in-process-engine", web_port=free_port()))
    registry = engine.registry
    for segment in segments:
        registry.apply({"type": "segment.defined", "workspace": WORKSPACE, "data": dict(segment, version=1)})
    group = registry.segment_set(WORKSPACE, "contact")
    catalog = registry.workspaces.catalog(WORKSPACE, "contact")
    assert catalog is not None
    now = 1_790_000_000_000
    rng = random.Random(seed)

    build_started = time.perf_counter()
    pool: list[tuple[bytes, list[str]]] = []
    for _ in range(min(pool_size, records)):
        state = RecordState(rng.randint(1, 40), normalize_fields(realistic_contact(rng), catalog), set())
        evaluate(state, group.evaluated_ids, group, now, "change")
        pool.append((state.to_bytes(), sorted(state.members)))
    path = tmp / "in-process-backfill.db"
    db = Rdict(str(path), options=faust_rocksdb_options())
    batch = WriteBatch(raw_mode=True)
    for i in range(records):
        raw, members = pool[i % len(pool)]
        record_id = f"c{i}"
        batch.put(record_key(WORKSPACE, "contact", record_id).encode(), raw)
        for sid in members:
            batch.put(member_prefix(segment_key(WORKSPACE, "contact", sid)) + record_id.encode(), b"1")
        if len(batch) >= 20_000:
            db.write(batch)
            batch = WriteBatch(raw_mode=True)
    db.write(batch)
    db.flush()
    db.compact_range(None, None)
    build_s = time.perf_counter() - build_started
    sst_before = dir_bytes(path, ".sst")

    registry.apply({"type": "segment.defined", "workspace": WORKSPACE, "data": dict(new_segment, version=2)})
    scopes = {(WORKSPACE, "contact"): {new_segment["id"]}}
    out: list[Any] = []
    membership: list[Any] = []
    changed: list[Any] = []
    started = time.perf_counter()
    scanned = 0
    for key, raw in db.items(from_key=FIRST_RECORD_KEY):  # what StateStore.records iterates
        scanned += 1
        engine.processor.backfill_record(key, raw, scopes, out, now, membership, changed)  # type: ignore[arg-type]
    scan_s = time.perf_counter() - started
    write_started = time.perf_counter()
    store = StateStore(OneDatabase(db))
    writes = store.begin(0)  # the store collects a message's writes and applies them as one batch
    store.write(("bench", 0, 0), membership, changed)
    writes.apply_locally()
    write_s = time.perf_counter() - write_started
    total_s = time.perf_counter() - started
    db.close()
    return {
        "records": records, "scanned": scanned, "distinct_values": len(pool), "existing_segments": len(segments),
        "build_seconds": build_s, "scan_evaluate_seconds": scan_s, "write_seconds": write_s, "total_seconds": total_s,
        "records_per_s": scanned / total_s, "entered": sum(len(t) for *_, t in membership),
        "changed_states": len(changed), "events_bytes": sum(len(v) for *_, v in out),
        "sst_bytes_per_record": sst_before / records,
    }
