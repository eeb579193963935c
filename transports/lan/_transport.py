"""The LAN transport: a WebSocket listener, mDNS advertise + browse, and live sessions.

:class:`LanTransport` is an async context manager that owns every task it starts. Sessions
are the ordinary sync session (:func:`~transports.driver.run_session`, live), so an idle
session costs one ping per ``SessionConfig.ping_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator
from types import TracebackType

from aiohttp import web
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from crdt_sync import Replica
from crdt_sync.protocol import Authenticated, Event, SessionConfig
from crdt_sync.protocol.messages import MAX_VERSION, MIN_VERSION
from crdt_sync.protocol.session import RELIABLE_LINK

from ..driver import run_session
from ..interface import EventStream, LinkReady, LinkServer, PeerEvent, PeerFound, PeerLost
from ..websocket import SYNC_PATH, WS_MAX_MESSAGE, ConnectFailed, WebSocketLink, connect
from ._peers import Candidate, NewestFirst, PeerTable, Retries, dials, keeps
from ._txt import SERVICE_TYPE, TxtError, TxtRecord, new_token, parse_txt

log = logging.getLogger("crdt_sync.lan")
#: Dials in flight at once (the dialling tasks), candidates waiting to be dialled, names
#: waiting to be resolved, resolutions at once: a flood of announcements waits here, bounded,
#: newest first (``NewestFirst``).
MAX_DIALS = 4
MAX_DIAL_QUEUE = 64
MAX_PENDING = 256
RESOLVERS = 8
RESOLVE_TIMEOUT_MS = 1500
DIAL_TIMEOUT = 5.0
#: A static peer's session that lasted less than this (refused, or a duplicate the other
#: side dropped) does not reset the redial backoff: no tight redial loop.
STABLE_SESSION = 5.0
STATIC_BACKOFF = (0.2, 10.0)
#: How often the names due to be tried again (``Retries``) are looked at.
RETRY_TICK = 0.5

#: The protocol versions this build speaks, as its TXT record names them (a peer with one in
#: common is dialled: the session then runs at the highest both speak).
VERSIONS = tuple(range(MIN_VERSION, MAX_VERSION + 1))


def _url(host: str, port: int) -> str:
    return f"ws://[{host}]:{port}" if ":" in host else f"ws://{host}:{port}"


class LanTransport:
    """Advertise, browse, dial and serve sessions on pinned interface addresses.

    Args:
        replica: the replica every session syncs.
        addresses: interface addresses to listen and multicast on (IPv4 and/or IPv6).
        static_peers: ``(host, port)`` pairs dialled regardless of discovery.
        mdns: advertise and browse (False: static peers only).
        port: the port to listen on (0: an ephemeral one, read it from ``port`` after start).
        serve: runs the session on each link (the daemon's); by default a live session per
            link, one per device (``keeps``).
        dial_timeout: how long a dial (TCP + WebSocket handshake) may take.
    """

    name = "lan"

    def __init__(self, replica: Replica, addresses: list[str], *,
                 static_peers: list[tuple[str, int]] | None = None, mdns: bool = True,
                 config: SessionConfig | None = None, token: str | None = None, port: int = 0,
                 serve: LinkServer | None = None, dial_timeout: float = DIAL_TIMEOUT) -> None:
        if not addresses:
            raise ValueError("pin at least one interface address")
        self.replica = replica
        self.addresses = [str(ipaddress.ip_address(a)) for a in addresses]
        self.static_peers = list(static_peers or [])
        self.mdns = mdns
        self.config = config or RELIABLE_LINK
        self.token = token or new_token()
        self.table = PeerTable()
        self.port = port
        self.serve = serve
        self.dial_timeout = dial_timeout
        self._events = EventStream()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: NewestFirst[bool] = NewestFirst(MAX_PENDING)  # name -> is a retry
        self._retries: Retries[tuple[tuple[str, ...], int]] = Retries()  # name -> where to dial
        self._pending_changed = asyncio.Event()
        self._to_dial: NewestFirst[tuple[tuple[str, ...], int]] = NewestFirst(MAX_DIAL_QUEUE)
        self._dial_changed = asyncio.Event()
        self._sessions: dict[str, tuple[asyncio.Event, bool]] = {}  # device id -> (stop, outbound)
        self._dialling: set[str] = set()
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------
    async def __aenter__(self) -> LanTransport:
        try:
            await self._listen()
            if self.mdns:
                await self._advertise()
            for host, port in self.static_peers:
                self._spawn(self._static(host, port))
            for _ in range(MAX_DIALS):
                self._spawn(self._dialer())
            self._spawn(self._retrier())
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._pending.clear()
        self._to_dial.clear()
        self._pending_changed.set()  # the resolvers and dialers wake and see the stop
        self._dial_changed.set()
        for stop, _ in list(self._sessions.values()):
            stop.set()
        if self._browser is not None:
            await self._browser.async_cancel()
        if self._azc is not None:
            if self._info is not None:
                with contextlib.suppress(Exception):  # a goodbye is best effort at shutdown
                    await self._azc.async_unregister_service(self._info)
            await self._azc.async_close()
        tasks = list(self._tasks)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.dial_timeout):
                await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        self._events.close()

    async def events(self) -> AsyncIterator[PeerEvent]:
        """The events in order, until the transport closes (``DiscoveryTransport``)."""
        async for event in self._events:
            yield event

    @property
    def dropped_events(self) -> int:
        return self._events.dropped

    @property
    def dialling(self) -> int:
        """Candidates waiting to be dialled or being dialled (at most ``MAX_DIAL_QUEUE +
        MAX_DIALS``; ``MAX_DIALS`` at once)."""
        return len(self._to_dial) + len(self._dialling)

    @property
    def pending(self) -> int:
        """Announced names waiting to be resolved (at most ``MAX_PENDING``)."""
        return len(self._pending)

    @property
    def retrying(self) -> int:
        """Names waiting to be resolved or dialled again (at most ``MAX_RETRIES``)."""
        return len(self._retries)

    # -- listening and advertising ----------------------------------------------------------------
    async def _listen(self) -> None:
        app = web.Application()
        app.router.add_get(SYNC_PATH, self._accept)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        for address in self.addresses:
            site = web.TCPSite(self._runner, address, self.port)
            await site.start()
            if self.port == 0:  # the first site picked the ephemeral port; the others share it
                self.port = int(self._runner.addresses[0][1])

    async def _advertise(self) -> None:
        v6 = any(":" in a for a in self.addresses)
        v4 = any(":" not in a for a in self.addresses)
        version = IPVersion.All if v4 and v6 else IPVersion.V6Only if v6 else IPVersion.V4Only
        self._azc = AsyncZeroconf(interfaces=list(self.addresses), ip_version=version)
        instance = f"crdtsync-{self.token[:12]}"
        packed = [ipaddress.ip_address(a).packed for a in self.addresses]
        self._info = AsyncServiceInfo(SERVICE_TYPE, f"{instance}.{SERVICE_TYPE}", port=self.port,
                                      addresses=packed, server=f"{instance}.local.",
                                      properties=TxtRecord(VERSIONS, self.token).properties())
        # No probing (RFC 6762 8.1, about a second before the first announcement): the name
        # holds 48 random bits drawn at every start, so it does not collide, and probing
        # would not stop a stranger claiming it anyway (mDNS is unauthenticated).
        await self._azc.async_register_service(self._info, cooperating_responders=True)
        self._browser = AsyncServiceBrowser(self._azc.zeroconf, [SERVICE_TYPE],
                                            handlers=[self._on_change])
        for _ in range(RESOLVERS):
            self._spawn(self._resolver())

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            self._retries.forget(name)
            if self.table.lost(name) is not None:
                self._put(PeerLost(self.name, name, "goodbye"))
            return
        self._queue_resolve(name, retry=False)

    def _queue_resolve(self, name: str, *, retry: bool) -> None:
        for evicted, _ in self._pending.put(name, retry):
            self._retry_later(evicted)
        self._pending_changed.set()

    def _queue_dial(self, name: str, addresses: tuple[str, ...], port: int) -> None:
        for evicted, target in self._to_dial.put(name, (addresses, port)):
            self._retry_later(evicted, target)
        self._dial_changed.set()

    def _retry_later(self, name: str, target: tuple[tuple[str, ...], int] | None = None) -> None:
        """``name`` was lost to a full queue, a timeout or a failed dial: try it again later,
        dialling ``target`` or resolving the name again (bounded: ``Retries``)."""
        if not self._stop.is_set():
            self._retries.fail(name, asyncio.get_running_loop().time(), target)

    async def _retrier(self) -> None:
        """Puts the names due to be tried again back in line: a dial where there is a
        target, else a resolution (with mDNS), else nothing."""
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), RETRY_TICK)
            for name, target in self._retries.due(loop.time()):
                if target is not None and name not in self._dialling:
                    self._queue_dial(name, *target)
                elif target is None and self._azc is not None:
                    self._queue_resolve(name, retry=True)
                else:
                    self._retries.forget(name)

    async def _resolver(self) -> None:
        """One of ``RESOLVERS`` tasks: resolves announced names, newest first."""
        while not self._stop.is_set():
            item = self._pending.pop()
            if item is None:
                self._pending_changed.clear()
                await self._pending_changed.wait()
                continue
            await self._resolve(*item)

    async def _resolve(self, name: str, retry: bool = False) -> None:
        assert self._azc is not None
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._azc.zeroconf, RESOLVE_TIMEOUT_MS):
            self.table.refuse(name, "did not resolve")
            self._retry_later(name)
            return
        try:
            record = parse_txt(info.properties)
        except TxtError as exc:
            self.table.refuse(name, str(exc))
            self._retries.forget(name)
            return
        if info.port is not None:
            self.candidate(name, record, tuple(info.parsed_addresses()), info.port, retry=retry)

    def candidate(self, name: str, record: TxtRecord, addresses: tuple[str, ...], port: int, *,
                  retry: bool = False) -> None:
        """What a resolved announcement leads to: the table, a PeerFound, maybe a dial (bounded).

        ``retry``: the name is being tried again, so it is dialled even if unchanged. Public
        for the flood tests, which feed it announcements without a multicast network.
        """
        if not addresses or record.token == self.token or self._stop.is_set():
            self._retries.forget(name)
            return
        loop = asyncio.get_running_loop()
        changed = self.table.seen(Candidate(name, record.token, addresses, port, loop.time()))
        if changed:
            self._put(PeerFound(self.name, name, _url(addresses[0], port)))
        ours = any(v in VERSIONS for v in record.versions) and dials(self.token, record.token)
        wanted = (changed or retry) and ours
        if not wanted:
            if retry:  # resolved, and not ours to dial (the peer dials, or another version)
                self._retries.forget(name)
        elif name not in self._dialling:
            self._queue_dial(name, addresses, port)

    # -- dialling and sessions ------------------------------------------------------------------
    async def _dialer(self) -> None:
        """One of ``MAX_DIALS`` tasks: dials discovered candidates, newest first; a session
        that opens runs in a task of its own, so a dialer only ever waits for a dial."""
        while not self._stop.is_set():
            item = self._to_dial.pop()
            if item is None:
                self._dial_changed.clear()
                await self._dial_changed.wait()
                continue
            name, (addresses, port) = item
            self._dialling.add(name)
            try:
                for host in addresses:  # the same device over two addresses: the first that answers
                    url = _url(host, port)
                    try:
                        link = await self._connect(url)
                    except ConnectFailed as exc:
                        self.table.refuse(name, str(exc))
                        continue
                    self._retries.forget(name)
                    self._spawn(self._run(link, name, url, outbound=True))
                    break
                else:
                    self.table.failed(name)
                    self._retry_later(name, (addresses, port))
            finally:
                self._dialling.discard(name)

    async def _dial(self, key: str, host: str, port: int) -> bool:
        """A static peer's dial, and its session until it ends (False: no connection)."""
        try:
            link = await self._connect(_url(host, port))
        except ConnectFailed as exc:
            self.table.refuse(key, str(exc))
            return False
        await self._run(link, key, _url(host, port), outbound=True)
        return True

    async def _connect(self, url: str) -> WebSocketLink:
        """``connect``, given up at once when the transport closes (a dial to a peer that
        never answers does not hold closing up for ``dial_timeout``)."""
        if self._stop.is_set():
            raise ConnectFailed("the transport is closing")
        dialling = asyncio.ensure_future(connect(url, timeout=self.dial_timeout))
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({dialling, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not dialling.done():
                dialling.cancel()
            await asyncio.gather(dialling, stopping, return_exceptions=True)
        if dialling.cancelled():
            raise ConnectFailed("the transport is closing")
        return dialling.result()

    async def _static(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        first, cap = STATIC_BACKOFF
        delay = first
        self._put(PeerFound(self.name, f"{host}:{port}", _url(host, port)))
        while not self._stop.is_set():
            started = loop.time()
            ok = await self._dial(f"{host}:{port}", host, port)
            stable = ok and loop.time() - started >= STABLE_SESSION
            delay = first if stable else min(delay * 2, cap)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _accept(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=WS_MAX_MESSAGE, autoping=True)
        await ws.prepare(request)
        address = request.remote or "?"
        await self._run(WebSocketLink(ws, address), address, address, outbound=False)
        return ws

    async def _run(self, link: WebSocketLink, key: str, address: str, *, outbound: bool) -> None:
        ready = LinkReady(self.name, key, address, link, outbound)
        if self.serve is not None:
            self._put(ready)
            try:
                await self.serve(ready)
            finally:
                await link.close()
                self._put(PeerLost(self.name, key, "session ended"))
            return
        stop = asyncio.Event()
        device: list[str] = []

        def on_event(event: Event) -> None:
            if isinstance(event, Authenticated):
                device.append(event.peer)
                self._admit(event.peer, stop, outbound)

        self._put(ready)
        try:
            await run_session(self.replica, link, live=True, config=self.config, stop=stop, relay=False,
                              on_event=on_event)
        finally:
            if device and self._sessions.get(device[0], (None, None))[0] is stop:
                del self._sessions[device[0]]
            self._put(PeerLost(self.name, key, "session ended"))

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

    def _put(self, event: PeerEvent) -> None:
        self._events.put(event)

    def _spawn(self, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

