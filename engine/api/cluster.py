"""Which worker owns which partition, and how a request reaches it.

Record queries go to the one worker that owns the record's partition (forwarded once, marked with a
header); segment queries fan out to every worker, each answering for the partitions it owns, and the
answers are merged. Ownership comes from Faust's partition assignor.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import ClientSession, ClientTimeout, web
from yarl import URL

from engine.api.errors import ApiError
from engine.api.server import FORWARDED_HEADER, Context
from engine.intake import partition_for

if TYPE_CHECKING:
    from engine.app import Engine

PEER_TIMEOUT = ClientTimeout(total=30)


class Cluster:
    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self._session: ClientSession | None = None

    @property
    def changelog(self) -> str:
        return str(self.engine.table.changelog_topic.get_topic_name())

    def owners(self) -> dict[str, list[int]]:
        """Worker URL → partitions it owns (actives of the state table)."""
        distribution = self.engine.app.assignor.changelog_distribution
        return {
            url: sorted(topics.get(self.changelog, []))
            for url, topics in distribution.items()
            if topics.get(self.changelog)
        }

    def local_partitions(self) -> list[int]:
        actives = self.engine.app.assignor.assigned_actives()
        return sorted(tp.partition for tp in actives if tp.topic == self.changelog)

    def partition_of(self, key: str) -> int:
        return partition_for(key, self.engine.settings.partitions)

    def is_me(self, url: str) -> bool:
        me = URL(str(self.engine.app.conf.canonical_url))
        other = URL(url)
        return (me.host, me.port) == (other.host, other.port)

    def owner_of(self, partition: int) -> str:
        for url, partitions in self.owners().items():
            if partition in partitions:
                return url
        raise ApiError(503, "not_ready", "partition ownership is being rebalanced; retry shortly")

    async def session(self) -> ClientSession:
        if self._session is None or self._session.closed:
            self._session = ClientSession(timeout=PEER_TIMEOUT)
        return self._session

    async def forward(self, ctx: Context, url: str, body: bytes | None = None) -> web.Response:
        """Replay this request on the owning worker and relay its answer."""
        if ctx.forwarded:  # ownership moved while forwarding: let the client retry
            raise ApiError(503, "not_ready", "partition ownership is being rebalanced; retry shortly")
        session = await self.session()
        target = ctx.request.url.with_host(URL(url).host or "127.0.0.1").with_port(URL(url).port)
        headers = {"Authorization": ctx.request.headers.get("Authorization", ""), FORWARDED_HEADER: "1",
                   "Content-Type": "application/json"}
        async with session.request(ctx.request.method, target, headers=headers, data=body) as response:
            return web.Response(body=await response.read(), status=response.status, content_type="application/json")

    async def gather(self, ctx: Context, local: Any, rel_url: str | None = None, body: bytes | None = None) -> list[Any]:
        """Every worker's answer for its own partitions: `local` (this worker's, already computed) plus
        the JSON answers of the others to the same request (or to `rel_url`) marked as forwarded."""
        session = await self.session()
        headers = {"Authorization": ctx.request.headers.get("Authorization", ""), FORWARDED_HEADER: "1",
                   "Content-Type": "application/json"}

        async def ask(url: str) -> Any:
            base = URL(url)
            target = base.join(URL(rel_url)) if rel_url else ctx.request.url.with_host(base.host or "127.0.0.1").with_port(base.port)
            async with session.request(ctx.request.method, target, headers=headers, data=body) as response:
                payload = await response.read()
                if response.status != 200:
                    raise ApiError(503, "not_ready", f"worker {url} answered {response.status}")
                return orjson.loads(payload)

        others = [url for url in self.owners() if not self.is_me(url)]
        answers = await asyncio.gather(*(ask(url) for url in others))
        return [local, *answers]
