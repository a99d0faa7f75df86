"""What each segment's rule costs to evaluate, measured on live traffic by sampling.

Every call of a segment's rule is counted; one call in SAMPLE_EVERY is timed. Cost per second is then
(calls × mean sampled time) / uptime. Timing every call would cost more than most rules do.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from engine.rules import WALL_CLOCK, Context

SAMPLE_EVERY = 32
# A segment is "too heavy" when evaluating it takes at least this much CPU per second across all
# workers: 100 ms/s is a tenth of a core spent on one segment.
TOO_HEAVY_CPU_MS_PER_S = 100.0

Predicate = Callable[[Mapping[str, Any], Context], bool]


@dataclass
class SegmentCost:
    calls: int = 0
    sampled: int = 0
    sampled_ns: int = 0


@dataclass
class CostMeter:
    started: float = field(default_factory=time.monotonic)
    costs: dict[str, SegmentCost] = field(default_factory=dict)

    def wrap(self, seg_key: str, matches: Predicate) -> Predicate:
        """`matches`, counted and sampled under `seg_key` (stats survive redefinitions of the segment)."""
        cost = self.costs.setdefault(seg_key, SegmentCost())
        clock = time.perf_counter_ns

        def measured(record: Mapping[str, Any], context: Context = WALL_CLOCK) -> bool:
            cost.calls += 1
            if cost.calls % SAMPLE_EVERY:
                return matches(record, context)
            begin = clock()
            result = matches(record, context)
            cost.sampled_ns += clock() - begin
            cost.sampled += 1
            return result

        return measured

    def snapshot(self, prefix: str = "") -> dict[str, dict[str, float]]:
        """Per segment key: evaluations and CPU time spent, per second of this worker's uptime."""
        uptime = max(time.monotonic() - self.started, 1e-3)
        out: dict[str, dict[str, float]] = {}
        for key, cost in self.costs.items():
            if key.startswith(prefix):
                mean_ns = cost.sampled_ns / cost.sampled if cost.sampled else 0.0
                out[key] = {"evaluations_per_s": cost.calls / uptime, "cpu_ms_per_s": cost.calls * mean_ns / 1e6 / uptime}
        return out
