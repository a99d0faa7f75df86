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


# ---- realistic contacts and Zipf-distributed updates (the bench's workload) -------------------------
# Everything above is unchanged (the demo and the tests use it). Below: contacts with every standard
# contact field plus the demo workspace's custom fields (23 fields), and update streams whose record ids
# follow a Zipf law, so a few records change often and most rarely, as in a real CRM.

FIRST_NAMES = ["Anna", "Piotr", "Maria", "Jan", "Emma", "Lukas", "Olivia", "James", "Chloe", "Hugo", "Ewa", "Tomas"]
LAST_NAMES = ["Nowak", "Kowalski", "Müller", "Schmidt", "Smith", "Jones", "Martin", "Bernard", "Novák", "García"]
CITIES = ["Warsaw", "Kraków", "Berlin", "Munich", "New York", "Austin", "London", "Paris", "Prague", "Madrid"]
OWNERS = ["alice", "bob", "carol", "dave", "erin", "frank"]
PRIORITIES = ["low", "medium", "high"]
CAMPAIGNS = ["spring-sale", "black-friday", "webinar-q1", "onboarding", "winback", "newsletter-weekly"]

REALISTIC_FIELD_MAKERS: dict[str, Any] = {
    **{name: make for name, make in FIELD_MAKERS.items() if name != "last_contact_at"},
    # Deterministic (no wall clock), unlike the demo's "about 30 days ago" last_contact_at above.
    "last_contact_at": lambda r: (EPOCH + timedelta(minutes=r.randint(0, 500_000))).isoformat(),
    "first_name": lambda r: r.choice(FIRST_NAMES),
    "last_name": lambda r: r.choice(LAST_NAMES),
    "phone": lambda r: None if r.random() < 0.2 else f"+48 {r.randint(500_000_000, 899_999_999)}",
    "owner": lambda r: r.choice(OWNERS),
    "priority": lambda r: r.choice(PRIORITIES),
    "city": lambda r: r.choice(CITIES),
    "updated_at": lambda r: (EPOCH + timedelta(minutes=r.randint(0, 500_000))).isoformat(),
    "campaigns": lambda r: r.sample(CAMPAIGNS, r.randint(0, 2)),
    "custom.seats": lambda r: r.choice([1, 1, 2, 5, 10, 25, 100]),
    "custom.beta_tester": lambda r: r.random() < 0.1,
    "custom.renewal_at": lambda r: (EPOCH + timedelta(days=r.randint(0, 720))).isoformat(),
}
# Fields an update may touch: every field but created_at (a contact is created once).
UPDATABLE_FIELDS = [name for name in REALISTIC_FIELD_MAKERS if name != "created_at"]


def realistic_contact(rng: random.Random) -> dict[str, Any]:
    """A contact with all 23 fields of the demo workspace's contact catalog (19 standard + 4 custom)."""
    return {name: make(rng) for name, make in REALISTIC_FIELD_MAKERS.items()}


def contact_create(record_id: str, seed: int = 0, version: int = 1) -> dict[str, Any]:
    """The full create of one contact; the same (record_id, seed) always gives the same contact."""
    rng = random.Random(f"{seed}/{record_id}")
    return {"op": "upsert", "object_type": "contact", "id": record_id, "version": version,
            "fields": realistic_contact(rng)}


class Zipf:
    """Ranks 0..n-1 drawn with P(rank k) proportional to 1 / (k + 1)^s (inverse CDF: bisection over the
    cumulative weights, what `random.choices(cum_weights=...)` does)."""

    def __init__(self, n: int, s: float = 1.0) -> None:
        total = 0.0
        self.cum: list[float] = []
        for k in range(1, n + 1):
            total += 1.0 / k**s
            self.cum.append(total)
        self.population = range(n)

    def draw(self, rng: random.Random, count: int) -> list[int]:
        return rng.choices(self.population, cum_weights=self.cum, k=count)


def zipf_contact_updates(rng: random.Random, count: int, records: int, s: float = 1.0, delete_rate: float = 0.005,
                         seed: int = 0) -> list[dict[str, Any]]:
    """`count` changes of contacts that already exist at version 1 (see `contact_create`), their ids
    `c0`..`c<records-1>` drawn from a Zipf law of exponent `s` (`c0` is the busiest).

    An update touches 1-3 fields of UPDATABLE_FIELDS; `delete_rate` of the changes are deletes, and the
    next change of a deleted contact re-creates it in full (a new contact under the old id). Versions
    grow by 1-3 per change, from 2."""
    versions: dict[str, int] = {}
    deleted: set[str] = set()
    out: list[dict[str, Any]] = []
    for rank in Zipf(records, s).draw(rng, count):
        record_id = f"c{rank}"
        version = versions.get(record_id, 1) + rng.randint(1, 3)
        versions[record_id] = version
        if record_id in deleted:
            deleted.discard(record_id)
            out.append(contact_create(record_id, seed=seed + version, version=version))
        elif rng.random() < delete_rate:
            deleted.add(record_id)
            out.append({"op": "delete", "object_type": "contact", "id": record_id, "version": version})
        else:
            fields = {name: REALISTIC_FIELD_MAKERS[name](rng) for name in rng.sample(UPDATABLE_FIELDS, rng.randint(1, 3))}
            out.append({"op": "upsert", "object_type": "contact", "id": record_id, "version": version, "fields": fields})
    return out
