"""What each segment's rule costs to evaluate, measured on live traffic by sampling.

Every call of a segment's rule is counted; one call in SAMPLE_EVERY is timed. Cost per second is then
(calls × mean sampled time) / uptime. Timing every call would cost more than most rules do.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from engine.rules import Context

SAMPLE_EVERY = 32
# A segment is "too heavy" when evaluating it takes at least this much CPU per second across all
# workers: 100 ms/s is a tenth of a core spent on one segment.
TOO_HEAVY_CPU_MS_PER_S = 100.0

Predicate = Callable[[Mapping[str, Any], Context], bool]


@dataclass(slots=True)
class SegmentCost:
    calls: int = 0
    sampled: int = 0
    sampled_ns: int = 0


def timed(cost: SegmentCost, matches: Predicate, record: Mapping[str, Any], context: Context) -> bool:
    """`matches(record, context)`, timed into `cost`: the evaluation loop counts every call and times
    the ones where `cost.calls % SAMPLE_EVERY == 0` (a wrapper per call cost a fifth of an evaluation)."""
    begin = time.perf_counter_ns()
    result = matches(record, context)
    cost.sampled_ns += time.perf_counter_ns() - begin
    cost.sampled += 1
    return result


@dataclass
class CostMeter:
    started: float = field(default_factory=time.monotonic)
    costs: dict[str, SegmentCost] = field(default_factory=dict)

    def cost(self, seg_key: str) -> SegmentCost:
        """The counters of `seg_key` (they survive redefinitions of the segment)."""
        return self.costs.setdefault(seg_key, SegmentCost())

    def snapshot(self, prefix: str = "") -> dict[str, dict[str, float]]:
        """Per segment key: evaluations and CPU time spent, per second of this worker's uptime."""
        uptime = max(time.monotonic() - self.started, 1e-3)
        out: dict[str, dict[str, float]] = {}
        for key, cost in self.costs.items():
            if key.startswith(prefix):
                mean_ns = cost.sampled_ns / cost.sampled if cost.sampled else 0.0
                out[key] = {"evaluations_per_s": cost.calls / uptime, "cpu_ms_per_s": cost.calls * mean_ns / 1e6 / uptime}
        return out
