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


@pytest.mark.parametrize("command", [[], ["worker"], ["topics", "create"], ["segments", "apply"], ["segments", "import"], ["segments", "remove"], ["publish"], ["events"], ["clock", "set"], ["tail"], ["run"]])
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
