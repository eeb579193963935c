"""One host of the daemon namespace tests: a :class:`~crdt_sync.transports.daemon.Peer` on a
prepared data directory. It prints ``ready PORT`` once its transports run, ``converged`` once
it holds ``--want`` envelopes of ``--space`` (waiting on change events, bounded by
``--limit``), then keeps serving until its stdin closes, and exits 0 (1 on a timeout).
``--fill N`` makes N edits once ready; ``--relay-server PORT`` also runs a relay here;
``--progress N`` prints ``progress`` once it holds N envelopes; ``--found N`` waits, once
converged, until discovery reported N candidates before it prints its ``table``;
``--synced-peers N`` waits, once converged, until sessions with N peers counted the space
synced, then prints ``held`` and every envelope of the space it holds (a non-member: 0)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from crdt_sync import Replica
from crdt_sync.protocol import Event, SpaceSynced
from crdt_sync.transports.daemon import Peer
from crdt_sync.transports.interface import PeerEvent, PeerFound
from tests.helpers import SHARED
from tests.sync_helpers import FAST, fill


@contextlib.asynccontextmanager
async def maybe_relay(data: Path, host: str, port: int | None) -> AsyncIterator[None]:
    if port is None:
        yield
        return
    from crdt_sync.relay.config import RelayConfig
    from crdt_sync.relay.server import RelayServer

    server = RelayServer(RelayConfig(data=data, host=host, port=port))
    await server.start()
    try:
        yield
    finally:
        await server.stop(grace=5.0)


async def stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(1024):
        pass


def total(replica: Replica, space: str) -> int:
    """Envelopes of ``space`` that ``replica`` holds beyond the :func:`tests.helpers.share`
    set-up (the admin's genesis, label and grants), so that counts are of edits."""
    return sum(replica.version_vector(space).values()) - SHARED


async def main(args: argparse.Namespace) -> int:
    peers = [(h, int(p)) for h, _, p in (s.rpartition(":") for s in args.peer)]
    with Replica(Path(args.data), seal_interval=0) as replica:
        changed = asyncio.Event()
        unsubscribe = replica.observe(lambda _c: changed.set())
        found = [0]
        enough = asyncio.Event()
        synced = [0]
        synced_enough = asyncio.Event()

        def on_session_event(_transport: str, event: Event) -> None:
            if isinstance(event, SpaceSynced) and event.space == args.space:
                synced[0] += 1
                if args.synced_peers is not None and synced[0] >= args.synced_peers:
                    synced_enough.set()

        def on_peer_event(event: PeerEvent) -> None:
            if isinstance(event, PeerFound):
                found[0] += 1
                if args.found is not None and found[0] >= args.found:
                    enough.set()
        try:
            host = args.interface[0] if args.interface else "127.0.0.1"
            async with maybe_relay(Path(args.data + "-relay"), host, args.relay_server), \
                    Peer(replica, lan=args.lan, relay=args.relay, interfaces=args.interface,
                         static_peers=peers, lan_port=args.port, config=FAST,
                         on_peer_event=on_peer_event, on_session_event=on_session_event) as peer:
                lan = peer.lan_transport
                print("ready", lan.port if lan is not None else 0, flush=True)
                if args.fill:
                    fill(replica, args.prefix, args.fill, args.space)
                progress = args.progress
                try:
                    async with asyncio.timeout(args.limit):
                        while (held := total(replica, args.space)) < args.want:
                            if progress is not None and held >= progress:
                                print("progress", held, flush=True)
                                progress = None
                            changed.clear()
                            await changed.wait()
                except TimeoutError:
                    lan = peer.lan_transport
                    print("timeout", total(replica, args.space), peer.connected, flush=True)
                    if lan is not None:
                        print("discovery", {"candidates": len(lan.table), "evicted": lan.table.evicted,
                                            "dialling": lan.dialling, "pending": lan.pending,
                                            "refusals": list(lan.table.refusals)[-3:]}, flush=True)
                    return 1
                print("converged", replica.version_vector(args.space), flush=True)
                if args.found is not None:
                    async with asyncio.timeout(args.limit):
                        await enough.wait()
                if args.synced_peers is not None:
                    async with asyncio.timeout(args.limit):
                        await synced_enough.wait()
                    print("held", sum(replica.version_vector(args.space).values()), flush=True)
                if lan is not None:  # what discovery cost: bounded whatever was announced
                    print("table", json.dumps({"candidates": len(lan.table), "evicted": lan.table.evicted,
                                               "refused": len(lan.table.refusals),
                                               "dialling": lan.dialling}), flush=True)
                async with asyncio.timeout(args.limit):
                    await stdin_closed()
            return 0
        finally:
            unsubscribe()


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--space", required=True)
    p.add_argument("--want", type=int, required=True)
    p.add_argument("--limit", type=float, default=30.0)
    p.add_argument("--lan", action="store_true")
    p.add_argument("--interface", action="append", default=[])
    p.add_argument("--peer", action="append", default=[])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--relay", action="append", default=[])
    p.add_argument("--relay-server", type=int)
    p.add_argument("--fill", type=int, default=0)
    p.add_argument("--prefix", default="live")
    p.add_argument("--progress", type=int)
    p.add_argument("--found", type=int)
    p.add_argument("--synced-peers", type=int)
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
