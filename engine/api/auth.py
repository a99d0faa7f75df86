"""Bearer tokens → (workspace, role, team member), from the tokens file.

Roles: `admin` manages one workspace; `agent` is a team member of one workspace who may read (and
never sees segments hidden from them); `superadmin` may act in every workspace. A workspace a
principal may not see answers exactly like one that does not exist (404), so nothing leaks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import orjson

from engine.api.errors import ApiError

ROLES = ("admin", "agent", "superadmin")
#: A token longer than this is refused before it is looked up (tokens are short random strings). The HTTP
#: parser lets header fields up to HEADER_FIELD_LIMIT through, so such a request still gets a JSON answer
#: with a stable code instead of the parser's plain-text 400.
MAX_TOKEN_BYTES = 8_192
HEADER_FIELD_LIMIT = 65_536


@dataclass(frozen=True)
class Principal:
    workspace: str | None  # None: every workspace (superadmin)
    role: str
    member: str | None

    def can_see(self, workspace: str) -> bool:
        # By role, not by a missing workspace: the principal of a public route has no workspace either,
        # and must see none (should a public route ever read one), not all.
        return self.role == "superadmin" or self.workspace == workspace

    @property
    def can_write(self) -> bool:
        return self.role in ("admin", "superadmin")


@dataclass(frozen=True)
class Tokens:
    by_token: Mapping[str, Principal]

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        header = headers.get("Authorization", "")
        if len(header) > MAX_TOKEN_BYTES:
            raise ApiError(431, "token_too_large", f"the Authorization header is over {MAX_TOKEN_BYTES} characters; "
                           "no token is that long")
        scheme, _, token = header.partition(" ")
        principal = self.by_token.get(token.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            raise ApiError(401, "unauthenticated", "a valid `Authorization: Bearer <token>` header is required")
        return principal


def load_tokens(path: Path) -> Tokens:
    doc: dict[str, Any] = orjson.loads(path.read_bytes())
    by_token: dict[str, Principal] = {}
    for token, spec in doc["tokens"].items():
        role = spec["role"]
        if role not in ROLES:
            raise ValueError(f"token role {role!r} is not one of {ROLES}")
        workspace = None if role == "superadmin" else spec["workspace"]
        by_token[token] = Principal(workspace=workspace, role=role, member=spec.get("member"))
    return Tokens(by_token)


def check_workspace(principal: Principal, workspace: str, known: bool) -> None:
    """404 for a workspace that is unknown or not the principal's: the two are indistinguishable."""
    if not known or not principal.can_see(workspace):
        raise ApiError(404, "not_found", f"workspace {workspace!r} not found")


def check_write(principal: Principal) -> None:
    if not principal.can_write:
        raise ApiError(403, "forbidden", f"role {principal.role!r} may not change segments")
