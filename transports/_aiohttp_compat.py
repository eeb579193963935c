"""The one place that touches aiohttp's private internals.

What we use, and why: a small binary frame is written straight to the transport with the
WebSocket writer's private ``_write_websocket_frame(message, opcode, rsv)`` when nothing is
queued, so that a frame goes out without awaiting ``send_bytes`` (a task switch per frame on
a relay fanning out to many sessions). The writer's transport also tells how much is queued
(:attr:`WebSocketFrames.backlog`).

Those are not aiohttp's API, so this module checks at import that the installed version is
in the range where they were checked (:data:`SUPPORTED`) and that the method has the
expected signature. Otherwise, or if a call raises :class:`TypeError` (a signature changed
under us after all), it falls back to the public API: :meth:`WebSocketFrames.send_nowait`
says False and the caller awaits :meth:`WebSocketFrames.send`, which is ``send_bytes``.
Nothing else in the code base reaches into aiohttp's private attributes.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger("crdt_sync.transports")

#: aiohttp versions (from, to: exclusive) whose private writer is known to match what the
#: fast path calls. 3.14.5 is what this was checked against; the writer has lived in
#: ``aiohttp/_websocket/writer.py`` with this method since 3.11. A version outside the range
#: uses the public API until someone checks it and widens the range.
SUPPORTED: tuple[tuple[int, int], tuple[int, int]] = ((3, 11), (3, 15))
#: The fast path's parameters, after ``self``.
_PARAMETERS = ("message", "opcode", "rsv")

WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


def parse_version(text: str) -> tuple[int, int]:
    """``(major, minor)`` of a version string such as ``3.14.5`` or ``4.0.0a1``."""
    match = re.match(r"(\d+)\.(\d+)", text)
    if match is None:
        return (0, 0)
    return (int(match[1]), int(match[2]))


def _fast_write_method() -> Callable[..., Any] | None:
    try:
        from aiohttp._websocket.writer import WebSocketWriter
    except ImportError:
        return None
    method = getattr(WebSocketWriter, "_write_websocket_frame", None)
    return method if callable(method) else None


def signature_fits(method: Callable[..., Any]) -> bool:
    """Whether ``method`` (unbound) takes ``(self, message, opcode, rsv)`` positionally."""
    try:
        parameters = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: cannot tell
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return (len(parameters) == len(_PARAMETERS) + 1
            and all(p.kind in positional for p in parameters)
            and tuple(p.name for p in parameters[1:]) == _PARAMETERS)


def fast_path_refusal(version: str, method: Callable[..., Any] | None) -> str | None:
    """None if the fast path may be used with aiohttp ``version`` and ``method``, else why not."""
    low, high = SUPPORTED
    if not low <= parse_version(version) < high:
        return f"aiohttp {version} is outside the checked range {low}..{high}"
    if method is None:
        return "aiohttp's WebSocket writer has no _write_websocket_frame"
    if not signature_fits(method):
        return f"aiohttp's _write_websocket_frame does not take (self, {', '.join(_PARAMETERS)})"
    return None


#: Why the fast path is off in this process (None: it is on). Decided once, at import; a
#: TypeError at a call turns it off too.
REFUSAL: str | None = fast_path_refusal(aiohttp.__version__, _fast_write_method())
if REFUSAL is not None:
    log.info("aiohttp.fast_path.off", extra={"fields": {"reason": REFUSAL}})


def fast_path_enabled() -> bool:
    return REFUSAL is None


def _turn_off(reason: str) -> None:
    global REFUSAL
    if REFUSAL is None:
        REFUSAL = reason
        log.warning("aiohttp.fast_path.off", extra={"fields": {"reason": reason}})


class WriterClosed(ConnectionError):
    """The WebSocket's transport is closed or closing."""


class WebSocketFrames:
    """Binary frames to one aiohttp WebSocket (server or client side).

    Args:
        ws: a prepared :class:`aiohttp.web.WebSocketResponse` or a connected client one.
        max_nowait: the largest frame :meth:`send_nowait` writes at once; larger ones are
            for :meth:`send` (they may need the transport to drain).
    """

    __slots__ = ("_ws", "max_nowait")

    def __init__(self, ws: WebSocket, max_nowait: int) -> None:
        self._ws = ws
        self.max_nowait = max_nowait

    def _transport(self) -> Any:
        # Private either way: aiohttp has no public accessor for a WebSocket's transport.
        return getattr(getattr(self._ws, "_writer", None), "transport", None)

    @property
    def backlog(self) -> int | None:
        """Bytes written but not yet taken by the kernel (None: unknown)."""
        transport = self._transport()
        if transport is None or transport.is_closing():
            return None
        size: int = transport.get_write_buffer_size()
        return size

    async def send(self, frame: bytes) -> None:
        """The public API: may wait for the transport to drain."""
        await self._ws.send_bytes(frame)

    def send_nowait(self, frame: bytes) -> bool:
        """Write ``frame`` now if that cannot wait (the fast path is on, nothing is queued,
        a small frame, no compression); False if it must go through :meth:`send`.

        Raises:
            WriterClosed: the connection is closed or closing.
            ConnectionError, RuntimeError, aiohttp.ClientError: the write failed.
        """
        if REFUSAL is not None or len(frame) > self.max_nowait:
            return False
        writer = getattr(self._ws, "_writer", None)
        if writer is None or getattr(writer, "compress", True) or getattr(writer, "_closing", True):
            return False
        transport = getattr(writer, "transport", None)
        if self._ws.closed or transport is None or transport.is_closing():
            raise WriterClosed("the WebSocket is closed")
        if transport.get_write_buffer_size() or getattr(writer.protocol, "_paused", True):
            return False
        try:
            writer._write_websocket_frame(frame, aiohttp.WSMsgType.BINARY, 0)
        except TypeError as exc:
            # The signature changed under the check (a patched aiohttp): nothing was written,
            # since the arguments did not bind; the public API takes it from here on.
            _turn_off(f"aiohttp's _write_websocket_frame raised TypeError: {exc}")
            return False
        return True
