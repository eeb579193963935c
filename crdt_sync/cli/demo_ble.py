"""A BLE meeting for the day-in-the-field demo: two devices in a plant room with no network
meet over Bluetooth LE and converge.

:func:`ble_meeting` starts a virtual radio (bumble controllers on one virtual link, each
served as HCI over loopback TCP: :class:`~crdt_sync.transports.ble.virtual.VirtualRadio`),
runs each device's daemon on its own controller (``Peer(ble=SPEC)``, what ``crdt-sync peer
--ble --ble-transport SPEC`` runs), waits until the devices hold the same envelopes of the
space, and says what happened through ``say``. No hardware, only loopback traffic.

``python -m crdt_sync.cli.demo_ble [--json]`` plays it alone: two fresh devices in a
temporary directory, one space shared by the first, offline edits on both, then the meeting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from ..replica import Replica
from .demo_meet import MEETING_LIMIT, Meeting, meet


async def ble_meeting(devices: Sequence[Replica], space: str, say: Callable[[str], None] = print,
                      names: Sequence[str] | None = None, limit: float = MEETING_LIMIT) -> Meeting:
    """Two (or more, up to 4) devices that hold ``space`` meet over a virtual BLE radio and
    sync until they hold the same envelopes of it (or ``limit`` seconds pass)."""
    from crdt_sync.transports.ble.virtual import VirtualRadio
    from crdt_sync.transports.daemon import Peer

    if not 2 <= len(devices) <= 4:
        raise ValueError("a BLE meeting is of 2 to 4 devices")
    labels = list(names) if names is not None else [d.device_id[:12] for d in devices]

    async def open_peers(stack: contextlib.AsyncExitStack) -> tuple[list[Peer], list[str]]:
        radio = await stack.enter_async_context(VirtualRadio(len(devices)))
        specs = list(radio.specs)
        say(f"no network in the plant room: {', '.join(labels)} turn on Bluetooth LE "
            f"(virtual radio, {len(devices)} controllers on loopback)")
        peers = [await stack.enter_async_context(
            Peer(d, ble=spec, spaces=[space], status_file=False))  # both roles each
            for d, spec in zip(devices, specs, strict=True)]
        return peers, specs

    return await meet(devices, space, open_peers, labels, say, "BLE", limit)


def _play(root: Path, say: Callable[[str], None]) -> Meeting:
    with Replica(root / "ana", seal_interval=0) as ana, Replica(root / "ben", seal_interval=0) as ben:
        space = ana.space("plant-room").id
        ana.grant(space, [ben.device_id], "write")
        ben.import_bundle(ana.export_bundle(space))
        for i in range(20):
            ana.space(space).put("equipment", f"pump-{i}", {"status": "ok", "reading": i})
            ana.seal()
        for i in range(5):
            ben.space(space).put("inspections", f"I-{i}", {"result": "pass", "by": "ben"})
            ben.seal()
        say("ana logged 20 pumps and ben 5 inspections, offline, underground")
        return asyncio.run(ble_meeting([ana, ben], space, say, names=["ana", "ben"]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crdt_sync.cli.demo_ble",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print what happened as JSON")
    args = parser.parse_args(argv)
    steps: list[str] = []
    say = steps.append if args.json else print
    with tempfile.TemporaryDirectory(prefix="crdt-sync-ble-") as tmp:
        meeting = _play(Path(tmp), say)
    if args.json:
        sys.stdout.write(json.dumps(asdict(meeting) | {"steps": steps}) + "\n")
    return 0 if meeting.converged else 1


if __name__ == "__main__":
    raise SystemExit(main())
