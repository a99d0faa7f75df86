"""Default segment resolution (engine/defaults.py): pin -> per-member default -> shared, skipping what a
member may not open, and the book that holds stored choices as the topic delivers them."""
from __future__ import annotations

from engine.defaults import (MEMBER, SHARED, DefaultsBook, Resolved, SegmentFacts, default_key, member_defaults,
                             resolve)


def seg(sid: str, object_type: str = "contact", version: int = 1, default_for: tuple[str, ...] = (),
        hidden_from: tuple[str, ...] = ()) -> SegmentFacts:
    return SegmentFacts(sid, object_type, version, frozenset(default_for), frozenset(hidden_from))


def by_id(*segments: SegmentFacts) -> dict[str, SegmentFacts]:
    return {s.id: s for s in segments}


SEGMENTS = by_id(seg("all-pl"), seg("bobs-leads", default_for=("bob",)), seg("pinned"), seg("deals", "deal"),
                 seg("secret", hidden_from=("bob",)))


def test_pin_wins_over_per_member_default_over_shared() -> None:
    shared = {"contact": "all-pl", "deal": "deals"}
    assert resolve("bob", {"contact": "pinned"}, shared, SEGMENTS) == {
        "contact": Resolved("pinned", "pin"), "deal": Resolved("deals", "shared")}
    assert resolve("bob", {}, shared, SEGMENTS)["contact"] == Resolved("bobs-leads", "member")
    assert resolve("eve", {}, shared, SEGMENTS)["contact"] == Resolved("all-pl", "shared")


def test_object_types_without_a_default_are_absent() -> None:
    assert resolve("eve", {}, {}, SEGMENTS) == {}
    assert set(resolve("eve", {}, {"deal": "deals"}, SEGMENTS)) == {"deal"}


def test_a_deleted_hidden_or_mistyped_choice_is_skipped_for_the_next_layer() -> None:
    shared = {"contact": "all-pl"}
    assert resolve("bob", {"contact": "gone"}, shared, SEGMENTS)["contact"] == Resolved("bobs-leads", "member")
    assert resolve("bob", {"contact": "secret"}, shared, SEGMENTS)["contact"] == Resolved("bobs-leads", "member")
    assert resolve("eve", {"contact": "secret"}, shared, SEGMENTS)["contact"] == Resolved("secret", "pin")
    assert resolve("eve", {"contact": "deals"}, shared, SEGMENTS)["contact"] == Resolved("all-pl", "shared")
    # A shared default hidden from the member is not theirs either.
    assert resolve("bob", {}, {"deal": "deals", "contact": "secret"}, by_id(seg("secret", hidden_from=("bob",)),
                                                                             seg("deals", "deal"))) == {
        "deal": Resolved("deals", "shared")}


def test_per_member_default_is_the_latest_saved_and_never_a_hidden_one() -> None:
    segments = [seg("old", version=5, default_for=("bob", "eve")), seg("new", version=9, default_for=("bob",)),
                seg("deal-view", "deal", default_for=("bob",)),
                seg("hidden", version=99, default_for=("bob",), hidden_from=("bob",))]
    assert member_defaults("bob", segments) == {"contact": "new", "deal": "deal-view"}
    assert member_defaults("eve", segments) == {"contact": "old"}
    assert member_defaults("zed", segments) == {}


def test_without_a_member_only_shared_defaults_apply() -> None:
    assert resolve(None, {}, {"contact": "bobs-leads"}, SEGMENTS) == {"contact": Resolved("bobs-leads", "shared")}


def test_the_book_keeps_the_latest_version_per_key_and_clears_on_null() -> None:
    book = DefaultsBook()

    def data(scope: str, member: str | None, segment_id: str | None, version: int) -> dict[str, object]:
        return {"scope": scope, "member": member, "object_type": "contact", "segment_id": segment_id,
                "version": version}

    assert book.apply("acme", data(SHARED, None, "all-pl", 10))
    assert book.apply("acme", data(MEMBER, "bob", "pinned", 10))
    assert not book.apply("acme", data(SHARED, None, "older", 9))  # a replayed or overtaken message
    assert not book.apply("acme", data(SHARED, None, "same", 10))
    assert book.shared("acme") == {"contact": "all-pl"} and book.pins("acme", "bob") == {"contact": "pinned"}
    assert book.pins("acme", "eve") == {} and book.shared("globex") == {} and book.pins("acme", None) == {}
    assert book.apply("acme", data(MEMBER, "bob", None, 11))
    assert book.pins("acme", "bob") == {} and book.version("acme", MEMBER, "bob", "contact") == 11
    assert book.version("acme", SHARED, None, "contact") == 10 and book.version("acme", SHARED, None, "deal") == 0


def test_one_key_per_workspace_scope_member_and_object_type() -> None:
    assert default_key("acme", SHARED, None, "deal") == "acme/shared/deal"
    assert default_key("acme", MEMBER, "bob", "deal") == "acme/member/bob/deal"
