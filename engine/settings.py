"""One settings object, read from SEGMENT_ENGINE_* environment variables.

Every knob of the engine lives here with its default, so the README's table and the code cannot drift.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

PREFIX = "SEGMENT_ENGINE_"
SAMPLES = Path(__file__).parent / "samples"
MIN_MEMORY_BUDGET_MB = 16


@dataclass(frozen=True)
class Settings:
    broker: str = ""  # host:port list; empty means "start the embedded local broker" (run only)
    app_id: str = "segment-engine"
    topic_prefix: str = ""  # prepended to every topic name, so several engines can share a cluster
    partitions: int = 4  # partitions of the record-change topic and everything co-partitioned with it
    data_dir: Path = Path("data")
    web_port: int = 6066
    # Address the web server (HTTP API, /metrics, /health/*) listens on; 0.0.0.0 in containers.
    web_bind: str = "127.0.0.1"
    # Host name other workers use to reach this one (forwarded queries); the pod or container name in a cluster.
    web_host: str = "127.0.0.1"
    workspaces_file: Path = SAMPLES / "workspaces.json"
    max_message_bytes: int = 1_048_576
    tokens_file: Path = SAMPLES / "tokens.json"  # bearer token -> workspace, role, team member
    max_request_bytes: int = 1_048_576  # HTTP request bodies
    log_level: str = "warning"
    # A member that stops heartbeating for this long loses its partitions; a group (re)join waits up
    # to this long for members. Lower means faster failover and faster first start.
    session_timeout: float = 10.0
    # Engine time. "system": a partition's clock follows its messages' timestamps, and each worker sends
    # an engine.tick to the partitions it owns every tick_ms so time-based flips happen without traffic.
    # "manual": time moves only by engine.tick messages carrying `now` (tests, `segment-engine clock set`).
    clock: str = "system"
    tick_ms: int = 1_000
    # Segment ids used as metric labels per worker (transitions, sizes); the rest are summed as "_other".
    metrics_max_segments: int = 500
    # RocksDB memory of the whole worker (MiB): one block cache and write-buffer allowance shared by every
    # partition it owns (engine.storage), so memory does not grow with the partition count. 0: Faust's
    # own per-partition defaults (64 MB write buffers, up to 3, and a block cache per partition).
    memory_budget_mb: int = 256

    @property
    def broker_url(self) -> str:
        """Faust wants kafka:// URLs; users write host:port."""
        hosts = [h if "://" in h else f"kafka://{h}" for h in self.broker.split(",") if h]
        return ";".join(hosts)

    @property
    def bootstrap_servers(self) -> list[str]:
        return [h.split("://", 1)[-1] for h in self.broker.split(",") if h]


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from the environment (or a given mapping, for tests)."""
    env = os.environ if env is None else env

    def get(name: str, default: str) -> str:
        return env.get(PREFIX + name, default)

    defaults = Settings()
    return Settings(
        broker=get("BROKER", defaults.broker),
        app_id=get("APP_ID", defaults.app_id),
        topic_prefix=get("TOPIC_PREFIX", defaults.topic_prefix),
        partitions=int(get("PARTITIONS", str(defaults.partitions))),
        data_dir=Path(get("DATA_DIR", str(defaults.data_dir))),
        web_port=int(get("WEB_PORT", str(defaults.web_port))),
        web_bind=get("WEB_BIND", defaults.web_bind),
        web_host=get("WEB_HOST", defaults.web_host),
        workspaces_file=Path(get("WORKSPACES_FILE", str(defaults.workspaces_file))),
        max_message_bytes=int(get("MAX_MESSAGE_BYTES", str(defaults.max_message_bytes))),
        tokens_file=Path(get("TOKENS_FILE", str(defaults.tokens_file))),
        max_request_bytes=int(get("MAX_REQUEST_BYTES", str(defaults.max_request_bytes))),
        log_level=get("LOG_LEVEL", defaults.log_level),
        session_timeout=float(get("SESSION_TIMEOUT", str(defaults.session_timeout))),
        clock=_clock(get("CLOCK", defaults.clock)),
        tick_ms=int(get("TICK_MS", str(defaults.tick_ms))),
        metrics_max_segments=int(get("METRICS_MAX_SEGMENTS", str(defaults.metrics_max_segments))),
        memory_budget_mb=_memory_budget_mb(get("MEMORY_BUDGET_MB", str(defaults.memory_budget_mb))),
    )


def _clock(value: str) -> str:
    if value not in ("system", "manual"):
        raise ValueError(f"{PREFIX}CLOCK must be 'system' or 'manual', got {value!r}")
    return value


def _memory_budget_mb(value: str) -> int:
    budget = int(value)
    # Below a few MiB every write would trigger a flush of tiny write buffers.
    if budget != 0 and budget < MIN_MEMORY_BUDGET_MB:
        raise ValueError(f"{PREFIX}MEMORY_BUDGET_MB must be 0 or at least {MIN_MEMORY_BUDGET_MB}, got {value!r}")
    return budget
