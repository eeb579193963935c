"""The LAN transport's harness: its listener's WebSocket links, point to point.

A :class:`HandoffLan` is a real :class:`~crdt_sync.transports.lan.LanTransport` on loopback
(mDNS off: loopback carries no multicast) whose per-link runner hands each accepted link to the
test instead of running a session on it, as the relay harness does with the relay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from crdt_sync import Replica
from crdt_sync.transports.lan import LanTransport
from crdt_sync.transports.websocket import WebSocketLink
from tests.conformance.relay import Accepted, WebSocketHarness


class HandoffLan(LanTransport):
    """Overrides ``LanTransport._run(link, key, address, outbound=...)``: follow it if it changes."""

    def __init__(self, replica: Replica) -> None:
        super().__init__(replica, ["127.0.0.1"], mdns=False)
        self.accepted: Accepted = asyncio.Queue()

    async def _run(self, link: WebSocketLink, key: str, address: str, *, outbound: bool) -> None:
        released = asyncio.Event()
        await self.accepted.put((link, released))
        await released.wait()


class LanHarness(WebSocketHarness):
    """The relay harness's links, to the LAN listener instead."""

    name = "lan-websocket"


@asynccontextmanager
async def lan_harness(data: Path) -> AsyncIterator[LanHarness]:
    with Replica(data / "lan-host", seal_interval=0) as host:
        async with HandoffLan(host) as lan:
            yield LanHarness(f"ws://127.0.0.1:{lan.port}", lan.accepted)
