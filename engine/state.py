"""The record-state table: one partitioned RocksDB table (with a changelog) holding, per partition,
record states, a member index per segment, member counts, and which segment versions were applied.

Internal keys start with a NUL byte, so they sort before every record key (`workspace/type/id`) and
a record scan seeks past them. Writes happen inside the agent, on an event of the partition (Faust
routes them to that partition's RocksDB and changelog); reads take an explicit partition, so the HTTP
API can read without an event.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any, Iterable, Iterator, Mapping

import faust
import orjson
from faust.tables import TableManager

from engine.envelope import segment_key, split_record_key
from engine.membership import ENTERED, RecordState, Transition

APPLIED_KEY = b"\x00applied"  # {segment key: [version, removed]} this partition was synced to
POSITION_KEY = b"\x00position:"  # + topic: offset of the last message of that topic applied here
CLOCK_KEY = b"\x00clock"  # the partition's time (epoch ms), written when a tick moves it
SCHEDULE_PREFIX = b"\x00s"  # + due (8 bytes, big-endian) + record key  →  b""
TURNS_KEY = b"\x00turns"  # {"workspace/group": conversations this partition gave the group} (chat assignment)
COUNT_PREFIX = b"\x00n"  # + segment key → {"n": members in this partition, "at": {topic: [offset, phase]}}
MEMBER_PREFIX = b"\x00m"  # + segment key + NUL + record id  →  b"1"
REPAIR_KEY = b"\x00repair"  # local only: the partition was restored from its changelog and awaits StateStore.repair
FIRST_RECORD_KEY = b"\x01"
REPAIR_YIELD = 1_000  # keys a repair scan checks between two yields to the event loop
MEMBER_PREFIX_CACHE = 100_000  # segments whose member index prefix is kept built (then the cache starts over)

# A changelog replay after a crash can re-run a message whose count deltas already landed (a large
# message's changelog can span several record batches); the marker (source topic, offset, phase) makes a
# count update idempotent. Offsets only compare within a topic, so each count keeps the last marker per
# topic. Phase 0 = backfill, 1 = the message itself.
Marker = tuple[str, int, int]
Scoped = tuple[str, str, str, list[Transition]]  # workspace, object type, record id, its transitions


# The first two bytes of the bookkeeping keys: no record, member index, count or schedule key starts so.
BOOKKEEPING_STARTS = frozenset(key[:2] for key in (APPLIED_KEY, CLOCK_KEY, TURNS_KEY, REPAIR_KEY, POSITION_KEY))


def is_bookkeeping(key: bytes) -> bool:
    return key[:2] in BOOKKEEPING_STARTS


def member_prefix(seg_key: str) -> bytes:
    return MEMBER_PREFIX + seg_key.encode() + b"\x00"


def schedule_key(due: int, record: bytes) -> bytes:
    """Schedule entries sort by due time, so the due ones are a prefix scan from the start."""
    return SCHEDULE_PREFIX + due.to_bytes(8, "big") + record


class PartitionWrites:
    """One message's writes to one partition's RocksDB, kept until the agent commits them at once: one
    RocksDB write batch (atomic) and one changelog record batch, instead of a Faust table write (a
    RocksDB put plus a changelog send, about 100 µs) per key. Reads see the pending writes."""

    __slots__ = ("db", "partition", "pending", "docs", "below")

    def __init__(self, db: Any, partition: int, below: "PartitionWrites | None" = None) -> None:
        self.db = db
        self.partition = partition
        self.pending: dict[bytes, bytes | None] = {}  # None: delete
        # Count documents changed since the group began, kept decoded until `seal` (a busy segment's count
        # changes with many messages of a group: one JSON round trip per group instead of per message).
        self.docs: dict[bytes, dict[str, Any]] = {}
        # The previous group's writes to this partition while their commit is in flight (the agent applies
        # the next fetch meanwhile): read through, as they will be in RocksDB once that commit lands.
        self.below = below

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        if key in self.docs:
            return orjson.dumps(self.docs[key])
        writes: PartitionWrites | None = self
        while writes is not None:
            if key in writes.pending:
                value = writes.pending[key]
                return default if value is None else value
            writes = writes.below
        value = self.db.get(key)
        return default if value is None else value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.docs.pop(key, None)
        self.pending[key] = value

    def __delitem__(self, key: bytes) -> None:
        self.docs.pop(key, None)
        self.pending[key] = None

    def doc(self, key: bytes) -> dict[str, Any] | None:
        """A JSON document's value as pending (decoded once per group), None if absent."""
        doc = self.docs.get(key)
        if doc is None:
            raw = self.get(key)
            if raw is None:
                return None
            doc = orjson.loads(raw)
        return doc

    def set_doc(self, key: bytes, doc: dict[str, Any]) -> None:
        self.docs[key] = doc

    def seal(self) -> None:
        """Serialise the decoded documents into the pending writes (before they are committed)."""
        for key, doc in self.docs.items():
            self.pending[key] = orjson.dumps(doc)
        self.docs.clear()

    def changelog_order(self) -> list[tuple[bytes, bytes | None]]:
        """The pending keys as the changelog gets them: the partition's bookkeeping (applied positions,
        synced segment versions, clock, group turns) last. A group's records can span several record
        batches and a crash can leave only the first ones in the changelog; a worker restoring from it
        must then not find a position that says the group's messages were applied (it re-reads them) and
        derived keys are repaired from the record states (see StateStore.repair)."""
        first: list[tuple[bytes, bytes | None]] = []
        last: list[tuple[bytes, bytes | None]] = []
        for item in self.pending.items():
            (last if item[0][:2] in BOOKKEEPING_STARTS else first).append(item)
        return first + last

    def apply_locally(self) -> None:
        """Write the pending keys to RocksDB in one atomic batch."""
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for key, value in self.pending.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self.db.write(batch)


class RecordStateTable(faust.Table):
    """Faust's table, marking in RocksDB each partition a recovery wrote changelog records to: its derived
    keys may come from a commit whose records reached the changelog only in part, and are repaired before
    the partition answers or applies anything (StateStore.repair). The mark is in the partition's own
    RocksDB, not in memory, so a worker killed before its repair committed repairs on its next start
    even when that start restores nothing."""

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        events = list(batch)
        super().apply_changelog_batch(events)
        for partition in {event.message.partition for event in events}:
            self.data._db_for_partition(partition).put(REPAIR_KEY, b"1")


class PromptTableManager(TableManager):
    """Faust's table manager without the second it sleeps before starting the tables (so that tables
    declared late can still register). The engine adds its one table before the app starts, so that
    second only delayed every worker start and every restart after a crash."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class OneDatabase:
    """What StateStore reads of Faust's table, over one RocksDB database serving every partition: the
    processor and the store without Faust (benchmarks, unit tests)."""

    offset_key = b"__faust\x00offset__"  # Faust's key for the changelog offset a partition was restored to

    def __init__(self, db: Any) -> None:
        self.db = db
        self.data = self

    def _db_for_partition(self, partition: int) -> Any:
        return self.db


class StateStore:
    def __init__(self, table: Any) -> None:
        self.table = table
        self.writes = PartitionWrites(None, -1)  # the partition of the message in progress (see begin)
        self.open: dict[int, PartitionWrites] = {}  # partition -> writes not committed yet
        self.landing: dict[int, PartitionWrites] = {}  # partition -> ended writes whose commit is in flight
        # segment -> (its count key, its member index prefix): built once, not per flip
        self.member_prefixes: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}
        self.count_cache: dict[int, tuple[tuple[int, int], dict[str, int]]] = {}  # see counts

    def begin(self, partition: int) -> "PartitionWrites":
        """Collect a message's writes to `partition`, after those of earlier messages not committed yet
        (the agent commits several messages at once); reads inside the agent see them all."""
        writes = self.open.get(partition)
        if writes is None:
            writes = self.open[partition] = PartitionWrites(self._db(partition), partition,
                                                            self.landing.get(partition))
        self.writes = writes
        return writes

    def end(self) -> list["PartitionWrites"]:
        """Hand over every partition's uncommitted writes to a commit; reads go on seeing them (through
        `landing`, each partition's newest handed-over writes, which read through the older ones) until
        their commit calls `landed`. Commits land in the order their groups were handed over."""
        for writes in self.open.values():
            writes.seal()
        ended = [w for w in self.open.values() if w.pending]
        self.open = {}
        self.writes = PartitionWrites(None, -1)
        self.landing.update((w.partition, w) for w in ended)
        return ended

    def landed(self, ended: list["PartitionWrites"]) -> None:
        """A commit of `ended` wrote them to RocksDB: reads find them there now."""
        for writes in ended:
            if self.landing.get(writes.partition) is writes:
                del self.landing[writes.partition]
        for writes in [*self.open.values(), *self.landing.values()]:
            below = writes
            while below.below is not None:
                if below.below in ended:
                    below.below = None
                    break
                below = below.below

    def discard(self) -> list["PartitionWrites"]:
        """Forget every uncommitted write, open or landing (a crashed agent: its messages are re-read)."""
        dropped = [*self.landing_chain(), *self.end()]
        self.landing = {}
        return dropped

    def landing_chain(self) -> list["PartitionWrites"]:
        """Every handed-over partition's writes not landed yet (each partition's newest and those below)."""
        chain = []
        for writes in self.landing.values():
            below: PartitionWrites | None = writes
            while below is not None:
                chain.append(below)
                below = below.below
        return chain

    # ---- writes: inside the agent ----------------------------------------------------------------

    def load(self, key: bytes) -> RecordState | None:
        raw = self.writes.get(key)
        return None if raw is None else RecordState.from_bytes(raw)

    def write(self, marker: Marker, membership: Iterable[Scoped], states: Iterable[tuple[bytes, RecordState]],
              serialised: Mapping[bytes, bytes] | None = None) -> None:
        """Member index, counts, schedule and record states of one message (the order no longer matters:
        a message's writes reach RocksDB in one write batch and the changelog in one record batch).
        `serialised` holds states already turned into bytes (by the size check), not serialised twice."""
        deltas: dict[bytes, int] = defaultdict(int)  # count key -> members gained
        table = self.writes
        prefixes = self.member_prefixes
        for workspace, object_type, record_id, transitions in membership:
            record = record_id.encode()
            for t in transitions:
                scoped = (workspace, object_type, t.segment_id)
                found = prefixes.get(scoped)
                if found is None:
                    if len(prefixes) > MEMBER_PREFIX_CACHE:
                        prefixes.clear()
                    seg_key = segment_key(*scoped)
                    found = prefixes[scoped] = (COUNT_PREFIX + seg_key.encode(), member_prefix(seg_key))
                count_key, prefix = found
                index_key = prefix + record
                if t.event_type == ENTERED:
                    table[index_key] = b"1"
                    deltas[count_key] += 1
                else:
                    del table[index_key]
                    deltas[count_key] -= 1
        if deltas:
            self._add_counts(marker, deltas)
        for key, state in states:
            if state.due != state.scheduled:  # move the record's entry in the schedule
                if state.scheduled is not None:
                    del table[schedule_key(state.scheduled, key)]
                if state.due is not None:
                    table[schedule_key(state.due, key)] = b""
                state.scheduled = state.due
            raw = serialised.get(key) if serialised else None
            table[key] = raw if raw is not None else state.to_bytes()

    def _add_counts(self, marker: Marker, deltas: dict[bytes, int]) -> None:
        """One small key per segment (a per-partition document of every segment's count cost a 10,000-entry
        JSON round trip per message)."""
        topic, offset, phase = marker
        writes = self.writes
        for key, delta in deltas.items():
            doc = writes.doc(key) or {"n": 0, "at": {}}
            last = doc["at"].get(topic)
            if last is not None and (last[0], last[1]) >= (offset, phase):
                continue
            doc["n"] += delta
            doc["at"][topic] = [offset, phase]
            writes.set_doc(key, doc)

    def drop_segment(self, partition: int, seg_key: str, marker: Marker) -> None:
        """Forget a removed segment's members in this partition (index entries and count), those committed
        and those still pending (a repair may just have written some)."""
        prefix = member_prefix(seg_key)
        pending = [key for key, value in self.writes.pending.items() if value is not None and key.startswith(prefix)]
        for key in [*self._prefix_keys(partition, prefix), *pending]:
            del self.writes[key]
        del self.writes[COUNT_PREFIX + seg_key.encode()]

    def position(self, topic: str) -> int | None:
        raw = self.writes.get(POSITION_KEY + topic.encode())
        return None if raw is None else int(raw)

    def set_position(self, topic: str, offset: int) -> None:
        """Written after everything a message changed: offsets up to here need no replay."""
        self.writes[POSITION_KEY + topic.encode()] = str(offset).encode()

    def set_clock(self, now: int) -> None:
        self.writes[CLOCK_KEY] = str(now).encode()

    def turns(self) -> dict[str, int]:
        raw = self.writes.get(TURNS_KEY)
        return orjson.loads(raw) if raw else {}

    def set_turns(self, turns: dict[str, int]) -> None:
        """Written after the contacts' states: a crash in between replays the message, which finds its
        conversations decided already, so a group never hands out the same turn twice."""
        self.writes[TURNS_KEY] = orjson.dumps(turns)

    def applied(self) -> dict[str, list[Any]]:
        raw = self.writes.get(APPLIED_KEY)
        return orjson.loads(raw) if raw else {}

    def set_applied(self, stamps: dict[str, list[Any]]) -> None:
        self.writes[APPLIED_KEY] = orjson.dumps(stamps)

    # ---- reads: by partition, any context ---------------------------------------------------------

    def _db(self, partition: int) -> Any:
        return self.table.data._db_for_partition(partition)  # Faust keeps one RocksDB per partition

    def records(self, partition: int, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Every stored record (key, raw state) of a partition whose key starts with `prefix`, in key order."""
        offset_key = self.table.data.offset_key
        for key, raw in self._db(partition).items(from_key=prefix or FIRST_RECORD_KEY):
            if not key.startswith(prefix):
                return
            if key != offset_key:
                yield key, raw

    def get(self, partition: int, key: bytes) -> RecordState | None:
        raw = self._db(partition).get(key)
        return None if raw is None else RecordState.from_bytes(raw)

    def applied_position(self, partition: int, topic: str) -> int | None:
        """`position` of a given partition, including messages applied but not committed yet."""
        writes = self.open.get(partition) or self.landing.get(partition)
        key = POSITION_KEY + topic.encode()
        raw = writes.get(key) if writes is not None else self._db(partition).get(key)
        return None if raw is None else int(raw)

    def record_estimate(self, partition: int) -> int:
        """RocksDB's estimate of the partition's keys (records plus a few internal keys), for progress."""
        try:
            return int(self._db(partition).property_int_value("rocksdb.estimate-num-keys") or 0)
        except Exception:  # noqa: BLE001 - an estimate only
            return 0

    def clock(self, partition: int) -> int | None:
        raw = self._db(partition).get(CLOCK_KEY)
        return None if raw is None else int(raw)

    def due(self, partition: int, now: int, limit: int) -> list[bytes]:
        """Keys of up to `limit` records of a partition whose schedule entry is due at `now`, earliest first."""
        found: list[bytes] = []
        for key in self._prefix_keys(partition, SCHEDULE_PREFIX):
            if int.from_bytes(key[2:10], "big") > now or len(found) >= limit:
                break
            found.append(key[10:])
        return found

    def next_due(self, partition: int) -> int | None:
        for key in self._prefix_keys(partition, SCHEDULE_PREFIX):
            return int.from_bytes(key[2:10], "big")
        return None

    def counts(self, partition: int) -> dict[str, int]:
        """Segment key → members in this partition, for every segment with a count here. Kept until the
        partition's RocksDB is written again (its sequence number moves): every scrape of /metrics and
        every count query would otherwise parse one document per segment (10,000 per partition)."""
        db = self._db(partition)
        stamp = (id(db), db.latest_sequence_number())
        cached = self.count_cache.get(partition)
        if cached is None or cached[0] != stamp:
            counts = {key[len(COUNT_PREFIX):].decode(): orjson.loads(db[key])["n"]
                      for key in self._prefix_keys(partition, COUNT_PREFIX)}
            cached = self.count_cache[partition] = (stamp, counts)
        return dict(cached[1])

    def members(self, partition: int, seg_key: str, after: str | None, limit: int) -> list[str]:
        """Up to `limit` member record ids of a segment in this partition, sorted, strictly after `after`."""
        prefix = member_prefix(seg_key)
        start = prefix + after.encode() + b"\x00" if after is not None else prefix
        found: list[str] = []
        for key in self._prefix_keys(partition, prefix, start):
            found.append(key[len(prefix):].decode())
            if len(found) >= limit:
                break
        return found

    def _prefix_keys(self, partition: int, prefix: bytes, start: bytes | None = None) -> Iterator[bytes]:
        for key in self._db(partition).keys(from_key=start or prefix):
            if not key.startswith(prefix):
                return
            yield key

    async def repair(self, partition: int) -> int:
        """Make the partition's derived keys agree with its record states (the open writes must be this
        partition's): every member in the member index and no entry for a non-member, every count the
        number of members, every due record in the schedule and no stale entry. Streams over the keys
        with point reads, so memory stays flat but for one counter per segment; returns how many keys
        it fixed."""
        writes, fixed, checked = self.writes, 0, 0
        counts: dict[str, int] = defaultdict(int)
        # A record keeps the ids of removed segments until it next changes; the partition's own record of
        # what it synced says which are gone here (their index and count were dropped).
        gone = {key for key, (_, removed) in self.applied().items() if removed}

        async def pace() -> None:
            nonlocal checked
            checked += 1
            if checked % REPAIR_YIELD == 0:
                await asyncio.sleep(0)

        for key, raw in self.records(partition):
            await pace()
            state = RecordState.from_bytes(raw)
            workspace, object_type, record_id = split_record_key(key.decode())
            for segment_id in state.members:
                seg_key = segment_key(workspace, object_type, segment_id)
                if seg_key in gone:
                    continue
                counts[seg_key] += 1
                index_key = member_prefix(seg_key) + record_id.encode()
                if writes.get(index_key) is None:
                    writes[index_key] = b"1"
                    fixed += 1
            if state.due is not None and writes.get(schedule_key(state.due, key)) is None:
                writes[schedule_key(state.due, key)] = b""
                fixed += 1
        for index_key in list(self._prefix_keys(partition, MEMBER_PREFIX)):
            await pace()
            seg_key, record_id = index_key[len(MEMBER_PREFIX):].split(b"\x00", 1)
            workspace, object_type, segment_id = split_record_key(seg_key.decode())
            raw = writes.get(f"{workspace}/{object_type}/".encode() + record_id)
            if raw is None or segment_id not in RecordState.from_bytes(raw).members or seg_key.decode() in gone:
                del writes[index_key]
                fixed += 1
        for entry in list(self._prefix_keys(partition, SCHEDULE_PREFIX)):
            await pace()
            raw = writes.get(entry[10:])
            if raw is None or RecordState.from_bytes(raw).due != int.from_bytes(entry[2:10], "big"):
                del writes[entry]
                fixed += 1
        # Every count is the number of members now, and forgets its markers: they said which messages its
        # deltas covered, but the states may lack some of those messages (they are re-read, and their
        # transitions must count) and hold others whose count update never arrived (counted above).
        stored = {key[len(COUNT_PREFIX):].decode() for key in self._prefix_keys(partition, COUNT_PREFIX)}
        for seg_key in stored | set(counts):
            count_key = COUNT_PREFIX + seg_key.encode()
            raw = writes.get(count_key)
            doc: dict[str, Any] = orjson.loads(raw) if raw else {"n": 0, "at": {}}
            if doc["n"] != counts.get(seg_key, 0):
                fixed += 1
            if doc != {"n": counts.get(seg_key, 0), "at": {}}:
                writes[count_key] = orjson.dumps({"n": counts.get(seg_key, 0), "at": {}})
        del writes[REPAIR_KEY]  # in the same write batch as the fixes
        return fixed

    def needs_repair(self, partition: int) -> bool:
        """Restored from the changelog and not repaired since (committed state)."""
        return self._db(partition).get(REPAIR_KEY) is not None
