"""relay.client_address and relay.proxy_protocol's parser, as pure functions: the walk of
X-Forwarded-For and Forwarded from the right, PROXY v1 and v2 headers, and, whatever bytes
or text come in, a result or a reason (Malformed, ProxyHeaderError), never another
exception. The relay that uses them: tests/test_relay_proxy.py."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync.relay.client_address import (
    MAX_HOPS,
    Malformed,
    TrustedProxies,
    parse_address,
    parse_networks,
    resolve,
    walk,
)
from crdt_sync.relay.proxy_protocol import (
    V1_MAX,
    V2_MAX,
    V2_SIGNATURE,
    ProxyHeaderError,
    parse_header,
    starts_with_header,
)
from tests.strangers import proxy_v1, proxy_v2

TRUSTED = TrustedProxies(parse_networks(["10.0.0.0/8", "fd00::/8", "127.0.0.9"]))
XFF = "x-forwarded-for"


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(("lines", "expected"), [
    (["198.51.100.1"], "198.51.100.1"),
    (["203.0.113.9, 198.51.100.1"], "198.51.100.1"),  # the client's own left part is never read
    (["198.51.100.1, 10.1.2.3, 10.0.0.5"], "198.51.100.1"),  # trusted hops walked past
    (["198.51.100.1", "10.0.0.5"], "198.51.100.1"),  # several lines are one list
    (["garbage, !!, 198.51.100.1"], "198.51.100.1"),  # garbage left of the client: not reached
    (["10.0.0.1, 10.0.0.2"], "10.0.0.1"),  # all trusted: the farthest one
    (["198.51.100.1:4711"], "198.51.100.1"),
    (["[2001:db8::1]:4711"], "2001:db8::1"),
    (["[2001:db8::1]"], "2001:db8::1"),
    (["2001:db8::1"], "2001:db8::1"),
    (["::ffff:198.51.100.1"], "198.51.100.1"),  # IPv4-mapped: one host, one address
    ([" 198.51.100.1 "], "198.51.100.1"),
])
def test_x_forwarded_for_is_walked_from_the_right(lines: list[str], expected: str) -> None:
    assert walk(lines, XFF, TRUSTED) == ip(expected)


@pytest.mark.parametrize(("lines", "reason"), [
    (["198.51.100.1, nonsense"], "'nonsense' is not an address"),
    (["198.51.100.1,"], "an empty entry"),
    (["[2001:db8::1"], "is not an address"),
    (["[2001:db8::1]x"], "is not an address"),
    (["1.2.3.4:56:78"], "is not an address"),
    (["1.2.3.4:http"], "is not an address"),
    (["x" * 300], "an entry of 300 characters"),
    (["10.0.0.1"] * 17, "17 x-forwarded-for lines"),
    ([", ".join(["10.0.0.1"] * (MAX_HOPS + 5))], f"more than {MAX_HOPS} trusted proxies"),
])
def test_a_malformed_x_forwarded_for_says_why(lines: list[str], reason: str) -> None:
    with pytest.raises(Malformed, match=reason.replace("[", r"\[")):
        walk(lines, XFF, TRUSTED)


def test_a_long_header_is_read_from_the_right_only() -> None:
    """A client may prepend anything (up to the HTTP server's line limit): only the last
    MAX_HOPS + 1 entries are split and at most up to the first untrusted one parsed."""
    left = ", ".join(["not an address"] * 5000)
    assert walk([f"{left}, 198.51.100.1, 10.0.0.1"], XFF, TRUSTED) == ip("198.51.100.1")


@pytest.mark.parametrize(("lines", "expected"), [
    (["for=198.51.100.1"], "198.51.100.1"),
    (['for="[2001:db8:cafe::17]:4711";proto=https;by=10.0.0.1'], "2001:db8:cafe::17"),
    (["for=203.0.113.9, For=198.51.100.1;proto=http"], "198.51.100.1"),
    (['for=198.51.100.1, for="10.0.0.4"'], "198.51.100.1"),
    (['for=203.0.113.9;by="a,b", for=198.51.100.1'], "198.51.100.1"),  # a quoted comma
    (["proto=http;for=198.51.100.1"], "198.51.100.1"),
])
def test_forwarded_for_is_walked_from_the_right(lines: list[str], expected: str) -> None:
    assert walk(lines, "forwarded", TRUSTED) == ip(expected)


@pytest.mark.parametrize(("lines", "reason"), [
    (["for=unknown"], "names no address"),
    (["for=_hidden"], "names no address"),
    (["proto=http"], "an element without for="),
    (["for=1.2.3.4;for=5.6.7.8"], "two for= in one element"),
    (["for"], "is not a name=value pair"),
    (['for="198.51.100.1'], "an unterminated quoted string"),
    (["for=198.51.100.1:x"], "is not an address"),
])
def test_a_malformed_forwarded_says_why(lines: list[str], reason: str) -> None:
    with pytest.raises(Malformed, match=reason):
        walk(lines, "forwarded", TRUSTED)


def test_resolve_trusts_only_trusted_peers() -> None:
    lines = ["198.51.100.1"]
    assert resolve("10.0.0.5", None, lines, XFF, TRUSTED).address == "198.51.100.1"
    untrusted = resolve("192.0.2.1", None, lines, XFF, TRUSTED)
    assert (untrusted.address, untrusted.source, untrusted.ignored) == ("192.0.2.1", "peer", True)
    assert resolve("10.0.0.5", None, lines, "none", TRUSTED).address == "10.0.0.5"
    assert resolve("10.0.0.5", None, [], XFF, TRUSTED).address == "10.0.0.5"
    # A PROXY header's client is the start; it is no proxy, so its own header is not read.
    behind = resolve("10.0.0.5", ip("192.0.2.7"), lines, XFF, TRUSTED)
    assert (behind.address, behind.source, behind.peer, behind.ignored) == (
        "192.0.2.7", "proxy-protocol", "10.0.0.5", True)
    # ... unless it is a trusted proxy itself (an HTTP proxy behind a TCP balancer).
    assert resolve("10.0.0.5", ip("10.9.9.9"), lines, XFF, TRUSTED).address == "198.51.100.1"
    bad = resolve("10.0.0.5", None, ["nonsense"], XFF, TRUSTED)
    assert (bad.address, bad.malformed) == ("10.0.0.5", "x-forwarded-for: 'nonsense' is not an address")
    assert resolve("::ffff:10.0.0.5", None, lines, XFF, TRUSTED).address == "198.51.100.1"
    assert resolve(None, None, lines, XFF, TRUSTED).address == "None"  # no peer: nothing to trust


def test_trusted_proxies_membership() -> None:
    assert ip("10.200.0.1") in TRUSTED and ip("fd12::1") in TRUSTED and ip("127.0.0.9") in TRUSTED
    assert ip("127.0.0.1") not in TRUSTED and ip("::1") not in TRUSTED and None not in TRUSTED
    assert not TrustedProxies(()) and TRUSTED
    assert parse_address("fe80::1%eth0") == ip("fe80::1")


# -- PROXY headers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("data", "version", "source"), [
    (proxy_v1("198.51.100.1"), 1, "198.51.100.1"),
    (proxy_v1("2001:db8::2"), 1, "2001:db8::2"),
    (b"PROXY TCP6 ::ffff:198.51.100.1 ::1 1 2\r\n", 1, "198.51.100.1"),
    (b"PROXY UNKNOWN\r\n", 1, None),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", 1, None),
    (proxy_v2("198.51.100.1"), 2, "198.51.100.1"),
    (proxy_v2("2001:db8::2", tlvs=b"\x04\x00\x02ab"), 2, "2001:db8::2"),
    (proxy_v2(None, command=0), 2, None),
    (proxy_v2("198.51.100.1", command=0), 2, None),  # LOCAL: addresses ignored
    (proxy_v2(None, family=3, length=216) + bytes(216), 2, None),  # AF_UNIX
])
def test_proxy_headers_parse(data: bytes, version: int, source: str | None) -> None:
    header = parse_header(data + b"GET / HTTP/1.1\r\n")
    assert header is not None
    assert (header.version, header.length) == (version, len(data))
    assert header.source == (ip(source) if source else None)
    for cut in range(1, len(data)):  # every prefix of it: wait for more
        prefix = data[:cut]
        assert starts_with_header(prefix) is not False
        if prefix.startswith((b"PROXY ", V2_SIGNATURE)):
            assert parse_header(prefix) is None


def test_what_is_not_a_proxy_header() -> None:
    assert starts_with_header(b"GET / HTTP/1.1\r\n") is False
    assert starts_with_header(b"POST") is False
    assert starts_with_header(b"PROX") is None and starts_with_header(b"\r\n\r\n") is None
    with pytest.raises(ProxyHeaderError, match="no PROXY signature"):
        parse_header(b"GET / HTTP/1.1\r\n")


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([b"PROXY ", V2_SIGNATURE, b"PROXY TCP4 ", V2_SIGNATURE + b"\x21\x11"]),
       st.binary(max_size=V2_MAX + 64))
def test_any_bytes_after_a_signature_parse_or_say_why(signature: bytes, rest: bytes) -> None:
    try:
        header = parse_header(signature + rest)
    except ProxyHeaderError as exc:
        assert str(exc)
        return
    if header is not None:
        assert 0 < header.length <= max(V1_MAX, V2_MAX)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list('0123456789abcdef.:[], ";=forFOR_x\\%')), max_size=80),
                max_size=20),
       st.sampled_from(["x-forwarded-for", "forwarded"]))
def test_any_header_text_walks_or_says_why(lines: list[str], header: str) -> None:
    try:
        found = walk(lines, header, TRUSTED)
    except Malformed as exc:
        assert str(exc)
        return
    assert found is None or isinstance(found, ipaddress.IPv4Address | ipaddress.IPv6Address)
