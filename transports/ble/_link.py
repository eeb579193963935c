"""A :class:`~transports.base.FrameLink` over one BLE connection's chunks.

:class:`BleLink` is the I/O shell around a :class:`~._framing.ChunkChannel`: the radio side
(GATT central, GATT peripheral, an L2CAP channel) hands it every chunk that arrives
(:meth:`BleLink.feed`) and tells it when the connection is gone (:meth:`BleLink.lost`); the
link writes chunks through the ``write`` callable it was given, from one writer task that it
owns. Every wait is bounded: a peer that grants no credit (or never opens) for
``stall_timeout`` seconds ends the link, and so does one that sends too many bad chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..base import LinkClosed
from ._framing import DEFAULT_WINDOW, ChunkChannel, Frame

log = logging.getLogger("crdt_sync.ble")

#: Bytes of frames a sender may queue before ``send`` waits for credit.
SEND_BUFFER = 64 * 1024
#: Refused chunks that end a connection.
MAX_BAD_CHUNKS = 32


@dataclass(frozen=True)
class LinkTimers:
    """How long a link waits. ``stall``: for credit (or the peer's OPEN) while frames wait;
    ``write``: for one chunk to be taken by the radio; ``flush``: at close, for what is queued."""

    stall: float = 10.0
    write: float = 5.0
    flush: float = 2.0


class BleLink:
    """One end of a frame link over one BLE connection.

    Args:
        label: the other end, for logs.
        write: writes one chunk (a GATT write without response, a notification, an SDU).
        hangup: ends the connection (idempotent; called once by :meth:`close`).
        max_chunk: the longest chunk this connection carries both ways.
    """

    def __init__(self, label: str, write: Callable[[bytes], Awaitable[None]],
                 hangup: Callable[[], Awaitable[None]], max_chunk: int, *,
                 window: int = DEFAULT_WINDOW, timers: LinkTimers | None = None) -> None:
        self._label = label
        self._write = write
        self._hangup = hangup
        self.channel = ChunkChannel(max_chunk, window=window)
        self.timers = timers or LinkTimers()
        self.reason: str | None = None  # why the link ended, once it did
        self._inbox: deque[bytes] = deque()
        self._readable = asyncio.Event()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # credit arrived or the queue drained
        self._closed = False
        self._hung_up = False
        self._writer: asyncio.Task[None] | None = None
        #: Set once the radio side is ready and the writer runs (the peer subscribed).
        self.started = asyncio.Event()

    @property
    def label(self) -> str:
        return self._label

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        """Start the writer (sends this side's OPEN first)."""
        self.started.set()
        if self._writer is None:
            loop = asyncio.get_running_loop()
            self._writer = loop.create_task(self._writing(), name=f"ble-writer {self._label}")

    # -- the radio side -------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        """A chunk arrived (called from the radio's callbacks)."""
        if self._closed:
            return
        for event in self.channel.feed(bytes(chunk)):
            if isinstance(event, Frame):
                self._inbox.append(event.data)
                self._readable.set()
            else:
                log.info("ble %s: refused: %s", self._label, event.reason)
        if self.channel.refused > MAX_BAD_CHUNKS:
            self._fail(f"{self._label} sent {self.channel.refused} bad chunks (last: "
                       f"{self.channel.refusals[-1]})")
            return
        self._wake.set()
        self._progress.set()

    def lost(self, reason: str) -> None:
        """The connection is gone (the peer hung up, the radio lost it)."""
        for refused in self.channel.close():
            log.info("ble %s: %s", self._label, refused.reason)
        self._hung_up = True  # nothing left to hang up
        self._fail(reason)

    # -- FrameLink ------------------------------------------------------------------------------
    async def send(self, frame: bytes) -> None:
        if self._closed:
            raise LinkClosed(f"link to {self._label} is closed ({self.reason})")
        self.channel.send(frame)  # FramingError (a TransportError) if too large
        self._wake.set()
        try:
            async with asyncio.timeout(self.timers.stall):
                while self.channel.queued_bytes > SEND_BUFFER and not self._closed:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            self._fail(f"{self._label} granted no credit for {self.timers.stall:g} s")
        if self._closed:
            raise LinkClosed(f"link to {self._label} is closed ({self.reason})")

    async def recv(self) -> bytes:
        while not self._inbox:
            if self._closed:
                raise LinkClosed(f"link to {self._label} is closed ({self.reason})")
            self._readable.clear()
            await self._readable.wait()
        frame = self._inbox.popleft()
        self.channel.taken(1)
        self._wake.set()
        return frame

    async def close(self) -> None:
        if not self._closed and self._writer is not None:
            # What is queued goes first (bounded): a peer's last frames then their BYE.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timers.flush):
                    while not self.channel.idle and not self._closed:
                        self._progress.clear()
                        self._wake.set()
                        await self._progress.wait()
        self._fail(self.reason or "closed")
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        if not self._hung_up:
            self._hung_up = True
            with contextlib.suppress(Exception):  # the connection may be gone already
                async with asyncio.timeout(self.timers.write):
                    await self._hangup()

    # -- inside ---------------------------------------------------------------------------------
    def _fail(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.reason = reason
        log.info("ble %s: link ends: %s", self._label, reason)
        self._readable.set()
        self._progress.set()
        self._wake.set()
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()

    async def _writing(self) -> None:
        loop = asyncio.get_running_loop()
        stalled_since: float | None = None
        while not self._closed:
            chunks = self.channel.outgoing()
            for chunk in chunks:
                try:
                    async with asyncio.timeout(self.timers.write):
                        await self._write(chunk)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the radio's errors: the connection is unusable
                    self._fail(f"writing to {self._label} failed: {exc or type(exc).__name__}")
                    return
            if chunks:
                stalled_since = None
                self._progress.set()
                continue
            waiting = not self.channel.idle  # frames queued, but no credit (or no OPEN yet)
            if waiting and stalled_since is None:
                stalled_since = loop.time()
            if not waiting:
                stalled_since = None
                self._progress.set()
            self._wake.clear()
            timeout = None if stalled_since is None else stalled_since + self.timers.stall - loop.time()
            if timeout is not None and timeout <= 0:
                self._fail(f"{self._label} granted no credit for {self.timers.stall:g} s")
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
