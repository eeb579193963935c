"""One BLE device in a process of its own: opens the data directory the test prepared (the
space shared with ``share``), fills it, runs a BleTransport on a bumble
transport SPEC (``tcp-client:...`` of the virtual radio), prints ``converged`` once it holds
``want`` envelopes of the space, and runs on (serving the others) until its stdin closes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from crdt_sync import Replica
from crdt_sync.transports.ble import BleTransport
from tests.sync_helpers import fill


async def stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(1024):
        pass


async def main(data: str, space: str, spec: str, count: int, want: int, limit: float) -> int:
    with Replica(Path(data), seal_interval=0) as replica:
        fill(replica, Path(data).name, count, space)
        changed = asyncio.Event()
        unsubscribe = replica.observe(lambda _c: changed.set())
        try:
            async with asyncio.timeout(limit), BleTransport(replica, spec):
                while sum(replica.version_vector(space).values()) < want:
                    changed.clear()
                    await changed.wait()
                print("converged", flush=True)
                await stdin_closed()
            return 0
        except TimeoutError:
            print("timeout", replica.version_vector(space), flush=True)
            return 1
        finally:
            unsubscribe()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]),
                              float(sys.argv[6]))))
