"""Bad input over a real GATT connection (bumble virtual controllers, the rogue central going
through bleak's API): every bad chunk refused with a reason, no crash, nothing lost; a peer
that grants no credit, or connects and idles, is dropped; a flood of advertisements costs a
bound. After each, an honest device still syncs with the victim."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bumble.device import Device
from bumble.link import LocalLink

from crdt_sync import Replica
from crdt_sync.transports.ble import (
    RX_UUID,
    SERVICE_UUID,
    TX_UUID,
    BleLink,
    BleTransport,
    BumbleClient,
    BumbleScanner,
    LinkTimers,
    advertising_data,
    parse_ad,
    split,
)
from crdt_sync.transports.ble._framing import open_chunk
from crdt_sync.transports.ble._gatt import COMPANY_ID, AdError
from crdt_sync.transports.ble._peers import MAX_CANDIDATES
from crdt_sync.transports.ble._radio import open_device
from crdt_sync.transports.interface import LinkReady, PeerEvent, PeerLost
from tests.ble.test_ble_sync import converged
from tests.helpers import share
from tests.sync_helpers import WAIT, fill

QUICK = LinkTimers(stall=0.5, write=2.0, flush=0.5)


class Watch:
    """A transport's events, with an asyncio.Event per kind of event."""

    def __init__(self) -> None:
        self.events: list[PeerEvent] = []
        self.ready, self.lost = asyncio.Event(), asyncio.Event()

    async def run(self, transport: BleTransport) -> None:
        async for event in transport.events():
            self.events.append(event)
            (self.ready if isinstance(event, LinkReady) else self.lost if isinstance(event, PeerLost)
             else asyncio.Event()).set()

    def links(self) -> list[BleLink]:
        return [e.link for e in self.events if isinstance(e, LinkReady) and isinstance(e.link, BleLink)]


@asynccontextmanager
async def rogue(link: LocalLink) -> AsyncIterator[tuple[BleakClient, list[bytes], asyncio.Event]]:
    """A central that finds the victim through bleak and connects, subscribing to nothing yet."""
    async with open_device(link, "rogue") as device:
        await device.power_on()
        found: asyncio.Future[BLEDevice] = asyncio.get_running_loop().create_future()

        def seen(dev: BLEDevice, _ad: AdvertisementData) -> None:
            if not found.done():
                found.set_result(dev)

        async with asyncio.timeout(WAIT):
            async with BleakScanner(seen, [SERVICE_UUID], backend=BumbleScanner, bumble_device=device):
                target = await found
        gone = asyncio.Event()
        client = BleakClient(target, lambda _c: gone.set(), backend=BumbleClient, bumble_device=device)
        await client.connect()
        notified: list[bytes] = []
        try:
            yield client, notified, gone
        finally:
            await client.disconnect()


async def honest_sync(victim: Replica, tmp_path: Path, link: LocalLink) -> None:
    """A new honest device syncs with the victim over the same radio."""
    with Replica(tmp_path / "honest", seal_interval=0) as honest:
        space = share(victim, honest)
        fill(honest, "h", 3, space)
        async with asyncio.timeout(3 * WAIT), BleTransport(honest, link, peripheral=False):
            await converged(victim, honest, space)


@pytest.fixture
def victim(tmp_path: Path) -> AsyncIterator[Replica]:
    with Replica(tmp_path / "victim", seal_interval=0) as replica:
        fill(replica, "v", 3, share(replica))
        yield replica


async def test_bad_chunks_are_refused_with_a_reason_and_the_victim_still_syncs(
        victim: Replica, tmp_path: Path) -> None:
    link, watch = LocalLink(), Watch()
    async with BleTransport(victim, link, central=False, timers=QUICK) as transport, \
            asyncio.TaskGroup() as tg:
        tg.create_task(watch.run(transport))
        async with rogue(link) as (client, notified, _gone), asyncio.timeout(WAIT):
            await client.start_notify(TX_UUID, lambda _c, data: notified.append(bytes(data)))
            x, y = split(b"x" * 100, 40), split(b"y" * 100, 40, seq=1)  # three chunks each
            bad = [open_chunk(32, 512), x[0],
                   x[0],  # a duplicate
                   y[0],  # a new frame while one is incomplete
                   split(b"w" * 100, 40, seq=5)[0],  # out of order (seq 5, expected 2)
                   bytes([0x77, 1, 2]),  # an unknown type
                   b"\x30\x01\x06" + (2**24).to_bytes(4, "big") + b"z",  # longer than any frame
                   split(b"\x00", 512, seq=7)[0]]  # a whole frame: not CBOR, the session refuses it
            for chunk in bad:
                await client.write_gatt_char(RX_UUID, chunk, response=False)
            await watch.lost.wait()
        await honest_sync(victim, tmp_path, link)
        await transport.close()
    victim_link = watch.links()[0]
    reasons = list(victim_link.channel.refusals)
    assert any("out of order" in r for r in reasons), reasons
    assert any("duplicate" in r for r in reasons), reasons
    assert any("incomplete" in r for r in reasons), reasons
    assert any("unknown chunk type 0x77" in r for r in reasons), reasons
    assert any("exceeds the limit" in r for r in reasons), reasons
    assert victim.rejections() == []


async def test_a_write_larger_than_the_mtu_delivers_nothing(victim: Replica, tmp_path: Path) -> None:
    link, watch = LocalLink(), Watch()
    async with BleTransport(victim, link, central=False, timers=QUICK) as transport, \
            asyncio.TaskGroup() as tg:
        tg.create_task(watch.run(transport))
        async with rogue(link) as (client, notified, _gone), asyncio.timeout(WAIT):
            await client.start_notify(TX_UUID, lambda _c, data: notified.append(bytes(data)))
            await client.write_gatt_char(RX_UUID, open_chunk(32, 512), response=False)
            await watch.ready.wait()
            (victim_link,) = watch.links()
            with pytest.raises(Exception):  # noqa: B017 - bumble refuses it (an ATT error) ...
                await client.write_gatt_char(RX_UUID, bytes(600), response=True)
            await client.write_gatt_char(RX_UUID, bytes(600), response=False)  # ... or drops it
            await client.write_gatt_char(RX_UUID, split(b"\x00", 512)[0], response=False)
            await watch.lost.wait()
        await honest_sync(victim, tmp_path, link)
        await transport.close()
    assert victim_link.channel.chunks_in <= 3  # OPEN, the garbage frame, at most the long one refused


async def test_a_peer_that_never_grants_credit_is_dropped(victim: Replica, tmp_path: Path) -> None:
    link, watch = LocalLink(), Watch()
    async with BleTransport(victim, link, central=False, timers=QUICK) as transport, \
            asyncio.TaskGroup() as tg:
        tg.create_task(watch.run(transport))
        async with rogue(link) as (client, notified, gone), asyncio.timeout(WAIT):
            await client.start_notify(TX_UUID, lambda _c, data: notified.append(bytes(data)))
            # One chunk of credit, 20-byte chunks: the victim's HELLO needs several.
            await client.write_gatt_char(RX_UUID, open_chunk(1, 20), response=False)
            await watch.lost.wait()
            await gone.wait()
        await honest_sync(victim, tmp_path, link)
        await transport.close()
    lost = [e for e in watch.events if isinstance(e, PeerLost)]
    assert "granted no credit" in lost[0].reason
    assert len(notified) == 2  # its OPEN and the one chunk it had credit for


async def test_a_peer_that_connects_and_idles_is_dropped(victim: Replica, tmp_path: Path) -> None:
    link = LocalLink()
    async with BleTransport(victim, link, central=False, timers=QUICK) as transport:
        async with rogue(link) as (_client, _notified, gone), asyncio.timeout(WAIT):
            await gone.wait()  # it never subscribes: the victim hangs up
        assert transport.server is not None and transport.server.idle_dropped == 1
        await honest_sync(victim, tmp_path, link)


async def test_a_flood_of_advertisements_costs_a_bound(victim: Replica) -> None:
    rng = random.Random(5)
    async with BleTransport(victim, LocalLink(), peripheral=True, hint_source=lambda n: b"\xff" * n) as t:
        for i in range(10 * MAX_CANDIDATES):
            address = ":".join(f"{rng.randrange(256):02X}" for _ in range(6))
            hint = bytes([0xEE]) + rng.randbytes(3)  # larger hints would be ours to dial: none is
            ad = parse_ad(advertising_data(hint))
            data = AdvertisementData(None, dict(ad.manufacturer_data), {}, list(ad.service_uuids), None,
                                     -60, ())
            t._on_seen(BLEDevice(address, None, None), data)
            if i % 7 == 0:  # and some that claim our service without a valid hint
                t._on_seen(BLEDevice(address, None, None),
                           data._replace(manufacturer_data={COMPANY_ID: b"\x09"}))
        assert len(t.table) == MAX_CANDIDATES and t.table.evicted == 9 * MAX_CANDIDATES
        assert len(t.table.refusals) == t.table.refusals.maxlen
        assert t.dropped_events > 0  # the event queue is bounded too
        assert not t._dialling


@pytest.mark.parametrize("data, reason", [
    (bytes([5, 0xFF, 1]), "runs past the end"),
    (bytes([3, 0x07, 1, 2]), "multiple of 16"),
    (bytes([2, 0x03, 1]), "odd length"),
    (bytes([2, 0xFF, 1]), "without a company id"),
    (bytes(80), "at most 62"),
])
def test_malformed_advertising_data_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(AdError, match=reason):
        parse_ad(data)


def test_our_advertisement_round_trips_and_names_no_device() -> None:
    ad = parse_ad(advertising_data(b"\x01\x02\x03\x04"))
    assert ad.hint == b"\x01\x02\x03\x04" and SERVICE_UUID in ad.service_uuids
    assert len(advertising_data(b"\x01\x02\x03\x04")) <= 31


async def test_a_bumble_device_can_be_opened_without_services() -> None:
    async with open_device(LocalLink()) as device:
        assert isinstance(device, Device)
