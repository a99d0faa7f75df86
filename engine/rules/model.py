"""Typed rule tree produced by parse.py and consumed by validate/compile/explain.

Paths are JSON pointers into the original react-querybuilder JSON ("" is the root group,
"/rules/0/rules/2" a nested rule) so problems and explanations can be shown in the UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias


@dataclass(frozen=True)
class Condition:
    """``field operator value``; ``value`` is as parsed (lists become tuples), typed later.

    Aggregate conditions (``events.…`` fields) may also carry a sliding ``window`` (a duration as
    given) and a ``where`` filter (``((property, value), …)``); other conditions have neither.
    """

    field: str
    operator: str
    value: Any
    path: str
    window: Any = None
    where: tuple[tuple[Any, Any], ...] | None = None


@dataclass(frozen=True)
class Group:
    """``and``/``or`` over child rules, optionally negated (react-querybuilder's ``not``)."""

    combinator: str
    negated: bool
    rules: tuple[Condition | Group, ...]
    path: str


Rule: TypeAlias = Condition | Group
