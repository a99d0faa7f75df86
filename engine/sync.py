"""Sync: bring a partition up to the registry's segment versions. When a segment is created, changed or
removed (or the partition was restored from its changelog), the agent calls `PartitionSync.sync` on the
partition's next message, before applying it: stored records are re-evaluated over the changed segments
(engine/processor.py does each record) and the resulting events are produced before the new states are
written, as for any message."""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from engine import metrics
from engine.commit import Checkpoint
from engine.envelope import split_record_key
from engine.membership import RecordState
from engine.processor import Outgoing, Processor
from engine.registry import SegmentRegistry
from engine.state import Scoped, StateStore

log = logging.getLogger("segment_engine")

BACKFILL_CHUNK = 1_000  # records a backfill scans between two yields to the event loop


class PartitionSync:
    """Which registry generation each partition was synced at, and the backfills that bring it there."""

    def __init__(self, registry: SegmentRegistry, state: StateStore, processor: Processor, checkpoint: Checkpoint,
                 now_of: Callable[[int], int]) -> None:
        self.registry = registry
        self.state = state
        self.processor = processor
        self.checkpoint = checkpoint
        self.now_of = now_of
        self.synced: dict[int, int] = {}  # partition -> registry generation it was synced at
        self.pending: dict[int, int] = {}  # partition -> records left to scan in a running backfill (or repair)

    def due(self, partition: int) -> bool:
        """The registry changed since the partition last synced (or it never did on this worker)."""
        return self.synced.get(partition) != self.registry.generation

    async def sync(self, partition: int, topic: str, offset: int) -> None:
        """Backfill this partition's records over segments created or changed since it last synced.

        Runs inside the agent, on an event of `partition` (at `offset`), so table writes land in that
        partition's RocksDB and changelog. Which versions were applied is stored in the same partition,
        so a worker that takes the partition over knows what is left to do.
        """
        if self.state.needs_repair(partition):
            # Restored from the changelog: a crash may have cut a group's records short there. The
            # bookkeeping came last, so its messages are re-read; derived keys are made to agree with the
            # record states before anything builds on them (and before the partition answers queries).
            self.pending[partition] = self.state.record_estimate(partition)
            try:
                fixed = await self.state.repair(partition)
            finally:
                self.pending[partition] = 0
            if fixed:
                metrics.REPAIRED_KEYS.inc(fixed)
                log.warning("partition %d: repaired %d derived keys after restoring from the changelog", partition, fixed)
        generation = self.registry.generation
        stamps = {k: list(v) for k, v in self.registry.stamps.items()}
        applied = self.state.applied()
        todo = {k: v for k, v in stamps.items() if applied.get(k) != v}
        if todo:
            out: list[Outgoing] = []
            scopes: dict[tuple[str, str], set[str]] = {}
            removed_keys: list[str] = []
            reborn: dict[tuple[str, str], set[str]] = {}  # scope -> re-created segment ids
            for key, (version, removed) in todo.items():
                workspace, object_type, segment_id = split_record_key(key)
                segment_ids = scopes.setdefault((workspace, object_type), set())
                # Segments that reference a changed or removed one are re-evaluated too.
                segment_ids |= self.registry.segment_set(workspace, object_type).dependents.get(segment_id, frozenset())
                if removed:
                    # Memberships go without events (a re-created id starts empty); one worker owns
                    # partition 0 and announces the deletion.
                    removed_keys.append(key)
                    if partition == 0:
                        out.append(self.processor.segment_deleted_event(workspace, object_type, segment_id, version))
                    continue
                if self.registry.recreated_since(key, applied.get(key)):
                    # Removed and re-created under the same id since this partition last synced (its owner
                    # was down, or nothing reached it in between): the old incarnation's memberships go
                    # first, without events, so the new one starts empty and its members enter.
                    removed_keys.append(key)
                    reborn.setdefault((workspace, object_type), set()).add(segment_id)
                segment = self.registry.get(workspace, object_type, segment_id)
                if segment is not None and segment.evaluated:
                    segment_ids.add(segment_id)
            membership, changed = await self.backfill(partition, scopes, out, self.now_of(partition), reborn)
            await self.checkpoint.flush(out)
            marker = (topic, offset, 0)
            for key in removed_keys:
                self.state.drop_segment(partition, key, marker)
            self.state.write(marker, membership, changed)
            self.state.set_applied(stamps)
        self.synced[partition] = generation

    async def backfill(
        self, partition: int, scopes: dict[tuple[str, str], set[str]], out: list[Outgoing], now: int,
        reborn: dict[tuple[str, str], set[str]],
    ) -> tuple[list[Scoped], list[tuple[bytes, RecordState]]]:
        """Re-evaluate the stored records of `scopes` (scope -> segment ids to evaluate), after forgetting
        their memberships of `reborn` segments (scope -> ids re-created since the partition synced).

        Yields to the event loop every BACKFILL_CHUNK records, so health checks, metrics (progress in
        segment_engine_backfill_pending_records) and queries are answered during a long backfill."""
        membership: list[Scoped] = []
        changed: list[tuple[bytes, RecordState]] = []
        estimate = self.state.record_estimate(partition)
        scanned = backfilled = 0
        self.pending[partition] = estimate
        try:
            for key, raw in self.state.records(partition):
                scanned += 1
                if scanned % BACKFILL_CHUNK == 0:
                    self.pending[partition] = max(0, estimate - scanned)
                    metrics.BACKFILLED_RECORDS.inc(backfilled)
                    backfilled = 0
                    await asyncio.sleep(0)
                backfilled += self.processor.backfill_record(key, raw, scopes, out, now, membership, changed, reborn)
        finally:
            self.pending[partition] = 0
            metrics.BACKFILLED_RECORDS.inc(backfilled)
        return membership, changed
