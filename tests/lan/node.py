"""One LAN host for the namespace tests: fill, discover by mDNS, exit 0 once it holds ``want``
envelopes of ``space`` (bounded by ``limit`` seconds)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from crdt_sync import Replica
from crdt_sync.transports.lan import LanTransport
from tests.sync_helpers import SPACE, fill


async def main(data: str, address: str, count: int, want: int, limit: float) -> int:
    with Replica(Path(data), seal_interval=0) as replica:
        fill(replica, Path(data).name, count, SPACE)
        changed = asyncio.Event()
        unsubscribe = replica.observe(lambda _c: changed.set())
        try:
            async with asyncio.timeout(limit), LanTransport(replica, [address]):
                while sum(replica.version_vector(SPACE).values()) < want:
                    changed.clear()
                    await changed.wait()
            print("converged", flush=True)
            return 0
        except TimeoutError:
            print("timeout", replica.version_vector(SPACE), flush=True)
            return 1
        finally:
            unsubscribe()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                              float(sys.argv[5]))))
