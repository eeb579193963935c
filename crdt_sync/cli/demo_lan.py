"""A LAN meeting for the day-in-the-field demo: two devices in the same truck, on one Wi-Fi
with no internet, meet over the LAN transport and converge.

:func:`lan_meeting` runs each device's daemon (``Peer``, what ``crdt-sync peer --peer
HOST:PORT`` runs) on loopback: the first device listens on an ephemeral port, the others dial
it as a static peer (mDNS discovery is what ``--lan`` adds; it is shown by the netns tests,
not here, so that the demo sends no multicast). The sessions are the same encrypted,
mutually authenticated ones as over the relay.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..replica import Replica
from .demo_meet import MEETING_LIMIT, Meeting, meet

if TYPE_CHECKING:
    from ..transports.daemon import Peer

#: Where the demo's LAN runs: loopback only.
LOOPBACK = "127.0.0.1"


async def lan_meeting(devices: Sequence[Replica], space: str, say: Callable[[str], None] = print,
                      names: Sequence[str] | None = None, limit: float = MEETING_LIMIT) -> Meeting:
    """Two or more devices that hold ``space`` meet over the LAN transport on loopback and sync
    until they hold the same envelopes of it (or ``limit`` seconds pass)."""
    from ..transports.daemon import Peer
    from ..transports.interface import LinkServer, ManagedTransport
    from ..transports.lan import LanTransport

    if len(devices) < 2:
        raise ValueError("a LAN meeting is of 2 devices or more")
    labels = list(names) if names is not None else [d.device_id[:12] for d in devices]
    first = devices[0]

    def listen(serve: LinkServer) -> ManagedTransport:
        return LanTransport(first, [LOOPBACK], mdns=False, serve=serve)

    async def open_peers(stack: contextlib.AsyncExitStack) -> tuple[list[Peer], list[str]]:
        host = await stack.enter_async_context(
            Peer(first, transports=[listen], spaces=[space], status_file=False))
        transport = host.lan_transport
        assert transport is not None
        where = f"{LOOPBACK}:{transport.port}"
        say(f"no internet in the truck, one Wi-Fi: {labels[0]} listens on {where}, "
            f"{', '.join(labels[1:])} dial{'s' if len(labels) == 2 else ''} it")
        others = [await stack.enter_async_context(
            Peer(d, interfaces=[LOOPBACK], static_peers=[(LOOPBACK, transport.port)], spaces=[space],
                 status_file=False)) for d in devices[1:]]
        return [host, *others], [where] * len(devices)

    return await meet(devices, space, open_peers, labels, say, "the LAN", limit)
