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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crdt_sync import Replica
from crdt_sync.protocol import Event, Session, SessionConfig
from crdt_sync.protocol.session import RELIABLE_LINK

from .driver import SessionOutcome, run_session
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
