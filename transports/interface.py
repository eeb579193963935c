"""The transport interface beyond one link: discovery events and typed fast paths.

A point-to-point transport hands out :class:`~transports.base.FrameLink` ends. Transports that
find their peers themselves (LAN, BLE) also report what they see, as automerge-repo's
``NetworkAdapterInterface`` does: :class:`PeerFound` when a candidate appears (nothing is
authenticated yet), :class:`PeerLost` when it goes away, and :class:`LinkReady` when a link to
it is open and a session may run on it. The daemon keys sessions by the *authenticated* device
key, never by what discovery said: one device over two paths is one peer.

Optional fast paths are small ``runtime_checkable`` protocols instead of ``getattr`` probes, so
a transport states what it offers in its type and mypy checks the signature.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from .base import FrameLink


@runtime_checkable
class SupportsSendNowait(Protocol):
    """A link that can take a frame without a task switch when that cannot block."""

    def send_nowait(self, frame: bytes) -> bool:
        """Send ``frame`` now and return True, or return False: then use ``send``."""
        ...


def send_nowait_of(link: FrameLink) -> Callable[[bytes], bool] | None:
    """The link's synchronous send, if it offers one."""
    return link.send_nowait if isinstance(link, SupportsSendNowait) else None


@dataclass(frozen=True, slots=True)
class PeerFound:
    """A candidate peer appeared. ``key`` is the transport's own name for it (unauthenticated:
    an mDNS instance, a BLE address); ``address`` is how it is reached."""

    transport: str
    key: str
    address: str


@dataclass(frozen=True, slots=True)
class PeerLost:
    """A candidate went away (a goodbye, a timeout, its link closed)."""

    transport: str
    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class LinkReady:
    """A link to ``key`` is open; ``outbound`` says whether this device dialled it."""

    transport: str
    key: str
    address: str
    link: FrameLink
    outbound: bool


PeerEvent = PeerFound | PeerLost | LinkReady

#: What a discovery transport does with each link it opened or accepted: run a session on it
#: and return when it is over (the transport closes the link after). The daemon passes one
#: that keys sessions by the authenticated device; a transport alone runs a plain live session.
LinkServer = Callable[[LinkReady], Awaitable[None]]

#: Events kept for a slow reader; later ones are counted in ``EventStream.dropped``.
EVENT_QUEUE = 256


class EventStream:
    """The bounded, ordered event queue behind ``DiscoveryTransport.events()``.

    A transport never waits for its reader: when the queue is full an event is dropped and
    counted (status reads the peers from the transport's own tables, not from this stream).
    """

    def __init__(self, limit: int = EVENT_QUEUE) -> None:
        self._queue: asyncio.Queue[PeerEvent | None] = asyncio.Queue(limit + 1)
        self._limit = limit
        self._closed = False
        self.dropped = 0

    def put(self, event: PeerEvent) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= self._limit:
            self.dropped += 1
            return
        self._queue.put_nowait(event)

    def close(self) -> None:
        """End the stream: the reader gets what is queued, then the iteration ends."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)  # the one slot kept free for it

    async def __aiter__(self) -> AsyncIterator[PeerEvent]:
        while (event := await self._queue.get()) is not None:
            yield event
        self._queue.put_nowait(None)  # a second reader, or a second loop, ends too


@runtime_checkable
class DiscoveryTransport(Protocol):
    """A transport that finds peers and opens links to them by itself."""

    @property
    def name(self) -> str:
        """The transport's name in events and status (``"lan"``, ``"ble"``, ``"relay"``)."""
        ...

    def events(self) -> AsyncIterator[PeerEvent]:
        """The events in order, until the transport closes."""
        ...

    async def close(self) -> None:
        """Stop discovery and close every link. Idempotent."""
        ...


class ManagedTransport(DiscoveryTransport, Protocol):
    """A discovery transport that is also an async context manager owning its tasks: entering
    starts it, leaving is :meth:`close`. What the daemon runs."""

    async def __aenter__(self) -> Self:
        ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        ...
