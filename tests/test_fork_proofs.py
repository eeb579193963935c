"""Fork proofs on their own (crdt_sync.forks), their frames (HAVE heads, FORK_PROOF), and the
session's part (crdt_sync.protocol.forks) between two replicas over a sans-I/O wire."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_sync import Replica
from crdt_sync.envelope import MAX_ENVELOPE_BYTES, Envelope, seal
from crdt_sync.errors import Rejected
from crdt_sync.forks import MAX_PROOF_BYTES, prove, verify
from crdt_sync.identity import Identity
from crdt_sync.protocol import Session
from crdt_sync.protocol.forks import _frames
from crdt_sync.protocol.messages import (
    E_MALFORMED,
    MAX_FRAME,
    Have,
    ProtocolViolation,
    decode,
    encode,
)
from crdt_sync.protocol.messages import (
    ForkProof as ForkProofMsg,
)
from tests.sync_helpers import SPACE, Wire, admit, snapshot

KEY = Identity(bytes([5]) * 32)


def env(seq: int = 2, payload: bytes = b"one", prev: bytes = b"\x01" * 32, key: Identity = KEY,
        space: str = SPACE) -> Envelope:
    return seal(key, space, seq, b"" if seq == 1 else prev, 1 << 40, payload)


# -- the proof ---------------------------------------------------------------------------------
def test_a_valid_proof_round_trips_and_is_canonical() -> None:
    a, b = env(payload=b"one"), env(payload=b"other")
    proof = prove(a, b)
    assert prove(b, a) == proof  # one fork, one proof, whichever order
    data = proof.encode()
    assert cbor2.loads(data) == [1, proof.low.wire, proof.high.wire]
    assert proof.low.hash < proof.high.hash
    checked = verify(data)
    assert (checked.space, checked.author, checked.seq) == (SPACE, KEY.id, 2)
    assert set(checked.hashes) == {a.hash, b.hash}
    assert not checked.parted_earlier
    assert prove(env(payload=b"x", prev=b"\x02" * 32), a).parted_earlier


def test_a_forged_signature_is_refused() -> None:
    a, b = env(payload=b"one"), env(payload=b"other")
    forged = bytearray(b.wire)
    forged[-1] ^= 1  # the signature's last byte
    for pair in ([a.wire, bytes(forged)], [bytes(forged), a.wire]):
        with pytest.raises(Rejected) as info:
            verify(cbor2.dumps([1, *pair], canonical=True))
        assert info.value.reason == "bad-signature"
    # Signed by another key: not the same author, whatever it claims.
    other = seal(Identity.generate(), SPACE, 2, b"\x01" * 32, 1 << 40, b"other")
    with pytest.raises(Rejected, match="authors"):
        prove(a, other)


def test_the_same_envelope_twice_proves_nothing() -> None:
    a = env()
    with pytest.raises(Rejected, match="same envelope") as info:
        prove(a, a)
    assert info.value.reason == "bad-fork-proof"
    with pytest.raises(Rejected, match="same envelope"):
        verify(cbor2.dumps([1, a.wire, a.wire], canonical=True))


@pytest.mark.parametrize(("other", "what"), [
    (lambda: env(space="elsewhere", payload=b"o"), "spaces"),
    (lambda: env(key=Identity.generate(), payload=b"o"), "authors"),
    (lambda: env(seq=3, payload=b"o"), "seq [23] and seq [23]"),
], ids=["space", "author", "seq"])
def test_mismatched_space_author_or_seq_is_refused(other: object, what: str) -> None:
    a, b = env(), other()  # type: ignore[operator]
    with pytest.raises(Rejected, match=what) as info:
        prove(a, b)
    assert info.value.reason == "bad-fork-proof"
    low, high = sorted([a, b], key=lambda e: e.hash)
    with pytest.raises(Rejected, match=what):
        verify(cbor2.dumps([1, low.wire, high.wire], canonical=True))


def test_oversize_malformed_and_non_canonical_proofs_are_refused() -> None:
    proof = prove(env(payload=b"one"), env(payload=b"other"))
    with pytest.raises(Rejected, match="exceeds") as info:
        verify(b"\x00" * (MAX_PROOF_BYTES + 1))  # refused before it is decoded
    assert info.value.reason == "too-large"
    big = cbor2.dumps([1, b"\x00" * (MAX_ENVELOPE_BYTES + 1), proof.high.wire], canonical=True)
    with pytest.raises(Rejected, match="bounded size"):
        verify(big)
    swapped = cbor2.dumps([1, proof.high.wire, proof.low.wire], canonical=True)
    with pytest.raises(Rejected, match="hash order") as info:
        verify(swapped)
    assert info.value.reason == "non-canonical"
    for bad, reason in [(b"\xff", "malformed"), (cbor2.dumps([1, b"x"]), "malformed"),
                        (cbor2.dumps([2, proof.low.wire, proof.high.wire]), "unknown-version"),
                        (proof.encode() + b"\x00", "malformed"),
                        (cbor2.dumps([1, proof.low.wire, proof.high.wire])[:-1], "malformed")]:
        with pytest.raises(Rejected) as info:
            verify(bad)
        assert info.value.reason == reason, bad[:8]


def test_a_proof_of_two_garbage_envelopes_is_refused() -> None:
    with pytest.raises(Rejected) as info:
        verify(cbor2.dumps([1, b"junk", b"more junk"], canonical=True))
    assert info.value.reason == "malformed"


# -- the frames --------------------------------------------------------------------------------
def test_have_carries_a_head_hash_per_author() -> None:
    key = KEY.public_key
    frame = encode(Have(0, [(key, 3)], [b"\x07" * 32]))
    assert cbor2.loads(frame) == [3, 0, [[key, 3, b"\x07" * 32]]]
    assert decode(frame) == Have(0, [(key, 3)], [b"\x07" * 32])
    for bad in ([3, 0, [[key, 3]]], [3, 0, [[key, 3, b"\x07" * 31]]], [3, 0, [[key, 0, b"\x07" * 32]]],
                [3, 0, [[key, 3, "text"]]]):
        with pytest.raises(ProtocolViolation) as info:
            decode(cbor2.dumps(bad, canonical=True))
        assert info.value.code == E_MALFORMED
    assert decode(cbor2.dumps([3, 0, [[key, 0, b""]]])) == Have(0, [(key, 0)], [b""])


def test_fork_proof_frames_are_bounded() -> None:
    a = env()
    assert decode(encode(ForkProofMsg(1, [a.wire]))) == ForkProofMsg(1, [a.wire])
    for bad in ([11, 0, []], [11, 0, [a.wire] * 3], [11, 0, ["text"]], [11, 0, a.wire],
                [11, 0, [b"\x00" * (MAX_ENVELOPE_BYTES + 1)]]):
        with pytest.raises(ProtocolViolation) as info:
            decode(cbor2.dumps(bad, canonical=True))
        assert info.value.code == E_MALFORMED


def test_a_proof_too_large_for_one_frame_goes_in_two() -> None:
    size = MAX_ENVELOPE_BYTES - 170 - (len(SPACE) - 7)  # (159 bytes of envelope around the payload)
    a, b = env(payload=os.urandom(size)), env(payload=os.urandom(size))
    frames = _frames(0, [a.wire, b.wire])
    assert len(frames) == 2 and all(len(f) <= MAX_FRAME for f in frames)
    assert [decode(f).envelopes for f in frames] == [[a.wire], [b.wire]]  # type: ignore[union-attr]
    assert len(_frames(0, [env(payload=b"x").wire, env(payload=b"y").wire])) == 1


# -- the session -------------------------------------------------------------------------------
@pytest.fixture
def forked(tmp_path: Path) -> Iterator[tuple[Replica, Replica, Replica]]:
    """Alice and Bob each hold another seq 2 of Mallory (a copied device), after a common seq 1;
    Alice has a longer branch (seq 3 too)."""
    mallory = admit(Replica(tmp_path / "mallory", seal_interval=0))
    mallory.space(SPACE).put("eq", "pump", {"status": "ok"})
    mallory.close()
    shutil.copytree(tmp_path / "mallory", tmp_path / "clone")
    mallory = admit(Replica(tmp_path / "mallory", seal_interval=0))
    clone = admit(Replica(tmp_path / "clone", seal_interval=0))
    alice = admit(Replica(tmp_path / "alice", seal_interval=0))
    bob = admit(Replica(tmp_path / "bob", seal_interval=0))
    try:
        mallory.space(SPACE).put("eq", "pump", {"status": "alice's branch"})
        mallory.space(SPACE).put("eq", "valve", {"status": "alice's branch, seq 3"})
        clone.space(SPACE).put("eq", "pump", {"status": "bob's branch"})
        alice.import_bundle(mallory.export_bundle(SPACE))
        bob.import_bundle(clone.export_bundle(SPACE))
        alice.space(SPACE).put("eq", "alice", {"n": 1})
        bob.space(SPACE).put("eq", "bob", {"n": 2})
        yield alice, bob, mallory
    finally:
        for r in (alice, bob, mallory, clone):
            r.close()


def _sync(a: Replica, b: Replica) -> Wire:
    wire = Wire(Session(a.sync_host, 0.0), Session(b.sync_host, 0.0))
    wire.start()
    return wire


def test_head_hashes_find_the_fork_at_the_first_have_and_both_sides_prove_it(
        forked: tuple[Replica, Replica, Replica]) -> None:
    alice, bob, mallory = forked
    wire = _sync(alice, bob)
    assert wire.a.closed is None and wire.b.closed is None
    assert wire.a.synced and wire.b.synced
    m = mallory.device_id
    assert alice.fork_proofs(SPACE) == bob.fork_proofs(SPACE) and len(alice.fork_proofs(SPACE)) == 1
    assert verify(alice.fork_proofs(SPACE)[0]).seq == 2
    for device in (alice, bob):
        assert device.version_vector(SPACE)[m] == 1
        assert device.space(SPACE).get("eq", "pump") == {"status": "ok"}
        assert not device.space(SPACE).exists("eq", "valve")  # only Alice's branch wrote it
    assert snapshot(alice).key() == snapshot(bob).key()
    # No envelope of either branch crossed: the side that found the mismatch held them back.
    sent = [decode(f) for _, f in wire.log]
    assert any(isinstance(m_, ForkProofMsg) and len(m_.envelopes) == 1 for m_ in sent)
    again = _sync(alice, bob)  # the next session: nothing new to say about the fork
    assert again.a.synced and not [f for _, f in again.log if isinstance(decode(f), ForkProofMsg)
                                   and len(decode(f).envelopes) == 1]  # type: ignore[union-attr]


def test_a_proven_fork_is_a_quarantine_that_no_lift_undoes(
        forked: tuple[Replica, Replica, Replica]) -> None:
    """One "set aside" state: the fork is recorded as a quarantine (reason ``fork``, from the
    fork seq) that status lists, and lifting it is refused (the proof would set it aside again)."""
    alice, bob, mallory = forked
    _sync(alice, bob)
    m = mallory.device_id
    for device in (alice, bob):
        [record] = device.quarantined(SPACE)
        assert (record.author, record.from_seq, record.reason) == (m, 2, "fork")
        assert [q.reason for q in device.status().quarantined] == ["fork"]
        with pytest.raises(Rejected, match="not-liftable"):
            device.lift_quarantine(SPACE, m)
        assert device.quarantined(SPACE) == [record]  # still set aside
        assert device.version_vector(SPACE)[m] == 1


def test_a_lying_head_hash_proves_nothing(forked: tuple[Replica, Replica, Replica],
                                          tmp_path: Path) -> None:
    alice, _, mallory = forked
    with admit(Replica(tmp_path / "liar")) as liar:
        admit(liar)
        liar.import_bundle(mallory.export_bundle(SPACE))

        def lie(direction: str, frame: bytes) -> list[bytes]:
            msg = decode(frame)
            if direction == "b>a" and isinstance(msg, Have):
                return [encode(Have(msg.space, msg.vv, [os.urandom(32) for _ in msg.vv]))]
            return [frame]

        wire = Wire(Session(alice.sync_host, 0.0), Session(liar.sync_host, 0.0), tamper=lie)
        wire.start()
        assert alice.fork_proofs(SPACE) == []  # a hash is no proof: nobody is set aside
        assert alice.version_vector(SPACE)[mallory.device_id] == 3


def test_a_proof_that_proves_nothing_ends_the_session_and_changes_nothing(
        forked: tuple[Replica, Replica, Replica]) -> None:
    alice, bob, _ = forked
    before = snapshot(alice).key()
    a = env(seq=1, payload=b"x")

    def forge(direction: str, frame: bytes) -> list[bytes]:
        if direction == "b>a" and isinstance(decode(frame), Have):
            return [frame, encode(ForkProofMsg(0, [a.wire, a.wire]))]
        return [frame]

    wire = Wire(Session(alice.sync_host, 0.0), Session(bob.sync_host, 0.0), tamper=forge)
    wire.start()
    assert wire.a.closed is not None and "bad-fork-proof" in wire.a.closed.reason
    assert alice.fork_proofs(SPACE) == [] and snapshot(alice).key() == before


def test_chains_that_parted_lower_down_are_walked_to_the_fork_point(tmp_path: Path) -> None:
    # Both branches are two envelopes long: the heads (seq 3) differ, and so do their
    # predecessors; the proofs walk down to seq 2, where the chains parted.
    mallory = admit(Replica(tmp_path / "mallory", seal_interval=0))
    mallory.space(SPACE).put("eq", "pump", {"status": "ok"})
    mallory.close()
    shutil.copytree(tmp_path / "mallory", tmp_path / "clone")
    with admit(Replica(tmp_path / "mallory", seal_interval=0)) as m, \
            admit(Replica(tmp_path / "clone", seal_interval=0)) as c, \
            admit(Replica(tmp_path / "alice")) as alice, admit(Replica(tmp_path / "bob")) as bob:
        for i in range(2):
            m.space(SPACE).put("eq", "pump", {"status": f"one {i}"})
            c.space(SPACE).put("eq", "pump", {"status": f"other {i}"})
        alice.import_bundle(m.export_bundle(SPACE))
        bob.import_bundle(c.export_bundle(SPACE))
        wire = _sync(alice, bob)
        assert wire.a.closed is None and wire.a.synced and wire.b.synced
        for device in (alice, bob):
            assert sorted(verify(p).seq for p in device.fork_proofs(SPACE)) == [2, 3]
            assert device.version_vector(SPACE)[m.device_id] == 1
            assert device.space(SPACE).get("eq", "pump") == {"status": "ok"}


def test_two_halves_of_a_proof_too_large_for_a_frame_are_paired(tmp_path: Path) -> None:
    size = MAX_ENVELOPE_BYTES - 170 - (len(SPACE) - 7)
    a, b = env(payload=os.urandom(size)), env(payload=os.urandom(size))
    halves = _frames(0, [a.wire, b.wire])
    assert len(halves) == 2
    with admit(Replica(tmp_path / "alice")) as alice, admit(Replica(tmp_path / "bob")) as bob:
        admit(bob)
        admit(alice)
        admit(bob)

        def inject(direction: str, frame: bytes) -> list[bytes]:
            # Bob's session says it holds the proof, in two frames; neither side holds either.
            if direction == "b>a" and isinstance(decode(frame), Have):
                return [frame, *halves]
            return [frame]

        wire = Wire(Session(alice.sync_host, 0.0), Session(bob.sync_host, 0.0), tamper=inject)
        wire.start()
        assert wire.a.closed is None
        [data] = alice.fork_proofs(SPACE)
        assert data == prove(a, b).encode()
        assert bob.fork_proofs(SPACE) == [data]  # Alice's answer, in two frames too


# -- storage -----------------------------------------------------------------------------------
def test_the_relay_keeps_a_proof_and_the_exclusion_across_a_restart(tmp_path: Path) -> None:
    from crdt_sync.relay.storage import RelayStore

    key, other = Identity.generate(), Identity.generate()
    one = seal(key, SPACE, 1, b"", 1 << 40, b"one")
    two = seal(key, SPACE, 2, one.hash, 2 << 40, b"two")
    fork = seal(key, SPACE, 2, one.hash, 3 << 40, b"the other two")
    honest = seal(other, SPACE, 1, b"", 1 << 40, b"honest")
    # The store's fork rules, without its membership step (on by default; as in
    # tests/test_chain.py: these payloads are opaque bytes in a space of no genesis).
    store = RelayStore(tmp_path, enforce_membership=False)
    assert store.receive([one.wire, two.wire, honest.wire], SPACE, False) == (3, 0, 0)
    assert store.receive([fork.wire], SPACE, False, source="peer x") == (0, 0, 0)
    store.close()
    again = RelayStore(tmp_path, enforce_membership=False)
    try:
        [data] = again.fork_proofs(SPACE)
        assert set(verify(data).hashes) == {two.hash, fork.hash}
        assert again.version_vector(SPACE) == {key.id: 1, other.id: 1}
        assert [e.wire for e in again.missing_envelopes(SPACE, {}, 100, 1 << 20)] == [one.wire, honest.wire]
        assert again.receive([two.wire, fork.wire], SPACE, True) == (0, 0, 0)  # both branches
        assert again.version_vector(SPACE) == {key.id: 1, other.id: 1}
        [rec] = again.reader.fork_records()
        assert (rec.space, rec.author, rec.seq, rec.source) == (SPACE, key.id, 2, "peer x")
    finally:
        again.close()


def test_a_format_1_device_store_gets_the_forks_table(tmp_path: Path) -> None:
    import sqlite3

    from crdt_sync.store import STORE_FORMAT, Store

    store = Store(tmp_path)
    with store.write():
        store.db.execute("DROP TABLE forks")
        store.set_meta("format", 1)
    store.close()
    readonly = Store(tmp_path, read_only=True)  # writes nothing, and still reads "no proofs"
    try:
        assert readonly.meta("format") == 1
        assert readonly.fork_proofs(SPACE) == [] and readonly.fork_records(SPACE) == []
    finally:
        readonly.close()
    again = Store(tmp_path)
    try:
        assert again.meta("format") == STORE_FORMAT == 3
        assert again.fork_proofs(SPACE) == [] and again.fork_count(SPACE) == 0
    finally:
        again.close()
    db = sqlite3.connect(tmp_path / "store.sqlite3")
    assert db.execute("SELECT COUNT(*) FROM forks").fetchone() == (0,)
    db.close()


def test_a_device_whose_own_key_forked_still_syncs_and_no_one_takes_its_later_writes(
        tmp_path: Path) -> None:
    # A copied data directory: both copies write as one key. The proof reaches the original,
    # which sets its own chain aside from the fork seq; it can still sync (it is not stuck
    # waiting for acknowledgements no peer will give), and its later writes stay its own.
    original = admit(Replica(tmp_path / "original", seal_interval=0))
    original.space(SPACE).put("eq", "pump", {"status": "ok"})
    original.close()
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    with admit(Replica(tmp_path / "original", seal_interval=0)) as me, \
            admit(Replica(tmp_path / "copy", seal_interval=0)) as copy, \
            admit(Replica(tmp_path / "peer")) as peer:
        me.space(SPACE).put("eq", "pump", {"status": "mine"})
        copy.space(SPACE).put("eq", "pump", {"status": "the copy's"})
        peer.import_bundle(me.export_bundle(SPACE))
        peer.import_bundle(copy.export_bundle(SPACE))
        assert len(peer.fork_proofs(SPACE)) == 1
        wire = _sync(me, peer)
        assert wire.a.synced and wire.b.synced and me.fork_proofs(SPACE) == peer.fork_proofs(SPACE)
        assert me.version_vector(SPACE)[me.device_id] == 1
        me.space(SPACE).put("eq", "pump", {"status": "later"})  # seals seq 2 again: a third branch
        again = _sync(me, peer)
        assert again.a.synced and again.b.synced, (again.a.closed, again.b.closed)
        assert peer.version_vector(SPACE)[me.device_id] == 1
        assert peer.space(SPACE).get("eq", "pump") == {"status": "ok"}


# -- property: whichever branch each device saw first --------------------------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(common=st.integers(1, 3), lengths=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       seen=st.lists(st.sampled_from(["one", "other", "both", "none"]), min_size=3, max_size=3),
       order=st.permutations([0, 1, 2]), lossy=st.booleans())
def test_honest_devices_converge_whichever_branch_they_saw(
        tmp_path_factory: pytest.TempPathFactory, common: int, lengths: tuple[int, int],
        seen: list[str], order: list[int], lossy: bool) -> None:
    root = tmp_path_factory.mktemp("fork")
    m = admit(Replica(root / "m", seal_interval=0))
    for i in range(common):
        m.space(SPACE).put("eq", f"e{i % 2}", {"v": i, "common": True})
    m.close()
    shutil.copytree(root / "m", root / "c")
    with admit(Replica(root / "m", seal_interval=0)) as one, \
            admit(Replica(root / "c", seal_interval=0)) as other:
        admit(other)
        for i in range(lengths[0]):
            one.space(SPACE).put("eq", f"e{i % 3}", {"v": f"one {i}"})
        for i in range(lengths[1]):
            other.space(SPACE).put("eq", f"e{(i + 1) % 3}", {"v": f"other {i}"})
        devices = [admit(Replica(root / f"d{i}", seal_interval=0)) for i in range(3)]
        try:
            for i, device in enumerate(devices):
                admit(device)
                branches = {"one": [one], "other": [other], "both": [one, other], "none": []}[seen[i]]
                for branch in branches:
                    device.import_bundle(branch.export_bundle(SPACE))
                device.space(SPACE).put("eq", f"e{i}", {f"by{i}": i})  # honest edits, on top
            drop = [0]

            def lose(direction: str, frame: bytes) -> list[bytes]:
                drop[0] += 1  # every 7th frame lost: resends and the next sessions carry on
                return [] if lossy and drop[0] % 7 == 0 else [frame]

            for _ in range(3):  # bounded rounds of sessions, in the drawn order
                for a, b in zip(order, order[1:] + order[:1], strict=True):
                    wire = Wire(Session(devices[a].sync_host, 0.0), Session(devices[b].sync_host, 0.0),
                                tamper=lose)
                    wire.start()
                    for _tick in range(60):  # lost frames: timers resend (bounded)
                        if wire.a.synced and wire.b.synced:
                            break
                        wire.now += 1.0
                        wire.run(wire.a.tick(wire.now), wire.b.tick(wire.now))
            states = [snapshot(d).key() for d in devices]
            assert states[0] == states[1] == states[2]
            forked = seen.count("both") or ({"one", "other"} <= set(seen))
            if forked:
                for device in devices:
                    assert device.fork_proofs(SPACE), "the proof reaches every device"
                    assert device.version_vector(SPACE).get(one.device_id, 0) == common
        finally:
            for device in devices:
                device.close()
