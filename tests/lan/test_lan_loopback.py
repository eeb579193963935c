"""Two LAN transports on loopback, by static peer (no multicast on lo): they converge."""

from __future__ import annotations

import asyncio
from pathlib import Path

from crdt_sync import Replica
from crdt_sync.transports.lan import LanTransport
from tests.sync_helpers import SPACE, WAIT, fill


def share_space(a: Replica, b: Replica) -> str:
    """The space both replicas sync (issue 12 switches this to a shared space)."""
    return SPACE


async def converged(a: Replica, b: Replica, space: str) -> None:
    for _ in range(int(WAIT / 0.05)):  # bounded poll of two version vectors, not a sleep-and-hope
        a.refresh()
        b.refresh()
        if a.version_vector(space) == b.version_vector(space) and a.version_vector(space):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not converged")


async def test_static_peers_converge(tmp_path: Path) -> None:
    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b:
        space = share_space(a, b)
        fill(a, "a", 20, space)
        fill(b, "b", 20, space)
        async with asyncio.timeout(3 * WAIT), LanTransport(a, ["127.0.0.1"], mdns=False) as la:
            peers = [("127.0.0.1", la.port)]
            async with LanTransport(b, ["127.0.0.1"], mdns=False, static_peers=peers):
                await converged(a, b, space)


async def test_peer_vanishes_mid_transfer_then_converges(tmp_path: Path) -> None:
    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b:
        space = share_space(a, b)
        fill(a, "a", 600, space)
        arrived = asyncio.Event()
        unsubscribe = b.observe(lambda _c: arrived.set())
        try:
            async with asyncio.timeout(3 * WAIT), LanTransport(a, ["127.0.0.1"], mdns=False) as la:
                peers = [("127.0.0.1", la.port)]
                async with LanTransport(b, ["127.0.0.1"], mdns=False, static_peers=peers):
                    for _ in range(int(WAIT / 0.01)):  # bounded: the first batch landed
                        if arrived.is_set() or b.version_vector(space):
                            break
                        await asyncio.sleep(0.01)
                assert sum(b.version_vector(space).values()) < 600
                fill(b, "b", 5, space)
                async with LanTransport(b, ["127.0.0.1"], mdns=False, static_peers=peers):
                    await converged(a, b, space)
                assert sum(a.version_vector(space).values()) == 605
        finally:
            unsubscribe()
