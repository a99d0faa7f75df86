"""The cost meter counts every evaluation, times a sample of them, and never changes a result."""
from __future__ import annotations

from engine.costs import SAMPLE_EVERY, CostMeter


def test_meter_counts_samples_and_keeps_results() -> None:
    meter = CostMeter()
    is_even = meter.wrap("acme/contact/even", lambda record, context: record["n"] % 2 == 0)
    results = [is_even({"n": n}) for n in range(SAMPLE_EVERY * 4)]
    assert results == [n % 2 == 0 for n in range(SAMPLE_EVERY * 4)]
    cost = meter.costs["acme/contact/even"]
    assert cost.calls == SAMPLE_EVERY * 4 and cost.sampled == 4 and cost.sampled_ns > 0
    figures = meter.snapshot("acme/")
    assert figures["acme/contact/even"]["evaluations_per_s"] > 0 and figures["acme/contact/even"]["cpu_ms_per_s"] > 0
    assert meter.snapshot("globex/") == {}
    # A redefinition keeps accumulating under the same segment key.
    again = meter.wrap("acme/contact/even", lambda record, context: True)
    again({"n": 1})
    assert meter.costs["acme/contact/even"].calls == SAMPLE_EVERY * 4 + 1
