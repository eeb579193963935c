"""A flood of fake crdt-sync announcements for the namespace tests: ``COUNT`` services on
``ADDRESS`` (no probing: ``cooperating_responders``), every other one with a garbage TXT
record, the rest with valid records pointing at ports where nothing listens. Prints
``flooding`` once all are announced, keeps them until stdin closes, then says goodbye."""

from __future__ import annotations

import asyncio
import socket
import sys

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from crdt_sync.protocol import PROTOCOL_VERSION
from crdt_sync.transports.lan import SERVICE_TYPE, TxtRecord, new_token


def fake(i: int, address: str) -> AsyncServiceInfo:
    properties: dict[str, str | bytes] = dict(TxtRecord((PROTOCOL_VERSION,), new_token()).properties())
    if i % 2:
        properties = {"txtvers": "9", "v": "x" * 60, "t": b"\xff" * 32}  # refused, with a reason
    return AsyncServiceInfo(SERVICE_TYPE, f"fake{i}.{SERVICE_TYPE}", port=20000 + i,
                            addresses=[socket.inet_aton(address)], server=f"fake{i}.local.",
                            properties=properties)


async def main(address: str, count: int) -> int:
    azc = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    infos = [fake(i, address) for i in range(count)]
    broadcasts = await asyncio.gather(*(azc.async_register_service(info, cooperating_responders=True)
                                        for info in infos))
    await asyncio.gather(*broadcasts)
    print("flooding", count, flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with asyncio.timeout(120):
        while await reader.read(1024):
            pass
    await azc.async_close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]))))
