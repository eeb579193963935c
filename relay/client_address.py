"""The client address of a connection: what the relay's per-address limits, its logs and its
metrics count a connection under (docs/RELAY.md, "Behind a proxy").

It is the TCP peer's IP address, unless that peer is one of the ``trusted_proxies``: then
the address that proxy forwards, from the PROXY protocol header it sent first
(:mod:`relay.proxy_protocol`), else from the HTTP header the operator named
(``forwarded_header``: ``X-Forwarded-For``, RFC 7239 ``Forwarded``, or none). A forwarded
address that is itself a trusted proxy is walked past, from the right of the header, to the
first one that is not: proxies append the address they saw, so everything to the left of
that one was written by whoever connected, and is not believed.

Everything read here came from outside and is bounded: at most :data:`MAX_HEADER_LINES`
header lines, :data:`MAX_HOPS` entries walked, :data:`MAX_ENTRY` characters per entry. A
header that breaks a bound or names no address where one is needed is *malformed*: the
connection carries on under the address the relay had before reading it (the trusted
proxy's, or the PROXY header's), and the reason is reported (logged by the server). A
header from a peer that is not trusted is not read at all.

Pure functions and small classes: nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The HTTP headers a relay may read a forwarded address from (the ``forwarded_header``
#: setting); "none" reads neither (a balancer that speaks only the PROXY protocol).
HEADERS = ("x-forwarded-for", "forwarded", "none")
#: Bounds on what a trusted proxy's header may hold (beyond them the header is malformed).
MAX_HEADER_LINES = 16
MAX_HOPS = 32
MAX_ENTRY = 256


class Malformed(ValueError):
    """A forwarded address the relay cannot use; the message says why."""


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """IP addresses and CIDR networks (``10.0.0.7``, ``10.0.0.0/8``, ``fd00::/8``).

    Raises:
        ValueError: an entry is neither, or a network has host bits set (``10.0.0.1/8``:
            ambiguous, so refused rather than guessed).
    """
    networks: list[Network] = []
    for entry in entries:
        text = entry.strip()
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            if "host bits set" in str(exc):
                loose = ipaddress.ip_network(text, strict=False)
                raise ValueError(f"{text!r} has host bits set (the network is {loose})") from None
            raise ValueError(f"{text!r} is not an IP address or a CIDR network") from None
        networks.append(network)
    return tuple(networks)


def split_list(raw: str) -> list[str]:
    """A list setting as the environment or a command line gives it: commas or spaces
    between entries."""
    return raw.replace(",", " ").split()


def parse_address(text: str) -> Address:
    """An IP address as a connection or a header gives it; an IPv4-mapped IPv6 address
    (``::ffff:192.0.2.1``, how a dual-stack socket shows an IPv4 peer) is its IPv4 address,
    and an IPv6 zone (``%eth0``) is dropped, so that one host is one address."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The ``trusted_proxies`` setting, for membership tests."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return any(address.version == n.version and address in n for n in self.networks)


def _node(text: str) -> Address:
    """One entry of X-Forwarded-For, or the value of ``for=`` in Forwarded: an address,
    possibly with a port (``192.0.2.1:4711``, ``[2001:db8::1]:4711``; some proxies add one)."""
    text = text.strip()
    if len(text) > MAX_ENTRY:
        raise Malformed(f"an entry of {len(text)} characters (at most {MAX_ENTRY})")
    if not text:
        raise Malformed("an empty entry")
    host = text
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1:] if end > 0 else "?"
        if end < 0 or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            raise Malformed(f"{text!r} is not an address")
        host = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port (an IPv6 address has two colons or more)
        host, port = text.split(":")
        if not port.isdigit():
            raise Malformed(f"{text!r} is not an address")
    try:
        return parse_address(host)
    except ValueError:
        raise Malformed(f"{text!r} is not an address") from None


def _forwarded_for(element: str) -> str:
    """The ``for=`` value of one element of a Forwarded header (RFC 7239: ``;``-separated
    ``name=value`` pairs, the value a token or a quoted string)."""
    found = None
    for pair in element.split(";"):
        name, eq, value = pair.partition("=")
        if not eq:
            if pair.strip():
                raise Malformed(f"{pair.strip()[:MAX_ENTRY]!r} is not a name=value pair")
            continue
        if name.strip().lower() != "for":
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if found is not None:
            raise Malformed("two for= in one element")
        found = value
    if found is None:
        raise Malformed("an element without for=")
    if found.lower() == "unknown" or found.startswith("_"):  # RFC 7239 6.2, 6.3: no address given
        raise Malformed(f"for={found[:MAX_ENTRY]} names no address")
    return found


def _elements(lines: Sequence[str], header: str) -> list[str]:
    """The last :data:`MAX_HOPS` + 1 comma-separated elements of the header's lines, in
    order (the rest, to the left, is never looked at)."""
    if len(lines) > MAX_HEADER_LINES:
        raise Malformed(f"{len(lines)} {header} lines (at most {MAX_HEADER_LINES})")
    joined = ",".join(lines)
    if header == "forwarded" and '"' in joined:
        return _split_quoted(joined)[-(MAX_HOPS + 1):]
    return joined.rsplit(",", MAX_HOPS)[-(MAX_HOPS + 1):]


def _split_quoted(text: str) -> list[str]:
    """Split on commas outside double quotes (a quoted Forwarded value may hold a comma)."""
    parts, start, quoted, escaped = [], 0, False, False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        raise Malformed("an unterminated quoted string")
    parts.append(text[start:])
    return parts


def walk(lines: Sequence[str], header: str, trusted: TrustedProxies) -> Address | None:
    """The client address a trusted proxy's header forwards: from the right, the first entry
    that is not a trusted proxy (the leftmost entry if all are). None: no such header.

    Raises:
        Malformed: a bound is broken, or an entry the walk reaches is not an address.
    """
    if header == "none" or not lines:
        return None
    elements = _elements(lines, header)
    found: Address | None = None
    for hops, element in enumerate(reversed(elements)):
        if hops == MAX_HOPS:
            raise Malformed(f"more than {MAX_HOPS} trusted proxies in a row")
        address = _node(_forwarded_for(element) if header == "forwarded" else element)
        found = address
        if address not in trusted:
            break
    return found


@dataclass(frozen=True)
class ClientAddress:
    """Where a connection comes from, as the relay counts it."""

    address: str  #: what limits, logs and metrics use
    peer: str  #: the TCP peer's address
    #: how ``address`` was found: ``peer``, ``proxy-protocol`` or the header's name
    source: str = "peer"
    #: why a trusted proxy's header was not used (the connection carries on as ``address``)
    malformed: str | None = None
    #: a header came from a peer that is not trusted, and was ignored
    ignored: bool = False


def resolve(peer: str | None, proxied: Address | None, lines: Sequence[str], header: str,
            trusted: TrustedProxies) -> ClientAddress:
    """The client address of one request.

    Args:
        peer: the TCP peer's address (``request.remote``), None if unknown.
        proxied: the source address of the connection's PROXY header, if it sent one (only
            read from a trusted peer: :mod:`relay.proxy_protocol`).
        lines: the values of the ``header`` lines of the request (``headers.getall``).
        header: the ``forwarded_header`` setting.
    """
    shown = str(peer)
    try:
        start: Address | None = parse_address(peer) if peer is not None else None
    except ValueError:  # not an IP peer (a Unix socket): nothing to trust
        start = None
    source = "peer"
    if proxied is not None:
        start, source = proxied, "proxy-protocol"
    if start is None or start not in trusted:
        here = shown if start is None else str(start)
        return ClientAddress(here, shown, source, ignored=bool(lines) and header != "none")
    try:
        forwarded = walk(lines, header, trusted)
    except Malformed as exc:
        return ClientAddress(str(start), shown, source, malformed=f"{header}: {exc}")
    if forwarded is None:
        return ClientAddress(str(start), shown, source)
    return ClientAddress(str(forwarded), shown, header)


__all__ = ["HEADERS", "Address", "ClientAddress", "Malformed", "Network", "TrustedProxies",
           "parse_address", "parse_networks", "resolve", "split_list", "walk"]
