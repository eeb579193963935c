"""The discovery conformance cases, run on every ``DiscoveryTransport`` (memory, LAN, relay):
two daemons meet through the transport, report the events, keep one session per device,
converge, carry live edits, and stop cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from crdt_sync import Replica
from crdt_sync.transports.daemon import Peer, read_status
from crdt_sync.transports.interface import DiscoveryTransport, LinkReady, PeerEvent, PeerFound, PeerLost
from tests.conformance.discovery import DISCOVERY, DiscoverySpec
from tests.daemon_helpers import converged, total
from tests.helpers import share
from tests.sync_helpers import WAIT, fill


@pytest.fixture(params=DISCOVERY, ids=[spec.name for spec in DISCOVERY])
def spec(request: pytest.FixtureRequest) -> DiscoverySpec:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[Replica, Replica, str]]:
    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b:
        yield a, b, share(a, b, name="site-42")


async def test_two_daemons_converge_and_carry_live_edits(spec: DiscoverySpec, tmp_path: Path,
                                                         replicas: tuple[Replica, Replica, str]) -> None:
    a, b, space = replicas
    fill(a, "a", 30, space)
    fill(b, "b", 20, space)
    base = total(a, space)
    async with spec.open(tmp_path, a, b):
        await converged([a, b], space, base + 20)
        fill(a, "live", 3, space)  # live mode: pushed as it is sealed, no new session
        await converged([a, b], space, base + 23)


async def test_events_found_ready_lost_in_order(spec: DiscoverySpec, tmp_path: Path,
                                                replicas: tuple[Replica, Replica, str]) -> None:
    a, b, _space = replicas
    seen: list[PeerEvent] = []
    lost = asyncio.Event()

    def on_event(event: PeerEvent) -> None:
        seen.append(event)
        if isinstance(event, PeerLost):
            lost.set()
    async with spec.open(tmp_path, a, b, on_peer_event=on_event) as (pa, pb):
        async with asyncio.timeout(WAIT):
            await pa.wait_connected(1)
        assert isinstance(pa.transports[0], DiscoveryTransport)
        if spec.direct:  # the peer leaves: its link ends, a PeerLost follows
            await pb.close()
            await asyncio.wait_for(lost.wait(), WAIT)
    assert all(e.transport == spec.name for e in seen)
    ready = [i for i, e in enumerate(seen) if isinstance(e, LinkReady)]
    assert ready, seen
    for i in ready:
        event = seen[i]
        assert isinstance(event, LinkReady)
        if event.outbound:  # what this side dialled, discovery found first
            assert any(isinstance(e, PeerFound) and e.key == event.key for e in seen[:i]), seen
    assert isinstance(seen[-1], PeerLost), seen  # closing ends every link


async def test_daemon_records_the_device_once(spec: DiscoverySpec, tmp_path: Path,
                                              replicas: tuple[Replica, Replica, str]) -> None:
    a, b, space = replicas
    fill(a, "a", 5, space)
    async with spec.open(tmp_path, a, b) as (pa, pb):
        async with asyncio.timeout(WAIT):
            await pa.wait_connected(1)
            await pb.wait_connected(1)
        await converged([a, b], space, total(a, space))
        peer_of_a = b.device_id if spec.direct else next(iter(pa.connected))
        assert list(pa.connected) == [peer_of_a]
        assert pa.connected[peer_of_a] == spec.name
        status = pa.status()
        assert status["devices"][peer_of_a]["transport"] == spec.name
        assert status["devices"][peer_of_a]["connected"]
        assert any(c["transport"] == spec.name for c in status["candidates"])
    written = read_status(a.path)
    assert written is not None and not written["running"]
    assert not written["devices"][peer_of_a]["connected"]


async def test_close_is_idempotent_and_ends_events(spec: DiscoverySpec, tmp_path: Path,
                                                   replicas: tuple[Replica, Replica, str]) -> None:
    a, b, _space = replicas
    async with spec.open(tmp_path, a, b) as (pa, pb):
        async with asyncio.timeout(WAIT):
            await pa.wait_connected(1)
        transport = pb.transports[0]
        await pb.close()
        await pb.close()
        assert not pb.connected
        async with asyncio.timeout(WAIT):
            events = [e async for e in transport.events()]  # closed: the stream ends at once
        assert all(isinstance(e, PeerFound | PeerLost | LinkReady) for e in events)


def test_a_daemon_needs_a_transport(tmp_path: Path) -> None:
    from crdt_sync.transports.daemon import PeerError

    with Replica(tmp_path / "a") as a, pytest.raises(PeerError, match="no transport"):
        Peer(a)
