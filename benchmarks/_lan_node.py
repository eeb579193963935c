"""One device of the LAN benchmark between namespaces (run by ``benchmarks.lan --netns``).

It prints JSON lines on stdout, with wall-clock times (both devices share the machine's
clock): ``{"started": t}`` as its daemon starts, ``{"first": t}`` at the first envelope from
the other device, ``{"converged": t}`` once it holds ``--want`` envelopes. Then the ``writer``
makes ``--live`` edits at ``--rate`` per second, each carrying the wall time of its write;
the ``reader`` prints ``{"latencies": [...]}`` (seconds from write to visible here) once it
has seen them all. Both then wait for stdin to close.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(1024):
        pass


async def main(args: argparse.Namespace) -> int:
    from crdt_sync import Replica
    from crdt_sync.transports.daemon import Peer

    with Replica(Path(args.data)) as replica:
        changed = asyncio.Event()
        first: list[float] = []
        latencies: list[float] = []

        def seen(changes: list[Any]) -> None:
            now = time.time()
            changed.set()
            for change in changes:
                if change.origin != "remote":
                    continue
                if not first:
                    first.append(now)
                if change.collection == "live":
                    latencies.append(now - replica.space(args.space).get("live", change.id)["t"])
        replica.observe(seen, args.space)

        def held() -> int:
            return sum(replica.version_vector(args.space).values())
        emit(started=time.time())  # before the daemon starts: mDNS probing is in the count
        async with asyncio.timeout(args.limit), Peer(replica, lan=True, interfaces=[args.address]):
            while held() < args.want:
                changed.clear()
                await changed.wait()
            emit(converged=time.time(), first=first[0] if first else None)
            if args.role == "writer":
                sp = replica.space(args.space)
                loop = asyncio.get_running_loop()
                start = loop.time()
                for i in range(args.live):
                    await asyncio.sleep(max(0.0, start + i / args.rate - loop.time()))
                    sp.put("live", f"e{i}", {"t": time.time()})
            else:
                while len(latencies) < args.live:
                    changed.clear()
                    await changed.wait()
                emit(latencies=latencies)
            await stdin_closed()
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for name in ("--data", "--space", "--address", "--role"):
        p.add_argument(name, required=True)
    p.add_argument("--want", type=int, required=True)
    p.add_argument("--live", type=int, default=0)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--limit", type=float, default=600.0)
    sys.exit(asyncio.run(main(p.parse_args())))
