"""The discovery transports' harnesses: two daemons (:class:`~crdt_sync.transports.daemon.Peer`)
meeting through each transport.

* ``memory``: two :class:`~crdt_sync.transports.memory.MemoryPeers` on one simulated segment;
* ``lan``: two :class:`~crdt_sync.transports.lan.LanTransport` on loopback, one dialling the
  other as a static peer (loopback carries no multicast; the namespace tests cover mDNS);
``options`` go to the first daemon (``a``'s).

* ``relay``: two :class:`~crdt_sync.transports.relay.RelayTransport` to one running relay.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crdt_sync import Replica
from crdt_sync.transports.daemon import Peer
from crdt_sync.transports.interface import LinkServer, ManagedTransport
from crdt_sync.transports.memory import MemoryPeers, MemorySegment
from tests.relay_helpers import running_relay
from tests.sync_helpers import FAST

Pair = tuple[Peer, Peer]


@dataclass(frozen=True)
class DiscoverySpec:
    name: str
    #: whether the two devices' sessions are with each other (False: both with a hub)
    direct: bool
    open: Callable[..., AbstractAsyncContextManager[Pair]]


@asynccontextmanager
async def memory_pair(_data: Path, a: Replica, b: Replica, **options: Any) -> AsyncIterator[Pair]:
    segment = MemorySegment(seed=1)

    def on_segment(key: str) -> Callable[[LinkServer], ManagedTransport]:
        return lambda serve: MemoryPeers(segment, key, serve)
    async with Peer(a, transports=[on_segment("a")], config=FAST, **options) as pa, \
            Peer(b, transports=[on_segment("b")], config=FAST) as pb:
        yield pa, pb


@asynccontextmanager
async def lan_pair(_data: Path, a: Replica, b: Replica, **options: Any) -> AsyncIterator[Pair]:
    async with _lan_listener(a, **options) as pa:
        port = pa.lan_transport.port
        async with Peer(b, interfaces=["127.0.0.1"], static_peers=[("127.0.0.1", port)],
                        config=FAST) as pb:
            yield pa, pb


def _lan_listener(replica: Replica, **options: Any) -> Peer:
    """A LAN daemon on loopback that only listens (static peers, none of its own)."""
    from crdt_sync.transports.lan import LanTransport

    def build(serve: LinkServer) -> ManagedTransport:
        return LanTransport(replica, ["127.0.0.1"], mdns=False, config=FAST, serve=serve)
    return Peer(replica, transports=[build], config=FAST, **options)


@asynccontextmanager
async def relay_pair(data: Path, a: Replica, b: Replica, **options: Any) -> AsyncIterator[Pair]:
    async with running_relay(data / "relay") as relay, \
            Peer(a, relay=[relay.url], config=FAST, **options) as pa, \
            Peer(b, relay=[relay.url], config=FAST) as pb:
        yield pa, pb


DISCOVERY: tuple[DiscoverySpec, ...] = (
    DiscoverySpec("memory", True, memory_pair),
    DiscoverySpec("lan", True, lan_pair),
    DiscoverySpec("relay", False, relay_pair),
)
