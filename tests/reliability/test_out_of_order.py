"""Scenario 3: out-of-order and duplicate change events, as producers with retries, replays and several
writers produce them: newer versions published before older ones, old versions re-sent later, the very
same message (same bytes, same envelope id) delivered twice in a row, whole batches repeated after newer
changes, and a batch that carries the same change twice."""
from __future__ import annotations

import random
import time

from engine.sample_data import contact_changes
from tests.conftest import Harness
from tests.oracle import Oracle
from tests.reliability.invariants import counted, exported, fixed_definition_problems, settle
from tests.reliability.workload import (FIXTURE_RULES, WORKSPACE, Change, RawMessage, Rule, batch_messages, define,
                                        define_fixture_segments, metric_value, single_message)

CHANGES, RECORDS = 3000, 200


def perturbed_messages(rng: random.Random, changes: list[Change],
                       partitions: int) -> tuple[list[RawMessage], dict[str, int]]:
    """The changes as a messy producer publishes them; also how many of each mess were made."""
    changes = list(changes)
    made = {"swapped": 0, "same message twice": 0, "batch repeated later": 0, "old version re-sent": 0,
            "change twice in a batch": 0}
    for _ in range(300):  # a newer version of a record published before an older one
        i = rng.randrange(len(changes) - 1)
        j = next((j for j in range(i + 1, min(i + 150, len(changes))) if changes[j]["id"] == changes[i]["id"]), None)
        if j is not None:
            changes[i], changes[j] = changes[j], changes[i]
            made["swapped"] += 1
    messages: list[RawMessage] = []
    later: list[tuple[int, RawMessage]] = []  # (publish after this many messages, message)
    for start in range(0, len(changes), 20):
        chunk = changes[start : start + 20]
        if rng.random() < 0.5:
            units = [single_message(c, partitions) for c in chunk]
        else:
            if rng.random() < 0.3:
                k = rng.randrange(len(chunk))
                chunk.insert(k + 1, dict(chunk[k]))
                made["change twice in a batch"] += 1
            units = batch_messages(chunk, partitions, size=8)
        for unit in units:
            messages.append(unit)
            roll = rng.random()
            if roll < 0.05:
                messages.append(unit)
                made["same message twice"] += 1
            elif roll < 0.10 and len(unit.changes) > 1:
                later.append((len(messages) + rng.randint(10, 60), unit))
                made["batch repeated later"] += 1
            elif roll < 0.15:
                old = rng.choice(messages[-200:]).changes[0]
                messages.append(single_message(dict(old), partitions))
                made["old version re-sent"] += 1
            due = [unit for at, unit in later if at <= len(messages)]
            later = [(at, unit) for at, unit in later if at > len(messages)]
            messages += due
    messages += [unit for _, unit in later]
    return messages, made


def test_out_of_order_and_duplicate_changes_are_ignored(harness: Harness, seed: int) -> None:
    """Invariants (see invariants.py): the API's members, counts and stored records (each at its highest
    version, merged in version order) equal the oracle's from-scratch evaluation; the deduplicated events
    fold to the same membership; the emitted transitions are exactly those of the sequential oracle, which
    ignores every change not newer than the record's stored version, so no stale or repeated input
    produces an event."""
    rng = random.Random(seed)
    version = int(time.time() * 1000)
    define_fixture_segments(harness, version)
    partitions = harness.settings.partitions
    messages, made = perturbed_messages(rng, list(contact_changes(rng, CHANGES, records=RECORDS)), partitions)
    delivered = [change for message in messages for change in message.changes]
    stale = len(delivered) - len(_applied(delivered))
    print(f"{len(messages)} messages, {stale} stale changes: {made}")
    assert stale > 300, f"seed {seed}: only {stale} stale changes; the workload is not messy enough"

    worker = harness.start_worker()
    for n, message in enumerate(messages):
        harness.publisher.publish_raw(message.value, key=message.key, partition=message.partition)
        if n % 50 == 49:  # in steps, so the worker applies while the mess is being published
            harness.publisher.flush()
            time.sleep(0.05)
    harness.publisher.flush()

    oracle = Oracle(harness.catalog(), dict(FIXTURE_RULES)).apply_all(delivered)
    assert len(oracle.membership()) > 50, "workload too unselective to prove anything"
    settle(harness, seed, "membership after out-of-order and duplicate input",
           lambda: fixed_definition_problems(harness, [worker.web_port], oracle, dict.fromkeys(FIXTURE_RULES, version)))


def _applied(changes: list[Change]) -> list[Change]:
    """The changes a version check keeps: each newer than every earlier one of its record."""
    newest: dict[str, int] = {}
    kept = []
    for change in changes:
        if change["version"] > newest.get(change["id"], -1):
            newest[change["id"]] = change["version"]
            kept.append(change)
    return kept


def test_a_quiet_stream_is_applied_once_per_message(harness: Harness, seed: int) -> None:
    """No fault at all: one change per message, a few milliseconds apart, each flipping a membership, while a
    segment's rule is edited back and forth. A worker nothing disturbs applies every message once: /metrics
    counts each change once (applied or stale, as the dashboard shows them), no offset gap is repaired, and
    the segment's /count equals its members."""
    rng = random.Random(seed)
    version = int(time.time() * 1000)
    rules: list[Rule] = [{"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": c}]}
                         for c in ("PL", "DE")]
    changes = [{"op": "upsert", "object_type": "contact", "id": f"f{i % 7}", "version": i + 1,
                "fields": {"country": "PL" if (i // 7) % 2 else "DE"}} for i in range(500)]
    changes += [dict(c) for c in rng.sample(changes, 60)]  # re-sent later: stale
    worker = harness.start_worker()
    current = rules[0]
    for n, change in enumerate(changes):
        if n % 100 == 50:
            current = rules[n // 100 % 2]
            define(harness, "toggle", current, version + n)
        harness.publisher.publish_change(WORKSPACE, change)
        harness.publisher.flush()
        time.sleep(0.003)

    def metrics() -> dict[str, float | None]:
        return {"applied": metric_value(worker, "segment_engine_changes_total", {"outcome": "applied"}),
                "stale": metric_value(worker, "segment_engine_changes_total", {"outcome": "stale"}),
                "offset gaps": metric_value(worker, "segment_engine_offset_gaps_total", {}),
                "gap messages": metric_value(worker, "segment_engine_gap_messages_total", {})}

    members = Oracle(harness.catalog(), {"toggle": current}).apply_all(changes).membership()
    ids = sorted(rid for rid, _ in members)
    harness.wait_for(lambda: sorted(exported(worker.web_port, "toggle") or ["?"]) == ids, 60, "the final members")
    time.sleep(1.0)  # the late duplicates are counted after the last new version
    applied = len(_applied(changes))
    assert {**metrics(), "count": counted(worker.web_port, "toggle")} == {
        "applied": applied, "stale": len(changes) - applied, "offset gaps": 0, "gap messages": 0,
        "count": len(members)}, f"seed {seed}"
