"""Two devices on bumble virtual controllers (one in-process LocalLink): they hear each
other's advertisements, one connects through bleak's API (our bumble backend), and their
replicas converge; a link cut mid-transfer reconnects, resumes and converges."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

from bumble.link import LocalLink

from crdt_sync import Replica
from crdt_sync.protocol.session import RELIABLE_LINK
from crdt_sync.transports.ble import BleTransport
from crdt_sync.transports.interface import DiscoveryTransport, LinkReady, PeerEvent, PeerFound, PeerLost
from tests.helpers import share
from tests.sync_helpers import WAIT, fill


async def converged(a: Replica, b: Replica, space: str) -> None:
    """Wait on the replicas' change events until both hold the same non-empty vector."""
    changed = asyncio.Event()
    stops = [r.observe(lambda _c: changed.set()) for r in (a, b)]
    try:
        async with asyncio.timeout(3 * WAIT):
            while not (a.version_vector(space) == b.version_vector(space) and a.version_vector(space)):
                changed.clear()
                await changed.wait()
    finally:
        for stop in stops:
            stop()


async def collect(transport: BleTransport, into: list[PeerEvent], ready: asyncio.Event) -> None:
    async for event in transport.events():
        into.append(event)
        if isinstance(event, LinkReady):
            ready.set()


async def test_two_devices_discover_connect_and_converge(tmp_path: Path) -> None:
    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b:
        space = share(a, b)
        fill(a, "a", 30, space)
        fill(b, "b", 20, space)
        link = LocalLink()
        events_a: list[PeerEvent] = []
        events_b: list[PeerEvent] = []
        ready_a, ready_b = asyncio.Event(), asyncio.Event()
        async with asyncio.timeout(4 * WAIT), BleTransport(a, link) as ta, BleTransport(b, link) as tb, \
                asyncio.TaskGroup() as tg:
            tg.create_task(collect(ta, events_a, ready_a))
            tg.create_task(collect(tb, events_b, ready_b))
            await converged(a, b, space)
            await ready_a.wait()
            await ready_b.wait()
            assert a.space(space).get("equipment", "b-3") == {"n": 3, "by": "b"}
            await ta.close()
            await tb.close()
        links = [e for e in events_a + events_b if isinstance(e, LinkReady)]
        assert sorted(e.outbound for e in links) == [False, True]  # one link: one dialled, one served
        assert any(isinstance(e, PeerFound) for e in events_a + events_b)
        assert any(isinstance(e, PeerLost) for e in events_a + events_b)
        assert isinstance(ta, DiscoveryTransport) and ta.name == "ble"
        for transport in (ta, tb):  # the device id is in no advertisement
            assert a.device_id.encode() not in transport.hint and len(transport.hint) == 4


async def test_a_link_cut_mid_transfer_reconnects_resumes_and_converges(tmp_path: Path) -> None:
    total = 300
    config = dataclasses.replace(RELIABLE_LINK, batch_count=8)  # many batches: a cut falls mid-way
    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b:
        space = share(a, b)
        fill(a, "a", total, space)
        fill(b, "b", 5, space)
        link = LocalLink()
        events: list[PeerEvent] = []
        ready = asyncio.Event()
        cut_at: list[int] = []
        async with asyncio.timeout(6 * WAIT), BleTransport(a, link, config=config) as ta, \
                BleTransport(b, link, config=config) as tb, asyncio.TaskGroup() as tg:
            tg.create_task(collect(ta, events, ready))
            tg.create_task(collect(tb, [], asyncio.Event()))
            assert tb.device is not None

            def cut(_change: object) -> None:
                held = b.version_vector(space).get(a.device_id, 0)
                if not cut_at and held >= total // 5:
                    cut_at.append(held)
                    for connection in list(tb.device.connections.values()):  # the radio link drops
                        tg.create_task(connection.disconnect())

            unsubscribe = b.observe(cut)
            try:
                await converged(a, b, space)
            finally:
                unsubscribe()
            await ta.close()
            await tb.close()
        assert cut_at and cut_at[0] < total, "the cut did not fall mid-transfer"
        assert len([e for e in events if isinstance(e, LinkReady)]) >= 2, "no reconnect"
        lost = [e for e in events if isinstance(e, PeerLost)]
        assert lost and "disconnected" in lost[0].reason
        assert len(b.space(space).list()) == total + 5
        assert a.rejections() == [] and b.rejections() == []


async def test_two_bumble_devices_sync_over_an_l2cap_channel(tmp_path: Path) -> None:
    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b:
        space = share(a, b)
        fill(a, "a", 30, space)
        fill(b, "b", 20, space)
        link = LocalLink()
        events: list[PeerEvent] = []
        ready = asyncio.Event()
        async with asyncio.timeout(4 * WAIT), BleTransport(a, link, l2cap=True) as ta, \
                BleTransport(b, link, l2cap=True) as tb, asyncio.TaskGroup() as tg:
            tg.create_task(collect(ta, events, ready))
            tg.create_task(collect(tb, events, asyncio.Event()))
            await converged(a, b, space)
            await ta.close()
            await tb.close()
        labels = [e.link.label for e in events if isinstance(e, LinkReady)]
        assert len(labels) == 2 and all("l2cap" in label for label in labels), labels


async def test_three_devices_converge_store_and_forward(tmp_path: Path) -> None:
    """A hub in range of two devices that are out of range of each other in effect (both
    peripheral only, so neither dials the other): the hub connects to both and forwards each
    one's edits to the other. (Dual-role meshes: tests/ble/test_ble_mesh.py.)"""
    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b, \
            Replica(tmp_path / "c", seal_interval=0) as c:
        space = share(a, b, c)
        for replica, prefix in ((a, "a"), (b, "b"), (c, "c")):
            fill(replica, prefix, 10, space)
        link = LocalLink()
        events: list[PeerEvent] = []
        async with asyncio.timeout(6 * WAIT), contextlib.AsyncExitStack() as stack:
            hub = await stack.enter_async_context(BleTransport(a, link, peripheral=False))
            await stack.enter_async_context(BleTransport(b, link, central=False))
            await stack.enter_async_context(BleTransport(c, link, central=False))
            collector = asyncio.get_running_loop().create_task(collect(hub, events, asyncio.Event()))
            await converged(b, c, space)
            await converged(a, b, space)
            await hub.close()
            await collector
        assert len(c.space(space).list()) == 30
        assert c.space(space).get("equipment", "b-9") == {"n": 9, "by": "b"}
        assert len({e.key for e in events if isinstance(e, LinkReady)}) == 2
