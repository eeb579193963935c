"""The BLE transport: advertise and serve GATT (bumble), scan and connect (bleak), sessions.

:class:`BleTransport` is an async context manager that owns its bumble device and every task
it starts. Each device takes both roles: it advertises our service with its rotating hint
and serves GATT as a peripheral, and it scans through bleak's ``BleakScanner`` and connects
through ``BleakClient`` (our bumble backend, :mod:`._bleak_backend`) as a central. Of two
devices that hear each other, the one with the smaller hint connects; once both ends are
authenticated, duplicate sessions with one device are resolved as on the LAN (``keeps``).
Sessions are the ordinary sync session (:func:`~transports.driver.run_session`, live), so
resumption after a drop is the protocol's: reconnect, HAVE, the missing envelopes.

A radio whose HCI transport is lost (bumble's ``source.terminated``: a USB dongle pulled, a
``tcp-client:`` controller gone) ends the transport by itself: ``lost`` says why, the log
says ``ble.radio.lost``, every link ends at once and :meth:`BleTransport.events` ends (the
daemon then reopens it with backoff, ``transports/_supervise.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bumble import hci
from bumble.core import TimeoutError as BumbleTimeoutError
from bumble.device import Connection, Device
from bumble.link import LocalLink

from crdt_sync import Replica
from crdt_sync.errors import CrdtSyncError
from crdt_sync.protocol import Authenticated, Event, SessionConfig
from crdt_sync.protocol.session import RELIABLE_LINK

from ..base import FrameLink
from ..driver import run_session
from ..interface import LinkReady, LinkServer, PeerEvent, PeerFound, PeerLost
from ._advertising import Advertising
from ._bleak_backend import BumbleClient, BumbleScanner
from ._framing import DEFAULT_WINDOW, chunk_size_for
from ._gatt import (
    HINT_ROTATION,
    PSM_UUID,
    RX_UUID,
    SERVICE_UUID,
    TX_UUID,
    HintClock,
    ParsedAd,
    advertising_data,
    dials,
    keeps,
)
from ._link import BleLink, LinkTimers
from ._peers import PeerTable
from ._radio import GattServer, channel_link, l2cap_spec, open_device

log = logging.getLogger("crdt_sync.ble")
DIAL_TIMEOUT = 10.0
EVENT_QUEUE = 256
#: Links (either role) at once.
MAX_LINKS = 4
#: How long opening the radio (the transport, the controller's reset) may take.
OPEN_TIMEOUT = 10.0
#: At close, how long each last command to the controller (stop scanning, advertising) may take.
CLOSE_COMMAND_TIMEOUT = 2.0
#: At close after the radio was lost, how long the tasks get before they are cancelled.
LOST_GRACE = 1.0


class RadioUnavailable(CrdtSyncError):
    """The radio could not be opened: a SPEC bumble refuses, a controller that is not there
    (a virtual radio not running, no such adapter) or that never answers."""


class BleTransport:
    """BLE discovery, links and live sessions over one bumble device.

    Args:
        replica: the replica every session syncs.
        radio: a bumble transport SPEC (``usb:0``, ``hci-socket:0``,
            ``tcp-client:127.0.0.1:PORT``) or an in-process :class:`bumble.link.LocalLink`.
        central: scan and connect; ``peripheral``: advertise and serve.
        config: the sessions' configuration.
        address: this device's BLE address (random static by default).
        hint_source: draws the advertised hints (a CSPRNG; injected in tests).
        l2cap: offer and use an LE credit-based L2CAP channel where both ends run bumble
            (GATT through bleak stays the fallback every phone can do).
        serve: runs the session on each link (the daemon's ``LinkServer``, which keeps one
            session per device across transports); by default a live session per link here.
    """

    name = "ble"

    def __init__(self, replica: Replica, radio: str | LocalLink, *, central: bool = True,
                 peripheral: bool = True, config: SessionConfig | None = None,
                 timers: LinkTimers | None = None, window: int = DEFAULT_WINDOW,
                 address: str | None = None, hint_rotation: float = HINT_ROTATION,
                 hint_source: Callable[[int], bytes] = secrets.token_bytes, l2cap: bool = False,
                 serve: LinkServer | None = None) -> None:
        self.replica = replica
        self.serve = serve
        self.radio = radio
        self.central, self.peripheral = central, peripheral
        self.config = config or RELIABLE_LINK
        self.timers = timers or LinkTimers()
        self.window = window
        self.l2cap = l2cap
        self.address = address
        self.table = PeerTable()
        self.dropped_events = 0
        self.hints = HintClock(time.monotonic, rotation=hint_rotation, draw=hint_source)
        self.device: Device | None = None
        self.server: GattServer | None = None
        self.advertising: Advertising | None = None
        #: Dials that waited out DIAL_TIMEOUT (the candidate's refusals say more).
        self.connect_timeouts = 0
        self._hint = self.hints.current()[0]
        self._events: asyncio.Queue[PeerEvent | None] = asyncio.Queue(EVENT_QUEUE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._dials: set[asyncio.Task[None]] = set()
        self._dial_slot = asyncio.Semaphore(1)  # bumble: one pending LE connection at a time
        self._dialling: set[str] = set()
        self._connected: dict[str, FrameLink] = {}  # BLE address -> link
        self._sessions: dict[str, tuple[asyncio.Event, bool]] = {}  # device id -> (stop, outbound)
        self._stops: set[asyncio.Event] = set()  # every running session's stop
        self._scanner: BleakScanner | None = None
        self._stop = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._closed = False
        self._done = asyncio.Event()  # set once close() has finished
        self._closer: asyncio.Task[None] | None = None
        #: Why the transport ended by itself (its radio was lost), or None.
        self.lost: str | None = None

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    @property
    def hint(self) -> bytes:
        """The hint advertised now."""
        return self._hint

    # -- lifecycle ------------------------------------------------------------------------------
    async def __aenter__(self) -> BleTransport:
        try:
            try:
                async with asyncio.timeout(OPEN_TIMEOUT):
                    await self._open()
            except TimeoutError:
                raise RadioUnavailable(f"the BLE radio {self.radio} did not answer within "
                                       f"{OPEN_TIMEOUT:g} s") from None
            except (Exception, AssertionError) as exc:  # bumble: whatever the SPEC or the controller did
                detail = self.lost or str(exc) or type(exc).__name__
                raise RadioUnavailable(f"cannot open the BLE radio {self.radio}: {detail}") from None
            if self.lost is not None:  # lost while it opened: as if it never had
                raise RadioUnavailable(f"cannot open the BLE radio {self.radio}: {self.lost}")
        except BaseException:
            await self.close()
            raise
        return self

    async def _open(self) -> None:
        """The device on the radio, powered on, advertising and scanning as its roles say."""
        self.device = device = await self._stack.enter_async_context(
            open_device(self.radio, "crdt-sync", self.address, on_lost=self._radio_lost))
        if self.peripheral:
            self.server = GattServer(device, self._on_central, window=self.window,
                                     timers=self.timers, max_centrals=MAX_LINKS, l2cap=self.l2cap)
        await device.power_on()
        if self.peripheral:
            self.advertising = Advertising(device, lambda: advertising_data(self._hint), MAX_LINKS)
            device.on("connection", self._on_connection)
            await self.advertising.sync()
            self._spawn(self._rotate())
        if self.central:
            self._scanner = BleakScanner(self._on_seen, [SERVICE_UUID], backend=BumbleScanner,
                                         bumble_device=device)
            await self._scanner.start()

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """End every session and link, release the radio, end :meth:`events`. Idempotent; a
        second caller waits for the first to finish."""
        if self._closed:
            await self._done.wait()
            return
        self._closed = True
        try:
            await self._close()
        finally:
            self._done.set()

    async def _close(self) -> None:
        self._stop.set()
        for stop in list(self._stops):  # every session, authenticated or still in its handshake
            stop.set()
        if self.lost is not None:  # no controller: every connection is gone, nothing to hang up
            self._links_lost(self.lost)
        elif self._scanner is not None:
            with contextlib.suppress(Exception):  # the controller may be gone already
                async with asyncio.timeout(CLOSE_COMMAND_TIMEOUT):
                    await self._scanner.stop()
        for task in list(self._dials):  # a connect to a device that is going away would wait it out
            task.cancel()
        tasks = list(self._tasks)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DIAL_TIMEOUT if self.lost is None else LOST_GRACE):
                await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for link in list(self._connected.values()):
            await link.close()
        if self.server is not None:
            self.server.close()
        if self.advertising is not None:
            self.advertising.closed = True
            if self.lost is None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_COMMAND_TIMEOUT):
                        await self.advertising.close()
        await self._stack.aclose()
        if self._events.full():  # the end must get through: it costs the oldest event
            self._events.get_nowait()
            self.dropped_events += 1
        self._put(None)

    def _links_lost(self, reason: str) -> None:
        for link in list(self._connected.values()):
            if isinstance(link, BleLink):
                link.lost(reason)

    def _radio_lost(self, reason: str) -> None:
        """The link to the controller is gone: end the sessions and the event stream, say why."""
        if self._closed:
            return
        self.lost = reason
        log.warning("ble.radio.lost", extra={"fields": {"radio": str(self.radio), "reason": reason}})
        self._links_lost(reason)  # their sessions end now, not at a timeout
        self._closer = asyncio.get_running_loop().create_task(self.close(), name="ble-radio-lost")

    async def events(self) -> AsyncIterator[PeerEvent]:
        """The events in order, until the transport closes (``DiscoveryTransport``)."""
        while (event := await self._events.get()) is not None:
            yield event

    # -- peripheral -----------------------------------------------------------------------------
    def _on_connection(self, connection: Connection) -> None:
        """Any connection (either role) changes whether the device advertises
        (:mod:`._advertising`): so does its end. A central that connected stopped the
        advertiser, whatever the host believes (bumble marks a set enabled when the enable
        command returns, which can come after the connection that ended it): start afresh."""
        connection.on("disconnection", lambda _reason: self._readvertise(restart=False))
        self._readvertise(restart=connection.role == hci.Role.PERIPHERAL)

    def _readvertise(self, *, restart: bool) -> None:
        if self.advertising is not None and not self._stop.is_set():
            self._spawn(self.advertising.sync(restart=restart))

    async def _rotate(self) -> None:
        assert self.advertising is not None
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.hints.rotation):
                    await self._stop.wait()
            hint, changed = self.hints.current()
            if changed and not self._stop.is_set():
                self._hint = hint
                await self.advertising.sync(restart=True)

    def _on_central(self, link: BleLink, connection: Connection) -> None:
        address = str(connection.peer_address)
        self._spawn(self._run(link, address, address, outbound=False))

    # -- central --------------------------------------------------------------------------------
    def _on_seen(self, device: BLEDevice, ad: AdvertisementData) -> None:
        if self._stop.is_set():
            return
        hint = ParsedAd(tuple(ad.service_uuids), ad.manufacturer_data).hint
        if hint is None:
            self.table.refuse(device.address, "advertises our service without a valid hint")
            return
        if hint == self._hint:
            return  # ourselves, or a replay of us
        now = self._now()
        candidate, changed = self.table.seen(device.address, hint, now)
        if changed:
            self._put(PeerFound(self.name, device.address, device.address))
        busy = (device.address in self._dialling or device.address in self._connected
                or self._linked(device))
        # A central-only device dials whoever it hears: the other side cannot dial it.
        if (busy or (self.peripheral and not dials(self._hint, hint)) or now < candidate.retry_at
                or len(self._connected) + len(self._dialling) >= MAX_LINKS):
            return
        self._dialling.add(device.address)
        task = self._spawn(self._dial(device))
        self._dials.add(task)
        task.add_done_callback(self._dials.discard)

    def _linked(self, target: BLEDevice) -> bool:
        """Whether the radio holds a connection with ``target`` already, in either role (one
        not yet subscribed, or one the hints, which rotate, gave the other side to dial):
        connecting again would stay pending, refused by the controller at each of its
        advertisements, for the whole dial timeout."""
        address = target.details
        return (self.device is not None and isinstance(address, hci.Address)
                and self.device.find_connection_by_bd_addr(address) is not None)

    async def _dial(self, target: BLEDevice) -> None:
        address = target.address
        try:
            async with self._dial_slot:
                if self._stop.is_set():
                    return
                link = await self._connect(target)
            if link is None:
                return
            self.table.succeeded(address)
        finally:
            self._dialling.discard(address)
        if self._stop.is_set():
            await link.close()
            return
        self._spawn(self._run(link, address, address, outbound=True))  # not a dial: close waits for it

    async def _connect(self, target: BLEDevice) -> BleLink | None:
        """Connect, subscribe and open a link; None (the reason recorded) if it failed."""
        assert self.device is not None
        holder: list[BleLink] = []

        def on_disconnect(_client: BleakClient) -> None:
            if holder:
                holder[0].lost("the peripheral disconnected")

        backends: list[BumbleClient] = []
        client = BleakClient(target, on_disconnect, [SERVICE_UUID], timeout=DIAL_TIMEOUT,
                             backend=BumbleClient, bumble_device=self.device,
                             bumble_register=backends.append)
        try:
            async with self._quiet():  # no central connects to us while our connect is pending
                await client.connect()
            rx = client.services.get_characteristic(RX_UUID)
            tx = client.services.get_characteristic(TX_UUID)
            if rx is None or tx is None:
                raise LookupError("the peer lacks our characteristics")
            channel_link_ = await self._open_l2cap(client, backends[0] if backends else None, target)
            if channel_link_ is not None:
                channel_link_.start()
                return channel_link_

            async def write(chunk: bytes) -> None:
                await client.write_gatt_char(rx, chunk, response=False)

            link = BleLink(f"ble-peripheral {target.address}", write, client.disconnect,
                           chunk_size_for(client.mtu_size), window=self.window, timers=self.timers)
            holder.append(link)
            await client.start_notify(tx, lambda _char, data: link.feed(bytes(data)))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise
        except Exception as exc:  # a trust boundary: whatever the peer or the radio did
            if isinstance(exc, (TimeoutError, BumbleTimeoutError)):
                self.connect_timeouts += 1
            reason = f"connect failed: {type(exc).__name__}: {exc}"
            log.info("ble: %s: %s", target.address, reason)
            self.table.failed(target.address, self._now(), reason)
            with contextlib.suppress(Exception):
                await client.disconnect()
            return None
        link.start()
        return link

    def _quiet(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.advertising.quiet() if self.advertising is not None else contextlib.nullcontext()

    async def _open_l2cap(self, client: BleakClient, backend: BumbleClient | None,
                          target: BLEDevice) -> BleLink | None:
        """Where both ends support it, an LE credit-based channel instead of GATT.

        bleak has no L2CAP API: this needs our bumble backend on this side (its connection)
        and the peer's PSM characteristic on the other.
        """
        psm_char = client.services.get_characteristic(PSM_UUID)
        if not self.l2cap or psm_char is None or backend is None:
            return None
        raw = await client.read_gatt_char(psm_char)
        if len(raw) != 2:
            raise ValueError(f"a PSM of {len(raw)} bytes")
        bumble_connection = backend.connection
        if bumble_connection is None:
            raise ConnectionError("disconnected")
        channel = await bumble_connection.create_l2cap_channel(spec=l2cap_spec(int.from_bytes(raw, "little")))
        return channel_link(channel, f"ble-l2cap-peripheral {target.address}", client.disconnect,
                            window=self.window, timers=self.timers)

    # -- sessions -------------------------------------------------------------------------------
    async def _run(self, link: BleLink, key: str, address: str, *, outbound: bool) -> None:
        """Keep the books on ``link`` (connected, so no second dial; lost) around its session."""
        stop = asyncio.Event()
        if self._stop.is_set():
            stop.set()
        self._stops.add(stop)
        device: list[str] = []

        def on_event(event: Event) -> None:
            if isinstance(event, Authenticated):
                device.append(event.peer)
                self._admit(event.peer, stop, outbound)

        self._connected[key] = link
        ready = LinkReady(self.name, key, address, link, outbound)
        self._put(ready)
        try:
            await self._session(ready, stop, on_event)
        finally:
            self._stops.discard(stop)
            await link.close()
            if self._connected.get(key) is link:
                del self._connected[key]
            if device and self._sessions.get(device[0], (None, None))[0] is stop:
                del self._sessions[device[0]]
            self._put(PeerLost(self.name, key, link.reason or "session ended"))

    async def _session(self, ready: LinkReady, stop: asyncio.Event,
                       on_event: Callable[[Event], None]) -> None:
        """Run a live session on ``ready.link`` (the override point of the conformance harness)."""
        if self.serve is not None:  # the daemon's: it keys the session by device
            await self.serve(ready)
            return
        await run_session(self.replica, ready.link, live=True, config=self.config, stop=stop, relay=False,
                          on_event=on_event)

    def _admit(self, peer: str, stop: asyncio.Event, outbound: bool) -> None:
        """One session per device: of two, both ends keep the same one (``keeps``)."""
        if self._stop.is_set():
            stop.set()
            return
        current = self._sessions.get(peer)
        if current is None:
            self._sessions[peer] = (stop, outbound)
        elif keeps(self.replica.device_id, peer, outbound):
            current[0].set()
            self._sessions[peer] = (stop, outbound)
        else:
            stop.set()

    def _put(self, event: PeerEvent | None) -> None:
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped_events += 1

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
