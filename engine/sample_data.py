"""Realistic random contact changes for the demo, tests and benchmarks.

Creates contacts with a full set of fields, then streams partial updates touching 1–3 fields (and the
odd delete), with per-record versions that only grow, the way an upstream CRM would publish them.
"""
from __future__ import annotations

import random
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

COUNTRIES = ["PL", "DE", "US", "GB", "FR", "CZ", "ES"]
STATUSES = ["lead", "customer", "churned", "prospect"]
SOURCES = ["ads", "webinar", "referral", "organic", "import"]
LANGUAGES = ["pl", "de", "en", "fr", "es"]
TAGS = ["vip", "partner", "newsletter", "trial", "beta", "event-2026"]
PLANS = ["free", "pro", "enterprise"]
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)

FIELD_MAKERS: dict[str, Any] = {
    "country": lambda r: r.choice(COUNTRIES),
    "status": lambda r: r.choice(STATUSES),
    "source": lambda r: r.choice(SOURCES),
    "language": lambda r: r.choice(LANGUAGES),
    "lifetime_value": lambda r: r.choice([0, 250, 999, 1000, 1001, 2500, round(r.uniform(0, 5000), 2)]),
    "lead_score": lambda r: r.randint(0, 100),
    "is_subscribed": lambda r: r.random() < 0.5,
    "tags": lambda r: r.sample(TAGS, r.randint(0, 3)),
    "email": lambda r: None if r.random() < 0.1 else f"user{r.randint(1, 10**6)}@example.com",
    "custom.plan": lambda r: r.choice(PLANS),
    "created_at": lambda r: (EPOCH + timedelta(minutes=r.randint(0, 500_000))).isoformat(),
    # Around 30 days ago, so "no contact for 30 days" has records crossing the line every minute or so.
    "last_contact_at": lambda r: time.time_ns() // 1_000_000 - 30 * 86_400_000 + r.randint(-3 * 3_600_000, 600_000),
}


def full_contact(rng: random.Random) -> dict[str, Any]:
    return {name: make(rng) for name, make in FIELD_MAKERS.items()}


def contact_changes(rng: random.Random, count: int, records: int, delete_rate: float = 0.02) -> Iterator[dict[str, Any]]:
    """`count` changes over `records` contact ids; the first change of a record creates it in full."""
    versions: dict[str, int] = {}
    names = list(FIELD_MAKERS)
    for _ in range(count):
        record_id = f"c{rng.randrange(records)}"
        fresh = record_id not in versions
        version = versions.get(record_id, 0) + rng.randint(1, 3)
        versions[record_id] = version
        if not fresh and rng.random() < delete_rate:
            yield {"op": "delete", "object_type": "contact", "id": record_id, "version": version}
            continue
        if fresh:
            fields = full_contact(rng)
        else:
            fields = {name: FIELD_MAKERS[name](rng) for name in rng.sample(names, rng.randint(1, 3))}
        yield {"op": "upsert", "object_type": "contact", "id": record_id, "version": version, "fields": fields}


def purchases(rng: random.Random, count: int, records: int) -> list[dict[str, Any]]:
    """`count` purchase events (behavioural events) happening now, for random contacts."""
    now = time.time_ns() // 1_000_000
    return [
        {"id": uuid.uuid4().hex, "object_type": "contact", "record_id": f"c{rng.randrange(records)}",
         "name": "purchase", "at": now, "properties": {"amount": rng.choice([20, 90, 250, 600]), "currency": "EUR"}}
        for _ in range(count)
    ]
