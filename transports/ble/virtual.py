"""Several bumble virtual controllers on one virtual radio, each an HCI transport on loopback.

Separate processes (``crdt-sync peer --ble --ble-transport tcp-client:127.0.0.1:PORT``, the
demo, the multi-process tests) then meet over one simulated radio with no hardware: each
process's bumble host connects to its own controller, and the controllers hear each other on
one :class:`bumble.link.LocalLink`. Listening sockets are bound to loopback only.
:meth:`VirtualRadio.drop` and :meth:`VirtualRadio.restore` take one controller away from its
host and bring a fresh one back on the same SPEC (a USB dongle pulled and plugged in again).

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

from ._bumble_compat import make_controller, power_off

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
        self._transports: list[Transport | None] = []
        self._ports: list[int] = []

    async def __aenter__(self) -> VirtualRadio:
        try:
            for index in range(self.count):
                transport, port = await self._listen(0)
                self._transports.append(transport)
                self._ports.append(port)
                self.controllers.append(self._controller(index, transport))
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
            await _shut(transport)

    async def drop(self, index: int) -> None:
        """Take controller ``index`` away: its host's connection closes (the host sees its HCI
        transport lost), its port stops listening (reopening it is refused), and the devices
        connected to it see their connections time out (HCI reason 0x08)."""
        transport, self._transports[index] = self._transports[index], None
        await _shut(transport)
        power_off(self.controllers[index], self.link)

    async def restore(self, index: int) -> None:
        """Serve a fresh controller ``index`` on the same SPEC (after :meth:`drop`)."""
        if self._transports[index] is not None:
            raise ValueError(f"controller {index} is not dropped")
        transport, _ = await self._listen(self._ports[index])
        self._transports[index] = transport
        self.controllers[index] = self._controller(index, transport)

    async def _listen(self, port: int) -> tuple[Transport, int]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
            port = sock.getsockname()[1]
            return await open_tcp_server_transport_with_socket(sock), port
        except BaseException:
            sock.close()
            raise

    def _controller(self, index: int, transport: Transport) -> Controller:
        return make_controller(f"C{index}", host_source=transport.source, host_sink=transport.sink,
                               link=self.link)


async def _shut(transport: Transport | None) -> None:
    """Stop listening and close the host's connection, if any (bumble's ``close`` does neither)."""
    if transport is None:
        return
    server = getattr(transport, "server", None)
    client = getattr(transport.sink, "transport", None)
    if server is not None:
        server.close()
    if client is not None:
        client.close()
    with contextlib.suppress(Exception):  # closing a server that lost its client
        await transport.close()
    if server is not None:
        with contextlib.suppress(Exception):
            await server.wait_closed()


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
