"""SQLite storage of one data directory (stdlib sqlite3, WAL).

Every method that writes expects to run inside :meth:`Store.write` (``BEGIN IMMEDIATE``),
which serialises writers across processes: that is what keeps two processes of one device
from allocating the same envelope seq (a fork of the device's own chain).
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cbor2

from . import chain, fork_table, snapshot_table
from .chain import Outcome
from .diskfaults import disk_full, is_full, store_error, wal_mode
from .envelope import Envelope
from .envelope_table import EnvelopeReads
from .errors import Rejected, StoreError, StoreVersionError
from .fork_table import ForkReads
from .quarantine import QuarantineTable
from .snapshot_table import SnapshotReads

STORE_FORMAT = 3
#: Formats before 3 named spaces by plain names; a store of one that holds data is migrated
#: by ``crdt-sync migrate DIR`` (:mod:`crdt_sync.migrate`), never in place.
FIRST_ID_FORMAT = 3
DB_NAME = "store.sqlite3"
SIGNAL_NAME = "changes"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spaces(space TEXT PRIMARY KEY, joined INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS envelopes(
    id INTEGER PRIMARY KEY, space TEXT NOT NULL, author TEXT NOT NULL, seq INTEGER NOT NULL,
    hash BLOB NOT NULL, hlc INTEGER NOT NULL, wire BLOB NOT NULL, UNIQUE(space, author, seq));
-- arrival order within a space: without it, reading a batch sorted the whole space (blobs too)
CREATE INDEX IF NOT EXISTS envelopes_arrival ON envelopes(space, id);
CREATE TABLE IF NOT EXISTS heads(
    space TEXT NOT NULL, author TEXT NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY(space, author)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parts(
    id INTEGER PRIMARY KEY, space TEXT NOT NULL, collection TEXT NOT NULL, entity TEXT NOT NULL,
    author TEXT NOT NULL, client INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS parts_entity ON parts(space, collection, entity, id);
CREATE TABLE IF NOT EXISTS entities(
    space TEXT NOT NULL, collection TEXT NOT NULL, entity TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, snapshot BLOB, upto INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(space, collection, entity)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fields(
    space TEXT NOT NULL, collection TEXT NOT NULL, entity TEXT NOT NULL, field TEXT NOT NULL,
    value BLOB NOT NULL, PRIMARY KEY(space, collection, entity, field)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS fields_value ON fields(space, collection, field, value);
CREATE TABLE IF NOT EXISTS conflicts(
    space TEXT NOT NULL, collection TEXT NOT NULL, entity TEXT NOT NULL, field TEXT NOT NULL,
    detail BLOB NOT NULL, PRIMARY KEY(space, collection, entity, field)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejections(
    id INTEGER PRIMARY KEY, at INTEGER NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL,
    detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clients(client INTEGER PRIMARY KEY, pid INTEGER, opened INTEGER);
-- folded: bytes of the journal file sealed (the end of its last sealed record)
CREATE TABLE IF NOT EXISTS journals(name TEXT PRIMARY KEY, folded INTEGER NOT NULL) WITHOUT ROWID;
-- damaged runs found in dead processes' journals by recovery, and where each file was kept
CREATE TABLE IF NOT EXISTS journal_damage(
    id INTEGER PRIMARY KEY, at INTEGER NOT NULL, journal TEXT NOT NULL, kept TEXT NOT NULL,
    offset INTEGER NOT NULL, bytes INTEGER NOT NULL, records INTEGER NOT NULL,
    tail INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS peers(
    peer TEXT NOT NULL, space TEXT NOT NULL, vv BLOB NOT NULL, seen INTEGER NOT NULL,
    PRIMARY KEY(peer, space)) WITHOUT ROWID;
"""

#: Added within format 1: created on open when missing (a store made before it lacks it).
#: What peers said they hold back (CLOCK_SKEW): one row per peer, space and author.
_CLOCK_REFUSALS = """CREATE TABLE IF NOT EXISTS clock_refusals(
    peer TEXT NOT NULL, space TEXT NOT NULL, author TEXT NOT NULL, seq INTEGER NOT NULL,
    ahead_ms INTEGER NOT NULL, at INTEGER NOT NULL, PRIMARY KEY(peer, space, author)) WITHOUT ROWID"""

EntityKey = tuple[str, str, str]

#: The collection of the space's own entities (the label): not listed with the user's data.
SPACE_COLLECTION = "_space"

#: Format 3: spaces are ids (docs/DESIGN.md, "Store format 3"): their local names, and which
#: stored envelopes carry membership records (each space's log is rebuilt from them).
_SPACES_V3 = (
    "CREATE TABLE IF NOT EXISTS space_names(space TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS space_names_name ON space_names(name)",
    "CREATE TABLE IF NOT EXISTS membership(space TEXT NOT NULL, author TEXT NOT NULL, seq INTEGER "
    "NOT NULL, PRIMARY KEY(space, author, seq)) WITHOUT ROWID",
    # stored envelopes not applied yet: encrypted under an epoch whose key had not arrived
    "CREATE TABLE IF NOT EXISTS held(space TEXT NOT NULL, author TEXT NOT NULL, seq INTEGER "
    "NOT NULL, PRIMARY KEY(space, author, seq)) WITHOUT ROWID",
)


def _create_v3(db: sqlite3.Connection) -> None:
    for statement in _SPACES_V3:
        db.execute(statement)

#: Format ``n`` (above 1, which is ``_SCHEMA``) is reached from ``n - 1`` by ``_MIGRATIONS[n]``.
_MIGRATIONS = {2: fork_table.create, 3: _create_v3}  # 2: fork proofs; 3: space ids


class Store(EnvelopeReads, ForkReads, SnapshotReads):
    """The SQLite side of a :class:`~crdt_sync.Replica`."""

    def __init__(self, directory: Path, fsync: bool = False, read_only: bool = False) -> None:
        self.path = directory / DB_NAME
        #: opened for reading only (a full disk): :meth:`write` refuses
        self.read_only = read_only
        # A shared 8-byte counter that every commit changes: checking it costs a memory
        # read, where PRAGMA data_version costs a SQLite call on every transaction.
        try:
            fd = os.open(directory / SIGNAL_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if os.fstat(fd).st_size < 8:
                    os.ftruncate(fd, 8)
                self._signal_map = mmap.mmap(fd, 8)
            finally:
                os.close(fd)
        except OSError as exc:
            if is_full(exc, directory):
                raise disk_full(directory / SIGNAL_NAME, "opening the data directory") from exc
            raise
        #: the counter, mapped (``signal[0]``, a native u64: only processes on this machine
        #: share it); ``seen`` is its value when this process last looked. Compared once
        #: per transaction, by indexing: see :meth:`changed_elsewhere`.
        self.signal = memoryview(self._signal_map).cast("Q")
        self.seen: int = self.signal[0]
        try:
            if read_only:
                self.db = self._connect_read_only()
                version = self._meta("format")
                if version is not None and int(version) > STORE_FORMAT:
                    raise StoreVersionError(
                        f"{self.path} has store format {int(version)}; this crdt-sync reads "
                        f"up to {STORE_FORMAT}: upgrade crdt-sync to open it")
                if version is not None and int(version) < FIRST_ID_FORMAT:
                    self._refuse_old(int(version))
                return
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0,
                                      check_same_thread=False)
            wal_mode(self.db)
            # A commit reaches the OS before it returns with synchronous=OFF, which is what
            # surviving kill -9 needs; FULL adds the fsync that surviving power loss needs.
            self.db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
            with self.write():
                version = self._meta("format")
                if version is not None and int(version) > STORE_FORMAT:
                    raise StoreVersionError(
                        f"{self.path} has store format {int(version)}; this crdt-sync reads "
                        f"up to {STORE_FORMAT}: upgrade crdt-sync to open it")
                if version is not None and int(version) < FIRST_ID_FORMAT:
                    self._refuse_old(int(version))
                # every open: tables added within format 1 appear in older stores too
                for statement in _SCHEMA.split(";"):  # executescript would commit
                    if statement.strip():
                        self.db.execute(statement)
                # Added within format 1 too: crdt_sync.quarantine owns these.
                QuarantineTable.create(self.db)
                snapshot_table.create(self.db)  # (and snapshots: crdt_sync.snapshot_table)
                QuarantineTable.create_refusals(self.db)
                self.db.execute(_CLOCK_REFUSALS)
                # Formats above 1: each migration once, in order (a new store runs them all).
                for number in range(int(version or 1) + 1, STORE_FORMAT + 1):
                    _MIGRATIONS[number](self.db)
                    self.set_meta("format", number)
                if version is None:
                    self.set_meta("format", STORE_FORMAT)
        except sqlite3.Error as exc:
            raise store_error(exc, self.path, "opening the store") from exc

    def _refuse_old(self, version: int) -> None:
        """A store of format 1 or 2 named spaces by plain names: one that holds data is
        migrated by a command (its spaces get ids bound to this device's key); an empty
        one is simply brought up to date."""
        try:
            held = self.db.execute("SELECT 1 FROM envelopes LIMIT 1").fetchone() is not None
        except sqlite3.OperationalError:
            held = False
        if held:
            directory = self.path.parent
            raise StoreVersionError(
                f"{self.path} has store format {version}, from before spaces were bound to keys; "
                f"this crdt-sync reads format {STORE_FORMAT}: run `crdt-sync migrate {directory}` "
                "to migrate it (the old store is kept as a backup)")
        if self.read_only:
            for statement in _SPACES_V3:  # (empty: nothing to read, and nothing may be written)
                if "CREATE TABLE" in statement:
                    self.db.execute(statement.replace("CREATE TABLE", "CREATE TEMP TABLE"))
            if version < 2:
                self.db.execute(fork_table.SCHEMA.replace("TABLE IF NOT EXISTS forks",
                                                          "TEMP TABLE IF NOT EXISTS forks"))

    def _connect_read_only(self) -> sqlite3.Connection:
        """A connection that writes nothing. On a full disk SQLite cannot create the WAL's
        shared-memory file; when the WAL holds nothing, the database file alone is the
        store and is read as immutable, else reading needs that room first."""
        uri = f"file:{quote(str(self.path))}?mode=ro"
        db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0,
                             check_same_thread=False)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError as exc:
            db.close()
            if not is_full(exc, self.path):
                raise
            wal = Path(f"{self.path}-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise disk_full(self.path, "reading the store's write-ahead log "
                                           "(SQLite needs a 32 KiB shared-memory file)") from exc
        return sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None,
                               check_same_thread=False)

    # -- transactions ------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction (nestable: inner ones join the outer).

        Raises:
            DiskFull: no room to write (the transaction was rolled back).
            StoreCorrupt: the file is damaged.
            StoreError: the store is open read-only, or another SQLite failure.
        """
        if self.db.in_transaction:
            yield
            return
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only (the disk was full): nothing "
                             "can be written")
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise store_error(exc, self.path, "a write to the store") from exc
        before = self.db.total_changes
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException as exc:
            # SQLite may have rolled back already (a full disk does): a ROLLBACK then fails
            # with "no transaction is active" and would hide the real cause
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise store_error(exc, self.path, "a write to the store") from exc
            raise
        if self.db.total_changes != before:
            self._bump()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part of the open write transaction that is undone alone if it raises (one
        received envelope: applied fully or not at all)."""
        self.db.execute("SAVEPOINT part")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK TO part")
            self.db.execute("RELEASE part")
            raise
        self.db.execute("RELEASE part")

    def _bump(self) -> None:
        # Readers only compare for inequality, so a lost race between two writers is
        # harmless; if someone else bumped since we last looked, keep our stale view so
        # the next check still refreshes for their commit.
        current = self.signal[0]
        new = (current + 1) % 2**64
        self.signal[0] = new
        if current == self.seen:
            self.seen = new

    def changed_elsewhere(self) -> bool:
        """True once after another process (or connection) committed since the last call."""
        now: int = self.signal[0]
        if now == self.seen:
            return False
        self.seen = now
        return True

    def close(self) -> None:
        self.db.close()
        self.signal.release()
        self._signal_map.close()

    # -- meta ------------------------------------------------------------------------------
    def _meta(self, key: str) -> Any:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        except sqlite3.OperationalError:  # a new file: no tables yet
            return None
        return None if row is None else row[0]

    def meta(self, key: str) -> Any:
        return self._meta(key)

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    def delete_meta(self, key: str) -> None:
        self.db.execute("DELETE FROM meta WHERE key=?", (key,))

    def allocate_client(self, candidate: int, pid: int) -> bool:
        cur = self.db.execute("INSERT OR IGNORE INTO clients(client, pid, opened) VALUES(?,?,?)",
                              (candidate, pid, int(time.time())))
        return cur.rowcount == 1

    # -- spaces ----------------------------------------------------------------------------
    def join(self, space: str, joined: bool = True) -> None:
        self.db.execute("INSERT INTO spaces(space, joined) VALUES(?, ?) ON CONFLICT(space) "
                        "DO UPDATE SET joined=excluded.joined", (space, int(joined)))

    def spaces(self, joined_only: bool = True) -> list[str]:
        sql = "SELECT space FROM spaces" + (" WHERE joined=1" if joined_only else "")
        return [r[0] for r in self.db.execute(sql + " ORDER BY space")]

    def space_name(self, space: str) -> str | None:
        row = self.db.execute("SELECT name FROM space_names WHERE space=?", (space,)).fetchone()
        return None if row is None else str(row[0])

    def set_space_name(self, space: str, name: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO space_names(space, name) VALUES(?, ?)", (space, name))

    def spaces_named(self, name: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT space FROM space_names WHERE name=? ORDER BY space",
                                              (name,))]

    def knows_space(self, space: str) -> bool:
        return self.db.execute("SELECT 1 FROM spaces WHERE space=?", (space,)).fetchone() is not None

    def record_membership(self, env: Envelope) -> None:
        """``env`` (stored) carries membership records: its space's log is built from these."""
        self.db.execute("INSERT OR IGNORE INTO membership(space, author, seq) VALUES(?,?,?)",
                        (env.space, env.author, env.seq))

    def membership_wires(self, space: str) -> list[bytes]:
        """The stored membership envelopes of ``space``, in arrival order."""
        return [bytes(w) for (w,) in self.db.execute(
            "SELECT e.wire FROM membership m JOIN envelopes e ON e.space=m.space AND "
            "e.author=m.author AND e.seq=m.seq WHERE m.space=? ORDER BY e.id", (space,))]

    def hold(self, env: Envelope) -> None:
        """``env`` is stored but not applied: this device holds no key for its epoch yet."""
        self.db.execute("INSERT OR IGNORE INTO held(space, author, seq) VALUES(?,?,?)",
                        (env.space, env.author, env.seq))

    def held_wires(self, space: str) -> list[bytes]:
        """The stored envelopes of ``space`` held back for their keys, in arrival order."""
        return [bytes(w) for (w,) in self.db.execute(
            "SELECT e.wire FROM held h JOIN envelopes e ON e.space=h.space AND e.author=h.author "
            "AND e.seq=h.seq WHERE h.space=? ORDER BY e.id", (space,))]

    def release(self, env: Envelope) -> None:
        self.db.execute("DELETE FROM held WHERE space=? AND author=? AND seq=?",
                        (env.space, env.author, env.seq))

    def is_joined(self, space: str) -> bool:
        row = self.db.execute("SELECT joined FROM spaces WHERE space=?", (space,)).fetchone()
        return bool(row and row[0])

    # -- envelopes -------------------------------------------------------------------------
    def check_chain(self, env: Envelope, tolerate_gaps: bool = False) -> Outcome:
        """Where a verified envelope fits in its author's chain here (:func:`crdt_sync.chain.check`).

        Returns :attr:`Outcome.NEW`, :attr:`Outcome.DUPLICATE` or (when ``tolerate_gaps``)
        :attr:`Outcome.GAP` (its predecessor has not arrived); each equals the string
        ``"new"``, ``"duplicate"``, ``"gap"``. Raises :class:`Rejected` on a fork (another
        envelope with this author and seq) or a broken chain (``prev_hash`` is not the
        predecessor's hash, or a gap when gaps are not tolerated).
        """
        return chain.check(env, self, tolerate_gaps).accept()

    def insert_envelope(self, env: Envelope) -> int:
        cur = self.db.execute(
            "INSERT INTO envelopes(space, author, seq, hash, hlc, wire) VALUES(?,?,?,?,?,?)",
            (env.space, env.author, env.seq, env.hash, env.hlc, env.wire))
        # Chains only grow by their next seq (check_chain), so this row is the head: version
        # vectors cost one row per author instead of a scan of the space's envelopes.
        self.db.execute("INSERT INTO heads(space, author, seq, hash) VALUES(?,?,?,?) ON CONFLICT "
                        "DO UPDATE SET seq=excluded.seq, hash=excluded.hash WHERE excluded.seq > seq",
                        (env.space, env.author, env.seq, env.hash))
        return int(cur.lastrowid or 0)

    def envelopes_since(self, space: str, vv: dict[str, int]) -> list[bytes]:
        """Wire forms of the envelopes of ``space`` not covered by ``vv``, in causal order."""
        rows = self.db.execute("SELECT author, seq, wire FROM envelopes WHERE space=? ORDER BY id",
                               (space,))
        return [bytes(w) for a, s, w in rows if s > vv.get(a, 0)]

    def max_hlc(self) -> int:
        row = self.db.execute("SELECT MAX(hlc) FROM envelopes").fetchone()
        return int(row[0] or 0)

    # -- parts (per-entity Yjs updates) ----------------------------------------------------
    def insert_part(self, key: EntityKey, author: str, client: int, data: bytes) -> int:
        cur = self.db.execute(
            "INSERT INTO parts(space, collection, entity, author, client, data) VALUES(?,?,?,?,?,?)",
            (*key, author, client, data))
        return int(cur.lastrowid or 0)

    def parts_after(self, cursor: int) -> list[tuple[int, EntityKey, int, bytes]]:
        rows = self.db.execute("SELECT id, space, collection, entity, client, data FROM parts "
                               "WHERE id > ? ORDER BY id", (cursor,))
        return [(int(i), (s, c, e), int(cl), bytes(d)) for i, s, c, e, cl, d in rows]

    def max_part(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM parts").fetchone()[0])

    def load_entity(self, key: EntityKey) -> tuple[bytes | None, list[bytes]]:
        row = self.db.execute("SELECT snapshot, upto FROM entities WHERE space=? AND collection=? "
                              "AND entity=?", key).fetchone()
        snapshot, upto = (None, 0) if row is None else (row[0], row[1])
        parts = [bytes(d) for (d,) in self.db.execute(
            "SELECT data FROM parts WHERE space=? AND collection=? AND entity=? AND id>? ORDER BY id",
            (*key, upto))]
        return (None if snapshot is None else bytes(snapshot)), parts

    def entity_parts(self, key: EntityKey) -> list[tuple[str, bytes]]:
        return [(a, bytes(d)) for a, d in self.db.execute(
            "SELECT author, data FROM parts WHERE space=? AND collection=? AND entity=? ORDER BY id",
            key)]

    def parts_since_snapshot(self, key: EntityKey) -> tuple[int, int, int]:
        """``(count, bytes, last id)`` of ``key``'s parts after its snapshot."""
        row = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(p.data)), 0), COALESCE(MAX(p.id), 0) FROM parts p "
            "WHERE p.space=? AND "
            "p.collection=? AND p.entity=? AND p.id > COALESCE((SELECT upto FROM entities WHERE "
            "space=? AND collection=? AND entity=?), 0)", (*key, *key)).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def drop_part(self, key: EntityKey, author: str, data: bytes) -> None:
        """Remove the latest part of ``author`` in ``key`` holding exactly ``data`` (a fork's
        envelope is excluded: :mod:`crdt_sync.fork_guard`)."""
        self.db.execute("DELETE FROM parts WHERE id=(SELECT id FROM parts WHERE space=? AND "
                        "collection=? AND entity=? AND author=? AND data=? ORDER BY id DESC LIMIT 1)",
                        (*key, author, data))

    def drop_snapshot(self, key: EntityKey) -> None:
        """Forget ``key``'s snapshot: it loads from its parts alone (after :meth:`drop_part`)."""
        self.db.execute("UPDATE entities SET snapshot=NULL, upto=0 WHERE space=? AND collection=? "
                        "AND entity=?", key)

    def forget_if_empty(self, key: EntityKey) -> bool:
        """Forget ``key`` (index, conflicts) when no part of it is left; whether it was."""
        if self.db.execute("SELECT 1 FROM parts WHERE space=? AND collection=? AND entity=? LIMIT 1",
                           key).fetchone():
            return False
        for table in ("entities", "fields", "conflicts"):
            self.db.execute(f"DELETE FROM {table} WHERE space=? AND collection=? AND entity=?", key)
        return True

    def save_snapshot(self, key: EntityKey, snapshot: bytes, upto: int) -> None:
        self.db.execute("UPDATE entities SET snapshot=?, upto=? WHERE space=? AND collection=? "
                        "AND entity=? AND upto < ?", (snapshot, upto, *key, upto))

    # -- the query index -------------------------------------------------------------------
    def index_entity(self, key: EntityKey, deleted: bool, fields: Iterable[tuple[str, bytes]],
                     conflicts: Iterable[tuple[str, bytes]]) -> None:
        self.db.execute("INSERT INTO entities(space, collection, entity, deleted) VALUES(?,?,?,?) "
                        "ON CONFLICT DO UPDATE SET deleted=excluded.deleted", (*key, int(deleted)))
        self.db.execute("DELETE FROM fields WHERE space=? AND collection=? AND entity=?", key)
        if rows := [(*key, f, v) for f, v in fields]:
            self.db.executemany("INSERT INTO fields VALUES(?,?,?,?,?)", rows)
        self.db.execute("DELETE FROM conflicts WHERE space=? AND collection=? AND entity=?", key)
        if rows := [(*key, f, d) for f, d in conflicts]:  # (most entities have none)
            self.db.executemany("INSERT INTO conflicts VALUES(?,?,?,?,?)", rows)

    def entity_state(self, key: EntityKey) -> bool | None:
        """None when unknown, else whether it is deleted."""
        row = self.db.execute("SELECT deleted FROM entities WHERE space=? AND collection=? AND "
                              "entity=?", key).fetchone()
        return None if row is None else bool(row[0])

    def list_entities(self, space: str, collection: str | None) -> list[tuple[str, str]]:
        sql = "SELECT collection, entity FROM entities WHERE space=? AND deleted=0 AND collection!=?"
        args: tuple[str, ...] = (space, SPACE_COLLECTION)
        if collection is not None:
            sql += " AND collection=?"
            args += (collection,)
        return [(c, e) for c, e in self.db.execute(sql + " ORDER BY collection, entity", args)]

    def iter_entities(self, space: str, collection: str | None,
                      page: int = 500) -> Iterator[tuple[str, str]]:
        """:meth:`list_entities` a page at a time (keyset paging: no cursor stays open across
        the caller's work, and memory stays flat in the size of the space)."""
        after = ("", "")
        while True:
            sql = ("SELECT collection, entity FROM entities WHERE space=? AND deleted=0 AND "
                   "collection!=? AND (collection, entity) > (?, ?)")
            args: tuple[Any, ...] = (space, SPACE_COLLECTION, *after)
            if collection is not None:
                sql += " AND collection=?"
                args += (collection,)
            rows = self.db.execute(sql + " ORDER BY collection, entity LIMIT ?", (*args, page)).fetchall()
            yield from ((str(c), str(e)) for c, e in rows)
            if len(rows) < page:
                return
            after = rows[-1]

    def find(self, space: str, collection: str, where: dict[str, bytes]) -> list[str]:
        if not where:
            return [e for _, e in self.list_entities(space, collection)]
        # Driven by the fields_value index on the first condition, not by a scan of the
        # collection with one subquery per entity.
        (first, first_value), *rest = where.items()
        sql = ("SELECT e.entity FROM fields f JOIN entities e ON e.space=f.space AND "
               "e.collection=f.collection AND e.entity=f.entity WHERE f.space=? AND "
               "f.collection=? AND f.field=? AND f.value=? AND e.deleted=0")
        args: list[Any] = [space, collection, first, first_value]
        for field, value in rest:
            sql += (" AND EXISTS (SELECT 1 FROM fields f WHERE f.space=e.space AND "
                    "f.collection=e.collection AND f.entity=e.entity AND f.field=? AND f.value=?)")
            args += [field, value]
        return [r[0] for r in self.db.execute(sql + " ORDER BY e.entity", args)]

    def conflicts(self, space: str) -> list[tuple[str, str, str, bytes]]:
        return [(c, e, f, bytes(d)) for c, e, f, d in self.db.execute(
            "SELECT collection, entity, field, detail FROM conflicts WHERE space=? AND collection!=? "
            "ORDER BY collection, entity, field", (space, SPACE_COLLECTION))]

    # -- journals --------------------------------------------------------------------------
    def journal_folded(self, name: str) -> int:
        row = self.db.execute("SELECT folded FROM journals WHERE name=?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def set_journal_folded(self, name: str, folded: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO journals(name, folded) VALUES(?, ?)", (name, folded))

    def forget_journal(self, name: str) -> None:
        self.db.execute("DELETE FROM journals WHERE name=?", (name,))

    def record_journal_damage(self, journal: str, kept: str, offset: int, length: int,
                              records: int, tail: bool) -> None:
        self.db.execute("INSERT INTO journal_damage(at, journal, kept, offset, bytes, records, tail)"
                        " VALUES(?,?,?,?,?,?,?)", (time.time_ns() // 1_000_000, journal, kept,
                                                   offset, length, records, int(tail)))

    def journal_kept(self, journal: str) -> str | None:
        """Where a damaged journal was (or is to be) kept aside, if damage was recorded."""
        row = self.db.execute("SELECT kept FROM journal_damage WHERE journal=? LIMIT 1",
                              (journal,)).fetchone()
        return None if row is None else str(row[0])

    def journal_damage(self, limit: int = 100) -> list[tuple[int, str, str, int, int, int, bool]]:
        """``(at ms, journal, kept, offset, bytes, records, tail)``, newest first."""
        return [(int(at), j, k, int(o), int(b), int(r), bool(t)) for at, j, k, o, b, r, t in
                self.db.execute("SELECT at, journal, kept, offset, bytes, records, tail FROM "
                                "journal_damage ORDER BY id DESC LIMIT ?", (limit,))]

    # -- peers and rejections --------------------------------------------------------------
    def record_peer(self, peer: str, space: str, vv: dict[str, int]) -> None:
        old = self.peer_vv(peer, space)
        merged = {a: max(s, old.get(a, 0)) for a, s in vv.items()} | {
            a: s for a, s in old.items() if a not in vv}
        self.db.execute("INSERT OR REPLACE INTO peers VALUES(?,?,?,?)",
                        (peer, space, cbor2.dumps(merged), time.time_ns() // 1_000_000))

    def peer_vv(self, peer: str, space: str) -> dict[str, int]:
        row = self.db.execute("SELECT vv FROM peers WHERE peer=? AND space=?", (peer, space)).fetchone()
        return {} if row is None else dict(cbor2.loads(row[0]))

    def peers(self, space: str) -> list[tuple[str, dict[str, int], int]]:
        return [(p, dict(cbor2.loads(v)), int(t)) for p, v, t in self.db.execute(
            "SELECT peer, vv, seen FROM peers WHERE space=? ORDER BY peer", (space,))]

    def record_clock_refusal(self, peer: str, space: str, author: str, seq: int, ahead_ms: int) -> None:
        """``peer`` holds back ``author``'s envelopes of ``space`` from ``seq`` (one row per
        peer, space and author: the latest notice)."""
        self.db.execute("INSERT OR REPLACE INTO clock_refusals VALUES(?,?,?,?,?,?)",
                        (peer, space, author, seq, min(ahead_ms, 2**63 - 1), time.time_ns() // 1_000_000))

    def clock_refusals(self) -> list[tuple[str, str, str, int, int, int]]:
        """``(peer, space, author, seq, ahead_ms, at_ms)`` of every recorded notice."""
        return [tuple(r) for r in self.db.execute(  # type: ignore[misc]
            "SELECT peer, space, author, seq, ahead_ms, at FROM clock_refusals ORDER BY space, peer, author")]

    def record_rejection(self, source: str, rejected: Rejected) -> None:
        with self.write():
            self.db.execute("INSERT INTO rejections(at, source, reason, detail) VALUES(?,?,?,?)",
                            (int(time.time()), source, rejected.reason, rejected.detail))

    def rejections(self, limit: int = 100) -> list[tuple[int, str, str, str]]:
        return [tuple(r) for r in self.db.execute(  # type: ignore[misc]
            "SELECT at, source, reason, detail FROM rejections ORDER BY id DESC LIMIT ?", (limit,))]
