"""A relay behind a load balancer (issue 16): its per-address limits, its logs and its
metrics count a connection under the client address a *trusted* proxy forwards (PROXY
protocol v1 or v2, X-Forwarded-For, RFC 7239 Forwarded), never under one that anyone else
claims. Real in-process relays on loopback, raw sockets from chosen source addresses
(127.0.0.9 plays the balancer), and one real device syncing through a real PROXY-protocol
TCP balancer.

What a forwarded header or PROXY header that is malformed does: a PROXY header closes the
connection (what follows it cannot be trusted to be HTTP); a header (X-Forwarded-For,
Forwarded) is set aside and the connection carries on under the proxy's own address. Both
are logged with the reason and counted, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from crdt_sync.relay.server import RelayServer
from tests.conftest import ReplicaFactory
from tests.relay_helpers import (
    log_events,
    rejections,
    relay_process,
    run_cli,
    running_relay,
    sample,
    scrape,
    still_serves,
    sync_once,
    wait_until,
)
from tests.strangers import WAIT, Stranger, proxy_v1, proxy_v2
from tests.sync_helpers import fill

PROXY = "127.0.0.9"  # the balancer: trusted
ELSEWHERE = "127.0.0.2"  # any other peer
CLIENT_A, CLIENT_B = "198.51.100.1", "2001:db8::2"
WAYS = ("x-forwarded-for", "forwarded", "proxy-v1", "proxy-v2")
METRIC = "crdt_relay_client_addresses_total"


def forwarding(way: str, client: str) -> dict[str, Any]:
    """What a balancer sends to say the connection is ``client``'s (Stranger.connect's
    arguments). The headers' left parts are what a client wrote itself: never believed."""
    if way == "x-forwarded-for":
        return {"headers": [("X-Forwarded-For", f"203.0.113.66, {client}")]}
    if way == "forwarded":
        node = f'"[{client}]:4711"' if ":" in client else client
        return {"headers": [("Forwarded", f"for=203.0.113.66, for={node};proto=http")]}
    return {"prefix": (proxy_v1 if way == "proxy-v1" else proxy_v2)(client)}


def settings(way: str, **more: Any) -> dict[str, Any]:
    header = way if way in ("x-forwarded-for", "forwarded") else "x-forwarded-for"
    return {"trusted_proxies": (PROXY,), "forwarded_header": header, **more}


@contextlib.asynccontextmanager
async def connections(relay: RelayServer,
                      *specs: tuple[str, dict[str, Any]]) -> AsyncIterator[list[Stranger]]:
    """One raw connection per (source, Stranger.connect arguments), in order; closed on exit."""
    opened: list[Stranger] = []
    try:
        for source, how in specs:
            opened.append(await Stranger.connect(relay.port, source, **how))
        yield opened
    finally:
        for stranger in opened:
            await stranger.close()


async def counted(relay: RelayServer, source: str) -> float:
    return sample(await scrape(relay.url), METRIC, source=source)


def fields(records: list[logging.LogRecord], event: str) -> list[dict[str, Any]]:
    return [dict(r.fields) for r in records if r.getMessage() == event and hasattr(r, "fields")]


async def logged(records: list[logging.LogRecord], event: str) -> dict[str, Any]:
    async def seen() -> bool:
        return bool(fields(records, event))

    await wait_until(seen, f"a {event} log line")
    return fields(records, event)[0]


# -- the limit counts forwarded clients ------------------------------------------------------------
@pytest.mark.parametrize("way", WAYS)
async def test_through_a_trusted_proxy_each_forwarded_client_has_its_own_share(tmp_path: Path,
                                                                               way: str) -> None:
    """Budget 2, share 2: client A's third connection is refused, client B's first (same
    proxy) is let in and makes room; the proxy's own address is limited for neither."""
    async with running_relay(tmp_path / "relay", **settings(way, max_unauthenticated=2,
                                                            max_unauthenticated_per_address=2)) as relay:
        a, b = forwarding(way, CLIENT_A), forwarding(way, CLIENT_B)
        async with connections(relay, (PROXY, a), (PROXY, a), (PROXY, a), (PROXY, b)) as opened:
            assert [s.status for s in opened] == [101, 101, 429, 101]
            assert await rejections(relay.url, "address-limit") == 1
            assert await rejections(relay.url, "handshake-evicted") == 1
            assert relay.per_name_state()["unauthenticated_addresses"] == 2  # A and B
            source = "header" if way in ("x-forwarded-for", "forwarded") else "proxy-protocol"
            assert await counted(relay, source) == 4


@pytest.mark.parametrize("way", ["x-forwarded-for", "forwarded"])
async def test_an_untrusted_peer_cannot_spoof_its_way_around_the_limit(tmp_path: Path, way: str) -> None:
    async with running_relay(tmp_path / "relay", **settings(way, max_unauthenticated=2,
                                                            max_unauthenticated_per_address=2)) as relay:
        specs = [(ELSEWHERE, forwarding(way, client)) for client in ("198.51.100.7", "198.51.100.8",
                                                                     "198.51.100.9", PROXY)]
        async with connections(relay, *specs) as opened:
            assert [s.status for s in opened] == [101, 101, 429, 429]  # all of them are 127.0.0.2
            assert await rejections(relay.url, "address-limit") == 2
            assert await counted(relay, "header-ignored") == 4
            assert await counted(relay, "header") == 0


@pytest.mark.parametrize("way", ["proxy-v1", "proxy-v2"])
async def test_a_proxy_header_from_an_untrusted_peer_is_plain_http_and_refused(tmp_path: Path,
                                                                               way: str) -> None:
    """Not read at all: the HTTP server sees a request line it cannot parse (400)."""
    async with running_relay(tmp_path / "relay", **settings(way)) as relay:
        async with connections(relay, (ELSEWHERE, forwarding(way, CLIENT_A))) as (stranger,):
            assert stranger.status == 400
        assert await counted(relay, "proxy-protocol") == 0
        assert relay.per_name_state()["unauthenticated"] == 0
        await still_serves(relay.url, "after-untrusted-proxy-header")


async def test_behind_a_tcp_balancer_the_clients_own_header_is_not_believed(tmp_path: Path) -> None:
    """A PROXY header names client A; the request A wrote itself claims B in X-Forwarded-For:
    it counts as A (A is no proxy of ours), so A cannot spread over other addresses."""
    async with running_relay(tmp_path / "relay", **settings("proxy-v1", max_unauthenticated=1,
                                                            max_unauthenticated_per_address=1)) as relay:
        spoof = {"prefix": proxy_v1(CLIENT_A), "headers": [("X-Forwarded-For", "198.51.100.50")]}
        async with connections(relay, (PROXY, spoof), (PROXY, spoof)) as opened:
            assert [s.status for s in opened] == [101, 429]
            assert await counted(relay, "header-ignored") == 2


@pytest.mark.parametrize("prefix", [proxy_v2(None, command=0), proxy_v2(None, family=0),
                                    b"PROXY UNKNOWN whatever follows\r\n", b""],
                         ids=["v2-local", "v2-unspec", "v1-unknown", "plain-http"])
async def test_a_trusted_proxy_without_a_client_address_counts_as_itself(tmp_path: Path,
                                                                         prefix: bytes) -> None:
    how = {"prefix": prefix}
    async with running_relay(tmp_path / "relay", trusted_proxies=(PROXY,), max_unauthenticated=1,
                             max_unauthenticated_per_address=1) as relay, \
            connections(relay, (PROXY, how), (PROXY, how)) as opened:
        assert [s.status for s in opened] == [101, 429]


# -- a real device through a real balancer ----------------------------------------------------------
@contextlib.asynccontextmanager
async def tcp_balancer(relay_port: int) -> AsyncIterator[int]:
    """A TCP balancer on 127.0.0.1 that connects to the relay from PROXY, sends a PROXY v1
    header naming the client, and pipes both ways (HAProxy's ``send-proxy``). Yields its port."""
    pipes: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(1_000_000):  # bounded: ends at EOF long before
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client_host, client_port = writer.get_extra_info("peername")[:2]
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", relay_port, local_addr=(PROXY, 0))
        up_writer.write(f"PROXY TCP4 {client_host} 127.0.0.1 {client_port} {relay_port}\r\n".encode())
        for task in (asyncio.ensure_future(pipe(reader, up_writer)),
                     asyncio.ensure_future(pipe(up_reader, writer))):
            pipes.add(task)
            task.add_done_callback(pipes.discard)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in list(pipes):
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


async def test_a_device_syncs_through_a_proxy_protocol_balancer_and_is_logged_as_itself(
        tmp_path: Path, open_replica: ReplicaFactory) -> None:
    with log_events("crdt_sync.relay") as records:
        async with running_relay(tmp_path / "relay", trusted_proxies=(PROXY,)) as relay, \
                tcp_balancer(relay.port) as port:
            member = open_replica("member")
            fill(member, "m", 2)
            outcome = await sync_once(member, f"ws://127.0.0.1:{port}")
            assert outcome.synced and outcome.ok, outcome.closed
            closed = await logged(records, "session.closed")
            assert (closed["remote"], closed["proxy"]) == ("127.0.0.1", PROXY)
            assert closed["peer"] == member.device_id and closed["bytes_in"] > 0
            assert await counted(relay, "proxy-protocol") == 1


# -- malformed and oversized input ------------------------------------------------------------------
BAD_PROXY_HEADERS = {
    "v1-bad-address": (b"PROXY TCP4 198.51.100.300 127.0.0.1 1 2\r\n", "is not an IPv4 address"),
    "v1-family-mismatch": (b"PROXY TCP6 198.51.100.3 ::1 1 2\r\n", "is not an IPv6 address"),
    "v1-bad-port": (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", "is not a port"),
    "v1-short": (b"PROXY TCP4 1.2.3.4\r\n", "is not 'PROXY TCP4|TCP6"),
    "v1-no-crlf": (b"PROXY " + b"X" * 200, "without CRLF in its first 107 bytes"),
    "v1-not-ascii": (b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n", "not ASCII"),
    "v2-oversized": (proxy_v2(CLIENT_A, length=60_000), "at most 2064"),
    "v2-version-3": (proxy_v2(CLIENT_A, version=3), "of version 3"),
    "v2-command-5": (proxy_v2(CLIENT_A, command=5), "command 5"),
    "v2-ipv4-too-short": (proxy_v2(None, family=1, length=4) + b"\x01\x02\x03\x04", "12 needed"),
    "v2-datagram": (proxy_v2(CLIENT_A, transport=2), "not a stream"),
    "v2-family-9": (proxy_v2(None, family=9), "address family 9"),
}


@pytest.mark.parametrize("case", list(BAD_PROXY_HEADERS))
async def test_a_malformed_proxy_header_closes_the_connection_with_a_reason(tmp_path: Path,
                                                                           case: str) -> None:
    prefix, reason = BAD_PROXY_HEADERS[case]
    with log_events("crdt_sync.relay") as records:
        async with running_relay(tmp_path / "relay", trusted_proxies=(PROXY,)) as relay:
            async with connections(relay, (PROXY, {"prefix": prefix})) as (stranger,):
                assert stranger.dropped and stranger.status == 0
            refused = await logged(records, "proxy.refused")
            assert refused["peer"] == PROXY and reason in refused["reason"], refused
            assert await counted(relay, "proxy-refused") == 1
            assert relay.per_name_state()["unauthenticated"] == 0
            await still_serves(relay.url, f"after-{case}")


async def test_a_proxy_header_that_stops_halfway_is_closed_at_the_handshake_timeout(tmp_path: Path) -> None:
    with log_events("crdt_sync.relay") as records:
        async with running_relay(tmp_path / "relay", trusted_proxies=(PROXY,),
                                 handshake_timeout=0.3) as relay:
            async with connections(relay, (PROXY, {"prefix": b"PROXY TCP4 19", "request": False})) as (s,):
                assert s.dropped
            assert "within 0.3 s" in (await logged(records, "proxy.refused"))["reason"]
            assert relay.per_name_state()["proxy_headers"] == 0  # nothing of it stays


@pytest.mark.parametrize(("lines", "reason"), [
    (["not-an-address"], "'not-an-address' is not an address"),
    ([""], "an empty entry"),
    (["198.51.100.1:port"], "is not an address"),
    ([", ".join([PROXY] * 40)], "more than 32 trusted proxies in a row"),
    (["198.51.100.1"] * 17, "17 x-forwarded-for lines (at most 16)"),
], ids=["garbage", "empty", "bad-port", "too-many-hops", "too-many-lines"])
async def test_a_malformed_forwarded_header_is_set_aside_and_the_proxy_address_counts(
        tmp_path: Path, lines: list[str], reason: str) -> None:
    how = {"headers": [("X-Forwarded-For", line) for line in lines]}
    with log_events("crdt_sync.relay") as records:
        async with running_relay(tmp_path / "relay", trusted_proxies=(PROXY,), max_unauthenticated=1,
                                 max_unauthenticated_per_address=1) as relay:
            async with connections(relay, (PROXY, how), (PROXY, how)) as opened:
                assert [s.status for s in opened] == [101, 429]  # both under the proxy's address
            malformed = await logged(records, "client_address.malformed")
            assert malformed["remote"] == PROXY and reason in malformed["reason"], malformed
            assert await counted(relay, "header-malformed") == 2


async def test_an_oversized_header_is_refused_by_the_http_server(tmp_path: Path) -> None:
    """aiohttp's own bound (8190 bytes a line) answers first: 400, nothing counted."""
    async with running_relay(tmp_path / "relay", trusted_proxies=(PROXY,)) as relay:
        how = {"headers": [("X-Forwarded-For", "198.51.100.1, " * 700)]}
        async with connections(relay, (PROXY, how)) as (stranger,):
            assert stranger.status == 400
        assert relay.per_name_state()["unauthenticated"] == 0
        await still_serves(relay.url, "after-oversized")


async def test_the_relay_stops_with_connections_still_inside_their_proxy_header(tmp_path: Path) -> None:
    async with running_relay(tmp_path / "relay", trusted_proxies=(PROXY,)) as relay:
        stalled = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", relay.port,
                                                                 local_addr=(PROXY, 0)), WAIT)
        stalled[1].write(b"PROXY TCP4")
        await stalled[1].drain()

        async def sniffing() -> bool:
            return relay.per_name_state()["proxy_headers"] == 1

        await wait_until(sniffing, "the relay to read the first bytes")
    async with asyncio.timeout(WAIT):  # closed by stop() (aborted: EOF or a reset), not left behind
        with contextlib.suppress(ConnectionResetError):
            assert await stalled[0].read() == b""
    stalled[1].close()


# -- under TLS (the relay's own cert and key) ------------------------------------------------------------
@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl binary to make a test certificate")
    cert, key = tmp_path / "relay.crt", tmp_path / "relay.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


async def test_under_tls_forwarded_headers_count_and_a_proxy_header_is_not_read(
        tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    a, b = forwarding("x-forwarded-for", CLIENT_A), forwarding("x-forwarded-for", CLIENT_B)
    async with running_relay(tmp_path / "relay", cert=cert, key=key, trusted_proxies=(PROXY,),
                             max_unauthenticated=1, max_unauthenticated_per_address=1) as relay:
        specs = [(PROXY, {**how, "tls": tls}) for how in (a, a, b)]
        async with connections(relay, *specs) as opened:
            assert [s.status for s in opened] == [101, 429, 101]
        # A balancer's PROXY header comes before TLS: under the relay's own TLS it is not read
        # (a known limit, RELAY.md): the TLS handshake fails on it and the connection ends.
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", relay.port, local_addr=(PROXY, 0)), WAIT)
        writer.write(proxy_v1(CLIENT_A) + b"GET /v1/sync HTTP/1.1\r\n\r\n")
        answer = b""
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(WAIT):
                for _ in range(100):  # bounded: at most a TLS alert, then the end
                    chunk = await reader.read(4096)
                    if not chunk:
                        break
                    answer += chunk
        writer.close()
        assert not answer.startswith(b"HTTP")
        assert relay.per_name_state()["proxy_headers"] == 0


# -- the command line -----------------------------------------------------------------------------------
async def test_crdt_sync_relay_takes_trusted_proxies_from_its_options(tmp_path: Path) -> None:
    env = {**os.environ, "CRDT_SYNC_RELAY_MAX_UNAUTHENTICATED": "1",
           "CRDT_SYNC_RELAY_MAX_UNAUTHENTICATED_PER_ADDRESS": "1"}
    async with relay_process(tmp_path / "relay", "--trusted-proxies", f"{PROXY},10.0.0.0/8",
                             "--forwarded-header", "forwarded", env=env) as relay:
        a, b = forwarding("forwarded", CLIENT_A), forwarding("forwarded", CLIENT_B)
        opened = [await Stranger.connect(relay.port, PROXY, **how) for how in (a, a, b)]
        try:
            assert [s.status for s in opened] == [101, 429, 101]
        finally:
            for stranger in opened:
                await stranger.close()
    code, out, err = await run_cli("relay", "--data", str(tmp_path / "relay"),
                                   "--trusted-proxies", "10.0.0.1/8")
    assert code == 1 and out == ""
    assert "trusted_proxies: '10.0.0.1/8' has host bits set (the network is 10.0.0.0/8)" in err
