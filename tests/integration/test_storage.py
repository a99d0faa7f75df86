"""One RocksDB memory budget per worker (engine.storage), on real RocksDB files: every partition DB opened
through Faust's store shares one block cache and one write buffer manager, write buffers stay near the
budget however many partitions are written, and a worker started with a budget applies changes."""
from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path
from typing import Any, Iterator

import faust
import pytest

from engine.sample_data import contact_changes
from engine.settings import load_settings
from engine.storage import MB, WRITE_BUFFER_SHARE, SharedBudgetStore, shared_budget, store_url
from tests.conftest import Harness, WorkerProcess
from tests.oracle import Oracle, fold_events

BUDGET_MB = 64
WRITES = 120_000  # of 1,000 bytes, across 12 partitions: almost twice the budget, 4 write buffer allowances
VALUE = os.urandom(1000)


def table_store(data_dir: Path, store: str, partitions: int) -> Any:
    """The store Faust gives a table of an app with `store=`: the same path the worker's table takes."""
    app = faust.App("storage-test", store=store, datadir=str(data_dir), autodiscover=False)
    table = app.Table("record-state", partitions=partitions, key_type=bytes, value_type=bytes)
    return table.data


@pytest.fixture
def dbs(tmp_path: Path) -> Iterator[list[Any]]:
    store = table_store(tmp_path, store_url(BUDGET_MB), partitions=12)
    assert isinstance(store, SharedBudgetStore)
    opened = [store._db_for_partition(p) for p in range(12)]
    yield opened
    for db in opened:
        db.close()


def memtable_bytes(dbs: list[Any]) -> int:
    return sum(db.property_int_value("rocksdb.cur-size-all-mem-tables") for db in dbs)


def wait_for_flushes(dbs: list[Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(db.property_int_value("rocksdb.num-immutable-mem-table") for db in dbs):
        assert time.monotonic() < deadline, "flushes did not finish"
        time.sleep(0.05)


def test_partition_dbs_share_one_cache_and_write_buffer_manager(dbs: list[Any]) -> None:
    budget = shared_budget(BUDGET_MB * MB)
    assert {db.property_int_value("rocksdb.block-cache-capacity") for db in dbs} == {BUDGET_MB * MB}
    before = dbs[-1].property_int_value("rocksdb.block-cache-usage")
    for n in range(5_000):
        dbs[0].put(n.to_bytes(8, "big"), VALUE)
    # Partition 0's write buffers are charged to the cache the last partition reads through: one cache.
    assert dbs[-1].property_int_value("rocksdb.block-cache-usage") > before + 2 * MB
    assert budget.write_buffers.get_usage() >= 2 * MB
    assert {db.property_int_value("rocksdb.block-cache-usage") for db in dbs} == {budget.cache.get_usage()}


def test_write_buffers_stay_within_the_budget_across_partitions(dbs: list[Any]) -> None:
    budget = BUDGET_MB * MB
    peak = 0
    for n in range(WRITES):
        dbs[n % len(dbs)].put(n.to_bytes(8, "big"), VALUE)
        if n % 1_000 == 0:
            peak = max(peak, memtable_bytes(dbs))
    # Written faster than RocksDB flushes, write buffers waiting for their flush may take the cache's share
    # too (the limit is soft: a write never waits), but not more than the budget.
    assert peak <= budget, f"write buffers reached {peak / MB:.1f} MiB, budget {BUDGET_MB} MiB"
    wait_for_flushes(dbs)
    assert memtable_bytes(dbs) <= budget * WRITE_BUFFER_SHARE
    for n in random.Random(1).sample(range(WRITES), 200):  # flushed or not, everything reads back
        assert dbs[n % len(dbs)][n.to_bytes(8, "big")] == VALUE


def test_faust_defaults_keep_every_partition_s_writes_in_memory(tmp_path: Path) -> None:
    """The contrast: without the budget, the same writes all stay in per-partition write buffers."""
    store = table_store(tmp_path, store_url(0), partitions=12)
    assert type(store) is not SharedBudgetStore
    dbs = [store._db_for_partition(p) for p in range(12)]
    try:
        for n in range(WRITES):
            dbs[n % len(dbs)].put(n.to_bytes(8, "big"), VALUE)
        assert memtable_bytes(dbs) > WRITES * len(VALUE)
    finally:
        for db in dbs:
            db.close()


def test_partition_files_stay_where_faust_puts_them(tmp_path: Path) -> None:
    """A worker upgraded to the budget reopens the partitions it already has on disk."""
    shared = table_store(tmp_path, store_url(BUDGET_MB), partitions=4)
    plain = table_store(tmp_path, "rocksdb://", partitions=4)
    assert [shared.partition_path(p) for p in range(4)] == [plain.partition_path(p) for p in range(4)]


def test_memory_budget_setting() -> None:
    assert load_settings({}).memory_budget_mb == 256
    assert load_settings({"SEGMENT_ENGINE_MEMORY_BUDGET_MB": "64"}).memory_budget_mb == 64
    assert load_settings({"SEGMENT_ENGINE_MEMORY_BUDGET_MB": "0"}).memory_budget_mb == 0
    with pytest.raises(ValueError, match="MEMORY_BUDGET_MB"):
        load_settings({"SEGMENT_ENGINE_MEMORY_BUDGET_MB": "4"})
    assert store_url(64) == "segment-rocksdb://?memory_budget_mb=64"
    assert store_url(0) == "rocksdb://"


def test_a_worker_with_a_budget_applies_changes_and_shares_it(harness: Harness) -> None:
    rules = harness.define_fixture_segments()
    data_dir = harness.tmp / "budgeted"
    worker = WorkerProcess(harness.settings, data_dir, harness.tmp / "budgeted.log")
    worker.env["SEGMENT_ENGINE_MEMORY_BUDGET_MB"] = "32"
    harness.workers.append(worker)
    worker.start().wait_ready()
    changes = list(contact_changes(random.Random(11), 1_500, records=300))
    harness.publisher.publish_batches("acme", changes, batch_size=25)
    harness.publisher.flush()
    expected = Oracle(harness.catalog(), rules).apply_all(changes).membership()
    harness.wait_for(lambda: fold_events(harness.events()) == expected, what="folded events == oracle")
    worker.kill()

    # RocksDB logs the options each partition DB was opened with, objects by address: one of each.
    logs = [(db / "LOG").read_text(errors="replace") for db in sorted(p.parent for p in data_dir.rglob("CURRENT"))]
    assert len(logs) == harness.settings.partitions
    caches = {re.search(r"^\s*block_cache: (0x[0-9a-f]+)$", log, re.M).group(1) for log in logs}  # type: ignore[union-attr]
    managers = {re.search(r"Options\.write_buffer_manager: (0x[0-9a-f]+)$", log, re.M).group(1)  # type: ignore[union-attr]
                for log in logs}
    capacities = {re.search(r"^\s*capacity : (\d+)$", log, re.M).group(1) for log in logs}  # type: ignore[union-attr]
    assert len(caches) == 1 and len(managers) == 1, (caches, managers)
    assert capacities == {str(32 * MB)}
