"""Commit: the one protocol that makes a crash safe, owned by one object (as Quix Streams' `Checkpoint`).

The agent applies records into an open group (engine/processor.py builds each message's `Work`; the state
store keeps its writes in each partition's overlay). Once the agent hands a group over, its commit does,
in this order:
1. produces the group's outgoing messages (events, decisions, dead letters), right behind the previous
   group's, and waits for the broker's acknowledgement,
2. writes each partition's pending keys to RocksDB in one write batch (record states, member index,
   counts, schedule, and the applied position per input topic last),
3. sends the same keys to the partition's changelog as record batches, and records the changelog offset
   in RocksDB once acknowledged. Steps 2 and 3 wait for the previous group's commit to land.
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


# Groups handed over whose commit has not finished, at most: the agent waits for the oldest beyond this. Each
# holds its writes and outgoing messages in memory (see engine/app.py's GROUP_OUTGOING).
MAX_LANDING = 4


@dataclass
class Group:
    """Records applied since the last commit: how many, their outgoing messages, and the Kafka timestamps
    (seconds) of those that changed a membership (for the change-to-event latency, observed when the events
    are acknowledged)."""

    records: int = 0
    out: list[Outgoing] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)


@dataclass(eq=False)
class Landing:
    """A handed-over group's commit: `sent` resolves once its messages are in the producer's batches (the
    next group's are sent after them), `task` ends when its state is in RocksDB."""

    sent: asyncio.Future[None]
    task: asyncio.Task[None] = field(init=False)


class Checkpoint:
    """The open group and its commits. One per worker; the agent is its only writer.

    Handing a group over (`commit_behind`) starts its commit and returns: the agent applies the next fetch
    meanwhile, reading the handed-over writes through (StateStore.landing). Commits are pipelined, up to
    MAX_LANDING at once, each in three steps:
    1. send the group's messages, right after the previous group's were sent (so each partition's events
       keep their order), without waiting for any earlier commit: an event leaves as soon as its group is
       handed over, not after the previous group reached RocksDB;
    2. wait for their acknowledgement;
    3. once the previous group's commit landed, write the state (RocksDB, then the changelog).
    So state is still committed in group order and only after the events it implies are acknowledged. A
    crash between 1 and 3 leaves events whose state was not committed; their messages are re-read and the
    events repeated under the same ids, as after any crash before a state write."""

    def __init__(self, app: Any, state: StateStore, table: Any, changelog_topic_name: str,
                 partition_counts: dict[str, int]) -> None:
        self.app = app
        self.state = state
        self.table = table
        self.changelog_topic_name = changelog_topic_name
        self.partition_counts = partition_counts
        self.group = Group()
        self.landing: list[Landing] = []  # handed-over groups whose commit has not finished, oldest first
        # A commit that failed: every group applied after it read its writes, so none may be committed;
        # the agent fails and its restart (reset) drops them all, and their messages are re-read.
        self.failed: BaseException | None = None

    async def reset(self) -> None:
        """Forget the open group and a failed commit (a restarted agent: its records are read again), once
        the commits in flight ended: those that land are done, the others' writes are dropped with the
        open ones (StateStore.discard)."""
        await self._all_finished()
        self.group = Group()
        self.failed = None

    async def commit_behind(self) -> None:
        """Hand the open group to a commit and return without waiting for it (unless MAX_LANDING are in
        flight: then until the oldest lands)."""
        while len(self.landing) >= MAX_LANDING:
            await self._finished(self.landing[0])
        self._raise_if_failed()
        group, self.group = self.group, Group()
        ended = self.state.end()
        if group.out or ended:
            previous = self.landing[-1] if self.landing else None
            landing = Landing(asyncio.get_running_loop().create_future())
            landing.task = asyncio.ensure_future(self._commit(group, ended, previous, landing))
            self.landing.append(landing)

    async def commit_pending(self) -> None:
        """Commit everything applied so far, and return once it is acknowledged and in RocksDB (before a
        step that reads committed state, a gap repair, a revocation)."""
        await self.commit_behind()
        await self.committed()

    async def committed(self) -> None:
        """Until no group's commit is in flight; raises if one failed."""
        await self._all_finished()
        self._raise_if_failed()

    async def _all_finished(self) -> None:
        """Until every commit in flight ended, oldest first (landed or failed)."""
        while self.landing:
            await self._finished(self.landing[0])

    async def _finished(self, landing: "Landing") -> None:
        """Until `landing`'s commit ended (not cancelled with the caller: the commit goes on)."""
        try:
            await asyncio.wait([landing.task])
        finally:
            if landing.task.done():
                if not landing.task.cancelled():
                    landing.task.exception()  # retrieved: `failed` holds the first failure, raised by the caller
                if landing in self.landing:
                    self.landing.remove(landing)

    def _raise_if_failed(self) -> None:
        if self.failed is not None:
            raise RuntimeError("an earlier commit failed; the agent restarts") from self.failed

    async def _commit(self, group: Group, ended: list[PartitionWrites], previous: "Landing | None",
                      landing: "Landing") -> None:
        """Send the group's messages after the previous group's, wait for their acknowledgement, then (after
        the previous commit landed) commit every partition's writes: one RocksDB write batch and changelog
        record batches each."""
        try:
            try:
                if previous is not None:
                    await asyncio.wait([previous.sent])
                acks = await self.send(group.out)
            finally:
                landing.sent.set_result(None)
            await asyncio.gather(*acks)
            now = time.time()
            for stamp in group.stamps:
                metrics.CHANGE_TO_EVENT_SECONDS.observe(max(0.0, now - stamp))
            if previous is not None:
                await asyncio.wait([previous.task])
                if previous.task.cancelled() or previous.task.exception() is not None:
                    raise RuntimeError("the previous group's commit failed")
            for writes in ended:
                await self.commit(writes)
            self.state.landed(ended)
        except BaseException as exc:
            if self.failed is None:
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
        await asyncio.gather(*await self.send(out))

    async def send(self, out: list[Outgoing]) -> list[Awaitable[Any]]:
        """Append everything to the producer's record batches, in order; returns the batches' futures
        (resolved when the broker acknowledged them)."""
        if not out:
            return []
        # Grouped per (topic, partition), in order, into record batches; the partition is the one
        # Kafka's default partitioner gives the key.
        groups: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}
        for topic, key, value in out:
            partition = partition_for(key.decode(), self.partition_counts[topic]) if key is not None else 0
            groups.setdefault((topic, partition), []).append((key, value))
        futures: list[Awaitable[Any]] = []
        for (topic, partition), records in groups.items():
            futures.extend(future for future, _ in await self.send_batches(topic, partition, records))
        return futures

    async def send_markers(self, marker: bytes, partitions: Iterable[tuple[str, int]]) -> None:
        """One control message (tick or sync, no key) to each (topic, partition), acknowledged."""
        futures = [future for topic, partition in partitions
                   for future, _ in await self.send_batches(topic, partition, [(None, marker)])]
        await asyncio.gather(*futures)
