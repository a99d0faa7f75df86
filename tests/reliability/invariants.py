"""The two invariants every reliability scenario ends with, checked against the independent oracle
(tests/oracle.py replays the published changes, tests/naive_eval.py evaluates rules from scratch):

1. What the engine reports (HTTP API: each segment's export and count, each record's stored version,
   fields and segments) equals a from-scratch evaluation of the final record states with the final
   segment definitions.
2. Folding the emitted events as a subscriber does (README, "Subscribing to segment events":
   deduplicate by `id`, apply a record's events in topic order, `segment.deleted` at version v ends every
   membership granted at a segment version <= v) gives exactly that membership, no transition the
   oracle implies is missing, and a duplicate is always recognisable (same transition, same id).

Each check returns a list of problems (empty when it holds), so a test polls until the engine has
settled and otherwise fails with every difference, its seed and the workers' logs.
"""
from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Callable, Iterable, Mapping, Sequence

import orjson
import pytest

from tests.conftest import Harness
from tests.naive_eval import naive_matches
from tests.oracle import Member, Oracle
from tests.reliability.workload import WORKSPACE, Change, Definition

TOKEN = "acme-admin-token"  # engine/samples/tokens.json, the harness' default tokens file
SHOWN = 8  # examples per problem
# (type, record id, segment id, record version, segment version): what a transition is; its event id is
# derived from exactly these (README, "Delivery").
Transition = tuple[str, str, str, int, int]
History = list[tuple[int, dict[str, Any] | None]]  # a record's applied states: (version, fields or None if deleted)
ENTERED, EXITED = "segment.entered", "segment.exited"


def api_get(port: int, path: str) -> tuple[int, bytes] | None:
    """(status, body) of an authenticated GET on a worker; None when it does not answer."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return None


def examples(items: Iterable[Any]) -> str:
    listed = sorted(items, key=repr)
    return f"{len(listed)}, e.g. {listed[:SHOWN]}"


# ---- invariant 1: what the engine reports ------------------------------------------------------------


def exported(port: int, segment_id: str) -> list[str] | None:
    """A segment's members as its CSV export lists them (one worker asks the whole group); None if refused."""
    answer = api_get(port, f"/v1/workspaces/{WORKSPACE}/segments/{segment_id}/export?format=csv")
    return answer[1].decode().splitlines()[1:] if answer is not None and answer[0] == 200 else None


def counted(port: int, segment_id: str) -> int | None:
    """A segment's member_count as /count answers it; None if refused."""
    answer = api_get(port, f"/v1/workspaces/{WORKSPACE}/segments/{segment_id}/count")
    return int(orjson.loads(answer[1])["member_count"]) if answer is not None and answer[0] == 200 else None


def membership_problems(ports: Sequence[int], expected: set[Member], live: Iterable[str],
                        removed: Iterable[str] = ()) -> list[str]:
    """Every live segment's export and count on every given worker (they fan out over the whole group)
    equal `expected`; removed segments are gone from the API (404)."""
    problems: list[str] = []
    for port in ports:
        for segment_id in sorted(live):
            listed, count = exported(port, segment_id), counted(port, segment_id)
            want = {rid for rid, sid in expected if sid == segment_id}
            if listed is None or count is None:
                problems.append(f":{port} {segment_id}: export or count refused")
                continue
            if set(listed) != want or len(listed) != len(want):
                problems.append(f":{port} {segment_id}: export lacks {examples(want - set(listed))}, "
                                f"has extra {examples(set(listed) - want)} ({len(listed)} lines)")
            if count != len(want):
                problems.append(f":{port} {segment_id}: count {count} != {len(want)} members")
        for segment_id in sorted(removed):
            answer = api_get(port, f"/v1/workspaces/{WORKSPACE}/segments/{segment_id}/count")
            if answer is None or answer[0] != 404:
                problems.append(f":{port} removed segment {segment_id} answers {answer and answer[0]}, not 404")
    return problems


def record_problems(port: int, oracle: Any, record_ids: Iterable[str] | None = None) -> list[str]:
    """Every record the oracle (an Oracle or a FullOracle) saw, or those of `record_ids`, as the engine
    stores it: version, deletion, merged fields, segments."""
    problems: list[str] = []
    for record_id in sorted(oracle.versions if record_ids is None else record_ids):
        version = oracle.versions[record_id]
        answer = api_get(port, f"/v1/workspaces/{WORKSPACE}/records/contact/{record_id}")
        if answer is None or answer[0] != 200:
            problems.append(f"record {record_id}: answered {answer and answer[0]}")
            continue
        stored = orjson.loads(answer[1])
        fields = oracle.records.get(record_id)
        want = {"version": version, "deleted": fields is None, "segments": sorted(oracle.members_of(record_id))}
        got = {"version": stored["version"], "deleted": stored["deleted"],
               "segments": [s["id"] for s in stored["segments"]]}
        if fields is not None:
            want["fields"], got["fields"] = fields, stored["fields"]
        if got != want:
            problems.append(f"record {record_id}: engine has {got}, oracle {want}")
    return problems[:SHOWN] + ([f"... {len(problems) - SHOWN} more records differ"] if len(problems) > SHOWN else [])


# ---- invariant 2: the subscriber's fold ---------------------------------------------------------------


@dataclass
class Folded:
    """The events as a subscriber sees them."""

    members: set[Member] = field(default_factory=set)
    ids: dict[Transition, set[str]] = field(default_factory=lambda: defaultdict(set))  # transition -> its ids
    deleted: dict[str, dict[int, set[str]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(set)))
    anomalies: list[str] = field(default_factory=list)
    redelivered: int = 0  # events whose id was seen before


def fold(events: Iterable[Mapping[str, Any]]) -> Folded:
    """Fold entered/exited events in topic order (each record's events share a partition), skipping ids
    already seen, and end memberships by segment.deleted versions.

    Also checks what makes that fold trustworthy, per (record, segment): after deduplication the events
    alternate entered/exited (a new incarnation after a deletion starts empty), and their record and
    segment versions never go down, so folding by version gives the same answer as folding by order."""
    out = Folded()
    seen: set[str] = set()
    sequences: dict[Member, list[Transition]] = defaultdict(list)
    for event in events:
        data = event["data"]
        if event["type"] == "segment.deleted":
            out.deleted[data["segment_id"]][data["segment_version"]].add(event["id"])
            continue
        transition = (event["type"], data["record_id"], data["segment_id"], data["record_version"],
                      data["segment_version"])
        out.ids[transition].add(event["id"])
        if event["id"] in seen:
            out.redelivered += 1
            continue
        seen.add(event["id"])
        sequences[(data["record_id"], data["segment_id"])].append(transition)
    for transition, ids in out.ids.items():
        if len(ids) > 1:
            out.anomalies.append(f"one transition under {len(ids)} ids (duplicates no subscriber can recognise): "
                                 f"{transition}")
    for member, sequence in sequences.items():
        ends = sorted(out.deleted.get(member[1], {}))
        inside, incarnation = False, 0
        for before, transition in zip([None, *sequence], sequence):
            if before is not None and (transition[3] < before[3] or transition[4] < before[4]):
                out.anomalies.append(f"{member}: versions go down in topic order: {before} then {transition}")
            # Membership granted at segment version g is ended by a deletion at d >= g.
            now_incarnation = bisect_left(ends, transition[4])
            if now_incarnation != incarnation:
                inside, incarnation = False, now_incarnation
            entering = transition[0] == ENTERED
            if entering == inside:
                out.anomalies.append(f"{member}: {transition[0]} twice in a row (second: {transition})")
            inside = entering
        if inside and incarnation == len(ends):
            out.members.add(member)
    return out


def fold_problems(folded: Folded, expected: set[Member]) -> list[str]:
    problems = list(folded.anomalies[:SHOWN])
    if folded.members != expected:
        problems.append(f"folded events lack members {examples(expected - folded.members)}; "
                        f"have extra {examples(folded.members - expected)}")
    return problems


def transition_problems(folded: Folded, oracle: Oracle, versions: Mapping[str, int]) -> list[str]:
    """With definitions fixed before the first change: the emitted transitions are exactly those of the
    sequential oracle (every segment evaluated after every applied change), under each segment's version;
    none is missing, and stale or repeated input adds none."""
    wanted = {(kind, rid, sid, rv, versions[sid]) for kind, rid, sid, rv in oracle.transitions}
    emitted = set(folded.ids)
    problems = []
    if wanted - emitted:
        problems.append(f"oracle transitions never emitted: {examples(wanted - emitted)}")
    if emitted - wanted:
        problems.append(f"emitted transitions the oracle never implies: {examples(emitted - wanted)}")
    return problems


# ---- oracle transitions when definitions change while changes flow ------------------------------------


def record_histories(catalog: Mapping[str, Any], changes: Iterable[Change]) -> dict[str, History]:
    """Per record, its successive applied states (version, fields; None once deleted), stale changes
    skipped: the oracle's own replay, snapshotted after every change it applies."""
    oracle = Oracle(catalog, {})
    histories: dict[str, History] = defaultdict(list)
    for change in changes:
        record_id = change["id"]
        before = oracle.versions.get(record_id)
        oracle.apply(change)
        if oracle.versions[record_id] != before:
            fields = oracle.records.get(record_id)
            histories[record_id].append((oracle.versions[record_id], None if fields is None else dict(fields)))
    return histories


def explain(history: Sequence[tuple[int, Mapping[str, Any] | None]], definitions: Sequence[Definition],
            emitted: set[tuple[str, int, int]], catalog: Mapping[str, Any]) -> int | None:
    """The most emitted transitions one admissible history of a (record, segment) pair accounts for, or
    None when every admissible history needs a transition that was never emitted.

    A history is a path through the grid (i record states applied, k definitions applied), from (0, 0) to
    (all, all), one step at a time: the next change evaluated under the current definition, or a jump to
    any later definition (a partition may skip versions it never saw current). Membership at (i, k) is the
    naive evaluation of state i under definition k (none before the record exists, after it is deleted,
    before the segment exists or once removed). Each step whose membership differs is a transition:
    a change step at (record version i+1, definition k), a definition step at (record version i, the new
    definition). Per the README, a removal step is never a transition (memberships end silently), and a
    segment re-created after a removal starts empty, even when the removal itself was skipped."""
    states: list[tuple[int, Mapping[str, Any] | None]] = [(0, None), *history]
    levels: list[Definition | None] = [None, *definitions]

    @cache
    def member(i: int, k: int) -> bool:
        fields, level = states[i][1], levels[k]
        if fields is None or level is None or level.rule is None:
            return False
        return naive_matches(level.rule, fields, catalog)

    def step(before: bool, after: bool, record_version: int, segment_version: int) -> tuple[str, int, int] | None:
        return None if before == after else (ENTERED if after else EXITED, record_version, segment_version)

    best: dict[tuple[int, int], int] = {(0, 0): 0}

    def reach(node: tuple[int, int], used: int, transition: tuple[str, int, int] | None) -> None:
        if transition is None or transition in emitted:
            score = used + (transition is not None)
            if best.get(node, -1) < score:
                best[node] = score

    last_state, last_level = len(states) - 1, len(levels) - 1
    for i in range(last_state + 1):
        for k in range(last_level + 1):
            if (i, k) not in best:
                continue
            used = best[(i, k)]
            for later in range(k + 1, last_level + 1):
                target = levels[later]
                assert target is not None
                if target.rule is None:
                    reach((i, later), used, None)
                    continue
                removed_between = any(d is not None and d.rule is None for d in levels[k + 1 : later])
                before = member(i, k) and not removed_between
                reach((i, later), used, step(before, member(i, later), states[i][0], target.version))
            if i < last_state:
                level = levels[k]
                version = level.version if level else 0
                reach((i + 1, k), used, step(member(i, k), member(i + 1, k), states[i + 1][0], version))
    return best.get((last_state, last_level))


def history_problems(folded: Folded, catalog: Mapping[str, Any], changes: Sequence[Change],
                     definitions: Mapping[str, Sequence[Definition]]) -> list[str]:
    """Definitions changed while changes flowed, so which change a partition evaluated under which
    definition version is up to timing. "Oracle transitions" are then those of an admissible history (see
    `explain`): for every (record, segment) some history must exist whose transitions were all emitted,
    and one of them must account for every emitted transition. Every removal is announced by exactly one
    segment.deleted at its version, and nothing else is."""
    problems: list[str] = []
    histories = record_histories(catalog, changes)
    emitted: dict[Member, set[tuple[str, int, int]]] = defaultdict(set)
    for kind, rid, sid, rv, sv in folded.ids:
        emitted[(rid, sid)].add((kind, rv, sv))
    strangers = {m for m in emitted if m[0] not in histories or m[1] not in definitions}
    if strangers:
        problems.append(f"events for records or segments never published: {examples(strangers)}")
    unexplained: list[str] = []
    for segment_id, versions in sorted(definitions.items()):
        for record_id, history in sorted(histories.items()):
            mine = emitted.get((record_id, segment_id), set())
            accounted = explain(history, versions, mine, catalog)
            if accounted is None or accounted < len(mine):
                what = ("an oracle transition is missing" if accounted is None
                        else f"{len(mine) - accounted} emitted transition(s) fit no history")
                published = [(d.version, "defined" if d.rule else "removed") for d in versions]
                unexplained.append(f"({record_id}, {segment_id}): {what}; emitted {sorted(mine)}; record versions "
                                   f"{[v for v, _ in history]}; segment versions {published}")
    if unexplained:
        problems.append(f"{len(unexplained)} (record, segment) pairs no admissible history explains:\n  "
                        + "\n  ".join(unexplained[:SHOWN]))
    for segment_id, versions in sorted(definitions.items()):
        removals = {d.version for d in versions if d.rule is None}
        announced = folded.deleted.get(segment_id, {})
        if set(announced) != removals:
            problems.append(f"{segment_id}: removed at {sorted(removals)}, segment.deleted at {sorted(announced)}")
        problems += [f"{segment_id}: segment.deleted at {version} under {len(ids)} ids"
                     for version, ids in announced.items() if len(ids) > 1]
    return problems


# ---- waiting for the engine to settle -------------------------------------------------------------------


def settle(harness: Harness, seed: int, what: str, check: Callable[[], list[str]], timeout: float = 120.0) -> None:
    """Poll `check` until it finds no problem; otherwise fail with its problems, the seed and the logs."""
    deadline = time.monotonic() + timeout
    while True:
        problems = check()
        if not problems:
            return
        if time.monotonic() > deadline:
            logs = "\n---\n".join(f"{w.log_path.name}:\n{w.log_tail(15)}" for w in harness.workers[-3:])
            pytest.fail(f"seed {seed}: {what} still fails after {timeout:.0f}s:\n" + "\n".join(problems)
                        + f"\nlast worker logs:\n{logs}", pytrace=False)
        time.sleep(1.0)


def fixed_definition_problems(harness: Harness, ports: Sequence[int], oracle: Oracle,
                              versions: Mapping[str, int]) -> list[str]:
    """Both invariants for scenarios whose definitions never change: the cheap event checks first (they
    also tell whether the engine is still working), then what the API of every given worker reports."""
    expected = oracle.membership()
    folded = fold(harness.events())
    problems = fold_problems(folded, expected) + transition_problems(folded, oracle, versions)
    if problems:
        return problems
    return membership_problems(ports, expected, oracle.segments) or record_problems(ports[0], oracle)


# ---- every cause of a flip (test_every_cause.py) ---------------------------------------------------------

PAGE = 100  # the member page the answers check reads


def fold_every_cause(events: Sequence[Mapping[str, Any]]) -> Folded:
    """`fold` for workloads where time, behavioural events and imports flip memberships too. Those repeat a
    (type, record, segment, record version, segment version) legitimately (a purchase enters, the window
    expires, another purchase enters again, all at one record version) under ids that differ by their
    nonce (event id, instant, import id), which the event does not carry. So "one transition under one id"
    is checked where the event says everything its id is derived from: changes, deletes and backfills
    (empty nonce) and time (the nonce is the instant, `at`). Alternation, non-decreasing versions and the
    fold itself are checked for every event, as in `fold`."""
    out = fold(events)
    out.anomalies = [a for a in out.anomalies if not a.startswith("one transition under")]
    ids: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    for event in events:
        data = event["data"]
        if event["type"] in (ENTERED, EXITED) and data["cause"] in ("change", "delete", "backfill", "time"):
            ids[(event["type"], data["record_id"], data["segment_id"], data["record_version"],
                 data["segment_version"], data["cause"], data["at"] if data["cause"] == "time" else None)].add(event["id"])
    out.anomalies += [f"one transition under {len(found)} ids (duplicates no subscriber can recognise): {key}"
                      for key, found in ids.items() if len(found) > 1]
    return out


def answers(port: int, segment_id: str) -> tuple[Any, Any, Any]:
    """(export ids, count, first page ids) of a segment, each a value or ("refused", status, code)."""
    base = f"/v1/workspaces/{WORKSPACE}/segments/{segment_id}"
    out: list[Any] = []
    for path in ("/export?format=csv", "/count", f"/members?limit={PAGE}"):
        try:
            answer = api_get(port, base + path)
        except http.client.HTTPException as exc:  # a 200 whose body broke off: neither complete nor refused
            out.append(("refused", 200, f"body cut off ({type(exc).__name__})"))
            continue
        if answer is None:
            out.append(("refused", None, "no answer"))
        elif answer[0] != 200:
            try:
                code = orjson.loads(answer[1])["error"]["code"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                code = answer[1][:80]
            out.append(("refused", answer[0], code))
        elif path.startswith("/export"):
            out.append(answer[1].decode().splitlines()[1:])
        elif path == "/count":
            out.append(int(orjson.loads(answer[1])["member_count"]))
        else:
            out.append(orjson.loads(answer[1])["members"])
    return out[0], out[1], out[2]


def refused(value: Any) -> bool:
    return isinstance(value, tuple) and value[:1] == ("refused",)


def answer_problems(port: int, segment_ids: Iterable[str], attempts: int = 20) -> tuple[list[str], dict[str, int]]:
    """Each segment's export, /count and first member page are complete and agree (export ids == count, the
    page == the first ids of the sorted export), or are refused with 503 `not_ready` (or nobody listens yet);
    never a shorter list with 200, nor a 200 whose body breaks off. Read twice in a row: only two identical
    rounds are judged (a worker still applying its backlog may legitimately move between two requests), up
    to `attempts` times. Also returns how the answers went (consistent, not_ready, not listening, moving)."""
    problems: list[str] = []
    seen = {"consistent": 0, "not_ready": 0, "not listening": 0, "moving": 0}
    for segment_id in sorted(segment_ids):
        for _ in range(attempts):
            first, second = answers(port, segment_id), answers(port, segment_id)
            bad = [v for v in (*first, *second)
                   if refused(v) and v[1] is not None and (v[1] != 503 or v[2] != "not_ready")]
            if bad:
                problems.append(f":{port} {segment_id}: refused other than 503 not_ready: {bad[0]}")
                break
            if any(refused(v) and v[1] is None for v in (*first, *second)):
                seen["not listening"] += 1
                break
            if any(refused(v) for v in (*first, *second)):
                seen["not_ready"] += 1
                break
            if first != second:
                seen["moving"] += 1
                time.sleep(0.2)
                continue
            listed, count, page = first
            if len(listed) != len(set(listed)) or count != len(listed) or page != sorted(listed)[:PAGE]:
                problems.append(f":{port} {segment_id}: 200 answers disagree: export {len(listed)} ids "
                                f"({len(set(listed))} distinct), count {count}, first page {len(page)} ids "
                                f"{'equal to' if page == sorted(listed)[:PAGE] else 'not'} the export's first")
            else:
                seen["consistent"] += 1
            break
    return problems, seen


def every_cause_problems(harness: Harness, ports: Sequence[int], oracle: Any, sample: Iterable[str]) -> list[str]:
    """Both invariants against tests/oracle.FullOracle, the cheap event fold first."""
    expected = oracle.membership()
    problems = fold_problems(fold_every_cause(harness.events()), expected)
    if problems:
        return problems
    return membership_problems(ports, expected, oracle.rules) or record_problems(ports[0], oracle, sample)
