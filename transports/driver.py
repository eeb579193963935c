"""The asyncio driver: runs a sans-I/O :class:`~crdt_sync.protocol.Session` over any
:class:`~transports.base.FrameLink`.

All protocol decisions live in the session; this loop only moves frames, feeds it the time,
wakes it at its deadlines and when the replica changed, and closes the link at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
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


#: Frames waiting to be sent (or for a commit) above which the driver stops reading the link.
MAX_PENDING = 64
#: Frames that never wait for the host's commit (unless a frame that must keep its place
#: before them is waiting): they make no claim about what the host stored.
_FREE = frozenset({T_HELLO, T_AUTH, T_SPACES, T_ENVELOPES, T_PING, T_PONG})
#: Frames that wait and keep everything after them waiting too (order matters to the peer:
#: ENVELOPES only make sense after HAVE; BYE and ERROR come last).
_BARRIER = frozenset({T_HAVE, T_ERROR, T_BYE})


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
    session = Session(replica.sync_host, clock(), config, spaces=spaces)
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

    The session is only ever called synchronously, and every frame it returns goes through
    one ordered outbox, so whoever has something for it calls it right away instead of
    waking a task for it: a reader task hands it each frame as it arrives; a host without
    idle work (a relay) has ``changed`` handled by a callback; a commit releases the frames
    that waited for it from its callback. This task handles timers, ``stop``, the end, and
    the frames the link cannot take at once (it awaits those). A link with
    ``send_nowait(frame) -> bool`` takes frames without a task switch when it can.
    """
    loop = asyncio.get_running_loop()
    changed = hooks.changed
    events: list[Event] = []
    counts = [0, 0]  # frames in, frames out
    started = clock()
    waker = _Waker(loop)
    outbox: deque[bytes] = deque()
    #: frames waiting for a commit, in order
    held: deque[tuple[asyncio.Future[None] | None, bytes]] = deque()
    flags = {"barrier": False, "sending": False, "poke": False, "link_closed": False}
    broken: list[BaseException] = []  # a synchronous send found the link closed, or a commit failed
    watched: list[asyncio.Future[None] | None] = [None]
    room: list[asyncio.Future[None]] = []  # the reader waits here while too much is pending
    nowait: Callable[[bytes], bool] | None = getattr(link, "send_nowait", None)
    inline_changes = hooks.idle is None

    def drain() -> None:
        for event in session.pop_events():
            events.append(event)
            if on_event is not None:
                on_event(event)

    def pump_out() -> None:
        """Send from the outbox what the link takes without waiting; wake the task for the rest."""
        if flags["sending"]:
            return  # the task is awaiting a send: it continues with the outbox in order
        if nowait is not None:
            try:
                while outbox and nowait(outbox[0]):
                    outbox.popleft()
                    counts[1] += 1
            except LinkClosed as exc:
                broken.append(exc)
        if outbox or broken:
            waker.wake()
        make_room()

    def queue(frames: list[bytes]) -> None:
        if on_send is not None:
            on_send(frames)
        outbox.extend(frames)

    def emit(frames: list[bytes]) -> None:
        """Route the session's frames: to the outbox, or held until the host's commit."""
        if not frames:
            return
        commit = hooks.durable() if hooks.durable is not None else None
        if commit is None and not held:
            queue(frames)
            return
        ready = []
        for frame in frames:
            kind = frame[1] if len(frame) > 1 else -1
            if flags["barrier"] or (kind not in _FREE and (commit is not None or held)):
                held.append((commit, frame))
                flags["barrier"] = flags["barrier"] or kind in _BARRIER
            else:
                ready.append(frame)
        if commit is not None and commit is not watched[0]:
            watched[0] = commit
            commit.add_done_callback(committed)
        if ready:
            queue(ready)

    def release() -> None:
        """Move the held frames whose commit is done to the outbox."""
        ready = []
        while held:
            commit, frame = held[0]
            if commit is not None:
                if not commit.done():
                    break
                if commit.exception() is not None:
                    broken.append(commit.exception())  # type: ignore[arg-type]  # the disk failed
                    waker.wake()
                    return
            held.popleft()
            ready.append(frame)
        if not held:
            flags["barrier"] = False
        if ready:
            queue(ready)

    def committed(_: object) -> None:
        release()
        pump_out()

    def after_session() -> None:
        drain()
        pump_out()
        if session.closed is not None or (not live and session.synced):
            waker.wake()

    def poke() -> None:
        flags["poke"] = False
        if session.closed is None and changed.is_set():
            changed.clear()
            emit(session.local_changed(clock()))
            after_session()

    def on_changed() -> None:
        if inline_changes:
            if not flags["poke"]:
                flags["poke"] = True
                loop.call_soon(poke)  # not from inside another session's call: after it
        else:
            waker.wake()

    def make_room() -> None:
        if room and len(outbox) + len(held) <= MAX_PENDING:
            _resolve(room.pop())

    async def reader() -> None:
        try:
            while session.closed is None:
                while len(outbox) + len(held) > MAX_PENDING:
                    # The peer is not reading (or the disk is slow): stop reading it too,
                    # rather than queue its answers without bound.
                    wait = loop.create_future()
                    room.append(wait)
                    await wait
                frame = await link.recv()
                if session.closed is not None:
                    break
                counts[0] += 1
                emit(session.receive(frame, clock()))
                after_session()
        except LinkClosed:
            flags["link_closed"] = True
            waker.wake()

    async def flush() -> None:
        """Send the outbox in order, waiting for the link where it must."""
        if broken:
            raise broken[0]
        flags["sending"] = True
        try:
            while outbox:
                frame = outbox[0]
                if nowait is None or not nowait(frame):
                    await link.send(frame)
                outbox.popleft()
                counts[1] += 1
                make_room()
        finally:
            flags["sending"] = False
        if broken:
            raise broken[0]

    changed.listener = on_changed
    if changed.is_set():
        on_changed()
    reading: asyncio.Task[None] | None = None
    stopping = loop.create_task(stop.wait()) if stop is not None else None
    if stopping is not None:
        stopping.add_done_callback(waker.wake)
    try:
        emit(session.start())
        await flush()
        reading = loop.create_task(reader())
        while session.closed is None:
            now = clock()
            if not live and session.synced:
                emit(session.close(now, E_NORMAL))
                break
            if timeout is not None and now - started >= timeout:
                session.events.append(Closed(E_TIMEOUT, f"not synced after {timeout:g} s", False))
                break
            if not (outbox or broken or flags["link_closed"] or (changed.is_set() and not inline_changes)
                    or (stop is not None and stop.is_set())):
                deadline = session.next_deadline()
                wait = max(0.0, (deadline if deadline is not None else now + 1.0) - now)
                if live and hooks.idle is not None:  # only hosts with idle work need the tick
                    wait = min(wait, tick_interval)
                if timeout is not None:
                    wait = min(wait, max(0.0, started + timeout - now))
                await waker.wait(wait)
                now = clock()
            if session.closed is not None:
                break
            if flags["link_closed"]:
                session.events.append(Closed(E_GOING_AWAY, "the link closed", True))
                break
            if live and hooks.idle is not None:
                hooks.idle()
            if changed.is_set() and not inline_changes:
                changed.clear()
                emit(session.local_changed(now))
            if stop is not None and stop.is_set():
                emit(session.close(now, E_GOING_AWAY))
            emit(session.tick(now))
            drain()
            await flush()
        drain()
        if held and not (session.closed is not None and session.closed.by_peer):
            # (a peer that said BYE or ERROR reads nothing more)
            for commit, _ in list(held):
                if commit is not None:
                    await asyncio.wait([commit])
            release()
        await flush()
    except LinkClosed:
        # A send failed: the peer closed, maybe right after its last frames (its final ACK
        # and BYE). The reader goes on handing the session what it delivered, so a session
        # that did finish knows it.
        if reading is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    while session.closed is None and not flags["link_closed"] and not reading.done():
                        await waker.wait(DRAIN_TIMEOUT)
        if session.closed is None:
            session.events.append(Closed(E_GOING_AWAY, "the link closed", True))
    finally:
        changed.listener = None
        flags["poke"] = True  # a pending poke finds nothing to do
        changed.clear()
        waker.close()
        tasks = [t for t in (reading, stopping) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)  # let them finish; their outcome is moot
        await link.close()
    drain()
    closed = next((e for e in reversed(events) if isinstance(e, Closed)), None)
    return SessionOutcome(session.peer, session.synced, closed, session.bytes_in,
                          session.bytes_out, counts[0], counts[1], events)
