from __future__ import annotations

from engine.rules import FieldIndex


def test_add_affected_remove() -> None:
    index = FieldIndex()
    index.add("a", ["country", "tags"])
    index.add("b", {"country"})
    index.add("c", ["lifetime_value"])
    assert len(index) == 3 and "a" in index and "z" not in index
    assert index.affected(["country"]) == {"a", "b"}
    assert index.affected(["tags", "lifetime_value", "unknown"]) == {"a", "c"}
    assert index.affected([]) == set()
    index.remove("a")
    index.remove("a")  # idempotent
    assert "a" not in index and len(index) == 2
    assert index.affected(["country", "tags"]) == {"b"}


def test_re_adding_replaces_fields() -> None:
    index = FieldIndex()
    index.add("a", ["country"])
    index.add("a", ["city"])
    assert index.affected(["country"]) == set()
    assert index.affected(["city"]) == {"a"}
    assert index.fields_of("a") == frozenset({"city"})
    assert len(index) == 1


def test_affected_returns_a_fresh_set() -> None:
    index = FieldIndex()
    index.add("a", ["country"])
    index.affected(["country"]).add("zzz")
    assert index.affected(["country"]) == {"a"}
