"""The cost meter counts every evaluation of a segment, times a sample of them, and never changes a result."""
from __future__ import annotations

from engine.costs import SAMPLE_EVERY
from engine.membership import Change, apply_change
from engine.registry import SegmentRegistry
from engine.rules import catalog_for
from engine.workspaces import Workspaces

NOW = 1_790_000_000_000
PL = {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "PL"}]}


def define(reg: SegmentRegistry, version: int, rule: dict) -> None:
    reg.apply({"type": "segment.defined", "workspace": "acme",
               "data": {"id": "pl", "object_type": "contact", "name": "pl", "version": version, "rule": rule}})


def test_every_evaluation_is_counted_a_sample_timed_and_results_unchanged() -> None:
    reg = SegmentRegistry(Workspaces({("acme", "contact"): catalog_for("contact")}))
    define(reg, 1, PL)
    segments = reg.segment_set("acme", "contact")
    state = None
    members = []
    for version in range(1, SAMPLE_EVERY * 4 + 1):
        outcome = apply_change(state, Change("upsert", "contact", "c1", version,
                                             {"country": "PL" if version % 2 else "DE"}), segments, NOW)
        state = outcome.state
        members.append("pl" in state.members)  # type: ignore[union-attr]
    assert members == [version % 2 == 1 for version in range(1, SAMPLE_EVERY * 4 + 1)]
    cost = reg.meter.costs["acme/contact/pl"]
    assert cost.calls == SAMPLE_EVERY * 4 and cost.sampled == 4 and cost.sampled_ns > 0
    figures = reg.meter.snapshot("acme/")
    assert figures["acme/contact/pl"]["evaluations_per_s"] > 0 and figures["acme/contact/pl"]["cpu_ms_per_s"] > 0
    assert reg.meter.snapshot("globex/") == {}
    # A redefinition keeps accumulating under the same segment key.
    define(reg, 2, {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "DE"}]})
    apply_change(state, Change("upsert", "contact", "c1", 1_000, {"country": "FR"}), reg.segment_set("acme", "contact"), NOW)
    assert reg.meter.costs["acme/contact/pl"].calls == SAMPLE_EVERY * 4 + 1
