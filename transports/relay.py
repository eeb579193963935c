"""The relay client: one-shot sync, and a long-running peer that stays connected and
reconnects with exponential backoff and jitter.

Interrupted transfers resume by themselves: every session starts from HAVE, i.e. from what
both sides committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from crdt_sync import Replica
from crdt_sync.protocol import Event, Session, SessionConfig
from crdt_sync.protocol.session import RELIABLE_LINK

from .driver import SessionOutcome, run_session
from .interface import EventStream, LinkReady, LinkServer, PeerEvent, PeerFound, PeerLost
from .websocket import connect

log = logging.getLogger("crdt_sync.peer")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n))."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.cap, self.base * 2 ** min(attempt, 30)))


async def sync_session(replica: Replica, url: str, *, live: bool = False,
                       spaces: list[str] | None = None, stop: asyncio.Event | None = None,
                       on_event: Callable[[Event], None] | None = None,
                       on_session: Callable[[Session], None] | None = None,
                       timeout: float | None = None, config: SessionConfig | None = None,
                       ssl: Any = None) -> SessionOutcome:
    """One session with the relay at ``url`` (raises ConnectFailed when unreachable)."""
    link = await connect(url, ssl=ssl)
    return await run_session(replica, link, live=live, spaces=spaces, stop=stop, on_event=on_event,
                             on_session=on_session, timeout=timeout, config=config or RELIABLE_LINK)


async def run_peer(replica: Replica, url: str, stop: asyncio.Event, *,
                   spaces: list[str] | None = None, backoff: Backoff | None = None,
                   rng: random.Random | None = None,
                   on_event: Callable[[Event], None] | None = None,
                   config: SessionConfig | None = None, ssl: Any = None) -> int:
    """Stay synced with the relay until ``stop`` is set; returns the number of sessions."""
    from .websocket import ConnectFailed

    backoff = backoff or Backoff()
    rng = rng or random.Random()
    attempt = sessions = 0
    while not stop.is_set():
        try:
            outcome = await sync_session(replica, url, live=True, spaces=spaces, stop=stop,
                                         on_event=on_event, config=config, ssl=ssl)
            sessions += 1
            if outcome.peer is not None:
                attempt = 0  # it authenticated: the relay is there, retry promptly
            closed = outcome.closed
            log.info("peer.session.closed", extra={"fields": {
                "relay": url, "code": closed.code if closed else None,
                "reason": closed.reason if closed else None}})
        except ConnectFailed as exc:
            log.warning("peer.unreachable", extra={"fields": {"relay": url, "error": str(exc)}})
        if stop.is_set():
            break
        delay = backoff.delay(attempt, rng)
        attempt += 1
        with contextlib.suppress(TimeoutError):  # waiting out the backoff, unless stopped
            await asyncio.wait_for(stop.wait(), delay)
    return sessions


#: A relay session that lasted this long resets the backoff: the relay is there.
STABLE_SESSION = 5.0


class RelayTransport:
    """The relay client as a :class:`~transports.interface.DiscoveryTransport`.

    Its one candidate is the relay at ``url``: a ``PeerFound`` at start, a ``LinkReady`` per
    connection (``serve`` runs the session), a ``PeerLost`` when it ends; then it reconnects
    with :class:`Backoff` (the delay resets after a session of ``STABLE_SESSION`` seconds).
    An async context manager that owns its one task.
    """

    name = "relay"

    def __init__(self, url: str, serve: LinkServer, *, backoff: Backoff | None = None,
                 rng: random.Random | None = None, ssl: Any = None,
                 connect_timeout: float = 10.0) -> None:
        from .websocket import sync_url

        self.url = sync_url(url)
        self.serve = serve
        self.backoff = backoff or Backoff()
        self.rng = rng or random.Random()
        self.ssl = ssl
        self.connect_timeout = connect_timeout
        self.sessions = 0
        self.last_error: str | None = None
        self._events = EventStream()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RelayTransport:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def events(self) -> AsyncIterator[PeerEvent]:
        async for event in self._events:
            yield event

    async def close(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._events.close()

    async def _run(self) -> None:
        from .websocket import ConnectFailed, connect

        loop = asyncio.get_running_loop()
        self._events.put(PeerFound(self.name, self.url, self.url))
        attempt = 0
        while not self._stop.is_set():
            try:
                link = await connect(self.url, timeout=self.connect_timeout, ssl=self.ssl)
            except ConnectFailed as exc:
                self.last_error = str(exc)
                log.warning("peer.unreachable", extra={"fields": {"relay": self.url, "error": str(exc)}})
            else:
                started = loop.time()
                ready = LinkReady(self.name, self.url, self.url, link, True)
                self._events.put(ready)
                self.sessions += 1
                try:
                    await self.serve(ready)
                finally:
                    await link.close()
                    self._events.put(PeerLost(self.name, self.url, "session ended"))
                if loop.time() - started >= STABLE_SESSION:
                    attempt = 0
            if self._stop.is_set():
                break
            delay = self.backoff.delay(attempt, self.rng)
            attempt += 1
            with contextlib.suppress(TimeoutError):  # waiting out the backoff, unless stopped
                await asyncio.wait_for(self._stop.wait(), delay)
