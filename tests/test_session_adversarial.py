"""A hostile peer against the sans-I/O session: no transport, frames in and frames out.

The victim is Alice's session on a real replica. Valid peer frames come from a second real
session (Bob's, or Mallory's: a device with its own key and no business with Alice's data)
and are tampered with by their sender: the link is encrypted (protocol 3), so a hostile
frame after the handshake is one the peer itself seals (``feed`` on a :class:`Wire`); the
session hands out its frames in the clear (``defer_sealing``) so that they can be read.
Every case checks the same contract: ``receive`` never raises; a refused frame is answered
with exactly one ERROR whose code matches ``session.closed``; and Alice's data (entities,
conflicts, version vector) is unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_sync import Replica, forks
from crdt_sync.envelope import open_envelope, seal
from crdt_sync.identity import Identity
from crdt_sync.payload import encode_payload, pack_item
from crdt_sync.protocol import Authenticated, Received, Session, SessionConfig
from crdt_sync.protocol.events import Quarantined as QuarantinedEvent
from crdt_sync.protocol.link import SEALED_HEAD
from crdt_sync.protocol.messages import (
    BLIND_BYTES,
    E_AUTH_FAILED,
    E_MALFORMED,
    E_REJECTED,
    E_TOO_LARGE,
    E_UNEXPECTED,
    E_UNSUPPORTED_VERSION,
    MAX_FRAME,
    MAX_VERSION,
    MIN_VERSION,
    Ack,
    Auth,
    Bye,
    Envelopes,
    Error,
    ForkProof,
    Have,
    Hello,
    MessageType,
    Ping,
    Pong,
    Spaces,
    WireEnvelope,
    decode,
    encode,
)
from crdt_sync.protocol.messages import Quarantined as QuarantinedMsg
from tests.link_helpers import HandPeer
from tests.sync_helpers import (
    SPACE,
    Wire,
    admit,
    auth_message,
    data_payload,
    error_of,
    expected_code,
    fill,
    opened,
    snapshot,
    transcript,
)

#: Codes a session may answer a well-formed but unacceptable message with.
REFUSALS = {E_UNSUPPORTED_VERSION, E_AUTH_FAILED, E_REJECTED, E_UNEXPECTED}
HOSTILE = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@dataclass
class World:
    """Alice (the victim), Bob (an honest peer holding what Alice holds) and Mallory."""

    alice: Replica
    bob: Replica
    mallory: Replica

    def state(self) -> bytes:
        return snapshot(self.alice).key()

    def fresh(self) -> Session:
        """Alice's session before anything arrived (it has sent its HELLO)."""
        session = Session(self.alice.sync_host, 0.0, nonce=bytes(range(32)))
        session.defer_sealing()
        session.start()
        return session

    def in_sync(self, peer: Replica | None = None) -> Wire:
        """Alice's session after a complete handshake with ``peer`` (Bob by default)."""
        wire = Wire(Session(self.alice.sync_host, 0.0), Session((peer or self.bob).sync_host, 0.0))
        wire.start()
        assert wire.a.synced and wire.b.synced and wire.a.closed is None
        return wire


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    alice, bob, mallory = (admit(Replica(tmp_path / n, seal_interval=0)) for n in ("alice", "bob", "mallory"))
    try:
        fill(alice, "a", 2)
        fill(bob, "b", 2)
        admit(mallory)
        Wire(Session(alice.sync_host, 0.0), Session(bob.sync_host, 0.0)).start()
        # Alice and Bob now hold the same
        assert alice.version_vector(SPACE) == bob.version_vector(SPACE)
        yield World(alice, bob, mallory)
    finally:
        for r in (alice, bob, mallory):
            r.close()


def refused(session: Session, out: list[bytes], code: int) -> None:
    """``session`` answered with one ERROR of ``code`` and closed."""
    assert session.closed is not None and not session.closed.by_peer
    assert session.closed.code == code, session.closed
    assert len(out) == 1
    error = error_of(out)
    assert error is not None and error.code == code
    assert session.receive(encode(Ping(1)), 1.0) == [], "a closed session must stay silent"


def feed(target: Session | Wire, frame: bytes) -> list[bytes]:
    """Deliver one hostile frame and check the contract every frame obeys: to a session
    before any HELLO as it is, to Alice's session of a :class:`Wire` sealed by her peer."""
    session, peer = (target.a, target.b) if isinstance(target, Wire) else (target, None)
    code = expected_code(frame)
    if peer is not None:
        assert peer.link is not None
        frame = peer.link.seal(frame)
    was_closed = session.closed
    out = session.receive(frame, 0.5)  # must not raise, whatever the frame
    if was_closed is not None:
        assert out == [] and session.closed == was_closed
    elif code is not None:
        refused(session, out, code)
    elif session.closed is not None and not session.closed.by_peer:
        assert session.closed.code in REFUSALS, session.closed
        refused(session, out, session.closed.code)
    return out


# -- random input ------------------------------------------------------------------------------
cbor_leaves = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
               | st.floats() | st.binary(max_size=70) | st.text(max_size=8))
cbor_values = st.recursive(cbor_leaves, lambda inner: st.lists(inner, max_size=6)
                           | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3),
                           max_leaves=25)
#: Arrays that start like a message (a type, then anything), so they reach the parsers.
message_like = st.builds(lambda kind, rest: [kind, *rest], st.integers(min_value=0, max_value=11),
                         st.lists(cbor_values, max_size=6))


def _wire_envelopes() -> st.SearchStrategy[list[WireEnvelope]]:
    author = st.integers(min_value=0, max_value=4) | st.binary(min_size=32, max_size=32)
    return st.lists(st.builds(WireEnvelope, author, st.integers(min_value=1, max_value=3),
                              st.integers(min_value=0, max_value=2**64 - 1), st.binary(max_size=60),
                              st.binary(min_size=64, max_size=64)), min_size=1, max_size=3)


_vv = st.lists(st.tuples(st.integers(min_value=0, max_value=4) | st.binary(min_size=32, max_size=32),
                         st.integers(min_value=0, max_value=2**63 - 1)), max_size=3)
_index = st.sampled_from([0, 0, 0, 1])  # 0 is the one shared space
#: Well-formed messages with random contents: they get past the decoder into the session.
well_formed = st.one_of(
    st.builds(Hello, st.integers(0, 3), st.integers(0, 3), st.binary(min_size=32, max_size=32),
              st.binary(min_size=32, max_size=32), st.just({})),
    st.builds(Auth, st.binary(min_size=64, max_size=64)),
    st.builds(Spaces, st.lists(st.binary(min_size=BLIND_BYTES, max_size=BLIND_BYTES), max_size=3)),
    st.builds(Have, _index, _vv),
    st.builds(Envelopes, _index, st.integers(0, 10), _wire_envelopes()),
    st.builds(Envelopes, _index, st.integers(0, 10), st.just([])),
    st.builds(Ack, _index, st.integers(0, 10), _vv),
    st.builds(Ping, st.integers(0, 2**64 - 1)), st.builds(Pong, st.integers(0, 2**64 - 1)),
    st.builds(Error, st.integers(0, 20), st.text(max_size=20)), st.builds(Bye, st.integers(0, 20)),
).map(encode)
frames = st.one_of(st.binary(max_size=300),
                   cbor_values.map(lambda v: cbor2.dumps(v, canonical=True)),
                   message_like.map(lambda v: cbor2.dumps(v, canonical=True)),
                   well_formed)


@pytest.mark.parametrize("stage", ["fresh", "in-sync"])
def test_random_frames_are_refused_or_handled_never_raise(world: World, stage: str) -> None:
    before = world.state()

    @HOSTILE
    @given(st.lists(frames, min_size=1, max_size=4))
    def check(hostile: list[bytes]) -> None:
        target = world.fresh() if stage == "fresh" else world.in_sync()
        for frame in hostile:
            feed(target, frame)
        assert world.state() == before

    check()


# -- the handshake -----------------------------------------------------------------------------
@pytest.mark.parametrize("versions", [(MAX_VERSION + 1, MAX_VERSION + 8), (0, MIN_VERSION - 1), (5, 1)])
def test_no_common_version_is_error_2(world: World, versions: tuple[int, int]) -> None:
    session = world.fresh()
    hello = Hello(*versions, world.mallory.identity.public_key, bytes(32), {})
    refused(session, session.receive(encode(hello), 0.0), E_UNSUPPORTED_VERSION)


def test_a_peer_claiming_our_own_key_is_error_3(world: World) -> None:
    session = Session(world.alice.sync_host, 0.0)
    session.defer_sealing()
    alice_hello = session.start()[0]
    mallory = HandPeer(world.mallory.identity)
    session.receive(mallory.hello, 0.0)
    mallory.on_hello(alice_hello)
    auth = mallory.auth(identity=world.alice.identity)  # Alice's key, whatever the signature
    refused(session, session.receive(mallory.seal(auth), 0.0), E_AUTH_FAILED)
    assert "own key" in (session.closed.reason if session.closed else "")


def test_a_reflected_hello_is_error_3(world: World) -> None:
    """Alice's own HELLO sent back to her (its ephemeral key is hers)."""
    session = Session(world.alice.sync_host, 0.0)
    session.defer_sealing()
    hello = session.start()[0]
    refused(session, session.receive(hello, 0.0), E_AUTH_FAILED)


@pytest.mark.parametrize("proof", ["own-key", "random"])
def test_a_peer_claiming_another_devices_key_cannot_authenticate(world: World, proof: str) -> None:
    """Mallory presents Bob's key. She can do the whole handshake except sign as Bob."""
    before = world.state()
    session = Session(world.alice.sync_host, 0.0)
    session.defer_sealing()
    alice_hello = session.start()[0]
    mallory = HandPeer(world.mallory.identity, nonce=bytes([7]) * 32)
    reply = session.receive(mallory.hello, 0.0)
    assert [type(decode(f)) for f in reply] == [Auth, Spaces]  # nothing of Alice's data yet
    mallory.on_hello(alice_hello)
    t = transcript(alice_hello, mallory.hello)
    assert t == mallory.transcript
    signature = (world.mallory.identity.sign(auth_message(t, session.nonce)) if proof == "own-key"
                 else bytes(64))
    auth = mallory.auth(identity=world.bob.identity, signature=signature)
    refused(session, session.receive(mallory.seal(auth), 0.0), E_AUTH_FAILED)
    assert not session.authenticated and not any(isinstance(e, Authenticated) for e in session.events)
    assert world.state() == before


def test_a_replayed_auth_from_an_earlier_session_fails(world: World) -> None:
    """Bob's HELLO and AUTH, recorded off an earlier session (the bytes on the wire), do not
    open a new one: Alice's new ephemeral key gives new link keys, so the recorded SEALED
    AUTH does not even authenticate (ERROR 1; before protocol 3 it was a valid frame whose
    signature failed, ERROR 3). Nor does the same AUTH in the clear (ERROR 6, no downgrade)."""
    before = world.state()
    earlier = world.in_sync()
    recorded = [w for (d, f), (_, w) in zip(earlier.log, earlier.wire_log, strict=True)
                if d == "b>a" and isinstance(decode(f), Hello | Auth | Spaces)]
    assert [type(opened(earlier.a, w)) for w in recorded] == [Hello, Auth, Spaces]
    plain = [f for d, f in earlier.log if d == "b>a" and isinstance(decode(f), Hello | Auth)]
    for frames, code in ((recorded, E_MALFORMED), (plain, E_UNEXPECTED)):
        session = world.fresh()  # a new nonce and a new ephemeral key, so a new transcript
        out: list[bytes] = []
        for frame in frames:
            out = session.receive(frame, 0.0)
            if session.closed:
                break
        refused(session, out, code)
        assert not session.authenticated
    assert world.state() == before


def test_frames_before_the_handshake_are_dropped_then_refused(world: World) -> None:
    session = world.fresh()
    early = encode(Ack(0, 0, []))
    limit = session.config.max_early_frames
    for _ in range(limit):
        assert session.receive(early, 0.0) == []  # a reordering link may deliver these early
    refused(session, session.receive(early, 0.0), E_UNEXPECTED)


# -- framing -------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["fresh", "in-sync"])
def test_an_oversized_frame_is_error_4(world: World, stage: str) -> None:
    before = world.state()
    session = world.fresh() if stage == "fresh" else world.in_sync().a
    big = WireEnvelope(0, 3, 1, bytes(MAX_FRAME), bytes(64))  # well formed, but too large
    sealed = SEALED_HEAD + b"\x00\x5a" + (MAX_FRAME).to_bytes(4, "big") + bytes(MAX_FRAME)
    for frame in (bytes(MAX_FRAME + 1), encode(Envelopes(0, 1, [big])), sealed):
        assert len(frame) > MAX_FRAME
        s = session if session.closed is None else world.in_sync().a
        refused(s, s.receive(frame, 0.0), E_TOO_LARGE)
    assert world.state() == before


# The first type past the last one defined (10 before QUARANTINED took it).
@pytest.mark.parametrize("items", [[42], [int(max(MessageType)) + 1, 1], [255, "x", b""], [2**64 - 1]],
                         ids=["42", "next", "255", "huge"])
def test_an_unknown_message_type_is_error_6(world: World, items: list[Any]) -> None:
    wire = world.in_sync()
    assert wire.b.link is not None
    refused(wire.a, wire.a.receive(wire.b.link.seal(cbor2.dumps(items, canonical=True)), 0.0), E_UNEXPECTED)


MALFORMED: dict[str, list[Any]] = {
    "not-an-array": [{"type": 0}],
    "empty-array": [[]],
    "bool-type": [[True, 1]],
    "text-type": [["0"]],
    "hello-short-key": [[0, 1, 1, bytes(31), bytes(32), {}]],
    "hello-extra-item": [[0, 1, 1, bytes(32), bytes(32), {}, 0]],
    "hello-caps-int-key": [[0, 1, 1, bytes(32), bytes(32), {1: 2}]],
    "auth-short-sig": [[1, bytes(63)]],
    "spaces-short-id": [[2, [bytes(15)]]],
    "have-bad-entry": [[3, 0, [[0]]]],
    "have-negative-seq": [[3, 0, [[0, -1]]]],
    "ack-text-batch": [[5, 0, "1", []]],
    "envelopes-seq-0": [[4, 0, 1, [[0, 0, 1, b"", bytes(64)]]]],
    "envelopes-not-array": [[4, 0, 1, {}]],
    "ping-negative": [[6, -1]],
    "error-code-text": [[8, "1", "x"]],
    "bye-missing": [[9]],
}


@pytest.mark.parametrize("stage", ["fresh", "in-sync"])
@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_fields_are_error_1(world: World, name: str, stage: str) -> None:
    frame = cbor2.dumps(MALFORMED[name][0], canonical=True)
    if stage == "fresh":
        session = world.fresh()
    else:
        wire = world.in_sync()
        session, frame = wire.a, wire.b.seal(frame) if frame[1:2] != b"\x00" else frame
    refused(session, session.receive(frame, 0.0), E_MALFORMED)


# -- envelopes ------------------------------------------------------------------------------
def _bob_sends_new_edits(world: World, tamper: Callable[[Envelopes], Envelopes] | None) -> Wire:
    """A session in which Bob sends Alice three new envelopes in one frame, maybe tampered."""
    fill(world.bob, "new", 3)

    def on_the_way(direction: str, frame: bytes) -> list[bytes]:
        msg = decode(frame)
        if direction == "b>a" and isinstance(msg, Envelopes) and tamper is not None:
            return [encode(tamper(msg))]
        return [frame]

    wire = Wire(Session(world.alice.sync_host, 0.0), Session(world.bob.sync_host, 0.0), tamper=on_the_way)
    wire.start()
    batches = [m for m in wire.sent("b>a") if isinstance(m, Envelopes)]
    assert len(batches) == 1 and len(batches[0].envelopes) == 3
    return wire


def _flip(data: bytes, at: int = 0) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


FORGERIES: dict[str, Callable[[WireEnvelope], WireEnvelope]] = {
    "signature": lambda e: dataclasses.replace(e, signature=_flip(e.signature, 5)),
    "payload": lambda e: dataclasses.replace(e, payload=_flip(e.payload, len(e.payload) - 1)),
    "hlc": lambda e: dataclasses.replace(e, hlc=e.hlc + 1),
}


@pytest.mark.parametrize("position", [0, 2], ids=["first", "last"])
@pytest.mark.parametrize("field", list(FORGERIES))
def test_a_forged_envelope_is_error_5_and_nothing_of_its_frame_applies(world: World, field: str,
                                                                      position: int) -> None:
    before, rejections = world.state(), len(world.alice.rejections())

    def forge(msg: Envelopes) -> Envelopes:
        envs = list(msg.envelopes)
        envs[position] = FORGERIES[field](envs[position])
        return dataclasses.replace(msg, envelopes=envs)

    wire = _bob_sends_new_edits(world, forge)
    session = wire.a
    assert session.closed is not None and session.closed.code == E_REJECTED
    assert [m.code for m in wire.sent("a>b") if isinstance(m, Error)] == [E_REJECTED]
    assert not any(isinstance(e, Received) for e in session.events)
    assert world.state() == before  # the valid envelopes of the frame were discarded too
    assert len(world.alice.rejections()) == rejections + 1
    assert world.alice.rejections(1)[0].reason == "bad-signature"


def test_replayed_envelopes_are_duplicates_that_change_nothing(world: World) -> None:
    wire = _bob_sends_new_edits(world, None)
    after = world.state()
    assert world.alice.version_vector(SPACE) == world.bob.version_vector(SPACE)
    frame = next(f for d, f in wire.log if d == "b>a" and isinstance(decode(f), Envelopes))

    # Again in the same session, and in a later session with Bob (same author table).
    for target in (wire, world.in_sync()):
        session = target.a
        out = feed(target, frame)
        assert session.closed is None
        assert [type(decode(f)) for f in out] == [Ack]
        assert session.pop_events()[-1] == Received(SPACE, applied=0, duplicates=3, gaps=0)
    # Relayed by another device, authors by full key: what it forwards is Bob's, and known.
    msg = decode(frame)
    assert isinstance(msg, Envelopes)
    keyed = [dataclasses.replace(e, author=world.bob.identity.public_key) for e in msg.envelopes]
    relayed = world.in_sync(world.mallory)
    feed(relayed, encode(Envelopes(0, 1, keyed)))
    assert relayed.a.closed is None
    assert relayed.a.pop_events()[-1] == Received(SPACE, applied=0, duplicates=3, gaps=0)
    assert world.state() == after


# -- a peer signing its own hostile envelopes ---------------------------------------------------
def _mallory_envelope(world: World, hlc: int, payload: bytes, seq: int = 1) -> bytes:
    """An ENVELOPES frame of one envelope Mallory really signed (she may author in the space)."""
    mallory = world.mallory.identity
    env = seal(mallory, SPACE, seq, b"", hlc, data_payload(mallory, seq, payload))
    key = world.mallory.identity.public_key
    return encode(Envelopes(0, 1, [WireEnvelope(key, seq, hlc, env.payload, env.signature)]))


def _payload(item_hlc: int, update: bytes = b"\x00\x00") -> bytes:
    return encode_payload([("equipment", "evil", pack_item(item_hlc, update))])


@pytest.mark.parametrize(("hlc", "item_hlc"), [(2**63, 1), (2**64 - 1, 1), (2**63 - 1, 1), (1, 2**64 - 1)],
                         ids=["2^63", "2^64-1", "2^63-1", "item-2^64-1"])
def test_a_time_at_the_end_of_the_clock_is_refused_and_alice_can_still_write(
        world: World, hlc: int, item_hlc: int) -> None:
    """A peer's clock (hostile or broken) must neither crash the session nor leave Alice's
    clock where no later time fits in storage (every local write must be later)."""
    before = world.state()
    wire = world.in_sync(world.mallory)
    session = wire.a
    out = feed(wire, _mallory_envelope(world, hlc, _payload(item_hlc)))
    # Signed, so attributable: Mallory is set aside in the space (protocol 2), the session goes on.
    assert session.closed is None
    # The clock rules name it (issue 11): the envelope's own clock or an item's out of range.
    assert [(n.from_seq, n.reason) for n in notices(out)] == [(1, "clock-range")]
    assert [q.author for q in world.alice.quarantined(SPACE)] == [world.mallory.device_id]
    assert world.state() == before
    world.alice.space(SPACE).put("equipment", "after", {"ok": True})
    world.alice.seal()
    assert world.alice.space(SPACE).get("equipment", "after") == {"ok": True}


def test_self_signed_garbage_payloads_are_refused(world: World) -> None:
    """Any device may author in a space and peers forward what they hold, so a payload is
    only as trustworthy as its author: each example signs with a new key."""
    wire = world.in_sync(world.mallory)

    @HOSTILE
    @given(payload=st.binary(max_size=80)
           | st.builds(_payload, st.integers(0, 2**40), st.binary(max_size=40))
           | cbor_values.map(lambda v: cbor2.dumps(v, canonical=True)))
    def check(payload: bytes) -> None:
        nonlocal wire
        if wire.a.closed is not None:
            wire = world.in_sync(world.mallory)
        session = wire.a
        before = world.state()
        author = Identity.generate()
        env = seal(author, SPACE, 1, b"", 1, data_payload(author, 1, payload))
        out = feed(wire, encode(Envelopes(0, 1, [WireEnvelope(author.public_key, 1, 1, env.payload,
                                                                 env.signature)])))
        assert session.closed is None  # signed, so the author is set aside, not the session
        events = session.pop_events()
        if not notices(out):  # a payload that happens to be valid is its author's right
            assert events[-1] == Received(SPACE, applied=1, duplicates=0, gaps=0)
        else:
            assert [(n.author, n.from_seq) for n in notices(out)] == [(author.public_key, 1)]
            assert any(isinstance(e, QuarantinedEvent) and e.author == author.id for e in events)
            assert world.alice.sync_host.quarantined(SPACE)[author.id].from_seq == 1
            assert world.state() == before

    check()


def test_a_fork_quarantines_its_author_and_the_session_goes_on(world: World) -> None:
    """Before protocol 2 this ended the session with ERROR 5; now the forking author is set
    aside from the forked seq (quarantine reason ``fork``, QUARANTINED sent), the fork is
    proven (FORK_PROOF), both branches go, and the session carries on (docs/PROTOCOL.md,
    "Forks")."""
    wire = world.in_sync(world.mallory)
    session = wire.a
    before = world.state()
    feed(wire, _mallory_envelope(world, 1, _payload(1)))
    assert session.closed is None
    out = feed(wire, _mallory_envelope(world, 2, _payload(2)))  # another seq 1
    assert session.closed is None
    assert [(n.from_seq, n.reason) for n in notices(out)] == [(1, "fork")]
    assert world.alice.rejections(1)[0].reason == "fork"
    assert world.state() == before  # neither of mallory's seq 1 is kept
    [proof] = world.alice.fork_proofs(SPACE)
    assert (forks.verify(proof).author, forks.verify(proof).seq) == (world.mallory.device_id, 1)
    sent = [m for m in map(decode, out) if isinstance(m, ForkProof)]
    assert [forks.prove(*map(open_envelope, m.envelopes)).encode() for m in sent] == [proof]
    feed(wire, _mallory_envelope(world, 3, _payload(3)))  # a third seq 1: set aside too
    assert session.closed is None and world.state() == before


def notices(frames: list[bytes]) -> list[QuarantinedMsg]:
    """The QUARANTINED notices among ``frames``."""
    return [m for m in map(decode, frames) if isinstance(m, QuarantinedMsg)]


# -- flow control ---------------------------------------------------------------------------------
def test_a_peer_that_never_acks_stalls_the_sender_at_its_window(world: World) -> None:
    fill(world.alice, "more", 40)
    config = SessionConfig(batch_count=2, window=4, ack_timeout=3.0)
    wire = Wire(Session(world.alice.sync_host, 0.0, config), Session(world.mallory.sync_host, 0.0),
                tamper=lambda d, f: [] if d == "b>a" and isinstance(decode(f), Ack) else [f])
    wire.start()
    sent = [m for m in wire.sent("a>b") if isinstance(m, Envelopes)]
    assert [m.batch for m in sent] == [1, 2, 3, 4]
    for now in (1.0, 2.0, 3.5, 7.0):  # after ack_timeout it resends the window, no more
        wire.now = now
        wire.run(wire.a.tick(now), [])
    resent = [m for m in wire.sent("a>b") if isinstance(m, Envelopes)][4:]
    assert [m.batch for m in resent] == [5, 6, 7, 8, 9, 10, 11, 12]
    assert {e.seq for m in resent[:4] for e in m.envelopes} == {e.seq for m in sent for e in m.envelopes}


def test_a_resend_overtaken_by_the_ack_of_its_original_still_ends_synced(world: World) -> None:
    """On a slow link the ACK timer fires while the ACK is on its way: the sender resends
    the batch under a new number. The ACK of the original then covers the resend, and the
    peer, now done, says BYE without acknowledging it: the sender must still see "synced"."""
    fill(world.bob, "new", 3)
    on_the_wire: list[bytes] = []

    def slow(direction: str, frame: bytes) -> list[bytes]:
        if direction == "b>a" and isinstance(decode(frame), Envelopes):
            on_the_wire.append(frame)
            return []
        return [frame]

    wire = Wire(Session(world.alice.sync_host, 0.0), Session(world.bob.sync_host, 0.0), tamper=slow)
    wire.start()
    wire.now = wire.b.config.ack_timeout + 1.0
    wire.run([], wire.b.tick(wire.now))  # go back: the same envelopes as batch 2
    assert [m.batch for m in map(decode, on_the_wire) if isinstance(m, Envelopes)] == [1, 2]
    wire.tamper = None
    wire.run([], on_the_wire[:1])  # the original arrives and is acknowledged
    assert wire.a.synced
    wire.run(wire.a.close(wire.now), [])  # Alice is done: ACK(0), BYE; batch 2 is never ACKed
    assert wire.b.closed is not None and wire.b.closed.by_peer and wire.b.closed.code == 0
    assert wire.b.synced
    assert world.alice.version_vector(SPACE) == world.bob.version_vector(SPACE)
