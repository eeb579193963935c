"""The radio: a bumble ``Device`` on a controller, and the peripheral's GATT service.

:func:`open_device` powers on a bumble host on one of two controllers:

* a bumble transport SPEC (``usb:0``, ``hci-socket:0``, ``tcp-client:127.0.0.1:PORT``, ...):
  a real adapter, or a virtual controller served over TCP by another process;
* an in-process :class:`bumble.link.LocalLink` (tests): a virtual controller on that link.

:class:`GattServer` is the peripheral's side: our service (``RX`` written by the central,
``TX`` notified), one :class:`~._link.BleLink` per connected central, routed by connection
handle and bounded in number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from bumble import hci
from bumble.core import UUID
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.host import Host
from bumble.l2cap import LeCreditBasedChannel, LeCreditBasedChannelSpec
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink

from ._bumble_compat import make_controller
from ._framing import DEFAULT_WINDOW, MAX_CHUNK, MIN_CHUNK, chunk_size_for
from ._gatt import PSM_UUID, RX_UUID, SERVICE_UUID, TX_UUID
from ._link import BleLink, LinkTimers

log = logging.getLogger("crdt_sync.ble")
#: Centrals served at once; more are disconnected.
MAX_CENTRALS = 4


def random_static_address() -> str:
    """A random static device address (the two top bits set): says nothing about the device."""
    raw = bytearray(secrets.token_bytes(6))
    raw[0] |= 0xC0
    return ":".join(f"{b:02X}" for b in raw)


@asynccontextmanager
async def open_device(spec: str | LocalLink, name: str = "crdt-sync", address: str | None = None,
                      on_lost: Callable[[str], None] | None = None) -> AsyncIterator[Device]:
    """A bumble device on ``spec`` (a transport SPEC or an in-process link); the caller adds
    its services, then powers it on (``await device.power_on()``).

    ``on_lost`` is called once, with a reason, if the link to the controller is lost while the
    device is open (the transport's ``source.terminated``: a USB dongle pulled, a
    ``tcp-client:`` controller gone). An in-process link cannot be lost; closing is no loss.
    """
    address = address or random_static_address()
    async with contextlib.AsyncExitStack() as stack:
        if isinstance(spec, LocalLink):
            controller = make_controller(name, link=spec, public_address=address)
            device = Device(name=name, address=hci.Address(address),
                            host=Host(controller, AsyncPipeSink(controller)))
        else:
            transport = await open_transport(spec)
            stack.push_async_callback(transport.close)
            terminated = getattr(transport.source, "terminated", None)
            if on_lost is not None and isinstance(terminated, asyncio.Future):
                lost = on_lost

                def on_terminated(future: asyncio.Future[None]) -> None:
                    error = None if future.cancelled() else future.exception()
                    lost(f"the HCI transport {spec} was lost"
                         + (f": {type(error).__name__}: {error}" if error is not None else ""))
                terminated.add_done_callback(on_terminated)
                # Our own close ends the transport too: that is no loss.
                stack.callback(terminated.remove_done_callback, on_terminated)
            device = Device.with_hci(name, hci.Address(address), transport.source, transport.sink)
        yield device


class GattServer:
    """Our GATT service on ``device``, and a :class:`BleLink` for each central that subscribes.

    Args:
        device: the bumble device (not yet powered on).
        on_link: called with ``(link, connection)`` once a central has subscribed to TX (or
            opened the L2CAP channel).
        l2cap: also serve an LE credit-based channel (its PSM readable in ``PSM_UUID``).
    """

    def __init__(self, device: Device, on_link: Callable[[BleLink, Connection], None], *,
                 window: int = DEFAULT_WINDOW, timers: LinkTimers | None = None,
                 max_centrals: int = MAX_CENTRALS, l2cap: bool = False) -> None:
        self.device = device
        self.on_link = on_link
        self.window = window
        self.timers = timers or LinkTimers()
        self.max_centrals = max_centrals
        self.links: dict[int, BleLink] = {}  # connection handle -> its GATT link
        self.channels: dict[int, BleLink] = {}  # connection handle -> its L2CAP link
        self.refused_connections = 0
        self.idle_dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.rx: Characteristic[bytes] = Characteristic(
            UUID(RX_UUID), Characteristic.Properties.WRITE_WITHOUT_RESPONSE, Characteristic.WRITEABLE,
            CharacteristicValue[bytes](write=self._on_write))
        self.tx: Characteristic[bytes] = Characteristic(UUID(TX_UUID), Characteristic.Properties.NOTIFY,
                                 Characteristic.READABLE, b"")
        self.tx.on(Characteristic.EVENT_SUBSCRIPTION, self._on_subscription)
        characteristics = [self.rx, self.tx]
        self.psm: int | None = None
        if l2cap:
            server = device.create_l2cap_server(spec=l2cap_spec(None), handler=self._on_channel)
            self.psm = server.psm
            characteristics.append(Characteristic(
                UUID(PSM_UUID), Characteristic.Properties.READ, Characteristic.READABLE,
                server.psm.to_bytes(2, "little")))
        device.add_service(Service(UUID(SERVICE_UUID), characteristics))
        device.on("connection", self._on_connection)

    def _on_connection(self, connection: Connection) -> None:
        if connection.role != hci.Role.PERIPHERAL:
            return  # our own outgoing connections are the central's business
        if len(self.links) >= self.max_centrals:
            self.refused_connections += 1
            self._spawn(connection.disconnect())
            return
        handle = connection.handle

        async def write(chunk: bytes) -> None:
            await self.device.notify_subscriber(connection, self.tx, chunk)

        hangup = hangup_of(connection)
        # The ATT MTU is exchanged before the central subscribes: the size is read then.
        link = BleLink(f"ble-central {connection.peer_address}", write, hangup,
                       chunk_size_for(connection.att_mtu), window=self.window, timers=self.timers)
        self.links[handle] = link

        def on_disconnection(reason: int) -> None:
            for gone in (self.links.pop(handle, None), self.channels.pop(handle, None)):
                if gone is not None:
                    gone.lost(f"the central disconnected (HCI reason 0x{reason:02x})")

        connection.on("disconnection", on_disconnection)
        self._spawn(self._expect_subscription(connection, link))

    async def _expect_subscription(self, connection: Connection, link: BleLink) -> None:
        """A central that connects and never subscribes is dropped after ``timers.stall``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timers.stall):
                await link.started.wait()
        if not link.started.is_set() and self.links.get(connection.handle) is link:
            self.idle_dropped += 1
            log.info("ble: %s connected but never subscribed: dropped", connection.peer_address)
            with contextlib.suppress(Exception):  # it may be gone already
                await connection.disconnect()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Stop the timers of connections not yet subscribed."""
        for task in list(self._tasks):
            task.cancel()

    def _on_channel(self, channel: LeCreditBasedChannel) -> None:
        """A central opened our LE credit-based channel: it replaces GATT on that connection."""
        connection = channel.connection
        old = self.links.get(connection.handle)
        if old is None or old.started.is_set():
            self._spawn(channel.disconnect())  # unknown connection, or GATT already in use
            return
        link = channel_link(channel, f"ble-l2cap-central {connection.peer_address}", hangup_of(connection),
                            window=self.window, timers=self.timers)
        self.channels[connection.handle] = link
        old.started.set()  # the idle timer: this connection is in use
        old.lost("the central opened the L2CAP channel")  # GATT writes on it are ignored from now
        link.start()
        self.on_link(link, connection)

    def _on_subscription(self, connection: Connection, notify_enabled: bool, _indicate: bool) -> None:
        link = self.links.get(connection.handle)
        if link is None or not notify_enabled:
            return
        link.channel.max_chunk = chunk_size_for(connection.att_mtu)
        link.start()
        self.on_link(link, connection)

    def _on_write(self, connection: Connection, value: bytes) -> None:
        link = self.links.get(connection.handle)
        if link is not None:
            link.feed(value)


#: The LE credit-based channel: SDUs up to 2 KiB in K-frames of 247 bytes (a 251-byte LL packet).
L2CAP_MTU, L2CAP_MPS, L2CAP_CREDITS = 2048, 247, 64


def l2cap_spec(psm: int | None) -> LeCreditBasedChannelSpec:
    return LeCreditBasedChannelSpec(psm=psm, mtu=L2CAP_MTU, mps=L2CAP_MPS, max_credits=L2CAP_CREDITS)


def l2cap_chunk(peer_mtu: int, peer_mps: int) -> int:
    """A chunk that fills whole K-frames: the SDU (2-byte length + chunk) in n x MPS bytes."""
    limit = min(MAX_CHUNK, peer_mtu)
    whole = (limit + 2) // peer_mps * peer_mps - 2
    return max(MIN_CHUNK, whole if whole >= MIN_CHUNK else limit)


def hangup_of(connection: Connection) -> Callable[[], Awaitable[None]]:
    """A hang-up that does nothing once the connection is gone: bumble would send the
    disconnect anyway and wait out the link's write timer (5 s) for an answer that never
    comes, holding the link's books, and so the next dial, that long."""
    gone = asyncio.Event()
    connection.once("disconnection", lambda _reason: gone.set())

    async def hangup() -> None:
        if not gone.is_set():
            await connection.disconnect()

    return hangup


def channel_link(channel: LeCreditBasedChannel, label: str, hangup: Callable[[], Awaitable[None]], *,
                 window: int, timers: LinkTimers) -> BleLink:
    """A BleLink over an LE credit-based channel: one chunk per SDU.

    bumble's channel joins queued writes into one SDU, so each chunk is written alone and
    drained before the next (the channel's own credits pace it).
    """
    async def write(chunk: bytes) -> None:
        channel.write(chunk)
        await channel.drain()

    async def close() -> None:
        with contextlib.suppress(Exception):  # the channel may be gone with the connection
            await channel.disconnect()
        await hangup()

    link = BleLink(label, write, close, l2cap_chunk(channel.peer_mtu, channel.peer_mps),
                   window=window, timers=timers)
    channel.sink = link.feed
    channel.on(channel.EVENT_CLOSE, lambda: link.lost("the L2CAP channel closed"))
    return link
