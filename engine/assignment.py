"""Chat assignment: per workspace, an ordered list of rules "segment S → team member M or group G", and
the decision for a new conversation from its contact's segments at that moment.

Pure: the agent loads the contact's state and the partition's group turns, calls `assign_conversation`,
and writes what it returns. The same inputs give the same decision, so a replayed conversation after a
crash is decided (and identified) exactly as the first time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Mapping, NamedTuple

from engine.membership import RecordState, Transition, apply_time
from engine.registry import SegmentSet
from engine.rules.errors import EngineError
from engine.workspaces import NAME_PATTERN  # team members, groups and rule ids

ASSIGNED = "conversation.assigned"
UNASSIGNED = "conversation.unassigned"
NO_RULE_MATCHED = "no_rule_matched"
UNKNOWN_CONTACT = "unknown_contact"  # never seen by the engine, or deleted
CONVERSATION_IDS = 200  # conversation ids remembered per contact, to drop a re-sent conversation.created

MAX_RULES = 500
MAX_GROUPS = 200
MAX_GROUP_MEMBERS = 1000


@dataclass(frozen=True)
class AssignmentRule:
    id: str
    segment_id: str
    member: str | None  # exactly one of member / group
    group: str | None

    def to_json(self) -> dict[str, Any]:
        target = {"member": self.member} if self.member is not None else {"group": self.group}
        return {"id": self.id, "segment_id": self.segment_id, "assign_to": target}


@dataclass(frozen=True)
class AssignmentRules:
    """One workspace's assignment configuration at one version: rules in priority order, and groups."""

    workspace: str
    version: int
    rules: tuple[AssignmentRule, ...]
    groups: Mapping[str, tuple[str, ...]]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rules": [r.to_json() for r in self.rules],
            "groups": {name: list(members) for name, members in self.groups.items()},
        }

    def using(self, segment_id: str) -> list[str]:
        """Ids of the rules that route by `segment_id`."""
        return [r.id for r in self.rules if r.segment_id == segment_id]


class AssignmentProblem(NamedTuple):
    code: str
    path: str  # JSON pointer into the document
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "message": self.message}


class InvalidAssignment(EngineError):
    """An assignment document that cannot be used; carries every problem found."""

    code = "invalid_assignment_rules"

    def __init__(self, problems: list[AssignmentProblem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
        self.problems = problems


def parse_assignment(
    doc: Any, workspace: str, version: int, segment_ids: Collection[str] | None = None,
    team: Collection[str] | None = None,
) -> AssignmentRules:
    """Check an assignment document `{"rules": [...], "groups": {...}}` and build its value.

    `segment_ids` are the workspace's contact segments and `team` its team members; None skips that
    check (a worker reading a document that was checked when it was written, whose segment or member
    may since have gone: such a rule simply never matches, or still assigns to the name it was given).
    """
    problems: list[AssignmentProblem] = []

    def problem(code: str, path: str, message: str) -> None:
        problems.append(AssignmentProblem(code, path, message))

    if not isinstance(doc, dict):
        raise InvalidAssignment([AssignmentProblem("invalid_document", "", "must be an object with `rules` and `groups`")])
    for name in doc:
        if name not in ("rules", "groups", "version"):
            problem("unknown_attribute", f"/{name}", f"unknown attribute `{name}`")
    groups: dict[str, tuple[str, ...]] = {}
    raw_groups = doc.get("groups", {})
    if not isinstance(raw_groups, dict):
        problem("invalid_groups", "/groups", "must be an object: group name → list of team members")
        raw_groups = {}
    if len(raw_groups) > MAX_GROUPS:
        problem("invalid_groups", "/groups", f"at most {MAX_GROUPS} groups")
    for name, members in raw_groups.items():
        path = f"/groups/{name}"
        if not NAME_PATTERN.match(name):
            problem("invalid_group", path, "a group name is 1-100 letters, digits or `_.@+-`")
            continue
        if (not isinstance(members, list) or not members or len(members) > MAX_GROUP_MEMBERS
                or not all(isinstance(m, str) and NAME_PATTERN.match(m) for m in members)):
            problem("invalid_group", path,
                    f"must list 1-{MAX_GROUP_MEMBERS} team members (1-100 letters, digits or `_.@+-` each)")
            continue
        if len(set(members)) != len(members):
            problem("invalid_group", path, "lists a team member twice")
            continue
        strangers = [m for m in members if team is not None and m not in team]
        if strangers:
            problem("unknown_team_member", path, f"{strangers[0]!r} is not a team member of this workspace")
            continue
        groups[name] = tuple(members)
    rules: list[AssignmentRule] = []
    raw_rules = doc.get("rules", [])
    if not isinstance(raw_rules, list):
        problem("invalid_rules", "/rules", "must be a list of rules, first match wins")
        raw_rules = []
    if len(raw_rules) > MAX_RULES:
        problem("invalid_rules", "/rules", f"at most {MAX_RULES} rules")
    seen_ids: set[str] = set()
    for i, raw in enumerate(raw_rules):
        path = f"/rules/{i}"
        if not isinstance(raw, dict):
            problem("invalid_rule", path, "must be an object {id, segment_id, assign_to}")
            continue
        extra = sorted(set(raw) - {"id", "segment_id", "assign_to"})
        if extra:
            problem("unknown_attribute", f"{path}/{extra[0]}", f"unknown attribute `{extra[0]}`")
        rule_id = raw.get("id")
        if not isinstance(rule_id, str) or not NAME_PATTERN.match(rule_id):
            problem("invalid_rule_id", f"{path}/id", "a rule id is 1-100 letters, digits or `_.@+-`")
        elif rule_id in seen_ids:
            problem("duplicate_rule_id", f"{path}/id", f"rule id {rule_id!r} is used twice")
        else:
            seen_ids.add(rule_id)
        segment_id = raw.get("segment_id")
        if not isinstance(segment_id, str) or not segment_id:
            problem("invalid_segment_id", f"{path}/segment_id", "must name a contact segment")
        elif segment_ids is not None and segment_id not in segment_ids:
            problem("unknown_segment", f"{path}/segment_id", f"no contact segment {segment_id!r} in this workspace")
        target = raw.get("assign_to")
        member = group = None
        if not isinstance(target, dict) or len(target) != 1 or not ({"member", "group"} & set(target)):
            problem("invalid_assignee", f"{path}/assign_to", 'must be {"member": NAME} or {"group": NAME}')
        elif "member" in target:
            member = target["member"]
            if not isinstance(member, str) or not NAME_PATTERN.match(member):
                problem("invalid_assignee", f"{path}/assign_to/member", "a team member is 1-100 letters, digits or `_.@+-`")
            elif team is not None and member not in team:
                problem("unknown_team_member", f"{path}/assign_to/member", f"{member!r} is not a team member of this workspace")
        else:
            group = target["group"]
            if group not in groups:
                problem("unknown_group", f"{path}/assign_to/group", f"no group {group!r} under `groups`")
        rules.append(AssignmentRule(str(rule_id), str(segment_id), member, group))
    if problems:
        raise InvalidAssignment(problems)
    return AssignmentRules(workspace, version, tuple(rules), groups)


class Conversation(NamedTuple):
    id: str
    contact_id: str
    at: int | None  # when the chat system created it (epoch ms), echoed; the engine decides at its own time


class Decision(NamedTuple):
    event_type: str  # ASSIGNED | UNASSIGNED
    rule: AssignmentRule | None
    member: str | None
    group: str | None  # the group the member was picked from, if the rule names one
    reason: str | None  # UNASSIGNED: NO_RULE_MATCHED | UNKNOWN_CONTACT
    rules_version: int


class Assignment(NamedTuple):
    state: RecordState | None  # the contact's state to write; None: a conversation already decided
    transitions: list[Transition]  # time-based flips that were due when the conversation arrived
    decision: Decision | None


DUPLICATE = Assignment(None, [], None)


def assign_conversation(
    prev: RecordState | None,
    conversation: Conversation,
    segments: SegmentSet,
    rules: AssignmentRules | None,
    turns: Mapping[str, int],
    now: int,
    first_turn: int = 0,
) -> Assignment:
    """Decide who gets a new conversation from the contact's segments at `now`.

    Time-based segments that were due flip first, so "at that moment" includes time passing. The first
    rule (in order) whose segment the contact is in wins. A group rule picks the group member whose turn
    it is: `turns[group]` counts the conversations this partition gave the group so far, from
    `first_turn` (the partition number, so partitions start at different members). An unknown or
    deleted contact is unassigned (reason `unknown_contact`); a conversation id the contact already had
    is ignored. The contact's state remembers the id (an unknown contact gets an empty state at
    version 0, like an import, so its first real change still applies).
    """
    if prev is not None and conversation.id in prev.conversations:
        return DUPLICATE
    conversations = ([*prev.conversations[-(CONVERSATION_IDS - 1):]] if prev is not None else []) + [conversation.id]
    version = rules.version if rules is not None else 0
    if prev is None or prev.deleted:
        state = RecordState(prev.version if prev is not None else 0, {}, set(), deleted=prev is not None,
                            conversations=conversations, scheduled=prev.scheduled if prev is not None else None)
        return Assignment(state, [], Decision(UNASSIGNED, None, None, None, UNKNOWN_CONTACT, version))
    state = RecordState(prev.version, prev.fields, {sid for sid in prev.members if sid in segments.segments},
                        due=prev.due, activity=prev.activity, seen=prev.seen, scheduled=prev.scheduled,
                        conversations=conversations)
    transitions = apply_time(state, segments, now) if state.due is not None and state.due <= now else []
    for rule in rules.rules if rules is not None else ():
        if rule.segment_id not in state.members:
            continue
        if rule.group is None:
            return Assignment(state, transitions, Decision(ASSIGNED, rule, rule.member, None, None, version))
        members = rules.groups[rule.group]  # type: ignore[union-attr]
        member = members[turns.get(rule.group, first_turn) % len(members)]
        return Assignment(state, transitions, Decision(ASSIGNED, rule, member, rule.group, None, version))
    return Assignment(state, transitions, Decision(UNASSIGNED, None, None, None, NO_RULE_MATCHED, version))


class AssignmentBook:
    """The latest assignment rules of every workspace, as read from the assignment-rules topic."""

    def __init__(self) -> None:
        self.by_workspace: dict[str, AssignmentRules] = {}

    def get(self, workspace: str) -> AssignmentRules | None:
        return self.by_workspace.get(workspace)

    def version(self, workspace: str) -> int:
        rules = self.by_workspace.get(workspace)
        return rules.version if rules is not None else 0

    def apply(self, workspace: str, data: Mapping[str, Any]) -> bool:
        """Apply one assignment.rules message's data; older or equal versions are ignored (replays)."""
        version = int(data["version"])
        if version <= self.version(workspace):
            return False
        doc = {"rules": data.get("rules", []), "groups": data.get("groups", {})}
        self.by_workspace[workspace] = parse_assignment(doc, workspace, version)
        return True
