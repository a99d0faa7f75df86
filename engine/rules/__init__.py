"""Pure rule core: parse react-querybuilder JSON, validate it against a field catalog,
compile it to a closure, index segments by the fields they read, explain matches.

No I/O here; the Kafka/Faust/HTTP edges in ``engine/`` build on this facade.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .catalog import (
    OBJECT_TYPES,
    STANDARD_FIELDS,
    Catalog,
    FieldType,
    catalog_for,
    is_valid_field_name,
)
from .compile import NEGATIONS, Reads, compile_condition, compile_rule, fields_read, next_change
from .context import WALL_CLOCK, Context
from .errors import (
    CatalogError,
    EngineError,
    FieldValueError,
    InvalidRule,
    RuleProblem,
)
from .explain import Explanation, explain
from .guards import Bound, Guard, GuardIndex, Term, bound_of, guard_of
from .index import FieldIndex
from .model import Condition, Group, Rule
from .parse import parse_rule, split_comma_list
from .validate import (
    ALL_OPERATORS,
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_LIST_VALUES,
    MAX_STRING_LENGTH,
    OPERATORS_BY_TYPE,
    validate_rule,
)
from .values import normalize_fields, parse_datetime_ms


Stream = tuple[str, "tuple[str, str] | None"]  # (event name, where filter)


@dataclass(frozen=True)
class CompiledRule:
    """A validated rule ready for the hot path.

    ``matches(record, context)`` decides membership; ``fields`` are the record fields (and
    ``events.<name>``) it reads, ``references`` the segments it reads, ``streams`` the activity streams
    its aggregates need. A rule with ``time_fields`` can flip as time passes: ``next_change(record,
    context)`` says when it can next flip (None: not before something changes).
    """

    tree: Group
    matches: Callable[[Mapping[str, Any], Context], bool]
    fields: frozenset[str]
    references: frozenset[str] = frozenset()
    streams: frozenset[Stream] = frozenset()
    time_fields: frozenset[str] = frozenset()
    next_change: Callable[[Mapping[str, Any], Context], int | None] | None = None
    guard: Guard | Bound | None = None  # a necessary equality (or else range), for predicate indexing (guards.py)


def load_rule(obj: Any, catalog: Mapping[str, FieldType]) -> CompiledRule:
    """Parse + validate + compile; raises InvalidRule listing every problem."""
    tree = parse_rule(obj)
    reads = Reads()
    matches = compile_rule(tree, catalog, reads)
    return CompiledRule(
        tree=tree,
        matches=matches,
        fields=frozenset(reads.fields),
        references=frozenset(reads.segments),
        streams=frozenset(reads.streams),
        time_fields=frozenset(reads.time_fields),
        next_change=next_change(reads.boundaries) if reads.boundaries else None,
        guard=guard_of(tree, catalog) or bound_of(tree, catalog),
    )


__all__ = [
    "ALL_OPERATORS", "MAX_CONDITIONS", "MAX_DEPTH", "MAX_LIST_VALUES", "MAX_STRING_LENGTH",
    "NEGATIONS", "OBJECT_TYPES", "OPERATORS_BY_TYPE", "STANDARD_FIELDS",
    "Catalog", "CatalogError", "CompiledRule", "Condition", "Context", "WALL_CLOCK", "Reads", "next_change", "EngineError", "Explanation",
    "FieldIndex", "FieldType", "Bound", "Guard", "GuardIndex", "Term", "bound_of", "guard_of", "FieldValueError", "Group", "InvalidRule", "Rule", "RuleProblem",
    "catalog_for", "compile_condition", "compile_rule", "explain", "fields_read",
    "is_valid_field_name", "load_rule", "normalize_fields", "parse_datetime_ms", "parse_rule",
    "split_comma_list", "validate_rule",
]
