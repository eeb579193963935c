"""Relay load benchmark: many device connections through a relay, side by side with
pycrdt-websocket's server under the same load.

    python -m benchmarks.relay_load [--devices N] [--team-size N] [--typing-devices N]
                                    [--duration S] [--quick] [--json] [--profile py-spy|cprofile]

The load: ``--devices`` concurrent device connections; ``--typing-devices`` of them share one
space and each types ``--typing-rate`` edits per second; the others are in spaces of
``--team-size`` devices (field teams), each editing ``--team-rate`` times per second. Every
edit is delivered to every other member of its space.

Each server runs in a process of its own (its RSS and CPU sampled with psutil); the load
generator runs in ``--generators`` other processes (one by default: the machine has two
cores). The generator speaks each server's own protocol over a lean asyncio WebSocket client
and does no work per message that it can do in advance:

* crdt-sync relay: every device has a key pair and a chain of envelopes signed before the
  run; it does the real handshake (a :class:`~crdt_sync.protocol.Session`), then sends its
  pre-encoded ENVELOPES frames, and ACKs what it receives with its whole version vector, as
  the session would. "Accepted" means ACKed by the relay, which happens after the group
  commit (fsync). Before the devices connect, one session per 512 spaces stores each
  device's first envelope (the devices have synced before), so sessions refer to authors by
  table index, as they do in steady state.
* pycrdt-websocket: its ``WebsocketServer`` behind uvicorn through its ``ASGIServer`` (as its
  documentation shows); each space is a room (one Yjs document); each device is a y-websocket
  client that answers the sync handshake and sends SYNC_UPDATE messages pre-computed from a
  Yjs document of its own. Its server applies each update to the room's document in memory
  and broadcasts it to every client of the room, the sender included: that echo is counted
  as "accepted" (applied in RAM: not durable; nothing is stored, unless ``--servers``
  names ``pycrdt-websocket-ystore``, its SQLiteYStore).

The Yjs update of an edit is the same bytes in both: the payload of the crdt-sync envelope
carries it. Latency is from the moment the edit was scheduled (so a backlog at the sender
counts) to its arrival at each other member of the space; an edit not delivered by the end
of the drain counts as infinitely late. Only edits scheduled inside the measured window
(after ``--warmup``) count.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ._harness import (
    MB,
    BenchmarkError,
    ChildChannel,
    make_console,
    print_json,
    print_machine,
    print_table,
    progress_display,
    run_child,
)

MODULE = "crdt_sync.benchmarks.relay_load"
SERVERS = {"crdt-sync": "crdt-sync relay", "pycrdt-websocket": "pycrdt-websocket",
           "pycrdt-websocket-ystore": "pycrdt-websocket + SQLiteYStore",
           "crdt-sync-baseline": "crdt-sync relay (--baseline tree)"}
#: servers that speak crdt-sync's protocol (the same load generator drives them)
OURS = ("crdt-sync", "crdt-sync-baseline")
LISTENING = "listening on ws://127.0.0.1:"
#: Unacknowledged ENVELOPES batches a device keeps in flight (the session's window).
WINDOW = 4
#: Connections opened at once while ramping up.
CONNECT_CONCURRENCY = 64
CONNECT_TIMEOUT = 30.0
#: How long every wait on the other side (barrier, server start) may take.
WAIT_LIMIT = 300.0


# -- the load -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Load:
    devices: int
    team_size: int
    typing_devices: int
    typing_rate: float
    team_rate: float
    warmup: float
    duration: float
    drain: float
    idle: float
    seed: int

    @property
    def end(self) -> float:
        """Seconds after the start at which the last edit is scheduled."""
        return self.warmup + self.duration

    def spaces(self) -> list[tuple[str, str, float, list[int]]]:
        """``(name, kind, rate, device indices)``; devices ``0 .. typing_devices-1`` type."""
        out: list[tuple[str, str, float, list[int]]] = []
        if self.typing_devices:
            out.append(("typing", "typing", self.typing_rate, list(range(self.typing_devices))))
        team = list(range(self.typing_devices, self.devices))
        teams = max(1, math.ceil(len(team) / self.team_size)) if team else 0
        for t in range(teams):  # near-equal teams: sizes differ by at most one
            members = team[t::teams]
            out.append((f"team-{t:05d}", "team", self.team_rate, members))
        return out

    def schedule(self, rate: float, rng: random.Random) -> tuple[float, int, int, int]:
        """A device's ``(phase, edits, first edit in the window, first edit after it)``."""
        interval = 1.0 / rate
        phase = rng.uniform(0.0, interval)
        edits = max(0, math.ceil((self.end - phase) / interval))
        lo = max(0, math.ceil((self.warmup - phase) / interval))
        return phase, edits, min(lo, edits), edits


def device_seed(load: Load, device: int) -> bytes:
    return hashlib.blake2b(f"relay-load/{load.seed}/{device}".encode(), digest_size=32).digest()


def marker(device: int, edit: int) -> str:
    """Text an edit inserts: it identifies the edit inside a Yjs update (pycrdt-websocket)."""
    return f"#Q{device:06d}.{edit:07d};"


def parse_marker(data: bytes) -> tuple[int, int] | None:
    i = data.find(b"#Q")
    while i >= 0:
        dev, dot, edit, end = data[i + 2:i + 8], data[i + 8:i + 9], data[i + 9:i + 16], data[i + 16:i + 17]
        if dot == b"." and end == b";" and dev.isdigit() and edit.isdigit():
            return int(dev), int(edit)
        i = data.find(b"#Q", i + 1)
    return None


def yjs_updates(device: int, edits: int) -> list[bytes]:
    """The Yjs update of each edit of one device: text typed into the space's shared text."""
    from pycrdt import Doc, Text

    doc: Any = Doc(client_id=device + 1)
    text = doc.get("text", type=Text)
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    for k in range(edits):
        with doc.transaction():
            text.insert(len(text), marker(device, k))
    doc.unobserve(subscription)
    if len(updates) != edits:
        raise BenchmarkError(f"device {device}: {len(updates)} Yjs updates for {edits} edits")
    return updates


# -- latency histogram (mergeable across generator processes) ------------------------------
_BASE = math.log(1.02)  # 2 % wide buckets


class Histogram:
    """Latencies in 2 % buckets; edits never delivered count as infinitely late."""

    __slots__ = ("counts",)

    def __init__(self, counts: dict[int, int] | None = None) -> None:
        self.counts: dict[int, int] = counts or {}

    def add(self, seconds: float) -> None:
        b = int(math.log(max(seconds, 1e-6) * 1e6) / _BASE)
        self.counts[b] = self.counts.get(b, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: Histogram) -> None:
        for b, c in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + c

    def quantile(self, q: float, expected: int | None = None) -> float:
        """Seconds; ``inf`` when the rank falls among the ``expected - total`` missing."""
        total = max(self.total, expected or 0)
        if total == 0:
            return math.nan
        rank = max(1, math.ceil(q * total))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return math.exp((b + 1) * _BASE) / 1e6  # the bucket's upper edge
        return math.inf

    def as_json(self) -> dict[str, int]:
        return {str(b): c for b, c in self.counts.items()}

    @classmethod
    def from_json(cls, raw: dict[str, int]) -> Histogram:
        return cls({int(b): int(c) for b, c in raw.items()})


# -- a lean WebSocket client (RFC 6455, client side) ----------------------------------------
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _mask(payload: bytes) -> bytes:
    key = random.getrandbits(32).to_bytes(4, "little")
    n = len(payload)
    if n == 0:
        return key
    pad = (key * ((n >> 2) + 1))[:n]
    return key + (int.from_bytes(payload, "little") ^ int.from_bytes(pad, "little")).to_bytes(n, "little")


class WsConn(asyncio.Protocol):
    """One WebSocket connection: frames are parsed in ``data_received`` and handed to
    ``on_message`` synchronously, with no task or future per message (the generator must
    cost far less per message than the servers it measures)."""

    def __init__(self, host: str, port: int, path: str, on_open: Callable[[WsConn], None],
                 on_message: Callable[[bytes], None], on_lost: Callable[[str], None]) -> None:
        self.host, self.port, self.path = host, port, path
        self.on_open, self.on_message, self.on_lost = on_open, on_message, on_lost
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self._key = base64.b64encode(os.urandom(16))
        self._buf = bytearray()
        self._fragments: list[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        % (self.path.encode(), self.host.encode(), self.port, self._key))

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = not self.closed
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost during the upgrade: {exc}"))
        elif was_open:
            self.on_lost(f"connection lost: {exc}" if exc else "connection closed by the server")

    def send(self, payload: bytes, opcode: int = 2) -> None:
        if self.closed or self.transport is None:
            return
        n = len(payload)
        if n < 126:
            header = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            header = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
        else:
            header = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
        self.transport.write(header + _mask(payload))

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.send((1000).to_bytes(2, "big"), opcode=8)
            self.closed = True
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self.opened.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[:end + 4]
            accept = base64.b64encode(hashlib.sha1(self._key + _GUID).digest()).decode()
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
            if not head[0].startswith("HTTP/1.1 101") or headers.get("sec-websocket-accept") != accept:
                self.opened.set_exception(ConnectionError(f"upgrade refused: {head[0]}"))
                assert self.transport is not None
                self.transport.close()
                return
            self.opened.set_result(None)
            self.on_open(self)  # before any frame that came with the upgrade's answer
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, start = b1 & 0x7F, pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length, start = int.from_bytes(buf[pos + 2:pos + 4], "big"), pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, start = int.from_bytes(buf[pos + 2:pos + 10], "big"), pos + 10
            if b1 & 0x80:  # servers never mask
                self.on_lost("server sent a masked frame")
                self.close()
                return
            if start + length > n:
                break
            payload = bytes(buf[start:start + length])
            pos = start + length
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
            if self.closed:
                return
        if pos:
            del buf[:pos]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (1, 2):
            if fin:
                self.on_message(payload)
            else:
                self._fragments = [payload]
        elif opcode == 0 and self._fragments is not None:
            self._fragments.append(payload)
            if fin:
                whole, self._fragments = b"".join(self._fragments), None
                self.on_message(whole)
        elif opcode == 9:
            self.send(payload, opcode=10)
        elif opcode == 8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.on_lost(f"closed by the server ({code} {payload[2:].decode(errors='replace')})")
            self.close()


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
    """A crdt-sync device: handshake through a real Session, then lean frames."""

    def __init__(self, stats: Stats, space: Space, pos: int, identity: Any, host: Any,
                 frames: list[bytes], keys: dict[bytes, int]) -> None:
        super().__init__(stats, space, pos)
        self.identity, self.host, self.frames, self.keys = identity, host, frames, keys
        self.session: Any = None
        self.table: list[int] = []  # the relay's author refs -> member positions
        m = len(space.members)
        self.vv = [1] * m  # every member's first envelope was stored before the run
        self._prefix = [b"\x82" + _uint(0, p) for p in range(m)]
        self._entries = [self._prefix[p] + _uint(0, 1) for p in range(m)]
        self._vv_head = _uint(0x80, m)
        self.inflight: list[int] = []  # edits sent, not yet acknowledged (batch = edit + 1)
        self.queued: list[int] = []

    @property
    def path(self) -> str:
        return "/v1/sync"

    def start(self, conn: WsConn) -> None:
        from crdt_sync.protocol import Session

        super().start(conn)
        self.session = Session(self.host, time.monotonic())
        for frame in self.session.start():
            conn.send(frame)

    def _handshake(self, data: bytes) -> None:
        from crdt_sync.identity import device_id
        from crdt_sync.protocol.messages import T_HAVE, Have, decode

        assert self.conn is not None
        have = data[1] == T_HAVE
        if have:
            msg = decode(data)
            assert isinstance(msg, Have)
            ids = {device_id(k): p for k, p in self.keys.items()}
            self.table = [self.keys[r] if isinstance(r, bytes) else ids[str(r)] for r, _ in msg.vv]
        for frame in self.session.receive(data, time.monotonic()):
            self.conn.send(frame)
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
                    if seq >= 2:
                        stats.delivered(space, p, seq - 2, now)
                else:
                    stats.duplicates += 1
            assert self.conn is not None
            self.conn.send(b"\x84\x05" + _uint(0, space_index) + _uint(0, batch) + self._vv_head
                           + b"".join(self._entries))
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
            self.conn.send(encode(Pong(int(cbor2.loads(data)[1]))))
        elif kind in (T_ERROR, T_BYE):
            items = cbor2.loads(data)
            self.fail("relay ERROR" if kind == T_ERROR else "relay BYE", f"{items[1:]}")

    def edit(self, k: int) -> None:
        if len(self.inflight) >= WINDOW:
            self.queued.append(k)
        else:
            self._send(k)

    def _send(self, k: int) -> None:
        assert self.conn is not None
        self.inflight.append(k)
        seq = k + 2
        self.vv[self.pos] = seq
        self._entries[self.pos] = self._prefix[self.pos] + _uint(0, seq)
        self.conn.send(self.frames[k])


class MemoryHost:
    """What a :class:`~crdt_sync.protocol.Session` needs of a replica, in memory: the first
    envelope of every member of each space (what a device that synced before holds)."""

    keeps_all_spaces = False

    def __init__(self, identity: Any, spaces: dict[str, list[Any]]) -> None:
        self.identity = identity
        self.device_id: str = identity.id
        self._spaces = spaces

    def admit(self, peer: str) -> str | None:
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

    def record_ack(self, peer: str, space: str, vv: dict[str, int]) -> None:
        return None


def _payload(update: bytes, hlc: int) -> bytes:
    from crdt_sync.payload import encode_payload, pack_item

    return encode_payload([("notes", "shared", pack_item(hlc, update))])


def relay_devices(load: Load, spaces: list[Space], stats: Stats) -> tuple[list[Device], dict[str, list[Any]]]:
    """Sign every device's chain before the run; returns the devices and, per space, the
    first envelope of each member (for the seeding sessions)."""
    from crdt_sync.envelope import seal
    from crdt_sync.hlc import wall_ms
    from crdt_sync.identity import Identity
    from crdt_sync.protocol.messages import Envelopes, WireEnvelope, encode

    devices: list[Device] = []
    firsts: dict[str, list[Any]] = {}
    # Stamped now: receivers hold back envelopes stamped more than a day ahead of their clock
    # (docs/PROTOCOL.md, "Clocks"; a fixed time in 2027 was, from December 2026 on).
    hlc0 = wall_ms() << 16
    for space in spaces:
        identities = [Identity(device_seed(load, d)) for d in space.members]
        order = sorted(range(len(identities)), key=lambda i: identities[i].id)
        space.reorder(order)
        identities = [identities[i] for i in order]
        keys = {ident.public_key: p for p, ident in enumerate(identities)}
        first = [seal(ident, space.name, 1, b"", hlc0, _payload(b"\x00\x00", hlc0)) for ident in identities]
        firsts[space.name] = first
        for p, ident in enumerate(identities):
            prev = first[p].hash
            frames = []
            for k, update in enumerate(yjs_updates(space.members[p], space.edits[p])):
                hlc = hlc0 + ((k + 1) << 16)
                env = seal(ident, space.name, k + 2, prev, hlc, _payload(update, hlc))
                prev = env.hash
                frames.append(encode(Envelopes(0, k + 1, [WireEnvelope(p, env.seq, env.hlc, env.payload,
                                                                         env.signature)])))
            host = MemoryHost(ident, {space.name: first})
            devices.append(RelayDevice(stats, space, p, ident, host, frames, keys))
    return devices, firsts


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


# -- the generator process ----------------------------------------------------------------------
def _assigned(load: Load, generators: int, index: int) -> list[tuple[str, str, float, list[int]]]:
    """The spaces generator ``index`` runs: the typing space on the first, teams on the rest."""
    spaces = load.spaces()
    typing = [s for s in spaces if s[1] == "typing"]
    teams = [s for s in spaces if s[1] == "team"]
    if generators == 1:
        return spaces
    if index == 0:
        return typing
    return teams[index - 1::generators - 1]


async def _connect(device: Device, port: int, sem: asyncio.Semaphore) -> None:
    loop = asyncio.get_running_loop()
    async with sem:
        conn = WsConn("127.0.0.1", port, device.path, device.start, device.receive, device.on_lost)
        device.conn = conn
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await loop.create_connection(lambda: conn, "127.0.0.1", port)
            await conn.opened
            await device.ready


async def ramp(devices: list[Device], port: int) -> tuple[list[Device], list[BaseException | None]]:
    """Connect every device, ``CONNECT_CONCURRENCY`` at a time; returns them in the order
    connected, with an exception for each that failed.

    The first member of each space joins alone: pycrdt-websocket 0.16 hangs a client that
    joins a room while another client's join is still creating it (see docs/BENCHMARKS.md).
    """
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    firsts = [d for d in devices if d.pos == 0]
    rest = [d for d in devices if d.pos != 0]
    outcomes: list[BaseException | None] = []
    for group in (firsts, rest):
        outcomes += await asyncio.gather(*(_connect(d, port, sem) for d in group), return_exceptions=True)
    return firsts + rest, outcomes


def _wait_file(path: Path, limit: float) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        time.sleep(0.02)
    raise BenchmarkError(f"no {path.name} from the parent within {limit:g} s")


async def generate(load: Load, server: str, port: int, index: int, generators: int,
                   barrier: Path, channel: ChildChannel) -> dict[str, Any]:
    rng = random.Random(load.seed * 1000 + 7)
    all_spaces = [Space(n, k, r, m, load, rng) for n, k, r, m in load.spaces()]
    mine = {n for n, _, _, _ in _assigned(load, generators, index)}
    spaces = [s for s in all_spaces if s.name in mine]
    stats = Stats()
    t0 = time.monotonic()
    if server in OURS:
        devices, firsts = relay_devices(load, spaces, stats)
        prepare_s = time.monotonic() - t0
        await seed_relay(f"ws://127.0.0.1:{port}", firsts)
    else:
        devices = y_devices(spaces, stats)
        prepare_s = time.monotonic() - t0
    channel.progress(5)

    # ramp up: every device connects and completes its handshake
    t_connect = time.monotonic()
    devices, outcomes = await ramp(devices, port)
    connect_s = time.monotonic() - t_connect
    established = 0
    for device, outcome in zip(devices, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            stats.error("connect failed", f"{type(outcome).__name__}: {outcome}")
            if device.conn is not None:
                device.conn.close()
        else:
            established += 1
            device.space.connected[device.pos] = True
    channel.progress(20)

    # the parent starts everyone at the same moment, after an idle period it measures
    (barrier / f"ready-{index}").write_text(json.dumps({"t": time.monotonic()}))
    t_go = float(await asyncio.to_thread(_wait_file, barrier / "go", WAIT_LIMIT))
    stats.t_go = t_go
    stats.window = (t_go + load.warmup, t_go + load.end)

    # every edit, in time order
    plan: list[tuple[float, int, int]] = []
    for i, device in enumerate(devices):
        if device.space.connected[device.pos]:
            sp, p = device.space, device.pos
            plan.extend((t_go + sp.phase[p] + k * sp.interval, i, k) for k in range(sp.edits[p]))
    plan.sort()
    lags = Histogram()
    cpu_lo: float | None = None
    await asyncio.sleep(max(0.0, t_go - time.monotonic()))
    i, last_report = 0, 0.0
    while i < len(plan):
        now = time.monotonic()
        if cpu_lo is None and now >= stats.window[0]:
            cpu_lo = _cpu_seconds()
        if plan[i][0] > now:
            await asyncio.sleep(min(plan[i][0] - now, 0.05))
            continue
        lags.add(now - plan[i][0])
        while i < len(plan) and plan[i][0] <= now:
            _, d, k = plan[i]
            device = devices[d]
            if not device.lost:
                device.edit(k)
                wlo, whi = device.space.window[device.pos]
                if wlo <= k < whi:
                    device.space.sent_in_window[device.pos] += 1
            i += 1
        if now - last_report >= 1.0:
            last_report = now
            channel.progress(20 + int(70 * min(1.0, (now - t_go) / load.end)))
    await asyncio.sleep(max(0.0, stats.window[1] - time.monotonic()))
    cpu_window = _cpu_seconds() - (cpu_lo if cpu_lo is not None else _cpu_seconds())

    # expected deliveries: each edit of the window to every other connected member
    expected = {"typing": 0, "team": 0}
    offered = 0
    for sp in spaces:
        receivers = sum(sp.connected)
        for p in range(len(sp.members)):
            if sp.connected[p]:
                expected[sp.kind] += sp.sent_in_window[p] * (receivers - 1)
                offered += sp.window[p][1] - sp.window[p][0]
    sent = sum(sum(sp.sent_in_window) for sp in spaces)

    # drain: wait for stragglers, or until everything arrived
    deadline = time.monotonic() + load.drain
    while time.monotonic() < deadline:
        if (sum(stats.delivered_window_edits.values()) >= sum(expected.values())
                and stats.accepted_window_edits >= sent):
            break
        await asyncio.sleep(0.05)
    t_end = time.monotonic()
    channel.progress(95)
    for device in devices:
        if device.conn is not None:
            device.conn.close()
    await asyncio.sleep(0.5)
    return {
        "index": index, "devices": len(devices), "established": established, "prepare_s": prepare_s,
        "connect_s": connect_s, "t_connect": t_connect, "t_go": t_go, "window": list(stats.window),
        "t_end": t_end, "offered": offered, "sent": sent, "expected": expected,
        "delivered_window_edits": stats.delivered_window_edits,
        "delivered_in_window": stats.delivered_in_window, "accepted_in_window": stats.accepted_in_window,
        "accepted_window_edits": stats.accepted_window_edits, "duplicates": stats.duplicates,
        "latency": {k: h.as_json() for k, h in stats.latency.items()}, "ack": stats.ack.as_json(),
        "ticker_lag": lags.as_json(), "cpu_window_s": cpu_window, "errors": dict(stats.errors),
        "error_examples": stats.examples,
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(args: argparse.Namespace) -> int:
    load = Load(**json.loads(args.load))
    channel = ChildChannel()
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit[1], limit[1]))
    result = asyncio.run(generate(load, args.child, args.port, args.index, args.generators,
                                  Path(args.barrier), channel))
    channel.result(result)
    return 0


# -- pycrdt-websocket's server process -----------------------------------------------------------
async def _serve_ypy(ystore: Path | None) -> None:
    import uvicorn
    from pycrdt.websocket import ASGIServer, WebsocketServer, YRoom, exception_logger

    database = str(ystore / "ystore.db") if ystore is not None else ""

    class Server(WebsocketServer):  # type: ignore[misc]
        async def get_room(self, name: str) -> Any:
            if database and name not in self.rooms:
                from pycrdt.store import SQLiteYStore

                class Store(SQLiteYStore):  # type: ignore[misc]
                    db_path = database

                self.rooms[name] = YRoom(ready=self.rooms_ready, ystore=Store(path=name),
                                         exception_handler=self.exception_handler, log=self.log)
            return await super().get_room(name)

    websocket_server = Server(exception_handler=exception_logger)
    config = uvicorn.Config(ASGIServer(websocket_server), host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off", backlog=4096)
    server = uvicorn.Server(config)
    async with websocket_server:
        task = asyncio.create_task(server.serve())
        for _ in range(2000):  # up to 20 s
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            raise SystemExit("uvicorn did not start")
        port = server.servers[0].sockets[0].getsockname()[1]
        print(f"pycrdt-websocket {LISTENING}{port}", flush=True)
        await task  # until SIGTERM (uvicorn handles it)


# -- the parent ------------------------------------------------------------------------------------
@dataclass
class Sample:
    t: float
    rss: int
    cpu: float  # the server's CPU seconds so far
    busy: float  # the whole machine's busy CPU seconds so far (every core)


@dataclass
class Sampler:
    """Samples a process's RSS and CPU time every ``interval`` seconds, in a thread."""

    pid: int
    interval: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        proc = psutil.Process(self.pid)
        while not self._stop.is_set():
            try:
                with proc.oneshot():
                    cpu = proc.cpu_times()
                    rss = proc.memory_info().rss
            except psutil.Error:
                return
            self.samples.append(Sample(time.monotonic(), rss, cpu.user + cpu.system, _machine_busy()))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def cpu_percent(self, lo: float, hi: float) -> float:
        inside = [s for s in self.samples if lo <= s.t <= hi]
        if len(inside) < 2:
            return math.nan
        return 100 * (inside[-1].cpu - inside[0].cpu) / (inside[-1].t - inside[0].t)

    def machine_percent(self, lo: float, hi: float) -> float:
        """CPU use of the whole machine, in percent of one core (200 = both cores busy)."""
        inside = [s for s in self.samples if lo <= s.t <= hi]
        if len(inside) < 2:
            return math.nan
        return 100 * (inside[-1].busy - inside[0].busy) / (inside[-1].t - inside[0].t)

    def rss_mb(self, lo: float, hi: float, pick: Callable[[Sequence[int]], int] = max) -> float:
        inside = [s.rss for s in self.samples if lo <= s.t <= hi]
        return pick(inside) / MB if inside else math.nan


def _machine_busy() -> float:
    import psutil

    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
                 + getattr(t, "steal", 0.0))


def wait_quiet(limit: float, threshold: float = 25.0) -> float:
    """Wait (up to ``limit`` s) until the machine is quiet: other work on it (other people's
    tests) skews every number here. Returns the CPU use seen last, in percent of one core."""
    deadline = time.monotonic() + limit
    while True:
        before, t0 = _machine_busy(), time.monotonic()
        time.sleep(2.0)
        used = 100 * (_machine_busy() - before) / (time.monotonic() - t0)
        if used < threshold or time.monotonic() >= deadline:
            return used


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def _raise_nofile() -> None:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit[1], limit[1]))


def _start_server(server: str, work: Path, profile: str | None,
                  baseline: Path | None = None) -> tuple[subprocess.Popen[str], int, Path]:
    log = work / f"{server}.log"
    env = None
    if server == "crdt-sync-baseline":
        # the relay of another checkout (an earlier commit), run by this interpreter: its
        # crdt_sync package comes first on the path
        if baseline is None:
            raise BenchmarkError("the crdt-sync-baseline server needs --baseline DIR (a checkout)")
        env = {**os.environ, "PYTHONPATH": str(baseline.resolve())}
    if server in OURS:
        (work / "relay").mkdir()
        cmd = [sys.executable, "-m", "crdt_sync.cli", "relay", "--data", str(work / "relay"), "--port", "0"]
        if profile == "cprofile":
            cmd[1:3] = ["-m", "cProfile", "-o", str(work / "relay.prof"), "-m", "crdt_sync.cli"]
    else:
        cmd = [sys.executable, "-m", MODULE, "--serve-ypy"]
        if server == "pycrdt-websocket-ystore":
            (work / "ystore").mkdir()
            cmd += ["--ystore", str(work / "ystore")]
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                preexec_fn=_raise_nofile, start_new_session=True)
    assert proc.stdout is not None
    port: list[int] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if LISTENING in line:
                port.append(int(line.rsplit(":", 1)[1]))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=60)
    if not port:
        _stop_server(proc)
        raise BenchmarkError(f"{server} did not start:\n{log.read_text()[-3000:]}")
    return proc, port[0], log


def _stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def _barrier(futures: list[Future[dict[str, Any]]], barrier: Path, idle: float) -> float:
    """Wait until every generator is connected, then tell them when to start."""
    deadline = time.monotonic() + WAIT_LIMIT * 2
    while time.monotonic() < deadline:
        ready = [barrier / f"ready-{i}" for i in range(len(futures))]
        if all(p.exists() for p in ready) or any(f.done() for f in futures):
            break
        time.sleep(0.05)
    t_go = time.monotonic() + idle
    tmp = barrier / "go.tmp"
    tmp.write_text(repr(t_go))
    tmp.rename(barrier / "go")
    return t_go


def _py_spy_path() -> str:
    beside = Path(sys.executable).parent / "py-spy"  # pip installs it next to the interpreter
    return str(beside) if beside.exists() else (shutil.which("py-spy") or "py-spy")


def _py_spy(pid: int, start: float, seconds: float, out: Path) -> threading.Thread:
    def run() -> None:
        time.sleep(max(0.0, start - time.monotonic()))
        subprocess.run([_py_spy_path(), "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
                        "--rate", "200", "--format", "raw", "--nonblocking", "--output", str(out)],
                       capture_output=True, timeout=seconds + 60, check=False)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def run_server(server: str, load: Load, args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    profile = args.profile if server == "crdt-sync" else None
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else math.nan
    with tempfile.TemporaryDirectory(prefix="relay-load-", dir=args.tmpdir) as tmp:
        work = Path(tmp)
        barrier = work / "barrier"
        barrier.mkdir()
        proc, port, log = _start_server(server, work, profile, args.baseline)
        sampler = Sampler(proc.pid)
        sampler.start()
        spy: threading.Thread | None = None
        try:
            with ThreadPoolExecutor(args.generators) as pool:
                futures = [pool.submit(run_child, MODULE, [
                    "--child", server if server in OURS else "pycrdt-websocket",
                    "--port", str(port), "--index", str(i), "--generators", str(args.generators),
                    "--barrier", str(barrier), "--load", json.dumps(_load_dict(load))],
                    description=f"{SERVERS[server]} (generator {i + 1}/{args.generators})", total=100,
                    progress=progress) for i in range(args.generators)]
                t_go = _barrier(futures, barrier, load.idle)
                if profile == "py-spy":
                    spy = _py_spy(proc.pid, t_go + load.warmup, load.duration, work / "py-spy.txt")
                results = [f.result() for f in futures]
            hwm = _hwm_mb(proc.pid)
            if spy is not None:
                spy.join(timeout=load.duration + 90)
        finally:
            sampler.stop()
            _stop_server(proc)
        summary = _summarise(server, load, results, sampler, hwm, t_go, quiet)
        summary["server_log_tail"] = log.read_text()[-2000:] if proc.returncode not in (0, -15) else ""
        if profile == "py-spy" and (work / "py-spy.txt").exists():
            summary["profile"] = _summarise_py_spy(work / "py-spy.txt")
            _keep(work / "py-spy.txt", args.profile_out, "relay-py-spy.txt")
        elif profile == "cprofile" and (work / "relay.prof").exists():
            summary["profile"] = _summarise_cprofile(work / "relay.prof")
            _keep(work / "relay.prof", args.profile_out, "relay.prof")
        return summary


def _keep(path: Path, directory: Path | None, name: str) -> None:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(path.read_bytes())


def _load_dict(load: Load) -> dict[str, Any]:
    return {f: getattr(load, f) for f in Load.__dataclass_fields__}


def _ms(seconds: float) -> float | None:
    return None if math.isinf(seconds) or math.isnan(seconds) else round(seconds * 1000, 2)


def _summarise(server: str, load: Load, results: list[dict[str, Any]], sampler: Sampler, hwm: float,
               t_go: float, quiet: float) -> dict[str, Any]:
    lat = {"typing": Histogram(), "team": Histogram()}
    ack, lags = Histogram(), Histogram()
    expected = {"typing": 0, "team": 0}
    delivered = {"typing": 0, "team": 0}
    errors: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for r in results:
        for kind in lat:
            lat[kind].merge(Histogram.from_json(r["latency"][kind]))
            expected[kind] += r["expected"][kind]
            delivered[kind] += r["delivered_window_edits"][kind]
        ack.merge(Histogram.from_json(r["ack"]))
        lags.merge(Histogram.from_json(r["ticker_lag"]))
        errors.update(r["errors"])
        for k, v in r["error_examples"].items():
            examples.setdefault(k, v)
    both = Histogram()
    for h in lat.values():
        both.merge(h)
    total_expected = sum(expected.values())
    sent = sum(r["sent"] for r in results)
    window = (t_go + load.warmup, t_go + load.end)
    d = load.duration
    generator_pct = 100 * sum(r["cpu_window_s"] for r in results) / d
    idle_lo = max(r["t_connect"] for r in results) if results else t_go
    connect_end = max(r["t_connect"] + r["connect_s"] for r in results)
    return {
        "server": server, "name": SERVERS[server],
        "connections": sum(r["devices"] for r in results),
        "established": sum(r["established"] for r in results),
        "connect_s": round(max(r["connect_s"] for r in results), 2),
        "prepare_s": round(max(r["prepare_s"] for r in results), 2),
        "offered_per_s": sum(r["offered"] for r in results) / d,
        "sent_per_s": sent / d,
        "accepted_per_s": sum(r["accepted_in_window"] for r in results) / d,
        "accepted_fraction": sum(r["accepted_window_edits"] for r in results) / sent if sent else math.nan,
        "expected_deliveries_per_s": total_expected / d,
        "delivered_per_s": sum(r["delivered_in_window"] for r in results) / d,
        "delivered_fraction": sum(delivered.values()) / total_expected if total_expected else math.nan,
        "expected": expected, "delivered": delivered,
        "latency_ms": {
            "all": {"p50": _ms(both.quantile(0.5, total_expected)),
                    "p99": _ms(both.quantile(0.99, total_expected))},
            **{k: {"p50": _ms(h.quantile(0.5, expected[k])), "p99": _ms(h.quantile(0.99, expected[k]))}
               for k, h in lat.items()}},
        "ack_ms": {"p50": _ms(ack.quantile(0.5, sent)), "p99": _ms(ack.quantile(0.99, sent))},
        "duplicates": sum(r["duplicates"] for r in results),
        "rss_peak_mb": round(max(sampler.rss_mb(0, math.inf), hwm if not math.isnan(hwm) else 0), 1),
        "rss_idle_mb": round(sampler.rss_mb(connect_end, t_go, pick=max), 1),
        "rss_end_mb": round(sampler.rss_mb(window[0], window[1], pick=lambda xs: xs[-1]), 1),
        "cpu_idle_pct": round(sampler.cpu_percent(max(idle_lo, connect_end) + 0.3, t_go), 1),
        "cpu_window_pct": round(sampler.cpu_percent(*window), 1),
        # CPU time per delivery: what the load costs the server, whatever else runs on the machine
        "cpu_us_per_delivery": round(sampler.cpu_percent(*window) / 100 * d * 1e6
                                     / max(1, sum(r["delivered_in_window"] for r in results)), 1),
        "generator_cpu_pct": round(generator_pct, 1),
        "others_cpu_pct": round(sampler.machine_percent(*window) - sampler.cpu_percent(*window)
                                - generator_pct, 1),
        "machine_before_pct": round(quiet, 1),
        "ticker_lag_p99_ms": _ms(lags.quantile(0.99)),
        "errors": dict(errors), "error_examples": examples,
    }


def _summarise_py_spy(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample counts per function from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame_name(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    return {"samples": total,
            "self": [(f, round(100 * c / total, 1)) for f, c in own.most_common(top)] if total else [],
            "inclusive": [(f, round(100 * c / total, 1)) for f, c in inclusive.most_common(top * 2)]
            if total else []}


def _frame_name(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker_ in ("site-packages/", "lib/python3.11/", "/main/"):
        if marker_ in where:
            where = where.split(marker_, 1)[1]
    return f"{name} ({where})"


def _summarise_cprofile(path: Path, top: int = 25) -> dict[str, Any]:
    import pstats

    st = pstats.Stats(str(path))
    rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    total = sum(v[2] for v in st.stats.values()) or 1.0  # type: ignore[attr-defined]
    return {"self": [(f"{fn[2]} ({fn[0].split('/main/')[-1]}:{fn[1]})", round(100 * v[2] / total, 1))
                     for fn, v in rows[:top]]}


# -- output --------------------------------------------------------------------------------------
def _fmt_ms(v: float | None) -> str:
    return "> drain" if v is None else (f"{v:.1f}" if v < 100 else f"{v:,.0f}")


def _fmt_pct(v: float) -> str:
    return "-" if math.isnan(v) else f"{100 * v:.1f} %"


HEADERS = ["server", "typing /s", "conns", "offered /s", "accepted /s", "delivered /s", "expected /s",
           "delivered", "p50 ms", "p99 ms", "typing p99", "team p99", "ack p99", "RSS MB", "CPU %", "errors"]
DETAIL_HEADERS = ["server", "typing /s", "connect s", "idle CPU %", "idle RSS MB", "accepted", "duplicates",
                  "server CPU µs/delivery", "generator CPU %", "others' CPU %", "sched lag p99 ms"]


def _rows(results: list[dict[str, Any]]) -> tuple[list[list[str]], list[list[str]]]:
    rows, details = [], []
    for r in results:
        lat = r["latency_ms"]
        rate = f"{r['typing_rate']:g}"
        rows.append([r["name"], rate, f"{r['established']:,}/{r['connections']:,}",
                     f"{r['offered_per_s']:,.0f}", f"{r['accepted_per_s']:,.0f}",
                     f"{r['delivered_per_s']:,.0f}", f"{r['expected_deliveries_per_s']:,.0f}",
                     _fmt_pct(r["delivered_fraction"]), _fmt_ms(lat["all"]["p50"]),
                     _fmt_ms(lat["all"]["p99"]),
                     _fmt_ms(lat["typing"]["p99"]), _fmt_ms(lat["team"]["p99"]), _fmt_ms(r["ack_ms"]["p99"]),
                     f"{r['rss_peak_mb']:.0f}", f"{r['cpu_window_pct']:.0f}", str(sum(r["errors"].values()))])
        details.append([r["name"], rate, f"{r['connect_s']:.1f}", f"{r['cpu_idle_pct']:.1f}",
                        f"{r['rss_idle_mb']:.0f}", _fmt_pct(r["accepted_fraction"]), str(r["duplicates"]),
                        f"{r['cpu_us_per_delivery']:.0f}",
                        f"{r['generator_cpu_pct']:.0f}", f"{r['others_cpu_pct']:.0f}",
                        _fmt_ms(r["ticker_lag_p99_ms"])])
    return rows, details


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("crdt-sync", "pycrdt", "pycrdt-websocket", "uvicorn", "websockets", "aiohttp", "cbor2"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def _report(args: argparse.Namespace, loads: list[Load], results: list[dict[str, Any]]) -> None:
    payload = {"benchmark": "relay_load", "loads": [_load_dict(load) for load in loads],
               "generators": args.generators, "versions": _versions(), "results": results}
    if args.save is not None:
        args.save.write_text(json.dumps(payload, indent=2))
    if args.json:
        print_json(payload)
        return
    console = make_console()
    load = loads[0]
    teams = sum(1 for s in load.spaces() if s[1] == "team")
    rates = "/".join(f"{x.typing_rate:g}" for x in loads)
    typing = (f"{load.typing_devices} typing at {rates} edits/s in one space" if load.typing_devices
              else "no typing space")
    title = (f"relay load: {load.devices:,} devices; {typing}; "
             f"{load.devices - load.typing_devices:,} in {teams:,} teams of ~{load.team_size} "
             f"at {load.team_rate:g}/s; {load.duration:g} s measured after {load.warmup:g} s warm-up")
    rows, details = _rows(results)
    print_table(console, title, HEADERS, rows)
    print_table(console, "details", DETAIL_HEADERS, details)
    print_machine(console)
    console.print("[dim]" + ", ".join(f"{k} {v}" for k, v in _versions().items()) + "[/dim]")
    for r in results:
        for kind, n in r["errors"].items():
            console.print(f"[yellow]{r['name']}: {n} x {kind}[/yellow] (e.g. {r['error_examples'][kind]})")
    for rate in dict.fromkeys(r["typing_rate"] for r in results):
        ours = next((r for r in results if r["server"] == "crdt-sync" and r["typing_rate"] == rate), None)
        theirs = next((r for r in results if r["server"] == "pycrdt-websocket" and r["typing_rate"] == rate),
                      None)
        if ours and theirs:
            p99 = ((ours["latency_ms"]["all"]["p99"] or math.inf)
                   < (theirs["latency_ms"]["all"]["p99"] or math.inf))
            both_kept_up = min(ours["delivered_fraction"], theirs["delivered_fraction"]) >= 0.999
            tput: bool | None = None if both_kept_up else ours["delivered_per_s"] > theirs["delivered_per_s"]
            for what, ok in (("throughput (delivered env/s)", tput), ("p99 delivery latency", p99)):
                verdict = ("even: both delivered every edit" if ok is None
                           else "[green]ahead[/green]" if ok else "[red]behind[/red]")
                console.print(f"target at {rate:g} typing edits/s: crdt-sync relay ahead of pycrdt-websocket "
                              f"on {what}: {verdict}")
    for r in results:
        prof = r.get("profile")
        if prof:
            console.print(f"\n[bold]{r['name']} profile[/bold] ({args.profile}, measured window)")
            print_table(console, "self time", ["function", "%"], [[f, f"{p}"] for f, p in prof["self"]])
            if "inclusive" in prof:
                print_table(console, "inclusive time", ["function", "%"],
                            [[f, f"{p}"] for f, p in prof["inclusive"]])


# -- command line ------------------------------------------------------------------------------------
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--devices", type=int, default=None, help="concurrent device connections (default 1000)")
    p.add_argument("--team-size", type=int, default=10, help="devices per team space (default 10)")
    p.add_argument("--typing-devices", type=int, default=None,
                   help="devices of the typing space (default 64)")
    p.add_argument("--typing-rate", default="6",
                   help="edits per second per typing device; a comma-separated list runs each in turn")
    p.add_argument("--team-rate", type=float, default=0.2, help="edits per second per team device")
    p.add_argument("--duration", type=float, default=None, help="measured seconds (default 60)")
    p.add_argument("--warmup", type=float, default=None, help="seconds of load before measuring (default 5)")
    p.add_argument("--drain", type=float, default=10.0, help="seconds to wait for late deliveries")
    p.add_argument("--idle", type=float, default=3.0, help="seconds connected and idle before the load")
    p.add_argument("--generators", type=int, default=1, help="load generator processes (default 1)")
    p.add_argument("--servers", default="crdt-sync,pycrdt-websocket",
                   help=f"comma-separated, in order: {', '.join(SERVERS)}")
    p.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                   help="a checkout of another commit: the crdt-sync-baseline server runs its relay "
                        "(compare two versions of the relay in one run)")
    p.add_argument("--quick", action="store_true", help="a small smoke run (100 devices, 10 s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="before each server, wait up to S seconds for other work on the machine to stop")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--save", type=Path, default=None, metavar="FILE", help="also write the JSON to FILE")
    p.add_argument("--profile", choices=["py-spy", "cprofile"], default=None,
                   help="profile the crdt-sync relay during the measured window")
    p.add_argument("--profile-out", type=Path, default=None, metavar="DIR", help="keep the raw profile here")
    p.add_argument("--tmpdir", type=Path, default=None, help="where the servers' data directories go")
    # the children's side: set by the parent only
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--serve-ypy", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ystore", type=Path, help=argparse.SUPPRESS)
    for hidden in ("--port", "--index"):
        p.add_argument(hidden, type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--barrier", help=argparse.SUPPRESS)
    p.add_argument("--load", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    args.devices = args.devices or (100 if quick else 1000)
    args.typing_devices = args.typing_devices if args.typing_devices is not None else (16 if quick else 64)
    args.duration = args.duration or (10.0 if quick else 60.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if quick else 5.0)
    if quick and args.drain == 10.0:
        args.drain = 5.0
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not servers or any(s not in SERVERS for s in servers):
        p.error(f"--servers takes some of: {', '.join(SERVERS)}")
    args.server_list = servers
    if args.typing_devices > args.devices or args.team_size < 2 or args.devices < 2:
        p.error("need --devices >= --typing-devices, --devices >= 2 and --team-size >= 2")
    try:
        args.typing_rates = [float(x) for x in str(args.typing_rate).split(",") if x.strip()]
    except ValueError:
        p.error("--typing-rate takes numbers, comma-separated")
    if (not args.typing_rates or min(*args.typing_rates, args.team_rate, args.duration) <= 0
            or args.generators < 1):
        p.error("rates, --duration and --generators must be positive")
    if args.generators > 1 and args.typing_devices == 0:
        p.error("several generators need a typing space for the first one")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.serve_ypy:
        asyncio.run(_serve_ypy(args.ystore))
        return 0
    if args.child:
        return _child(args)
    loads = [Load(devices=args.devices, team_size=args.team_size, typing_devices=args.typing_devices,
                  typing_rate=rate, team_rate=args.team_rate, warmup=args.warmup, duration=args.duration,
                  drain=args.drain, idle=args.idle, seed=args.seed) for rate in args.typing_rates]
    results = []
    try:
        with progress_display(make_console(stderr=True)) as progress:
            for load in loads:  # servers alternate, so drift in machine load hits all alike
                for server in args.server_list:
                    results.append({"typing_rate": load.typing_rate,
                                    **run_server(server, load, args, progress)})
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _report(args, loads, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
