"""The asyncio driver: runs a sans-I/O :class:`~crdt_sync.protocol.Session` over any
:class:`~transports.base.FrameLink`.

All protocol decisions live in the session; this loop only moves frames, feeds it the time,
wakes it at its deadlines and when the replica changed, and closes the link at the end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from crdt_sync import Replica
from crdt_sync.protocol import Closed, Event, Session, SessionConfig
from crdt_sync.protocol.messages import E_GOING_AWAY, E_NORMAL, E_TIMEOUT

from .base import FrameLink, LinkClosed

#: After a send failed on a closed link, how long to keep reading what the peer delivered
#: before it closed (a closed link returns those at once, then raises LinkClosed).
DRAIN_TIMEOUT = 1.0


@dataclass
class SessionOutcome:
    """How a session ended."""

    peer: str | None
    synced: bool
    closed: Closed | None
    bytes_in: int
    bytes_out: int
    frames_in: int
    frames_out: int
    events: list[Event] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.synced and (self.closed is None or self.closed.code in (E_NORMAL, E_GOING_AWAY))


@dataclass
class Hooks:
    """How the driver learns about the host between frames.

    Attributes:
        changed: set by the host when it has new envelopes to push (an observer, a hub).
        idle: called on every turn of a live session (a replica seals and refreshes here).
        before_send: awaited before frames are sent (a relay waits for its group commit so
            that no ACK leaves before the envelopes it acknowledges are on disk).
    """

    changed: asyncio.Event = field(default_factory=asyncio.Event)
    idle: Callable[[], None] | None = None
    before_send: Callable[[], Awaitable[None]] | None = None


async def run_session(replica: Replica, link: FrameLink, *, live: bool = False,
                      config: SessionConfig | None = None, stop: asyncio.Event | None = None,
                      on_event: Callable[[Event], None] | None = None,
                      clock: Callable[[], float] = time.monotonic,
                      maintain_interval: float = 0.2, timeout: float | None = None,
                      spaces: list[str] | None = None,
                      on_session: Callable[[Session], None] | None = None) -> SessionOutcome:
    """Sync ``replica`` with the peer at the other end of ``link``.

    Args:
        live: stay connected after catching up and push changes as they happen, until
            ``stop`` is set or the peer leaves. Otherwise say BYE as soon as both sides hold
            everything the other had.
        stop: set it to end a live session (the peer is told the link is going away).
        on_event: called with each session event (authenticated, received, synced, closed).
        timeout: give up after this many seconds (one-shot sessions).
        spaces: sync only these of the replica's spaces (default: all it keeps).
        on_session: called with the session before it starts (progress displays read it).
    """
    hooks = Hooks()

    def idle() -> None:
        replica.maintain()
        replica.refresh()  # other processes' edits: observers set `changed`

    hooks.idle = idle
    session = Session(replica, clock(), config, spaces=spaces)
    if on_session is not None:
        on_session(session)
    unsubscribe = replica.observe(lambda _changes: hooks.changed.set())
    try:
        return await drive(session, link, hooks, live=live, stop=stop, on_event=on_event,
                           clock=clock, tick_interval=maintain_interval, timeout=timeout)
    finally:
        unsubscribe()


async def drive(session: Session, link: FrameLink, hooks: Hooks, *, live: bool = False,
                stop: asyncio.Event | None = None, on_event: Callable[[Event], None] | None = None,
                clock: Callable[[], float] = time.monotonic, tick_interval: float = 0.2,
                timeout: float | None = None,
                on_send: Callable[[list[bytes]], None] | None = None) -> SessionOutcome:
    """Run ``session`` over ``link`` until it closes (see :func:`run_session`)."""
    changed = hooks.changed
    events: list[Event] = []
    frames_in = frames_out = 0
    started = clock()

    async def send(frames: list[bytes]) -> None:
        nonlocal frames_out
        if not frames:
            return
        if hooks.before_send is not None:
            await hooks.before_send()
        if on_send is not None:
            on_send(frames)
        for frame in frames:
            await link.send(frame)
            frames_out += 1

    def drain() -> None:
        for event in session.pop_events():
            events.append(event)
            if on_event is not None:
                on_event(event)

    recv: asyncio.Task[bytes] = asyncio.ensure_future(link.recv())
    waiters: list[asyncio.Task[object]] = []
    try:
        await send(session.start())
        while session.closed is None:
            now = clock()
            if not live and session.synced:
                await send(session.close(now, E_NORMAL))
                break
            if timeout is not None and now - started >= timeout:
                session.events.append(Closed(E_TIMEOUT, f"not synced after {timeout:g} s", False))
                break
            deadline = session.next_deadline()
            wait = max(0.0, (deadline if deadline is not None else now + 1.0) - now)
            if live and hooks.idle is not None:  # only hosts with idle work need the tick
                wait = min(wait, tick_interval)
            if timeout is not None:
                wait = min(wait, max(0.0, started + timeout - now))
            waiters = [asyncio.ensure_future(changed.wait())]
            if stop is not None:
                waiters.append(asyncio.ensure_future(stop.wait()))
            await asyncio.wait([recv, *waiters], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            now = clock()
            out: list[bytes] = []
            if recv.done():
                try:
                    frame = recv.result()
                except LinkClosed:
                    if session.closed is None:
                        session.events.append(Closed(E_GOING_AWAY, "the link closed", True))
                    break
                frames_in += 1
                out += session.receive(frame, now)
                recv = asyncio.ensure_future(link.recv())
            if live and hooks.idle is not None:
                hooks.idle()
            if changed.is_set():
                changed.clear()
                out += session.local_changed(now)
            if stop is not None and stop.is_set():
                out += session.close(now, E_GOING_AWAY)
            out += session.tick(now)
            drain()
            await send(out)
    except LinkClosed:
        # A send failed: the peer closed, maybe right after its last frames (its final ACK
        # and BYE). Read what it delivered, so a session that did finish knows it.
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                while session.closed is None:
                    frame = await recv
                    frames_in += 1
                    session.receive(frame, clock())  # its answers can no longer be sent
                    recv = asyncio.ensure_future(link.recv())
        except (LinkClosed, TimeoutError):
            pass  # everything delivered was read (or the link would not say): it is over
        if session.closed is None:
            session.events.append(Closed(E_GOING_AWAY, "the link closed", True))
    finally:
        recv.cancel()
        for waiter in waiters:
            waiter.cancel()
        await asyncio.wait([recv])  # let the cancelled read finish; its outcome is moot
        await link.close()
    drain()
    closed = next((e for e in reversed(events) if isinstance(e, Closed)), None)
    return SessionOutcome(session.peer, session.synced, closed, session.bytes_in,
                          session.bytes_out, frames_in, frames_out, events)
