"""The Faust app both Faust baselines (bench/empty_agent.py, bench/naive_worker.py) run on: the engine's
Faust settings and consumer, configured from the BENCH_* environment the bench gives each process."""
from __future__ import annotations

from typing import Any

import faust

from engine.consumer import EngineConsumer


def baseline_app(env: dict[str, str], store: str, **settings: Any) -> faust.App:
    timeout = float(env.get("BENCH_SESSION_TIMEOUT", "3"))
    app = faust.App(
        env["BENCH_APP_ID"],
        broker=f"kafka://{env['BENCH_BROKER']}",
        store=store,
        datadir=env["BENCH_DATA_DIR"],
        topic_partitions=int(env.get("BENCH_PARTITIONS", "4")),
        topic_replication_factor=1,
        web_port=int(env["BENCH_WEB_PORT"]),
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        broker_session_timeout=timeout,
        broker_rebalance_timeout=timeout,
        broker_heartbeat_interval=max(0.5, timeout / 10),
        autodiscover=False,
        **settings,
    )
    app.transport.Consumer = EngineConsumer  # the engine's consumer settings (fetch wait), for a fair comparison
    return app
