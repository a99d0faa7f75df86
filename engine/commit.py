"""Commit: the one protocol that makes a crash safe, owned by one object (as Quix Streams' `Checkpoint`).

The agent applies records into an open group (engine/processor.py builds each message's `Work`; the state
store keeps its writes in each partition's overlay). `Checkpoint.commit` then, in this order:
1. produces the group's outgoing messages (events, decisions, dead letters) and waits for the broker's
   acknowledgement,
2. writes each partition's pending keys to RocksDB in one write batch (record states, member index,
   counts, schedule, and the applied position per input topic last),
3. sends the same keys to the partition's changelog as record batches, and records the changelog offset
   in RocksDB once acknowledged.
State is never ahead of the events it implies: replaying a message after a crash re-emits the same events
with the same deterministic ids and never skips one.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Iterable

from faust.types import TP

from engine import metrics
from engine.intake import partition_for
from engine.processor import Outgoing
from engine.state import PartitionWrites, StateStore


@dataclass
class Group:
    """Records applied since the last commit: how many, their outgoing messages, and the Kafka timestamps
    (seconds) of those that changed a membership (for the change-to-event latency, observed when the events
    are acknowledged)."""

    records: int = 0
    out: list[Outgoing] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)


class Checkpoint:
    """The open group and its commit. One per worker; the agent is its only writer. At most one group's
    commit is in flight: the agent hands a group over (`commit_behind`) and applies the next fetch while
    the broker acknowledges its events, reading the handed-over writes through (StateStore.landing); the
    next group's commit starts only once that one landed, so the order events -> state holds per group."""

    def __init__(self, app: Any, state: StateStore, table: Any, changelog_topic_name: str,
                 partition_counts: dict[str, int]) -> None:
        self.app = app
        self.state = state
        self.table = table
        self.changelog_topic_name = changelog_topic_name
        self.partition_counts = partition_counts
        self.group = Group()
        self.committing: asyncio.Task[None] | None = None  # a group's commit in flight
        # A commit that failed: every group applied after it read its writes, so none may be committed;
        # the agent fails and its restart (reset) drops them all, and their messages are re-read.
        self.failed: BaseException | None = None

    def reset(self) -> None:
        """Forget the open group and a failed commit (a restarted agent: its records are read again)."""
        self.group = Group()
        self.failed = None

    async def commit_behind(self) -> None:
        """Hand the open group to a commit and return without waiting for it (after the previous one)."""
        await self.committed()
        group, self.group = self.group, Group()
        ended = self.state.end()
        if group.out or ended:
            self.committing = asyncio.ensure_future(self._commit(group, ended))

    async def commit_pending(self) -> None:
        """Commit everything applied so far, and return once it is acknowledged and in RocksDB (before a
        step that reads committed state, a gap repair, a revocation)."""
        await self.commit_behind()
        await self.committed()

    async def committed(self) -> None:
        """Until no group's commit is in flight; raises if one failed."""
        while (task := self.committing) is not None:
            try:
                await asyncio.shield(task)
            finally:
                if self.committing is task and task.done():
                    self.committing = None
        if self.failed is not None:
            raise RuntimeError("an earlier commit failed; the agent restarts") from self.failed

    async def _commit(self, group: Group, ended: list[PartitionWrites]) -> None:
        """Produce the group's messages and wait for their acknowledgement, then commit every partition's
        writes (one RocksDB write batch and changelog record batches each)."""
        try:
            await self.flush(group.out)
            now = time.time()
            for stamp in group.stamps:
                metrics.CHANGE_TO_EVENT_SECONDS.observe(max(0.0, now - stamp))
            for writes in ended:
                await self.commit(writes)
            self.state.landed(ended)
        except BaseException as exc:
            self.failed = exc
            raise

    async def commit_first(self, partition: int) -> None:
        """Commit the open group before a step that reads committed state, then go on in `partition`."""
        await self.commit_pending()
        self.state.begin(partition)

    async def commit(self, writes: PartitionWrites) -> None:
        """One RocksDB write batch, then the same keys as record batches on the changelog partition
        (Faust's recovery format: key, value or a tombstone). The changelog is not awaited here: Faust
        flushes the producer before it commits consumer offsets. Its offset is recorded in RocksDB once
        acknowledged, so a restart on the same data directory replays only what came after."""
        if not writes.pending:
            return
        writes.apply_locally()
        tp = TP(self.changelog_topic_name, writes.partition)
        for future, count in await self.send_batches(tp.topic, tp.partition, writes.changelog_order()):
            future.add_done_callback(lambda done, count=count: self._persisted(tp, done, count))

    def _persisted(self, tp: TP, done: Any, count: int) -> None:
        """A changelog batch was acknowledged: remember its last offset as restored-up-to in RocksDB. On
        every acknowledgement: an older mark would make a restart on this data directory replay acked
        changelog records over newer local writes of a group whose own records never reached the
        changelog (a count could then lose that group's delta)."""
        if done.cancelled() or done.exception() is not None:
            return
        try:
            self.table.data.set_persisted_offset(tp, done.result().offset + count - 1)
        except Exception:  # noqa: BLE001 - the partition moved away meanwhile: its next owner restores
            pass

    async def send_batches(self, topic: str, partition: int,
                           records: Iterable[tuple[bytes | None, bytes | None]]) -> list[tuple[Any, int]]:
        """Produce `records` (key, value) to one partition as record batches, one send per batch instead of
        one per record (a send costs tens of µs); returns each batch's future with its record count."""
        producer = self.app.producer._producer  # aiokafka's producer: it builds and sends record batches
        sent: list[tuple[Any, int]] = []
        batch, count = producer.create_batch(), 0
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                sent.append((await producer.send_batch(batch, topic, partition=partition), count))
                batch, count = producer.create_batch(), 0
                batch.append(key=key, value=value, timestamp=None)
            count += 1
        if count:
            sent.append((await producer.send_batch(batch, topic, partition=partition), count))
        return sent

    async def flush(self, out: list[Outgoing]) -> None:
        """Produce everything and wait for the broker's acknowledgement before state moves on."""
        if not out:
            return
        # Grouped per (topic, partition), in order, into record batches; the partition is the one
        # Kafka's default partitioner gives the key.
        groups: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}
        for topic, key, value in out:
            partition = partition_for(key.decode(), self.partition_counts[topic]) if key is not None else 0
            groups.setdefault((topic, partition), []).append((key, value))
        futures: list[Awaitable[Any]] = []
        for (topic, partition), records in groups.items():
            futures.extend(future for future, _ in await self.send_batches(topic, partition, records))
        await asyncio.gather(*futures)

    async def send_markers(self, marker: bytes, partitions: Iterable[tuple[str, int]]) -> None:
        """One control message (tick or sync, no key) to each (topic, partition), acknowledged."""
        futures = [future for topic, partition in partitions
                   for future, _ in await self.send_batches(topic, partition, [(None, marker)])]
        await asyncio.gather(*futures)
