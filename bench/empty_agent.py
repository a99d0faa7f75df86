"""BASELINE, not the engine: a Faust agent that only counts the messages it consumes.

It uses the engine's Faust settings (raw serializers, at-least-once, same partitions and session timeout)
so the gap between its rate and the engine's is the cost of the engine's own work. Configured by env:
BENCH_BROKER, BENCH_TOPIC, BENCH_APP_ID, BENCH_PARTITIONS, BENCH_WEB_PORT, BENCH_DATA_DIR, BENCH_SESSION_TIMEOUT.
The count is served as plain text at http://127.0.0.1:<port>/count, and with the monotonic times of the first
and last message as JSON at /stats (the bench times the agent from those: its rate is too high to poll).
"""
from __future__ import annotations

import os
import time
from typing import Any

import faust
from faust.worker import Worker

from bench.faust_app import baseline_app


def build_app(env: dict[str, str]) -> faust.App:
    """The empty-agent app; `count` is kept on the app object and served at /count."""
    partitions = int(env.get("BENCH_PARTITIONS", "4"))
    app = baseline_app(env, "memory://")
    topic = app.topic(env["BENCH_TOPIC"], partitions=partitions, key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")
    counter: dict[str, Any] = {"n": 0, "first": None, "last": None}
    clock = time.monotonic

    async def count(stream: faust.StreamT) -> None:
        async for _ in stream.events():
            if counter["first"] is None:
                counter["first"] = clock()
            counter["n"] += 1
            counter["last"] = clock()

    async def count_page(web: Any, request: Any) -> Any:
        return web.text(str(counter["n"]))

    async def stats_page(web: Any, request: Any) -> Any:
        return web.json(counter)

    app.agent(topic, name="empty-agent")(count)
    app.page("/count")(count_page)
    app.page("/stats")(stats_page)
    return app


if __name__ == "__main__":
    Worker(build_app(dict(os.environ)), loglevel=os.environ.get("BENCH_LOG_LEVEL", "warning"), quiet=True).execute_from_commandline()
