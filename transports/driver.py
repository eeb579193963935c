"""The asyncio driver: runs a sans-I/O :class:`~crdt_sync.protocol.Session` over any
:class:`~transports.base.FrameLink`.

All protocol decisions live in the session; this loop only moves frames, feeds it the time,
wakes it at its deadlines and when the replica changed, and closes the link at the end.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from crdt_sync import Replica
from crdt_sync.protocol import Closed, Event, Session, SessionConfig
from crdt_sync.protocol.messages import (
    E_GOING_AWAY,
    E_NORMAL,
    E_TIMEOUT,
    T_AUTH,
    T_BYE,
    T_ENVELOPES,
    T_ERROR,
    T_HAVE,
    T_HELLO,
    T_PING,
    T_PONG,
    T_SPACES,
)

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


class Changed(asyncio.Event):
    """An :class:`asyncio.Event` that also tells the driver, without a task waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.listener: Callable[[], None] | None = None

    def set(self) -> None:
        if not self.is_set():
            super().set()
        if self.listener is not None:
            self.listener()


@dataclass
class Hooks:
    """How the driver learns about the host between frames.

    Attributes:
        changed: set by the host when it has new envelopes to push (an observer, a hub).
        idle: called on every turn of a live session (a replica seals and refreshes here).
        durable: returns a future that is done once everything the host accepted so far is
            on disk, or None when it is. A relay's ACKs (and HAVE, ERROR, BYE) wait for it,
            so that no ACK leaves before the envelopes it acknowledges are on disk;
            ENVELOPES, PING and PONG frames do not wait (they claim nothing).
    """

    changed: Changed = field(default_factory=Changed)
    idle: Callable[[], None] | None = None
    durable: Callable[[], asyncio.Future[None] | None] | None = None


#: Frames that never wait for the host's commit (unless a frame that must keep its place
#: before them is waiting): they make no claim about what the host stored.
_FREE = frozenset({T_HELLO, T_AUTH, T_SPACES, T_ENVELOPES, T_PING, T_PONG})
#: Frames that wait and keep everything after them waiting too (order matters to the peer:
#: ENVELOPES only make sense after HAVE; BYE and ERROR come last).
_BARRIER = frozenset({T_HAVE, T_ERROR, T_BYE})
#: Frames that close a session (BYE, ERROR, or malformed: both end it): the reader stops.
_LAST = frozenset({bytes([T_BYE]), bytes([T_ERROR])})
#: Most frames read from the link before the driver takes them; above this, it stops reading.
MAX_INBOX = 64


class _Waker:
    """One future at a time that the link, the host, a stop, a commit or the timer resolve.

    The timer is lazy: it is moved only when the next deadline comes earlier than the one
    it is set for (a later deadline just costs a spurious turn), so a busy session does not
    schedule and cancel a timer per turn.
    """

    __slots__ = ("at", "flag", "future", "loop", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] | None = None
        self.flag = False
        self.timer: asyncio.TimerHandle | None = None
        self.at = 0.0

    def wake(self, *_: object) -> None:
        self.flag = True
        future = self.future
        if future is not None and not future.done():
            future.set_result(None)

    def _expired(self) -> None:
        self.timer = None
        self.wake()

    async def wait(self, timeout: float) -> None:
        if self.flag:
            self.flag = False
            return
        at = self.loop.time() + timeout
        if self.timer is None or at < self.at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer, self.at = self.loop.call_at(at, self._expired), at
        future = self.future = self.loop.create_future()
        try:
            await future
        finally:
            self.future = None
            self.flag = False

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
    """Run ``session`` over ``link`` until it closes (see :func:`run_session`).

    One task reads the link into a bounded inbox; this one waits on a single future that
    a frame, the host's ``changed``, ``stop``, a commit or the next deadline resolves.
    """
    loop = asyncio.get_running_loop()
    changed = hooks.changed
    events: list[Event] = []
    frames_in = frames_out = 0
    started = clock()
    waker = _Waker(loop)
    inbox: deque[bytes] = deque()
    room: list[asyncio.Future[None]] = []  # the reader waits here while the inbox is full
    link_closed = False
    #: frames waiting for a commit, in order: (the commit, frame, is a barrier)
    held: deque[tuple[asyncio.Future[None] | None, bytes]] = deque()
    barrier_held = False
    watched: asyncio.Future[None] | None = None

    async def reader() -> None:
        nonlocal link_closed
        try:
            while True:
                if len(inbox) >= MAX_INBOX:
                    wait = loop.create_future()
                    room.append(wait)
                    await wait
                frame = await link.recv()
                inbox.append(frame)
                waker.wake()
                if frame[1:2] in _LAST:
                    return  # the session ends on it: leave the link's close to the driver
        except LinkClosed:
            link_closed = True
            waker.wake()

    async def transmit(frames: list[bytes]) -> None:
        nonlocal frames_out
        if on_send is not None:
            on_send(frames)
        for frame in frames:
            await link.send(frame)
            frames_out += 1

    async def send(frames: list[bytes]) -> None:
        nonlocal barrier_held, watched
        if not frames:
            return
        commit = hooks.durable() if hooks.durable is not None else None
        if commit is None and not held:
            await transmit(frames)
            return
        now_frames = []
        for frame in frames:
            kind = frame[1] if len(frame) > 1 else -1
            if barrier_held or (kind not in _FREE and (commit is not None or held)):
                held.append((commit, frame))
                barrier_held = barrier_held or kind in _BARRIER
            else:
                now_frames.append(frame)
        if commit is not None and commit is not watched:
            watched = commit
            commit.add_done_callback(waker.wake)
        await transmit(now_frames)

    async def release(wait: bool) -> None:
        """Send the held frames whose commit is done (all of them, waiting, if ``wait``)."""
        nonlocal barrier_held
        ready = []
        while held:
            commit, frame = held[0]
            if commit is not None and not commit.done():
                if not wait:
                    break
                await asyncio.shield(commit)
            if commit is not None and commit.exception() is not None:
                raise commit.exception()  # type: ignore[misc]  # the disk failed: no ACK may leave
            held.popleft()
            ready.append(frame)
        if not held:
            barrier_held = False
        await transmit(ready)

    def drain() -> None:
        for event in session.pop_events():
            events.append(event)
            if on_event is not None:
                on_event(event)

    changed.listener = waker.wake
    reading = loop.create_task(reader())
    stopping = loop.create_task(stop.wait()) if stop is not None else None
    if stopping is not None:
        stopping.add_done_callback(waker.wake)
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
            if not (inbox or link_closed or changed.is_set() or (stop is not None and stop.is_set())):
                deadline = session.next_deadline()
                wait = max(0.0, (deadline if deadline is not None else now + 1.0) - now)
                if live and hooks.idle is not None:  # only hosts with idle work need the tick
                    wait = min(wait, tick_interval)
                if timeout is not None:
                    wait = min(wait, max(0.0, started + timeout - now))
                await waker.wait(wait)
                now = clock()
            out: list[bytes] = []
            while inbox and session.closed is None:
                frames_in += 1
                out += session.receive(inbox.popleft(), now)
            inbox.clear()  # (after a close: nothing more is read)
            while room:
                _resolve(room.pop())
            if link_closed and session.closed is None:
                await send(out)
                session.events.append(Closed(E_GOING_AWAY, "the link closed", True))
                break
            if live and hooks.idle is not None:
                hooks.idle()
            if changed.is_set():
                changed.clear()
                out += session.local_changed(now)
            if stop is not None and stop.is_set():
                out += session.close(now, E_GOING_AWAY)
            out += session.tick(now)
            drain()
            if held:
                await release(False)
            await send(out)
        if held and not (session.closed is not None and session.closed.by_peer):
            await release(True)  # (a peer that said BYE or ERROR reads nothing more)
    except LinkClosed:
        # A send failed: the peer closed, maybe right after its last frames (its final ACK
        # and BYE). Read what it delivered, so a session that did finish knows it.
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                while session.closed is None:
                    while inbox and session.closed is None:
                        frames_in += 1
                        session.receive(inbox.popleft(), clock())  # its answers cannot be sent
                    while room:
                        _resolve(room.pop())
                    if link_closed or session.closed is not None:
                        break
                    await waker.wait(DRAIN_TIMEOUT)
        except TimeoutError:
            pass  # everything delivered was read (or the link would not say): it is over
        if session.closed is None:
            session.events.append(Closed(E_GOING_AWAY, "the link closed", True))
    finally:
        changed.listener = None
        waker.close()
        reading.cancel()
        if stopping is not None:
            stopping.cancel()
        await asyncio.wait([reading, *([stopping] if stopping is not None else [])])
        await link.close()
    drain()
    closed = next((e for e in reversed(events) if isinstance(e, Closed)), None)
    return SessionOutcome(session.peer, session.synced, closed, session.bytes_in,
                          session.bytes_out, frames_in, frames_out, events)
