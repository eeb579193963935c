"""Encrypted, mutually authenticated links (protocol version 3, issue 12), attack by attack.

- A passive tap on a real relay WebSocket session (a TCP proxy on loopback between a device
  and a real relay) sees neither device ids or keys, nor space names, nor written values.
- A man in the middle that runs a handshake with each side and splices them (passes each
  side's AUTH on to the other) is refused with ERROR 3, at a device and at a real relay.
- A flipped byte of a SEALED frame ends the session (ERROR 1), at a device and at a real
  relay through the proxy; nothing of the frame applies.
- A replayed or duplicated SEALED frame is dropped and counted; the session still syncs.
- Downgrades are refused: plaintext AUTH, SPACES or HAVE after HELLO (ERROR 6), a HELLO
  claiming only version 2 (ERROR 2), at a device and at a real relay.
- The memory transport with loss, duplication and reordering still converges (and the
  replay window drops the duplicates it sees).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync import Replica
from crdt_sync.protocol import Session, SessionConfig
from crdt_sync.protocol.config import MAX_BATCH_BYTES
from crdt_sync.protocol.link import REPLAY_WINDOW, SEALED_HEAD, ReplayWindow
from crdt_sync.protocol.messages import (
    E_AUTH_FAILED,
    E_MALFORMED,
    E_UNEXPECTED,
    E_UNSUPPORTED_VERSION,
    MAX_FRAME,
    MAX_INNER_FRAME,
    Auth,
    Envelopes,
    Error,
    Have,
    Hello,
    Spaces,
    decode,
    encode,
)
from crdt_sync.transports.driver import run_session
from crdt_sync.transports.memory import LinkConditions, MemoryNetwork
from tests.conftest import ReplicaFactory
from tests.helpers import CREATED, share
from tests.link_helpers import HandPeer
from tests.relay_helpers import RawPeer, log_events, rejections, running_relay, sync_once, wait_until
from tests.sync_helpers import FAST, SPACE, WAIT, Wire, admit, fill, opened, snapshot

SECRET_VALUES = ["diagnosis: bearing-failure-7f3a", "customer: Zoë Ørsted-9c21"]


def _secrets(replica: Replica, space: str) -> None:
    """Values only this test writes, in fields and entity ids."""
    sp = replica.space(space)
    for i, value in enumerate(SECRET_VALUES):
        sp.put("faults", f"fault-entity-{i}-ab12", {"note": value})
    replica.seal()


# -- a TCP proxy on loopback -----------------------------------------------------------------------
class Proxy:
    """Forwards TCP between clients and ``port``; records every byte both ways (``seen``).

    ``mangle(up, data)`` may replace what goes through (``up``: client to server); ``ups``
    holds what each client sent, per connection."""

    def __init__(self, port: int, mangle: Callable[[bool, bytes], bytes] | None = None) -> None:
        self.target = port
        self.mangle = mangle
        self.seen = bytearray()
        self.ups: list[bytearray] = []
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Proxy:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=WAIT)
        await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.ups.append(bytearray())
        for args in ((reader, up_writer, self.ups[-1]), (up_reader, writer, None)):
            task = asyncio.ensure_future(self._pipe(*args))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    up: bytearray | None) -> None:
        try:
            for _ in range(1_000_000):  # bounded: each turn moves at least one byte
                data = await reader.read(65536)
                if not data:
                    break
                self.seen += data
                if up is not None:
                    up += data
                if self.mangle is not None:
                    data = self.mangle(up is not None, data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def _ws_frames(data: bytes) -> tuple[list[tuple[int, int, int]], int]:
    """``(opcode, payload start, payload end)`` of each whole WebSocket frame in ``data``, and
    where the first incomplete one starts."""
    out, at = [], 0
    while len(data) - at >= 2:
        n, pos = data[at + 1] & 0x7F, at + 2
        if n == 126:
            n, pos = int.from_bytes(data[at + 2:at + 4], "big"), at + 4
        elif n == 127:
            n, pos = int.from_bytes(data[at + 2:at + 10], "big"), at + 10
        pos += 4 if data[at + 1] & 0x80 else 0
        if len(data) < pos + n:
            break
        out.append((data[at] & 0x0F, pos, pos + n))
        at = pos + n
    return out, at


def _unmasked_payloads(stream: bytes) -> list[bytes]:
    """The payloads of the binary WebSocket messages in a byte stream from a client (masked)
    after its HTTP upgrade request."""
    data = stream[stream.index(b"\r\n\r\n") + 4:]
    frames, _ = _ws_frames(data)
    return [bytes(b ^ data[start - 4 + i % 4] for i, b in enumerate(data[start:end]))
            for opcode, start, end in frames if opcode == 0x2]


# -- a passive listener -----------------------------------------------------------------------------
async def test_a_passive_tap_on_a_relay_session_learns_no_id_name_or_value(
        tmp_path: Path, open_replica: ReplicaFactory) -> None:
    device, other = open_replica("device"), open_replica("other")
    space = "tap-space-name-5d1e"
    space_id = share(device, other, name=space)
    _secrets(device, space)
    async with running_relay(tmp_path / "relay") as relay, Proxy(relay.port) as tap:
        for replica in (device, other):  # one pushes, one pulls: both ways cross the tap
            outcome = await sync_once(replica, tap.url)
            assert outcome.synced and outcome.ok, outcome.closed
        relay_id, relay_key = relay.device_id, relay.store.identity.public_key
    assert sorted(other.space(space).rows()) == sorted(device.space(space).rows())  # it did sync
    seen = bytes(tap.seen)
    assert len(seen) > 1000  # the traffic is there ...
    assert b"HTTP/1.1 101" in seen
    # ... and nothing that names anyone or anything, in any encoding the protocol uses
    for replica in (device, other):
        for needle in (replica.device_id.encode(), replica.identity.public_key,
                       replica.device_id.upper().encode()):
            assert needle not in seen, "a device id or key crossed the link in the clear"
    assert relay_id.encode() not in seen and relay_key not in seen
    for text in [space, space_id, *SECRET_VALUES, "fault-entity-0-ab12", "faults", "note"]:
        assert text.encode() not in seen, f"{text!r} crossed the link in the clear"
    # Every WebSocket message after the HELLO is SEALED.
    for up in tap.ups:
        frames = _unmasked_payloads(bytes(up))
        assert decode(frames[0]).__class__ is Hello
        assert frames[1:] and all(f[:2] == SEALED_HEAD for f in frames[1:])


# -- a man in the middle ------------------------------------------------------------------------------
def _splice(alice: Session, bob: Session) -> tuple[list[bytes], list[bytes]]:
    """A man in the middle between two sans-I/O sessions: one handshake of its own with
    each side (so each side's link is with it), each side's AUTH and SPACES passed on to the
    other re-sealed. Returns what each side answered with last."""
    to_alice, to_bob = HandPeer(), HandPeer()
    hello_a, hello_b = alice.start()[0], bob.start()[0]
    to_alice.on_hello(hello_a)
    to_bob.on_hello(hello_b)
    from_alice = alice.receive(to_alice.hello, 0.0)  # her AUTH, SPACES: sealed to the mitm
    from_bob = bob.receive(to_bob.hello, 0.0)
    out_a: list[bytes] = []
    out_b: list[bytes] = []
    for frame in from_alice:  # decrypted by the mitm, re-encrypted for Bob
        out_b += bob.receive(to_bob.seal(to_alice.inner(frame)), 0.0)
    for frame in from_bob:
        out_a += alice.receive(to_alice.seal(to_bob.inner(frame)), 0.0)
    return out_a, out_b


def test_a_man_in_the_middle_that_splices_two_handshakes_is_refused(tmp_path: Path,
                                                                     open_replica: ReplicaFactory) -> None:
    alice, bob = open_replica("alice"), open_replica("bob")
    fill(alice, "a", 2)
    fill(bob, "b", 2)
    before = snapshot(alice).key(), snapshot(bob).key()
    sa, sb = Session(alice.sync_host, 0.0), Session(bob.sync_host, 0.0)
    _splice(sa, sb)
    for session in (sa, sb):
        assert session.closed is not None and session.closed.code == E_AUTH_FAILED, session.closed
        assert not session.authenticated
    assert (snapshot(alice).key(), snapshot(bob).key()) == before


async def test_a_man_in_the_middle_between_a_device_and_a_relay_is_refused(
        tmp_path: Path, open_replica: ReplicaFactory) -> None:
    """The mitm holds a WebSocket to a real relay and a sans-I/O session of a real device."""
    device = open_replica("device")
    fill(device, "d", 2)
    async with running_relay(tmp_path / "relay") as relay, RawPeer.open(relay.url) as raw:
        to_relay, to_device = HandPeer(), HandPeer()
        await raw.send(to_relay.hello)
        relay_hello = await raw.recv()
        assert relay_hello is not None
        to_relay.on_hello(relay_hello)
        session = Session(device.sync_host, 0.0)
        to_device.on_hello(session.start()[0])
        for frame in session.receive(to_device.hello, 0.0):  # the device's AUTH and SPACES
            await raw.send(to_relay.seal(to_device.inner(frame)))
        error = None
        for _ in range(100):
            frame = await raw.recv()
            if frame is None:
                break
            msg = to_relay.open(frame)
            if isinstance(msg, Error):
                error = msg
        assert error is not None and error.code == E_AUTH_FAILED, error
        assert await rejections(relay.url, "auth-failed") == 1
        assert relay.store.version_vector(SPACE) == {}


# -- altered frames -----------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["tag", "ciphertext", "counter"])
def test_a_flipped_byte_of_a_sealed_frame_ends_the_session(tmp_path: Path, open_replica: ReplicaFactory,
                                                           where: str) -> None:
    alice, bob = open_replica("alice"), open_replica("bob")
    admit(alice)
    fill(bob, "b", 3)
    before = snapshot(alice).key()
    flipped: list[bytes] = []

    def flip(direction: str, wire: bytes) -> list[bytes]:
        if direction == "b>a" and not flipped and isinstance(opened(sa, wire), Envelopes):
            at = {"tag": len(wire) - 1, "ciphertext": len(wire) - 20, "counter": 2}[where]
            flipped.append(wire)
            return [wire[:at] + bytes([wire[at] ^ 0x01]) + wire[at + 1:]]
        return [wire]

    sa, sb = Session(alice.sync_host, 0.0), Session(bob.sync_host, 0.0)
    wire = Wire(sa, sb, tap=flip)
    wire.start()
    assert flipped, "no ENVELOPES frame went by"
    assert sa.closed is not None and sa.closed.code == E_MALFORMED, sa.closed
    assert "did not authenticate" in sa.closed.reason
    assert [m.code for m in wire.sent("a>b") if isinstance(m, Error)] == [E_MALFORMED]
    assert snapshot(alice).key() == before  # nothing of it applied


async def test_a_flipped_byte_on_the_way_to_a_relay_is_refused(tmp_path: Path,
                                                              open_replica: ReplicaFactory) -> None:
    """The proxy flips one payload byte of the device's fourth WebSocket message (SEALED,
    after the handshake): the relay refuses the session (ERROR 1) and stores nothing of it."""
    device = open_replica("device")
    space = share(device)  # its own space: CREATED envelopes
    fill(device, "d", 3, space)
    state = {"head": True, "binary": 0}
    pending = bytearray()

    def mangle(up: bool, data: bytes) -> bytes:
        if not up:
            return data
        pending.extend(data)
        if state["head"]:
            if b"\r\n\r\n" not in pending:
                return b""
            end = pending.index(b"\r\n\r\n") + 4
            head = bytes(pending[:end])
            del pending[:end]
            state["head"] = False
            return head + mangle(True, b"")
        frames, whole = _ws_frames(bytes(pending))
        out = bytearray(pending[:whole])
        del pending[:whole]
        for opcode, _, end in frames:
            if opcode == 0x2:
                state["binary"] += 1
                if state["binary"] == 4:  # after HELLO, AUTH, SPACES: a SEALED HAVE or batch
                    out[end - 1] ^= 0x01  # its last byte, in the tag (masking is XOR)
        return bytes(out)

    async with running_relay(tmp_path / "relay") as relay, Proxy(relay.port, mangle) as proxy:
        outcome = await sync_once(device, proxy.url)
        assert not outcome.synced
        assert outcome.closed is not None and outcome.closed.by_peer and outcome.closed.code == E_MALFORMED, \
            outcome.closed
        assert "did not authenticate" in outcome.closed.reason
        assert await rejections(relay.url, "malformed") == 1
        assert sum(relay.store.version_vector(space).values()) < CREATED + 3


# -- replays --------------------------------------------------------------------------------------------
def test_a_replayed_sealed_frame_is_dropped_and_counted_and_the_session_syncs(
        tmp_path: Path, open_replica: ReplicaFactory) -> None:
    alice, bob = open_replica("alice"), open_replica("bob")
    fill(alice, "a", 3)
    fill(bob, "b", 3)
    recorded: list[bytes] = []

    def replay(direction: str, wire: bytes) -> list[bytes]:
        if direction != "b>a" or wire[:2] != SEALED_HEAD:
            return [wire]
        recorded.append(wire)
        return [wire, wire, *recorded[:1]]  # a duplicate, and Bob's AUTH again each time

    sa, sb = Session(alice.sync_host, 0.0), Session(bob.sync_host, 0.0)
    wire = Wire(sa, sb, tap=replay)
    wire.start()
    assert sa.closed is None and sa.synced and sb.synced
    assert alice.version_vector(SPACE) == bob.version_vector(SPACE)
    assert sa.replays == 2 * len(recorded) > 0
    assert sb.replays == 0


async def test_a_frame_replayed_to_a_relay_is_dropped_and_counted(tmp_path: Path,
                                                                   open_replica: ReplicaFactory) -> None:
    """The proxy sends the device's third and fourth WebSocket messages (SEALED) twice."""
    device = open_replica("device")
    space = share(device)  # its own space: CREATED envelopes
    fill(device, "d", 3, space)
    state = {"head": True, "binary": 0}
    pending = bytearray()

    def replay(up: bool, data: bytes) -> bytes:
        if not up:
            return data
        pending.extend(data)
        if state["head"]:
            if b"\r\n\r\n" not in pending:
                return b""
            end = pending.index(b"\r\n\r\n") + 4
            head = bytes(pending[:end])
            del pending[:end]
            state["head"] = False
            return head + replay(True, b"")
        frames, whole = _ws_frames(bytes(pending))
        out = bytearray()
        at = 0
        for opcode, _, end in frames:
            raw = pending[at:end]
            at = end
            out += raw
            if opcode == 0x2:
                state["binary"] += 1
                if state["binary"] in (3, 4):
                    out += raw  # the same bytes again: a replay
        del pending[:whole]
        return bytes(out)

    with log_events("crdt_sync.relay") as records:
        async with running_relay(tmp_path / "relay") as relay, Proxy(relay.port, replay) as proxy:
            outcome = await sync_once(device, proxy.url)
            assert outcome.synced and outcome.ok, outcome.closed
            assert relay.store.version_vector(space) == {device.device_id: CREATED + 3}

            async def logged() -> bool:
                return any(r.getMessage() == "session.closed" for r in records)

            await wait_until(logged, "the relay's session.closed log line")
    [closed] = [r for r in records if r.getMessage() == "session.closed"]
    assert closed.fields["replays"] == 2  # type: ignore[attr-defined]


def test_the_replay_window() -> None:
    window = ReplayWindow()
    for counter in (0, 2, 1, 5, 1030):
        assert window.fresh(counter)
        window.accept(counter)
    assert not any(window.fresh(c) for c in (0, 1, 2, 5, 1030))  # seen
    assert window.fresh(1029) and window.fresh(1030 - REPLAY_WINDOW + 1)  # within, unseen
    assert not window.fresh(1030 - REPLAY_WINDOW) and not window.fresh(3)  # behind the window
    window.accept(5000)
    assert window.fresh(5000 - REPLAY_WINDOW + 1) and not window.fresh(1030)


async def test_a_memory_link_that_loses_duplicates_and_reorders_still_converges(
        open_replica: ReplicaFactory) -> None:
    alice, bob = open_replica("alice", seal_interval=0), open_replica("bob", seal_interval=0)
    fill(alice, "a", 30)
    fill(bob, "b", 30)
    conditions = LinkConditions(loss=0.1, duplicate=0.3, reorder=0.3)
    link_a, link_b = MemoryNetwork(seed=12).pair(conditions)
    sessions: list[Session] = []
    async with asyncio.timeout(2 * WAIT):
        outcome_a, outcome_b = await asyncio.gather(
            *(run_session(r, link, config=FAST, timeout=WAIT, on_session=sessions.append)
              for r, link in ((alice, link_a), (bob, link_b))))
    assert outcome_a.synced and outcome_b.synced, (outcome_a.closed, outcome_b.closed)
    assert all(s.replays > 0 for s in sessions)  # the duplicates the link made, dropped
    assert alice.version_vector(SPACE) == bob.version_vector(SPACE)
    assert snapshot(alice).key() == snapshot(bob).key()


# -- downgrades ------------------------------------------------------------------------------------------
def _handshaken(alice: Replica) -> tuple[Session, HandPeer]:
    session = Session(alice.sync_host, 0.0)
    session.defer_sealing()
    peer = HandPeer()
    peer.on_hello(session.start()[0])
    session.receive(peer.hello, 0.0)
    return session, peer


@pytest.mark.parametrize("kind", ["AUTH", "SPACES", "HAVE", "AUTH-then-HAVE"])
def test_a_plaintext_frame_after_hello_is_refused(open_replica: ReplicaFactory, kind: str) -> None:
    alice = open_replica("alice")
    fill(alice, "a", 1)
    session, peer = _handshaken(alice)
    frames = {"AUTH": [peer.auth()], "SPACES": [encode(Spaces([bytes(16)]))],
              "HAVE": [encode(Have(0, [], []))],
              "AUTH-then-HAVE": [peer.seal(peer.auth()), encode(Have(0, [], []))]}[kind]
    out: list[bytes] = []
    for frame in frames:
        out = session.receive(frame, 0.0)
    assert session.closed is not None and session.closed.code == E_UNEXPECTED, session.closed
    assert "plaintext" in session.closed.reason
    assert [type(decode(f)) for f in out] == [Error]  # (in the clear only because deferred)


def test_a_hello_claiming_only_version_2_is_error_2_in_the_clear(open_replica: ReplicaFactory) -> None:
    alice = open_replica("alice")
    session = Session(alice.sync_host, 0.0)  # not deferred: what goes on the wire
    session.start()
    out = session.receive(HandPeer(versions=(2, 2)).hello, 0.0)
    assert session.closed is not None and session.closed.code == E_UNSUPPORTED_VERSION
    [error] = [decode(f) for f in out]
    assert isinstance(error, Error) and "2..2" in error.message
    assert "upgrade crdt-sync on the peer" in error.message
    assert session.link is None  # no keys were made


def test_frames_from_a_real_peer_that_skips_sealing_are_refused(open_replica: ReplicaFactory) -> None:
    """Bob's session, with its frames delivered as it made them but never sealed."""
    alice, bob = open_replica("alice"), open_replica("bob")
    fill(bob, "b", 1)
    sa, sb = Session(alice.sync_host, 0.0), Session(bob.sync_host, 0.0)
    sb.defer_sealing()
    out_a = sa.start()
    out_b = sb.start()
    sb.receive(out_a[0], 0.0)
    for frame in out_b + sb.receive(out_a[0], 0.0):  # HELLO, then AUTH and SPACES in the clear
        sa.receive(frame, 0.0)
        if sa.closed:
            break
    assert sa.closed is not None and sa.closed.code == E_UNEXPECTED
    assert "plaintext AUTH after HELLO" in sa.closed.reason


async def test_a_relay_refuses_plaintext_after_hello(tmp_path: Path, open_replica: ReplicaFactory) -> None:
    async with running_relay(tmp_path / "relay") as relay, RawPeer.open(relay.url) as raw:
        peer = HandPeer()
        await raw.send(peer.hello)
        hello = await raw.recv()
        assert hello is not None
        peer.on_hello(hello)
        await raw.send(peer.auth())  # AUTH in the clear
        error = await _error_from(raw, peer)
        assert error.code == E_UNEXPECTED and "plaintext AUTH after HELLO" in error.message
        assert await rejections(relay.url, "unexpected-message") == 1


async def _error_from(raw: RawPeer, peer: HandPeer) -> Error:
    for _ in range(100):
        frame = await raw.recv()
        assert frame is not None, "the relay closed without an ERROR"
        msg = peer.open(frame)
        if isinstance(msg, Error):
            return msg
    raise AssertionError("no ERROR")


def test_auth_inside_sealed_carries_the_device_key(open_replica: ReplicaFactory) -> None:
    """The device key is in AUTH, never in HELLO (a passive listener sees HELLO only)."""
    alice = open_replica("alice")
    session = Session(alice.sync_host, 0.0)
    session.defer_sealing()
    hello = session.start()[0]
    assert isinstance(decode(hello), Hello) and alice.identity.public_key not in hello
    auth = decode(session.receive(HandPeer().hello, 0.0)[0])
    assert isinstance(auth, Auth) and auth.device_key == alice.identity.public_key


# -- sizes ------------------------------------------------------------------------------------------------
def test_batches_are_sized_to_fit_inside_sealed(open_replica: ReplicaFactory) -> None:
    """The largest batch a session may be configured for still fits in a SEALED frame."""
    with pytest.raises(ValueError, match="must fit inside SEALED"):
        SessionConfig(batch_bytes=MAX_BATCH_BYTES + 1)
    alice, bob = open_replica("alice", seal_interval=0), open_replica("bob")
    admit(bob)
    sp = admit(alice).space(SPACE)
    for i in range(12):  # ~12 envelopes of ~100 KB: more than one frame holds (incompressible)
        sp.put("blobs", f"b{i}", {f"part{j}": os.urandom(50_000) for j in range(2)})
        alice.seal()
    big = SessionConfig(batch_bytes=MAX_BATCH_BYTES)
    wire = Wire(Session(alice.sync_host, 0.0, big), Session(bob.sync_host, 0.0, big))
    wire.start()
    assert wire.a.synced and wire.b.synced
    batches = [f for d, f in wire.log if d == "a>b" and isinstance(decode(f), Envelopes)]
    assert len(batches) >= 2 and max(map(len, batches)) > MAX_INNER_FRAME - 200_000
    assert max(len(f) for _, f in wire.log) <= MAX_INNER_FRAME
    assert max(len(f) for _, f in wire.wire_log) <= MAX_FRAME


@settings(max_examples=300, deadline=None)
@given(frame=st.binary(max_size=200), counter=st.integers(0, 2**64 - 1), at=st.integers(0, 10_000),
       bit=st.integers(0, 7), cut=st.integers(0, 3))
def test_no_altered_sealed_frame_opens_to_another_frame(frame: bytes, counter: int, at: int, bit: int,
                                                        cut: int) -> None:
    """A flipped bit anywhere (head, counter, length, ciphertext, tag), or a cut, is refused
    (ERROR 1): it never opens to a frame, the one sent or another. (Into a session that saw
    the counter it names, it would be dropped as a replay first: never opened either.)"""
    from crdt_sync.protocol.link import Link
    from crdt_sync.protocol.messages import ProtocolViolation

    key = bytes(range(32))
    sender, receiver = Link(key, bytes(32)), Link(bytes(32), key)
    sender.sent = counter
    sealed = sender.seal(frame)
    altered = bytearray(sealed)
    altered[at % len(altered)] ^= 1 << bit
    for wire in (bytes(altered), sealed[:len(sealed) - 1 - cut]):
        try:
            receiver.open(wire)
        except ProtocolViolation as exc:
            assert exc.code == E_MALFORMED, exc
        else:
            raise AssertionError("an altered SEALED frame opened")
    assert receiver.open(sealed) == frame  # and the genuine frame still opens
