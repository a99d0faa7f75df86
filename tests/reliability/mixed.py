"""A seeded workload over every cause of a flip, for the fault scenarios of test_every_cause.py: record
changes, behavioural events feeding windowed and all-time aggregates, ticks of the manual clock moving
relative-date rules and windows, static imports, and segments that reference segments (to depth three).

The workload is a list of steps in publishing order. `publish_step` puts one on the broker and
`oracle_for` folds the published steps into tests/oracle.FullOracle. Deleted records are never re-created
and get no later events, so the answer does not depend on how the two input topics interleave."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

from engine.sample_data import COUNTRIES, STATUSES, TAGS
from tests.conftest import Harness
from tests.oracle import FullOracle
from tests.reliability.workload import WORKSPACE, Change, Rule, Stream

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
T0 = 1_788_220_800_000  # 2026-09-01T00:00:00Z: the manual clock stays before the wall clock
STATIC = "vips"


def _cond(field_: str, operator: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"field": field_, "operator": operator, "value": value, **extra}


def _all(*rules: Mapping[str, Any], combinator: str = "and", negate: bool = False) -> Rule:
    return {"combinator": combinator, "not": negate, "rules": list(rules)}


# Segment id -> rule (None: static). Each cause of a flip has its own segments, and the references mix them.
SEGMENTS: dict[str, Rule | None] = {
    "pl-de": _all(_cond("country", "in", ["PL", "DE"])),
    "buyers-30d": _all(_cond("events.purchase.count", ">=", 2, window="30 days")),
    "spenders": _all(_cond("events.purchase.sum.amount", ">=", 500)),
    "eur-week": _all(_cond("events.purchase.count", ">=", 1, window="7 days", where={"currency": "EUR"})),
    "visitors-3d": _all(_cond("events.page_view.last_seen", "withinLast", "3 days")),
    "aged": _all(_cond("created_at", "moreThanAgo", "30 days")),
    STATIC: None,
    "pl-buyers": _all(_cond("segment", "memberOf", "buyers-30d"), _cond("country", "=", "PL")),
    "vip-or-aged-spender": _all(_cond("segment", "memberOf", STATIC),
                                _all(_cond("segment", "memberOf", "aged"), _cond("segment", "memberOf", "spenders")),
                                combinator="or"),
    "quiet-valuable": _all(_cond("segment", "memberOf", "vip-or-aged-spender"),
                           _cond("segment", "notMemberOf", "visitors-3d")),
}


@dataclass(frozen=True)
class Step:
    """One publishing step: changes, behavioural events, a tick (`now`) or an import into the static segment."""

    kind: Literal["changes", "events", "tick", "import"]
    changes: tuple[Change, ...] = ()
    events: tuple[dict[str, Any], ...] = ()
    now: int = 0
    record_ids: tuple[str, ...] = ()
    add: bool = True


def define_segments(harness: Harness, version: int) -> dict[str, int]:
    """Publish SEGMENTS (static ones without a rule) at one version; segment id -> version."""
    for segment_id, rule in SEGMENTS.items():
        data: dict[str, Any] = {"id": segment_id, "object_type": "contact", "name": segment_id, "version": version}
        if rule is None:
            data["kind"] = "static"
        else:
            data["rule"] = rule
        harness.publisher.define_segment(WORKSPACE, data)
    harness.publisher.flush()
    return dict.fromkeys(SEGMENTS, version)


def _fields(rng: random.Random, now: int, fresh: bool) -> dict[str, Any]:
    makers = {
        "country": lambda: rng.choice(COUNTRIES[:4]),
        "status": lambda: rng.choice(STATUSES),
        "tags": lambda: rng.sample(TAGS, rng.randint(0, 2)),
        # Around 30 days before the clock, so ticks move records into "aged".
        "created_at": lambda: now - 30 * DAY + rng.randint(-3 * DAY, 4 * DAY),
        "lifetime_value": lambda: rng.choice([0, 250, 1000, 2500]),
    }
    names = list(makers) if fresh else rng.sample(list(makers), rng.randint(1, 2))
    return {name: makers[name]() for name in names}


class MixedWorkload:
    """A seeded generator: `records` contacts created at T0, then `steps` rounds of a tick (6 h to 4 days
    ahead), record changes (a few deletes, never re-created), behavioural events (purchases with amounts and
    currencies, page views; some late, a few minutes ahead of the clock, a few repeated ids) and, now and
    then, an import adding to or removing from the static segment."""

    def __init__(self, rng: random.Random, records: int = 150, steps: int = 30) -> None:
        self.rng = rng
        self.ids = [f"m{i}" for i in range(records)]
        self.versions: dict[str, int] = {}
        self.deleted: set[str] = set()
        self.event_count = 0
        self.steps: list[Step] = [Step("tick", now=T0)]
        self.steps.append(Step("changes", changes=tuple(self._change(rid, T0, fresh=True) for rid in self.ids)))
        now = T0
        for _ in range(steps):
            now += rng.randint(6 * HOUR, 4 * DAY)
            self.steps.append(Step("tick", now=now))
            self.steps.append(Step("changes", changes=tuple(self._changes(now, rng.randint(8, 20)))))
            self.steps.append(Step("events", events=tuple(self._events(now, rng.randint(20, 50)))))
            if rng.random() < 0.4:
                live = [rid for rid in self.ids if rid not in self.deleted]
                self.steps.append(Step("import", record_ids=tuple(rng.sample(live, rng.randint(1, 8))),
                                       add=rng.random() < 0.7))
        self.steps.append(Step("tick", now=now + rng.randint(HOUR, DAY)))

    def _change(self, rid: str, now: int, fresh: bool = False) -> Change:
        version = self.versions.get(rid, 0) + self.rng.randint(1, 3)
        self.versions[rid] = version
        return {"op": "upsert", "object_type": "contact", "id": rid, "version": version,
                "fields": _fields(self.rng, now, fresh)}

    def _changes(self, now: int, count: int) -> Iterable[Change]:
        for _ in range(count):
            rid = self.rng.choice(self.ids)
            if rid in self.deleted:
                continue
            if self.rng.random() < 0.01:
                self.deleted.add(rid)
                self.versions[rid] += 1
                yield {"op": "delete", "object_type": "contact", "id": rid, "version": self.versions[rid]}
            else:
                yield self._change(rid, now)

    def _events(self, now: int, count: int) -> Iterable[dict[str, Any]]:
        made: list[dict[str, Any]] = []
        for _ in range(count):
            rid = self.rng.choice(self.ids[: len(self.ids) * 2 // 3])  # a third of the records never act
            if rid in self.deleted:
                continue
            roll = self.rng.random()
            at = now - (self.rng.randint(0, 5 * DAY) if roll < 0.3 else self.rng.randint(0, 2 * HOUR))
            if roll > 0.95:
                at = now + self.rng.randint(MINUTE, 3 * HOUR)  # a client clock ahead: enters windows later
            self.event_count += 1
            if made and self.rng.random() < 0.05:
                made.append(dict(made[-1]))  # a producer retry: same id
                continue
            if self.rng.random() < 0.6:
                event = {"id": f"e{self.event_count}", "object_type": "contact", "record_id": rid, "name": "purchase",
                         "at": at, "properties": {"amount": self.rng.choice([20, 90, 250, 600]),
                                                  "currency": self.rng.choice(["EUR", "USD"])}}
            else:
                event = {"id": f"e{self.event_count}", "object_type": "contact", "record_id": rid, "name": "page_view",
                         "at": at, "properties": {}}
            made.append(event)
        return made

    @property
    def messages(self) -> int:
        return sum(max(len(s.changes), len(s.events), 1) for s in self.steps)


def publish_step(harness: Harness, step: Step, index: int) -> None:
    """One step on the broker, acknowledged; changes and events alternate between single messages and batches."""
    publisher = harness.publisher
    if step.kind == "tick":
        publisher.set_clock(step.now)
    elif step.kind == "changes":
        if index % 2:
            publisher.publish_batches(WORKSPACE, step.changes, batch_size=10)
        else:
            for change in step.changes:
                publisher.publish_change(WORKSPACE, change)
    elif step.kind == "events":
        publisher.publish_events(WORKSPACE, step.events, batch_size=1 if index % 3 else 10)
    else:
        publisher.import_members(WORKSPACE, "contact", STATIC, step.record_ids, add=step.add)
    publisher.flush()


def oracle_for(catalog: Mapping[str, Any], steps: Iterable[Step]) -> FullOracle:
    oracle = FullOracle(catalog, dict(SEGMENTS))
    for step in steps:
        if step.kind == "tick":
            oracle.apply_tick(step.now)
        elif step.kind == "changes":
            for change in step.changes:
                oracle.apply_change(change)
        elif step.kind == "events":
            for event in step.events:
                oracle.apply_event(event)
        else:
            oracle.apply_import(STATIC, step.record_ids, step.add)
    return oracle


class MixedStream(Stream):
    """Publishes steps (changes, events, ticks, imports) from a background thread with `pause` seconds
    between them; `hold()` and `release()` as in Stream."""

    def __init__(self, harness: Harness, steps: Sequence[Step], pause: float = 0.15) -> None:
        super().__init__(harness, [], pause=pause)
        self.units = list(steps)

    def publish(self, index: int, unit: Any) -> None:
        publish_step(self.harness, unit, index)

    def record(self, unit: Any) -> None:
        self.published.append(unit)
