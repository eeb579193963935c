"""Fan-out between relay nodes over Redis Streams: :class:`RelayBus`.

Several relay nodes share one Postgres database (:mod:`crdt_sync.relay.shared_store`); a
device may be connected to any of them. Postgres stays the source of truth: an envelope is
ACKed once it is committed there, whatever happens to the bus. The bus only tells the other
nodes, soon, that there is something new to read:

* **Publishing.** After each commit, the node adds one small notice per (space, author) of
  the batch to the space's stream: ``XADD crdt:{<space>}:log MAXLEN ~ 10000 * space <space>
  author <author> lo <seq> hi <seq> node <node> at <ms>``. The braces are a Redis Cluster
  hash tag: every key of a space is in one slot, spaces spread over the cluster.
* **Reading.** Each node reads the streams of the spaces its sessions have open, in a
  consumer group of its own (group = node name; every node gets every notice), with
  ``XREADGROUP ... BLOCK``, and ``XACK``s each notice once it has read what it announced
  from Postgres (:meth:`SharedRelayStore.catch_up`): appended to the space's tail, its
  sessions are woken and forward it as they forward local commits. A node that restarts
  under the same name reads what it left pending first.
* **Losing a notice costs a delay, never an envelope.** Every open space is re-checked
  against Postgres periodically (``bus_recheck`` seconds, a bounded number of spaces per
  round), when the node (re)connects to Redis, and when a node first reads a space's
  stream; devices also catch up from Postgres on their version vectors whenever they
  connect.
* **Redis down.** The node keeps serving and storing; notices it cannot add are dropped
  (counted); it logs ``bus.down`` once, reconnects with a capped exponential backoff and
  logs ``bus.up``; ``/healthz`` says ``"bus": "down"`` meanwhile (the node stays healthy:
  nothing is lost, deliveries between nodes wait for the next re-check).

Without a Redis URL the bus is "off" and only the periodic re-check runs (several nodes
without Redis still converge, within ``bus_recheck``).

In a Redis Cluster one XREADGROUP may only name keys of one slot: a node would issue one
read per slot it follows (not done here: this reads one server, or one shard's proxy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from .backend import EnvelopeRow
from .metrics import RelayMetrics
from .shared_store import SharedRelayStore

log = logging.getLogger("crdt_sync.relay")
#: Approximate length each stream is trimmed to (MAXLEN ~).
STREAM_MAXLEN = 10_000
#: How long one XREADGROUP waits for a notice (ms); also how soon a newly opened space is read.
BLOCK_MS = 500
#: Notices read per XREADGROUP.
READ_COUNT = 256
#: Notices waiting to be published; beyond, the oldest are dropped (catch-up fills).
OUTBOX = 10_000
#: Reconnection backoff: from BACKOFF_MIN seconds, doubling, up to BACKOFF_MAX (jittered).
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
#: Open spaces re-checked against Postgres per round of the periodic re-check.
RECHECK_SPACES = 256
#: The default period of that re-check, in seconds.
RECHECK_SECONDS = 5.0
URL_SCHEMES = ("redis://", "rediss://", "unix://")


def stream_key(space: str) -> str:
    """The stream of ``space``'s notices (hash tag: the space)."""
    return f"crdt:{{{space}}}:log"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RelayBus:
    """One node's side of the bus (see the module). ``await start()``, ``await stop()``."""

    def __init__(self, url: str | None, node: str, store: SharedRelayStore,
                 spaces: Callable[[], Iterable[str]], metrics: RelayMetrics,
                 recheck: float = RECHECK_SECONDS, maxlen: int = STREAM_MAXLEN) -> None:
        self.url, self.node, self.store = url, node, store
        self.group = f"node:{node}"
        self._spaces = spaces
        self.metrics = metrics
        self.recheck, self.maxlen = recheck, maxlen
        #: "off" (no Redis URL), "connecting", "up" or "down"
        self.status = "off" if url is None else "connecting"
        self._client: Any = None
        if url is not None:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(
                url, socket_connect_timeout=2.0, socket_timeout=BLOCK_MS / 1000 + 5.0,
                health_check_interval=0)
        self._outbox: deque[dict[str, str]] = deque(maxlen=OUTBOX)
        self._to_publish = asyncio.Event()
        self._watched = asyncio.Event()
        self._groups: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._rotation = 0
        self._catching: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._recheck_loop(), name="bus-recheck"))
        if self._client is not None:
            self._tasks.append(asyncio.create_task(self._read_loop(), name="bus-read"))
            self._tasks.append(asyncio.create_task(self._publish_loop(), name="bus-publish"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()

    def watch(self) -> None:
        """A session opened spaces: read their streams from the next read on."""
        self._watched.set()

    # -- status ------------------------------------------------------------------------------
    def _up(self) -> None:
        if self.status != "up":
            was, self.status = self.status, "up"
            self.metrics.bus_up.set(1)
            log.info("bus.up", extra={"fields": {"node": self.node, "was": was}})
            self._groups.clear()  # a Redis that restarted without its data has no groups
            task = asyncio.get_running_loop().create_task(self._catch_up_all())
            self._catching.add(task)  # (the gap while it was down: notices lost meanwhile)
            task.add_done_callback(self._catching.discard)

    def _down(self, exc: BaseException) -> None:
        self.metrics.bus_errors.inc()
        if self.status != "down":
            self.status = "down"
            self.metrics.bus_up.set(0)
            log.warning("bus.down", extra={"fields": {
                "node": self.node, "error": f"{type(exc).__name__}: {exc}"}})

    # -- publishing --------------------------------------------------------------------------
    def publish(self, rows: list[EnvelopeRow]) -> None:
        """Announce a commit (called once it is durable): one notice per (space, author)."""
        if self._client is None:
            return
        ranges: dict[tuple[str, str], list[int]] = {}
        for row in rows:
            span = ranges.setdefault((row.space, row.author), [row.seq, row.seq])
            span[0], span[1] = min(span[0], row.seq), max(span[1], row.seq)
        at = str(_now_ms())
        for (space, author), (lo, hi) in ranges.items():
            if len(self._outbox) == self._outbox.maxlen:
                self.metrics.bus_notices.labels("dropped").inc()
            self._outbox.append({"space": space, "author": author, "lo": str(lo), "hi": str(hi),
                                 "node": self.node, "at": at})
        self._to_publish.set()

    async def _publish_loop(self) -> None:
        while True:
            await self._to_publish.wait()
            self._to_publish.clear()
            notices = list(self._outbox)
            self._outbox.clear()
            if not notices:
                continue
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for notice in notices:
                        pipe.xadd(stream_key(notice["space"]), notice, maxlen=self.maxlen, approximate=True)
                    await pipe.execute()
            except Exception as exc:  # Redis is away: these notices are lost (catch-up fills)
                self.metrics.bus_notices.labels("dropped").inc(len(notices))
                self._down(exc)
                continue
            self.metrics.bus_notices.labels("published").inc(len(notices))

    # -- reading -----------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        attempt = 0
        pending_first = True  # our own PEL first (a restarted node's unread notices)
        while True:
            try:
                keys = await self._follow()
                if not keys:
                    self._watched.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(BLOCK_MS / 1000):
                            await self._watched.wait()
                    await self._client.ping()
                    self._up()
                    attempt = 0
                    continue
                start_id = "0" if pending_first else ">"
                reply = await self._client.xreadgroup(
                    self.group, self.node, {k: start_id for k in keys}, count=READ_COUNT,
                    block=None if pending_first else BLOCK_MS)
                pending_first = False
                self._up()
                attempt = 0
                await self._handle(reply)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if "NOGROUP" in str(exc):  # the stream or group went (trimmed away, Redis restarted)
                    self._groups.clear()
                    continue
                self._down(exc)
                pending_first = True
                delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(attempt, 10))
                attempt += 1
                await asyncio.sleep(random.uniform(delay / 2, delay))  # reconnection backoff

    async def _follow(self) -> list[str]:
        """The stream keys of the open spaces, with this node's group on each (created at
        the stream's end: what came before is read from Postgres, now)."""
        spaces = list(self._spaces())
        fresh: list[str] = []
        for space in spaces:
            key = stream_key(space)
            if key in self._groups:
                continue
            try:
                await self._client.xgroup_create(key, self.group, id="$", mkstream=True)
            except Exception as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups.add(key)
            fresh.append(space)
        for space in fresh:  # what another node committed before the group was there
            await self._catch_up(space)
        if len(self._groups) > 4 * max(len(spaces), 64):  # closed spaces: forget their groups' keys
            self._groups &= {stream_key(s) for s in spaces}
        return [stream_key(s) for s in spaces]

    async def _handle(self, reply: Any) -> None:
        streams = reply.items() if isinstance(reply, dict) else (reply or [])
        due: set[str] = set()
        acks: dict[str, list[Any]] = {}
        now = _now_ms()
        for key, entries in streams:
            if isinstance(entries, list) and entries and isinstance(entries[0], list) and len(entries) == 1:
                entries = entries[0]  # (RESP3 nests them once more)
            for entry_id, fields in entries:
                acks.setdefault(_text(key), []).append(entry_id)
                if not fields:
                    continue  # trimmed while pending
                notice = {_text(k): _text(v) for k, v in fields.items()}
                if notice.get("node") == self.node:
                    continue
                self.metrics.bus_notices.labels("received").inc()
                with contextlib.suppress(KeyError, ValueError):
                    self.metrics.bus_lag.observe(max(0, now - int(notice["at"])) / 1000)
                due.add(notice.get("space", ""))
        for space in due:
            await self._catch_up(space)
        for key, ids in acks.items():
            await self._client.xack(key, self.group, *ids)

    # -- catching up from Postgres -----------------------------------------------------------
    async def _catch_up(self, space: str, refresh: bool = False) -> None:
        try:
            got = await (self.store.refresh(space) if refresh else self.store.catch_up(space))
        except Exception as exc:  # Postgres away: the next notice or re-check reads again
            log.warning("bus.catch-up.error", extra={"fields": {"space": space, "error": str(exc)}})
            return
        if got:
            self.metrics.bus_caught_up.inc(got)

    async def _catch_up_all(self) -> None:
        for space in list(self._spaces()):
            await self._catch_up(space)

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(self.recheck)  # the period of the re-check (a timer)
            spaces = sorted(self._spaces())
            if not spaces:
                continue
            start = self._rotation % len(spaces)
            chosen = (spaces[start:] + spaces[:start])[:RECHECK_SPACES]
            self._rotation = start + len(chosen)
            for space in chosen:
                await self._catch_up(space, refresh=True)


__all__ = ["BLOCK_MS", "RECHECK_SECONDS", "STREAM_MAXLEN", "URL_SCHEMES", "RelayBus", "stream_key"]
