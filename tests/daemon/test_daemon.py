"""The daemon (:class:`crdt_sync.transports.daemon.Peer`) with real parts: LAN sessions over
loopback sockets, a real relay, memory segments where a topology needs devices that never
meet. Every wait is on replica change events or daemon events, under a bound."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from crdt_sync import Replica
from crdt_sync.protocol import PROTOCOL_VERSION
from crdt_sync.transports.daemon import MAX_SESSIONS, Peer, PeerError, prefers
from crdt_sync.transports.interface import LinkReady, LinkServer, ManagedTransport
from crdt_sync.transports.lan import TxtRecord, new_token
from crdt_sync.transports.lan._peers import MAX_CANDIDATES
from crdt_sync.transports.lan._transport import MAX_DIALS, MAX_PENDING
from crdt_sync.transports.memory import LinkConditions, MemoryPeers, MemorySegment
from tests.daemon_helpers import converged, total, until
from tests.helpers import share
from tests.relay_helpers import running_relay
from tests.sync_helpers import FAST, WAIT, fill

LOOP = "127.0.0.1"


def replicas(tmp_path: Path, *names: str) -> list[Replica]:
    return [Replica(tmp_path / name, seal_interval=0) for name in names]


def on(segment: MemorySegment, key: str) -> Callable[[LinkServer], ManagedTransport]:
    return lambda serve: MemoryPeers(segment, key, serve)


@asynccontextmanager
async def listener(replica: Replica, **options: object) -> AsyncIterator[Peer]:
    """A LAN daemon on loopback that dials nobody (static peers dial it)."""
    from crdt_sync.transports.lan import LanTransport

    def build(serve: LinkServer) -> ManagedTransport:
        return LanTransport(replica, [LOOP], mdns=False, config=FAST, serve=serve)
    async with Peer(replica, transports=[build], config=FAST, **options) as peer:  # type: ignore[arg-type]
        yield peer


async def test_two_daemons_on_loopback_converge_and_stay_live(tmp_path: Path) -> None:
    a, b = replicas(tmp_path, "a", "b")
    with a, b:
        space = share(a, b)
        fill(a, "a", 200, space)
        fill(b, "b", 100, space)
        want = total(a, space) + 100
        async with listener(a) as pa:
            port = pa.lan_transport.port
            async with Peer(b, interfaces=[LOOP], static_peers=[(LOOP, port)], config=FAST):
                await converged([a, b], space, want)
                fill(b, "live", 5, space)
                await converged([a, b], space, want + 5)


async def test_b_carries_a_to_c_who_never_meet(tmp_path: Path) -> None:
    """A - B - C on one segment where A and C cannot see each other: B forwards both ways."""
    a, b, c = replicas(tmp_path, "a", "b", "c")
    with a, b, c:
        space = share(a, b, c)
        for replica, name in ((a, "a"), (c, "c")):
            fill(replica, name, 20, space)
        want = total(a, space) + 20
        segment = MemorySegment(can_meet=lambda x, y: {x, y} != {"a", "c"})
        async with Peer(a, transports=[on(segment, "a")], config=FAST) as pa, \
                Peer(b, transports=[on(segment, "b")], config=FAST), \
                Peer(c, transports=[on(segment, "c")], config=FAST) as pc:
            await converged([a, b, c], space, want)
            assert c.device_id not in pa.connected and a.device_id not in pc.connected
            fill(a, "live", 3, space)  # live edits hop too
            await converged([a, b, c], space, want + 3)


async def test_an_edit_on_a_lan_only_device_reaches_the_relay_through_a_colleague(tmp_path: Path) -> None:
    """A only meets B over the LAN; B also keeps a relay session; D only talks to the relay."""
    a, b, d = replicas(tmp_path, "a", "b", "d")
    with a, b, d:
        space = share(a, b, d)
        async with running_relay(tmp_path / "relay") as relay, \
                listener(b, relay=[relay.url]) as pb, \
                Peer(d, relay=[relay.url], config=FAST), \
                Peer(a, interfaces=[LOOP], static_peers=[(LOOP, pb.lan_transport.port)], config=FAST) as pa:
            fill(a, "field", 10, space)
            await converged([a, b, d], space, total(a, space))
            assert list(pa.connected) == [b.device_id] and pa.connected[b.device_id] == "lan"
            assert relay.store.version_vector(space).get(a.device_id) == a.version_vector(space)[a.device_id]
            fill(d, "office", 2, space)  # and back: relay -> B -> LAN -> A
            await converged([a, b, d], space, total(d, space))


async def test_one_session_per_device_when_both_dial_and_over_two_addresses(tmp_path: Path) -> None:
    a, b = replicas(tmp_path, "a", "b")
    with a, b:
        space = share(a, b)
        fill(a, "a", 5, space)
        async with listener(a) as pa:
            port = pa.lan_transport.port
            # b dials a twice (two static entries for one device), and a's listener is also
            # reached over ::1 when the machine has it: one session survives on both sides.
            async with Peer(b, interfaces=[LOOP], static_peers=[(LOOP, port), ("localhost", port)],
                            config=FAST) as pb:
                await converged([a, b], space, 5)
                async with asyncio.timeout(WAIT):
                    await pb.wait_connected(1)
                    await pb.wait_sessions(2)  # the second dial ran a session too ...
                assert list(pb.connected) == [a.device_id] and list(pa.connected) == [b.device_id]
                assert pb.devices[a.device_id].sessions >= 1  # ... and only one is kept
                fill(a, "after", 2, space)  # the survivor is live
                await converged([a, b], space, 7)


def test_tie_break_agrees_on_both_ends() -> None:
    def ready(transport: str, outbound: bool) -> LinkReady:
        return LinkReady(transport, "k", "addr", None, outbound)  # type: ignore[arg-type]
    small, big = "aaa", "zzz"
    for t1, o1, t2, o2 in [("lan", True, "lan", False), ("lan", True, "memory", True),
                           ("memory", False, "lan", True), ("lan", True, "lan", True)]:
        # the same two sessions from both ends: each end's outbound flag is the other's negation
        at_small = prefers(small, big, ready(t1, o1), ready(t2, o2))
        at_big = prefers(big, small, ready(t1, not o1), ready(t2, not o2))
        assert at_small == at_big, (t1, o1, t2, o2)
    assert prefers(small, big, ready("lan", False), ready("memory", True))  # LAN ranks first


async def test_a_mid_transfer_cut_then_edits_on_both_sides_lose_nothing(tmp_path: Path) -> None:
    a, b = replicas(tmp_path, "a", "b")
    with a, b:
        space = share(a, b)
        fill(a, "bulk", 2000, space)
        base = total(a, space)
        segment = MemorySegment(conditions=LinkConditions(bandwidth=2_000_000))
        async with Peer(a, transports=[on(segment, "a")], config=FAST), \
                Peer(b, transports=[on(segment, "b")], config=FAST):
            await until([b], lambda: total(b, space) >= 300)
            segment.cut("a", "b")
            assert total(b, space) < base  # cut mid-transfer
            fill(a, "a-offline", 3, space)
            fill(b, "b-offline", 4, space)
            segment.restore("a", "b")
            await converged([a, b], space, base + 7)


async def test_a_peer_that_never_answers_costs_a_bound(tmp_path: Path) -> None:
    """A static peer that accepts TCP and says nothing, one that completes the WebSocket and
    never says HELLO: the real peer still syncs, and stopping is prompt."""
    a, b = replicas(tmp_path, "a", "b")
    with a, b, socket.create_server((LOOP, 0)) as silent:
        space = share(a, b)
        fill(a, "a", 5, space)
        async with listener(a) as pa, asyncio.timeout(3 * WAIT):
            mute = await _mute_websocket()
            try:
                peers = [(LOOP, silent.getsockname()[1]), (LOOP, mute.port), (LOOP, pa.lan_transport.port)]
                async with Peer(b, interfaces=[LOOP], static_peers=peers, config=FAST):
                    await converged([a, b], space, 5)
            finally:
                await mute.stop()


class _Mute:
    def __init__(self, runner: object, port: int) -> None:
        self.runner, self.port = runner, port

    async def stop(self) -> None:
        await self.runner.cleanup()  # type: ignore[attr-defined]


async def _mute_websocket() -> _Mute:
    """A loopback server that accepts the WebSocket on /v1/sync and then never sends a frame."""
    from aiohttp import web

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:  # reads, answers nothing, until the dialler gives up
            pass
        return ws
    app = web.Application()
    app.router.add_get("/v1/sync", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, LOOP, 0)
    await site.start()
    return _Mute(runner, int(runner.addresses[0][1]))


async def test_an_announcement_flood_is_bounded(tmp_path: Path) -> None:
    """10,000 fake announcements, each pointing at a loopback port that accepts and never
    answers: the candidate table, the dials pending and the connections at once stay bounded."""
    from crdt_sync.transports.lan import LanTransport

    (a,) = replicas(tmp_path, "a")
    accepted = 0
    most = 0
    open_now = 0
    release, full = asyncio.Event(), asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted, most, open_now
        accepted += 1
        open_now += 1
        most = max(most, open_now)
        if accepted >= MAX_DIALS:
            full.set()
        try:
            await release.wait()
        finally:
            open_now -= 1
            writer.close()
    server = await asyncio.start_server(hold, LOOP, 0)
    port = server.sockets[0].getsockname()[1]
    with a:
        lan = LanTransport(a, [LOOP], mdns=False, token="0" * 32, dial_timeout=WAIT)
        async with server, lan:
            for i in range(10_000):  # every fake token is above ours: we would dial each
                lan.candidate(f"fake{i}._crdtsync._tcp.local.", TxtRecord((PROTOCOL_VERSION,), new_token()),
                              (LOOP,), port)
                assert len(lan.table) <= MAX_CANDIDATES and lan.dialling <= MAX_PENDING
            await asyncio.wait_for(full.wait(), WAIT)  # the dial slots fill up, and no more
            assert most <= MAX_DIALS and lan.table.evicted == 10_000 - MAX_CANDIDATES
            release.set()
        assert lan.dialling == 0


async def test_a_peer_that_changes_address_is_found_again(tmp_path: Path) -> None:
    """Discovery reports the same instance at a new address (a new lease, a restart there):
    the transport dials the new address and the two converge on what was edited meanwhile."""
    from crdt_sync.transports.lan import LanTransport

    a, b = replicas(tmp_path, "a", "b")
    with a, b:
        space = share(a, b)
        fill(b, "before", 3, space)
        async with Peer(a, interfaces=[LOOP], static_peers=[], lan=False,
                        transports=[lambda serve: LanTransport(a, [LOOP], mdns=False, config=FAST,
                                                               token="0" * 32, serve=serve)],
                        config=FAST) as pa:
            lan_a = pa.transports[0]
            name = "b._crdtsync._tcp.local."
            for address in ("127.0.0.1", "127.0.0.2"):
                async with listener_at(b, address) as pb:
                    lan_a.candidate(name, TxtRecord((PROTOCOL_VERSION,), "f" * 32), (address,),
                                    pb.lan_transport.port)
                    await converged([a, b], space, total(b, space))
                fill(b, "moved", 2, space)  # edits while away, then back at another address
            assert total(a, space) == 3 + 2  # the last two were made after the last meeting
            assert a.version_vector(space) != b.version_vector(space)


@asynccontextmanager
async def listener_at(replica: Replica, address: str) -> AsyncIterator[Peer]:
    from crdt_sync.transports.lan import LanTransport

    def build(serve: LinkServer) -> ManagedTransport:
        return LanTransport(replica, [address], mdns=False, config=FAST, serve=serve)
    async with Peer(replica, transports=[build], config=FAST) as peer:
        yield peer


async def test_too_many_sessions_are_refused(tmp_path: Path) -> None:
    """Past ``MAX_SESSIONS`` at once, the daemon's link server returns at once, unserved."""
    (a,) = replicas(tmp_path, "a")
    with a:
        peer = Peer(a, transports=[lambda serve: MemoryPeers(MemorySegment(), "a", serve)], config=FAST)
        peer._running.update(object() for _ in range(MAX_SESSIONS))  # type: ignore[misc]
        left, _right = MemorySegment().network.pair()
        async with asyncio.timeout(WAIT):
            await peer._serve(LinkReady("memory", "x", "memory:x", left, False))
        assert peer.sessions == 0


def test_bad_interfaces_are_refused(tmp_path: Path) -> None:
    with Replica(tmp_path / "a") as a:
        with pytest.raises(PeerError, match="no interface named"):
            Peer(a, lan=True, interfaces=["nosuch0"])._lan_factory()
        with pytest.raises(PeerError, match="not an address of this machine"):
            Peer(a, lan=True, interfaces=["203.0.113.77"])._lan_factory()


async def test_ipv6_loopback(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    a, b = replicas(tmp_path, "a", "b")
    with a, b:
        space = share(a, b)
        fill(a, "a", 10, space)
        async with listener_at(a, "::1") as pa, \
                Peer(b, interfaces=["::1"], static_peers=[("::1", pa.lan_transport.port)], config=FAST) as pb:
            await converged([a, b], space, 10)
            assert pb.devices[a.device_id].address.startswith("ws://[::1]:")


class Blackhole:
    """A loopback TCP proxy to ``port`` that can freeze: it keeps accepting and reading, and
    forwards nothing, as a peer that walked out of range (no FIN, no RST, no goodbye)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frozen = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Blackhole:
        self.server = await asyncio.start_server(self._accept, LOOP, 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    @property
    def listening(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(LOOP, self.port)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pump(src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if not self.frozen.is_set():
                    dst.write(data)
                    await dst.drain()
        finally:
            dst.close()


async def test_a_peer_that_vanishes_is_dropped_by_timeout_and_found_again(tmp_path: Path) -> None:
    from crdt_sync.protocol import SessionConfig

    quick = SessionConfig(handshake_timeout=WAIT, resend_interval=0.05, ack_timeout=0.05,
                          ping_interval=0.2, dead_after=1.0)
    a, b = replicas(tmp_path, "a", "b")
    with a, b:
        space = share(a, b)
        fill(a, "a", 5, space)
        async with listener(a) as pa, Blackhole(pa.lan_transport.port) as hole, \
                Peer(b, interfaces=[LOOP], static_peers=[(LOOP, hole.listening)], config=quick) as pb:
            await converged([a, b], space, 5)
            hole.frozen.set()  # out of range: nothing arrives any more, nothing says goodbye
            async with asyncio.timeout(WAIT):
                await pb.wait_disconnected(a.device_id)
            assert not pb.devices[a.device_id].connected
            hole.frozen.clear()  # back in range: the static peer is dialled again
            fill(a, "back", 2, space)
            await converged([a, b], space, 7)
            assert pb.connected == {a.device_id: "lan"}
