"""react-querybuilder JSON -> typed rule tree (model.Group).

Only shape is checked here (objects, lists, strings where required); field names,
operators and value types are checked against a catalog in validate.py.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidRule, RuleProblem
from .model import Condition, Group, Rule

#: Operators whose value is a list; react-querybuilder may send it as "a, b, c".
LIST_OPERATORS = frozenset({"in", "notIn", "between", "notBetween", "hasAny", "hasAll", "hasNone"})
#: Operators that take no value; any value given is ignored.
NO_VALUE_OPERATORS = frozenset({"null", "notNull"})

#: Stack/work guards for hostile input. The product limits (MAX_DEPTH, MAX_CONDITIONS)
#: are enforced, with all problems reported, by validate.py.
MAX_PARSE_DEPTH = 64
MAX_PARSE_NODES = 10_000


def split_comma_list(text: str) -> tuple[str, ...]:
    r"""Split react-querybuilder's comma-separated list: ``\,`` escapes a comma,
    items are whitespace-trimmed and empty items dropped."""
    items: list[str] = []
    current: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] == ",":
            current.append(",")
            i += 2
            continue
        if ch == ",":
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    items.append("".join(current))
    return tuple(s for s in (item.strip() for item in items) if s)


def _freeze(value: Any) -> Any:
    """Lists -> tuples so the frozen tree is immutable all the way down."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


class _Parser:
    def __init__(self) -> None:
        self.problems: list[RuleProblem] = []
        self.nodes = 0

    def problem(self, path: str, message: str, field: str | None = None,
                operator: str | None = None, code: str = "invalid_shape") -> None:
        self.problems.append(RuleProblem(code, path, field, operator, message))

    def node(self, obj: Any, path: str, depth: int) -> Rule | None:
        self.nodes += 1
        if self.nodes > MAX_PARSE_NODES:
            if self.nodes == MAX_PARSE_NODES + 1:
                self.problem(path, f"rule has more than {MAX_PARSE_NODES} nodes",
                             code="too_many_conditions")
            return None
        if not isinstance(obj, dict):
            self.problem(path, f"expected a rule or group object, got {type(obj).__name__}")
            return None
        if "rules" in obj:
            return self.group(obj, path, depth)
        if "field" in obj or "operator" in obj:
            return self.condition(obj, path)
        self.problem(path, "object is neither a group (has 'rules') nor a condition (has 'field')")
        return None

    def group(self, obj: dict[str, Any], path: str, depth: int) -> Group | None:
        if depth > MAX_PARSE_DEPTH:
            self.problem(path, f"groups nested deeper than {MAX_PARSE_DEPTH} levels", code="too_deep")
            return None
        ok = True
        combinator = obj.get("combinator")
        if not isinstance(combinator, str) or combinator.lower() not in ("and", "or"):
            self.problem(path, f"combinator must be 'and' or 'or', got {combinator!r}")
            ok = False
        negated = obj.get("not", False)
        if negated is None:
            negated = False
        if not isinstance(negated, bool):
            self.problem(path, f"'not' must be a boolean, got {type(negated).__name__}")
            ok = False
        if obj.get("disabled") is True:
            self.problem(path, "disabled groups are not supported; remove them from the rule")
            ok = False
        raw_rules = obj.get("rules")
        if not isinstance(raw_rules, list):
            self.problem(path, f"'rules' must be a list, got {type(raw_rules).__name__}")
            return None
        children: list[Rule] = []
        for i, child in enumerate(raw_rules):
            child_path = f"{path}/rules/{i}"
            if isinstance(child, str):
                self.problem(child_path, "inline combinators (independentCombinators) are not supported")
                ok = False
                continue
            parsed = self.node(child, child_path, depth + 1)
            if parsed is None:
                ok = False
            else:
                children.append(parsed)
        if not ok:
            return None
        assert isinstance(combinator, str)
        return Group(combinator.lower(), negated, tuple(children), path)

    def condition(self, obj: dict[str, Any], path: str) -> Condition | None:
        field = obj.get("field")
        operator = obj.get("operator")
        f = field if isinstance(field, str) else None
        op = operator if isinstance(operator, str) else None
        ok = True
        if f is None:
            self.problem(path, f"'field' must be a string, got {type(field).__name__}", f, op)
            ok = False
        if op is None:
            self.problem(path, f"'operator' must be a string, got {type(operator).__name__}", f, op)
            ok = False
        source = obj.get("valueSource", "value")
        if source == "field":
            self.problem(path, "comparing against another field (valueSource 'field') is not supported", f, op)
            ok = False
        elif source not in ("value", None):
            self.problem(path, f"unknown valueSource {source!r}", f, op)
            ok = False
        if obj.get("disabled") is True:
            self.problem(path, "disabled rules are not supported; remove them from the rule", f, op)
            ok = False
        if not ok or f is None or op is None:
            return None
        value = obj.get("value")
        if op in NO_VALUE_OPERATORS:
            value = None
        elif op in LIST_OPERATORS and isinstance(value, str):
            value = split_comma_list(value)
        else:
            value = _freeze(value)
        where = obj.get("where")
        if where is not None:
            if not isinstance(where, dict):
                self.problem(path, f"'where' must be an object of property: value, got {type(where).__name__}", f, op)
                return None
            where = tuple((k, _freeze(v)) for k, v in where.items())
        return Condition(f, op, value, path, _freeze(obj.get("window")), where)


def parse_rule(obj: Any) -> Group:
    """Decoded react-querybuilder JSON -> Group; raises InvalidRule listing every shape problem.

    ``id`` and other UI keys are ignored. The root must be a group.
    """
    parser = _Parser()
    if isinstance(obj, dict) and "rules" not in obj and ("field" in obj or "operator" in obj):
        parser.problem("", "the root of a rule must be a group with 'combinator' and 'rules'")
        raise InvalidRule(parser.problems)
    root = parser.node(obj, "", 1)
    if parser.problems or not isinstance(root, Group):
        raise InvalidRule(parser.problems)
    return root
