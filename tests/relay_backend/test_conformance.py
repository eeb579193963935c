"""The relay backend contract (:class:`crdt_sync.relay.backend.RelayBackend`), one suite run
on every backend: SQLite (a file in tmp_path) and Postgres (a fresh database on a real
server, :mod:`tests.pg_server`).

Each test opens backend objects as RelayStore does (a writer's and a reader's on one store),
writes signed envelopes (``crdt_sync.envelope.seal``; membership envelopes and fork proofs
made as devices make them, :mod:`tests.relay_envelopes`) in WriteBatches, and reads them
back through the other object.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from hashlib import blake2b

import cbor2
import psycopg
import pytest

from crdt_sync import forks
from crdt_sync.envelope import Envelope, seal
from crdt_sync.errors import Rejected, StoreError
from crdt_sync.fork_table import ForkRecord
from crdt_sync.identity import Identity
from crdt_sync.quarantine import QuarantineRecord, SetAside
from crdt_sync.relay import postgres_schema, sqlite_store
from crdt_sync.relay.backend import EnvelopeRow, RejectionRecord, RelayBackend, SnapshotRow, WriteBatch
from tests.relay_backend.conftest import OpenBackend
from tests.relay_envelopes import SpaceMaker

SPACE = "space-a"
OTHER = "space-b"
BIG = 1 << 24
#: What a backend raises for a batch the database refuses.
DB_ERRORS = (sqlite3.Error, psycopg.Error, StoreError)


def chain_of(identity: Identity, length: int, space: str = SPACE, size: int = 20,
             start: int = 1, prev: bytes = b"") -> list[Envelope]:
    envs: list[Envelope] = []
    for seq in range(start, start + length):
        envs.append(seal(identity, space, seq, envs[-1].hash if envs else prev, seq << 16, os.urandom(size)))
    return envs


def row(env: Envelope) -> EnvelopeRow:
    return EnvelopeRow(env.space, env.author, env.seq, env.hash, env.hlc, env.wire)


def rows(envs: list[Envelope]) -> list[EnvelopeRow]:
    return [row(e) for e in envs]


def commit(backend: RelayBackend, batch: WriteBatch) -> None:
    backend.stage(batch)
    backend.commit()


def fork_of(env: Envelope, identity: Identity, source: str = "peer x", at: int = 7) -> ForkRecord:
    """A real proof that ``identity`` signed a second, different envelope at ``env``'s seq."""
    other = seal(identity, env.space, env.seq, env.prev_hash, env.hlc + 1, b"the other branch")
    proof = forks.prove(env, other)
    return ForkRecord(env.space, env.author, env.seq, proof.encode(), source, at)


@pytest.fixture
def pair(open_backend: OpenBackend) -> tuple[RelayBackend, RelayBackend]:
    """A writer's and a reader's object on one fresh store."""
    return open_backend(), open_backend()


# -- stage, commit, rollback ------------------------------------------------------------------
def test_a_staged_batch_is_seen_only_once_committed(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    a, b = Identity.generate(), Identity.generate()
    ea, eb = chain_of(a, 3), chain_of(b, 2)
    rejection = RejectionRecord(5, "peer x", "bad-signature", "detail")
    writer.stage(WriteBatch(rows([ea[0], eb[0], ea[1], eb[1], ea[2]]), [SPACE], [rejection],
                            membership=[(SPACE, a.id, 1)]))
    assert reader.version_vector(SPACE) == {} and reader.heads(SPACE) == {}
    assert reader.spaces() == [] and reader.rejections() == []
    assert reader.chain_head(SPACE, a.id) == (0, b"") and reader.envelope_hash(SPACE, a.id, 1) is None
    assert reader.missing_envelopes(SPACE, {}, 100, BIG) == []
    assert reader.membership_envelopes(SPACE) == []
    writer.commit()
    assert reader.version_vector(SPACE) == {a.id: 3, b.id: 2}
    assert reader.heads(SPACE) == {a.id: (3, ea[2].hash), b.id: (2, eb[1].hash)}
    assert reader.chain_head(SPACE, a.id) == (3, ea[2].hash)
    assert reader.chain_head(SPACE, "nobody") == (0, b"")
    assert [reader.envelope_hash(SPACE, a.id, s) for s in (1, 2, 3, 4)] == [e.hash for e in ea] + [None]
    assert reader.envelope_wire(SPACE, b.id, 2) == eb[1].wire
    assert reader.envelope_wire(SPACE, b.id, 3) is None and reader.envelope_wire(OTHER, b.id, 1) is None
    assert reader.spaces() == [SPACE]
    assert reader.rejections() == [rejection]
    assert reader.membership_envelopes(SPACE) == [ea[0].wire]


def test_rollback_discards_the_staged_batch(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    a = Identity.generate()
    envs = chain_of(a, 3)
    writer.stage(WriteBatch(rows(envs[:2]), [SPACE], [RejectionRecord(1, "p", "r", "d")],
                            quarantines=[QuarantineRecord.of(envs[2], Rejected("bad-payload", "x"))]))
    writer.rollback()
    writer.rollback()  # nothing open: nothing to do
    assert reader.version_vector(SPACE) == {} and reader.spaces() == [] and reader.rejections() == []
    assert reader.quarantines() == []
    # The same rows commit afterwards: nothing of the discarded batch is in their way.
    commit(writer, WriteBatch(rows(envs), [SPACE]))
    assert reader.version_vector(SPACE) == {a.id: 3}


def test_a_refused_batch_leaves_nothing_and_the_next_one_commits(
        pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    a, b = Identity.generate(), Identity.generate()
    ea, eb = chain_of(a, 2), chain_of(b, 1)
    commit(writer, WriteBatch(rows(ea[:1]), [SPACE]))
    # Another envelope at a's seq 1 (a fork the caller did not see): the whole batch is refused.
    # (The same envelope again is a duplicate to Postgres, which several relay nodes share:
    # relay/shared_store.py.)
    with pytest.raises(DB_ERRORS):
        writer.stage(WriteBatch(rows([eb[0], chain_of(a, 1)[0]]), [SPACE, OTHER],
                                [RejectionRecord(1, "p", "r", "d")]))
        writer.commit()
    writer.rollback()
    assert reader.version_vector(SPACE) == {a.id: 1}
    assert reader.spaces() == [SPACE] and reader.rejections() == []
    commit(writer, WriteBatch(rows([eb[0], ea[1]]), [SPACE]))
    assert reader.version_vector(SPACE) == {a.id: 2, b.id: 1}


def test_heads_move_forward_across_batches_and_spaces_are_kept_once(
        pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    a, b = Identity.generate(), Identity.generate()
    ea, eb, other = chain_of(a, 4), chain_of(b, 1), chain_of(a, 2, OTHER)
    commit(writer, WriteBatch(rows([ea[0], eb[0]]), [SPACE]))
    commit(writer, WriteBatch(rows(ea[1:] + other), [SPACE, OTHER, SPACE]))  # SPACE again: no error
    assert reader.heads(SPACE) == {a.id: (4, ea[3].hash), b.id: (1, eb[0].hash)}
    assert reader.heads(OTHER) == {a.id: (2, other[1].hash)}
    assert reader.spaces() == sorted([SPACE, OTHER])
    assert list(reader.version_vector(SPACE)) == sorted([a.id, b.id])  # by author


# -- what a peer lacks ------------------------------------------------------------------------
def test_missing_envelopes_in_arrival_order(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    ea, eb, ec = chain_of(a, 3), chain_of(b, 3), chain_of(c, 1, OTHER)
    arrival = [ea[0], eb[0], ea[1], eb[1], ea[2], eb[2]]
    commit(writer, WriteBatch(rows(arrival[:3]), [SPACE]))
    commit(writer, WriteBatch(rows(ec + arrival[3:]), [SPACE, OTHER]))
    got = reader.missing_envelopes(SPACE, {}, 100, BIG)
    assert [e.wire for e in got] == [e.wire for e in arrival]
    assert [(e.author, e.seq, e.hash) for e in got] == [(e.author, e.seq, e.hash) for e in arrival]
    assert [e.hash for e in reader.missing_envelopes(SPACE, {a.id: 2}, 100, BIG)] == \
        [eb[0].hash, eb[1].hash, ea[2].hash, eb[2].hash]
    assert [e.hash for e in reader.missing_envelopes(SPACE, {a.id: 3, b.id: 1, c.id: 1}, 100, BIG)] == \
        [eb[1].hash, eb[2].hash]
    assert reader.missing_envelopes(SPACE, {a.id: 3, b.id: 3}, 100, BIG) == []
    assert reader.missing_envelopes(SPACE, {a.id: 9, b.id: 9}, 100, BIG) == []  # ahead of us
    assert [e.hash for e in reader.missing_envelopes(OTHER, {}, 100, BIG)] == [ec[0].hash]
    assert reader.missing_envelopes("no such space", {}, 100, BIG) == []


def test_missing_envelopes_are_bounded_in_count_and_bytes(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    a, b = Identity.generate(), Identity.generate()
    ea, eb = chain_of(a, 3, size=300), chain_of(b, 3, size=500)
    arrival = [ea[0], eb[0], ea[1], eb[1], ea[2], eb[2]]
    commit(writer, WriteBatch(rows(arrival), [SPACE]))
    sizes = [len(e.wire) for e in arrival]
    assert [e.hash for e in reader.missing_envelopes(SPACE, {}, 2, BIG)] == [ea[0].hash, eb[0].hash]
    assert [e.hash for e in reader.missing_envelopes(SPACE, {}, 1, BIG)] == [ea[0].hash]
    assert [e.hash for e in reader.missing_envelopes(SPACE, {}, 0, BIG)] == [ea[0].hash]  # one always
    assert [e.hash for e in reader.missing_envelopes(SPACE, {}, 100, 1)] == [ea[0].hash]  # one always
    exact = sum(sizes[:3])
    assert [e.hash for e in reader.missing_envelopes(SPACE, {}, 100, exact)] == [e.hash for e in arrival[:3]]
    assert [e.hash for e in reader.missing_envelopes(SPACE, {}, 100, exact - 1)] == \
        [e.hash for e in arrival[:2]]
    # Both bounds, from where the peer is: the count stops first, then the bytes.
    assert [e.hash for e in reader.missing_envelopes(SPACE, {a.id: 1}, 2, BIG)] == [eb[0].hash, ea[1].hash]
    assert [e.hash for e in reader.missing_envelopes(SPACE, {a.id: 1}, 100, sizes[1] + sizes[2])] == \
        [eb[0].hash, ea[1].hash]


def test_missing_envelopes_leave_out_excluded_chains(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    a, b = Identity.generate(), Identity.generate()
    ea, eb = chain_of(a, 4), chain_of(b, 2)
    arrival = [ea[0], eb[0], ea[1], ea[2], eb[1], ea[3]]
    commit(writer, WriteBatch(rows(arrival), [SPACE]))
    got = reader.missing_envelopes(SPACE, {}, 100, BIG, excluded={a.id: 3})
    assert [e.hash for e in got] == [ea[0].hash, eb[0].hash, ea[1].hash, eb[1].hash]
    # A peer that holds everything below the stop lacks only the other chain.
    got = reader.missing_envelopes(SPACE, {a.id: 2}, 100, BIG, excluded={a.id: 3})
    assert [e.hash for e in got] == [eb[0].hash, eb[1].hash]
    assert reader.missing_envelopes(SPACE, {a.id: 2, b.id: 2}, 100, BIG, excluded={a.id: 3}) == []
    got = reader.missing_envelopes(SPACE, {}, 100, BIG, excluded={a.id: 1, b.id: 2})
    assert [e.hash for e in got] == [eb[0].hash]
    assert reader.missing_envelopes(SPACE, {}, 100, BIG, excluded={}) != []


# -- forks ---------------------------------------------------------------------------------
def test_a_fork_proof_is_kept_and_drops_the_branch_from_its_seq(
        pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    a, b = Identity.generate(), Identity.generate()
    ea, eb, other = chain_of(a, 5), chain_of(b, 2), chain_of(a, 2, OTHER)
    commit(writer, WriteBatch(rows(ea + eb + other), [SPACE, OTHER],
                              membership=[(SPACE, a.id, 2), (SPACE, a.id, 4), (SPACE, b.id, 1)]))
    fork = fork_of(ea[2], a)
    commit(writer, WriteBatch(forks=[fork]))
    assert reader.fork_records() == [fork] and reader.fork_records(SPACE) == [fork]
    assert reader.fork_records(OTHER) == [] and reader.fork_keys(SPACE) == [(a.id, 3)]
    assert forks.verify(reader.fork_records()[0].proof).key == (SPACE, a.id, 3)
    assert reader.heads(SPACE) == {a.id: (2, ea[1].hash), b.id: (2, eb[1].hash)}
    kept = [reader.envelope_wire(SPACE, a.id, s) is not None for s in range(1, 6)]
    assert kept == [True, True, False, False, False]
    assert [e.hash for e in reader.missing_envelopes(SPACE, {}, 100, BIG)] == \
        [ea[0].hash, ea[1].hash, eb[0].hash, eb[1].hash]
    assert reader.membership_envelopes(SPACE) == [ea[1].wire, eb[0].wire]  # seq 4's index went
    assert reader.heads(OTHER) == {a.id: (2, other[1].hash)}  # only that space
    # The same (space, author, seq) again is not a second proof, and drops nothing more.
    commit(writer, WriteBatch(forks=[fork_of(ea[2], a, source="peer y", at=8)]))
    assert reader.fork_records() == [fork]
    # A proof below: kept beside the first; at seq 1 the author's chain (and head) go.
    low = fork_of(ea[0], a)
    commit(writer, WriteBatch(forks=[low]))
    assert reader.fork_records(SPACE) == [low, fork] and reader.fork_keys(SPACE) == [(a.id, 1), (a.id, 3)]
    assert reader.heads(SPACE) == {b.id: (2, eb[1].hash)}
    assert reader.chain_head(SPACE, a.id) == (0, b"")


def test_a_fork_in_the_batch_of_its_envelopes_drops_them_too(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    a = Identity.generate()
    envs = chain_of(a, 4)
    commit(writer, WriteBatch(rows(envs[:2]), [SPACE]))
    fork = fork_of(envs[2], a)
    commit(writer, WriteBatch(rows(envs[2:]), forks=[fork], membership=[(SPACE, a.id, 3)]))
    assert reader.heads(SPACE) == {a.id: (2, envs[1].hash)}
    assert reader.membership_envelopes(SPACE) == [] and reader.fork_keys(SPACE) == [(a.id, 3)]
    # A proof past the chain's end keeps its head.
    beyond = fork_of(chain_of(a, 1, start=9, prev=os.urandom(32))[0], a)
    commit(writer, WriteBatch(forks=[beyond]))
    assert reader.heads(SPACE) == {a.id: (2, envs[1].hash)}
    assert [r.seq for r in reader.fork_records(SPACE)] == [3, 9]


# -- quarantine ------------------------------------------------------------------------------
def test_quarantine_records(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    a, b = Identity.generate(), Identity.generate()
    ea, eb, other = chain_of(a, 5), chain_of(b, 2), chain_of(b, 1, OTHER)
    qa = QuarantineRecord.of(ea[3], Rejected("bad-payload", "cannot decode"), since=1000)
    qb = QuarantineRecord.of(eb[1], Rejected("broken-chain", "prev"), since=2000)
    qo = QuarantineRecord.of(other[0], Rejected("clock-range", "far"), since=3000)
    commit(writer, WriteBatch(quarantines=[qa, qo, qb]))
    assert reader.quarantined(SPACE) == {a.id: SetAside(4, "bad-payload", "cannot decode"),
                                         b.id: SetAside(2, "broken-chain", "prev")}
    assert reader.quarantine(SPACE, a.id) == qa and reader.quarantine(OTHER, b.id) == qo
    assert reader.quarantine(OTHER, a.id) is None
    assert reader.quarantine(SPACE, a.id).wire == ea[3].wire  # type: ignore[union-attr]
    assert reader.quarantines() == sorted([qa, qb, qo], key=lambda q: (q.space, q.author))
    assert reader.quarantines(OTHER) == [qo]
    # A record from a lower seq replaces the one in force; one from a higher seq does not.
    lower = QuarantineRecord.of(ea[1], Rejected("fork", "two seq 2"), since=4000)
    higher = QuarantineRecord.of(eb[1], Rejected("bad-payload", "later"), since=5000)
    commit(writer, WriteBatch(quarantines=[lower, QuarantineRecord.of(ea[4], Rejected("x", "y"))]))
    commit(writer, WriteBatch(quarantines=[higher]))
    assert reader.quarantine(SPACE, a.id) == lower and reader.quarantine(SPACE, b.id) == qb
    # Lifts come after the batch's quarantines.
    commit(writer, WriteBatch(quarantines=[qo], lifts=[(SPACE, a.id), (OTHER, b.id), (OTHER, "nobody")]))
    assert reader.quarantines() == [qb]
    assert reader.quarantined(OTHER) == {}


# -- rejections, membership, identity ------------------------------------------------------
def test_rejections_newest_first_and_limited(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    records = [RejectionRecord(i, f"peer {i}", "bad-signature", f"#{i}") for i in range(5)]
    commit(writer, WriteBatch(rejections=records[:3]))
    commit(writer, WriteBatch(rejections=records[3:]))
    assert reader.rejections(limit=2) == [records[4], records[3]]
    assert reader.rejections() == records[::-1]
    assert reader.rejections(limit=0) == []
    got = reader.rejections(limit=1)[0]
    assert isinstance(got, RejectionRecord) and got.reason == got[2] == "bad-signature"


def test_membership_envelopes_of_a_space_in_arrival_order(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    member = Identity.generate()
    sp = SpaceMaker(Identity.generate())
    opened, data = sp.open(), sp.data(sp.creator)
    grant = sp.grant(member.public_key)
    joined = sp.data(member)
    other = SpaceMaker(Identity.generate())
    other_open = other.open()
    commit(writer, WriteBatch(rows([opened, data, grant, other_open]), [sp.space, other.space],
                              membership=[(sp.space, sp.creator.id, 1), (sp.space, sp.creator.id, 3),
                                          (other.space, other.creator.id, 1)]))
    commit(writer, WriteBatch(rows([joined]), membership=[(sp.space, sp.creator.id, 3)]))  # again: once
    assert reader.membership_envelopes(sp.space) == [opened.wire, grant.wire]
    assert reader.membership_envelopes(other.space) == [other_open.wire]
    assert reader.membership_envelopes("no such space") == []


def test_the_identity_seed_is_stored_once_and_kept_across_reopening(open_backend: OpenBackend,
                                                                     kind: str) -> None:
    first, second = os.urandom(32), os.urandom(32)
    writer = open_backend()
    assert writer.identity_seed(first) == first
    assert open_backend().identity_seed(second) == first
    writer.close()
    again = open_backend()
    assert again.identity_seed(second) == first
    schema = sqlite_store.SCHEMA_VERSION if kind == "sqlite" else postgres_schema.SCHEMA_VERSION
    assert again.schema_version == schema


def test_reopening_sees_what_was_committed_and_nothing_staged(open_backend: OpenBackend) -> None:
    writer, reader = open_backend(), open_backend()
    a = Identity.generate()
    envs = chain_of(a, 4)
    q = QuarantineRecord.of(envs[3], Rejected("bad-payload", "x"), since=9)
    fork = fork_of(chain_of(a, 1, OTHER)[0], a)
    commit(writer, WriteBatch(rows(envs[:3]), [SPACE], [RejectionRecord(3, "p", "r", "d")], [fork], [q],
                              membership=[(SPACE, a.id, 1)]))
    writer.stage(WriteBatch(rows(envs[3:]), [OTHER]))  # never committed
    writer.close()
    reader.close()
    again = open_backend()
    assert again.heads(SPACE) == {a.id: (3, envs[2].hash)} and again.version_vector(SPACE) == {a.id: 3}
    assert [e.hash for e in again.missing_envelopes(SPACE, {}, 100, BIG)] == [e.hash for e in envs[:3]]
    assert again.spaces() == [SPACE] and again.rejections() == [RejectionRecord(3, "p", "r", "d")]
    assert again.fork_records() == [fork] and again.quarantines() == [q]
    assert again.membership_envelopes(SPACE) == [envs[0].wire]
    commit(again, WriteBatch(rows(envs[3:])))  # it goes on from there
    assert open_backend().chain_head(SPACE, a.id) == (4, envs[3].hash)


def test_a_reader_sees_each_commit_as_it_lands(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    a = Identity.generate()
    envs = chain_of(a, 3)
    for n, env in enumerate(envs, 1):
        writer.stage(WriteBatch([row(env)], [SPACE]))
        assert reader.chain_head(SPACE, a.id) == ((n - 1, envs[n - 2].hash) if n > 1 else (0, b""))
        writer.commit()
        assert reader.chain_head(SPACE, a.id) == (n, env.hash)
        assert len(reader.missing_envelopes(SPACE, {}, 100, BIG)) == n
    # Either object writes; the other reads it.
    q = QuarantineRecord.of(envs[2], Rejected("bad-payload", "x"), since=1)
    commit(reader, WriteBatch(quarantines=[q]))
    assert writer.quarantine(SPACE, a.id) == q


def test_healthy_and_size(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    assert writer.healthy() and reader.healthy()
    before = reader.size_bytes()
    assert before > 0
    a = Identity.generate()
    commit(writer, WriteBatch(rows(chain_of(a, 64, size=16_000)), [SPACE]))
    assert reader.size_bytes() > before


# -- snapshots (SQLite schema 5, Postgres schema 2) ----------------------------------------------------
def snapshot_row(space: str, hlc: int, covered: dict[str, int], size: int = 64) -> SnapshotRow:
    """A kept snapshot's row (the backend stores what the relay judged: any bytes do here)."""
    wire = os.urandom(size)
    return SnapshotRow(space, "author-" + str(hlc), hlc, blake2b(wire, digest_size=32).digest(),
                       cbor2.dumps(sorted([a, s] for a, s in covered.items()), canonical=True), wire, hlc)


def test_one_snapshot_per_space_replaced_by_a_later_one(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    first, other = snapshot_row(SPACE, 10, {"a": 3}), snapshot_row(OTHER, 5, {"b": 1})
    writer.stage(WriteBatch(snapshots=[first, other]))
    assert reader.snapshot(SPACE) is None  # staged: not seen
    writer.commit()
    assert reader.snapshot(SPACE) == first and reader.snapshot(OTHER) == other
    assert reader.snapshot(SPACE, wire=False) == first._replace(wire=b"")  # (the record stays behind)
    later = snapshot_row(SPACE, 20, {"a": 9}, size=BIG >> 4)
    commit(writer, WriteBatch(snapshots=[later]))
    assert reader.snapshot(SPACE) == later
    # Two writers at once (relay nodes on one database): the higher hlc stays.
    commit(writer, WriteBatch(snapshots=[snapshot_row(SPACE, 15, {"a": 12})]))
    assert reader.snapshot(SPACE) == later
    assert reader.snapshot("no such space") is None
    writer.stage(WriteBatch(snapshots=[snapshot_row(SPACE, 30, {"a": 30})]))
    writer.rollback()
    assert reader.snapshot(SPACE) == later


def test_a_store_at_the_previous_schema_gains_the_snapshot_table(open_backend: OpenBackend, kind: str,
                                                                 request: pytest.FixtureRequest) -> None:
    writer = open_backend()
    commit(writer, WriteBatch(rows(chain_of(Identity.generate(), 2)), [SPACE]))
    writer.close()
    if kind == "sqlite":  # back to schema 4: what the previous release wrote
        path = request.getfixturevalue("tmp_path") / sqlite_store.DB_NAME
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("DROP TABLE space_snapshots")
            db.execute("DELETE FROM schema_migrations WHERE version=5")
    else:  # back to schema 1
        with psycopg.connect(request.getfixturevalue("pg_url"), autocommit=True) as conn:
            conn.execute("DROP TABLE space_snapshots")
            conn.execute("DELETE FROM schema_version WHERE version=2")
    again = open_backend()
    schema = sqlite_store.SCHEMA_VERSION if kind == "sqlite" else postgres_schema.SCHEMA_VERSION
    assert again.schema_version == schema and again.version_vector(SPACE) != {}
    row = snapshot_row(SPACE, 1, {"a": 1})
    commit(again, WriteBatch(snapshots=[row]))
    assert open_backend().snapshot(SPACE) == row
