"""The BLE transport's harness: GATT links between two bumble virtual controllers on one
in-process LocalLink, the central going through bleak's ``BleakScanner`` and ``BleakClient``
(our bumble backend), the peripheral serving our GATT service on bumble.

A :class:`HandoffBle` is a real :class:`~crdt_sync.transports.ble.BleTransport` whose
per-link runner hands each link to the test instead of running a session on it (as the LAN
harness does with its listener). One device is central only (it dials whatever it hears), the
other peripheral only, so every ``connect`` is one link: the central's end and the
peripheral's end (a GATT link; for ``ble-l2cap``, an LE credit-based channel opened on the
connection bleak made). After a case closes a pair, the central hears the peripheral
advertise again and connects anew (a reconnect, as in the field).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from bumble.link import LocalLink

from crdt_sync import Replica
from crdt_sync.protocol import MAX_FRAME, Event
from crdt_sync.transports.base import FrameLink
from crdt_sync.transports.ble import BleLink, BleTransport
from crdt_sync.transports.interface import LinkReady
from tests.conformance.harness import Faults, PointToPoint
from tests.sync_helpers import WAIT

Handed = asyncio.Queue[tuple[BleLink, asyncio.Event]]


class HandoffBle(BleTransport):
    """Overrides ``BleTransport._session(ready, stop, on_event)``: follow it if it changes.

    ``_run`` around it still keeps the books, so the central does not dial a peripheral it is
    linked to (it did when ``_run`` was the override point: its stuck second connect then held
    the next real reconnect for the whole dial timeout).
    """

    def __init__(self, replica: Replica, link: LocalLink, *, central: bool, l2cap: bool) -> None:
        super().__init__(replica, link, central=central, peripheral=not central, l2cap=l2cap)
        self.handed: Handed = asyncio.Queue()

    async def _session(self, ready: LinkReady, stop: asyncio.Event,
                       on_event: Callable[[Event], None]) -> None:
        assert isinstance(ready.link, BleLink)
        released = asyncio.Event()
        await self.handed.put((ready.link, released))
        await released.wait()


class BleHarness(PointToPoint):
    """(central end, peripheral end) pairs of one GATT connection each."""

    native_faults: frozenset[str] = frozenset()  # the link layer neither loses nor reorders
    max_frame: int | None = MAX_FRAME
    instant_hangup = False  # a close sends what is queued first, then disconnects

    def __init__(self, central: HandoffBle, peripheral: HandoffBle, name: str) -> None:
        self.central, self.peripheral = central, peripheral
        self.name = name

    @asynccontextmanager
    async def connect(self, faults: Faults) -> AsyncIterator[tuple[FrameLink, FrameLink]]:
        assert not faults.active(), "the suite asked for a fault this transport lacks"
        async with asyncio.timeout(WAIT):
            a, release_a = await self.central.handed.get()
            b, release_b = await self.peripheral.handed.get()
        try:
            yield a, b
        finally:
            for link in (a, b):
                await link.close()
            release_a.set()
            release_b.set()


@asynccontextmanager
async def _harness(data: Path, *, l2cap: bool) -> AsyncIterator[BleHarness]:
    link = LocalLink()
    with Replica(data / "ble-central", seal_interval=0) as one, \
            Replica(data / "ble-peripheral", seal_interval=0) as two:
        async with HandoffBle(two, link, central=False, l2cap=l2cap) as peripheral, \
                HandoffBle(one, link, central=True, l2cap=l2cap) as central:
            yield BleHarness(central, peripheral, "ble-l2cap" if l2cap else "ble-gatt")


def ble_harness(data: Path) -> AbstractAsyncContextManager[BleHarness]:
    """GATT: the central through bleak (the path every phone can take)."""
    return _harness(data, l2cap=False)


def ble_l2cap_harness(data: Path) -> AbstractAsyncContextManager[BleHarness]:
    """An LE credit-based L2CAP channel, opened on the bleak-made connection (bumble both ends)."""
    return _harness(data, l2cap=True)
