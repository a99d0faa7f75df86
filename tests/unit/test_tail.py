"""The pure parts of `segment-engine tail`: dedupe window, --seek parsing, line format, filtering."""
from __future__ import annotations

import io

import orjson
import pytest

from engine.envelope import encode, envelope, transition_id
from engine.tail import Deduplicator, Printer, TailResult, format_line, parse_seek, parse_seeks


def entered(record_id: str, segment_id: str = "vips", record_version: int = 1) -> bytes:
    event_id = transition_id("acme", "contact", record_id, segment_id, 7, record_version, "segment.entered")
    data = {"object_type": "contact", "segment_id": segment_id, "record_id": record_id,
            "record_version": record_version, "segment_version": 7, "cause": "change", "at": 0}
    return encode(envelope("segment.entered", data, workspace="acme", id_=event_id))


def test_the_same_envelope_twice_is_printed_once_and_counted() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = Printer(as_json=True, out=out, err=err)
    value = entered("c1")
    assert printer.handle(0, 5, value) and printer.handle(0, 6, value)
    assert out.getvalue() == value.decode() + "\n"  # the envelope unchanged
    assert (printer.result.printed, printer.result.duplicates) == (1, 1)
    assert err.getvalue() == ""


def test_a_redelivery_with_another_wall_clock_time_is_still_a_duplicate() -> None:
    # The engine re-emits a transition with the same id; only envelope `time` may differ.
    first = orjson.loads(entered("c1"))
    again = dict(first, time="2030-01-01T00:00:00.000Z")
    printer = Printer(as_json=True, out=io.StringIO())
    printer.handle(1, 0, orjson.dumps(first))
    printer.handle(1, 1, orjson.dumps(again))
    assert (printer.result.printed, printer.result.duplicates) == (1, 1)


def test_distinct_transitions_are_all_printed() -> None:
    out = io.StringIO()
    printer = Printer(as_json=False, out=out)
    for offset, value in enumerate([entered("c1"), entered("c1", record_version=2), entered("c2")]):
        printer.handle(3, offset, value)
    assert printer.result.printed == 3 and printer.result.duplicates == 0
    assert [line.split()[0] for line in out.getvalue().splitlines()] == ["p3@0", "p3@1", "p3@2"]


def test_dedupe_window_is_bounded_and_least_recently_seen_goes_first() -> None:
    window = Deduplicator(capacity=2)
    assert not window.seen("a") and not window.seen("b")
    assert window.seen("a")  # refreshes a
    assert not window.seen("c")  # evicts b, the least recently seen
    assert len(window) == 2
    assert window.seen("a") and window.seen("c")
    assert not window.seen("b")  # forgotten, so printed again
    assert window.skipped == 3


def test_segment_filter_and_unreadable_messages() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = Printer(as_json=True, segments=["vips", "leads"], out=out, err=err)
    printer.handle(0, 0, entered("c1", "vips"))
    printer.handle(0, 1, entered("c1", "other"))
    printer.handle(0, 2, entered("c2", "leads"))
    printer.handle(0, 3, b"not json")
    assert [orjson.loads(line)["data"]["segment_id"] for line in out.getvalue().splitlines()] == ["vips", "leads"]
    assert (printer.result.filtered, printer.result.unreadable) == (1, 1)
    assert "p0@3" in err.getvalue()


def test_text_line_starts_with_partition_and_offset() -> None:
    line = format_line(2, 1500, orjson.loads(entered("c9")))
    assert line.startswith("p2@1500  ") and "ENTERED" in line and "acme/contact/c9" in line and "vips" in line
    deleted = envelope("segment.deleted", {"object_type": "contact", "segment_id": "vips", "segment_version": 9},
                       workspace="acme", id_="x")
    assert format_line(0, 3, deleted).startswith("p0@3  ") and "DELETED" in format_line(0, 3, deleted)


def test_parse_seek() -> None:
    assert parse_seek("2:1500") == (2, 1500)
    assert parse_seeks(["0:5", "3:0"]) == {0: 5, 3: 0}
    for bad in ["2", "a:1", "1:b", "-1:0", "1:-3", ""]:
        with pytest.raises(ValueError):
            parse_seek(bad)
    with pytest.raises(ValueError, match="twice"):
        parse_seeks(["1:0", "1:5"])


def test_summary_reports_duplicates_and_unapplied_seeks() -> None:
    result = TailResult(printed=4, duplicates=2, unapplied_seeks={3: 10})
    assert result.summary() == ("segment-engine tail: 4 event(s) printed, 2 duplicate(s) skipped; "
                                "--seek not applied (partition not assigned to this consumer): 3:10")
