"""The relay server (aiohttp): the sync protocol over WebSocket at ``/v1/sync``, plus
``/healthz`` and Prometheus ``/metrics``.

A thin shell: each connection runs the same sans-I/O session as every peer, over a
:class:`~transports.websocket.WebSocketLink`, against :class:`~relay.host.RelayHost`.
Memory stays bounded: no document in RAM, each session sends at most its window of
batches (from the bounded in-memory tail of new envelopes, or from SQLite when it is behind
that), and a client that stops reading is dropped after ``send_timeout`` (it catches up
from storage when it comes back). A device over its rate is paced, not refused: its ACKs
are held back until its budget refills (:mod:`relay.pacing`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from crdt_sync.protocol import Closed, Event, Quarantined, Received, Session, SessionConfig
from crdt_sync.protocol.events import HeldBack
from crdt_sync.protocol.messages import (
    E_GOING_AWAY,
    E_LIMIT,
    E_NORMAL,
    MessageType,
    ProtocolViolation,
    peek_type,
)
from crdt_sync.protocol.session import RELIABLE_LINK
from crdt_sync.transports.base import LinkClosed
from crdt_sync.transports.driver import Hooks, drive
from crdt_sync.transports.websocket import CLOSE_GOING_AWAY, SYNC_PATH, WS_MAX_MESSAGE, WebSocketLink

from .admission import Admission
from .bus import RelayBus
from .client_address import Address, ClientAddress, TrustedProxies, parse_networks, resolve
from .config import AllowList, RelayConfig
from .host import RelayHost
from .logs import setup_logging
from .members import DATA_REFUSALS, MEMBERSHIP_SKIPS
from .metrics import RelayMetrics
from .pacing import Flow, Pacer
from .proxy_protocol import ProxiedPeers, Sniffer
from .shared_store import SharedRelayStore
from .storage import RelayStore, backend_for

log = logging.getLogger("crdt_sync.relay")
#: The interpreter's thread switch interval while a relay runs (see RelayServer.start).
SWITCH_INTERVAL = 0.0005
#: Frames up to this size are sent without a timer when the link has nothing queued (the
#: transport's high-water mark is 64 KiB).
_SMALL_FRAME = 16 * 1024
#: The request header each ``forwarded_header`` setting reads.
_HEADER_NAMES = {"x-forwarded-for": "X-Forwarded-For", "forwarded": "Forwarded"}


@dataclass(eq=False)  # identity hashing: connections live in sets
class _Connection:
    hooks: Hooks
    label: str
    spaces: list[str] = field(default_factory=list)
    woken_at: float | None = None
    #: drops the TCP connection at once (an unauthenticated connection evicted for a newcomer)
    abort: Callable[[], None] | None = None
    device: str | None = None  # once authenticated
    #: the TCP peer, when ``label`` is a client address a trusted proxy forwarded
    proxy: str | None = None


class _CountingLink:
    """Counts bytes for the metrics and drops a client that stops reading."""

    def __init__(self, link: WebSocketLink, metrics: RelayMetrics, send_timeout: float,
                 stopping: asyncio.Event, flow: Flow, max_stall: float) -> None:
        self.link, self.metrics, self.send_timeout = link, metrics, send_timeout
        self.stopping = stopping
        self.flow, self.max_stall = flow, max_stall

    @property
    def label(self) -> str:
        return self.link.label

    async def send(self, frame: bytes) -> None:
        if len(frame) <= _SMALL_FRAME and self.link.backlog == 0:
            # Nothing queued and a frame far below the transport's high-water mark: the
            # write goes to the kernel or at worst into the buffer, it cannot wait.
            await self.link.send(frame)
            self.metrics.pending_bytes[1] += len(frame)
            return
        try:
            async with asyncio.timeout(self.send_timeout):  # no task per frame, unlike wait_for
                await self.link.send(frame)
        except TimeoutError:
            self.metrics.rejections.labels("slow-consumer").inc()
            raise LinkClosed(f"{self.label} did not read for {self.send_timeout:g} s") from None
        self.metrics.pending_bytes[1] += len(frame)

    def send_nowait(self, frame: bytes) -> bool:
        if not self.link.send_nowait(frame):
            return False
        self.metrics.pending_bytes[1] += len(frame)
        return True

    async def recv(self) -> bytes:
        frame = await self.link.recv()
        self.metrics.pending_bytes[0] += len(frame)
        wait = self.flow.overdrawn()
        if wait > 0:  # far over its rate: its next frames wait in TCP (bounded below the
            self.metrics.read_stalls.inc()  # session's dead_after, so it is not dropped)
            await asyncio.sleep(min(wait, self.max_stall))
        return frame

    async def close(self) -> None:
        if self.stopping.is_set():  # decided here: the driver closes the link before it returns
            self.link.close_code = CLOSE_GOING_AWAY
        await self.link.close()


class RelayServer:
    """One relay process. ``await start()``, then ``await stop()`` (SIGTERM does it)."""

    def __init__(self, config: RelayConfig, session_config: SessionConfig | None = None) -> None:
        self.config = config
        # The relay's setting bounds how long a connection may stay unauthenticated; its ACKs
        # mean "durable" and never wait for the next ones (ack_delay 0).
        self.session_config = replace(session_config or RELIABLE_LINK,
                                      handshake_timeout=config.handshake_timeout, ack_delay=0.0)
        if config.data is None:
            raise ValueError("the relay needs a data directory")
        # On Postgres other relay nodes may write too: a store that finds out (shared_store.py).
        kind = RelayStore if config.store is None else SharedRelayStore
        self.store = kind(config.data, enforce_membership=config.membership,
                          backend=backend_for(config.store))
        self.store.on_append = self._fan_out
        self.metrics = RelayMetrics()
        self.store.on_commit = lambda seconds: self.metrics.commits.inc()
        self.allow = AllowList(config.allow_list)
        self.stopping = asyncio.Event()
        self._subscribers: dict[str, set[_Connection]] = {}
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: authenticated sessions per device
        self._devices: dict[str, int] = {}
        self.admission: Admission[_Connection] = Admission(
            config.max_unauthenticated, config.max_unauthenticated_per_address, config.max_connections)
        self.pacer = Pacer(config.rate_envelopes, config.rate_bytes, self.session_config.window,
                           on_hold=self.metrics.paced.observe)
        self._runner: web.AppRunner | None = None
        #: the listening socket (ours, not an aiohttp site: see relay/proxy_protocol.py)
        self._listener: asyncio.Server | None = None
        self.trusted = TrustedProxies(parse_networks(config.trusted_proxies))
        #: what PROXY headers said, per connection; connections still being read for one
        self.proxied = ProxiedPeers()
        self._sniffing: set[Sniffer] = set()
        self.port = config.port
        #: device ids of relay nodes (the scale-out issue): served every space, not gated
        #: by membership (the allow-list still applies)
        self.peer_relays: set[str] = set()
        self._switch_before: float | None = None
        #: the other nodes of the same store (relay/bus.py); made by start() (its node name
        #: may need the port)
        self.bus: RelayBus | None = None

    @property
    def device_id(self) -> str:
        return self.store.identity.id

    # -- lifecycle -----------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(SYNC_PATH, self._sync)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> None:
        # The group commit's writer thread takes the GIL back after each SQLite step; with
        # the default 5 ms switch interval a busy event loop holds it that long each time,
        # and a commit of a few dozen rows (so its ACKs) waits for tens of milliseconds.
        # Restored by stop(): the setting is the whole process's (an app or a test may run
        # a relay in its own process).
        self._switch_before = sys.getswitchinterval()
        if self._switch_before > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
        self._runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        context = None
        if self.config.cert is not None and self.config.key is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.config.cert, self.config.key)
        http = self._runner.server  # a protocol factory, as for loop.create_server
        assert http is not None
        # Each connection first goes through a Sniffer, which reads the PROXY header a
        # trusted proxy may send, then hands the connection to aiohttp (proxy_protocol.py).
        # Under TLS the sniffer would sit above TLS, where no balancer puts that header.

        def accept() -> Sniffer:
            return Sniffer(http, self.trusted, self.proxied, self.config.handshake_timeout,
                           self._proxy_header, self._proxy_refused, self._sniffing, read=context is None)

        self._listener = await asyncio.get_running_loop().create_server(
            accept, self.config.host, self.config.port, ssl=context, backlog=128)
        self.port = int(self._listener.sockets[0].getsockname()[1])  # the real port when 0 was asked
        if isinstance(self.store, SharedRelayStore):
            node = self.config.node or f"{socket.gethostname()}-{self.port}"
            self.bus = RelayBus(self.config.bus, node, self.store, self._subscribers.keys, self.metrics,
                                recheck=self.config.bus_recheck)
            self.store.on_durable = self.bus.publish
            await self.bus.start()
        log.info("relay.start", extra={"fields": {
            "device": self.device_id, "url": self.url, "data": str(self.config.data),
            "allow_list": str(self.config.allow_list) if self.config.allow_list else "open",
            "trusted_proxies": [str(n) for n in self.trusted.networks]}})

    @property
    def url(self) -> str:
        scheme = "wss" if self.config.cert else "ws"
        return f"{scheme}://{self.config.host}:{self.port}"

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let sessions say going-away, commit, close. Idempotent."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.pacer.release()  # held ACKs go now: the sessions say going-away after them
        log.info("relay.stopping", extra={"fields": {"sessions": len(self._connections)}})
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        await self.store.commit()
        if self.bus is not None:
            await self.bus.stop()
        if self._listener is not None:
            self._listener.close()
        for sniffer in list(self._sniffing):
            sniffer.refuse("the relay is stopping")
        if self._runner is not None:
            await self._runner.cleanup()
        self.store.close()
        if self._switch_before is not None:
            sys.setswitchinterval(self._switch_before)
        log.info("relay.stopped", extra={"fields": {}})

    def per_name_state(self) -> dict[str, int]:
        """How many entries the relay keeps per space name, device or address: each one
        belongs to an open connection (or, for a device's rate budget, to the few seconds
        until it is full again: counting them forgets the refilled ones)."""
        return {"subscribed_spaces": len(self._subscribers),
                "spaces_in_memory": self.store.spaces_in_memory(),
                "devices": len(self._devices), "rate_buckets": self.pacer.sweep(),
                "unauthenticated_addresses": self.admission.addresses(),
                "proxy_headers": len(self._sniffing),  # connections still sending a PROXY header
                "unauthenticated": self.admission.unauthenticated,
                "authenticated": self.admission.authenticated}

    def reload_allow_list(self) -> None:
        count = self.allow.reload()
        log.info("relay.allow_list.reload", extra={"fields": {"devices": count}})

    # -- HTTP endpoints ------------------------------------------------------------------
    async def _healthz(self, request: web.Request) -> web.Response:
        # The bus is reported, not required: without it the node serves and stores, and the
        # other nodes' commits reach it at the next re-check.
        storage = self.store.healthy()
        ok = storage and not self.stopping.is_set()
        return web.json_response({"ok": ok, "storage": storage,
                                  "bus": self.bus.status if self.bus is not None else "off"},
                                 status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metrics.store_bytes.set(self.store.size_bytes())
        for name, backend in (("writer", self.store.store), ("reader", self.store.reader)):
            stats = getattr(backend, "pool_stats", None)
            if stats is not None:
                for stat, value in stats().items():
                    self.metrics.pool.labels(name, stat).set(value)
        return web.Response(body=self.metrics.render(), content_type="text/plain")

    async def _sync(self, request: web.Request) -> web.StreamResponse:
        if self.stopping.is_set():
            raise web.HTTPServiceUnavailable(text="relay is shutting down; retry later")
        client = self._client_address(request)
        label = client.address
        conn = _Connection(Hooks(durable=self.store.durable), label,
                           proxy=client.peer if client.source != "peer" else None)
        transport = request.transport
        if transport is not None:
            conn.abort = transport.abort
        # Before the WebSocket opens: a refused stranger costs no reader and no session.
        refusal, evicted = self.admission.arrive(conn, label)
        if refusal is not None:
            self.metrics.rejections.labels("address-limit").inc()
            raise web.HTTPTooManyRequests(text=refusal, headers={"Retry-After": "5"})
        if evicted is not None:
            self.metrics.rejections.labels("handshake-evicted").inc()
            if evicted.abort is not None:
                evicted.abort()
        self.metrics.unauthenticated.set(self.admission.unauthenticated)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            # No permessage-deflate: a small compressed message could inflate to the message
            # limit before anyone authenticated (devices do not ask for it).
            ws = web.WebSocketResponse(max_msg_size=WS_MAX_MESSAGE, autoping=True, compress=False)
            await ws.prepare(request)
            await self._serve(WebSocketLink(ws, label), conn)
        finally:
            self._tasks.discard(task)
            self.admission.leave(conn)
            self.metrics.unauthenticated.set(self.admission.unauthenticated)
        return ws

    def _client_address(self, request: web.Request) -> ClientAddress:
        """The address this request counts under (relay/client_address.py)."""
        header = self.config.forwarded_header
        name = _HEADER_NAMES.get(header)
        lines = request.headers.getall(name, []) if name is not None else []
        client = resolve(request.remote, self.proxied.get(request.transport), lines, header, self.trusted)
        if client.malformed is not None:
            self.metrics.client_addresses.labels("header-malformed").inc()
            log.warning("client_address.malformed", extra={"fields": {
                "remote": client.address, "peer": client.peer, "reason": client.malformed}})
        elif client.source == header:
            self.metrics.client_addresses.labels("header").inc()
        elif client.ignored:
            self.metrics.client_addresses.labels("header-ignored").inc()
        return client

    def _proxy_header(self, peer: str, source: Address | None, version: int) -> None:
        self.metrics.client_addresses.labels("proxy-protocol").inc()

    def _proxy_refused(self, peer: str, reason: str) -> None:
        self.metrics.client_addresses.labels("proxy-refused").inc()
        log.warning("proxy.refused", extra={"fields": {"peer": peer, "reason": reason}})

    # -- one session ---------------------------------------------------------------------
    async def _serve(self, link: WebSocketLink, conn: _Connection) -> None:
        label = conn.label
        flow = self.pacer.flow()  # the rate limit as flow control: see relay/pacing.py
        store = self.store
        conn.hooks = Hooks(durable=lambda: flow.hold(store.durable()))
        host = RelayHost(store, lambda device: self._admit(conn, device), flow.charge, self._paced(flow),
                         flow.stored, ungated=self.peer_relays.__contains__)
        host.max_clock_skew_ms = int(self.config.max_clock_skew * 1000)  # the session's hold-back
        session = Session(host, time.monotonic(), self.session_config)

        def shared(spaces: list[str]) -> None:
            conn.spaces = spaces
            for space in spaces:
                self._subscribers.setdefault(space, set()).add(conn)
            if self.bus is not None:
                self.bus.watch()

        def sent(frames: list[bytes]) -> None:
            flow.answered(frames)
            if conn.woken_at is not None and any(peek_type(f) is MessageType.ENVELOPES for f in frames):
                self.metrics.fanout.observe(time.monotonic() - conn.woken_at)
                conn.woken_at = None

        def event(ev: Event) -> None:
            if isinstance(ev, Received):
                self.metrics.envelopes_in.inc(ev.applied)
            elif isinstance(ev, HeldBack):  # a device's clock is too far ahead: told, not stored
                self.metrics.rejections.labels("clock-skew").inc()
            elif isinstance(ev, Closed):
                flow.release()  # its last frames (ERROR, BYE) need not wait out the debt
                if not ev.by_peer and ev.code not in (E_NORMAL, E_GOING_AWAY):
                    self.metrics.rejections.labels(ev.name).inc()
            elif isinstance(ev, Quarantined):
                # by_peer: the device set aside an author the relay sent (it stops sending it
                # that chain in this session; the relay takes no one device's word for more).
                if not ev.by_peer:  # membership's refusals that set no quarantine: their own label
                    told = ev.reason in DATA_REFUSALS or ev.reason in MEMBERSHIP_SKIPS
                    self.metrics.rejections.labels("membership" if told else "quarantined").inc()
                log.info("author.refused-by-peer" if ev.by_peer else "author.quarantined",
                         extra={"fields": {"peer": session.peer, "remote": label, "space": ev.space,
                                           "author": ev.author, "from_seq": ev.from_seq,
                                           "reason": ev.reason, "detail": ev.detail}})

        session.on_shared = shared
        self._connections.add(conn)
        self.metrics.connections.inc()
        self.metrics.connections_total.inc()
        counting = _CountingLink(link, self.metrics, self.config.send_timeout, self.stopping, flow,
                                 self.session_config.dead_after / 2)
        try:
            outcome = await drive(session, counting, conn.hooks, live=True, stop=self.stopping,
                                  on_event=event, on_send=sent)
        finally:
            flow.close()
            self._connections.discard(conn)
            self._unsubscribe(conn)
            self.metrics.connections.dec()
            self.metrics.envelopes_out.inc(session.envelopes_out)
        closed = outcome.closed
        log.info("session.closed", extra={"fields": {
            "peer": outcome.peer, "remote": label, **({"proxy": conn.proxy} if conn.proxy else {}),
            "code": closed.code if closed else None,
            "reason": closed.reason if closed else None, "by_peer": closed.by_peer if closed else None,
            "envelopes_in": session.envelopes_in, "envelopes_out": session.envelopes_out,
            "bytes_in": outcome.bytes_in, "bytes_out": outcome.bytes_out,
            "replays": session.replays}})  # SEALED frames dropped as replays (protocol 3)

    def _unsubscribe(self, conn: _Connection) -> None:
        """The connection ended: no state it alone named stays behind (its spaces, its
        device's rate buckets once they are full again)."""
        for space in conn.spaces:
            subscribers = self._subscribers.get(space)
            if subscribers is None:
                continue
            subscribers.discard(conn)
            if not subscribers:
                del self._subscribers[space]
                self.store.release(space)
        device = conn.device
        if device is not None:
            self._devices[device] -= 1
            if not self._devices[device]:
                del self._devices[device]

    def _admit(self, conn: _Connection, device: str) -> str | None:
        refusal = self.allow.refusal(device)
        if refusal is not None:
            self.metrics.rejections.labels("not-allowed").inc()
            log.warning("session.refused", extra={"fields": {"peer": device, "reason": refusal}})
            return refusal
        limit = self.admission.authenticate(conn)
        if limit is not None:
            self.metrics.rejections.labels("connection-limit").inc()
            raise ProtocolViolation(E_LIMIT, limit)
        self.metrics.unauthenticated.set(self.admission.unauthenticated)
        conn.device = device
        self._devices[device] = self._devices.get(device, 0) + 1
        return None

    def _paced(self, flow: Flow) -> Callable[[str], str | None]:
        def check(space: str) -> str | None:
            refusal = self.store.outage.refusal()
            if refusal is not None:
                self.metrics.rejections.labels("store-unavailable").inc()
                return refusal
            refusal = flow.check(space)
            if refusal is not None:
                self.metrics.rejections.labels("flow-control").inc()
            return refusal
        return check

    def _fan_out(self, space: str) -> None:
        subscribers = self._subscribers.get(space)
        if not subscribers:
            return
        now = time.monotonic()
        for conn in subscribers:
            if conn.woken_at is None:
                conn.woken_at = now
            conn.hooks.changed.set()


async def serve(config: RelayConfig, ready: asyncio.Event | None = None) -> int:
    """Run a relay until SIGTERM or SIGINT; SIGHUP reloads the allow-list. Returns 0."""
    setup_logging(config.log_format, config.log_level)
    server = RelayServer(config)
    await server.start()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)
    loop.add_signal_handler(signal.SIGHUP, _reloader(server))
    if ready is not None:
        ready.set()
    print(f"crdt-sync relay {server.device_id} listening on {server.url}", flush=True)
    await done.wait()
    await server.stop()
    return 0


def _reloader(server: RelayServer) -> Any:
    def reload() -> None:
        try:
            server.reload_allow_list()
        except Exception as exc:  # keep serving with the old list; say why
            log.error("relay.allow_list.error", extra={"fields": {"error": str(exc)}})
    return reload
