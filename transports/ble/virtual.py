"""Several bumble virtual controllers on one virtual radio, each an HCI transport on loopback.

Separate processes (``crdt-sync peer --ble --ble-transport tcp-client:127.0.0.1:PORT``, the
demo, the multi-process tests) then meet over one simulated radio with no hardware: each
process's bumble host connects to its own controller, and the controllers hear each other on
one :class:`bumble.link.LocalLink`. Listening sockets are bound to loopback only.

Run: ``python -m crdt_sync.transports.ble.virtual --count 3 [--ports-file FILE]``: prints one
SPEC per line (and writes them to FILE), then serves until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from bumble.controller import Controller
from bumble.link import LocalLink
from bumble.transport.common import Transport
from bumble.transport.tcp_server import open_tcp_server_transport_with_socket

#: Controllers one radio serves.
MAX_CONTROLLERS = 16


class VirtualRadio:
    """``count`` controllers on one virtual link, served as ``tcp-client:HOST:PORT`` SPECs.

    An async context manager: the sockets listen from entry to exit. One host at a time per
    controller (a second connection to one port replaces the first, as with a real adapter).
    """

    def __init__(self, count: int, host: str = "127.0.0.1") -> None:
        if not 1 <= count <= MAX_CONTROLLERS:
            raise ValueError(f"1..{MAX_CONTROLLERS} controllers")
        self.count, self.host = count, host
        self.link = LocalLink()  # type: ignore[no-untyped-call]  # bumble leaves it unannotated
        self.controllers: list[Controller] = []
        self.specs: list[str] = []
        self._transports: list[Transport] = []

    async def __aenter__(self) -> VirtualRadio:
        try:
            for index in range(self.count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.host, 0))
                port = sock.getsockname()[1]
                transport = await open_tcp_server_transport_with_socket(sock)
                self._transports.append(transport)
                self.controllers.append(Controller(f"C{index}", host_source=transport.source,
                                                   host_sink=transport.sink, link=self.link))
                self.specs.append(f"tcp-client:{self.host}:{port}")
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        transports, self._transports = self._transports, []
        for transport in transports:
            with contextlib.suppress(Exception):  # closing a server that lost its client
                await transport.close()


async def _serve(count: int, ports_file: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with VirtualRadio(count) as radio:
        text = "\n".join(radio.specs) + "\n"
        if ports_file is not None:
            tmp = ports_file.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(ports_file)  # whole or absent: a reader never sees half
        sys.stdout.write(text)
        sys.stdout.flush()
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crdt_sync.transports.ble.virtual",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=2, help=f"controllers (1..{MAX_CONTROLLERS})")
    parser.add_argument("--ports-file", type=Path, help="also write the SPECs here, one a line")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= MAX_CONTROLLERS:
        parser.error(f"--count is 1..{MAX_CONTROLLERS}")
    asyncio.run(_serve(args.count, args.ports_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
