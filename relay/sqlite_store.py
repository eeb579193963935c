"""The relay's embedded storage: one SQLite file, ``DIR/relay/store.sqlite3`` (WAL, fsync on
every commit), with a versioned schema of its own.

Schema version 2 adds ``quarantine``, the table of
:class:`crdt_sync.quarantine.QuarantineTable`: one schema and one set of queries for devices
and relay (see crdt_sync.quarantine for its columns).

Schema version 1::

    schema_migrations(version PK, name, applied)   one row per migration applied
    meta(key PK, value)                            the relay's identity seed ("device_seed")
    spaces(space PK)                               every space the relay was given
    envelopes(id PK, space, author, seq, hash, hlc, wire, UNIQUE(space, author, seq))
    heads(space, author, seq, hash, PK(space, author))   each chain's last envelope
    rejections(id PK, at, source, reason, detail)

Schema version 2 adds::

    forks(id PK, space, author, seq, proof, source, at, UNIQUE(space, author, seq))
                                                   fork proofs (crdt_sync.fork_table)

Schema version 4 adds::

    membership(space, author, seq, PK(space, author, seq))
                                                   the envelopes that carry membership
                                                   records (payload kind 4): what the
                                                   relay's membership log of a space is
                                                   built from when the space is loaded

Schema version 5 adds::

    space_snapshots(space PK, author, hlc, hash, covered, wire, at)
                                                   the newest admin snapshot of each space
                                                   (docs/PROTOCOL.md, "Snapshots in sessions")

Migration 4 fills it from the envelopes already stored (a relay from before it holds
only plaintext spaces, whose envelopes it no longer serves to anyone: no genesis names a
reader of them).

Opening a file brings it to :data:`SCHEMA_VERSION` by running, in one transaction, every
migration past the version it records. A relay database written before the relay had a
schema of its own (the device store's layout, ``meta.format`` 1, with device-only tables
that the relay left empty) is migrated in place: its envelopes, heads, spaces, rejections and
identity are kept and the device-only tables dropped. A file with a newer schema, or one
that holds a device's data, is refused with :class:`~crdt_sync.errors.StoreVersionError` /
:class:`~crdt_sync.errors.StoreError` saying what to do.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from crdt_sync import fork_table
from crdt_sync.diskfaults import wal_mode
from crdt_sync.envelope_table import EnvelopeReads
from crdt_sync.errors import StoreError, StoreVersionError
from crdt_sync.fork_table import ForkReads
from crdt_sync.quarantine import QuarantineRecord, QuarantineTable, SetAside

from .backend import RejectionRecord, SnapshotRow, WriteBatch
from .members import is_membership_wire

DB_NAME = "store.sqlite3"
SCHEMA_VERSION = 5
#: Written as ``meta.format``, the key a device store (and a relay before schema versions)
#: reads its format from: far above any device format, so that an older crdt-sync relay
#: (or a device store) refuses this file ("upgrade crdt-sync") instead of writing into it.
FORMAT_GUARD = 1_000_000

_V1 = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spaces(space TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS envelopes(
    id INTEGER PRIMARY KEY, space TEXT NOT NULL, author TEXT NOT NULL, seq INTEGER NOT NULL,
    hash BLOB NOT NULL, hlc INTEGER NOT NULL, wire BLOB NOT NULL, UNIQUE(space, author, seq));
-- arrival order within a space: reading a batch is a range of it, not a sort of the space
CREATE INDEX IF NOT EXISTS envelopes_arrival ON envelopes(space, id);
CREATE TABLE IF NOT EXISTS heads(
    space TEXT NOT NULL, author TEXT NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY(space, author)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejections(
    id INTEGER PRIMARY KEY, at INTEGER NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL,
    detail TEXT NOT NULL)
"""

#: The device store's tables that a relay of the device layout created and never wrote.
_DEVICE_TABLES = ("parts", "entities", "fields", "conflicts", "clients", "journals", "journal_damage",
                  "peers", "peer_refusals", "clock_refusals", "chain_bases", "snapshots",
                  "snapshot_answers")


def _execute_all(db: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):  # executescript would commit the migration's transaction
        if statement.strip():
            db.execute(statement)


def _v1(db: sqlite3.Connection) -> None:
    _execute_all(db, _V1)


_V4 = """
CREATE TABLE IF NOT EXISTS membership(
    space TEXT NOT NULL, author TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY(space, author, seq)) WITHOUT ROWID
"""


def _v4(db: sqlite3.Connection) -> None:
    _execute_all(db, _V4)
    found = [(space, author, seq) for space, author, seq, wire in
             db.execute("SELECT space, author, seq, wire FROM envelopes")
             if is_membership_wire(bytes(wire))]
    db.executemany("INSERT OR IGNORE INTO membership(space, author, seq) VALUES(?, ?, ?)", found)


_V5 = """
CREATE TABLE IF NOT EXISTS space_snapshots(
    space TEXT PRIMARY KEY, author TEXT NOT NULL, hlc INTEGER NOT NULL, hash BLOB NOT NULL,
    covered BLOB NOT NULL, wire BLOB NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID
"""


def _v5(db: sqlite3.Connection) -> None:
    _execute_all(db, _V5)


#: ``(version, name, step)``: each step brings the schema from ``version - 1`` to ``version``.
MIGRATIONS: list[tuple[int, str, Callable[[sqlite3.Connection], None]]] = [
    (1, "relay schema: envelopes, heads, spaces, rejections", _v1),
    (2, "quarantine: authors set aside per space", QuarantineTable.create),
    (3, "fork proofs", fork_table.create),
    (4, "membership: the index of membership envelopes", _v4),
    (5, "snapshots: the newest admin snapshot per space", _v5),
]


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


class SqliteRelayBackend(EnvelopeReads, ForkReads):
    """A :class:`~crdt_sync.relay.backend.RelayBackend` on one SQLite connection.

    Args:
        directory: where ``store.sqlite3`` lives (created if missing).
        fsync: ``synchronous=FULL`` (every commit survives power loss; the relay's ACKs
            promise that) rather than ``OFF``.
    """

    def __init__(self, directory: Path, fsync: bool = True) -> None:
        self.directory = directory
        self.path = directory / DB_NAME
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0,
                                      check_same_thread=False)
            wal_mode(self.db)
            self.db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
            self.schema_version = self._open_schema()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the relay store {self.path}: {exc}") from exc

    # -- schema ----------------------------------------------------------------------------
    def _open_schema(self) -> int:
        db = self.db
        db.execute("BEGIN IMMEDIATE")  # one opener migrates; the others then see it done
        try:
            version = self._recorded_version()
            if version > SCHEMA_VERSION:
                raise StoreVersionError(
                    f"{self.path} has relay schema version {version}; this crdt-sync reads up to "
                    f"{SCHEMA_VERSION}: upgrade crdt-sync to open it")
            if version < SCHEMA_VERSION:
                db.execute("CREATE TABLE IF NOT EXISTS schema_migrations(version INTEGER PRIMARY KEY, "
                           "name TEXT NOT NULL, applied INTEGER NOT NULL)")
                for number, name, step in MIGRATIONS:
                    if number > version:
                        step(db)
                        db.execute("INSERT INTO schema_migrations VALUES(?, ?, ?)",
                                   (number, name, int(time.time())))
            guard = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            if guard is None or guard[0] != FORMAT_GUARD:
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('format', ?)",
                           (FORMAT_GUARD,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return SCHEMA_VERSION

    def _recorded_version(self) -> int:
        tables = _tables(self.db)
        if "schema_migrations" in tables:
            return int(self.db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                       .fetchone()[0])
        if not tables:
            return 0
        if {"meta", "envelopes", "heads", "spaces"} <= tables:
            self._migrate_device_layout(tables)
            return 1
        raise StoreError(f"{self.path} is not a crdt-sync relay store (tables: "
                         f"{', '.join(sorted(tables))}): give the relay a data directory of its own")

    def _migrate_device_layout(self, tables: set[str]) -> None:
        """A relay database from before the relay schema: the device store's layout. Keep
        what the relay wrote, drop the device-only tables; the result is schema version 1."""
        db = self.db
        for table in _DEVICE_TABLES:  # first: a device's store of any format is not a relay's
            if table in tables and db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():
                raise StoreError(
                    f"{self.path} holds a device's data (table {table} is not empty), not a "
                    f"relay's: give the relay a data directory of its own")
        row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        if row is None or int(row[0]) != 1:
            raise StoreVersionError(
                f"{self.path} has store format {None if row is None else row[0]!r}, which this "
                f"crdt-sync cannot migrate to a relay schema: upgrade crdt-sync to open it")
        for table in _DEVICE_TABLES:
            db.execute(f"DROP TABLE IF EXISTS {table}")
        db.execute("CREATE TABLE spaces_v1(space TEXT PRIMARY KEY) WITHOUT ROWID")
        db.execute("INSERT INTO spaces_v1 SELECT space FROM spaces")
        db.execute("DROP TABLE spaces")
        db.execute("ALTER TABLE spaces_v1 RENAME TO spaces")
        _execute_all(db, _V1)  # what the device layout may lack (the arrival index)
        # The heads are derived data: rebuilt from the envelopes, whatever the old file held.
        db.execute("DELETE FROM heads")
        db.execute("INSERT INTO heads SELECT e.space, e.author, e.seq, e.hash FROM envelopes e "
                   "JOIN (SELECT space, author, MAX(seq) AS top FROM envelopes GROUP BY space, "
                   "author) t ON e.space=t.space AND e.author=t.author AND e.seq=t.top")
        db.execute("CREATE TABLE schema_migrations(version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                   "applied INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_migrations VALUES(1, ?, ?)",
                   ("relay schema, migrated from the device store's layout", int(time.time())))
        (self.directory / "changes").unlink(missing_ok=True)  # the device store's signal file

    # -- identity --------------------------------------------------------------------------
    def identity_seed(self, generate: bytes) -> bytes:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT value FROM meta WHERE key='device_seed'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta(key, value) VALUES('device_seed', ?)", (generate,))
                seed = generate
            else:
                seed = bytes(row[0])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return seed

    # -- reads -----------------------------------------------------------------------------
    def heads(self, space: str) -> dict[str, tuple[int, bytes]]:
        return {a: (int(s), bytes(h)) for a, s, h in self.db.execute(
            "SELECT author, seq, hash FROM heads WHERE space=?", (space,))}

    def spaces(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT space FROM spaces ORDER BY space")]

    def rejections(self, limit: int = 100) -> list[RejectionRecord]:
        return [RejectionRecord(int(at), src, reason, detail) for at, src, reason, detail in
                self.db.execute("SELECT at, source, reason, detail FROM rejections "
                                "ORDER BY id DESC LIMIT ?", (limit,))]

    def quarantined(self, space: str) -> dict[str, SetAside]:
        return QuarantineTable(self.db).authors(space)

    def membership_envelopes(self, space: str) -> list[bytes]:
        return [bytes(w) for (w,) in self.db.execute(
            "SELECT e.wire FROM membership m JOIN envelopes e ON e.space=m.space AND e.author=m.author "
            "AND e.seq=m.seq WHERE m.space=? ORDER BY e.id", (space,))]

    def snapshot(self, space: str, wire: bool = True) -> SnapshotRow | None:
        record = "wire" if wire else "x''"  # (an empty blob: the record is up to 64 MiB)
        row = self.db.execute(f"SELECT space, author, hlc, hash, covered, {record}, at FROM space_snapshots "
                              "WHERE space=?", (space,)).fetchone()
        return None if row is None else SnapshotRow(row[0], row[1], int(row[2]), bytes(row[3]),
                                                    bytes(row[4]), bytes(row[5]), int(row[6]))

    def quarantine(self, space: str, author: str) -> QuarantineRecord | None:
        return QuarantineTable(self.db).get(space, author)

    def quarantines(self, space: str | None = None) -> list[QuarantineRecord]:
        return QuarantineTable(self.db).records(space)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob(DB_NAME + "*"))

    def healthy(self) -> bool:
        try:
            self.db.execute("SELECT 1 FROM meta LIMIT 1").fetchone()
        except Exception:  # any failure means storage is not reachable
            return False
        return True

    # -- writes ----------------------------------------------------------------------------
    def stage(self, batch: WriteBatch) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = batch.envelopes
            if rows:
                # One statement per table for the whole batch rather than executemany.
                for chunk in _chunks(rows):
                    db.execute(_values_sql(_INSERT_ENVELOPES, 6, len(chunk), ""),
                               [v for row in chunk for v in row])
                heads: dict[tuple[str, str], tuple[int, bytes]] = {}
                for space, author, seq, h, _, _ in rows:
                    heads[(space, author)] = (seq, h)  # rows of a chain come in order
                items = [(s, a, q, h) for (s, a), (q, h) in heads.items()]
                for chunk in _chunks(items):
                    db.execute(_values_sql(_INSERT_HEADS, 4, len(chunk), _UPSERT_HEADS),
                               [v for row in chunk for v in row])
            if batch.membership:
                db.executemany("INSERT OR IGNORE INTO membership(space, author, seq) VALUES(?, ?, ?)",
                               batch.membership)
            if batch.spaces:
                db.executemany("INSERT OR IGNORE INTO spaces(space) VALUES(?)",
                               [(s,) for s in batch.spaces])
            if batch.rejections:
                db.executemany("INSERT INTO rejections(at, source, reason, detail) VALUES(?,?,?,?)",
                               batch.rejections)
            for fork in batch.forks:
                if fork_table.insert_fork(db, fork):
                    fork_table.drop_branch(db, fork.space, fork.author, fork.seq)
                    db.execute("DELETE FROM membership WHERE space=? AND author=? AND seq>=?",
                               (fork.space, fork.author, fork.seq))
            table = QuarantineTable(db)
            for record in batch.quarantines:
                table.insert(record)
            for space, author in batch.lifts:
                table.delete(space, author)
            db.executemany(_KEEP_SNAPSHOT, batch.snapshots)
        except BaseException:
            self.rollback()
            raise

    def commit(self) -> None:
        try:
            self.db.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def close(self) -> None:
        self.db.close()


_INSERT_ENVELOPES = "INSERT INTO envelopes(space, author, seq, hash, hlc, wire) VALUES"
_KEEP_SNAPSHOT = ("INSERT INTO space_snapshots(space, author, hlc, hash, covered, wire, at) "
                  "VALUES(?,?,?,?,?,?,?) "
                  "ON CONFLICT(space) DO UPDATE SET author=excluded.author, hlc=excluded.hlc, "
                  "hash=excluded.hash, covered=excluded.covered, wire=excluded.wire, at=excluded.at "
                  "WHERE excluded.hlc >= hlc")
_INSERT_HEADS = "INSERT INTO heads(space, author, seq, hash) VALUES"
_UPSERT_HEADS = (" ON CONFLICT DO UPDATE SET seq=excluded.seq, hash=excluded.hash "
                 "WHERE excluded.seq > seq")
#: Rows per statement: well under SQLite's 32,766 parameters.
_CHUNK = 512


def _chunks(rows: list[Any]) -> list[list[Any]]:
    return [rows[i:i + _CHUNK] for i in range(0, len(rows), _CHUNK)]


@lru_cache(maxsize=64)
def _values_sql(head: str, width: int, count: int, tail: str) -> str:
    row = "(" + ",".join("?" * width) + ")"
    return head + ",".join([row] * count) + tail


__all__ = ["DB_NAME", "FORMAT_GUARD", "MIGRATIONS", "SCHEMA_VERSION", "SqliteRelayBackend"]
