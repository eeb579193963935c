"""What every transport provides: a link that moves whole frames between two devices.

A transport only carries frames (bytes, one sync-protocol message each); the session state
machine in :mod:`crdt_sync.protocol` decides what they mean. LAN, BLE, relay and memory
links differ only in how frames move.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class TransportError(Exception):
    """Root of the errors raised by transports."""


class LinkClosed(TransportError, ConnectionError):
    """The link is closed (by either side, or because the connection dropped)."""


@runtime_checkable
class FrameLink(Protocol):
    """One end of a bidirectional frame link.

    Frames may be lost, duplicated or reordered by lossy links; the session copes. A frame
    is never split or merged: ``recv`` returns exactly what one ``send`` sent.
    """

    @property
    def label(self) -> str:
        """A short description of the other end, for logs."""
        ...

    async def send(self, frame: bytes) -> None:
        """Queue ``frame`` for the peer. Raises :class:`LinkClosed` once closed."""
        ...

    async def recv(self) -> bytes:
        """The next frame from the peer. Raises :class:`LinkClosed` once closed and drained."""
        ...

    async def close(self) -> None:
        """Close both directions. Idempotent."""
        ...
