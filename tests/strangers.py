"""Unauthenticated clients of a relay, by hand over raw TCP: the WebSocket upgrade, one
binary frame (whole, or with its last bytes held back), then whatever the relay answers.

Each binds its socket to a loopback source address of its own (any of 127.0.0.0/8), so
that a test can come from many addresses. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import os
import ssl
from dataclasses import dataclass, field

from crdt_sync.identity import Identity
from crdt_sync.protocol.link import SEALED_HEAD
from crdt_sync.protocol.messages import PROTOCOL_VERSION, Error, Hello, Message, decode, encode
from crdt_sync.relay.proxy_protocol import V2_SIGNATURE
from crdt_sync.transports.websocket import SYNC_PATH
from tests.link_helpers import HandPeer

WAIT = 30.0


def fat_hello(size: int = 1_000_000) -> bytes:
    """A well-formed HELLO (a fresh key) whose capabilities hold ``size`` empty maps: about
    ``size`` bytes on the wire, ~64 times that once decoded (issue 11, finding 4)."""
    v = PROTOCOL_VERSION
    head = encode(Hello(v, v, Identity.generate().public_key, os.urandom(32), {}))[:-1]
    return head + b"\xa1\x61a" + _array_head(size) + b"\xa0" * size


def _array_head(n: int) -> bytes:
    if n < 24:
        return bytes([0x80 | n])
    for info, width in ((24, 1), (25, 2), (26, 4)):
        if n < 1 << (8 * width):
            return bytes([0x80 | info]) + n.to_bytes(width, "big")
    raise ValueError(n)


# -- what a balancer sends first (the PROXY protocol) ---------------------------------------------
def proxy_v1(source: str, destination: str = "127.0.0.1") -> bytes:
    """A version 1 header (text) naming ``source`` as the client."""
    family = "TCP6" if ":" in source else "TCP4"
    if family == "TCP6" and ":" not in destination:
        destination = "::1"
    return f"PROXY {family} {source} {destination} 40000 8787\r\n".encode()


def proxy_v2(source: str | None, command: int = 1, family: int | None = None, transport: int = 1,
             length: int | None = None, version: int = 2, tlvs: bytes = b"") -> bytes:
    """A version 2 header; ``source`` None gives no addresses (LOCAL, UNSPEC)."""
    body = b""
    if source is not None:
        address = ipaddress.ip_address(source)
        destination = ipaddress.ip_address("127.0.0.1" if address.version == 4 else "::1")
        body = address.packed + destination.packed + (40000).to_bytes(2, "big") + (8787).to_bytes(2, "big")
        family = (1 if address.version == 4 else 2) if family is None else family
    body += tlvs
    head = bytes([version << 4 | command, (family or 0) << 4 | transport])
    return V2_SIGNATURE + head + (len(body) if length is None else length).to_bytes(2, "big") + body


def ws_frame(payload: bytes) -> bytes:
    """A client's binary WebSocket frame (masked with a zero key: the payload as it is)."""
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 1 << 16:
        length = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return b"\x82" + length + b"\x00\x00\x00\x00" + payload


@dataclass
class Stranger:
    """One raw connection. ``status`` is the HTTP status of the upgrade (101: open).

    With ``peer`` (a :class:`HandPeer` whose HELLO the stranger sent), the relay's SEALED
    frames are opened with the link that HELLO and the relay's make."""

    source: str
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    status: int = 0
    errors: list[Error] = field(default_factory=list)
    dropped: bool = False  # the relay closed the TCP connection without a close frame
    peer: HandPeer | None = None

    @classmethod
    async def connect(cls, port: int, source: str, prefix: bytes = b"",
                      headers: list[tuple[str, str]] | None = None, request: bool = True,
                      tls: ssl.SSLContext | None = None) -> Stranger:
        """Connect from ``source`` and ask for the upgrade: ``prefix`` first (a PROXY
        header, as a balancer sends one), ``headers`` as more request headers (in order).
        Without ``request`` only ``prefix`` is sent, and the relay's answer awaited. With
        ``tls``, all of it inside TLS."""
        self = cls(source)
        async with asyncio.timeout(WAIT):
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls,
                                                                     local_addr=(source, 0))
            key = base64.b64encode(os.urandom(16)).decode()
            extra = "".join(f"{name}: {value}\r\n" for name, value in headers or [])
            upgrade = (f"GET {SYNC_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                       f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n{extra}"
                       f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
            self.writer.write(prefix + upgrade if request else prefix)
            try:
                await self.writer.drain()
                head = await self.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                self.dropped = True
                return self
        self.status = int(head.split(b" ", 2)[1])
        return self

    @property
    def open(self) -> bool:
        return self.status == 101 and not self.dropped

    async def send(self, payload: bytes, hold_back: int = 0) -> None:
        """Send one binary frame, but for its last ``hold_back`` bytes."""
        assert self.writer is not None
        frame = ws_frame(payload)
        with contextlib.suppress(ConnectionError):
            self.writer.write(frame[:len(frame) - hold_back])
            async with asyncio.timeout(WAIT):
                await self.writer.drain()

    async def until_closed(self) -> None:
        """Read the relay's frames until it closes; protocol ERRORs are kept in ``errors``."""
        assert self.reader is not None and self.writer is not None
        try:
            async with asyncio.timeout(WAIT):
                for _ in range(1000):
                    head = await self.reader.readexactly(2)
                    opcode, n = head[0] & 0x0F, head[1] & 0x7F
                    if n == 126:
                        n = int.from_bytes(await self.reader.readexactly(2), "big")
                    elif n == 127:
                        n = int.from_bytes(await self.reader.readexactly(8), "big")
                    payload = await self.reader.readexactly(n)
                    if opcode == 0x2:
                        msg = self._message(payload)
                        if isinstance(msg, Error):
                            self.errors.append(msg)
                    elif opcode == 0x8:  # close: answer it, as a client does
                        self.writer.write(b"\x88\x80\x00\x00\x00\x00")
                        await self.writer.drain()
                        break
        except (asyncio.IncompleteReadError, ConnectionError):
            self.dropped = True
        finally:
            await self.close()

    def _message(self, payload: bytes) -> Message:
        if self.peer is not None and payload[:2] == SEALED_HEAD:
            return self.peer.open(payload)
        msg = decode(payload)
        if isinstance(msg, Hello) and self.peer is not None:
            self.peer.on_hello(payload)
        return msg

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.wait_closed(), WAIT)
