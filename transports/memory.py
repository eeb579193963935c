"""In-process frame links with seeded faults, for tests and simulation.

A :class:`MemoryNetwork` owns one :class:`random.Random`, so a run with the same seed and
the same sequence of sends delivers the same frames in the same order. Each direction of a
pair has its own :class:`LinkConditions`. There are no background tasks: every direction
keeps a FIFO of frames in flight and one timer (``loop.call_at``) for the head, and a close
cancels the timers, so nothing outlives the link.

Close semantics: the end that calls ``close()`` raises :class:`LinkClosed` from ``recv()``
at once and discards what it had not read; the other end first reads the frames already
delivered to it, then gets :class:`LinkClosed`. A drop (``disconnect_after_*``) has no
closing end, so both ends drain what was delivered before raising. Frames in flight when a
link closes or drops are lost. ``send()`` raises :class:`LinkClosed` as soon as either
happened.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields, replace
from types import TracebackType

from crdt_sync.transports.base import LinkClosed, TransportError
from crdt_sync.transports.interface import EventStream, LinkReady, LinkServer, PeerEvent, PeerFound, PeerLost

__all__ = ["FrameTooLarge", "LinkConditions", "LinkStats", "MemoryLink", "MemoryNetwork",
           "MemoryPeers", "MemorySegment"]


class FrameTooLarge(TransportError, ValueError):
    """A frame is larger than the link's ``max_frame``; nothing was sent."""


@dataclass(frozen=True)
class LinkConditions:
    """How one direction of a memory link misbehaves. The defaults are a perfect link.

    Attributes:
        latency: Seconds from the end of serialisation to arrival.
        jitter: Extra delay drawn uniformly from ``[0, jitter]`` per frame. It never
            reorders frames on its own (a frame waits for the one ahead); use ``reorder``.
        loss: Probability that a frame is lost.
        duplicate: Probability that a frame is delivered twice.
        reorder: Probability that a frame is held back and delivered just after the next
            one (or one latency late if no next frame comes by then).
        bandwidth: Bytes per second, or None for unlimited. A frame occupies the wire for
            ``len / bandwidth`` seconds and later frames queue behind it.
        disconnect_after_frames: Drop the link once this many frames were sent, counting
            both directions together. None means never.
        disconnect_after_bytes: Drop the link once this many bytes were sent, counting both
            directions. The frame that crosses the limit is cut off and lost.
        max_frame: Largest frame in bytes that ``send`` accepts, or None for no limit.
    """

    latency: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    bandwidth: float | None = None
    disconnect_after_frames: int | None = None
    disconnect_after_bytes: int | None = None
    max_frame: int | None = None

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]")
        if self.latency < 0 or self.jitter < 0:
            raise ValueError("latency and jitter must be >= 0")
        for name, least in (("bandwidth", 1e-9), ("disconnect_after_frames", 1),
                            ("disconnect_after_bytes", 1), ("max_frame", 0)):
            if (value := getattr(self, name)) is not None and value < least:
                raise ValueError(f"{name} must be None or >= {least}")


@dataclass(frozen=True)
class LinkStats:
    """Counters for the frames one end sent (its outbound direction).

    While nothing is in flight, ``frames_sent + frames_duplicated == frames_delivered +
    frames_dropped``; duplicates count once in ``frames_duplicated`` and again on delivery.
    """

    frames_sent: int = 0
    bytes_sent: int = 0
    frames_delivered: int = 0
    bytes_delivered: int = 0
    frames_dropped: int = 0
    frames_duplicated: int = 0
    frames_in_flight: int = 0

    def __add__(self, other: LinkStats) -> LinkStats:
        return LinkStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


class _Direction:
    """Frames in flight from one end to the other, delivered into ``inbox`` on time."""

    def __init__(self, conditions: LinkConditions, rng: random.Random,
                 inbox: asyncio.Queue[bytes | None]) -> None:
        self.conditions = conditions
        self.stats = LinkStats()
        self._rng = rng
        self.inbox = inbox
        # FIFO: a frame that is due waits for the one ahead of it, so only ``reorder`` reorders.
        self._flight: deque[tuple[float, bytes]] = deque()
        self._held: tuple[bytes, int] | None = None  # a reordered frame and its copy count
        self._timer: asyncio.TimerHandle | None = None
        self._hold_timer: asyncio.TimerHandle | None = None
        self._wire_free_at = 0.0
        self.idle = asyncio.Event()
        self.idle.set()

    def _chance(self, p: float) -> bool:
        # Draw only for faults that are enabled, so a clean link consumes no randomness
        # and adding one does not perturb the fault sequence of the others.
        return p > 0.0 and self._rng.random() < p

    def transmit(self, frame: bytes, loop: asyncio.AbstractEventLoop) -> None:
        """Put ``frame`` on the wire, applying this direction's conditions."""
        c, now = self.conditions, loop.time()
        done = max(now, self._wire_free_at)
        if c.bandwidth is not None:
            done += len(frame) / c.bandwidth
            self._wire_free_at = done
        if self._chance(c.loss):  # lost on the wire, after using its share of bandwidth
            self.count(frames_dropped=1)
            return
        arrival = done + c.latency + (self._rng.uniform(0.0, c.jitter) if c.jitter else 0.0)
        copies = 2 if self._chance(c.duplicate) else 1
        self.count(frames_duplicated=copies - 1)
        if self._chance(c.reorder) and self._held is None:
            self._held = (frame, copies)
            self.idle.clear()
            self._hold_timer = loop.call_at(arrival + c.latency + c.jitter, self._release, loop)
            return
        self._enqueue(frame, copies, arrival, loop)
        self._release(loop)  # a held frame goes right after the frame that overtook it

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        if self._held is not None:
            frame, copies = self._held
            self._held = None
            self._enqueue(frame, copies, loop.time(), loop)

    def _enqueue(self, frame: bytes, copies: int, arrival: float,
                 loop: asyncio.AbstractEventLoop) -> None:
        for _ in range(copies):
            if not self._flight and arrival <= loop.time():
                self._deliver(frame)  # due now and nothing ahead of it: no timer round trip
            else:
                self._flight.append((arrival, frame))
        if self._flight and self._timer is None:
            self._timer = loop.call_at(self._flight[0][0], self._pump, loop, self._flight[0][0])
        self._update_idle()

    def _pump(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        self._timer = None
        # The loop may fire a timer up to one clock resolution early; ``due`` is at least
        # the head's arrival, so the head always goes.
        horizon = max(loop.time(), due)
        while self._flight and self._flight[0][0] <= horizon:
            self._deliver(self._flight.popleft()[1])
        if self._flight:
            self._timer = loop.call_at(self._flight[0][0], self._pump, loop, self._flight[0][0])
        self._update_idle()

    def _deliver(self, frame: bytes) -> None:
        self.inbox.put_nowait(frame)
        self.count(frames_delivered=1, bytes_delivered=len(frame))

    def count(self, **deltas: int) -> None:
        self.stats = replace(self.stats, **{k: getattr(self.stats, k) + v for k, v in deltas.items()})

    def in_flight(self) -> int:
        return len(self._flight) + (self._held[1] if self._held is not None else 0)

    def _update_idle(self) -> None:
        if self.in_flight():
            self.idle.clear()
        else:
            self.idle.set()

    def abort(self) -> None:
        """Cancel the timers and lose every frame still in flight."""
        for timer in (self._timer, self._hold_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._hold_timer = None
        self.count(frames_dropped=self.in_flight())
        self._flight.clear()
        self._held = None
        self.idle.set()

    def snapshot(self) -> LinkStats:
        return replace(self.stats, frames_in_flight=self.in_flight())


class _Pair:
    """The shared state of two linked ends: one direction each way, one closed flag."""

    def __init__(self, a_to_b: _Direction, b_to_a: _Direction) -> None:
        self.a_to_b, self.b_to_a = a_to_b, b_to_a
        self.closed = False
        self.frames = self.bytes = 0
        limits = (a_to_b.conditions, b_to_a.conditions)
        self.frame_limit = min((c.disconnect_after_frames for c in limits
                                if c.disconnect_after_frames is not None), default=None)
        self.byte_limit = min((c.disconnect_after_bytes for c in limits
                               if c.disconnect_after_bytes is not None), default=None)

    def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        for direction in (self.a_to_b, self.b_to_a):
            direction.abort()
            direction.inbox.put_nowait(None)  # wakes a blocked recv(), which re-queues it


class MemoryLink:
    """One end of an in-memory link; implements :class:`transports.base.FrameLink`."""

    def __init__(self, pair: _Pair, outbound: _Direction, inbox: asyncio.Queue[bytes | None],
                 label: str) -> None:
        self._pair, self._outbound, self._inbox, self._label = pair, outbound, inbox, label
        self._closed_here = False

    @property
    def label(self) -> str:
        """A short description of the other end, for logs."""
        return self._label

    @property
    def stats(self) -> LinkStats:
        """A snapshot of the counters for the frames this end sent."""
        return self._outbound.snapshot()

    async def send(self, frame: bytes) -> None:
        """Queue ``frame`` for the peer; it arrives later, or never on a lossy link.

        Raises:
            LinkClosed: The link was closed by either end or dropped.
            FrameTooLarge: ``frame`` exceeds ``max_frame``; nothing was sent.
        """
        pair, conditions = self._pair, self._outbound.conditions
        if pair.closed:
            raise LinkClosed(f"memory link to {self._label} is closed")
        frame = bytes(frame)  # the caller may reuse a bytearray after send returns
        if conditions.max_frame is not None and len(frame) > conditions.max_frame:
            raise FrameTooLarge(f"frame of {len(frame)} bytes exceeds max_frame={conditions.max_frame}")
        self._outbound.count(frames_sent=1, bytes_sent=len(frame))
        pair.frames += 1
        pair.bytes += len(frame)
        if pair.byte_limit is not None and pair.bytes > pair.byte_limit:
            self._outbound.count(frames_dropped=1)  # cut off mid-frame: never arrives
        else:
            self._outbound.transmit(frame, asyncio.get_running_loop())
        if (pair.frame_limit is not None and pair.frames >= pair.frame_limit) or (
                pair.byte_limit is not None and pair.bytes >= pair.byte_limit):
            pair.shutdown()

    async def recv(self) -> bytes:
        """The next frame from the peer.

        Raises:
            LinkClosed: This end closed the link, or the link closed or dropped and every
                frame delivered before that has been read.
        """
        if self._closed_here:
            raise LinkClosed(f"memory link to {self._label} is closed")
        frame = await self._inbox.get()
        if frame is None or self._closed_here:
            self._inbox.put_nowait(None)  # keep the marker so later calls fail too
            raise LinkClosed(f"memory link to {self._label} is closed")
        return frame

    async def close(self) -> None:
        """Close both directions, losing frames in flight. Idempotent."""
        self._closed_here = True
        self._pair.shutdown()

    async def wait_delivered(self) -> None:
        """Wait until every frame this end sent has been delivered or dropped."""
        await self._outbound.idle.wait()


class MemoryNetwork:
    """A factory of memory links sharing one seeded random generator.

    Args:
        seed: Seeds every fault decision, so equal seeds and equal sends give equal runs.
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._pairs: list[tuple[_Pair, MemoryLink, MemoryLink]] = []

    def pair(self, conditions_a_to_b: LinkConditions | None = None,
             conditions_b_to_a: LinkConditions | None = None, *,
             label_a: str | None = None, label_b: str | None = None) -> tuple[MemoryLink, MemoryLink]:
        """Create two linked ends ``(a, b)``.

        Args:
            conditions_a_to_b: Faults for frames ``a`` sends; None for a perfect link.
            conditions_b_to_a: Faults for frames ``b`` sends; None means the same as a to b.
            label_a: Label of end ``a``, describing its peer (see ``FrameLink.label``).
            label_b: Label of end ``b``, describing its peer.

        Returns:
            The two ends; what one sends, the other receives.
        """
        ab = conditions_a_to_b if conditions_a_to_b is not None else LinkConditions()
        ba = conditions_b_to_a if conditions_b_to_a is not None else ab
        inbox_a: asyncio.Queue[bytes | None] = asyncio.Queue()
        inbox_b: asyncio.Queue[bytes | None] = asyncio.Queue()
        a_to_b, b_to_a = _Direction(ab, self._rng, inbox_b), _Direction(ba, self._rng, inbox_a)
        pair = _Pair(a_to_b, b_to_a)
        n = len(self._pairs)
        a = MemoryLink(pair, a_to_b, inbox_a, label_a if label_a is not None else f"memory-{n}:b")
        b = MemoryLink(pair, b_to_a, inbox_b, label_b if label_b is not None else f"memory-{n}:a")
        self._pairs.append((pair, a, b))
        return a, b

    def close_all(self) -> None:
        """Close every link made by this network, losing frames in flight. Idempotent."""
        for pair, _, _ in self._pairs:
            pair.shutdown()

    @property
    def stats(self) -> LinkStats:
        """Counters summed over every end of every link, e.g. the total bytes on the wire."""
        total = LinkStats()
        for _, a, b in self._pairs:
            total = total + a.stats + b.stats
        return total


# -- discovery: a simulated LAN segment ---------------------------------------------------------
class MemorySegment:
    """A simulated network segment: every :class:`MemoryPeers` on it finds the others.

    Args:
        seed: seeds the links' faults (:class:`MemoryNetwork`).
        conditions: each new link's conditions (both directions).
        can_meet: which pairs of member keys see each other (default: all); a test builds a
            chain ``a - b - c`` where ``a`` and ``c`` never meet with it.
    """

    def __init__(self, seed: int = 0, conditions: LinkConditions | None = None,
                 can_meet: Callable[[str, str], bool] | None = None) -> None:
        self.network = MemoryNetwork(seed)
        self.conditions = conditions
        self.can_meet = can_meet or (lambda _a, _b: True)
        self._members: dict[str, MemoryPeers] = {}
        self._links: dict[frozenset[str], tuple[MemoryLink, MemoryLink]] = {}

    def _join(self, member: MemoryPeers) -> None:
        if member.key in self._members:
            raise ValueError(f"{member.key!r} is already on this segment")
        for other in list(self._members.values()):
            if self.can_meet(member.key, other.key):
                self._connect(member, other)
        self._members[member.key] = member

    def _connect(self, dialler: MemoryPeers, listener: MemoryPeers) -> None:
        a, b = self.network.pair(self.conditions, label_a=listener.key, label_b=dialler.key)
        self._links[frozenset((dialler.key, listener.key))] = (a, b)
        dialler._linked(listener.key, a, outbound=True)
        listener._linked(dialler.key, b, outbound=False)

    def _leave(self, member: MemoryPeers) -> None:
        if self._members.pop(member.key, None) is None:
            return
        for other in self._members.values():
            link = self._links.pop(frozenset((member.key, other.key)), None)
            if link is not None:
                link[0]._pair.shutdown()
                other._gone(member.key)

    def cut(self, a: str, b: str) -> None:
        """Drop the link between members ``a`` and ``b`` mid-flight (nothing more arrives)."""
        link = self._links.pop(frozenset((a, b)), None)
        if link is not None:
            link[0]._pair.shutdown()

    def restore(self, a: str, b: str) -> None:
        """Link ``a`` and ``b`` again, as discovery would once they see each other again."""
        if frozenset((a, b)) not in self._links and a in self._members and b in self._members:
            self._connect(self._members[a], self._members[b])


class MemoryPeers:
    """The memory transport as a :class:`~transports.interface.DiscoveryTransport`.

    On entering, it joins ``segment`` and links to every member it may meet; each link is a
    ``LinkReady`` (``serve`` runs the session on it) after a ``PeerFound``; a link that ends
    is a ``PeerLost``. An async context manager that owns its tasks.
    """

    name = "memory"

    def __init__(self, segment: MemorySegment, key: str, serve: LinkServer) -> None:
        self.segment = segment
        self.key = key
        self.serve = serve
        self._events = EventStream()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __aenter__(self) -> MemoryPeers:
        self.segment._join(self)
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def events(self) -> AsyncIterator[PeerEvent]:
        """The events in order, until the transport closes."""
        async for event in self._events:
            yield event

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.segment._leave(self)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._events.close()

    def _linked(self, other: str, link: MemoryLink, *, outbound: bool) -> None:
        address = f"memory:{other}"
        self._events.put(PeerFound(self.name, other, address))
        ready = LinkReady(self.name, other, address, link, outbound)
        self._events.put(ready)
        task = asyncio.get_running_loop().create_task(self._serve(ready))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, ready: LinkReady) -> None:
        try:
            await self.serve(ready)
        finally:
            await ready.link.close()
            self._events.put(PeerLost(self.name, ready.key, "session ended"))

    def _gone(self, other: str) -> None:
        self._events.put(PeerLost(self.name, other, "left the segment"))
