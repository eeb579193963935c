"""Frames over WebSocket (aiohttp): one binary message per frame. Used by the relay (both
ends) and by LAN sessions."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from crdt_sync.protocol import MAX_FRAME

from ._aiohttp_compat import WebSocketFrames, WriterClosed
from .base import LinkClosed, TransportError

SYNC_PATH = "/v1/sync"
#: aiohttp closes a WebSocket on a message above this; we allow some room above the
#: protocol's maximum so that an oversized frame reaches the session and gets a protocol ERROR.
WS_MAX_MESSAGE = 2 * MAX_FRAME
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
#: Longest wait for the WebSocket close handshake before the connection is dropped.
CLOSE_TIMEOUT = 5.0
#: Frames up to this size may be written without awaiting the link when nothing is queued:
#: far below the transport's high-water mark (64 KiB), so the write cannot need a drain.
NOWAIT_FRAME = 16 * 1024


class ConnectFailed(TransportError, ConnectionError):
    """The relay (or peer) could not be reached or refused the WebSocket."""


def sync_url(url: str) -> str:
    """``ws://host:port`` as an operator hands it out, with ``/v1/sync`` added if no path."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"a relay URL starts with ws:// or wss://, not {url!r}")
    if not parts.netloc:
        raise ValueError(f"no host in relay URL {url!r}")
    path = parts.path if parts.path not in ("", "/") else SYNC_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class WebSocketLink:
    """A :class:`~transports.base.FrameLink` over an aiohttp WebSocket (client or server side)."""

    def __init__(self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, label: str,
                 owner: aiohttp.ClientSession | None = None) -> None:
        self._ws = ws
        self._frames = WebSocketFrames(ws, NOWAIT_FRAME)
        self._label = label
        self._owner = owner
        self.close_code = CLOSE_NORMAL

    @property
    def label(self) -> str:
        return self._label

    @property
    def backlog(self) -> int | None:
        """Bytes written but not yet taken by the kernel (None: unknown)."""
        return self._frames.backlog

    async def send(self, frame: bytes) -> None:
        if self._ws.closed:
            raise LinkClosed(f"connection to {self._label} is closed")
        try:
            await self._frames.send(frame)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            raise LinkClosed(f"connection to {self._label} lost: {exc}") from None

    def send_nowait(self, frame: bytes) -> bool:
        """Send ``frame`` now if that cannot wait (nothing queued, a small frame, no
        compression; see :mod:`transports._aiohttp_compat`); False if it must go through
        :meth:`send`."""
        try:
            return self._frames.send_nowait(frame)
        except WriterClosed:
            raise LinkClosed(f"connection to {self._label} is closed") from None
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            raise LinkClosed(f"connection to {self._label} lost: {exc}") from None

    async def recv(self) -> bytes:
        try:
            msg = await self._ws.receive()
        except (TimeoutError, ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            raise LinkClosed(f"connection to {self._label} lost: {exc}") from None
        if msg.type == aiohttp.WSMsgType.BINARY:
            return bytes(msg.data)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return str(msg.data).encode()  # not a frame: the session answers ERROR malformed
        raise LinkClosed(f"{self._label} closed the connection ({msg.type.name.lower()}"
                         f"{f' {msg.data}' if msg.data else ''})")

    async def close(self) -> None:
        # Bounded: the close handshake waits for a peer that may have stopped reading.
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                try:
                    await self._ws.close(code=self.close_code)  # already gone: closing is idempotent
                except asyncio.CancelledError:
                    # After a send was cancelled (a send timeout), aiohttp raises that send's
                    # cancelled drain waiter here again; it has closed the transport by then.
                    # Only a cancellation of this task itself may propagate.
                    task = asyncio.current_task()
                    if task is None or task.cancelling():
                        raise
        if self._owner is not None:
            await self._owner.close()
            self._owner = None


async def connect(url: str, *, timeout: float = 10.0, ssl: Any = None) -> WebSocketLink:
    """Open a WebSocket to a relay (``ws://host:port`` or a full URL)."""
    target = sync_url(url)
    session = aiohttp.ClientSession()
    try:
        async with asyncio.timeout(timeout):
            ws = await session.ws_connect(target, max_msg_size=WS_MAX_MESSAGE, autoping=True,
                                          timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                                          ssl=ssl if ssl is not None else True)
    except aiohttp.WSServerHandshakeError as exc:
        await session.close()
        if exc.status in (429, 503):  # the relay's connection budgets, or it is stopping
            raise ConnectFailed(f"the relay at {target} is busy (HTTP {exc.status}: too many "
                                f"connections that are still in their handshake, or it is "
                                f"shutting down); retry later") from None
        raise ConnectFailed(f"the relay at {target} refused the WebSocket (HTTP {exc.status}); "
                            f"check the URL") from None
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        await session.close()
        raise ConnectFailed(f"cannot reach the relay at {target}: {exc or type(exc).__name__}; "
                            f"check the URL and that the relay is running") from None
    except BaseException:  # cancelled while connecting: the HTTP session is not left open
        await asyncio.shield(session.close())
        raise
    return WebSocketLink(ws, target, owner=session)

