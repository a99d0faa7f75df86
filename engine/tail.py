"""Reference subscriber: print segment events as they arrive.

What an automation service does with `segment-events`, in one place:
- a consumer group (`group`) keeps the position: offsets are committed synchronously after each printed
  batch, so the next run of the same group resumes right after the last printed event;
- `seeks` replay from given offsets (`p<partition>@<offset>` is printed on every text line);
- events are deduplicated by `id` (the engine's ids are deterministic) over a bounded LRU window.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, TextIO

import orjson

import topics
from engine.settings import Settings

ARROWS = {"segment.entered": "ENTERED", "segment.exited": "EXITED ", "segment.deleted": "DELETED"}
IDLE_SECONDS = 3.0  # without --follow: stop after this long with no new events
DEDUPE_IDS = 100_000  # event ids remembered for deduplication


class TailError(Exception):
    """A usage problem (bad --seek, missing topic, no group assignment): the CLI prints it and exits."""


def format_event(event: dict[str, Any]) -> str:
    data = event["data"]
    if event["type"].startswith("conversation."):
        return format_assignment(event)
    kind = ARROWS.get(event["type"], event["type"])
    scope = f"{event.get('workspace')}/{data.get('object_type')}"
    if event["type"] == "segment.deleted":
        return f"{event['time']}  {kind}  segment {scope}/{data['segment_id']} (v{data['segment_version']})"
    return (
        f"{event['time']}  {kind}  {scope}/{data['record_id']:<8} {'→' if kind == 'ENTERED' else '←'} "
        f"{data['segment_id']}  (record v{data['record_version']}, segment v{data['segment_version']}, {data['cause']})"
    )


def format_assignment(event: dict[str, Any]) -> str:
    data = event["data"]
    head = f"{event['time']}  conversation {event.get('workspace')}/{data['conversation_id']} (contact {data['contact_id']})"
    if event["type"] == "conversation.assigned":
        via = f" of group {data['group']}" if data.get("group") else ""
        return f"{head}  ASSIGNED to {data['assignee']}{via} by rule {data['rule_id']} (segment {data['segment_id']})"
    return f"{head}  UNASSIGNED ({data['reason']}; in {', '.join(data.get('segments') or ()) or 'no segments'})"


def format_line(partition: int, offset: int, event: dict[str, Any]) -> str:
    """A text line: where the event is (for `--seek PARTITION:OFFSET`), then the event."""
    return f"p{partition}@{offset}  {format_event(event)}"


def parse_seek(text: str) -> tuple[int, int]:
    """`PARTITION:OFFSET` -> (partition, offset); ValueError when malformed or negative."""
    partition, sep, offset = text.partition(":")
    try:
        if not sep:
            raise ValueError
        result = int(partition), int(offset)
    except ValueError:
        raise ValueError(f"--seek expects PARTITION:OFFSET (e.g. 2:1500), got {text!r}") from None
    if result[0] < 0 or result[1] < 0:
        raise ValueError(f"--seek partition and offset must be >= 0, got {text!r}")
    return result


def parse_seeks(texts: Iterable[str]) -> dict[int, int]:
    seeks: dict[int, int] = {}
    for text in texts:
        partition, offset = parse_seek(text)
        if partition in seeks:
            raise ValueError(f"--seek names partition {partition} twice")
        seeks[partition] = offset
    return seeks


class Deduplicator:
    """Remembers the last `capacity` event ids (least recently seen go first)."""

    def __init__(self, capacity: int = DEDUPE_IDS) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.ids: OrderedDict[str, None] = OrderedDict()
        self.skipped = 0

    def seen(self, event_id: str) -> bool:
        """True (and counted as skipped) if `event_id` was seen within the window; remembers it either way."""
        if event_id in self.ids:
            self.ids.move_to_end(event_id)
            self.skipped += 1
            return True
        self.ids[event_id] = None
        if len(self.ids) > self.capacity:
            self.ids.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class TailResult:
    printed: int = 0
    duplicates: int = 0
    filtered: int = 0
    unreadable: int = 0
    unapplied_seeks: dict[int, int] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"segment-engine tail: {self.printed} event(s) printed, {self.duplicates} duplicate(s) skipped"
        if self.unreadable:
            text += f", {self.unreadable} unreadable message(s) skipped"
        if self.unapplied_seeks:
            named = ", ".join(f"{p}:{o}" for p, o in sorted(self.unapplied_seeks.items()))
            text += f"; --seek not applied (partition not assigned to this consumer): {named}"
        return text


def tail(
    settings: Settings,
    *,
    follow: bool,
    from_beginning: bool,
    as_json: bool,
    segment: str | Iterable[str] | None = None,
    group: str | None = None,
    seeks: dict[int, int] | None = None,
    dedupe_capacity: int = DEDUPE_IDS,
    idle_seconds: float = IDLE_SECONDS,
    spec: topics.TopicSpec = topics.SEGMENT_EVENTS,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> TailResult:
    """Print segment events (or, with `spec` CONVERSATION_ASSIGNMENTS, chat assignment decisions) until idle for `idle_seconds` (or, with `follow`, until Ctrl-C / SIGTERM).

    Start position per partition: a `seeks` offset; else the group's committed offset; else the oldest
    retained event (`from_beginning`) or the end. With a group, the position reached is committed after
    every batch (and once at start, so events published between two runs are not skipped).
    """
    from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
    from kafka.errors import CommitFailedError, KafkaError

    def offset_and_metadata(offset: int) -> Any:  # (offset, metadata) before kafka-python 2.1, + leader_epoch since
        values = {"offset": offset, "metadata": "", "leader_epoch": -1}
        return OffsetAndMetadata(*(values[name] for name in OffsetAndMetadata._fields))

    err = err or sys.stderr
    segments = [segment] if isinstance(segment, str) else list(segment or ())
    printer = Printer(as_json=as_json, segments=segments, dedupe_capacity=dedupe_capacity, out=out, err=err)
    pending_seeks = dict(seeks or {})
    topic = spec.full_name(settings.topic_prefix)
    session_ms = max(3000, int(settings.session_timeout * 1000))
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=group,
            auto_offset_reset="earliest" if from_beginning else "latest",
            enable_auto_commit=False,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(1000, session_ms // 3),
        )
    except KafkaError as exc:  # no broker answers (the exception's type depends on the kafka-python version)
        raise TailError(f"cannot connect to {settings.broker}: {exc}") from None
    # next_offset: the offset to commit per owned partition (last handled + 1); committed: what was.
    next_offset: dict[Any, int] = {}
    committed: dict[Any, int] = {}
    joined = False

    class Listener(ConsumerRebalanceListener):
        # Runs on kafka-python's IO thread while the main thread waits in poll(): no blocking calls here.
        def on_partitions_revoked(self, revoked: Any) -> None:
            for tp in revoked:
                next_offset.pop(tp, None)
                committed.pop(tp, None)

        def on_partitions_assigned(self, assigned: Any) -> None:
            nonlocal joined
            if not joined:  # seeks apply to the first assignment only: later ones resume from commits
                for tp in assigned:
                    if tp.partition in pending_seeks:
                        consumer.seek(tp, pending_seeks.pop(tp.partition))
            joined = True

    def commit() -> None:
        """Synchronously commit, per owned partition, the offset after the last handled event."""
        if group is None:
            return
        todo = {tp: o for tp, o in next_offset.items() if committed.get(tp) != o}
        if not todo:
            return
        try:
            consumer.commit({tp: offset_and_metadata(o) for tp, o in todo.items()})
        except CommitFailedError as exc:
            # A rebalance took the partitions away: whoever gets them next (maybe this process, which then
            # skips what it printed by id) resumes from the last successful commit: at least once.
            print(f"segment-engine tail: commit failed during a rebalance ({exc}); events after the last "
                  "commit may be printed again", file=err, flush=True)
            return
        committed.update(todo)

    stop = False

    def on_sigterm(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    installed = False
    previous_sigterm: Any = None
    try:
        previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)  # stop cleanly: commit, leave the group
        installed = True
    except ValueError:  # not the main thread
        pass

    try:
        partitions = _partitions(consumer, topic)
        unknown = sorted(p for p in pending_seeks if p not in partitions)
        if unknown:
            raise TailError(f"--seek: {topic} has partitions 0-{max(partitions)}, not {unknown}")
        if group is None:
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            for tp in tps:
                if tp.partition in pending_seeks:
                    consumer.seek(tp, pending_seeks.pop(tp.partition))
            joined = True
        else:
            consumer.subscribe([topic], listener=Listener())
        started = time.monotonic()
        last_activity = started
        join_deadline = started + max(30.0, 3 * settings.session_timeout)
        while not stop:
            batch = consumer.poll(timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    if not printer.handle(record.partition, record.offset, record.value):
                        stop = True  # stdout closed
                        break
                    next_offset[tp] = record.offset + 1
                if stop:
                    break
            if stop:
                break
            if group is not None and joined:
                for tp in consumer.assignment():
                    if tp not in next_offset:  # pin where this consumer starts, before anything is printed
                        next_offset[tp] = consumer.position(tp)
            commit()
            now = time.monotonic()
            if batch:
                last_activity = now
            elif not follow:
                if not joined:
                    if now > join_deadline:
                        raise TailError(f"no partition assignment from group {group!r} within "
                                        f"{now - started:.0f}s")
                    last_activity = now
                elif now - last_activity >= idle_seconds:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        try:
            commit()  # what was printed before an interruption
        except Exception as exc:  # noqa: BLE001 - report, then close anyway
            print(f"segment-engine tail: final commit failed ({type(exc).__name__}: {exc}); "
                  "the last events may be printed again", file=err)
        consumer.close(autocommit=False)
        if installed:
            signal.signal(signal.SIGTERM, previous_sigterm if previous_sigterm is not None else signal.SIG_DFL)
    result = printer.result
    result.unapplied_seeks = pending_seeks
    print(result.summary(), file=err, flush=True)
    return result


def _partitions(consumer: Any, topic: str, timeout: float = 10.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        if time.monotonic() > deadline:
            raise TailError(f"topic {topic} does not exist (run `segment-engine topics create` or a worker)")
        time.sleep(0.2)


class Printer:
    """Turns consumed segment-events messages into output lines: filter, deduplicate, print, count."""

    def __init__(self, *, as_json: bool, segments: Iterable[str] = (), dedupe_capacity: int = DEDUPE_IDS,
                 out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.as_json = as_json
        self.segments = set(segments)
        self.dedupe = Deduplicator(dedupe_capacity)
        self.result = TailResult()
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def handle(self, partition: int, offset: int, value: bytes) -> bool:
        """Print one message unless filtered out, a duplicate or unreadable; False if stdout is gone (the
        message was not printed)."""
        try:
            event = orjson.loads(value)
            event_id = event.get("id")
            segment_id = event["data"].get("segment_id")
            line = value.decode() if self.as_json else format_line(partition, offset, event)
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, UnicodeDecodeError):
            self.result.unreadable += 1
            print(f"segment-engine tail: p{partition}@{offset} is not a segment event, skipped", file=self.err,
                  flush=True)
            return True
        if self.segments and segment_id not in self.segments:
            self.result.filtered += 1
            return True
        if event_id is not None and self.dedupe.seen(event_id):
            self.result.duplicates = self.dedupe.skipped
            return True
        try:
            print(line, file=self.out, flush=True)
        except BrokenPipeError:
            # The reader went away (`| head`): stop, and keep Python from failing again when it flushes at exit.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
            except (AttributeError, OSError, ValueError):
                pass
            return False
        self.result.printed += 1
        return True
