"""How a worker's RocksDB instances share one memory budget.

Faust opens one RocksDB per table partition, each with its own write buffers (64 MB, up to 3) and its own
block cache, so a worker's memory grows with the partitions it owns. Here every partition DB of the process
gets the same LRU block cache and the same write buffer manager, which charges the write buffers to that
cache: write buffers and cached data blocks together stay near one budget, however many
partitions the worker owns or takes over.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import rocksdict
from faust.exceptions import ImproperlyConfigured
from faust.stores import STORES
from faust.stores.rocksdb import RocksDBOptions, Store
from faust.types import AppT, CollectionT
from yarl import URL

SCHEME = "segment-rocksdb"  # Faust store URL scheme of SharedBudgetStore (registered below)
BUDGET_PARAM = "memory_budget_mb"  # the store URL's query parameter carrying the budget
MB = 1024 * 1024
# Share of the budget write buffers may take before RocksDB flushes one; the rest stays for cached blocks,
# so reads of hot records keep hitting memory while a partition is written hard.
WRITE_BUFFER_SHARE = 0.5


@dataclass(frozen=True)
class MemoryBudget:
    """The objects every partition DB of one process shares: they, not the partition count, bound memory."""

    total_bytes: int
    cache: rocksdict.Cache  # LRU block cache of `total_bytes`; write buffers are charged to it too
    write_buffers: rocksdict.WriteBufferManager

    def table_options(self, bloom_filter_bits: int) -> rocksdict.BlockBasedOptions:
        """Faust's table format (bloom filter, binary-search index) reading through the shared cache."""
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(bloom_filter_bits, True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        table.set_block_cache(self.cache)
        # Index and filter blocks stay with their table files, outside the budget (as in Faust's options):
        # they are small (a bloom filter is 10 bits a key) and every read consults them. Kept in the shared
        # cache instead, they cost single-change throughput about a tenth (its LRU lookups and locks).
        return table


@functools.cache
def shared_budget(total_bytes: int) -> MemoryBudget:
    """The process's budget of that size, created on first use: every store of the worker gets the same one."""
    cache = rocksdict.Cache(total_bytes)
    # allow_stall=False: a write never waits for a flush. A stall would block the worker's event loop, and
    # across many DBs it can last for good (facebook/rocksdb#11780; here 12 DBs written in turn hung). So
    # the limit is soft: while writes outrun flushes, write buffers waiting for theirs use the cache's share.
    write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
        int(total_bytes * WRITE_BUFFER_SHARE), False, cache)
    return MemoryBudget(total_bytes, cache, write_buffers)


class SharedBudgetOptions(RocksDBOptions):
    """Faust's options for one partition DB (raw mode, file sizes, write buffer size and count, bloom filter,
    TTL), with the block cache and write buffer accounting of the process's budget instead of its own."""

    def __init__(self, budget: MemoryBudget, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.budget = budget

    def as_options(self) -> rocksdict.Options:
        options = super().as_options()
        options.set_block_based_table_factory(self.budget.table_options(self.bloom_filter_size))
        options.set_write_buffer_manager(self.budget.write_buffers)
        return options


class SharedBudgetStore(Store):
    """Faust's RocksDB store (same files, same behaviour) whose partitions share the process's budget."""

    def __init__(self, url: str | URL, app: AppT, table: CollectionT, **kwargs: Any) -> None:
        budget_mb = int(URL(url).query.get(BUDGET_PARAM, "0"))  # read first: Faust drops the query
        if budget_mb <= 0:
            raise ImproperlyConfigured(f"{SCHEME}:// needs ?{BUDGET_PARAM}=N (N > 0), got {url}")
        super().__init__(url, app, table, **kwargs)
        if not self.use_rocksdict:
            raise ImproperlyConfigured(f"{SCHEME}:// needs the rocksdict driver")
        self.rocksdb_options = SharedBudgetOptions(shared_budget(budget_mb * MB), **self.options,
                                                   use_rocksdict=True)


# Faust picks a table's store class by the scheme of its store URL; this makes `segment-rocksdb://` ours.
STORES.aliases[SCHEME] = f"{__name__}:{SharedBudgetStore.__name__}"


def store_url(budget_mb: int) -> str:
    """The Faust `store=` URL of a worker: RocksDB within `budget_mb` for all its partitions together, or
    Faust's plain per-partition RocksDB store when `budget_mb` is 0 (unbounded; for comparison)."""
    return "rocksdb://" if budget_mb == 0 else f"{SCHEME}://?{BUDGET_PARAM}={budget_mb}"
