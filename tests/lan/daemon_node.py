"""One host of the daemon namespace tests: a :class:`~crdt_sync.transports.daemon.Peer` on a
prepared data directory. It prints ``ready PORT`` once its transports run, ``converged`` once
it holds ``--want`` envelopes of ``--space`` (waiting on change events, bounded by
``--limit``), then keeps serving until its stdin closes, and exits 0 (1 on a timeout).
``--fill N`` makes N edits once ready; ``--relay-server PORT`` also runs a relay here;
``--progress N`` prints ``progress`` once it holds N envelopes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from crdt_sync import Replica
from crdt_sync.transports.daemon import Peer
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
    return sum(replica.version_vector(space).values())


async def main(args: argparse.Namespace) -> int:
    peers = [(h, int(p)) for h, _, p in (s.rpartition(":") for s in args.peer)]
    with Replica(Path(args.data), seal_interval=0) as replica:
        changed = asyncio.Event()
        unsubscribe = replica.observe(lambda _c: changed.set())
        try:
            host = args.interface[0] if args.interface else "127.0.0.1"
            async with maybe_relay(Path(args.data + "-relay"), host, args.relay_server), \
                    Peer(replica, lan=args.lan, relay=args.relay, interfaces=args.interface,
                         static_peers=peers, lan_port=args.port, config=FAST) as peer:
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
                    print("timeout", total(replica, args.space), peer.connected, flush=True)
                    return 1
                print("converged", replica.version_vector(args.space), flush=True)
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
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
