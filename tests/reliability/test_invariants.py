"""The invariant checks themselves must be able to fail: the subscriber's fold and the admissible-history
oracle on hand-made event streams (no broker, milliseconds)."""
from __future__ import annotations

from typing import Any

from engine.workspaces import load_workspaces
from tests.conftest import FIXTURES
from tests.reliability.invariants import ENTERED, EXITED, explain, fold
from tests.reliability.workload import Definition

PL = {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "PL"}]}
DE = {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "DE"}]}


def event(id_: str, type_: str, record: str, record_version: int, segment_version: int) -> dict[str, Any]:
    return {"id": id_, "type": type_, "data": {"record_id": record, "segment_id": "s", "record_version": record_version,
                                               "segment_version": segment_version}}


def deleted(id_: str, version: int) -> dict[str, Any]:
    return {"id": id_, "type": "segment.deleted", "data": {"segment_id": "s", "segment_version": version}}


def test_the_fold_deduplicates_by_id_and_flags_what_a_subscriber_cannot_sort_out() -> None:
    redelivered = fold([event("a", ENTERED, "r", 1, 1), event("b", EXITED, "r", 2, 1), event("a", ENTERED, "r", 1, 1)])
    assert redelivered.members == set() and not redelivered.anomalies and redelivered.redelivered == 1
    new_id = fold([event("a", ENTERED, "r", 1, 1), event("c", ENTERED, "r", 1, 1)])
    assert any("under 2 ids" in a for a in new_id.anomalies) and any("twice in a row" in a for a in new_id.anomalies)
    backwards = fold([event("a", ENTERED, "r", 5, 1), event("b", EXITED, "r", 3, 1)])
    assert any("versions go down" in a for a in backwards.anomalies)
    # segment.deleted at 2 ends what version 1 granted, wherever it sits in the stream, not version 3's.
    recreated = fold([deleted("d", 2), event("a", ENTERED, "r", 1, 1), event("b", ENTERED, "q", 1, 1),
                      event("c", ENTERED, "q", 1, 3)])
    assert recreated.members == {("q", "s")} and not recreated.anomalies


def test_the_history_oracle_needs_every_transition_and_explains_every_event() -> None:
    catalog = load_workspaces(FIXTURES / "workspaces.json").catalog("acme", "contact")
    assert catalog is not None
    history = [(1, {"country": "PL"}), (2, {"country": "DE"}), (3, {"country": "PL"})]
    edited = [Definition(10, PL), Definition(20, DE)]
    # The edit applied after the second change: PL enters at 1 and leaves at 2, the backfill enters DE at 2,
    # the third change leaves it.
    emitted = {(ENTERED, 1, 10), (EXITED, 2, 10), (ENTERED, 2, 20), (EXITED, 3, 20)}
    assert explain(history, edited, emitted, catalog) == 4
    assert explain(history, edited, {(ENTERED, 2, 20), (EXITED, 3, 20)}, catalog) == 2  # the edit came first
    assert (explain(history, edited, emitted - {(EXITED, 2, 10)}, catalog) or 0) < 3  # a lost exit
    assert (explain(history, edited, emitted | {(ENTERED, 3, 10)}, catalog) or 0) < 5  # an event of no history
    recreated = [Definition(10, PL), Definition(15, None), Definition(20, PL)]
    assert explain([(1, {"country": "PL"})], recreated, {(ENTERED, 1, 10)}, catalog) is None  # must enter again
    assert explain([(1, {"country": "PL"})], recreated, {(ENTERED, 1, 10), (ENTERED, 1, 20)}, catalog) == 2
