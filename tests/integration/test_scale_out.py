"""Scale-out on the real broker: two workers share the partitions; stopping one gracefully (SIGTERM) while
changes flow moves its partitions to the other, and starting it again on the same data directory shares
them again. After every phase, membership folded from the emitted events equals a from-scratch naive
evaluation of the final record states (tests/oracle.py), every emitted transition is one the sequential
oracle implies, and the workers' HTTP API counts and exports the same members."""
from __future__ import annotations

import random
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import replace
from typing import Any, Iterable, Sequence
from urllib.parse import urlsplit

import orjson

from engine.sample_data import contact_changes
from tests.conftest import FIXTURES, Harness, WorkerProcess
from tests.oracle import Oracle, fold_events

SEED = 20261127
RECORDS = 300
TOKEN = "acme-admin"  # tests/fixtures/tokens.json

Change = dict[str, Any]


# ---- HTTP ----------------------------------------------------------------------------------------


def get(port: int, path: str, token: str | None = None) -> tuple[int, bytes] | None:
    """(status, body) of GET http://127.0.0.1:port/path; None when the worker does not answer."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return None


def ownership(workers: Sequence[WorkerProcess]) -> dict[int, set[int]] | None:
    """Web port -> partitions, when every worker is ready and each one's view of the group (`workers` of
    /health) agrees with what every worker says it owns itself; None otherwise (starting, rebalancing)."""
    owned: dict[int, set[int]] = {}
    views: list[dict[int, set[int]]] = []
    for worker in workers:
        answer = get(worker.web_port, "/health")
        if answer is None or answer[0] != 200:
            return None
        health = orjson.loads(answer[1])
        owned[worker.web_port] = set(health["partitions"])
        views.append({urlsplit(url).port: set(parts) for url, parts in health["workers"].items()})
    if any(view != owned for view in views):
        return None
    return owned


def shared_by(workers: Sequence[WorkerProcess], partitions: int) -> dict[int, set[int]] | None:
    """The ownership when every worker owns some partitions, no two own the same one, and all are owned."""
    owned = ownership(workers)
    if owned is None or not all(owned.values()):
        return None
    total = sum(len(parts) for parts in owned.values())
    union = set().union(*owned.values())
    if total != len(union) or union != set(range(partitions)):
        return None
    return owned


def api_view(port: int, segment_ids: Iterable[str]) -> dict[str, tuple[int, list[str]]] | None:
    """Segment id -> (member_count, exported member ids) as one worker answers over HTTP."""
    view: dict[str, tuple[int, list[str]]] = {}
    for segment_id in segment_ids:
        base = f"/v1/workspaces/acme/segments/{segment_id}"
        count, export = get(port, base + "/count", TOKEN), get(port, base + "/export?format=csv", TOKEN)
        if count is None or export is None or count[0] != 200 or export[0] != 200:
            return None
        view[segment_id] = (orjson.loads(count[1])["member_count"], export[1].decode().splitlines()[1:])
    return view


# ---- workload ------------------------------------------------------------------------------------


def out_of_order(rng: random.Random, changes: list[Change], swaps: int) -> list[Change]:
    """`changes` with `swaps` pairs of changes of one record published newer-first (the older one then
    arrives stale and must be ignored)."""
    changes = list(changes)
    for _ in range(swaps):
        i = rng.randrange(len(changes) - 1)
        for j in range(i + 1, min(i + 40, len(changes))):
            if changes[j]["id"] == changes[i]["id"]:
                changes[i], changes[j] = changes[j], changes[i]
                break
    return changes


def chunks(rng: random.Random, changes: list[Change], published: list[Change], size: int = 30) -> list[list[Change]]:
    """The phase cut in chunks, each followed by a few replays of already published (stale) changes."""
    out: list[list[Change]] = []
    seen = list(published)
    for i in range(0, len(changes), size):
        chunk = changes[i : i + size]
        seen += chunk
        out.append(chunk + [dict(c) for c in rng.sample(seen, 3)])
    return out


def publish(harness: Harness, index: int, chunk: list[Change], published: list[Change]) -> None:
    """Alternately one message per change and record.changes batches; `published` gets the changes in
    the order each record's partition receives them (the order the oracle folds them in)."""
    if index % 2:
        harness.publisher.publish_batches("acme", chunk, batch_size=12)
    else:
        for change in chunk:
            harness.publisher.publish_change("acme", change)
    harness.publisher.flush()
    published.extend(chunk)


# ---- oracle checks -------------------------------------------------------------------------------


def transitions_of(events: list[dict[str, Any]]) -> dict[tuple[str, str, str, int], set[str]]:
    ids: dict[tuple[str, str, str, int], set[str]] = defaultdict(set)
    for e in events:
        if e["type"] in ("segment.entered", "segment.exited"):
            d = e["data"]
            ids[(e["type"], d["record_id"], d["segment_id"], d["record_version"])].add(e["id"])
    return ids


def settles_to_the_oracle(harness: Harness, oracle: Oracle, workers: Sequence[WorkerProcess], phase: str) -> None:
    expected = oracle.membership()
    wanted = set(oracle.transitions)

    def settled() -> list[dict[str, Any]] | None:
        events = harness.events()
        if set(transitions_of(events)) >= wanted and fold_events(events) == expected:
            return events
        return None

    events = harness.wait_for(settled, timeout=60, what=f"{phase}: every oracle transition emitted, folded events == oracle")
    emitted = transitions_of(events)
    extra = set(emitted) - wanted
    assert not extra, f"{phase}: {len(extra)} transitions the sequential oracle never implies, e.g. {sorted(extra)[:3]}"
    assert all(len(ids) == 1 for ids in emitted.values()), f"{phase}: a redelivered transition changed its id"
    assert {e["type"] for e in events} <= {"segment.entered", "segment.exited"}

    # The HTTP API of every running worker (segment questions fan out to the owners and merge). The
    # state table is written just after the events are acknowledged, hence the wait.
    members = {sid: sorted(rid for rid, s in expected if s == sid) for sid in oracle.segments}
    truth = {sid: (len(ids), ids) for sid, ids in members.items()}
    for worker in workers:
        harness.wait_for(lambda: api_view(worker.web_port, oracle.segments) == truth, timeout=20,
                         what=f"{phase}: count and export on :{worker.web_port} == oracle")


# ---- the test ------------------------------------------------------------------------------------


def test_stopping_a_worker_moves_its_partitions_and_membership_stays_equal_to_the_oracle(harness: Harness) -> None:
    started = time.monotonic()
    harness.settings = replace(harness.settings, tokens_file=FIXTURES / "tokens.json")
    n = harness.settings.partitions
    rules = harness.define_fixture_segments()
    oracle = Oracle(harness.catalog(), rules)
    rng = random.Random(SEED)
    stream = list(contact_changes(rng, 2700, records=RECORDS))  # versions grow across the three phases
    phases = [out_of_order(rng, stream[a:b], swaps=40) for a, b in ((0, 1200), (1200, 2000), (2000, 2700))]
    published: list[Change] = []

    # Two workers share the partitions.
    first = harness.start_worker(data_dir="data-a")
    second = harness.start_worker(data_dir="data-b")
    owned = harness.wait_for(lambda: shared_by([first, second], n), timeout=30, what="both workers owning partitions")
    assert owned[first.web_port].isdisjoint(owned[second.web_port])

    # Phase 1, both workers up.
    for i, chunk in enumerate(chunks(rng, phases[0], published)):
        publish(harness, i, chunk, published)
    oracle.apply_all(published)
    applied = len(published)
    assert len(oracle.membership()) > 50, "workload too unselective to prove anything"
    settles_to_the_oracle(harness, oracle, [first, second], "phase 1 (two workers)")

    # Phase 2: the first worker is stopped with SIGTERM while changes flow; the rest of the phase is
    # published right after it exited, while its partitions move to the survivor.
    phase2 = chunks(rng, phases[1], published)
    during, after = phase2[: len(phase2) * 3 // 4], phase2[len(phase2) * 3 // 4 :]
    flowing, stopping, stopped = threading.Event(), threading.Event(), threading.Event()
    published_during_stop: list[int] = []
    failures: list[BaseException] = []

    def trickle() -> None:
        try:
            for i, chunk in enumerate(during):
                publish(harness, i, chunk, published)
                if stopping.is_set() and not stopped.is_set():
                    published_during_stop.append(i)
                if i == len(during) // 3:
                    flowing.set()
                time.sleep(0.1)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)
        finally:
            flowing.set()

    publisher = threading.Thread(target=trickle)
    publisher.start()
    flowing.wait(timeout=30)
    stop_started = time.monotonic()
    stopping.set()
    first.stop()
    stop_took = time.monotonic() - stop_started
    stopped.set()
    publisher.join()
    assert not failures, failures
    assert first.process is not None and first.process.returncode == 0, \
        f"SIGTERM did not stop the worker cleanly (exit {first.process and first.process.returncode}):\n{first.log_tail()}"
    assert published_during_stop, "the stop did not overlap the stream"
    for i, chunk in enumerate(after):
        publish(harness, i, chunk, published)
    oracle.apply_all(published[applied:])
    applied = len(published)
    harness.wait_for(lambda: ownership([second]) == {second.web_port: set(range(n))}, timeout=30,
                     what="the survivor owning every partition")
    settles_to_the_oracle(harness, oracle, [second], "phase 2 (survivor alone)")
    assert ownership([second]) == {second.web_port: set(range(n))}

    # Phase 3: the stopped worker comes back on its data directory, whose state is from before the stop
    # (the survivor has changed every partition since). Part of the phase is published before it
    # rejoins, the rest after the partitions are shared again.
    phase3 = chunks(rng, phases[2], published)
    for i, chunk in enumerate(phase3[: len(phase3) // 2]):
        publish(harness, i, chunk, published)
    again = harness.start_worker(data_dir="data-a")
    harness.wait_for(lambda: shared_by([again, second], n), timeout=30, what="partitions shared again")
    for i, chunk in enumerate(phase3[len(phase3) // 2 :]):
        publish(harness, i + 1, chunk, published)
    oracle.apply_all(published[applied:])
    settles_to_the_oracle(harness, oracle, [again, second], "phase 3 (restarted worker rejoined)")
    assert shared_by([again, second], n), "the partitions are no longer shared"
    print(f"scale-out: stop took {stop_took:.1f}s, {len(published_during_stop)} chunks published during it, "
          f"{len(published)} changes in all, {time.monotonic() - started:.1f}s")
