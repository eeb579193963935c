"""Transports that can be lost, reopened: the daemon's supervision of each transport it runs.

A :class:`Slot` holds one transport the daemon runs and the factory that built it. The first
open is the daemon's start (its failure is the daemon's: a clear error). After that the slot
watches the transport's event stream; a stream that ends while the daemon is not closing
means the transport ended by itself (a BLE radio whose HCI transport dropped: ``lost`` says
why). The slot then closes what is left of it and opens a new one from the factory, with
exponential backoff and jitter (:class:`Backoff`), forever while the daemon runs, each attempt
bounded by :data:`REOPEN_TIMEOUT`. Failures are logged (``daemon.transport.reopen``, with the
reason), never raised; :class:`TransportState` is what status shows.

Nothing polls: the slot waits on the event stream, and between attempts on the daemon's
``stopping`` event for at most the backoff delay (closing the daemon ends that wait at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from .interface import LinkServer, ManagedTransport, PeerEvent

log = logging.getLogger("crdt_sync.daemon")

#: The first wait before reopening a lost transport, and the longest (it doubles in between).
REOPEN_FIRST = 0.5
REOPEN_MAX = 30.0
#: Each reopening attempt (entering a new transport) is given this long.
REOPEN_TIMEOUT = 15.0
#: How long closing what is left of a lost transport may take.
CLOSE_TIMEOUT = 15.0
#: At the daemon's close, how long the supervision gets to read a closed transport's last events.
DRAIN_GRACE = 2.0

#: A transport's states in status: running; lost and waiting for the next attempt; opening.
UP, DOWN, REOPENING = "up", "down", "reopening"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


class Backoff:
    """Exponential backoff with jitter: ``first`` doubling to ``maximum``, each delay drawn
    uniformly from its upper half (so that devices that lost one radio do not retry in step)."""

    def __init__(self, first: float = REOPEN_FIRST, maximum: float = REOPEN_MAX,
                 draw: Callable[[], float] = random.random) -> None:
        if not 0 < first <= maximum:
            raise ValueError(f"backoff: 0 < first ({first}) <= maximum ({maximum})")
        self.first, self.maximum, self.draw = first, maximum, draw
        self._next = first

    def delay(self) -> float:
        """The next wait (and the one after it doubles, up to ``maximum``)."""
        base, self._next = self._next, min(self._next * 2, self.maximum)
        return base * (0.5 + 0.5 * self.draw())

    def reset(self) -> None:
        self._next = self.first


@dataclass
class TransportState:
    """One transport as status shows it. ``reason``: why it last went down or why the last
    attempt to reopen it failed; ``attempts``: attempts since it went down; ``reopened``:
    how often it came back; ``next_attempt``: when the next attempt is due, while down."""

    name: str
    state: str = UP
    since: str = ""
    reason: str | None = None
    attempts: int = 0
    reopened: int = 0
    next_attempt: str | None = None


class Slot:
    """One transport of the daemon, reopened from ``factory`` whenever it ends by itself.

    Args:
        factory: builds the transport, given the daemon's link server ``serve``.
        stopping: the daemon's closing event (set before it closes its transports).
        on_event: called with every discovery event of every transport this slot opens.
        on_change: called whenever :attr:`state` changes.
        backoff: the waits between attempts to reopen.
    """

    def __init__(self, factory: Callable[[LinkServer], ManagedTransport], serve: LinkServer, *,
                 stopping: asyncio.Event, on_event: Callable[[PeerEvent], None],
                 on_change: Callable[[], None], backoff: Backoff | None = None,
                 open_timeout: float = REOPEN_TIMEOUT) -> None:
        self.factory, self.serve = factory, serve
        self.stopping = stopping
        self.on_event, self.on_change = on_event, on_change
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        #: The transport running now, or the last one (closed) while it is being reopened.
        self.transport: ManagedTransport | None = None
        self.state = TransportState("?")
        self._task: asyncio.Task[None] | None = None
        self._waiting = False  # between attempts, or in one: closing cancels at once

    @property
    def name(self) -> str:
        return self.state.name

    async def start(self) -> None:
        """The first open (its errors are the caller's), then supervision in a task."""
        transport = self.factory(self.serve)
        await transport.__aenter__()
        self.transport = transport
        self.state = TransportState(transport.name, UP, _iso(time.time()))
        self._task = asyncio.get_running_loop().create_task(self._supervise(),
                                                            name=f"supervise {transport.name}")

    async def close(self) -> None:
        """Stop supervising and close the transport (the caller set ``stopping`` first)."""
        task, self._task = self._task, None
        if task is not None and self._waiting:
            task.cancel()  # a backoff wait or an attempt: nothing worth waiting for
        transport = self.transport
        if transport is not None and not self._waiting:
            await transport.__aexit__(None, None, None)
        if task is not None:
            await asyncio.wait([task], timeout=DRAIN_GRACE)
            task.cancel()  # a stream that did not end with its transport
            await asyncio.gather(task, return_exceptions=True)

    # -- inside ---------------------------------------------------------------------------------
    async def _supervise(self) -> None:
        while True:
            transport = self.transport
            assert transport is not None
            failed = None
            try:
                async for event in transport.events():
                    self.on_event(event)
            except Exception as exc:  # a transport's (or a callback's) bug: as if it ended
                failed = f"its event stream failed: {type(exc).__name__}: {exc}"
            if self.stopping.is_set():
                return
            reason = getattr(transport, "lost", None) or failed or "its event stream ended"
            log.warning("daemon.transport.lost", extra={"fields": {
                "transport": self.name, "reason": reason}})
            self._set(DOWN, reason=reason, attempts=0)
            with contextlib.suppress(Exception):  # what is left of it (closing may race this)
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await transport.__aexit__(None, None, None)
            self._waiting = True
            if not await self._reopen():
                return
            self._waiting = False

    async def _reopen(self) -> bool:
        """Reopen until it works (True) or the daemon closes (False)."""
        self.backoff.reset()
        while True:
            delay = self.backoff.delay()
            self._set(DOWN, next_attempt=_iso(time.time() + delay))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stopping.wait()
            if self.stopping.is_set():
                return False
            self._set(REOPENING, attempts=self.state.attempts + 1, next_attempt=None)
            transport = self.factory(self.serve)
            try:
                async with asyncio.timeout(self.open_timeout):
                    await transport.__aenter__()
            except Exception as exc:  # whatever the transport raised: logged, retried
                reason = (f"no answer within {self.open_timeout:g} s"
                          if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__)
                log.warning("daemon.transport.reopen", extra={"fields": {
                    "transport": self.name, "attempt": self.state.attempts, "reason": reason}})
                self.state.reason = reason
                continue
            if self.stopping.is_set():  # closing began while it opened
                await transport.__aexit__(None, None, None)
                return False
            self.transport = transport
            log.info("daemon.transport.reopened", extra={"fields": {
                "transport": self.name, "attempts": self.state.attempts}})
            self._set(UP, reopened=self.state.reopened + 1, next_attempt=None)
            return True

    def _set(self, state: str, **changes: object) -> None:
        if state != self.state.state:
            self.state.since = _iso(time.time())
        self.state.state = state
        for key, value in changes.items():
            setattr(self.state, key, value)
        self.on_change()
