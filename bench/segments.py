"""Random but realistic contact segments, the kind a CRM user builds in the query builder.

Rules combine equality/in on categorical fields, ranges on numbers and dates, tag sets and the demo
workspace's custom plan, nested one to three levels. They are selective on purpose: a contact matches a
small fraction of them, so one change flips a few memberships, not hundreds.
"""
from __future__ import annotations

import random
from datetime import timedelta
from typing import Any, Callable

from engine.rules import load_rule
from engine.sample_data import COUNTRIES, EPOCH, LANGUAGES, PLANS, SOURCES, STATUSES, TAGS
from engine.settings import SAMPLES
from engine.workspaces import load_workspaces

Rule = dict[str, Any]


def _pick(rng: random.Random, field: str, options: list[str]) -> Rule:
    if rng.random() < 0.6:
        return {"field": field, "operator": "=", "value": rng.choice(options)}
    return {"field": field, "operator": "in", "value": rng.sample(options, 2)}


def _money(rng: random.Random) -> Rule:
    if rng.random() < 0.5:
        return {"field": "lifetime_value", "operator": ">", "value": rng.choice([1000, 2000, 2500, 4000])}
    lo = rng.choice([0, 250, 1000, 2500])
    return {"field": "lifetime_value", "operator": "between", "value": [lo, lo + rng.choice([500, 1000, 1500])]}


def _score(rng: random.Random) -> Rule:
    if rng.random() < 0.5:
        return {"field": "lead_score", "operator": ">=", "value": rng.randint(60, 90)}
    lo = rng.randint(0, 70)
    return {"field": "lead_score", "operator": "between", "value": [lo, lo + rng.randint(10, 30)]}


def _created(rng: random.Random) -> Rule:
    start = EPOCH + timedelta(days=rng.randint(0, 330))
    end = start + timedelta(days=rng.randint(20, 90))
    return {"field": "created_at", "operator": "between", "value": [start.isoformat(), end.isoformat()]}


def _tags(rng: random.Random) -> Rule:
    if rng.random() < 0.6:
        return {"field": "tags", "operator": "hasAny", "value": rng.sample(TAGS, rng.randint(1, 2))}
    return {"field": "tags", "operator": "hasAll", "value": rng.sample(TAGS, 2)}


CONDITIONS: list[Callable[[random.Random], Rule]] = [
    lambda r: _pick(r, "country", COUNTRIES),
    lambda r: _pick(r, "status", STATUSES),
    lambda r: _pick(r, "source", SOURCES),
    lambda r: _pick(r, "language", LANGUAGES),
    lambda r: {"field": "custom.plan", "operator": "=", "value": r.choice(PLANS)},
    lambda r: {"field": "is_subscribed", "operator": "=", "value": True},
    _money,
    _score,
    _created,
    _tags,
]


def _rule(rng: random.Random) -> Rule:
    """AND of 3–4 plain conditions; half the time one more child, an OR of alternatives (level 2) of which
    one may itself be an AND pair (level 3). Plain conditions at the root keep every segment selective."""
    makers = rng.sample(CONDITIONS, 6)
    rules = [make(rng) for make in makers[: rng.randint(3, 4)]]
    if rng.random() < 0.5:
        alternatives = [make(rng) for make in makers[4 : 4 + rng.randint(1, 2)]]
        if rng.random() < 0.4:
            alternatives.append({"combinator": "and", "rules": [make(rng) for make in rng.sample(CONDITIONS, 2)]})
        if len(alternatives) == 1:
            alternatives.append(rng.choice(CONDITIONS)(rng))
        rules.append({"combinator": "or", "rules": alternatives})
    return {"combinator": "and", "rules": rules}


def random_segments(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """`count` validated segment definitions for workspace "demo", object type contact."""
    catalog = load_workspaces(SAMPLES / "workspaces.json").catalog("demo", "contact")
    assert catalog is not None
    segments = []
    for i in range(count):
        rule = _rule(rng)
        load_rule(rule, catalog)  # raises InvalidRule if the generator ever drifts from the catalog
        segments.append({"id": f"bench-{i:04d}", "object_type": "contact", "name": f"Bench segment {i}", "rule": rule})
    return segments


def match_rate(segments: list[dict[str, Any]], samples: int = 500, seed: int = 7) -> float:
    """Mean fraction of the segments a random full contact matches (a quick selectivity check)."""
    from engine.rules import normalize_fields
    from engine.sample_data import full_contact

    catalog = load_workspaces(SAMPLES / "workspaces.json").catalog("demo", "contact")
    assert catalog is not None
    compiled = [load_rule(s["rule"], catalog).matches for s in segments]
    rng = random.Random(seed)
    hits = 0
    for _ in range(samples):
        record = normalize_fields(full_contact(rng), catalog)
        hits += sum(1 for m in compiled if m(record))
    return hits / (samples * len(compiled))
