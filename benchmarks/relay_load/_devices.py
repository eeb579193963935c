"""The simulated devices and their bookkeeping: a crdt-sync device (real handshake, then lean
pre-encoded frames) and a y-websocket client for pycrdt-websocket.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from typing import Any

from .._harness import BenchmarkError
from ._load import Histogram, Load, device_seed, parse_marker, yjs_updates
from ._wsclient import WsConn

#: Unacknowledged ENVELOPES batches a device keeps in flight (the session's window).
WINDOW = 4


def _ack_policy() -> tuple[float, int]:
    """How a device's live session ACKs the relay's frames: at most ``ack_delay`` s late, at
    once when ``ack_every`` frames wait (docs/PROTOCOL.md, "Delayed ACKs")."""
    from crdt_sync.protocol.config import RELIABLE_LINK

    return RELIABLE_LINK.ack_delay, RELIABLE_LINK.ack_every


# -- the generator's bookkeeping -------------------------------------------------------------
class Space:
    """One space (a room) as the generator sees it: members, their schedules, their counts."""

    def __init__(self, name: str, kind: str, rate: float, members: list[int], load: Load,
                 rng: random.Random) -> None:
        self.name, self.kind, self.rate = name, kind, rate
        self.interval = 1.0 / rate
        self.members = members  # global device indices; crdt-sync reorders them by device id
        self.phase: list[float] = []
        self.edits: list[int] = []
        self.window: list[tuple[int, int]] = []
        for _ in members:
            phase, edits, lo, hi = load.schedule(rate, rng)
            self.phase.append(phase)
            self.edits.append(edits)
            self.window.append((lo, hi))
        self.connected = [False] * len(members)
        self.sent_in_window = [0] * len(members)

    def reorder(self, order: list[int]) -> None:
        """Put the members in ``order`` (positions into the current lists)."""
        self.members = [self.members[i] for i in order]
        self.phase = [self.phase[i] for i in order]
        self.edits = [self.edits[i] for i in order]
        self.window = [self.window[i] for i in order]


class Stats:
    """Everything one generator process counts."""

    def __init__(self) -> None:
        self.t_go = math.inf  # when edit schedules start (monotonic clock, shared by processes)
        self.window = (math.inf, math.inf)
        self.latency = {"typing": Histogram(), "team": Histogram()}
        self.ack = Histogram()
        self.delivered_window_edits = {"typing": 0, "team": 0}
        self.delivered_in_window = 0  # deliveries (any edit) received inside the window
        self.accepted_in_window = 0
        self.accepted_window_edits = 0
        self.duplicates = 0
        self.errors: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        self.examples.setdefault(kind, detail[:300])

    def delivered(self, space: Space, pos: int, edit: int, now: float) -> None:
        lo, hi = self.window
        if lo <= now < hi:
            self.delivered_in_window += 1
        wlo, whi = space.window[pos]
        if wlo <= edit < whi:
            self.latency[space.kind].add(now - (self.t_go + space.phase[pos] + edit * space.interval))
            self.delivered_window_edits[space.kind] += 1

    def accepted(self, space: Space, pos: int, edit: int, now: float) -> None:
        lo, hi = self.window
        if lo <= now < hi:
            self.accepted_in_window += 1
        wlo, whi = space.window[pos]
        if wlo <= edit < whi:
            self.ack.add(now - (self.t_go + space.phase[pos] + edit * space.interval))
            self.accepted_window_edits += 1


class Device:
    """A simulated device: one connection, one space, a list of edits to send."""

    def __init__(self, stats: Stats, space: Space, pos: int) -> None:
        self.stats, self.space, self.pos = stats, space, pos
        self.conn: WsConn | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost = False

    @property
    def path(self) -> str:
        raise NotImplementedError

    def start(self, conn: WsConn) -> None:
        self.conn = conn

    def receive(self, data: bytes) -> None:
        try:
            self.on_message(data)
        except Exception as exc:  # a generator bug or a malformed frame: count it, keep going
            self.fail("generator error", f"{type(exc).__name__}: {exc}")

    def on_message(self, data: bytes) -> None:
        raise NotImplementedError

    def edit(self, k: int) -> None:
        raise NotImplementedError

    def on_lost(self, why: str) -> None:
        if self.lost:
            return
        self.lost = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        else:
            self.stats.error("connection lost", why)

    def fail(self, kind: str, detail: str) -> None:
        self.stats.error(kind, detail)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"{kind}: {detail}"))


# -- crdt-sync devices ------------------------------------------------------------------------
def _uint(major: int, n: int) -> bytes:
    """The canonical CBOR head of ``major`` type with argument ``n``."""
    if n < 24:
        return bytes((major | n,))
    if n < 0x100:
        return bytes((major | 24, n))
    if n < 0x10000:
        return bytes((major | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((major | 26,)) + n.to_bytes(4, "big")
    return bytes((major | 27,)) + n.to_bytes(8, "big")


def _read_uint(data: bytes, off: int) -> tuple[int, int]:
    head = data[off]
    n = head & 0x1F
    if n < 24:
        return n, off + 1
    size = 1 << (n - 24)
    return int.from_bytes(data[off + 1:off + 1 + size], "big"), off + 1 + size


class RelayDevice(Device):
    """A crdt-sync device: handshake through a real Session, then lean frames, sealed and
    opened with the session's link (protocol 3: the relay pays for the crypto as with real
    devices)."""

    def __init__(self, stats: Stats, space: Space, pos: int, identity: Any, host: Any,
                 frames: list[bytes], keys: dict[bytes, int], base: list[int] | None = None) -> None:
        super().__init__(stats, space, pos)
        self.identity, self.host, self.frames, self.keys = identity, host, frames, keys
        self.session: Any = None
        self.table: list[int] = []  # the relay's author refs -> member positions
        m = len(space.members)
        #: by member position, the seq of its first edit (what precedes it was stored before)
        self.base = base or [2] * m
        self.vv = [b - 1 for b in self.base]  # every member's first envelopes were stored before the run
        self._prefix = [b"\x82" + _uint(0, p) for p in range(m)]
        self._entries = [self._prefix[p] + _uint(0, self.vv[p]) for p in range(m)]
        self._vv_head = _uint(0x80, m)
        self.inflight: list[int] = []  # edits sent, not yet acknowledged (batch = edit + 1)
        self.queued: list[int] = []
        # Live ACKs wait as a device's session's do (RELIABLE_LINK: ack_delay, ack_every):
        # the last batch received, how many frames wait, the timer that sends it
        self._ack: tuple[int, int] | None = None
        self._ack_waiting = 0
        self._ack_timer: asyncio.TimerHandle | None = None
        self._ack_delay, self._ack_every = _ack_policy()

    @property
    def path(self) -> str:
        return "/v1/sync"

    def start(self, conn: WsConn) -> None:
        from crdt_sync.protocol import Session

        super().start(conn)
        self.session = Session(self.host, time.monotonic())
        self.session.defer_sealing()
        for frame in self.session.start():
            conn.send(self.session.seal(frame))

    def _handshake(self, data: bytes) -> None:
        from crdt_sync.identity import device_id
        from crdt_sync.protocol.messages import T_HAVE, Have, decode

        assert self.conn is not None
        link = self.session.link
        inner = link.inspect(data) if link is not None and data[:2] == b"\x83\x0d" else data
        have = inner[1] == T_HAVE
        if have:
            msg = decode(inner)
            assert isinstance(msg, Have)
            ids = {device_id(k): p for k, p in self.keys.items()}
            self.table = [self.keys[r] if isinstance(r, bytes) else ids[str(r)] for r, _ in msg.vv]
        for frame in self.session.receive(data, time.monotonic()):
            self.conn.send(self.session.seal(frame))
        if self.session.closed is not None:
            self.fail("handshake refused", self.session.closed.reason)
        elif have and not self.ready.done():
            self.ready.set_result(None)

    def on_message(self, data: bytes) -> None:
        import cbor2

        from crdt_sync.protocol.messages import T_ACK, T_BYE, T_ENVELOPES, T_ERROR, T_PING, Pong, encode

        if not self.ready.done():
            self._handshake(data)
            return
        opened = self.link.open(data)
        if opened is None:
            return  # a replay (a WebSocket does not duplicate: never here)
        data = opened
        kind = data[1] if data and data[0] & 0xE0 == 0x80 else -1
        if kind == T_ENVELOPES:
            _, space_index, batch, envelopes = cbor2.loads(data)
            now = time.monotonic()
            space, stats, vv = self.space, self.stats, self.vv
            for e in envelopes:
                ref, seq = e[0], e[1]
                p = self.keys[ref] if isinstance(ref, bytes) else self.table[ref]
                if seq > vv[p]:
                    vv[p] = seq
                    self._entries[p] = self._prefix[p] + _uint(0, seq)
                    if seq >= self.base[p]:
                        stats.delivered(space, p, seq - self.base[p], now)
                else:
                    stats.duplicates += 1
            self._ack = (space_index, batch)
            self._ack_waiting += 1
            if self._ack_waiting >= self._ack_every:
                self._send_ack()
            elif self._ack_timer is None:
                self._ack_timer = asyncio.get_running_loop().call_later(self._ack_delay, self._send_ack)
        elif kind == T_ACK:
            _, off = _read_uint(data, 2)  # the space index
            batch, _ = _read_uint(data, off)
            now = time.monotonic()
            while self.inflight and self.inflight[0] + 1 <= batch:
                self.stats.accepted(self.space, self.pos, self.inflight.pop(0), now)
            while self.queued and len(self.inflight) < WINDOW:
                self._send(self.queued.pop(0))
        elif kind == T_PING:
            assert self.conn is not None
            self.conn.send(self.link.seal(encode(Pong(int(cbor2.loads(data)[1])))))
        elif kind in (T_ERROR, T_BYE):
            items = cbor2.loads(data)
            self.fail("relay ERROR" if kind == T_ERROR else "relay BYE", f"{items[1:]}")

    def _send_ack(self) -> None:
        """The waiting ACK: one, of the last batch, covers every frame received (cumulative)."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self._ack is None or self.conn is None:
            return
        (space_index, batch), self._ack, self._ack_waiting = self._ack, None, 0
        self.conn.send(self.link.seal(b"\x84\x05" + _uint(0, space_index) + _uint(0, batch)
                                      + self._vv_head + b"".join(self._entries)))

    def edit(self, k: int) -> None:
        if len(self.inflight) >= WINDOW:
            self.queued.append(k)
        else:
            self._send(k)

    def _send(self, k: int) -> None:
        assert self.conn is not None
        self.inflight.append(k)
        seq = k + self.base[self.pos]
        self.vv[self.pos] = seq
        self._entries[self.pos] = self._prefix[self.pos] + _uint(0, seq)
        self.conn.send(self.link.seal(self.frames[k]))

    @property
    def link(self) -> Any:
        """The session's link (up once the handshake is)."""
        return self.session.link


class MemoryHost:
    """What a :class:`~crdt_sync.protocol.Session` needs of a replica, in memory: the first
    envelope of every member of each space (what a device that synced before holds)."""

    keeps_all_spaces = False

    def __init__(self, identity: Any, spaces: dict[str, list[Any]]) -> None:
        self.identity = identity
        self.device_id: str = identity.id
        self._spaces = spaces

    def admit(self, peer: str, relay: bool = False) -> str | None:
        return None

    def sync_spaces(self) -> list[str]:
        return list(self._spaces)

    def version_vector(self, space: str) -> dict[str, int]:
        vv: dict[str, int] = {}
        for env in self._spaces.get(space, []):
            vv[env.author] = max(vv.get(env.author, 0), env.seq)
        return vv

    def missing_envelopes(self, space: str, covered: dict[str, int], max_count: int,
                          max_bytes: int) -> list[Any]:
        return [e for e in self._spaces.get(space, []) if e.seq > covered.get(e.author, 0)][:max_count]

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None:
        for env in self._spaces.get(space, []):
            if env.author == author and env.seq == seq:
                return bytes(env.hash)
        return None

    def receive(self, envelopes: list[bytes], source: str, space: str | None = None,
                tolerate_gaps: bool = False) -> tuple[int, int, int]:
        return 0, 0, 0

    def accept(self, envelopes: list[bytes], source: str, space: str) -> Any:
        from crdt_sync.results import Accepted

        return Accepted(0, 0, 0)

    def quarantined(self, space: str) -> dict[str, Any]:
        return {}

    def peer_refused(self, peer: str, space: str, author: str, from_seq: int, reason: str,
                     detail: str) -> None:
        return None

    def record_ack(self, peer: str, space: str, vv: dict[str, int]) -> None:
        return None


def _payload(update: bytes, hlc: int) -> bytes:
    from crdt_sync.payload import encode_payload, pack_item

    return encode_payload([("notes", "shared", pack_item(hlc, update))])


def relay_devices(load: Load, spaces: list[Space], stats: Stats,
                  sealed: bool = False) -> tuple[list[Device], list[dict[str, list[Any]]]]:
    """Sign every device's chain before the run; returns the devices and what to store
    before they connect, in passes (for the seeding sessions): per space, the envelopes of
    each member that precede its edits. ``sealed``: spaces as issue 12 makes them
    (:mod:`._spaces`: a genesis, grants, encrypted payloads; the space renamed by its id),
    the admins' chains stored in a pass before the rest."""
    from crdt_sync.envelope import seal
    from crdt_sync.hlc import wall_ms
    from crdt_sync.identity import Identity
    from crdt_sync.protocol.messages import Envelopes, WireEnvelope, encode

    from ._spaces import sealed_space

    devices: list[Device] = []
    firsts: dict[str, list[Any]] = {}
    admins: dict[str, list[Any]] = {}
    # Stamped now: receivers hold back envelopes stamped more than a day ahead of their clock
    # (docs/PROTOCOL.md, "Clocks"; a fixed time in 2027 was, from December 2026 on).
    hlc0 = wall_ms() << 16
    for space in spaces:
        identities = [Identity(device_seed(load, d)) for d in space.members]
        order = sorted(range(len(identities)), key=lambda i: identities[i].id)
        space.reorder(order)
        identities = [identities[i] for i in order]
        keys = {ident.public_key: p for p, ident in enumerate(identities)}
        box = sealed_space(identities, hlc0, _payload(b"\x00\x00", hlc0)) if sealed else None
        if box is None:
            heads = [[seal(ident, space.name, 1, b"", hlc0, _payload(b"\x00\x00", hlc0))]
                     for ident in identities]
        else:
            space.name, heads = box.space, box.heads
            admins[space.name] = heads[0]
        first = [env for head in heads for env in head]
        firsts[space.name] = first
        base = [len(head) + 1 for head in heads]
        for p, ident in enumerate(identities):
            prev = heads[p][-1].hash
            frames = []
            for k, update in enumerate(yjs_updates(space.members[p], space.edits[p])):
                hlc, seq = hlc0 + ((k + 1) << 16), k + base[p]
                body = _payload(update, hlc)
                env = seal(ident, space.name, seq, prev, hlc,
                           body if box is None else box.payload(ident.public_key, seq, body))
                prev = env.hash
                frames.append(encode(Envelopes(0, k + 1, [WireEnvelope(p, env.seq, env.hlc, env.payload,
                                                                         env.signature)])))
            host = MemoryHost(ident, {space.name: first})
            devices.append(RelayDevice(stats, space, p, ident, host, frames, keys, base))
    return devices, [admins, firsts] if sealed else [firsts]


async def seed_relay(url: str, firsts: dict[str, list[Any]]) -> None:
    """Store each member's first envelope, 512 spaces per session (as devices that synced
    before would have left them)."""
    from crdt_sync.identity import Identity
    from crdt_sync.protocol import Session
    from crdt_sync.transports.driver import Hooks, drive
    from crdt_sync.transports.websocket import connect

    names = sorted(firsts)
    for lo in range(0, len(names), 512):
        chunk = {n: firsts[n] for n in names[lo:lo + 512]}
        host = MemoryHost(Identity.generate(), chunk)
        link = await connect(url)
        session = Session(host, time.monotonic())
        outcome = await drive(session, link, Hooks(), live=False, timeout=120.0)
        if not outcome.ok:
            raise BenchmarkError(f"seeding the relay failed: {outcome.closed}")


# -- pycrdt-websocket devices ------------------------------------------------------------------
class YDevice(Device):
    """A y-websocket client: answers the sync handshake, then sends pre-computed updates."""

    def __init__(self, stats: Stats, space: Space, pos: int, messages: list[bytes]) -> None:
        super().__init__(stats, space, pos)
        self.messages = messages
        self.positions: dict[int, int] = {}

    @property
    def path(self) -> str:
        return "/" + self.space.name

    def start(self, conn: WsConn) -> None:
        super().start(conn)
        self.positions = {d: p for p, d in enumerate(self.space.members)}
        conn.send(b"\x00\x00\x01\x00")  # SYNC_STEP1 with an empty state vector

    def on_message(self, data: bytes) -> None:
        if len(data) < 2 or data[0] != 0:  # awareness and the like: not measured
            return
        assert self.conn is not None
        if data[1] == 2:  # SYNC_UPDATE
            found = parse_marker(data)
            if found is None:
                return
            now = time.monotonic()
            device, k = found
            p = self.positions.get(device)
            if p is None:
                self.stats.error("foreign update", f"device {device} is not in {self.space.name}")
            elif p == self.pos:
                self.stats.accepted(self.space, p, k, now)  # the server's echo
            else:
                self.stats.delivered(self.space, p, k, now)
        elif data[1] == 0:  # the server's SYNC_STEP1: answer with our (empty) state
            self.conn.send(b"\x00\x01\x02\x00\x00")
            if not self.ready.done():
                self.ready.set_result(None)

    def edit(self, k: int) -> None:
        assert self.conn is not None
        self.conn.send(self.messages[k])


def y_devices(spaces: list[Space], stats: Stats) -> list[Device]:
    from pycrdt import create_update_message

    devices: list[Device] = []
    for space in spaces:
        for p, d in enumerate(space.members):
            messages = [bytes(create_update_message(u)) for u in yjs_updates(d, space.edits[p])]
            devices.append(YDevice(stats, space, p, messages))
    return devices
