"""What the demo's direct meetings share: devices that hold one space run their daemons
(:class:`~crdt_sync.transports.daemon.Peer`) over one transport until they hold the same
envelopes of it, or a time limit passes. :mod:`.demo_lan` (loopback LAN) and :mod:`.demo_ble`
(a virtual BLE radio) open the daemons; :func:`meet` waits and reports."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..replica import Replica

if TYPE_CHECKING:  # (the transports load when a meeting starts, not with the CLI)
    from ..transports.daemon import Peer

#: The longest a meeting may take before it is given up (the demo then says so).
MEETING_LIMIT = 60.0

#: Opens one daemon per device (in the device order) inside the exit stack, and returns them
#: with a name for each device's transport address (a radio's HCI spec, a LAN address).
OpenPeers = Callable[[contextlib.AsyncExitStack], Awaitable[tuple[list["Peer"], list[str]]]]


@dataclass
class Meeting:
    """What a meeting did: ``radio`` names each device's transport address (the BLE
    controller's HCI spec, or the LAN address it listens on)."""

    radio: list[str]
    devices: list[str]
    envelopes_before: list[int]
    envelopes_after: list[int]
    sessions: int
    converged: bool
    seconds: float


def held(replica: Replica, space: str) -> int:
    """How many envelopes of ``space`` the device holds."""
    return sum(replica.version_vector(space).values())


def same(devices: Sequence[Replica], space: str) -> bool:
    """Whether the devices hold the same envelopes of ``space``."""
    first = devices[0].version_vector(space)
    return all(d.version_vector(space) == first for d in devices[1:])


async def meet(devices: Sequence[Replica], space: str, open_peers: OpenPeers, labels: Sequence[str],
               say: Callable[[str], None], how: str, limit: float = MEETING_LIMIT) -> Meeting:
    """Run the daemons ``open_peers`` opens until the devices hold the same envelopes of
    ``space`` (woken by their observers, no polling), at most ``limit`` seconds."""
    before = [held(d, space) for d in devices]
    changed = asyncio.Event()
    stops = [d.observe(lambda _c: changed.set()) for d in devices]
    started = time.monotonic()
    converged = False
    sessions = 0
    addresses: list[str] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(limit):
                peers, addresses = await open_peers(stack)
                while not same(devices, space):
                    changed.clear()
                    await changed.wait()
                converged = True
            sessions = sum(peer.sessions for peer in peers)
    except TimeoutError:
        say(f"the {how} meeting did not converge within {limit:g} s")
    finally:
        for stop in stops:
            stop()
    after = [held(d, space) for d in devices]
    seconds = round(time.monotonic() - started, 2)
    meeting = Meeting(addresses, list(labels), before, after, sessions, converged, seconds)
    if converged:
        moved = ", ".join(f"{n} {b} -> {a}" for n, b, a in zip(labels, before, after, strict=True))
        say(f"they meet over {how} and converge in {seconds:.2f} s: envelopes held {moved}")
    return meeting
