"""Hypothesis strategies for random valid rules and normalised records (shared by property tests)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from engine.rules import FieldType, catalog_for

CATALOG = catalog_for(
    "contact",
    {
        "plan": FieldType.STRING,
        "score": FieldType.NUMBER,
        "vip": FieldType.BOOLEAN,
        "renewal_at": FieldType.DATETIME,
        "segments": FieldType.TAGS,
    },
)

FIELDS_BY_TYPE: dict[FieldType, list[str]] = {
    FieldType.STRING: ["country", "city", "custom.plan"],
    FieldType.NUMBER: ["lifetime_value", "custom.score"],
    FieldType.BOOLEAN: ["is_subscribed", "custom.vip"],
    FieldType.DATETIME: ["created_at", "custom.renewal_at"],
    FieldType.TAGS: ["tags", "custom.segments"],
}
ALL_FIELDS = [f for fields in FIELDS_BY_TYPE.values() for f in fields]

# Written from the spec, not imported from the engine, so a missing operator is caught.
SPEC_OPERATORS: dict[FieldType, list[str]] = {
    FieldType.STRING: ["=", "!=", "contains", "doesNotContain", "beginsWith", "doesNotBeginWith",
                       "endsWith", "doesNotEndWith", "in", "notIn", "null", "notNull"],
    FieldType.NUMBER: ["=", "!=", "<", ">", "<=", ">=", "between", "notBetween", "in", "notIn",
                       "null", "notNull"],
    FieldType.BOOLEAN: ["=", "!=", "null", "notNull"],
    FieldType.DATETIME: ["=", "!=", "<", ">", "<=", ">=", "between", "notBetween", "null", "notNull"],
    FieldType.TAGS: ["hasAny", "hasAll", "hasNone", "contains", "doesNotContain", "null", "notNull"],
}

TYPE_OPERATOR_PAIRS = [(t, op) for t, ops in SPEC_OPERATORS.items() for op in ops]

STRINGS = ["Poland", "poland", "POLAND", "pol", "LAND", "and", "", "Straße", "STRASSE", "strasse",
           "x", " Poland", "de", "a,b"]
NUMBERS: list[int | float] = [-1, 0, 1, 1.5, 999.99, 1000, 1000.0, 1001, 10**6]
# epoch ms -> equivalent ISO-8601 spellings (checked independently in test_values.py)
DATES: dict[int, list[str]] = {
    0: ["1970-01-01T00:00:00Z", "1970-01-01"],
    1704067200000: ["2024-01-01T00:00:00+00:00", "2024-01-01T01:00:00+01:00", "2024-01-01"],
    1704067200001: ["2024-01-01T00:00:00.001Z"],
    1704067199999: ["2023-12-31T23:59:59.999"],
    1719792000000: ["2024-07-01T00:00:00Z"],
}
DATE_MS = sorted(DATES)
TAGS = ["vip", "VIP", "Vip", "lead", "churn", "beta", "Straße", "STRASSE"]

LIST_OPS = {"in", "notIn", "hasAny", "hasAll", "hasNone"}


def _scalar(ftype: FieldType) -> st.SearchStrategy[Any]:
    """A rule value for one scalar, in any spelling react-querybuilder might send."""
    if ftype is FieldType.STRING:
        return st.sampled_from(STRINGS)
    if ftype is FieldType.NUMBER:
        return st.sampled_from(NUMBERS).flatmap(lambda n: st.sampled_from([n, str(n)]))
    if ftype is FieldType.BOOLEAN:
        return st.sampled_from([True, False, "true", "false"])
    if ftype is FieldType.DATETIME:
        return st.sampled_from(DATE_MS).flatmap(lambda ms: st.sampled_from([ms, *DATES[ms]]))
    return st.sampled_from(TAGS)


def _sort_key(ftype: FieldType, value: Any) -> Any:
    if ftype is FieldType.NUMBER:
        return float(value)
    if isinstance(value, str):
        for ms, spellings in DATES.items():
            if value in spellings:
                return ms
    return value


def _as_value(ftype: FieldType, items: list[Any], draw: st.DrawFn) -> Any:
    """JSON list, or a comma string when every item survives react-querybuilder splitting.

    Datetime epoch-ms ints never go into comma strings: a string datetime is always ISO-8601.
    """
    texts = [str(i).lower() if isinstance(i, bool) else str(i) for i in items]
    comma_ok = all(t.strip() and "," not in t for t in texts)
    if ftype is FieldType.DATETIME and any(isinstance(i, int) for i in items):
        comma_ok = False
    if comma_ok and draw(st.booleans()):
        sep = draw(st.sampled_from([",", ", ", " , "]))
        return sep.join(texts)
    return list(items)


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    ftype, op = draw(st.sampled_from(TYPE_OPERATOR_PAIRS))
    field = draw(st.sampled_from(FIELDS_BY_TYPE[ftype]))
    cond: dict[str, Any] = {"field": field, "operator": op}
    if draw(st.booleans()):
        cond["id"] = draw(st.uuids()).hex
    if op in ("null", "notNull"):
        if draw(st.booleans()):
            cond["value"] = draw(st.sampled_from(["", "ignored", 5, None]))
    elif op in ("between", "notBetween"):
        pair = sorted(draw(st.lists(_scalar(ftype), min_size=2, max_size=2)),
                      key=lambda v: _sort_key(ftype, v))
        cond["value"] = _as_value(ftype, pair, draw)
    elif op in LIST_OPS:
        cond["value"] = _as_value(ftype, draw(st.lists(_scalar(ftype), min_size=1, max_size=4)), draw)
    else:
        cond["value"] = draw(_scalar(ftype))
    return cond


def _group(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        group: dict[str, Any] = {
            "combinator": draw(st.sampled_from(["and", "or", "AND", "Or"])),
            "rules": draw(st.lists(children, min_size=1, max_size=4)),
        }
        negated = draw(st.sampled_from([None, False, True]))
        if negated is not None:
            group["not"] = negated
        return group
    return build()


def rules(max_depth: int = 4) -> st.SearchStrategy[dict[str, Any]]:
    """Valid rule trees up to ``max_depth`` group levels (the root counts as one)."""
    strategy = _group(conditions())
    for _ in range(max_depth - 1):
        strategy = _group(st.one_of(conditions(), conditions(), strategy))
    return strategy


def _mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``common`` about 5 times in 6; hypothesis' own one_of favours the first branch."""
    return st.sampled_from([0, 0, 0, 0, 0, 1]).flatmap(lambda i: rare if i else common)


def field_value(field: str) -> st.SearchStrategy[Any]:
    """A normalised record value for ``field`` (never 'missing'; None about 1 in 6)."""
    ftype = CATALOG[field]
    value: st.SearchStrategy[Any]
    if ftype is FieldType.STRING:
        value = _mostly(st.sampled_from(STRINGS), st.text(max_size=6))
    elif ftype is FieldType.NUMBER:
        value = _mostly(st.sampled_from(NUMBERS),
                        st.one_of(st.integers(-5, 2000), st.floats(-1e7, 1e7)))
    elif ftype is FieldType.BOOLEAN:
        value = st.booleans()
    elif ftype is FieldType.DATETIME:
        value = st.sampled_from(DATE_MS).flatmap(lambda ms: st.sampled_from([ms, ms, ms - 1, ms + 1]))
    else:
        value = st.lists(st.sampled_from(TAGS), max_size=4).map(lambda tags: sorted(set(tags)))
    return _mostly(value, st.none())


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for field in ALL_FIELDS:
        if draw(st.sampled_from([True, True, True, True, False])):  # about 1 in 5 fields missing
            record[field] = draw(field_value(field))
    return record
