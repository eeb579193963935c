"""The relay's storage layer: the backend contract (run against every backend: SQLite today,
Postgres next), the relay's own schema, and what happens to data directories written by
earlier relays (the device store's layout): migrated in place, or refused with a message
that says what to do.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crdt_sync.envelope import Envelope, seal
from crdt_sync.errors import Rejected, StoreError, StoreVersionError
from crdt_sync.identity import Identity
from crdt_sync.relay.backend import EnvelopeRow, RejectionRecord, RelayBackend, WriteBatch
from crdt_sync.relay.sqlite_store import DB_NAME, FORMAT_GUARD, SCHEMA_VERSION, SqliteRelayBackend
from crdt_sync.relay.storage import RELAY_DB, RelayStore
from crdt_sync.store import Store
from tests.conftest import ReplicaFactory
from tests.relay_envelopes import EnvelopeHost, SpaceMaker, exchange, now_ms
from tests.relay_helpers import relay_process, run_cli
from tests.sync_helpers import SPACE, fill

RELAY_TABLES = {"schema_migrations", "meta", "spaces", "envelopes", "heads", "rejections", "quarantine",
                "forks", "membership", "space_snapshots"}


def chain_of(identity: Identity, length: int, space: str = SPACE) -> list[Envelope]:
    envs: list[Envelope] = []
    for seq in range(1, length + 1):
        envs.append(seal(identity, space, seq, envs[-1].hash if envs else b"", seq << 16, os.urandom(20)))
    return envs


def row(env: Envelope) -> EnvelopeRow:
    return EnvelopeRow(env.space, env.author, env.seq, env.hash, env.hlc, env.wire)


def tables(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()


# -- the backend contract --------------------------------------------------------------------------
Opener = Callable[[Path], RelayBackend]
BACKENDS: dict[str, Opener] = {"sqlite": SqliteRelayBackend}


@pytest.fixture(params=sorted(BACKENDS))
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[RelayBackend, RelayBackend]]:
    """A writer's and a reader's connection to one fresh store, as RelayStore opens them."""
    opener = BACKENDS[request.param]
    writer = opener(tmp_path)
    reader = opener(tmp_path)
    yield writer, reader
    writer.close()
    reader.close()


def test_staged_writes_are_seen_by_other_connections_only_once_committed(
        pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    a = Identity.generate()
    envs = chain_of(a, 3)
    writer.stage(WriteBatch([row(e) for e in envs], [SPACE], [RejectionRecord(5, "peer x", "fork", "d")]))
    assert reader.version_vector(SPACE) == {} and reader.spaces() == [] and reader.rejections() == []
    writer.commit()
    assert reader.version_vector(SPACE) == {a.id: 3}
    assert reader.heads(SPACE) == {a.id: (3, envs[2].hash)}
    assert reader.chain_head(SPACE, a.id) == (3, envs[2].hash)
    assert reader.chain_head(SPACE, "nobody") == (0, b"")
    assert [reader.envelope_hash(SPACE, a.id, s) for s in (1, 2, 4)] == [envs[0].hash, envs[1].hash, None]
    assert reader.spaces() == [SPACE]
    assert reader.rejections() == [RejectionRecord(5, "peer x", "fork", "d")]


def test_a_rolled_back_batch_leaves_nothing(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    writer.stage(WriteBatch([row(e) for e in chain_of(Identity.generate(), 2)], [SPACE]))
    writer.rollback()
    writer.rollback()  # idempotent: nothing open
    assert reader.version_vector(SPACE) == {} and reader.spaces() == []


def test_heads_move_forward_across_batches(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    a, b = Identity.generate(), Identity.generate()
    ea, eb = chain_of(a, 4), chain_of(b, 1)
    writer.stage(WriteBatch([row(ea[0]), row(eb[0])], [SPACE]))
    writer.commit()
    writer.stage(WriteBatch([row(e) for e in ea[1:]], [SPACE]))  # the space again: no error
    writer.commit()
    assert reader.heads(SPACE) == {a.id: (4, ea[3].hash), b.id: (1, eb[0].hash)}
    assert reader.spaces() == [SPACE]


def test_missing_envelopes_in_arrival_order_and_bounded(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    a, b = Identity.generate(), Identity.generate()
    ea, eb = chain_of(a, 3), chain_of(b, 3)
    arrival = [ea[0], eb[0], ea[1], eb[1], ea[2], eb[2]]
    writer.stage(WriteBatch([row(e) for e in arrival], [SPACE]))
    writer.commit()
    got = reader.missing_envelopes(SPACE, {}, 100, 1 << 24)
    assert [e.wire for e in got] == [e.wire for e in arrival]
    assert [e.hash for e in reader.missing_envelopes(SPACE, {a.id: 2}, 100, 1 << 24)] == \
        [eb[0].hash, eb[1].hash, ea[2].hash, eb[2].hash]
    assert len(reader.missing_envelopes(SPACE, {}, 2, 1 << 24)) == 2
    assert len(reader.missing_envelopes(SPACE, {}, 100, 1)) == 1  # the first always comes
    assert reader.missing_envelopes(SPACE, {a.id: 3, b.id: 3}, 100, 1 << 24) == []


def test_rejections_newest_first_and_limited(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    records = [RejectionRecord(i, f"peer {i}", "bad-signature", f"#{i}") for i in range(5)]
    writer.stage(WriteBatch(rejections=records))
    writer.commit()
    assert reader.rejections(limit=2) == records[:2:-1][:2] == [records[4], records[3]]
    assert reader.rejections()[0].reason == "bad-signature"  # a record, and still a tuple
    assert reader.rejections()[0][2] == "bad-signature"


def test_the_identity_seed_is_kept(pair: tuple[RelayBackend, RelayBackend]) -> None:
    writer, reader = pair
    first, second = os.urandom(32), os.urandom(32)
    assert writer.identity_seed(first) == first
    assert reader.identity_seed(second) == first
    assert writer.healthy() and reader.size_bytes() > 0
    assert writer.schema_version == reader.schema_version == SCHEMA_VERSION


# -- the relay's own schema ------------------------------------------------------------------------
def test_a_new_relay_store_has_only_relay_tables(tmp_path: Path) -> None:
    store = RelayStore(tmp_path, enforce_membership=True)
    author = Identity.generate()
    sp = SpaceMaker(author)
    store.receive([sp.open().wire, sp.data(author).wire], sp.space, False)
    store.close()
    path = tmp_path / RELAY_DB / DB_NAME
    assert tables(path) == RELAY_TABLES
    assert not (tmp_path / RELAY_DB / "changes").exists()  # the device store's signal file
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_migrations").fetchall() == [
        (v,) for v in range(1, SCHEMA_VERSION + 1)]
    db.close()
    again = RelayStore(tmp_path, enforce_membership=True)  # reopened: nothing to migrate, everything there
    assert again.version_vector(sp.space) == {author.id: 2}
    assert again.members(sp.space).can_read(author.public_key, now_ms())
    again.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM schema_migrations").fetchone() == (SCHEMA_VERSION,)
    db.close()


def test_a_device_store_refuses_a_relay_store(tmp_path: Path) -> None:
    """The format guard: a device store, and so any relay from before the relay schema (it
    opened its database as a device store), refuses the file instead of writing into it."""
    RelayStore(tmp_path).close()
    with pytest.raises(StoreVersionError, match="upgrade crdt-sync"):
        Store(tmp_path / RELAY_DB)
    db = sqlite3.connect(tmp_path / RELAY_DB / DB_NAME)
    assert db.execute("SELECT value FROM meta WHERE key='format'").fetchone() == (FORMAT_GUARD,)
    db.close()


# -- relay databases from before the relay schema ----------------------------------------------
def write_old_relay(data: Path, envs: list[Envelope], rejected: Rejected | None = None) -> bytes:
    """What a relay wrote before it had a schema of its own: the device store's layout
    (format 1), its seed in meta, its envelopes, heads and spaces, and its refusals.
    Returns the seed."""
    directory = data / RELAY_DB
    directory.mkdir(parents=True)
    store = Store(directory, fsync=True)
    seed = Identity.generate().seed
    with store.write():
        store.set_meta("device_seed", seed)
        for env in envs:
            store.insert_envelope(env)
            store.join(env.space)
    if rejected is not None:
        store.record_rejection("peer old", rejected)
    with store.write():  # format 1 had no fork proofs (device store format 2 added them)
        store.db.execute("DROP TABLE forks")
        for table in ("space_names", "membership", "held"):  # (device store format 3 added them)
            store.db.execute(f"DROP TABLE {table}")
        store.set_meta("format", 1)
    store.close()
    return seed


def test_an_old_relay_database_is_migrated_in_place(tmp_path: Path) -> None:
    a, b = Identity.generate(), Identity.generate()
    envs = chain_of(a, 3) + chain_of(b, 2, space="other")
    seed = write_old_relay(tmp_path, envs, Rejected("bad-signature", "an old refusal"))
    path = tmp_path / RELAY_DB / DB_NAME
    assert {"parts", "entities", "journals", "clients", "peers"} <= tables(path)
    assert (tmp_path / RELAY_DB / "changes").exists()

    store = RelayStore(tmp_path, enforce_membership=True)
    try:
        assert store.identity.seed == seed  # devices know the relay by this id
        assert store.version_vector(SPACE) == {a.id: 3}
        assert store.version_vector("other") == {b.id: 2}
        assert sorted(store.spaces()) == ["other", SPACE]
        got = store.missing_envelopes(SPACE, {}, 100, 1 << 24)
        assert [e.wire for e in got] == [e.wire for e in envs[:3]]
        old = store.rejections()
        assert [(r.source, r.reason, r.detail) for r in old] == [
            ("peer old", "bad-signature", "an old refusal")]
        # A space of the old relay is a name, bound to no genesis: nobody may read or write it
        # any more (its plaintext chains are kept, and served to no one).
        assert store.members(SPACE).log.genesis() is None
        assert not store.can_read(SPACE, a.public_key, now_ms())
        more = seal(a, SPACE, 4, envs[2].hash, 4 << 16, b"after the migration")
        with pytest.raises(Rejected, match="plaintext"):
            store.receive([more.wire], SPACE, False)
        # A fork is proven (it was refused before fork proofs): a's chain stops at seq 1.
        assert store.receive([seal(a, SPACE, 2, envs[0].hash, 9, b"fork").wire], SPACE, False) == (0, 0, 0)
        assert len(store.fork_proofs(SPACE)) == 1 and store.version_vector(SPACE) == {a.id: 1}
    finally:
        store.close()
    assert tables(path) == RELAY_TABLES
    assert not (tmp_path / RELAY_DB / "changes").exists()  # the device store's signal file
    db = sqlite3.connect(path)
    assert [r[0] for r in db.execute("SELECT version FROM schema_migrations")] == list(
        range(1, SCHEMA_VERSION + 1))
    db.close()


async def test_an_old_relay_data_directory_serves_devices_after_the_upgrade(tmp_path: Path) -> None:
    """Through the real command: the relay keeps its identity and its envelopes; its old
    plaintext spaces are served to no one, and new spaces to their members."""
    old_author = Identity.generate()
    seed = write_old_relay(tmp_path / "relay", chain_of(old_author, 4))
    admin, bob = Identity.generate(), Identity.generate()
    sp = SpaceMaker(admin)
    setup = [sp.open(), sp.grant(bob.public_key), sp.data(admin)]

    async with relay_process(tmp_path / "relay") as relay:  # enforcing: the default
        assert relay.device_id == Identity(seed).id
        old = EnvelopeHost(old_author, spaces=[SPACE])
        outcome = await exchange(old, relay.url)
        assert outcome.ok, outcome.closed
        assert old.got(SPACE) == []
        assert (await exchange(EnvelopeHost(admin, *setup), relay.url)).ok
        device = EnvelopeHost(bob, spaces=[sp.space])
        outcome = await exchange(device, relay.url)
        assert outcome.ok, outcome.closed
    assert [e.hash for e in device.got(sp.space)] == [e.hash for e in setup]


def test_a_newer_relay_schema_is_refused(tmp_path: Path) -> None:
    RelayStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / RELAY_DB / DB_NAME)
    db.execute("INSERT INTO schema_migrations VALUES(?, 'from the future', 0)", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreVersionError, match=f"version {SCHEMA_VERSION + 1}.*upgrade crdt-sync"):
        RelayStore(tmp_path)


async def test_the_relay_command_says_what_to_do_with_a_newer_schema(tmp_path: Path) -> None:
    RelayStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / RELAY_DB / DB_NAME)
    db.execute("INSERT INTO schema_migrations VALUES(?, 'from the future', 0)", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    code, _, err = await run_cli("relay", "--data", str(tmp_path), "--port", "0")
    assert code == 1, err
    assert "upgrade crdt-sync" in err and "Traceback" not in err


def test_a_device_data_directory_is_not_taken_for_a_relay_store(tmp_path: Path,
                                                                open_replica: ReplicaFactory) -> None:
    """Someone's device store where the relay's should be: refused, nothing dropped."""
    device = open_replica("relay/relay")  # DIR/relay/ is the device's data directory
    fill(device, "d", 2)
    device.close()
    before = tables(tmp_path / "relay" / RELAY_DB / DB_NAME)
    with pytest.raises(StoreError, match=r"holds a device's data.*data directory of its own"):
        RelayStore(tmp_path / "relay")
    assert tables(tmp_path / "relay" / RELAY_DB / DB_NAME) == before
    reopened = open_replica("relay/relay")
    assert reopened.space(SPACE).get("equipment", "d-1") == {"n": 1, "by": "d"}


def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / RELAY_DB).mkdir()
    db = sqlite3.connect(tmp_path / RELAY_DB / DB_NAME)
    db.execute("CREATE TABLE something(x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a crdt-sync relay store"):
        RelayStore(tmp_path)


def test_a_corrupt_database_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / RELAY_DB).mkdir()
    (tmp_path / RELAY_DB / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=DB_NAME):
        RelayStore(tmp_path)
