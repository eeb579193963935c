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

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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
