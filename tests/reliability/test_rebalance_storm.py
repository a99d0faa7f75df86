"""Scenario 2: a rebalance storm. One worker stays up; a second and a third join and leave again and again
while changes flow: leaving by SIGTERM (a graceful stop, where Faust's committed offsets can still run
ahead of the applied state) and by SIGKILL (the group notices only after the session timeout), joining
back on their old data directory or on an empty one. Joins do not wait for the worker to be ready, so
rebalances overlap."""
from __future__ import annotations

import random
import time

from engine.sample_data import contact_changes
from tests.conftest import Harness, WorkerProcess
from tests.oracle import Oracle
from tests.reliability.invariants import fixed_definition_problems, fold, settle
from tests.reliability.workload import FIXTURE_RULES, Stream, define_fixture_segments, settled_ownership

CHANGES, RECORDS = 6000, 300


def test_workers_join_and_leave_while_changes_flow(harness: Harness, seed: int) -> None:
    """Invariants once the group is stable again, on the API of every worker left running (segment
    queries fan out, record queries are forwarded to the owner): members, counts and stored records
    equal the oracle's from-scratch evaluation; the deduplicated events fold to the same membership; the
    emitted transitions are exactly the sequential oracle's, each under one id."""
    rng = random.Random(seed)
    version = int(time.time() * 1000)
    define_fixture_segments(harness, version)
    changes = list(contact_changes(rng, CHANGES, records=RECORDS))

    # The plan: both extra workers join, then four leaves (two SIGTERM, two SIGKILL, in random order),
    # each followed by the leaver joining back on its own or on a fresh data directory.
    plan: list[tuple[str, str]] = [("join", "b"), ("join", "c")]
    for how in rng.sample(["SIGTERM", "SIGTERM", "SIGKILL", "SIGKILL"], 4):
        name = rng.choice("bc")
        plan += [(how, name), (rng.choice(["join", "join-empty"]), name)]

    anchor = harness.start_worker("data-a")
    stream = Stream(harness, changes, chunk=30, pause=0.15).start()  # about 30 s of changes
    running: dict[str, WorkerProcess] = {}
    left: dict[str, WorkerProcess] = {}
    generation = {"b": 0, "c": 0}
    log: list[str] = []
    started = time.monotonic()
    for action, name in plan:
        time.sleep(rng.uniform(1.0, 3.5))
        if action == "SIGTERM":  # not waited for: the storm goes on while the worker shuts down
            left[name] = running.pop(name)
            left[name].process.terminate()  # type: ignore[union-attr]
        elif action == "SIGKILL":
            left[name] = running.pop(name)
            left[name].kill()
        else:
            if name in left:
                left.pop(name).stop()  # its RocksDB must be released before anyone opens that directory
            generation[name] += action == "join-empty"
            running[name] = harness.launch_worker(f"data-{name}{generation[name]}")
        log.append(f"{time.monotonic() - started:5.1f}s {action} {name} ({len(stream.published)} changes published, "
                   f"stream {'flowing' if stream.flowing else 'done'})")
    published = stream.finish()
    print("\n".join(log))
    assert sum("flowing" in line for line in log) >= 6, f"seed {seed}: the storm did not overlap the stream: {log}"

    workers = [anchor, *running.values()]
    for worker in workers:
        worker.wait_ready(timeout=90)
    harness.wait_for(lambda: settled_ownership(workers, harness.settings.partitions), 90, "a stable group")
    oracle = Oracle(harness.catalog(), dict(FIXTURE_RULES)).apply_all(published)
    assert len(oracle.membership()) > 50, "workload too unselective to prove anything"
    settle(harness, seed, "membership after the storm",
           lambda: fixed_definition_problems(harness, [w.web_port for w in workers], oracle,
                                             dict.fromkeys(FIXTURE_RULES, version)))
    folded = fold(harness.events())
    print(f"{len(folded.ids)} transitions, {folded.redelivered} redelivered duplicates, "
          f"{len(workers)} workers at the end")
