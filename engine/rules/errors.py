"""One exception hierarchy for the engine core.

Every error carries a stable ``code`` so the HTTP edge can turn it into JSON and the
stream edge into a dead-letter reason without parsing messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterator


class EngineError(Exception):
    """Base of every error the engine raises on purpose; ``code`` is stable API."""

    code: str = "engine_error"
    #: The codes instances of this very class carry, when not just its own ``code``: none for a base never
    #: raised as such, each ``code=...`` it is raised with otherwise (see ``error_codes``).
    codes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message


class CatalogError(EngineError):
    """Bad catalog input: ``unknown_object_type``, ``invalid_field_name`` or ``invalid_field_type``."""

    codes = ("unknown_object_type", "invalid_field_name", "invalid_field_type")


class FieldValueError(EngineError):
    """A record field that is not in the catalog (``unknown_field``) or has the wrong type (``field_type``)."""

    codes = ("unknown_field", "field_type")

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message, code=code)
        self.field = field


def error_codes(base: type[EngineError] = EngineError) -> Iterator[str]:
    """Every code an error of `base` or its subclasses can carry, each once, derived from the classes (so a
    new error type is counted without a list to keep up to date)."""
    seen: set[str] = set()
    todo = [base]
    while todo:
        cls = todo.pop(0)
        todo.extend(cls.__subclasses__())
        own = cls.__dict__.get("codes", (cls.code,) if "code" in cls.__dict__ else ())
        for code in own:
            if code not in seen:
                seen.add(code)
                yield code


@dataclass(frozen=True)
class RuleProblem:
    """One thing wrong with a rule, located by JSON-pointer ``path`` so a UI can highlight it."""

    code: str
    path: str
    field: str | None
    operator: str | None
    message: str

    def to_json(self) -> dict[str, str | None]:
        return {
            "code": self.code,
            "path": self.path,
            "field": self.field,
            "operator": self.operator,
            "message": self.message,
        }


class InvalidRule(EngineError):
    """A rule that cannot be evaluated; carries every problem found, not just the first."""

    code = "invalid_rule"

    def __init__(self, problems: list[RuleProblem]) -> None:
        if not problems:
            problems = [RuleProblem("invalid_shape", "", None, None, "rule is invalid")]
        self.problems = list(problems)
        first = self.problems[0]
        where = f"at {first.path or '/'}"
        if first.field is not None:
            where += f" (field {first.field!r}"
            where += f", operator {first.operator!r})" if first.operator is not None else ")"
        elif first.operator is not None:
            where += f" (operator {first.operator!r})"
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"invalid rule {where}: {first.message}{more}")
