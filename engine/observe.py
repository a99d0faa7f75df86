"""Gauges read at scrape time from what the worker already keeps: readiness, owned partitions, consumer
lag, scheduler backlog, backfill progress, segment sizes and too-heavy segments.

Reading them on scrape (every few seconds) instead of updating gauges on the hot path keeps the agent's
per-message cost unchanged; each read is bounded (a capped schedule scan, the counts key per partition).
"""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.costs import TOO_HEAVY_CPU_MS_PER_S
from engine.envelope import split_record_key

if TYPE_CHECKING:
    from engine.app import Engine

BACKLOG_CAP = 100_000  # due records counted per partition and scrape; more reads as this many
OTHER = "_other"


def consumer_lag(engine: "Engine", partitions: list[int]) -> dict[tuple[str, int], int]:
    """(input topic, partition) -> messages not applied yet, from the consumer's last seen end offsets
    (fetch responses) and the applied position each partition stores."""
    from faust.types import TP

    lags: dict[tuple[str, int], int] = {}
    try:
        consumer = engine.app.consumer
    except Exception:  # noqa: BLE001 - not started
        return lags
    for topic in engine.input_topic_names:
        for p in partitions:
            try:
                highwater = consumer.highwater(TP(topic, p))
                applied = engine.state.applied_position(p, topic)
            except Exception:  # noqa: BLE001 - the partition moving away while we read
                continue
            if highwater is not None:
                lags[(topic, p)] = max(0, highwater - (applied + 1 if applied is not None else 0))
    return lags


class EngineCollector(Collector):
    def __init__(self, engine: "Engine") -> None:
        self.engine = engine

    def collect(self) -> Iterator[Any]:
        engine = self.engine
        ready = GaugeMetricFamily("segment_engine_ready",
                                  "1 when this worker is ready (as /health/ready): every answer it gives is complete")
        ready.add_metric([], 1.0 if engine.cluster.ready() else 0.0)
        yield ready
        try:
            partitions = engine.cluster.local_partitions()
        except Exception:  # noqa: BLE001 - not started, or rebalancing: no partition figures this time
            partitions = []
        owned = GaugeMetricFamily("segment_engine_partitions_owned", "Partitions this worker owns now")
        owned.add_metric([], float(len(partitions)))
        yield owned
        yield self._lag(partitions)
        yield self._backlog(partitions)
        pending = GaugeMetricFamily("segment_engine_backfill_pending_records",
                                    "Records still to scan in a running backfill of the partition (0 when idle)",
                                    labels=["partition"])
        for p in partitions:
            pending.add_metric([str(p)], float(engine.backfill_pending.get(p, 0)))
        yield pending
        yield self._segment_members(partitions)
        yield self._too_heavy()

    def _lag(self, partitions: list[int]) -> GaugeMetricFamily:
        family = GaugeMetricFamily("segment_engine_consumer_lag",
                                   "Messages on the partition not applied yet (broker end offset - applied position - 1)",
                                   labels=["topic", "partition"])
        for (topic, p), lag in consumer_lag(self.engine, partitions).items():
            family.add_metric([topic, str(p)], float(lag))
        return family

    def _backlog(self, partitions: list[int]) -> GaugeMetricFamily:
        family = GaugeMetricFamily("segment_engine_scheduler_backlog",
                                   "Records whose due instant has passed (partition clock) but are not re-evaluated yet",
                                   labels=["partition"])
        engine = self.engine
        for p in partitions:
            try:
                now = engine.clocks.get(p) or engine.state.clock(p)
                due = len(engine.state.due(p, now, BACKLOG_CAP)) if now is not None else 0
            except Exception:  # noqa: BLE001
                continue
            family.add_metric([str(p)], float(due))
        return family

    def _segment_members(self, partitions: list[int]) -> GaugeMetricFamily:
        family = GaugeMetricFamily("segment_engine_segment_members",
                                   "Members of a segment in this worker's partitions (sum over workers = its size); "
                                   "the largest segments by name, the rest summed as segment=\"_other\"",
                                   labels=["workspace", "segment"])
        totals: dict[tuple[str, str], int] = defaultdict(int)
        for p in partitions:
            try:
                counts = self.engine.state.counts(p)
            except Exception:  # noqa: BLE001
                continue
            for seg_key, n in counts.items():
                workspace, _, segment_id = split_record_key(seg_key)
                totals[(workspace, segment_id)] += n
        limit = self.engine.settings.metrics_max_segments
        ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        other: dict[str, int] = defaultdict(int)
        for i, ((workspace, segment_id), n) in enumerate(ranked):
            if i < limit:
                family.add_metric([workspace, segment_id], float(n))
            else:
                other[workspace] += n
        for workspace, n in other.items():
            family.add_metric([workspace, OTHER], float(n))
        return family

    def _too_heavy(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("segment_engine_too_heavy_segments",
                                   f"Segments whose evaluations cost this worker >= {TOO_HEAVY_CPU_MS_PER_S:.0f} ms "
                                   "of CPU per second", labels=["workspace"])
        heavy: dict[str, int] = defaultdict(int)
        for seg_key, cost in self.engine.registry.meter.snapshot().items():
            if cost["cpu_ms_per_s"] >= TOO_HEAVY_CPU_MS_PER_S:
                heavy[split_record_key(seg_key)[0]] += 1
        for workspace in self.engine.registry.workspaces.names:
            family.add_metric([workspace], float(heavy.get(workspace, 0)))
        return family
