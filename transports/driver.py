"""The asyncio driver: runs a sans-I/O :class:`~crdt_sync.protocol.Session` over any
:class:`~transports.base.FrameLink`.

Every protocol decision lives in the session (when a one-shot session ends, how it ends when
the link closes or time runs out, which frames wait for the host's commit). The driver only
moves frames, feeds the session the time, wakes it at its deadlines and when the host
changed, and closes the link at the end. The session returns its frames in the clear
(:meth:`~crdt_sync.protocol.Session.defer_sealing`): the driver orders them (the commit gate)
and hands them to ``on_send`` as they are, and seals each as it enters the outbox, so the
link's counters grow in the order frames leave. Its pieces, each owning its state:

- :class:`_Waker`: the one future the turn loop sleeps on (link, host, stop, commit, timer).
- :class:`_CommitGate`: the frames waiting for the host's commit, in order.
- :class:`_Driver`: one session over one link: the outbox, the reader task, the turn loop.

:func:`drive` and :func:`run_session` are the entry points.
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
from crdt_sync.protocol.messages import E_GOING_AWAY, E_NORMAL
from crdt_sync.protocol.session import CommitOrder

from .base import FrameLink, LinkClosed
from .interface import send_nowait_of

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
            ENVELOPES, PING and PONG frames do not wait (they claim nothing). The session
            says which frame is which (:class:`~crdt_sync.protocol.session.CommitOrder`).
    """

    changed: Changed = field(default_factory=Changed)
    idle: Callable[[], None] | None = None
    durable: Callable[[], asyncio.Future[None] | None] | None = None


#: Frames waiting to be sent (or for a commit) above which the driver stops reading the link.
MAX_PENDING = 64


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


class _CommitGate:
    """The frames that wait for the host's commit (``Hooks.durable``), in order.

    The session says how each frame is ordered against the commit (:class:`CommitOrder`);
    the gate keeps that order. ``on_commit`` is called when a commit it waits for is done.
    """

    def __init__(self, session: Session, durable: Callable[[], asyncio.Future[None] | None] | None,
                 on_commit: Callable[[], None]) -> None:
        self._order = session.commit_order
        self._durable = durable
        self._on_commit = on_commit
        self._held: deque[tuple[asyncio.Future[None] | None, bytes]] = deque()
        self._barrier = False  # a held barrier: every frame after it waits too
        self._watched: asyncio.Future[None] | None = None  # the commit with our callback
        #: the first commit that failed (the disk): nothing held goes out after it
        self.failure: BaseException | None = None

    def __len__(self) -> int:
        return len(self._held)

    def route(self, frames: list[bytes]) -> list[bytes]:
        """The frames that may go now, in order; holds the others until their commit."""
        if not frames:
            return frames
        commit = self._durable() if self._durable is not None else None
        if commit is None and not self._held:
            return frames  # the common case, without a look at each frame
        ready = []
        for frame in frames:
            order = self._order(frame)
            if self._barrier or (order is not CommitOrder.FREE and (commit is not None or self._held)):
                self._held.append((commit, frame))
                self._barrier = self._barrier or order is CommitOrder.BARRIER
            else:
                ready.append(frame)
        if commit is not None and commit is not self._watched:
            self._watched = commit
            commit.add_done_callback(lambda _: self._on_commit())
        return ready

    def release(self) -> list[bytes]:
        """The held frames whose commit is done, in order (none once a commit failed:
        ``failure`` says why)."""
        ready = []
        while self._held:
            commit, frame = self._held[0]
            if commit is not None:
                if not commit.done():
                    break
                failure = commit.exception()
                if failure is not None:
                    self.failure = self.failure or failure
                    return []
            self._held.popleft()
            ready.append(frame)
        if not self._held:
            self._barrier = False
        return ready

    async def settle(self) -> None:
        """Wait for every commit a held frame waits for (the disk, not the network)."""
        for commit, _ in list(self._held):
            if commit is not None:
                await asyncio.wait([commit])


class _Driver:
    """Runs one session over one link until the session closes (see :func:`drive`).

    The session is only ever called synchronously, and every frame it returns goes through
    one ordered outbox, so whoever has something for it calls it right away instead of
    waking a task for it: the reader task hands it each frame as it arrives; a host without
    idle work (a relay) has ``changed`` handled by a callback; a commit releases the frames
    that waited for it from its callback. The turn loop (:meth:`run`) handles timers,
    ``stop``, the end, and the frames the link cannot take at once (it awaits those). A link
    with ``send_nowait(frame) -> bool`` takes frames without a task switch when it can.
    """

    def __init__(self, session: Session, link: FrameLink, hooks: Hooks, *, live: bool,
                 stop: asyncio.Event | None, on_event: Callable[[Event], None] | None,
                 clock: Callable[[], float], tick_interval: float, timeout: float | None,
                 on_send: Callable[[list[bytes]], None] | None) -> None:
        self.session = session
        self.link = link
        self.hooks = hooks
        self.live = live
        self.stop = stop
        self.on_event = on_event
        self.clock = clock
        self.tick_interval = tick_interval
        self.timeout = timeout
        self.on_send = on_send
        self.loop = asyncio.get_running_loop()
        self.started = clock()
        self.events: list[Event] = []
        self.frames_in = self.frames_out = 0
        self.waker = _Waker(self.loop)
        self.outbox: deque[bytes] = deque()
        self.gate = _CommitGate(session, hooks.durable, self._on_commit)
        self.nowait: Callable[[bytes], bool] | None = send_nowait_of(link)
        # A host without idle work (a relay) has `changed` handled inline, not by a turn.
        self.inline_changes = hooks.idle is None
        self.sending = False  # the turn loop awaits a send: it goes on with the outbox in order
        self.poke_pending = False  # a call of local_changed is scheduled
        self.link_closed = False  # the reader found the link closed
        self.link_error = "the link closed"  # what closed it, as the link said
        #: a synchronous send found the link closed, or a commit failed: raised by _flush
        self.broken: BaseException | None = None
        self.room: asyncio.Future[None] | None = None  # the reader waits here while too much is pending
        session.defer_sealing()

    async def run(self) -> SessionOutcome:
        session, changed = self.session, self.hooks.changed
        changed.listener = self._on_changed
        if changed.is_set():
            self._on_changed()
        reading: asyncio.Task[None] | None = None
        stopping = self.loop.create_task(self.stop.wait()) if self.stop is not None else None
        if stopping is not None:
            stopping.add_done_callback(self.waker.wake)
        try:
            self._emit(session.start())
            await self._flush()
            reading = self.loop.create_task(self._read())
            await self._turns()
            self._pop_events()
            if len(self.gate) and session.peer_listening:
                await self.gate.settle()
                self._release()
            await self._flush()
        except LinkClosed as exc:
            # A send failed: the peer closed, maybe right after its last frames (its final ACK
            # and BYE). The reader goes on handing the session what it delivered, so a session
            # that did finish knows it.
            if reading is not None:
                await self._read_what_is_left(reading)
            session.link_lost(str(exc))  # (nothing if the session did finish)
        finally:
            changed.listener = None
            self.poke_pending = True  # a scheduled poke finds nothing to do
            changed.clear()
            self.waker.close()
            tasks = [t for t in (reading, stopping) if t is not None]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)  # let them finish; their outcome is moot
            await self.link.close()
        self._pop_events()
        closed = next((e for e in reversed(self.events) if isinstance(e, Closed)), None)
        return SessionOutcome(session.peer, session.synced, closed, session.bytes_in,
                              session.bytes_out, self.frames_in, self.frames_out, self.events)

    async def _turns(self) -> None:
        """Until the session closes: its timers, the host's turn, ``stop``, the end."""
        session = self.session
        while session.closed is None:
            now = self.clock()
            if not self.live and (last := session.end_if_synced(now)) is not None:
                self._emit(last)
                return
            if self.timeout is not None and now - self.started >= self.timeout:
                session.expire(self.timeout)
                return
            if not self._has_work():
                await self.waker.wait(self._sleep_for(now))
                now = self.clock()
            if session.closed is not None:
                return
            if self.link_closed:
                session.link_lost(self.link_error)
                return
            if self.live and self.hooks.idle is not None:
                self.hooks.idle()
            if self.hooks.changed.is_set() and not self.inline_changes:
                self.hooks.changed.clear()
                self._emit(session.local_changed(now))
            if self.stop is not None and self.stop.is_set():
                self._emit(session.going_away(now))
            self._emit(session.tick(now))
            self._pop_events()
            await self._flush()

    def _has_work(self) -> bool:
        return bool(self.outbox or self.broken or self.link_closed
                    or (self.hooks.changed.is_set() and not self.inline_changes)
                    or (self.stop is not None and self.stop.is_set()))

    def _sleep_for(self, now: float) -> float:
        deadline = self.session.next_deadline()
        wait = max(0.0, (deadline if deadline is not None else now + 1.0) - now)
        if self.live and self.hooks.idle is not None:  # only hosts with idle work need the tick
            wait = min(wait, self.tick_interval)
        if self.timeout is not None:
            wait = min(wait, max(0.0, self.started + self.timeout - now))
        return wait

    async def _read(self) -> None:
        """The reader task: hands the session each frame as it arrives."""
        session = self.session
        try:
            while session.closed is None:
                while self._pending() > MAX_PENDING:
                    # The peer is not reading (or the disk is slow): stop reading it too,
                    # rather than queue its answers without bound.
                    room = self.room = self.loop.create_future()
                    await room
                frame = await self.link.recv()
                if session.closed is not None:
                    break
                self.frames_in += 1
                self._emit(session.receive(frame, self.clock()))
                self._after_session()
        except LinkClosed as exc:
            self.link_closed = True
            self.link_error = str(exc) or self.link_error
            self.waker.wake()

    async def _read_what_is_left(self, reading: asyncio.Task[None]) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT):
                while self.session.closed is None and not self.link_closed and not reading.done():
                    await self.waker.wait(DRAIN_TIMEOUT)

    async def _flush(self) -> None:
        """Send the outbox in order, waiting for the link where it must."""
        if self.broken is not None:
            raise self.broken
        self.sending = True
        try:
            while self.outbox:
                frame = self.outbox[0]
                if self.nowait is None or not self.nowait(frame):
                    await self._send(frame)
                self.outbox.popleft()
                self.frames_out += 1
                self._make_room()
        finally:
            self.sending = False
        if self.broken is not None:
            raise self.broken

    async def _send(self, frame: bytes) -> None:
        # Bounded like every network wait: while the loop waits here the session's own timers
        # cannot fire, so a peer that takes nothing for `dead_after` is given up here.
        limit = self.session.config.dead_after
        try:
            async with asyncio.timeout(limit):
                await self.link.send(frame)
        except TimeoutError:
            raise LinkClosed(f"{self.link.label} took no frame for {limit:g} s") from None

    # -- called synchronously, from the reader, a callback or the turn loop ----------------
    def _pending(self) -> int:
        return len(self.outbox) + len(self.gate)

    def _pop_events(self) -> None:
        for event in self.session.pop_events():
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)

    def _emit(self, frames: list[bytes]) -> None:
        """Route the session's frames: to the outbox, or held until the host's commit."""
        self._queue(self.gate.route(frames))

    def _queue(self, frames: list[bytes]) -> None:
        if not frames:
            return
        if self.on_send is not None:
            self.on_send(frames)
        self.outbox.extend(map(self.session.seal, frames))

    def _release(self) -> None:
        """Move the held frames whose commit is done to the outbox."""
        ready = self.gate.release()
        if self.gate.failure is not None:
            self._break(self.gate.failure)
            return
        self._queue(ready)

    def _break(self, exc: BaseException) -> None:
        if self.broken is None:
            self.broken = exc
        self.waker.wake()

    def _pump_out(self) -> None:
        """Send from the outbox what the link takes without waiting; wake the loop for the rest."""
        if self.sending:
            return  # the turn loop is awaiting a send: it continues with the outbox in order
        if self.nowait is not None:
            try:
                while self.outbox and self.nowait(self.outbox[0]):
                    self.outbox.popleft()
                    self.frames_out += 1
            except LinkClosed as exc:
                self._break(exc)
        if self.outbox or self.broken is not None:
            self.waker.wake()
        self._make_room()

    def _make_room(self) -> None:
        if self.room is not None and self._pending() <= MAX_PENDING:
            _resolve(self.room)
            self.room = None

    def _on_commit(self) -> None:
        self._release()
        self._pump_out()

    def _after_session(self) -> None:
        self._pop_events()
        self._pump_out()
        if self.session.closed is not None or (not self.live and self.session.synced):
            self.waker.wake()

    def _on_changed(self) -> None:
        if not self.inline_changes:
            self.waker.wake()
        elif not self.poke_pending:
            self.poke_pending = True
            self.loop.call_soon(self._poke)  # not from inside another session's call: after it

    def _poke(self) -> None:
        self.poke_pending = False
        changed = self.hooks.changed
        if self.session.closed is None and changed.is_set():
            changed.clear()
            self._emit(self.session.local_changed(self.clock()))
            self._after_session()


async def run_session(replica: Replica, link: FrameLink, *, live: bool = False,
                      config: SessionConfig | None = None, stop: asyncio.Event | None = None,
                      on_event: Callable[[Event], None] | None = None,
                      clock: Callable[[], float] = time.monotonic,
                      maintain_interval: float | None = 0.2, timeout: float | None = None,
                      spaces: list[str] | None = None,
                      on_session: Callable[[Session], None] | None = None,
                      relay: bool = True) -> SessionOutcome:
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
        relay: the link goes to a relay the user chose, which is served every space in full
            if it says it is a relay; False for a neighbour (LAN, Bluetooth), which is
            served only the spaces it may read (:meth:`crdt_sync.Replica.session_host`).
        maintain_interval: how often a live session seals the replica's due edits and
            refreshes it (other processes' edits); None when the caller does that for every
            session at once (the daemon): the session then acts on the replica's observers.
    """
    hooks = Hooks()

    def idle() -> None:
        replica.maintain()
        replica.refresh()  # other processes' edits: observers set `changed`

    if maintain_interval is not None:
        hooks.idle = idle
    session = Session(replica.session_host(trust_relays=relay), clock(), config, spaces=spaces)
    if on_session is not None:
        on_session(session)
    unsubscribe = replica.observe(lambda _changes: hooks.changed.set())
    try:
        return await drive(session, link, hooks, live=live, stop=stop, on_event=on_event,
                           clock=clock, tick_interval=maintain_interval or 0.2, timeout=timeout)
    finally:
        unsubscribe()


async def drive(session: Session, link: FrameLink, hooks: Hooks, *, live: bool = False,
                stop: asyncio.Event | None = None, on_event: Callable[[Event], None] | None = None,
                clock: Callable[[], float] = time.monotonic, tick_interval: float = 0.2,
                timeout: float | None = None,
                on_send: Callable[[list[bytes]], None] | None = None) -> SessionOutcome:
    """Run ``session`` over ``link`` until it closes (see :func:`run_session`).

    Args:
        hooks: how the host tells the driver it changed, its idle work, its commits.
        tick_interval: how often a live session's host gets its idle turn.
        on_send: called with the frames as they enter the outbox, in the clear (they are
            sealed right after): a relay times fan-out and paces by them.

    Returns:
        How it ended; the link is closed by then.
    """
    return await _Driver(session, link, hooks, live=live, stop=stop, on_event=on_event, clock=clock,
                         tick_interval=tick_interval, timeout=timeout, on_send=on_send).run()
