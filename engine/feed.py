"""The live feed's reader: one per worker, reading segment events and chat assignment decisions as they
are published and handing each to the subscribers of the HTTP event stream (engine/api/feed.py).

One aiokafka consumer without a group reads every partition of both topics from their end. The first
subscriber starts it; it stops a minute after the last subscriber left (a worker nobody watches reads
nothing) or when the worker stops. Each subscriber has a bounded queue: one that falls more than
QUEUE_LIMIT events behind is marked overflowed and dropped, so a slow client never holds up the others.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Iterable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger("segment_engine.feed")

QUEUE_LIMIT = 1_000  # events a subscriber may fall behind before it is told `overflow` and closed
IDLE_STOP_S = 60.0  # the reader stops this long after the last subscriber left
RETRY_S = 2.0  # after the reader's consumer failed (broker away), before it reconnects
READY_TIMEOUT_S = 15.0  # a subscriber waits this long for the reader to find the topics' ends

# What a subscriber makes of an event (decoded, and its raw bytes): the bytes to send, or None.
Accept = Callable[[dict[str, Any], bytes], "bytes | None"]


class FeedUnavailable(Exception):
    """The reader could not reach the topics' ends in time (broker unreachable)."""


class Subscription:
    """One client's share of the feed: the events of its workspace its `accept` lets through, queued."""

    def __init__(self, workspace: str, accept: Accept) -> None:
        self.workspace = workspace
        self.accept = accept
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_LIMIT)
        self.overflowed = False
        self.closed = False  # the worker is stopping

    def offer(self, event: dict[str, Any], raw: bytes) -> bool:
        """Queue the event if it is for this subscriber; False when the queue is full (overflowed)."""
        try:
            out = self.accept(event, raw)
        except Exception:  # noqa: BLE001 - an odd event must not stop the feed for everyone
            log.exception("live feed: event %s not delivered", event.get("id"))
            return True
        if out is None:
            return True
        try:
            self.queue.put_nowait(out)
        except asyncio.QueueFull:
            self.overflowed = True
            return False
        return True


class Feed:
    """The subscribers of one worker and the reader that serves them."""

    def __init__(self, bootstrap_servers: str, topics: Iterable[tuple[str, int]]) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.partitions = [TopicPartition(name, p) for name, count in topics for p in range(count)]
        self.subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._stopped = False

    async def subscribe(self, workspace: str, accept: Accept) -> Subscription:
        """A new subscription, returned once the reader is at the topics' ends (what it gets is new)."""
        sub = Subscription(workspace, accept)
        self.subscribers.add(sub)
        log.info("live feed: a subscriber of %s joined (%d open)", workspace, len(self.subscribers))
        if self._task is None or self._task.done():
            self._ready = asyncio.Event()
            self._task = asyncio.create_task(self._read(self._ready))
        ready = self._ready
        assert ready is not None
        try:
            await asyncio.wait_for(ready.wait(), READY_TIMEOUT_S)
        except asyncio.TimeoutError:
            self.unsubscribe(sub)
            raise FeedUnavailable(f"the event topics' ends were not found within {READY_TIMEOUT_S:.0f} s") from None
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscriber (it left, or fell too far behind); logged, so a leak would show."""
        if sub in self.subscribers:
            self.subscribers.discard(sub)
            log.info("live feed: a subscriber of %s left%s (%d open)", sub.workspace,
                     " after an overflow" if sub.overflowed else "", len(self.subscribers))

    async def stop(self) -> None:
        """The worker stops: end every subscription (their streams close) and the reader."""
        self._stopped = True
        for sub in self.subscribers:
            sub.closed = True
        self.subscribers.clear()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _read(self, ready: asyncio.Event) -> None:
        """Follow both topics from their ends until nobody listens for IDLE_STOP_S; after a failure,
        reconnect and go on from where it was."""
        positions: dict[TopicPartition, int] = {}
        idle_since: float | None = None
        while not self._stopped:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers, group_id=None,
                                        enable_auto_commit=False, auto_offset_reset="latest")
            try:
                await consumer.start()
                consumer.assign(self.partitions)
                for tp, offset in positions.items():
                    consumer.seek(tp, offset)
                if fresh := [tp for tp in self.partitions if tp not in positions]:
                    await consumer.seek_to_end(*fresh)
                for tp in self.partitions:  # resolves the ends now: events from here on are new
                    positions[tp] = await consumer.position(tp)
                ready.set()
                while True:
                    if self.subscribers:
                        idle_since = None
                    elif idle_since is None:
                        idle_since = time.monotonic()
                    elif time.monotonic() - idle_since > IDLE_STOP_S:
                        if self._task is asyncio.current_task():
                            self._task = None  # the next subscriber starts a new reader
                        return
                    batches = await consumer.getmany(timeout_ms=500, max_records=1_000)
                    for tp, records in batches.items():
                        for record in records:
                            self._fan_out(record.key, record.value)
                        positions[tp] = records[-1].offset + 1
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the broker went away: subscribers wait, the reader reconnects
                log.exception("live feed reader failed; reconnecting in %.0f s", RETRY_S)
                await asyncio.sleep(RETRY_S)
            finally:
                await consumer.stop()

    def _fan_out(self, key: bytes | None, value: bytes | None) -> None:
        """Offer one message to the subscribers of its workspace (the key starts with it, so the others'
        events are not even decoded)."""
        if not self.subscribers or not value:
            return
        scope = key.split(b"/", 1)[0].decode(errors="replace") if key else None
        subs = [s for s in self.subscribers if scope is None or s.workspace == scope]
        if not subs:
            return
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
            return
        for sub in subs:
            if sub.workspace == event.get("workspace") and not sub.offer(event, value):
                self.unsubscribe(sub)
