"""Which worker owns which partition, and how a request reaches it.

Record queries go to the one worker that owns the record's partition (forwarded once, marked with a
header); segment queries fan out to every worker, each answering for the partitions it can answer for
now, and the answers are merged. Ownership comes from Faust's partition assignor.

An answer is complete or refused: a merged answer must cover every partition exactly once, or the
request fails with `503 not_ready` naming the partitions nobody could answer for, with a `Retry-After`.
The group's view of ownership is not enough to know that: a worker killed with SIGKILL stays a member
until its session times out, and when its successor serves at the same URL the view attributes the dead
member's partitions to the live one (Faust keys the distribution by URL), so only what each worker
actually holds, recovered, counts.
"""
from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any, Iterable

import orjson
from aiohttp import ClientError, ClientSession, ClientTimeout, web
from yarl import URL

from engine.api.errors import ApiError
from engine.api.server import FORWARDED_HEADER, Context
from engine.intake import partition_for

if TYPE_CHECKING:
    from engine.app import Engine

PEER_TIMEOUT = ClientTimeout(total=30)
RETRY_AFTER_BUSY = 1  # seconds: a partition recovering or moving between live workers is back within moments


class Cluster:
    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self._session: ClientSession | None = None

    @property
    def changelog(self) -> str:
        return str(self.engine.table.changelog_topic.get_topic_name())

    @property
    def partitions(self) -> int:
        return self.engine.settings.partitions

    def owners(self) -> dict[str, list[int]]:
        """Worker URL → partitions it owns (actives of the state table), as the group's assignment says."""
        distribution = self.engine.app.assignor.changelog_distribution
        return {
            url: sorted(topics.get(self.changelog, []))
            for url, topics in distribution.items()
            if topics.get(self.changelog)
        }

    def local_partitions(self) -> list[int]:
        """Partitions assigned to this worker (recovered or not)."""
        actives = self.engine.app.assignor.assigned_actives()
        return sorted(tp.partition for tp in actives if tp.topic == self.changelog)

    def available(self) -> list[int]:
        """Partitions this worker answers for now: assigned to it, with the registry loaded and the tables
        recovered (and repaired, see Engine.sync_partition), and no rebalance under way (Faust keeps
        `recovery.completed` set after the first recovery, so a later assignment is only visible through
        `app.rebalancing` until it recovers)."""
        engine = self.engine
        try:
            if not engine.is_ready() or engine.app.rebalancing:
                return []
            repairing = self.repairing()
            return [p for p in self.local_partitions() if p not in repairing]
        except Exception:  # noqa: BLE001 - not started yet
            return []

    def repairing(self) -> list[int]:
        """This worker's partitions restored from the changelog and not repaired yet (StateStore.repair)."""
        return [p for p in self.local_partitions() if self.engine.state.needs_repair(p)]

    def unowned(self) -> list[int]:
        """Partitions no live worker can answer for as the group is assigned now: those with no owner, and
        those the view gives this worker's URL without this worker holding them (a dead member that shared
        the URL, until the group evicts it)."""
        held = set(self.local_partitions())
        for url, partitions in self.owners().items():
            if not self.is_me(url):
                held.update(partitions)
        return sorted(set(range(self.partitions)) - held)

    def ready(self) -> bool:
        """Every answer this worker gives is complete now, as far as it can tell: its own partitions are
        recovered and repaired, and every other partition has another owner (whose readiness its own
        /health reports)."""
        try:
            engine = self.engine
            return engine.is_ready() and not engine.app.rebalancing and not self.unowned() and not self.repairing()
        except Exception:  # noqa: BLE001 - not started yet
            return False

    def unavailable(self, missing: Iterable[int], why: str = "") -> ApiError:
        """503 naming the partitions an answer would lack. Retry-After: the session timeout when a partition
        has no live owner (the group needs that long to notice a dead member and move its partitions),
        else RETRY_AFTER_BUSY (recovering, or moving between live workers)."""
        missing = sorted(set(missing))
        try:
            orphaned = bool(set(missing) & set(self.unowned()))
        except Exception:  # noqa: BLE001 - not started yet
            orphaned = False
        retry = math.ceil(self.engine.settings.session_timeout) if orphaned else RETRY_AFTER_BUSY
        return ApiError(503, "not_ready",
                        f"partitions {missing} cannot be answered for now{': ' + why if why else ''}; "
                        f"retry in {retry} s", partitions=missing, retry_after=retry)

    def partition_of(self, key: str) -> int:
        return partition_for(key, self.partitions)

    def is_me(self, url: str) -> bool:
        me = URL(str(self.engine.app.conf.canonical_url))
        other = URL(url)
        return (me.host, me.port) == (other.host, other.port)

    def owner_of(self, partition: int) -> str | None:
        """The URL of the other worker that owns `partition`; None when it is this worker's or nobody's."""
        for url, partitions in self.owners().items():
            if partition in partitions and not self.is_me(url):
                return url
        return None

    async def session(self) -> ClientSession:
        if self._session is None or self._session.closed:
            self._session = ClientSession(timeout=PEER_TIMEOUT)
        return self._session

    def _headers(self, ctx: Context) -> dict[str, str]:
        return {"Authorization": ctx.request.headers.get("Authorization", ""), FORWARDED_HEADER: "1",
                "Content-Type": "application/json"}

    async def on_owner(self, ctx: Context, partition: int, body: bytes | None = None) -> web.Response | None:
        """None when this worker answers for `partition` itself; else the owner's answer to this request,
        or 503 when no live worker holds the partition (a forwarded request is never forwarded again)."""
        if partition in self.available():
            return None
        url = None if ctx.forwarded else self.owner_of(partition)
        if url is None:
            raise self.unavailable([partition])
        session = await self.session()
        target = ctx.request.url.with_host(URL(url).host or "127.0.0.1").with_port(URL(url).port)
        try:
            async with session.request(ctx.request.method, target, headers=self._headers(ctx), data=body) as response:
                headers = {"Retry-After": response.headers["Retry-After"]} if "Retry-After" in response.headers else None
                return web.Response(body=await response.read(), status=response.status,
                                    content_type="application/json", headers=headers)
        except (ClientError, asyncio.TimeoutError) as exc:
            raise self.unavailable([partition], f"worker {url} did not answer ({type(exc).__name__})") from None

    async def gather(self, ctx: Context, local: dict[str, Any], rel_url: str | None = None,
                     body: bytes | None = None) -> list[dict[str, Any]]:
        """Every worker's answer for the partitions it holds: `local` (this worker's, computed for
        `available()` and carrying them as "partitions") plus the JSON answers of the others to the same
        request (or to `rel_url`), marked as forwarded. Refused (503) unless together they cover every
        partition exactly once."""
        session = await self.session()
        owners = self.owners()

        async def ask(url: str) -> dict[str, Any]:
            base = URL(url)
            target = base.join(URL(rel_url)) if rel_url else ctx.request.url.with_host(base.host or "127.0.0.1").with_port(base.port)
            try:
                async with session.request(ctx.request.method, target, headers=self._headers(ctx), data=body) as response:
                    payload = await response.read()
                    answer = orjson.loads(payload) if response.status == 200 else None
                    if isinstance(answer, dict) and isinstance(answer.get("partitions"), list):
                        return answer
                    why = f"worker {url} answered {response.status}"
            except (ClientError, asyncio.TimeoutError, orjson.JSONDecodeError) as exc:
                why = f"worker {url} did not answer ({type(exc).__name__})"
            return {"partitions": [], "failed": why}

        others = [url for url in owners if not self.is_me(url)]
        answers = [local, *await asyncio.gather(*(ask(url) for url in others))]
        covered = [p for answer in answers for p in answer["partitions"]]
        missing = set(range(self.partitions)) - set(covered)
        if missing or len(covered) != len(set(covered)):
            twice = sorted({p for p in covered if covered.count(p) > 1})
            why = "; ".join(a["failed"] for a in answers if "failed" in a)
            if twice:  # two workers both answering for a partition while it moves: counts would add up twice
                why = f"{why}; " if why else ""
                why += f"partitions {twice} answered by two workers"
            raise self.unavailable(missing | set(twice), why)
        return answers
