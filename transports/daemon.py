"""One daemon for every transport: :class:`Peer` runs LAN, the relay (and any other discovery
transport) over one replica.

* **One session per device.** Each transport hands the daemon every link it opens or accepts
  (``LinkServer``); the daemon runs a live session on it and, once the session authenticated
  the other end, keys it by that device key, never by what discovery said. A second session
  with a device already in session (it was reached over two addresses, or two transports)
  is ended on both sides alike: the one on the preferred transport survives
  (:data:`TRANSPORT_RANK`), on one transport the one the smaller device id dialled
  (:func:`~transports.lan.keeps`).
* **Store-and-forward.** Every session syncs the one replica, and the replica tells every
  session when anything arrived (its observers fire for remote envelopes too), so what comes
  in over the LAN is pushed to the relay and to the other LAN peers at once, and the other
  way round. While any session runs, one task (``_maintain``, every ``MAINTAIN_INTERVAL``)
  seals due edits and refreshes the replica for all of them, so edits that other processes
  make on the same data directory are sent as they happen, at one refresh per interval
  whatever the number of sessions.
* **Supervision.** A transport that ends by itself after the start (a BLE radio whose HCI
  transport dropped) is reopened from its factory with backoff, forever while the daemon
  runs (:mod:`._supervise`); status shows it down or reopening, with the reason.
* **Status.** What the daemon sees (devices in session, over which transport and address,
  when each space last synced; the candidates discovery reported) is kept in bounded tables
  and written to ``daemon.json`` in the data directory, which ``crdt-sync status`` reads.

Nothing here polls: sessions wait on their links and the replica's observers, discovery on
its sockets, the status file is written at most once per ``STATUS_INTERVAL`` after a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from crdt_sync import Replica
from crdt_sync.errors import CrdtSyncError
from crdt_sync.protocol import Authenticated, Closed, Event, SessionConfig, SpaceSynced
from crdt_sync.protocol.session import RELIABLE_LINK

from ._supervise import REOPEN_FIRST, REOPEN_MAX, Backoff, Slot
from .driver import run_session
from .interface import LinkReady, LinkServer, ManagedTransport, PeerEvent, PeerFound, PeerLost

log = logging.getLogger("crdt_sync.daemon")

#: Of two sessions with one device over different transports, the higher rank survives
#: (both ends rank alike). Unknown transports rank lowest, by name.
TRANSPORT_RANK = {"lan": 30, "ble": 20, "memory": 10}
#: Transports whose peers are neighbours, never trusted as relays (served only what they may read).
NEIGHBOUR_TRANSPORTS = frozenset({"lan", "ble"})
#: Sessions at once (every transport together); a link beyond it is closed unserved.
MAX_SESSIONS = 64
#: Devices and discovery candidates remembered for status; the stalest are forgotten.
MAX_DEVICES = 256
MAX_CANDIDATES = 64
#: The status file is rewritten at most this often.
STATUS_INTERVAL = 0.5
STATUS_FILE = "daemon.json"
#: How long closing waits for the sessions' goodbyes before it cancels them.
CLOSE_GRACE = 5.0
#: While any session runs, the replica's due edits are sealed and other processes' edits
#: read this often, once for every session (not once per session).
MAINTAIN_INTERVAL = 0.2

#: What ``Peer(ble_role=...)`` takes: both roles, or one.
BLE_ROLES = ("both", "central", "peripheral")

#: What builds a transport for the daemon, given the daemon's link server.
TransportFactory = Callable[[LinkServer], ManagedTransport]


class PeerError(ValueError):
    """A daemon that cannot start as configured (no transport, a bad interface)."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


@dataclass
class DeviceStatus:
    """One device the daemon had a session with."""

    device: str
    transport: str
    address: str
    connected: bool
    since: str
    last_synced: dict[str, str] = field(default_factory=dict)
    sessions: int = 0


@dataclass
class CandidateStatus:
    """One candidate discovery reported (unauthenticated: a transport's name for it)."""

    transport: str
    key: str
    address: str
    seen: str
    lost: str | None = None


@dataclass(eq=False)
class _Session:
    ready: LinkReady
    stop: asyncio.Event
    device: str | None = None


def _rank(ready: LinkReady) -> tuple[int, str]:
    return TRANSPORT_RANK.get(ready.transport, 0), ready.transport


def prefers(own_id: str, peer_id: str, new: LinkReady, old: LinkReady) -> bool:
    """Of two sessions with ``peer_id``, whether ``new`` survives rather than ``old``; both
    devices decide alike (the rank of the transport, then who dialled, then the newer)."""
    if _rank(new) != _rank(old):
        return _rank(new) > _rank(old)
    dialled_by_smaller = own_id < peer_id
    new_ok, old_ok = new.outbound == dialled_by_smaller, old.outbound == dialled_by_smaller
    return new_ok or not old_ok


class Peer:
    """The daemon: every enabled transport over one replica, as an async context manager
    that owns its tasks (entering starts the transports; leaving says goodbye and stops them).

    Args:
        replica: the replica every session syncs (the daemon does not close it).
        lan: run the LAN transport with mDNS discovery.
        relay: relay URLs to stay connected to.
        interfaces: LAN interface names or addresses; default :func:`~transports.lan.default_address`.
        static_peers: ``(host, port)`` LAN peers dialled without discovery (LAN runs then,
            with mDNS only if ``lan``).
        lan_port: the LAN listener's port (0: ephemeral; ``lan_transport.port`` once entered).
        spaces: sync only these spaces (default: every space the replica keeps).
        config: the sessions' timers and batches.
        ble: run the BLE transport on this bumble transport SPEC (``usb:0``, ``hci-socket:0``,
            ``tcp-client:HOST:PORT`` of a virtual radio).
        ble_role: ``"both"`` (the default), ``"central"`` (scan and connect only) or
            ``"peripheral"`` (advertise and serve only).
        transports: more transports (memory), each built from the daemon's link server.
        status_file: where status is written: True (the default) for ``daemon.json`` in the
            data directory, a path, or None/False for nowhere.
        on_peer_event: called with every discovery event of every transport, in order.
        on_session_event: called with ``(transport, event)`` for every session event.
        reopen_backoff: ``(first, maximum)`` seconds between attempts to reopen a transport
            that was lost (a BLE radio): the wait doubles from ``first`` up to ``maximum``.
    """

    def __init__(self, replica: Replica, *, lan: bool = False, relay: Sequence[str] = (),
                 interfaces: Sequence[str] = (), static_peers: Sequence[tuple[str, int]] = (),
                 lan_port: int = 0, spaces: Sequence[str] | None = None,
                 config: SessionConfig | None = None, ble: str | None = None,
                 ble_role: str = "both", transports: Sequence[TransportFactory] = (),
                 status_file: Path | bool | None = True,
                 on_peer_event: Callable[[PeerEvent], None] | None = None,
                 on_session_event: Callable[[str, Event], None] | None = None,
                 reopen_backoff: tuple[float, float] = (REOPEN_FIRST, REOPEN_MAX)) -> None:
        self.replica = replica
        self.lan, self.relay = lan, list(relay)
        self.interfaces, self.static_peers = list(interfaces), list(static_peers)
        self.lan_port = lan_port
        self.spaces = list(spaces) if spaces is not None else None
        self.config = config or RELIABLE_LINK
        self.factories = list(transports)
        if ble_role not in BLE_ROLES:
            raise PeerError(f"ble_role {ble_role!r}: one of {', '.join(BLE_ROLES)}")
        self.ble, self.ble_role = ble, ble_role
        self.on_peer_event = on_peer_event
        self.on_session_event = on_session_event
        Backoff(*reopen_backoff)  # checked now: a bad pair is the caller's error
        self.reopen_backoff = reopen_backoff
        #: sessions run so far, every transport together
        self.sessions = 0
        self.status_file: Path | None = (replica.path / STATUS_FILE if status_file is True
                                         else None if status_file is False else status_file)
        if not (lan or self.relay or self.static_peers or self.factories or ble):
            raise PeerError("no transport enabled: give lan=True, a relay URL, a static peer "
                            "or a BLE SPEC")
        self._slots: list[Slot] = []
        self.devices: OrderedDict[str, DeviceStatus] = OrderedDict()
        self.candidates: OrderedDict[tuple[str, str], CandidateStatus] = OrderedDict()
        self.addresses: list[str] = []
        self._sessions: dict[str, _Session] = {}  # device id -> its one session
        self._running: set[_Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed = False
        self._write_handle: asyncio.TimerHandle | None = None
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------
    async def __aenter__(self) -> Peer:
        try:
            for factory in self._all_factories():
                slot = Slot(factory, self._serve, stopping=self._stopping,
                            on_event=self._peer_event, on_change=self._transport_changed,
                            backoff=Backoff(*self.reopen_backoff))
                await slot.start()
                self._slots.append(slot)
            self._spawn(self._maintain())
        except BaseException:
            await self.close()
            raise
        self._write_status()
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Say goodbye on every session, stop every transport. Idempotent."""
        if self._closed:
            return
        self._closed = self._closing = True
        self._stopping.set()
        self._changed.set()
        try:
            await self._stop_everything()
        finally:  # even if closing was itself cancelled, status says the daemon stopped
            if self._write_handle is not None:
                self._write_handle.cancel()
            for device in self.devices.values():
                device.connected = False
            self._write_status(running=False)

    async def _stop_everything(self) -> None:
        for session in list(self._running):
            session.stop.set()
        running = [t for t in self._tasks]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_GRACE):
                while self._running:  # each session ends on its BYE; bounded by the grace
                    self._changed.clear()
                    await self._changed.wait()
        for slot in reversed(self._slots):
            await slot.close()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def _all_factories(self) -> list[TransportFactory]:
        factories: list[TransportFactory] = []
        if self.lan or self.static_peers:
            factories.append(self._lan_factory())
        for url in self.relay:
            factories.append(self._relay_factory(url))
        if self.ble is not None:
            factories.append(self._ble_factory(self.ble))
        return factories + self.factories

    def _lan_factory(self) -> TransportFactory:
        from .lan import InterfaceError, LanTransport, default_address, resolve_interfaces

        try:
            self.addresses = (resolve_interfaces(self.interfaces) if self.interfaces
                              else [default_address()])
        except InterfaceError as exc:
            raise PeerError(str(exc)) from None

        def build(serve: LinkServer) -> ManagedTransport:
            return LanTransport(self.replica, self.addresses, static_peers=self.static_peers,
                                mdns=self.lan, config=self.config, port=self.lan_port, serve=serve)
        return build

    def _relay_factory(self, url: str) -> TransportFactory:
        from .relay import RelayTransport

        def build(serve: LinkServer) -> ManagedTransport:
            return RelayTransport(url, serve)
        return build

    def _ble_factory(self, spec: str) -> TransportFactory:
        from .ble import BleTransport

        def build(serve: LinkServer) -> ManagedTransport:
            return BleTransport(self.replica, spec, central=self.ble_role != "peripheral",
                                peripheral=self.ble_role != "central", config=self.config,
                                serve=serve)
        return build

    @property
    def transports(self) -> list[ManagedTransport]:
        """Every transport the daemon runs, in order: the one open now, or while one is being
        reopened the last one (closed)."""
        return [slot.transport for slot in self._slots if slot.transport is not None]

    def transport_state(self, name: str) -> str | None:
        """``"up"``, ``"down"`` or ``"reopening"`` for transport ``name``, or None."""
        return next((slot.state.state for slot in self._slots if slot.name == name), None)

    async def wait_transport(self, name: str, state: str) -> None:
        """Wait until transport ``name`` is in ``state`` (the caller bounds the wait)."""
        await self._wait(lambda: self.transport_state(name) == state)

    @property
    def lan_transport(self) -> Any:
        """The LAN transport, once entered (its ``port``, ``table``), or None."""
        return next((t for t in self.transports if t.name == "lan"), None)

    @property
    def connected(self) -> dict[str, str]:
        """The devices in session now: ``{device id: transport}``."""
        return {device: s.ready.transport for device, s in self._sessions.items()}

    async def wait_connected(self, count: int) -> None:
        """Wait until ``count`` devices are in session (the caller bounds the wait)."""
        await self._wait(lambda: len(self._sessions) >= count)

    async def wait_sessions(self, count: int) -> None:
        """Wait until ``count`` sessions have started, ended ones included (caller bounds it)."""
        await self._wait(lambda: self.sessions >= count)

    async def wait_disconnected(self, device: str) -> None:
        """Wait until ``device`` is no longer in session (the caller bounds the wait)."""
        await self._wait(lambda: device not in self._sessions)

    async def _wait(self, done: Callable[[], bool]) -> None:
        while not done():
            self._changed.clear()
            await self._changed.wait()

    # -- sessions -------------------------------------------------------------------------------
    async def _serve(self, ready: LinkReady) -> None:
        """The daemon's ``LinkServer``: one live session on ``ready.link`` until it ends."""
        if self._closing or len(self._running) >= MAX_SESSIONS:
            log.warning("daemon.link.refused", extra={"fields": {
                "transport": ready.transport, "address": ready.address,
                "reason": "closing" if self._closing else "too many sessions"}})
            return
        session = _Session(ready, asyncio.Event())
        self._running.add(session)
        self.sessions += 1
        self._changed.set()

        def on_event(event: Event) -> None:
            if self.on_session_event is not None:
                self.on_session_event(ready.transport, event)
            if isinstance(event, Authenticated):
                self._admit(session, event.peer)
            elif isinstance(event, SpaceSynced) and session.device is not None:
                self._synced(session.device, event.space)
            elif isinstance(event, Closed):
                log.info("daemon.session.closed", extra={"fields": {
                    "transport": ready.transport, "address": ready.address, "code": event.code,
                    "reason": event.reason}})
        try:
            await run_session(self.replica, ready.link, live=True, config=self.config,
                              stop=session.stop, on_event=on_event, spaces=self.spaces,
                              maintain_interval=None,  # `_maintain` does it for all
                              relay=ready.transport not in NEIGHBOUR_TRANSPORTS)
        finally:
            self._running.discard(session)
            self._ended(session)
            self._changed.set()

    def _admit(self, session: _Session, device: str) -> None:
        session.device = device
        current = self._sessions.get(device)
        if current is not None and current is not session:
            if prefers(self.replica.device_id, device, session.ready, current.ready):
                current.stop.set()
            else:
                session.stop.set()
                return
        self._sessions[device] = session
        info = self.devices.pop(device, None)
        if info is None:
            info = DeviceStatus(device, "", "", True, "")
        info.transport, info.address = session.ready.transport, session.ready.address
        info.connected, info.since = True, _iso(time.time())
        info.sessions += 1
        self.devices[device] = info
        while len(self.devices) > MAX_DEVICES:
            stale = next((d for d in self.devices if d not in self._sessions), None)
            if stale is None:
                break
            del self.devices[stale]
        self._changed.set()
        self._status_changed()

    def _synced(self, device: str, space: str) -> None:
        info = self.devices.get(device)
        if info is not None:
            info.last_synced[space] = _iso(time.time())
            self._status_changed()

    def _ended(self, session: _Session) -> None:
        device = session.device
        if device is None or self._sessions.get(device) is not session:
            return
        del self._sessions[device]
        if (info := self.devices.get(device)) is not None:
            info.connected = False
        self._status_changed()

    async def _maintain(self) -> None:
        """While sessions run: seal due edits and read other processes' edits, every
        ``MAINTAIN_INTERVAL``; the replica's observers then wake every session. Idle (no
        session): waits for one, no timer."""
        while not self._closing:
            if not self._running:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                self.replica.maintain()
                self.replica.refresh()
            except CrdtSyncError as exc:  # a store that cannot be read now; sessions go on
                log.warning("daemon.maintain.failed", extra={"fields": {"error": str(exc)}})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), MAINTAIN_INTERVAL)

    # -- discovery events -----------------------------------------------------------------------
    def _peer_event(self, event: PeerEvent) -> None:
        self._candidate_event(event)
        if self.on_peer_event is not None:
            self.on_peer_event(event)

    def _transport_changed(self) -> None:
        self._changed.set()
        self._status_changed()

    def _candidate_event(self, event: PeerEvent) -> None:
        now = _iso(time.time())
        key = (event.transport, event.key)
        if isinstance(event, PeerFound | LinkReady):
            self.candidates.pop(key, None)
            self.candidates[key] = CandidateStatus(event.transport, event.key[:128],
                                                   event.address[:256], now)
            while len(self.candidates) > MAX_CANDIDATES:
                self.candidates.popitem(last=False)
        elif isinstance(event, PeerLost) and (seen := self.candidates.get(key)) is not None:
            seen.lost = now
        self._status_changed()

    # -- status ---------------------------------------------------------------------------------
    def status(self, *, running: bool = True) -> dict[str, Any]:
        """What ``daemon.json`` holds (see ``crdt-sync status``)."""
        return {"pid": os.getpid(), "running": running, "updated": _iso(time.time()),
                "transports": [t.name for t in self.transports],
                "transport_states": [asdict(slot.state) for slot in self._slots],
                "lan_addresses": self.addresses,
                "lan_port": getattr(self.lan_transport, "port", None),
                "devices": {d: asdict(info) for d, info in self.devices.items()},
                "candidates": [asdict(c) for c in self.candidates.values()]}

    def _status_changed(self) -> None:
        if self.status_file is None or self._write_handle is not None or self._closed:
            return
        loop = asyncio.get_running_loop()
        self._write_handle = loop.call_later(STATUS_INTERVAL, self._write_status)

    def _write_status(self, running: bool = True) -> None:
        self._write_handle = None
        if self.status_file is None:
            return
        tmp = self.status_file.with_name(self.status_file.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.status(running=running)))
            os.replace(tmp, self.status_file)
        except OSError as exc:  # status is best effort: syncing goes on without it
            log.warning("daemon.status.unwritable", extra={"fields": {"error": str(exc)}})

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def read_status(data: Path) -> dict[str, Any] | None:
    """The last status a daemon wrote in data directory ``data``, or None."""
    try:
        loaded = json.loads((data / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None

