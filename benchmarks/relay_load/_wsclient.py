"""A lean WebSocket client (RFC 6455, client side) for the load generator.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
from collections.abc import Callable

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _mask(payload: bytes) -> bytes:
    key = random.getrandbits(32).to_bytes(4, "little")
    n = len(payload)
    if n == 0:
        return key
    pad = (key * ((n >> 2) + 1))[:n]
    return key + (int.from_bytes(payload, "little") ^ int.from_bytes(pad, "little")).to_bytes(n, "little")


class WsConn(asyncio.Protocol):
    """One WebSocket connection: frames are parsed in ``data_received`` and handed to
    ``on_message`` synchronously, with no task or future per message (the generator must
    cost far less per message than the servers it measures)."""

    def __init__(self, host: str, port: int, path: str, on_open: Callable[[WsConn], None],
                 on_message: Callable[[bytes], None], on_lost: Callable[[str], None]) -> None:
        self.host, self.port, self.path = host, port, path
        self.on_open, self.on_message, self.on_lost = on_open, on_message, on_lost
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self._key = base64.b64encode(os.urandom(16))
        self._buf = bytearray()
        self._fragments: list[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        % (self.path.encode(), self.host.encode(), self.port, self._key))

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = not self.closed
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost during the upgrade: {exc}"))
        elif was_open:
            self.on_lost(f"connection lost: {exc}" if exc else "connection closed by the server")

    def send(self, payload: bytes, opcode: int = 2) -> None:
        if self.closed or self.transport is None:
            return
        n = len(payload)
        if n < 126:
            header = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            header = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
        else:
            header = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
        self.transport.write(header + _mask(payload))

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.send((1000).to_bytes(2, "big"), opcode=8)
            self.closed = True
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self.opened.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[:end + 4]
            accept = base64.b64encode(hashlib.sha1(self._key + _GUID).digest()).decode()
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
            if not head[0].startswith("HTTP/1.1 101") or headers.get("sec-websocket-accept") != accept:
                self.opened.set_exception(ConnectionError(f"upgrade refused: {head[0]}"))
                assert self.transport is not None
                self.transport.close()
                return
            self.opened.set_result(None)
            self.on_open(self)  # before any frame that came with the upgrade's answer
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, start = b1 & 0x7F, pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length, start = int.from_bytes(buf[pos + 2:pos + 4], "big"), pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, start = int.from_bytes(buf[pos + 2:pos + 10], "big"), pos + 10
            if b1 & 0x80:  # servers never mask
                self.on_lost("server sent a masked frame")
                self.close()
                return
            if start + length > n:
                break
            payload = bytes(buf[start:start + length])
            pos = start + length
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
            if self.closed:
                return
        if pos:
            del buf[:pos]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (1, 2):
            if fin:
                self.on_message(payload)
            else:
                self._fragments = [payload]
        elif opcode == 0 and self._fragments is not None:
            self._fragments.append(payload)
            if fin:
                whole, self._fragments = b"".join(self._fragments), None
                self.on_message(whole)
        elif opcode == 9:
            self.send(payload, opcode=10)
        elif opcode == 8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.on_lost(f"closed by the server ({code} {payload[2:].decode(errors='replace')})")
            self.close()
