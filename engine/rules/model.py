"""Typed rule tree produced by parse.py and consumed by validate/compile/explain.

Paths are JSON pointers into the original react-querybuilder JSON ("" is the root group,
"/rules/0/rules/2" a nested rule) so problems and explanations can be shown in the UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias


@dataclass(frozen=True)
class Condition:
    """``field operator value``; ``value`` is as parsed (lists become tuples), typed later."""

    field: str
    operator: str
    value: Any
    path: str


@dataclass(frozen=True)
class Group:
    """``and``/``or`` over child rules, optionally negated (react-querybuilder's ``not``)."""

    combinator: str
    negated: bool
    rules: tuple[Condition | Group, ...]
    path: str


Rule: TypeAlias = Condition | Group
