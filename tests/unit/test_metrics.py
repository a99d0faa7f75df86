"""Tallied metrics (engine.metrics: the hot path's per-message counters and histograms, added once per
fetch) must serve exactly what prometheus_client's own increments would."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from engine import metrics

BUCKETS = (0, 1, 2.5, 10, 100)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in registry.collect() for s in family.samples}


@given(st.lists(st.lists(st.one_of(st.integers(0, 200), st.floats(0, 200)), max_size=20), max_size=4))
def test_a_tallied_histogram_serves_what_observing_each_value_would(fetches: list[list[float]]) -> None:
    direct_registry, tallied_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", buckets=BUCKETS, registry=direct_registry)
    tallied = Histogram("h", "h", buckets=BUCKETS, registry=tallied_registry)
    tally = metrics.HistogramTally(tallied)
    try:
        for fetch in fetches:
            for amount in fetch:
                direct.observe(amount)
                tally.observe(amount)
            tally.flush()
            got, want = samples(tallied_registry), samples(direct_registry)
            assert got.pop(("h_sum", ())) == pytest.approx(want.pop(("h_sum", ())))  # (summed in another order)
            assert got == want
    finally:
        metrics.TALLIES.remove(tally)


def test_a_tallied_counter_reaches_the_metric_only_when_flushed() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "c", registry=registry)
    tally = metrics.CounterTally(counter)
    try:
        tally.inc()
        tally.inc(2)
        assert registry.get_sample_value("c_total") == 0
        metrics.flush_tallies()
        assert registry.get_sample_value("c_total") == 3
        metrics.flush_tallies()
        assert registry.get_sample_value("c_total") == 3
    finally:
        metrics.TALLIES.remove(tally)
