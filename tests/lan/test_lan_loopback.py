"""Two LAN transports on loopback, by static peer (no multicast on lo): they converge."""

from __future__ import annotations

import asyncio
from pathlib import Path

from crdt_sync import Replica
from crdt_sync.transports.interface import LinkReady
from crdt_sync.transports.lan import LanTransport
from tests.sync_helpers import SPACE, WAIT, admit, fill


def share_space(a: Replica, b: Replica) -> str:
    """The space both replicas keep and sync (issue 12 switches this to a shared space)."""
    for replica in (a, b):
        admit(replica)
    return SPACE


async def converged(a: Replica, b: Replica, space: str) -> None:
    """Wait, on the replicas' change events, until both hold the same non-empty vector."""
    changed = asyncio.Event()
    stops = [r.observe(lambda _c: changed.set()) for r in (a, b)]
    try:
        async with asyncio.timeout(WAIT):
            while not (a.version_vector(space) == b.version_vector(space) and a.version_vector(space)):
                changed.clear()
                await changed.wait()
    finally:
        for stop in stops:
            stop()


async def test_static_peers_converge(tmp_path: Path) -> None:
    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b:
        space = share_space(a, b)
        fill(a, "a", 20, space)
        fill(b, "b", 20, space)
        async with asyncio.timeout(3 * WAIT), LanTransport(a, ["127.0.0.1"], mdns=False) as la:
            peers = [("127.0.0.1", la.port)]
            async with LanTransport(b, ["127.0.0.1"], mdns=False, static_peers=peers):
                await converged(a, b, space)


async def test_peer_leaves_edits_and_comes_back_then_converges(tmp_path: Path) -> None:
    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b:
        space = share_space(a, b)
        fill(a, "a", 600, space)
        arrived = asyncio.Event()
        unsubscribe = b.observe(lambda _c: arrived.set())
        try:
            async with asyncio.timeout(3 * WAIT), LanTransport(a, ["127.0.0.1"], mdns=False) as la:
                peers = [("127.0.0.1", la.port)]
                async with LanTransport(b, ["127.0.0.1"], mdns=False, static_peers=peers):
                    await asyncio.wait_for(arrived.wait(), WAIT)  # the first batch landed
                assert sum(b.version_vector(space).values()) > 0  # the peer left after the first batch
                fill(b, "b", 5, space)
                async with LanTransport(b, ["127.0.0.1"], mdns=False, static_peers=peers):
                    await converged(a, b, space)
                assert sum(a.version_vector(space).values()) == 605
        finally:
            unsubscribe()


async def test_both_ends_report_the_link_as_an_event(tmp_path: Path) -> None:
    """``events()`` is the DiscoveryTransport stream: each end sees LinkReady for the other."""
    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b:
        share_space(a, b)
        async with asyncio.timeout(3 * WAIT), LanTransport(a, ["127.0.0.1"], mdns=False) as la:
            peers = [("127.0.0.1", la.port)]
            async with LanTransport(b, ["127.0.0.1"], mdns=False, static_peers=peers) as lb:
                for transport, outbound in ((la, False), (lb, True)):
                    async for event in transport.events():
                        if isinstance(event, LinkReady):
                            assert event.outbound is outbound
                            break


async def test_a_peer_a_flood_pushed_out_of_the_dial_queue_is_dialled_later(tmp_path: Path) -> None:
    """Discovery reports a name once. A real peer reported just before a flood of fake
    candidates (pointing at a port that refuses) is evicted from the bounded dial queue; it is
    tried again (``Retries``) and the two converge. Without retries it was never dialled."""
    import socket

    from crdt_sync.protocol import PROTOCOL_VERSION
    from crdt_sync.transports.lan import TxtRecord, new_token
    from crdt_sync.transports.lan._transport import MAX_DIAL_QUEUE

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: a dial here is refused at once
    dead_port = closed.getsockname()[1]
    with closed, Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b:
        space = share_space(a, b)
        fill(b, "b", 5, space)
        async with asyncio.timeout(3 * WAIT), LanTransport(b, ["127.0.0.1"], mdns=False) as lb, \
                LanTransport(a, ["127.0.0.1"], mdns=False, token="0" * 32) as la:
            la.candidate("b._crdtsync._tcp.local.", TxtRecord((PROTOCOL_VERSION,), "f" * 32),
                         ("127.0.0.1",), lb.port)
            for i in range(2 * MAX_DIAL_QUEUE):  # newer than b, all at once: b is evicted
                la.candidate(f"fake{i}._crdtsync._tcp.local.", TxtRecord((PROTOCOL_VERSION,), new_token()),
                             ("127.0.0.1",), dead_port)
            assert la.retrying >= MAX_DIAL_QUEUE  # b among them, due again in a second
            await converged(a, b, space)
