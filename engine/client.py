"""Publishing to the engine from Python: record changes, behavioural events, segment definitions, imports
and (manual clock) time. Used by upstream systems, the CLI, the demo, the tests and the bench.

Why a helper rather than a bare KafkaProducer:

- **Keys and partitions.** A record's changes, events, state and membership events all live on the
  partition its key `workspace/object_type/record_id` hashes to (Kafka's default murmur2 partitioner,
  `engine.intake.partition_for`). A record.changes / record.events batch may only carry records of the
  partition it is sent to, so batches are formed per partition.
- **Validation before sending.** Every message is checked against the engine's JSON Schemas
  (`schemas/`, the validators of `engine.schemas`), so a malformed change raises `InvalidMessage` in the
  caller instead of becoming a dead letter later.
- **Delivery errors surface.** kafka-python's `send()` is asynchronous and its `flush()` returns normally
  even when sends failed; `Publisher.flush()` (and `close()`, and leaving a `batch()` block) raises
  `PublishFailed` instead.
- **Versions.** Each change carries a version that must grow per record; `Versions` and `version_from`
  make one for upstreams that have no row version.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence, TypeVar

import fastjsonschema
import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.future import Future

import topics
from engine.envelope import encode, envelope, record_key, segment_key
from engine.errors import SchemaViolation
from engine.intake import partition_for
from engine.schemas import MESSAGE_SCHEMAS, validator
from engine.settings import Settings

Change = Mapping[str, Any]  # {"op", "object_type", "id", "version", "fields"}
BehaviourEvent = Mapping[str, Any]  # {"id", "object_type", "record_id", "name", "at", "properties"}
T = TypeVar("T")
IMPORT_CHUNK = 5000  # record ids per segment.import message
MAX_BATCH = 10_000  # schemas/record-changes.json and record-events.json: maxItems
_PRUNE_EVERY = 10_000  # tracked futures before acknowledged ones are dropped (bounds memory between flushes)
_KEPT_ERRORS = 10  # distinct delivery errors a PublishFailed carries


class InvalidMessage(SchemaViolation, ValueError):
    """A change, event or message the engine would dead-letter (`code`: schema_violation or
    message_too_large). Raised in the caller before anything of it is sent, so the bad input is found
    where it was made, not later in the dead-letter topic."""


class PublishFailed(Exception):
    """The broker did not take some messages: sends since the last flush failed (or were not acknowledged
    in time), or the broker cannot be reached at all.

    `failed` counts the messages not delivered, `total` the messages checked, `errors` keeps the first few
    distinct errors and `first` the first one. Retrying everything published since the last successful
    flush is safe: a repeated change is ignored as stale, a repeated event id as a duplicate.
    """

    def __init__(self, summary: str, *, failed: int, total: int, errors: Sequence[BaseException]) -> None:
        super().__init__(summary)
        self.failed = failed
        self.total = total
        self.errors = list(errors)
        self.first: BaseException | None = self.errors[0] if self.errors else None


class Versions:
    """Strictly increasing record versions for this process: epoch microseconds, bumped past the last one.

    `next()` returns max(now in µs, last + 1), so values grow even when called many times within one
    microsecond or when the wall clock steps back (NTP); they stay below 2**53, exact in JSON readers that
    use doubles. Prefer upstream's own row version or `updated_at` (see `version_from`): those order the
    writes of one record across processes, which a per-process counter cannot. Use `Versions` when a
    record's changes are published by one process at a time; `after` resumes above a version already used
    (e.g. stored before a restart). Thread-safe.
    """

    def __init__(self, after: int = 0, clock: Callable[[], int] | None = None) -> None:
        self._last = after
        self._clock = clock or _now_us
        self._lock = threading.Lock()

    def next(self) -> int:
        now = self._clock()
        with self._lock:
            self._last = max(now, self._last + 1)
            return self._last

    __call__ = next

    @property
    def last(self) -> int:
        """The last version handed out (or `after`)."""
        return self._last


def _now_us() -> int:
    return time.time_ns() // 1000


_UNIT_US = {"s": 1_000_000, "ms": 1_000, "us": 1}


def version_from(when: datetime | str | int | float, *, unit: Literal["s", "ms", "us"] = "ms") -> int:
    """A record version from upstream's `updated_at`: epoch microseconds, the scale `Versions` uses.

    Accepts a datetime or an ISO-8601 string (naive means UTC, as everywhere in the engine) or an epoch
    number in `unit` (default ms, the engine's convention; pass unit="s" for `time.time()`). Two writes
    of one record with the same timestamp get the same version, and the second is ignored as stale, so
    the timestamp must be at least as fine as the record's write rate.
    """
    if isinstance(when, bool):
        raise TypeError("version_from: a bool is not a time")
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        delta = when - _EPOCH
        us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    elif isinstance(when, (int, float)):
        if unit not in _UNIT_US:
            raise ValueError(f"version_from: unit must be 's', 'ms' or 'us', got {unit!r}")
        us = when * _UNIT_US[unit] if isinstance(when, int) else round(when * _UNIT_US[unit])
    else:
        raise TypeError(f"version_from: expected a datetime, ISO-8601 string or epoch number, got {type(when).__name__}")
    if us < 0:
        raise ValueError(f"version_from: {when!r} is before 1970; versions are >= 0")
    return int(us)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Publisher:
    """A kafka-python producer that knows the engine's topics, keys, batch shape and schemas.

    Thread-safe for publishing (like KafkaProducer); `flush()` reports every send made before it began.
    `versions`: fill the version of changes that have none (opt-in; see `Versions`). `validate=False`
    skips the schema checks for trusted hot paths (message sizes are still checked). `producer_config`
    overrides KafkaProducer settings (timeouts, compression, security); `producer` brings your own.
    """

    def __init__(
        self,
        settings: Settings,
        source: str = "segment-engine-cli",
        *,
        validate: bool = True,
        versions: Versions | None = None,
        producer_config: Mapping[str, Any] | None = None,
        producer: KafkaProducer | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.validate = validate
        self.versions = versions
        self.records_topic = topics.RECORD_CHANGES.full_name(settings.topic_prefix)
        self.behaviour_topic = topics.BEHAVIOUR_EVENTS.full_name(settings.topic_prefix)
        self.definitions_topic = topics.SEGMENT_DEFINITIONS.full_name(settings.topic_prefix)
        self.conversations_topic = topics.CONVERSATIONS.full_name(settings.topic_prefix)
        self.assignment_rules_topic = topics.ASSIGNMENT_RULES.full_name(settings.topic_prefix)
        self._lock = threading.Lock()
        self._futures: list[Future] = []
        self._sent = 0  # messages since the last flush
        self._prune_at = _PRUNE_EVERY
        self._checked_workspaces: set[str] = set()
        self._checked_topics: set[str] = set()
        self._check_envelope(None)
        if producer is None:
            config: dict[str, Any] = {
                "bootstrap_servers": settings.bootstrap_servers,
                "linger_ms": 5,
                "max_request_size": settings.max_message_bytes * 2,
                "acks": "all",
            }
            config.update(producer_config or {})
            try:
                producer = KafkaProducer(**config)
            except KafkaError as exc:
                raise PublishFailed(f"cannot connect to Kafka at {settings.broker!r}: {_error_text(exc)}",
                                    failed=0, total=0, errors=[exc]) from exc
        self.producer = producer

    # -- record changes -------------------------------------------------------------------------------

    def publish_change(self, workspace: str, change: Change) -> None:
        """One change per message (type record.change). Raises InvalidMessage before sending."""
        self._check_workspace(workspace)
        item = self._change_item(change)
        key = record_key(workspace, item["object_type"], item["id"])
        message = envelope("record.change", item, workspace=workspace, source=self.source)
        self._send(self.records_topic, message, key=key, partition=partition_for(key, self.settings.partitions))

    def publish_batches(self, workspace: str, changes: Iterable[Change], batch_size: int) -> int:
        """Group changes by partition into record.changes messages of at most `batch_size`, each record's
        changes in input order; returns the messages sent. Every change is validated before the first is
        sent (the iterable is read into memory; for streams use `batch()`)."""
        _check_size(batch_size)
        self._check_workspace(workspace)
        items = [self._change_item(c, f"#{i}") for i, c in enumerate(changes)]
        sent = 0
        key_of = lambda c: record_key(workspace, c["object_type"], c["id"])  # noqa: E731
        for partition, chunk in group_by_partition(items, key_of, self.settings.partitions, batch_size):
            sent += self._send_batch("record.changes", workspace, partition, chunk)
        return sent

    # -- behavioural events ---------------------------------------------------------------------------

    def publish_event(self, workspace: str, event: BehaviourEvent) -> None:
        """One behavioural event per message (type record.event)."""
        self.publish_events(workspace, [event])

    def publish_events(self, workspace: str, events: Iterable[BehaviourEvent], batch_size: int = 1) -> int:
        """Behavioural events: one per record.event message, or record.events batches per partition;
        returns the messages sent. All events are validated before the first is sent."""
        _check_size(batch_size)
        self._check_workspace(workspace)
        items = [self._event_item(e, f"#{i}") for i, e in enumerate(events)]
        sent = 0
        key_of = lambda e: record_key(workspace, e["object_type"], e["record_id"])  # noqa: E731
        for partition, chunk in group_by_partition(items, key_of, self.settings.partitions, batch_size):
            if batch_size == 1:
                message = envelope("record.event", chunk[0], workspace=workspace, source=self.source)
                self._send(self.behaviour_topic, message, key=key_of(chunk[0]), partition=partition)
                sent += 1
            else:
                sent += self._send_batch("record.events", workspace, partition, chunk)
        return sent

    # -- high volume ----------------------------------------------------------------------------------

    def batch(self, workspace: str, size: int = 100, *, timeout: float | None = None) -> "Batch":
        """A per-partition batcher for high volume: `with publisher.batch("acme") as b: b.upsert(...)`.
        `timeout` bounds its flushes (seconds, see `flush`). See `Batch`."""
        return Batch(self, workspace, size, timeout=timeout)

    # -- time, segments, imports, raw ----------------------------------------------------------------

    def set_clock(self, now_ms: int) -> None:
        """Manual clock: move every partition's time to `now_ms` (it never moves back) and run what is due."""
        message = envelope("engine.tick", {"now": now_ms}, source=self.source)
        for partition in range(self.settings.partitions):
            self._send(self.records_topic, message, key=None, partition=partition)

    def publish_raw(self, value: bytes, key: bytes | None = None, partition: int | None = None) -> None:
        """Put arbitrary bytes on the record-change topic, unchecked (tests, replays of dead letters)."""
        self._produce(self.records_topic, value, key, partition)

    def define_segment(self, workspace: str, segment: Mapping[str, Any]) -> dict[str, Any]:
        """Publish a segment.defined message; the version defaults to the current time in ms."""
        self._check_workspace(workspace)
        data = dict(segment)
        data.setdefault("version", int(time.time() * 1000))
        data.setdefault("status", "active")
        key = segment_key(workspace, data["object_type"], data["id"])
        self._send(self.definitions_topic, envelope("segment.defined", data, workspace=workspace, source=self.source),
                   key=key, partition=None)
        return data

    def remove_segment(self, workspace: str, object_type: str, segment_id: str, version: int | None = None) -> None:
        """Publish a segment.removed message; the version defaults to the current time in ms."""
        self._check_workspace(workspace)
        data = {"id": segment_id, "object_type": object_type, "version": version or int(time.time() * 1000)}
        key = segment_key(workspace, object_type, segment_id)
        self._send(self.definitions_topic, envelope("segment.removed", data, workspace=workspace, source=self.source),
                   key=key, partition=None)

    def import_members(
        self, workspace: str, object_type: str, segment_id: str, record_ids: Iterable[str], *, add: bool = True,
        segment_version: int | None = None,
    ) -> int:
        """Add ids to (or remove them from) a static segment: segment.import messages grouped by partition;
        returns the ids sent."""
        self._check_workspace(workspace)
        sent = 0
        key_of = lambda rid: record_key(workspace, object_type, rid)  # noqa: E731
        for partition, ids in group_by_partition(record_ids, key_of, self.settings.partitions, IMPORT_CHUNK):
            data: dict[str, Any] = {"object_type": object_type, "segment_id": segment_id,
                                    "mode": "add" if add else "remove", "record_ids": ids}
            if segment_version is not None:
                data["segment_version"] = segment_version
            message = envelope("segment.import", data, workspace=workspace, source=self.source)
            self._send(self.records_topic, message, key=key_of(ids[0]), partition=partition)
            sent += len(ids)
        return sent

    # -- chat ---------------------------------------------------------------------------------------

    def publish_conversation(self, workspace: str, conversation_id: str, contact_id: str,
                             at: str | int | None = None) -> None:
        """What a chat system publishes when a conversation opens: keyed by the contact, so the worker that
        owns the contact decides it. The engine answers on conversation-assignments."""
        self._check_workspace(workspace)
        data: dict[str, Any] = {"conversation_id": conversation_id, "contact_id": contact_id}
        if at is not None:
            data["at"] = at
        key = record_key(workspace, "contact", contact_id)
        self._send(self.conversations_topic, envelope("conversation.created", data, workspace=workspace,
                                                      source=self.source),
                   key=key, partition=partition_for(key, self.settings.partitions))

    def set_assignment_rules(self, workspace: str, doc: Mapping[str, Any]) -> int:
        """Replace a workspace's chat assignment rules (`{"rules": [...], "groups": {...}}`); returns the
        version. Unlike the HTTP API this cannot check that the segments exist (see README)."""
        self._check_workspace(workspace)
        version = int(time.time() * 1000)
        data = {"rules": list(doc.get("rules", [])), "groups": dict(doc.get("groups", {})), "version": version,
                "updated_by": None}
        self._send(self.assignment_rules_topic, envelope("assignment.rules", data, workspace=workspace,
                                                         source=self.source), key=workspace, partition=None)
        return version

    # -- delivery -------------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every message sent so far is acknowledged or failed; raise PublishFailed if any failed.

        Without `timeout` this waits at most about the producer's `delivery_timeout_ms` (default 120 s),
        after which kafka-python fails what it could not deliver. With `timeout` (seconds), messages not
        acknowledged by then raise PublishFailed too; their final outcome is reported by a later flush.
        """
        with self._lock:
            futures, self._futures = self._futures, []
            total, self._sent = self._sent, 0
            self._prune_at = _PRUNE_EVERY
        timed_out = False
        try:
            self.producer.flush(timeout=timeout)
        except KafkaTimeoutError:
            timed_out = True
        pending: list[Future] = []
        failed: list[Future] = []
        for f in futures:  # one look per future: it may complete while we look
            if not f.is_done:
                pending.append(f)
            elif f.exception is not None:
                failed.append(f)
        if pending:  # their outcome is reported by a later flush
            with self._lock:
                self._futures.extend(pending)
                self._sent += len(pending)
        errors = _distinct(f.exception for f in failed)
        if timed_out:
            raise PublishFailed(
                f"{len(pending)} of {total} message(s) not acknowledged within {timeout}s"
                + (f", {len(failed)} failed; first error: {_error_text(errors[0])}" if failed else ""),
                failed=len(failed) + len(pending), total=total, errors=errors,
            )
        if failed:
            raise PublishFailed(f"{len(failed)} of {total} message(s) were not delivered; "
                                f"first error: {_error_text(errors[0])}",
                                failed=len(failed), total=total, errors=errors)

    def close(self, timeout: float | None = None) -> None:
        """Flush (raising PublishFailed like `flush`) and close the producer either way."""
        try:
            self.flush(timeout)
        finally:
            self.producer.close(timeout=timeout)

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        _finish(self.close, exc)

    # -- internals ------------------------------------------------------------------------------------

    def _change_item(self, change: Change, where: str = "") -> dict[str, Any]:
        """A checked copy of one change, with a version from `self.versions` if it has none and that is on."""
        item = dict(change) if isinstance(change, Mapping) else change
        if isinstance(item, dict) and item.get("version") is None:
            if self.versions is not None:
                item["version"] = self.versions.next()
            elif self.validate:
                key = f"{item.get('object_type', '?')}/{item.get('id', '?')}"
                raise InvalidMessage(f"invalid change {where + ' ' if where else ''}({key}): no version; give one "
                                     "(upstream's row version, or version_from(updated_at)), or publish with "
                                     "Publisher(..., versions=Versions())")
        if self.validate:
            _check_item("change.json", "change", item, where, ("object_type", "id"))
        return item  # type: ignore[return-value]

    def _event_item(self, event: BehaviourEvent, where: str = "") -> dict[str, Any]:
        item = dict(event) if isinstance(event, Mapping) else event
        if self.validate:
            _check_item("behaviour-event.json", "event", item, where, ("object_type", "record_id", "id"))
        return item  # type: ignore[return-value]

    def _check_envelope(self, workspace: str | None) -> None:
        """Workspace and source against schemas/envelope.json, once per value (they are the same for
        every message of a call, and a bad one should fail before anything is sent)."""
        if not self.validate:
            return
        try:
            validator("envelope.json")(envelope("record.change", None, workspace=workspace, source=self.source))
        except fastjsonschema.JsonSchemaException as exc:
            raise InvalidMessage(f"invalid envelope: {_problem(exc, 'envelope')}") from None

    def _check_workspace(self, workspace: str) -> None:
        if workspace not in self._checked_workspaces:
            self._check_envelope(workspace)
            self._checked_workspaces.add(workspace)

    def _send_batch(self, type_: Literal["record.changes", "record.events"], workspace: str, partition: int,
                    items: list[dict[str, Any]]) -> int:
        """One batch message for one partition, split in halves (order kept) while it is larger than the
        engine accepts; returns the messages sent."""
        changes = type_ == "record.changes"
        first = items[0]
        key = record_key(workspace, first["object_type"], first["id" if changes else "record_id"])
        message = envelope(type_, {"changes" if changes else "events": items}, workspace=workspace, source=self.source)
        value = self._encode(message)
        if len(value) > self.settings.max_message_bytes and len(items) > 1:
            half = len(items) // 2
            return (self._send_batch(type_, workspace, partition, items[:half])
                    + self._send_batch(type_, workspace, partition, items[half:]))
        self._check_bytes(value, type_)
        self._produce(self.records_topic if changes else self.behaviour_topic, value, key.encode(), partition)
        return 1

    def _send(self, topic: str, message: dict[str, Any], *, key: str | None, partition: int | None) -> None:
        value = self._encode(message)
        self._check_bytes(value, message["type"])
        self._produce(topic, value, key.encode() if key is not None else None, partition)

    def _encode(self, message: dict[str, Any]) -> bytes:
        """Validate the whole message with the schema the engine checks it against on intake, then encode."""
        if self.validate:
            try:
                validator(MESSAGE_SCHEMAS[message["type"]])(message)
            except fastjsonschema.JsonSchemaException as exc:
                raise InvalidMessage(f"invalid {message['type']} message: {_problem(exc, 'message')}") from None
        return encode(message)

    def _check_bytes(self, value: bytes, what: str) -> None:
        if len(value) > self.settings.max_message_bytes:
            raise InvalidMessage(f"{what} message is {len(value)} bytes, more than the engine accepts "
                                 f"(SEGMENT_ENGINE_MAX_MESSAGE_BYTES={self.settings.max_message_bytes})",
                                 code="message_too_large")

    def _produce(self, topic: str, value: bytes, key: bytes | None, partition: int | None) -> None:
        """send() and keep the future for flush(). An error raised by send() itself (no metadata within
        max_block_ms, producer closed, record too large) is raised at once as PublishFailed: blocking
        max_block_ms on every further send would only delay the news."""
        try:
            if topic not in self._checked_topics:
                self._check_partitions(topic)
            future = self.producer.send(topic, value=value, key=key, partition=partition)
        except KafkaError as exc:
            raise PublishFailed(f"could not send to {topic}: {_error_text(exc)}", failed=1, total=1,
                                errors=[exc]) from exc
        with self._lock:
            self._futures.append(future)
            self._sent += 1
            if len(self._futures) >= self._prune_at:
                # Drop acknowledged futures so memory stays bounded between flushes; the threshold doubles
                # with what is still pending, so this costs O(1) per send.
                self._futures = [f for f in self._futures if not (f.is_done and f.succeeded())]
                self._prune_at = max(_PRUNE_EVERY, 2 * len(self._futures))

    def _check_partitions(self, topic: str) -> None:
        """Refuse to publish when the topic's partition count differs from SEGMENT_ENGINE_PARTITIONS: every
        batch would be formed for the wrong partitions and dead-lettered as wrong_partition."""
        if topic in (self.records_topic, self.behaviour_topic, self.conversations_topic):
            actual = len(self.producer.partitions_for(topic) or ())
            if actual != self.settings.partitions:
                raise RuntimeError(f"topic {topic} has {actual} partitions but SEGMENT_ENGINE_PARTITIONS="
                                   f"{self.settings.partitions}; set it to {actual}")
        self._checked_topics.add(topic)


class Batch:
    """Changes and events of one workspace, grouped per partition into record.changes / record.events
    messages of at most `size` items (the engine applies a batch with one state write per record and one
    acknowledged produce).

    A partition's batch is sent as soon as it is full, the rest by `send()`, `flush()` or leaving the
    `with` block; leaving it also flushes the producer and raises PublishFailed if anything published
    since the last flush failed. Each record's changes (and events) keep their order: they share a
    partition and its batches go out in order. Changes and events go to their own topics, so a change and
    an event are not ordered relative to each other. If the block raises, what was added is still sent and
    flushed and the block's exception propagates (a delivery failure is added to it as a note); on
    KeyboardInterrupt or SystemExit nothing more is sent. Items are validated when added: InvalidMessage
    is raised by the call that adds a bad one. Not thread-safe: one batch per thread.
    """

    def __init__(self, publisher: Publisher, workspace: str, size: int = 100, *, timeout: float | None = None) -> None:
        _check_size(size)
        publisher._check_workspace(workspace)
        self.publisher = publisher
        self.workspace = workspace
        self.size = size
        self.timeout = timeout
        self.changes = 0  # added so far
        self.events = 0
        self.messages = 0  # sent so far
        self._partitions = publisher.settings.partitions
        self._pending_changes: dict[int, list[dict[str, Any]]] = {}
        self._pending_events: dict[int, list[dict[str, Any]]] = {}
        self._closed = False

    def upsert(self, object_type: str, id: str, fields: Mapping[str, Any], version: int | None = None) -> None:
        """Merge `fields` into the record (null clears a field). `version=None` takes the publisher's
        `versions`; without one it is an error."""
        self.add_change({"op": "upsert", "object_type": object_type, "id": id, "version": version,
                         "fields": dict(fields)})

    def delete(self, object_type: str, id: str, version: int | None = None) -> None:
        """Delete the record: it leaves every segment, and older changes arriving later stay ignored."""
        self.add_change({"op": "delete", "object_type": object_type, "id": id, "version": version})

    def add_change(self, change: Change) -> None:
        """A ready-made change dict ({"op", "object_type", "id", "version", "fields"})."""
        self._check_open()
        item = self.publisher._change_item(change, f"#{self.changes}")
        partition = partition_for(record_key(self.workspace, item["object_type"], item["id"]), self._partitions)
        self.changes += 1
        self._add(self._pending_changes, partition, item, "record.changes")

    def event(self, object_type: str, record_id: str, name: str, at: datetime | str | int,
              properties: Mapping[str, Any] | None = None, *, id: str) -> None:
        """A behavioural event. `id` is required because the engine drops a repeated id as a duplicate:
        a stable id (the order id, say) makes a retry harmless; a fresh random one would count twice.
        `at`: a datetime (naive = UTC), ISO-8601 string or epoch ms."""
        item: dict[str, Any] = {"id": id, "object_type": object_type, "record_id": record_id, "name": name,
                                "at": _epoch_ms(at) if isinstance(at, datetime) else at}
        if properties is not None:
            item["properties"] = dict(properties)
        self.add_event(item)

    def add_event(self, event: BehaviourEvent) -> None:
        """A ready-made event dict ({"id", "object_type", "record_id", "name", "at", "properties"})."""
        self._check_open()
        item = self.publisher._event_item(event, f"#{self.events}")
        partition = partition_for(record_key(self.workspace, item["object_type"], item["record_id"]), self._partitions)
        self.events += 1
        self._add(self._pending_events, partition, item, "record.events")

    def send(self) -> None:
        """Send every partly filled batch now, without waiting for acknowledgements."""
        for pending, type_ in ((self._pending_changes, "record.changes"), (self._pending_events, "record.events")):
            for partition in list(pending):
                self._send(pending, partition, type_)  # type: ignore[arg-type]

    def flush(self) -> None:
        """Send everything and wait for the broker; raises PublishFailed. For long-lived batches, call it
        periodically so a quiet partition's items do not wait for the block to end."""
        self.send()
        self.publisher.flush(self.timeout)

    def close(self) -> None:
        """`flush()` and refuse further items (what leaving the `with` block does)."""
        if not self._closed:
            self._closed = True
            self.flush()

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        _finish(self.close, exc)

    def _add(self, pending: dict[int, list[dict[str, Any]]], partition: int, item: dict[str, Any],
             type_: Literal["record.changes", "record.events"]) -> None:
        group = pending.setdefault(partition, [])
        group.append(item)
        if len(group) >= self.size:
            self._send(pending, partition, type_)

    def _send(self, pending: dict[int, list[dict[str, Any]]], partition: int,
              type_: Literal["record.changes", "record.events"]) -> None:
        items = pending.pop(partition)
        self.messages += self.publisher._send_batch(type_, self.workspace, partition, items)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this batch is closed; start a new one with publisher.batch(...)")


def batches_by_partition(
    workspace: str, changes: Iterable[Change], partitions: int, batch_size: int
) -> Iterator[tuple[int, list[Change]]]:
    """Yield (partition, changes) chunks, preserving each record's order within its partition."""
    return group_by_partition(
        changes, lambda c: record_key(workspace, c["object_type"], c["id"]), partitions, batch_size
    )


def group_by_partition(
    items: Iterable[T], key_of: Callable[[T], str], partitions: int, size: int
) -> Iterator[tuple[int, list[T]]]:
    """Chunks of at most `size` items whose keys hash to the same partition, in input order."""
    open_groups: dict[int, list[T]] = defaultdict(list)
    for item in items:
        p = partition_for(key_of(item), partitions)
        group = open_groups[p]
        group.append(item)
        if len(group) >= size:
            yield p, group
            open_groups[p] = []
    for p, group in open_groups.items():
        if group:
            yield p, group


# -- helpers ------------------------------------------------------------------------------------------

_SHOW_VALUE = {"type", "enum", "const", "minimum", "maximum", "minLength", "maxLength", "pattern"}


def _check_item(schema: str, kind: str, item: Any, where: str, key_fields: tuple[str, ...]) -> None:
    """One change or event against its item schema; the error names the item and the problem."""
    try:
        validator(schema)(item)
    except fastjsonschema.JsonSchemaException as exc:
        who = "/".join(str(item.get(f, "?")) for f in key_fields) if isinstance(item, Mapping) else ""
        label = " ".join(p for p in (kind, where, f"({who})" if who else "") if p)
        raise InvalidMessage(f"invalid {label}: {_problem(exc, kind)}") from None


def _problem(error: fastjsonschema.JsonSchemaException, root: str) -> str:
    """fastjsonschema's message with its `data` root renamed ('version must be integer (got "7")')."""
    exc: Any = error  # JsonSchemaValueException: message, name, value, rule (not in the stubs)
    name = exc.name or "data"
    rest = exc.message[len(name):] if exc.message.startswith(name) else f": {exc.message}"
    where = name[len("data."):] if name.startswith("data.") else root if name == "data" else name
    text = f"{where}{rest}"
    if exc.rule in _SHOW_VALUE and not isinstance(exc.value, (dict, list)):
        text += f" (got {_short(exc.value)})"
    return text


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_text(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text, name = str(exc), type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"  # kafka-python's errors already name themselves


def _distinct(errors: Iterable[BaseException | None]) -> list[BaseException]:
    """The first few different errors (a failed produce batch shares one exception among its records)."""
    kept: list[BaseException] = []
    seen: set[int] = set()
    for error in errors:
        if error is not None and id(error) not in seen:
            seen.add(id(error))
            kept.append(error)
            if len(kept) >= _KEPT_ERRORS:
                break
    return kept


def _check_size(size: int) -> None:
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"batch size must be between 1 and {MAX_BATCH} (the schemas' maxItems), got {size}")


def _epoch_ms(when: datetime) -> int:
    return version_from(when) // 1000


def _finish(close: Callable[[], None], exc: BaseException | None) -> None:
    """Leaving a `with` block: close (flush) normally; after an exception still deliver what was added, but
    let the block's exception win. KeyboardInterrupt and SystemExit skip the flush, which could block."""
    if exc is None:
        close()
    elif isinstance(exc, Exception):
        try:
            close()
        except Exception as error:  # noqa: BLE001 - reported on the exception that is propagating
            exc.add_note(f"and on leaving the block: {_error_text(error)}")


def read_assignment_rules(settings: Settings, workspace: str) -> dict[str, Any]:
    """The latest assignment.rules of a workspace on the compacted topic (`{"version": 0, ...}` if none)."""
    from kafka import KafkaConsumer, TopicPartition

    found: dict[str, Any] = {"version": 0, "rules": [], "groups": {}}
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        tp = TopicPartition(topics.ASSIGNMENT_RULES.full_name(settings.topic_prefix), 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        while True:
            batch = consumer.poll(timeout_ms=500)
            for record in batch.get(tp, []):
                message = orjson.loads(record.value)
                if message.get("workspace") == workspace and message["data"]["version"] > found["version"]:
                    found = {k: message["data"][k] for k in ("version", "rules", "groups")}
            if not batch and consumer.position(tp) >= end:
                return found
    finally:
        consumer.close()
