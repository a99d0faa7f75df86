"""Scenario 6: the fault scenarios over every cause of a flip. One seeded mixed workload (tests/reliability/
mixed.py: record changes, behavioural events feeding windowed and all-time aggregates, manual-clock ticks
moving relative-date rules and windows, static imports, segments referencing segments) runs under (a) kill -9
at random points with restarts on the same or an empty data directory, (b) a second worker joining and
leaving, (c) out-of-order and duplicate delivery. Right after every restart or join each segment's answers
must be complete and agree (export == count == first page) or be refused with 503 `not_ready`; at the end
both invariants hold against tests/oracle.FullOracle (invariants.every_cause_problems)."""
from __future__ import annotations

import random
import time
from dataclasses import replace

import pytest

from tests.conftest import Harness, WorkerProcess
from tests.reliability.invariants import answer_problems, every_cause_problems, fold_every_cause, settle
from tests.reliability.mixed import (SEGMENTS, MixedStream, MixedWorkload, Step, define_segments, oracle_for,
                                     publish_step)
from tests.reliability.workload import health, settled_ownership


@pytest.fixture
def manual(harness: Harness) -> Harness:
    harness.settings = replace(harness.settings, clock="manual")
    return harness


def check_answers(worker: WorkerProcess, seed: int, when: str, log: list[str]) -> None:
    """The answers of a (re)started worker, polled while it starts and once more when it is ready: complete
    and agreeing, or refused with not_ready."""
    seen = {"consistent": 0, "not_ready": 0, "not listening": 0, "moving": 0}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ready = worker_ready(worker)
        problems, round_ = answer_problems(worker.web_port, SEGMENTS, attempts=20 if ready else 2)
        seen = {k: seen[k] + round_[k] for k in seen}
        assert not problems, f"seed {seed}: {when}:\n" + "\n".join(problems)
        if ready:
            break
    log.append(f"{when}: answers {seen}")


def worker_ready(worker: WorkerProcess) -> bool:
    return bool((status := health(worker)) and status.get("ready"))


def final_check(harness: Harness, seed: int, ports: list[int], steps: list[Step], what: str) -> None:
    oracle = oracle_for(harness.catalog(), steps)
    members = oracle.membership()
    by_segment = {sid: sum(1 for _, s in members if s == sid) for sid in SEGMENTS}
    print(f"oracle members per segment: {by_segment}")
    assert all(by_segment.values()), f"seed {seed}: a segment the workload never fills proves nothing: {by_segment}"
    settle(harness, seed, what, lambda: every_cause_problems(harness, ports, oracle, sorted(oracle.versions)))
    folded = fold_every_cause(harness.events())
    causes: dict[str, int] = {}
    for event in harness.events():
        cause = event["data"].get("cause", event["type"])
        causes[cause] = causes.get(cause, 0) + 1
    print(f"{len(folded.ids)} transitions, {folded.redelivered} redelivered, events by cause {causes}")


def test_every_cause_under_kill_9_at_random_points(manual: Harness, seed: int) -> None:
    """Three SIGKILLs while the mixed workload flows, each restart on the same or an empty data directory
    (both at least once), one restart killed again while it starts; the answers are checked through every
    restart, the invariants at the end."""
    harness = manual
    rng = random.Random(seed)
    define_segments(harness, int(time.time() * 1000))
    workload = MixedWorkload(rng)
    restarts = rng.sample(["same", "new", rng.choice(["same", "new"])], 3)
    during_start = rng.randrange(3)  # that restart is killed again while it starts, then restarted once more
    data_dir, log = "data-0", [f"{len(workload.steps)} steps, about {workload.messages} messages"]
    worker = harness.start_worker(data_dir)
    stream = MixedStream(harness, workload.steps, pause=0.1).start()
    for n, how in enumerate(restarts):
        time.sleep(rng.uniform(0.3, 4.0))
        status = health(worker)
        log.append(f"kill {n + 1} ({'ready' if status and status['ready'] else 'starting'}, "
                   f"{len(stream.published)} steps published), restart on {how} directory")
        worker.kill()
        stream.hold()
        if how == "new":
            data_dir = f"data-{n + 1}"
        worker = harness.launch_worker(data_dir)
        if n == during_start:
            time.sleep(rng.uniform(0.5, 3.0))
            log.append(f"kill {n + 1}b while it starts ({'ready' if worker_ready(worker) else 'starting'})")
            worker.kill()
            worker = harness.launch_worker(data_dir)
        check_answers(worker, seed, f"after restart {n + 1}", log)
        stream.release()
    steps = stream.finish()
    print("\n".join(log))
    final_check(harness, seed, [worker.web_port], steps, "every cause after the kills")


def test_every_cause_while_a_second_worker_joins_and_leaves(manual: Harness, seed: int) -> None:
    """A second worker joins, is killed (SIGKILL) or stopped (SIGTERM), joins again on its own or an empty
    data directory, twice, while the mixed workload flows; answers are checked on both workers after each
    join, the invariants on both once the group is stable."""
    harness = manual
    rng = random.Random(seed)
    define_segments(harness, int(time.time() * 1000))
    workload = MixedWorkload(rng)
    anchor = harness.start_worker("data-a")
    stream = MixedStream(harness, workload.steps, pause=0.1).start()
    log: list[str] = []
    generation, second = 0, None
    for n, leave in enumerate(rng.sample(["SIGKILL", "SIGTERM"], 2)):
        time.sleep(rng.uniform(0.5, 2.5))
        second = harness.launch_worker(f"data-b{generation}")
        time.sleep(rng.uniform(0.5, 2.0))
        stream.hold()
        check_answers(second, seed, f"join {n + 1}, while :{second.web_port} starts", log)
        harness.wait_for(lambda: settled_ownership([anchor, second], harness.settings.partitions), 60, "a shared group")
        for worker in (anchor, second):
            check_answers(worker, seed, f"join {n + 1}, on :{worker.web_port}", log)
        stream.release()
        time.sleep(rng.uniform(0.5, 2.5))
        log.append(f"{leave} the second worker ({len(stream.published)} steps published)")
        if leave == "SIGKILL":
            second.kill()
        else:
            second.stop()
        generation += rng.random() < 0.5
    assert second is not None
    second = harness.launch_worker(f"data-b{generation}")
    steps = stream.finish()
    print("\n".join(log))
    second.wait_ready(timeout=90)
    harness.wait_for(lambda: settled_ownership([anchor, second], harness.settings.partitions), 90, "a stable group")
    for worker in (anchor, second):
        check_answers(worker, seed, f"final join, on :{worker.web_port}", log)
    final_check(harness, seed, [anchor.web_port, second.web_port], steps, "every cause after the joins and leaves")


def messy(rng: random.Random, steps: list[Step]) -> tuple[list[Step], dict[str, int]]:
    """The steps as producers with retries and replays deliver them: a record's newer change before its
    older one, old changes re-sent, whole steps (changes, events, imports, ticks) delivered twice in a row,
    events re-sent several steps later, an older tick after a newer one."""
    made = {"swapped": 0, "step twice": 0, "old change re-sent": 0, "events re-sent later": 0, "old tick": 0}
    changes = [list(s.changes) for s in steps]
    where = [(i, j) for i, s in enumerate(steps) for j in range(len(s.changes))]
    for _ in range(150):  # swap a change with its record's next change, in the same step or a few rounds later
        i, j = rng.choice(where)
        rid = changes[i][j]["id"]
        later = [(k, m) for k, m in where if (i, j) < (k, m) and k <= i + 12 and changes[k][m]["id"] == rid]
        if later:
            k, m = later[0]
            changes[i][j], changes[k][m] = changes[k][m], changes[i][j]
            made["swapped"] += 1
    out: list[Step] = []
    ticks: list[int] = []
    for step, mine in zip(steps, changes):
        step = replace(step, changes=tuple(mine))
        out.append(step)
        if step.kind == "tick":
            ticks.append(step.now)
            if len(ticks) > 2 and rng.random() < 0.3:
                out.append(Step("tick", now=ticks[-3]))
                made["old tick"] += 1
        if rng.random() < 0.15:
            out.append(step)
            made["step twice"] += 1
        if step.kind == "changes" and len(out) > 10 and rng.random() < 0.5:
            old = [c for s in out[-10:] for c in s.changes]
            if old:
                out.append(Step("changes", changes=tuple(rng.sample(old, min(len(old), 5)))))
                made["old change re-sent"] += 1
        if step.kind == "events" and rng.random() < 0.3:
            earlier = [s for s in out[-12:] if s.kind == "events"]
            out.append(Step("events", events=tuple(rng.sample(earlier[0].events, min(10, len(earlier[0].events))))))
            made["events re-sent later"] += 1
    return out, made


def test_every_cause_with_out_of_order_and_duplicate_delivery(manual: Harness, seed: int) -> None:
    """The mixed workload delivered out of order and with duplicates (see `messy`); one worker, no fault.
    Answers are checked once the worker is ready, the invariants at the end."""
    harness = manual
    rng = random.Random(seed)
    define_segments(harness, int(time.time() * 1000))
    steps, made = messy(rng, MixedWorkload(rng).steps)
    print(f"{len(steps)} steps: {made}")
    assert made["swapped"] > 10 and made["step twice"] > 3, f"seed {seed}: not messy enough: {made}"
    worker = harness.start_worker()
    for index, step in enumerate(steps):
        publish_step(harness, step, index)
    log: list[str] = []
    check_answers(worker, seed, "after publishing", log)
    print("\n".join(log))
    final_check(harness, seed, [worker.web_port], steps, "every cause after out-of-order and duplicate delivery")
