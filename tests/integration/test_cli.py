"""The command line a newcomer uses: help for every subcommand, and a bad rule refused at the prompt."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import Harness

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.mark.parametrize("command", [[], ["worker"], ["topics", "create"], ["segments", "apply"], ["segments", "import"], ["segments", "remove"], ["publish"], ["events"], ["clock", "set"], ["tail"], ["run"], ["assignment", "set"], ["assignment", "show"], ["conversation"]])
def test_every_subcommand_has_help(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0 and "usage: segment-engine" in result.stdout


def test_segments_apply_refuses_an_invalid_rule_naming_field_and_operator(tmp_path: Path) -> None:
    file = tmp_path / "segments.json"
    file.write_bytes(orjson.dumps([{"workspace": "demo", "object_type": "contact", "id": "x", "name": "x",
                                    "rule": {"combinator": "and", "rules": [
                                        {"field": "country", "operator": "=", "value": "PL"},
                                        {"field": "lifetime_value", "operator": "contains", "value": "1"}]}}]))
    result = cli("segments", "apply", str(file))
    assert result.returncode != 0
    assert "lifetime_value" in result.stderr and "contains" in result.stderr and "/rules/1" in result.stderr


def test_worker_refuses_topics_with_a_different_partition_count(harness: Harness) -> None:
    import os

    env = dict(os.environ, SEGMENT_ENGINE_BROKER=harness.settings.broker,
               SEGMENT_ENGINE_TOPIC_PREFIX=harness.settings.topic_prefix, SEGMENT_ENGINE_PARTITIONS="8")
    result = cli("topics", "create", env=env)
    assert result.returncode != 0 and "SEGMENT_ENGINE_PARTITIONS=4" in result.stderr


def test_assignment_rules_and_a_conversation_from_the_command_line(harness: Harness, tmp_path: Path) -> None:
    """`assignment set` checks the file and publishes it, `assignment show` reads it back, `conversation`
    opens one: the worker assigns it by the rules."""
    import os

    import topics

    env = dict(os.environ, SEGMENT_ENGINE_BROKER=harness.settings.broker,
               SEGMENT_ENGINE_TOPIC_PREFIX=harness.settings.topic_prefix,
               SEGMENT_ENGINE_WORKSPACES_FILE=str(harness.settings.workspaces_file))
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps({"rules": [{"id": "r1", "segment_id": "pl", "assign_to": {"group": "nobody"}}]}))
    result = cli("assignment", "set", str(bad), "--workspace", "acme", env=env)
    assert result.returncode != 0 and "/rules/0/assign_to/group" in result.stderr and "unknown_group" in result.stderr

    doc = {"rules": [{"id": "r1", "segment_id": "pl", "assign_to": {"group": "sales"}}], "groups": {"sales": ["sam"]}}
    good = tmp_path / "rules.json"
    good.write_bytes(orjson.dumps(doc))
    assert cli("assignment", "set", str(good), "--workspace", "acme", env=env).returncode == 0
    shown = cli("assignment", "show", "--workspace", "acme", env=env)
    assert shown.returncode == 0
    assert {k: v for k, v in orjson.loads(shown.stdout).items() if k != "version"} == doc

    harness.publisher.define_segment("acme", {"id": "pl", "object_type": "contact", "name": "PL", "rule": {
        "combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "PL"}]}})
    harness.publisher.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": "c1", "version": 1,
                                              "fields": {"country": "PL"}})
    harness.publisher.flush()
    harness.start_worker()
    harness.wait_for(lambda: harness.events(), timeout=60, what="c1 entering pl")
    assert cli("conversation", "c1", "--workspace", "acme", "--id", "conv-1", env=env).returncode == 0
    decision = harness.wait_for(lambda: harness.read_topic(topics.CONVERSATION_ASSIGNMENTS), timeout=60,
                                what="the decision")[0]
    assert decision["type"] == "conversation.assigned" and decision["data"]["assignee"] == "sam"
