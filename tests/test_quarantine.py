"""Per-author quarantine on a device (issue 11, finding 1), without a network: the receive
paths, the store, the lift, status, and two sessions over the memory wire.

A stranger's key signs an envelope whose payload is not a crdt-sync payload. Before
quarantine, a device refused the whole batch (and every later batch: the relay keeps the
envelope and sends it again); now that author's chain in that space is set aside from the
refused seq on, and everything else carries on. Through the real relay and real CLI
processes: tests/test_quarantine_relay.py.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_sync import Rejected, Replica
from crdt_sync.envelope import Envelope, seal
from crdt_sync.hlc import wall_ms
from crdt_sync.identity import Identity
from crdt_sync.payload import encode_payload, pack_item
from crdt_sync.protocol import Quarantined, Session
from crdt_sync.protocol.messages import Envelopes, decode
from crdt_sync.protocol.messages import Quarantined as QuarantinedMsg
from crdt_sync.quarantine import MAX_DETAIL, Quarantine, QuarantineRecord
from crdt_sync.relay.host import RelayHost
from crdt_sync.relay.storage import RelayStore
from crdt_sync.store import Store
from tests.conftest import ReplicaFactory
from tests.sync_helpers import SPACE, Wire, admit, body_of, data_payload, fill, snapshot

#: an hour from now: later than the register clocks of payloads written during the run (a register clock
#: must not exceed its envelope's), and well within the day ahead that a receiver allows
HLC = (wall_ms() + 3_600_000) << 16


def garbage(author: Identity, seq: int = 1, prev: bytes = b"", payload: bytes = b"\x00not a payload",
            space: str = SPACE) -> Envelope:
    """Signed by ``author``, so valid as an envelope; its payload decrypts (a member's key),
    but what it holds is not a crdt-sync payload."""
    return seal(author, space, seq, prev, HLC + seq, data_payload(author, seq, payload, space))


@functools.cache
def valid_body(entity: str) -> bytes:
    """What a real replica puts in an envelope when it writes ``entity`` (before encrypting)."""
    with tempfile.TemporaryDirectory() as directory, Replica(directory, seal_interval=0) as writer:
        admit(writer).space(SPACE).put("equipment", entity, {"x": 1})
        return body_of(writer.sync_host.missing_envelopes(SPACE, {}, 1, 1 << 20)[0])


def honest(author: Identity, seq: int, prev: bytes, entity: str, space: str = SPACE) -> Envelope:
    """A valid envelope of ``author`` that writes ``entity``."""
    return seal(author, space, seq, prev, HLC + seq, data_payload(author, seq, valid_body(entity), space))


def bad_update(author: Identity, seq: int, prev: bytes, entity: str) -> Envelope:
    """A payload that decodes, whose Yjs update does not: found only when the entity is read."""
    payload = encode_payload([("equipment", entity, pack_item(HLC + seq, b"\x01\x02\x03\x04"))])
    return seal(author, SPACE, seq, prev, HLC + seq, data_payload(author, seq, payload))


@pytest.fixture
def device(open_replica: ReplicaFactory) -> Replica:
    replica = open_replica("device", seal_interval=0)
    admit(replica)
    return replica


# -- the receive path ------------------------------------------------------------------------------
def test_a_bad_payload_quarantines_its_author_and_the_batch_goes_on(device: Replica) -> None:
    stranger, alice = Identity.generate(), Identity.generate()
    bad = garbage(stranger)
    a1 = honest(alice, 1, b"", "a1")
    a2 = honest(alice, 2, a1.hash, "a2")
    got = device.accept([a1.wire, bad.wire, a2.wire], "peer x", SPACE)
    assert (got.applied, got.duplicates, got.gaps, got.skipped) == (2, 0, 0, 0)
    assert [(q.author, q.from_seq, q.reason) for q in got.quarantined] == [(stranger.id, 1, "bad-payload")]
    assert device.version_vector(SPACE) == {alice.id: 2}
    assert [e for _, e in device.space(SPACE).list("equipment")] == ["a1", "a2"]

    record = device.quarantined(SPACE)[0]
    assert (record.space, record.author, record.from_seq, record.reason) == (SPACE, stranger.id, 1,
                                                                             "bad-payload")
    assert record.hash == bad.hash and record.wire == bad.wire  # the evidence is kept
    assert "payload is malformed" in record.detail and len(record.detail) <= MAX_DETAIL
    assert record.since > 0
    assert device.rejections(1)[0].reason == "bad-payload"


def test_later_envelopes_of_a_quarantined_author_are_skipped_not_refused(device: Replica) -> None:
    stranger, alice = Identity.generate(), Identity.generate()
    bad = garbage(stranger)
    device.accept([bad.wire], "peer x", SPACE)
    later = honest(stranger, 2, bad.hash, "s2")  # a valid envelope, after the refused one
    a1 = honest(alice, 1, b"", "a1")
    got = device.accept([later.wire, a1.wire, bad.wire], "peer x", SPACE)
    assert (got.applied, got.skipped, got.quarantined) == (1, 2, ())
    assert device.version_vector(SPACE) == {alice.id: 1}
    # The all-or-nothing path (bundles, Replica.receive) skips them too.
    assert device.receive([later.wire], "bundle") == (0, 0, 1)


def test_the_same_author_keeps_its_other_spaces(device: Replica) -> None:
    author = Identity.generate()
    other_space = "s" + "b" * 32
    admit(device, other_space)
    device.accept([garbage(author).wire], "peer x", SPACE)
    other = honest(author, 1, b"", "o1", space=other_space)
    assert device.accept([other.wire], "peer x", other_space).applied == 1
    assert device.version_vector(other_space) == {author.id: 1}


@pytest.mark.parametrize("loaded", [True, False], ids=["entity-loaded", "entity-not-loaded"])
def test_an_update_that_breaks_the_entity_is_refused_alone(device: Replica, loaded: bool) -> None:
    """Each envelope is applied fully or not at all: the bad update (found when applying it to
    a loaded entity, or only when the entity is read back) takes nothing else with it."""
    alice, mallory = Identity.generate(), Identity.generate()
    a1 = honest(alice, 1, b"", "pump")
    device.accept([a1.wire], "peer x", SPACE)
    if loaded:
        assert device.space(SPACE).get("equipment", "pump") == {"x": 1}
    before = snapshot(device)
    evil = bad_update(mallory, 1, b"", "pump")
    a2 = honest(alice, 2, a1.hash, "pump")
    m_later = honest(mallory, 2, evil.hash, "other")
    got = device.accept([evil.wire, a2.wire, m_later.wire], "peer x", SPACE)
    assert (got.applied, got.skipped) == (1, 1)
    assert [(q.author, q.from_seq, q.reason) for q in got.quarantined] == [(mallory.id, 1, "bad-payload")]
    assert device.version_vector(SPACE) == {alice.id: 2}
    assert snapshot(device) != before
    device.space(SPACE).put("equipment", "pump", {"still": "writable"})
    assert device.space(SPACE).get("equipment", "pump") == {"x": 1, "still": "writable"}


def test_a_signature_that_does_not_verify_still_refuses_the_batch(device: Replica) -> None:
    """Not attributable to any author: nothing is applied (a session ends with ERROR 5)."""
    alice = Identity.generate()
    a1 = honest(alice, 1, b"", "a1")
    forged = bytearray(honest(alice, 2, a1.hash, "a2").wire)
    forged[-1] ^= 1
    with pytest.raises(Rejected, match="bad-signature"):
        device.accept([a1.wire, bytes(forged)], "peer x", SPACE)
    assert device.version_vector(SPACE) == {}
    assert device.quarantined() == []


def test_bundles_stay_all_or_nothing(device: Replica, open_replica: ReplicaFactory) -> None:
    """A bundle is one file from one exporter: refused whole, as before (no quarantine)."""
    alice = Identity.generate()
    a1 = honest(alice, 1, b"", "a1")
    with pytest.raises(Rejected, match="bad-payload"):
        device.receive([a1.wire, garbage(Identity.generate()).wire], "bundle")
    assert device.version_vector(SPACE) == {} and device.quarantined() == []


# -- lifting ----------------------------------------------------------------------------------------
def test_lift_accepts_the_author_again_and_a_still_bad_envelope_quarantines_again(device: Replica) -> None:
    author = Identity.generate()
    bad = garbage(author)
    device.accept([bad.wire], "peer x", SPACE)
    assert device.lift_quarantine(SPACE, author.id) is True
    assert device.lift_quarantine(SPACE, author.id) is False  # nothing left to lift
    assert device.quarantined() == []
    # The same refused envelope comes again: still bad, so quarantined again.
    got = device.accept([bad.wire], "peer x", SPACE)
    assert [q.from_seq for q in got.quarantined] == [1]
    device.lift_quarantine(SPACE, author.id)
    # Fixed (the author re-signed a good seq 1; its key, its chain): accepted now.
    good = honest(author, 1, b"", "fixed")
    assert device.accept([good.wire], "peer x", SPACE).applied == 1
    assert device.version_vector(SPACE) == {author.id: 1}


def test_the_quarantine_survives_reopening_and_is_shared_by_processes(tmp_path: Path) -> None:
    author = Identity.generate()
    with Replica(tmp_path / "d", seal_interval=0) as first:
        admit(first)
        first.accept([garbage(author).wire], "peer x", SPACE)
        with Replica(tmp_path / "d", seal_interval=0) as second:  # another process's view
            assert [q.author for q in second.quarantined()] == [author.id]
            second.lift_quarantine(SPACE, author.id)
        assert first.quarantined() == []
    with Replica(tmp_path / "d") as again:
        assert again.quarantined() == []


def test_status_lists_quarantined_authors(device: Replica) -> None:
    author = Identity.generate()
    device.accept([garbage(author).wire], "peer x", SPACE)
    status = device.status().to_dict()
    [entry] = status["quarantined"]
    assert {k: entry[k] for k in ("space", "author", "from_seq", "reason")} == {
        "space": SPACE, "author": author.id, "from_seq": 1, "reason": "bad-payload"}
    assert entry["since"].endswith("Z") and len(entry["hash"]) == 64
    assert status["refused_by_peers"] == []


def test_a_record_keeps_the_lowest_seq(tmp_path: Path) -> None:
    """The API other rules call (fork proofs: reason ``fork``): the record in force is the
    one from the lowest seq."""
    author = Identity.generate()
    store = Store(tmp_path)
    try:
        book = Quarantine(store.db, store.write)
        first = QuarantineRecord.of(garbage(author, 3, b"\x00" * 32), Rejected("fork", "x"))
        lower = QuarantineRecord.of(garbage(author, 2, b"\x00" * 32), Rejected("fork", "y"))
        assert book.quarantine(first).from_seq == 3
        assert book.quarantine(lower).from_seq == 2
        assert book.quarantine(first).from_seq == 2  # a later seq does not move it up
        assert book.is_quarantined(SPACE, author.id) == lower
        assert book.list(SPACE) == [lower] and book.list("elsewhere") == []
        with pytest.raises(Rejected, match="not-liftable"):  # a fork: the proof stays true
            book.lift(SPACE, author.id)
        assert book.is_quarantined(SPACE, author.id) == lower
        other = QuarantineRecord.of(garbage(author, 4, b"\x00" * 32, space="elsewhere"),
                                    Rejected("bad-payload", "z"))
        assert book.quarantine(other).from_seq == 4
        assert book.lift("elsewhere", author.id) and book.is_quarantined("elsewhere", author.id) is None
    finally:
        store.close()


# -- sessions ----------------------------------------------------------------------------------------
@pytest.fixture
def relay_store(tmp_path: Path) -> Iterator[RelayStore]:
    """A relay's store that does not enforce membership (its operator turned it off: it is on
    by default), so that it holds a stranger's envelope in a space: only the devices' own
    checks stand. Through an enforcing relay, where only a writer's bad envelope is stored:
    tests/test_quarantine_relay.py."""
    store = RelayStore(tmp_path / "relay", enforce_membership=False)
    yield store
    store.close()


def _relay_session(store: RelayStore) -> Session:
    return Session(RelayHost(store, lambda d: None, lambda d, n, size: None), 0.0)


def test_a_session_sets_the_author_aside_and_ends_synced(relay_store: RelayStore,
                                                       open_replica: ReplicaFactory) -> None:
    """A careless relay does not read payloads, so it holds the stranger's envelope; a device
    syncing with it quarantines the stranger, tells the relay, and still gets every other
    author's edits and ends synced."""
    alice, bob = open_replica("alice", seal_interval=0), open_replica("bob", seal_interval=0)
    admit(bob)
    stranger = Identity.generate()
    bad = garbage(stranger)
    later = honest(stranger, 2, bad.hash, "s2")
    assert relay_store.receive([bad.wire, later.wire], SPACE, False) == (2, 0, 0)
    fill(alice, "a", 2)
    Wire(Session(alice.sync_host, 0.0), _relay_session(relay_store)).start()
    wire = Wire(Session(bob.sync_host, 0.0), _relay_session(relay_store))
    wire.start()
    assert wire.a.synced and wire.a.closed is None and wire.b.closed is None
    assert bob.version_vector(SPACE) == {alice.device_id: 2}
    notices = [m for m in wire.sent("a>b") if isinstance(m, QuarantinedMsg)]
    assert [(n.from_seq, n.reason) for n in notices] == [(1, "bad-payload")]
    # The relay side stopped sending that chain: no envelope of it after the notice.
    assert next(e for e in wire.b.pop_events() if isinstance(e, Quarantined)).by_peer
    assert [q.author for q in bob.quarantined(SPACE)] == [stranger.id]

    # Later sessions: the stranger is skipped without a refusal; honest edits keep coming.
    fill(alice, "later", 1)
    Wire(Session(alice.sync_host, 0.0), _relay_session(relay_store)).start()
    again = Wire(Session(bob.sync_host, 0.0), _relay_session(relay_store))
    again.start()
    assert again.a.synced and bob.version_vector(SPACE) == {alice.device_id: 3}
    assert len(bob.rejections()) == 1  # the one refusal, not one per sync


def test_the_sender_records_what_the_peer_refused(relay_store: RelayStore,
                                                  open_replica: ReplicaFactory) -> None:
    """A device that holds a chain its peer refuses (here: a device that forwards the
    stranger's envelope it got before quarantine existed) shows it in status."""
    carrier, bob = open_replica("carrier", seal_interval=0), open_replica("bob", seal_interval=0)
    admit(bob)
    stranger = Identity.generate()
    bad = garbage(stranger)
    _force_store(carrier, bad)
    wire = Wire(Session(carrier.sync_host, 0.0), Session(bob.sync_host, 0.0))
    wire.start()
    assert wire.a.synced and wire.b.synced
    [refusal] = carrier.refused_by_peers(SPACE)
    assert (refusal.peer, refusal.author, refusal.from_seq, refusal.reason) == (
        bob.device_id, stranger.id, 1, "bad-payload")
    status = carrier.status().to_dict()
    assert status["refused_by_peers"][0]["peer"] == bob.device_id
    assert [type(decode(f)).__name__ for d, f in wire.log if d == "a>b"].count("Envelopes") == 1


def _force_store(replica: Replica, env: Envelope) -> None:
    """Store ``env`` as received without checking its payload (what an older device did)."""
    store = replica._store
    with store.write():
        store.insert_envelope(env)
        store.join(env.space)


def test_envelopes_frame_after_notice_is_not_resent_in_the_session(relay_store: RelayStore,
                                                                    open_replica: ReplicaFactory) -> None:
    bob = open_replica("bob", seal_interval=0)
    admit(bob)
    stranger = Identity.generate()
    bad = garbage(stranger)
    relay_store.receive([bad.wire], SPACE, False)
    wire = Wire(Session(bob.sync_host, 0.0), _relay_session(relay_store))
    wire.start()
    sent = [m for m in wire.sent("b>a") if isinstance(m, Envelopes)]
    assert len(sent) == 1  # sent once, refused once, never again (no go-back loop)
    assert wire.a.synced


# -- the relay's side ------------------------------------------------------------------------------
def test_the_relay_quarantines_a_fork_and_keeps_it_across_restarts(tmp_path: Path) -> None:
    """The relay applies the chain rules itself (it reads no payload): a fork sets the author
    aside in that space, durably, and nothing more of that chain there is stored. (Its
    membership step, on by default, is left out, as in tests/test_chain.py: these payloads
    are opaque bytes in a space of no genesis.)"""
    author, other = Identity.generate(), Identity.generate()
    e1 = garbage(author, payload=b"the relay does not read this")
    e2 = garbage(author, 2, e1.hash)
    fork = garbage(author, payload=b"another seq 1")
    elsewhere = garbage(author, space="other")
    store = RelayStore(tmp_path, enforce_membership=False)
    try:
        assert store.receive([e1.wire], SPACE, False) == (1, 0, 0)
        got = store.accept([fork.wire, e2.wire, garbage(other).wire], SPACE)
        assert (got.applied, got.skipped) == (1, 1)
        assert [(q.author, q.from_seq, q.reason) for q in got.quarantined] == [(author.id, 1, "fork")]
        assert store.accept([elsewhere.wire], "other").applied == 1  # its other spaces go on
    finally:
        store.close()
    again = RelayStore(tmp_path, enforce_membership=False)
    try:
        held = again.quarantine.is_quarantined(SPACE, author.id)
        assert held is not None and held.wire == fork.wire and held.hash == fork.hash
        assert [q.author for q in again.quarantine.list()] == [author.id]
        assert again.accept([e2.wire], SPACE).applied == 0
        # The fork is proven too: both branches of seq 1 are gone (docs/DESIGN.md, "Forks").
        assert again.version_vector(SPACE) == {other.id: 1}
        with pytest.raises(Rejected, match="not-liftable"):  # a fork is never lifted
            again.quarantine.lift(SPACE, author.id)
        assert again.quarantine.is_quarantined(SPACE, author.id) is not None
    finally:
        again.close()


# -- property: honest devices converge, whatever hostile envelopes they saw and in what order ---------
def _chains() -> dict[str, list[Envelope]]:
    """Per author, its envelopes in chain order: two honest authors, and three hostile ones
    whose envelopes are signed (so attributable) and touch the honest authors' entities."""
    alice, bob, stranger, mallory, forker = (Identity(bytes([i]) * 32) for i in range(1, 6))

    def chain(author: Identity, *entities: str, bad: dict[int, str] | None = None) -> list[Envelope]:
        out: list[Envelope] = []
        for seq, entity in enumerate(entities, start=1):
            prev = out[-1].hash if out else b""
            kind = (bad or {}).get(seq)
            if kind == "payload":
                out.append(garbage(author, seq, prev))
            elif kind == "update":
                out.append(bad_update(author, seq, prev, entity))
            else:
                out.append(honest(author, seq, prev, entity))
        return out

    forked = honest(forker, 1, b"", "f-branch-2")
    return {
        "alice": chain(alice, "pump", "valve", "pump"),
        "bob": chain(bob, "valve", "pump"),
        "stranger": chain(stranger, "pump", "pump", bad={1: "payload"}),
        "mallory": chain(mallory, "pump", "pump", "valve", bad={2: "update"}),
        "forker": [*chain(forker, "f-branch-1"), forked],
    }


CHAINS = _chains()
HONEST_ENTITIES = {"pump", "valve"}


@st.composite
def deliveries(draw: st.DrawFn) -> list[list[bytes]]:
    """One device's view: the chains interleaved at random (each author's in order, the two
    fork branches in either order), cut into batches at random."""
    queues = {name: list(envs) for name, envs in CHAINS.items()}
    if draw(st.booleans()):
        queues["forker"].reverse()
    order: list[bytes] = []
    while any(queues.values()):
        name = draw(st.sampled_from(sorted(n for n, q in queues.items() if q)))
        order.append(queues[name].pop(0).wire)
    cuts = sorted(set(draw(st.lists(st.integers(1, len(order) - 1), max_size=6))))
    return [order[i:j] for i, j in zip([0, *cuts], [*cuts, len(order)], strict=True)]


def _honest_view(replica: Replica) -> tuple[object, ...]:
    rows = [(c, e, f) for c, e, f in replica.space(SPACE).rows() if e in HONEST_ENTITIES]
    vv = replica.version_vector(SPACE)
    return (sorted(rows), {a: s for a, s in vv.items() if a not in {CHAINS["forker"][0].author}},
            sorted(q.author for q in replica.quarantined(SPACE)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=deliveries(), second=deliveries())
def test_devices_converge_on_the_honest_authors_whatever_they_saw(first: list[list[bytes]],
                                                                  second: list[list[bytes]]) -> None:
    views = []
    with tempfile.TemporaryDirectory() as root:
        for name, batches in (("one", first), ("two", second)):
            with Replica(Path(root) / name, seal_interval=0) as device:
                admit(device)
                for batch in batches:
                    device.accept(batch, "peer x", SPACE)  # never raises: every envelope is signed
                views.append(_honest_view(device))
    assert views[0] == views[1]
    rows, vv, quarantined = views[0]
    assert {entity for _, entity, _ in rows} == HONEST_ENTITIES
    authors = {name: envs[0].author for name, envs in CHAINS.items()}
    assert vv == {authors["alice"]: 3, authors["bob"]: 2, authors["mallory"]: 1}
    assert quarantined == sorted([authors["stranger"], authors["mallory"], authors["forker"]])


# -- the notice on the wire ----------------------------------------------------------------------------
@pytest.mark.parametrize("fields", [
    [0, 0, 0, "fork", ""],  # seq 0
    [0, 0, 1, "", ""],  # no reason
    [0, 0, 1, "x" * 65, ""],  # reason over 64 characters
    [0, 0, 1, "fork", "x" * 513],  # detail over 512 characters
    [0, b"short", 1, "fork", ""],  # an author key of the wrong size
    [0, 0, 1, b"fork", ""],  # reason not text
    [0, 0, 1, "fork"],  # a field missing
], ids=["seq-0", "no-reason", "long-reason", "long-detail", "short-key", "bytes-reason", "missing"])
def test_a_malformed_notice_is_refused(fields: list[object]) -> None:
    import cbor2

    from crdt_sync.protocol.messages import E_MALFORMED, ProtocolViolation

    with pytest.raises(ProtocolViolation) as info:
        decode(cbor2.dumps([10, *fields], canonical=True))
    assert info.value.code == E_MALFORMED


def test_a_notice_round_trips_and_is_bounded_when_encoded() -> None:
    from crdt_sync.protocol.messages import MAX_TEXT, encode
    from crdt_sync.quarantine import MAX_REASON

    msg = QuarantinedMsg(3, bytes(32), 7, "bad-payload", "payload is malformed")
    assert decode(encode(msg)) == msg
    long = decode(encode(QuarantinedMsg(0, 1, 1, "r" * 100, "d" * 1000)))
    assert isinstance(long, QuarantinedMsg)
    assert len(long.reason) == MAX_REASON and len(long.detail) == MAX_TEXT


def test_a_notice_about_a_chain_this_side_does_not_send_is_ignored(open_replica: ReplicaFactory) -> None:
    """A peer cannot make a device keep state per author it names."""
    from crdt_sync.protocol.messages import encode

    alice, bob = open_replica("alice", seal_interval=0), open_replica("bob", seal_interval=0)
    fill(alice, "a", 1)
    admit(bob)
    wire = Wire(Session(alice.sync_host, 0.0), Session(bob.sync_host, 0.0))
    wire.start()
    for _ in range(50):
        notice = QuarantinedMsg(0, Identity.generate().public_key, 1, "fork", "made up")
        assert wire.a.receive(wire.b.seal(encode(notice)), 1.0) == []  # sealed by its peer
    assert alice.refused_by_peers() == [] and wire.a.closed is None
    assert not [e for e in wire.a.pop_events() if isinstance(e, Quarantined)]


@pytest.mark.parametrize("seed", range(4))
async def test_a_quarantine_over_a_lossy_link_still_ends_synced(open_replica: ReplicaFactory,
                                                                seed: int) -> None:
    """Notices can be lost like any frame: the chain comes again, is skipped and told again."""
    from crdt_sync.transports.memory import LinkConditions, MemoryNetwork
    from tests.sync_helpers import sync_over

    carrier, bob = open_replica("carrier", seal_interval=0), open_replica("bob", seal_interval=0)
    admit(bob)
    stranger = Identity.generate()
    bad = garbage(stranger)
    _force_store(carrier, bad)
    _force_store(carrier, honest(stranger, 2, bad.hash, "s2"))
    fill(carrier, "c", 12)
    lossy = LinkConditions(loss=0.2, duplicate=0.1, reorder=0.1)
    link_a, link_b = MemoryNetwork(seed).pair(lossy, lossy)
    first, second = await sync_over(carrier, bob, link_a, link_b)
    assert first.synced and second.synced, (first.closed, second.closed)
    assert bob.version_vector(SPACE) == {carrier.device_id: 12}
    assert [q.author for q in bob.quarantined(SPACE)] == [stranger.id]
    assert [r.author for r in carrier.refused_by_peers(SPACE)] == [stranger.id]
