"""The virtual radio: bumble controllers on one link, each an HCI transport on loopback TCP.
BleTransports given ``tcp-client:`` SPECs (the daemon's ``--ble-transport``) meet through it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from crdt_sync import Replica
from crdt_sync.transports.ble import BleTransport
from crdt_sync.transports.ble.virtual import VirtualRadio
from tests.ble.test_ble_sync import converged
from tests.helpers import share
from tests.sync_helpers import WAIT, fill


async def test_two_devices_meet_over_hci_on_loopback_tcp(tmp_path: Path) -> None:
    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b:
        space = share(a, b)
        fill(a, "a", 10, space)
        fill(b, "b", 10, space)
        async with asyncio.timeout(4 * WAIT), VirtualRadio(2) as radio:
            assert all(spec.startswith("tcp-client:127.0.0.1:") for spec in radio.specs)
            async with BleTransport(a, radio.specs[0]), BleTransport(b, radio.specs[1]):
                await converged(a, b, space)
        assert len(a.space(space).list()) == 20
