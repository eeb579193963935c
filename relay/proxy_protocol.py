"""The PROXY protocol (HAProxy's, versions 1 and 2) on the relay's TCP connections: a
balancer that passes TCP through says first, in one header, whom the connection is from.

Only a connection from one of the ``trusted_proxies`` is read for it; any other connection
goes to the HTTP server untouched from its first byte, so a PROXY header from anyone else
is what it is there, a malformed HTTP request, and the HTTP server answers it ``400 Bad
Request`` and closes (docs/RELAY.md, "Behind a proxy"). From a trusted proxy the header is
optional (the same proxy may also speak plain HTTP with ``X-Forwarded-For``); when one is
there it must be whole and well formed within :data:`V1_MAX` bytes (version 1, text) or
:data:`V2_MAX` (version 2, binary) and within the handshake timeout, else the connection is
closed and the reason reported: what follows a broken header cannot be trusted to be HTTP.

How it sits in aiohttp, through public API only: :class:`Sniffer` is the asyncio protocol of
each accepted connection. It reads the header, if any, then hands the transport to the
HTTP server's own protocol (``web.Server()`` is a protocol factory, as for
``loop.create_server``) with ``transport.set_protocol`` and gives it the bytes after the
header. The forwarded address is kept per transport (:class:`ProxiedPeers`) for the request
handler, which finds it from ``request.transport``; aiohttp itself still sees the proxy as
the peer (``request.remote``).

Under TLS (the relay's own ``cert``/``key``) the sniffer sits above TLS, where balancers do
not put a PROXY header: there it is not read at all (a known limit; terminate TLS at the
balancer, or let an HTTP proxy set ``X-Forwarded-For``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from .client_address import Address, TrustedProxies, parse_address

#: Version 2's signature, its first 12 bytes.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
#: The longest version 1 header, CRLF included (the specification's bound).
V1_MAX = 107
#: The longest version 2 header this relay takes: 16 fixed bytes and the addresses, with
#: room for the TLVs balancers add (AWS, GCP: tens of bytes; HAProxy's TLS details: hundreds).
V2_MAX = 16 + 2048


class ProxyHeaderError(ValueError):
    """A PROXY header that is malformed or too long; the message says why."""


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header. ``source`` is the client's address; None when the header gives none
    (version 1 ``UNKNOWN``, version 2 ``LOCAL``: the balancer's own health checks, or an
    address family other than IPv4 and IPv6): the connection's own address stands."""

    version: int
    source: Address | None
    length: int  #: bytes the header took


def starts_with_header(data: bytes) -> bool | None:
    """Whether ``data`` (a connection's first bytes) starts with a PROXY header: True, False,
    or None when it is too short to tell (a prefix of a signature)."""
    for signature in (V1_PREFIX, V2_SIGNATURE):
        if data.startswith(signature):
            return True
        if signature.startswith(data):
            return None
    return False


def parse_header(data: bytes) -> ProxyHeader | None:
    """The PROXY header at the start of ``data``; None if more bytes are needed.

    Raises:
        ProxyHeaderError: ``data`` does not start with a header, or its header is malformed
            or longer than the bounds.
    """
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY signature")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"PROXY v1 header without CRLF in its first {V1_MAX} bytes")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 header is not ASCII") from None
    words = line.split(" ")
    if len(words) >= 2 and words[1] == "UNKNOWN":  # the rest of the line is to be ignored
        return ProxyHeader(1, None, end + 2)
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"PROXY v1 header {line[:V1_MAX]!r} is not "
                               f"'PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT'")
    version = 4 if words[1] == "TCP4" else 6
    addresses = []
    for text in words[2:4]:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            address = None
        if address is None or address.version != version:
            raise ProxyHeaderError(f"PROXY v1 header: {text!r} is not an IPv{version} address")
        addresses.append(parse_address(text))
    for text in words[4:6]:
        if not (text.isdigit() and text.isascii() and len(text) <= 5 and int(text) <= 65535
                and (text == "0" or not text.startswith("0"))):
            raise ProxyHeaderError(f"PROXY v1 header: {text!r} is not a port")
    return ProxyHeader(1, addresses[0], end + 2)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < 16:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"PROXY v2 header of version {version}")
    if command not in (0, 1):
        raise ProxyHeaderError(f"PROXY v2 header with command {command} (LOCAL 0 or PROXY 1)")
    family, transport = data[13] >> 4, data[13] & 0x0F
    length = int.from_bytes(data[14:16], "big")
    if 16 + length > V2_MAX:
        raise ProxyHeaderError(f"PROXY v2 header of {16 + length} bytes (at most {V2_MAX})")
    if len(data) < 16 + length:
        return None
    if command == 0:  # LOCAL: the balancer's own connection; addresses, if any, are ignored
        return ProxyHeader(2, None, 16 + length)
    if family > 3 or transport > 2:
        raise ProxyHeaderError(f"PROXY v2 header with address family {family}, protocol {transport}")
    if family in (1, 2) and transport != 1:
        raise ProxyHeaderError("PROXY v2 header of a connection that is not a stream (TCP)")
    body = data[16:16 + length]
    if family == 1:  # AF_INET: source, destination (4 bytes each), ports (2 each)
        if length < 12:
            raise ProxyHeaderError(f"PROXY v2 IPv4 addresses in {length} bytes (12 needed)")
        return ProxyHeader(2, ipaddress.IPv4Address(body[:4]), 16 + length)
    if family == 2:  # AF_INET6
        if length < 36:
            raise ProxyHeaderError(f"PROXY v2 IPv6 addresses in {length} bytes (36 needed)")
        return ProxyHeader(2, parse_address(str(ipaddress.IPv6Address(body[:16]))), 16 + length)
    return ProxyHeader(2, None, 16 + length)  # AF_UNSPEC or AF_UNIX: no IP address to use


class ProxiedPeers:
    """The source address each connection's PROXY header gave, by transport; an entry goes
    with its connection (weak keys)."""

    def __init__(self) -> None:
        self._sources: weakref.WeakKeyDictionary[asyncio.BaseTransport, Address] = (
            weakref.WeakKeyDictionary())

    def __len__(self) -> int:
        return len(self._sources)

    def set(self, transport: asyncio.BaseTransport, source: Address) -> None:
        self._sources[transport] = source

    def get(self, transport: asyncio.BaseTransport | None) -> Address | None:
        return None if transport is None else self._sources.get(transport)


#: Told of each header read (the source, None for none, and the version) and each refusal
#: (the peer and the reason).
OnHeader = Callable[[str, Address | None, int], None]
OnRefusal = Callable[[str, str], None]


class Sniffer(asyncio.Protocol):
    """One accepted connection until it has shown whether it starts with a PROXY header
    (see the module); then the HTTP server's protocol takes the transport over."""

    def __init__(self, inner: Callable[[], asyncio.BaseProtocol], trusted: TrustedProxies,
                 proxied: ProxiedPeers, timeout: float, on_header: OnHeader, on_refusal: OnRefusal,
                 sniffing: set[Sniffer], read: bool = True) -> None:
        self.inner, self.trusted, self.proxied, self.timeout = inner, trusted, proxied, timeout
        self.on_header, self.on_refusal, self.sniffing, self.read = on_header, on_refusal, sniffing, read
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.buffer = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peername = transport.get_extra_info("peername")
        address: Address | None = None
        if isinstance(peername, tuple) and peername:
            self.peer = str(peername[0])
            try:
                address = parse_address(self.peer)
            except ValueError:
                address = None
        if not self.read or address not in self.trusted:
            self._hand_over(b"")  # from its first byte: nothing of it is read here
            return
        self.sniffing.add(self)
        self.timer = asyncio.get_running_loop().call_later(self.timeout, self._expired)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        starts = starts_with_header(self.buffer)
        if starts is None:
            return
        if not starts:
            self._hand_over(self.buffer)  # plain HTTP from a trusted proxy
            return
        try:
            header = parse_header(self.buffer)
        except ProxyHeaderError as exc:
            self.refuse(str(exc))
            return
        if header is None:
            return  # bounded: parse_header refuses a buffer past the header's bound
        self.on_header(self.peer, header.source, header.version)
        assert self.transport is not None
        if header.source is not None:
            self.proxied.set(self.transport, header.source)
        self._hand_over(self.buffer[header.length:])

    def eof_received(self) -> bool | None:
        self.refuse("the connection ended inside its PROXY header" if self.buffer
                    else "the connection ended before a request")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._done()

    def _expired(self) -> None:
        self.timer = None
        self.refuse(f"no whole PROXY header or request within {self.timeout:g} s")

    def refuse(self, reason: str) -> None:
        """Close the connection (nothing of it reached the HTTP server) and report why."""
        if self.transport is None or self.transport.is_closing():
            return
        self._done()
        sent, self.buffer = bool(self.buffer), b""
        if sent:  # a connection that sent nothing (a balancer's TCP check) is not worth a line
            self.on_refusal(self.peer, reason)
        self.transport.abort()

    def _done(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.sniffing.discard(self)

    def _hand_over(self, rest: bytes) -> None:
        self._done()
        self.buffer = b""
        transport = self.transport
        assert transport is not None
        protocol = self.inner()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if rest and not transport.is_closing():
            assert isinstance(protocol, asyncio.Protocol)
            protocol.data_received(rest)


__all__ = ["V1_MAX", "V1_PREFIX", "V2_MAX", "V2_SIGNATURE", "ProxiedPeers", "ProxyHeader",
           "ProxyHeaderError", "Sniffer", "parse_header", "starts_with_header"]
