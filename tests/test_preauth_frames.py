"""Bounded cost before authentication, and the framing rules every frame obeys (issue 11, 4
and "Smaller truths"), against the sans-I/O session of a real replica.

- Until the peer's AUTH is verified a frame is at most 4 KiB, refused (ERROR 4) before it is
  decoded: the ~1 MB HELLO of tiny maps that decoded to 60+ MiB and stayed for the session.
- Every frame, of every message type, is scanned before it is decoded: nesting depth and
  item count (ERROR 10), trailing bytes and non-canonical CBOR (ERROR 1).
- A long SPACES list that overtakes AUTH on a reordering link is dropped, not fatal: the
  handshake's resend brings it again after AUTH.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from crdt_sync import Replica
from crdt_sync.identity import Identity
from crdt_sync.protocol import Session, SessionConfig
from crdt_sync.protocol.messages import (
    E_LIMIT,
    E_MALFORMED,
    E_TOO_LARGE,
    MAX_FRAME,
    MAX_FRAME_BEFORE_AUTH,
    MAX_FRAME_DEPTH,
    MAX_FRAME_ITEMS,
    Ack,
    Auth,
    Bye,
    ClockSkew,
    Envelopes,
    Error,
    ForkProof,
    Have,
    Hello,
    Message,
    MessageType,
    Ping,
    Pong,
    Quarantined,
    Sealed,
    SnapshotAck,
    SnapshotChunk,
    Spaces,
    WireEnvelope,
    decode,
    encode,
    peek_type,
)
from crdt_sync.protocol.messages import (
    PROTOCOL_VERSION as V,
)
from tests.sync_helpers import SPACE, Wire, error_of, fill

MiB = 1024 * 1024
KEY = Identity.generate().public_key


def fat_hello(size: int = 1_000_000) -> bytes:
    """A well-formed HELLO whose capabilities hold ``size`` empty maps (one byte each)."""
    v = V
    head = encode(Hello(v, v, KEY, bytes(32), {}))[:-1]  # without the empty capabilities map
    return head + b"\xa1\x61a" + array_head(size) + b"\xa0" * size


def array_head(n: int) -> bytes:
    """The canonical head of an array of ``n`` items."""
    return cbor2.dumps([None] * n, canonical=True)[:-n] if n < 1 << 16 else b"\x9a" + n.to_bytes(4, "big")


@pytest.fixture
def alice(tmp_path: Path) -> Iterator[Replica]:
    replica = Replica(tmp_path / "alice", seal_interval=0)
    fill(replica, "a", 2)
    try:
        yield replica
    finally:
        replica.close()


def fresh(replica: Replica) -> Session:
    session = Session(replica.sync_host, 0.0)
    session.defer_sealing()  # its frames in the clear, to read them
    session.start()
    return session


def refused_with(session: Session, out: list[bytes], code: int) -> str:
    assert session.closed is not None and session.closed.code == code, session.closed
    error = error_of(out)
    assert error is not None and error.code == code
    return error.message


def test_a_fat_hello_is_refused_before_it_is_decoded(alice: Replica) -> None:
    frame = fat_hello()
    assert len(frame) < MAX_FRAME  # below the frame limit of an authenticated peer
    tracemalloc.start()
    cbor2.loads(frame)
    decoded = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    session = fresh(alice)
    out = session.receive(frame, 0.0)
    refusing = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert decoded > 50 * MiB  # the finding: what decoding it costs (and was kept)
    assert refusing < 256 * 1024
    message = refused_with(session, out, E_TOO_LARGE)
    assert f"exceeds {MAX_FRAME_BEFORE_AUTH}" in message and "before authentication" in message


def test_a_hello_at_the_limit_is_still_read(alice: Replica) -> None:
    frame = fat_hello(MAX_FRAME_BEFORE_AUTH - len(fat_hello(256)) + 256)
    assert len(frame) == MAX_FRAME_BEFORE_AUTH
    session = fresh(alice)
    out = session.receive(frame, 0.0)
    assert session.closed is None and [peek_type(f) for f in out] == [MessageType.AUTH, MessageType.SPACES]


def test_after_auth_a_frame_of_tiny_maps_is_refused_before_it_is_decoded(alice: Replica,
                                                                         tmp_path: Path) -> None:
    bob = Replica(tmp_path / "bob", seal_interval=0)
    try:
        fill(bob, "b", 1)
        wire = Wire(Session(alice.sync_host, 0.0), Session(bob.sync_host, 0.0))
        wire.start()
        session = wire.a
        assert session.authenticated and session.closed is None
        # HAVE of a version vector made of a million empty maps: one byte each.
        frame = bytes([0x83, MessageType.HAVE, 0x00, 0x9a]) + (10**6).to_bytes(4, "big") + b"\xa0" * 10**6
        tracemalloc.start()
        out = session.receive(frame, 0.0)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 256 * 1024
        assert f"more than {MAX_FRAME_ITEMS} items" in refused_with(session, out, E_LIMIT)
    finally:
        bob.close()


#: One of each message type, well formed.
SAMPLES: list[Message] = [
    Hello(V, V, KEY, bytes(32), {"relay": True}), Auth(KEY, bytes(64)), Spaces([bytes(16)]),
    Have(0, [(KEY, 3)], [bytes(32)]), Envelopes(0, 1, [WireEnvelope(0, 2, 7, b"payload", bytes(64))]),
    Ack(0, 1, [(0, 2)]), Ping(7), Pong(7), Error(1, "why"), Bye(0),
    Quarantined(0, KEY, 3, "bad-payload", "why"), ForkProof(0, [b"one envelope", b"another"]),
    ClockSkew(0, KEY, 3, 86_400_001), Sealed(5, bytes(40)),
    SnapshotChunk(0, bytes(32), 10, 0, b"chunk", [(KEY, 1)]), SnapshotAck(0, bytes(32), 5, "", "")]


def test_the_samples_hold_one_of_each_message_type() -> None:
    assert sorted(peek_type(encode(m)) for m in SAMPLES) == list(MessageType)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_refuses_trailing_bytes_and_non_canonical_forms(msg: Message) -> None:
    frame = encode(msg)
    assert decode(frame) == msg
    count = frame[0] & 0x1F
    variants = {
        "trailing byte": frame + b"\x00",
        "trailing frame": frame + frame,
        "long array head": bytes([0x98, count]) + frame[1:],
        "indefinite array": bytes([0x9F]) + frame[1:] + b"\xff",
        "long type": bytes([frame[0], 0x18, frame[1]]) + frame[2:] if frame[1] < 24 else None,
    }
    for name, variant in variants.items():
        if variant is None:
            continue
        with pytest.raises(Exception) as refused:
            decode(variant)
        assert getattr(refused.value, "code", None) == E_MALFORMED, (name, refused.value)


@pytest.mark.parametrize("kind", list(MessageType), ids=lambda k: k.name)
def test_limits_apply_to_every_message_type_alike(kind: MessageType) -> None:
    """Before any layout is looked at: a new message type gets the same bounds."""
    body: list[Any] = [int(kind), 0]
    cases = {
        cbor2.dumps(body, canonical=True) + b"\x00": E_MALFORMED,
        cbor2.dumps([int(kind), _nested(MAX_FRAME_DEPTH)], canonical=True): E_LIMIT,
        cbor2.dumps([int(kind), [0] * MAX_FRAME_ITEMS], canonical=True): E_LIMIT,
        cbor2.dumps([int(kind), {"b": 1, "a": 2}], canonical=False): E_MALFORMED,
        cbor2.dumps([int(kind), 1.5], canonical=False): E_MALFORMED,  # a double for a half float
        bytes([0x82, int(kind), 0xC2, 0x41, 0x01]): E_MALFORMED,  # a tag (bignum)
    }
    for frame, code in cases.items():
        with pytest.raises(Exception) as refused:
            decode(frame)
        assert getattr(refused.value, "code", None) == code, (frame[:16].hex(), refused.value)


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_a_canonical_map_in_hello_is_accepted_and_a_reordered_one_is_not() -> None:
    caps = {"relay": True, "a": 1, "zz": [1, 2]}
    frame = encode(Hello(V, V, KEY, bytes(32), caps))
    assert decode(frame) == Hello(V, V, KEY, bytes(32), caps)
    reordered = cbor2.dumps([0, 1, 1, KEY, bytes(32), caps], canonical=False)
    assert reordered != frame
    with pytest.raises(Exception, match="not canonical") as refused:
        decode(reordered)
    assert getattr(refused.value, "code", None) == E_MALFORMED


def test_a_long_spaces_list_that_overtakes_auth_is_dropped_then_resent(alice: Replica,
                                                                       tmp_path: Path) -> None:
    bob = Replica(tmp_path / "bob", seal_interval=0)
    try:
        fill(bob, "b", 2)
        for i in range(300):  # 301 blinded ids: over 4 KiB
            bob.keep("s" + "".join("abcdefghij"[int(d)] for d in f"{i:03d}") + "a" * 29)
        config = SessionConfig(resend_interval=1.0, handshake_timeout=100.0, ping_interval=100.0,
                               dead_after=100.0)
        held: list[bytes] = []

        def reorder(direction: str, frame: bytes) -> list[bytes]:
            kind = peek_type(frame)
            if direction == "b>a" and kind is MessageType.AUTH and not held:
                held.append(frame)
                return []
            if direction == "b>a" and kind is MessageType.SPACES and held and len(held) == 1:
                held.append(frame)
                assert len(frame) > MAX_FRAME_BEFORE_AUTH
                return [frame, held[0]]  # SPACES first, then the AUTH it overtook
            return [frame]

        wire = Wire(Session(alice.sync_host, 0.0, config), Session(bob.sync_host, 0.0, config),
                    tamper=reorder)
        wire.start()
        assert len(held) == 2 and wire.a.closed is None and wire.a.authenticated
        assert not wire.a.synced  # Bob's SPACES was dropped: Alice does not know them yet
        # Alice resends HELLO; Bob resends AUTH and SPACES, then the HAVE Alice could not place.
        for second in range(1, 6):
            wire.now = float(second)
            wire.run(wire.a.tick(wire.now), wire.b.tick(wire.now))
            if wire.a.synced and wire.b.synced:
                break
        assert wire.a.closed is None and wire.b.closed is None
        assert wire.a.synced and wire.b.synced
        assert alice.version_vector(SPACE) == bob.version_vector(SPACE)
    finally:
        bob.close()


def test_anything_else_over_the_limit_before_auth_is_error_4(alice: Replica) -> None:
    big_spaces = encode(Spaces([bytes(16)] * 300))  # before the peer's HELLO: not a reordering
    big_envelopes = encode(Envelopes(0, 1, [WireEnvelope(0, 1, 1, bytes(MAX_FRAME_BEFORE_AUTH), bytes(64))]))
    for frame in (big_spaces, big_envelopes, encode(Error(1, "x")) + bytes(MAX_FRAME_BEFORE_AUTH)):
        assert len(frame) > MAX_FRAME_BEFORE_AUTH
        session = fresh(alice)
        refused_with(session, session.receive(frame, 0.0), E_TOO_LARGE)
