"""The relay's storage in Postgres: :class:`PostgresRelayBackend`, a
:class:`~crdt_sync.relay.backend.RelayBackend` with the same semantics as the SQLite one
(:mod:`crdt_sync.relay.sqlite_store`), for relays whose storage is a server (several relay
nodes, next).

Each backend object keeps a small pool of connections (psycopg 3, ``psycopg_pool``), in
autocommit: every read sees what is committed when it runs, nothing staged. The relay opens
two (the writer's and the reader's), as it does SQLite connections.

Writes cost round trips, so :meth:`~PostgresRelayBackend.stage` only keeps the batch, and
:meth:`~PostgresRelayBackend.commit`, which the relay runs in its writer thread, writes it
in one transaction and commits it with ``synchronous_commit=on``: when ``commit`` returns,
the server has flushed the batch to its write-ahead log (and, with synchronous standbys
configured, they have it too). A batch that fails leaves nothing.

The schema and its migrations are in :mod:`crdt_sync.relay.postgres_schema`. A server that
cannot be reached is a :class:`PostgresUnavailable` naming it (without the password) and
saying what to check.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from crdt_sync.envelope import Envelope, decode_trusted
from crdt_sync.errors import StoreError
from crdt_sync.fork_table import ForkRecord
from crdt_sync.quarantine import QuarantineRecord, SetAside

from .backend import EnvelopeRow, RejectionRecord, SnapshotRow, WriteBatch, WriteConflict
from .postgres_schema import TABLES, Conn, open_schema

#: What a store URL starts with to name a Postgres database.
URL_SCHEMES = ("postgresql://", "postgres://")
#: Seconds to wait for a connection (opening, or one of the pool's) before saying the server
#: is unreachable; :meth:`PostgresRelayBackend.healthy` waits less.
CONNECT_TIMEOUT = 10.0
HEALTH_TIMEOUT = 2.0
#: After the server failed to answer, for this many seconds a connection is waited for only
#: FAIL_FAST seconds (not CONNECT_TIMEOUT): the reads of the event loop fail at once and the
#: device is told to retry, instead of every session waiting out the timeout in turn.
DOWN_WINDOW, FAIL_FAST = 30.0, 0.5
#: How long a read waits for one of the pool's connections. Reads run on the event loop, one
#: at a time, so a free connection is there at once unless the server is gone and the pool
#: is reconnecting: then every session would wait as long as this (CONNECT_TIMEOUT before).
READ_WAIT = 1.0
#: A seq no chain reaches (BIGINT's largest): "no stop".
_NO_STOP = (1 << 63) - 1
_APP = "crdt-sync relay"
#: How many times a batch is written again after Postgres broke a deadlock with another node's.
_DEADLOCK_RETRIES = 3


class PostgresUnavailable(StoreError):
    """The relay's Postgres server does not answer (the message names it and says what to do)."""


def is_postgres_url(store: str) -> bool:
    return store.startswith(URL_SCHEMES)


def describe(url: str) -> str:
    """``url`` as ``postgresql://user@host:port/db``, without its password (for messages)."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    user = f"{info['user']}@" if info.get("user") else ""
    host = str(info.get("host") or "localhost")
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{host}{port}/{info.get('dbname') or ''}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _configure(conn: Conn) -> None:
    # Durable commits whatever the server's or the role's default: the relay's ACKs promise it.
    conn.execute("SET synchronous_commit TO on")


class PostgresRelayBackend:
    """A :class:`~crdt_sync.relay.backend.RelayBackend` on a Postgres database.

    Args:
        url: a libpq URL (``postgresql://user:password@host:port/database``; any libpq
            parameter may follow as a query string).
        pool_size: the most connections this object opens (reads run on any of them).
        connect_timeout: seconds to wait for the server before :class:`PostgresUnavailable`.

    Raises:
        PostgresUnavailable: the server does not answer.
        StoreError: the URL is not one, or the database is not a relay's
            (:class:`~crdt_sync.errors.StoreVersionError`: its schema is newer).
    """

    def __init__(self, url: str, pool_size: int = 4, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.url = url
        self.where = describe(url)
        self.connect_timeout = connect_timeout
        self._batch: WriteBatch | None = None
        #: when the server last failed to answer (None: it answers); see DOWN_WINDOW
        self._down_at: float | None = None
        options: dict[str, Any] = {"autocommit": True, "application_name": _APP,
                                   "connect_timeout": max(1, round(connect_timeout))}
        try:
            first = psycopg.connect(url, **options)
        except psycopg.ProgrammingError as exc:  # libpq could not parse it
            raise StoreError(f"the relay store {url.split('@')[-1]!r} is not a Postgres URL "
                             f"(postgresql://user:password@host:port/database): {_first_line(exc)}") from None
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from None
        try:
            with first:
                self.schema_version = open_schema(first, self.where)
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from None
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the relay store {self.where}: {_first_line(exc)}") from None
        self._pool: ConnectionPool[psycopg.Connection[TupleRow]] = ConnectionPool(
            url, min_size=1, max_size=pool_size, kwargs=options, configure=_configure,
            check=ConnectionPool.check_connection, open=False, name=f"relay {self.where}",
            timeout=connect_timeout)
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout:
            self._pool.close()
            raise self._unreachable(None) from None

    def _unreachable(self, exc: BaseException | None, waited: float | None = None) -> PostgresUnavailable:
        why = f": {_first_line(exc)}" if exc is not None else \
            f" within {self.connect_timeout if waited is None else waited:g} s"
        return PostgresUnavailable(
            f"cannot reach the relay's Postgres at {self.where}{why}: check that the server is "
            f"running and that the store URL (--store, CRDT_SYNC_RELAY_STORE) names it")

    @property
    def down(self) -> bool:
        """The server failed to answer within the last DOWN_WINDOW seconds, and has not since."""
        down_at = self._down_at
        return down_at is not None and time.monotonic() - down_at < DOWN_WINDOW

    @contextmanager
    def _conn(self, timeout: float | None = None) -> Iterator[Conn]:
        """A connection of the pool (autocommit); server failures become PostgresUnavailable
        (at once, ``FAIL_FAST``, while the server is ``down``)."""
        wait = self.connect_timeout if timeout is None else timeout
        if self.down:
            wait = min(wait, FAIL_FAST)
        try:
            with self._pool.connection(timeout=wait) as conn:
                yield conn
            self._down_at = None
        except PoolTimeout:
            self._down_at = time.monotonic()
            raise self._unreachable(None, wait) from None
        except psycopg.errors.TransactionRollback:  # a deadlock or serialization failure: the caller retries
            raise
        except psycopg.OperationalError as exc:
            self._down_at = time.monotonic()
            raise self._unreachable(exc) from exc

    def _rows(self, sql: str, args: tuple[Any, ...] | dict[str, Any] = ()) -> list[TupleRow]:
        with self._conn(timeout=READ_WAIT) as conn:
            return conn.execute(sql, args).fetchall()

    def _row(self, sql: str, args: tuple[Any, ...]) -> TupleRow | None:
        with self._conn(timeout=READ_WAIT) as conn:
            return conn.execute(sql, args).fetchone()

    # -- identity --------------------------------------------------------------------------
    def identity_seed(self, generate: bytes) -> bytes:
        with self._conn() as conn, conn.transaction():
            conn.execute("INSERT INTO meta(key, value) VALUES('device_seed', %s) ON CONFLICT DO NOTHING",
                         (generate,))
            row = conn.execute("SELECT value FROM meta WHERE key='device_seed'").fetchone()
        assert row is not None
        return bytes(row[0])

    # -- reads -----------------------------------------------------------------------------
    def heads(self, space: str) -> dict[str, tuple[int, bytes]]:
        return {a: (int(s), bytes(h)) for a, s, h in self._rows(
            "SELECT author, seq, hash FROM heads WHERE space=%s", (space,))}

    def chain_head(self, space: str, author: str) -> tuple[int, bytes]:
        row = self._row("SELECT seq, hash FROM heads WHERE space=%s AND author=%s", (space, author))
        return (0, b"") if row is None else (int(row[0]), bytes(row[1]))

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None:
        row = self._row("SELECT hash FROM envelopes WHERE space=%s AND author=%s AND seq=%s",
                        (space, author, seq))
        return None if row is None else bytes(row[0])

    def envelope_wire(self, space: str, author: str, seq: int) -> bytes | None:
        row = self._row("SELECT wire FROM envelopes WHERE space=%s AND author=%s AND seq=%s",
                        (space, author, seq))
        return None if row is None else bytes(row[0])

    def version_vector(self, space: str) -> dict[str, int]:
        return {a: int(s) for a, s in self._rows(
            "SELECT author, seq FROM heads WHERE space=%s ORDER BY author", (space,))}

    def missing_envelopes(self, space: str, covered: dict[str, int], max_count: int,
                          max_bytes: int, excluded: dict[str, int] | None = None) -> list[Envelope]:
        """As SQLite's (:class:`crdt_sync.envelope_table.EnvelopeReads`), in one query: it
        starts at the first envelope any author lacks (so a peer a few envelopes behind
        costs a few rows) and returns at most ``max_count`` rows; the byte bound is applied
        here."""
        stop = excluded or {}
        authors = sorted(set(covered) | set(stop))
        rows = self._rows(_MISSING, {
            "space": space, "authors": authors, "covered": [covered.get(a, 0) for a in authors],
            "stops": [stop.get(a, _NO_STOP) for a in authors], "none": _NO_STOP,
            "limit": max(1, max_count)})
        out: list[Envelope] = []
        size = 0
        for _author, _seq, wire in rows:
            if out and size + len(wire) > max_bytes:
                break
            out.append(decode_trusted(bytes(wire)))
            size += len(wire)
        return out

    def fork_records(self, space: str | None = None) -> list[ForkRecord]:
        sql = "SELECT space, author, seq, proof, source, at FROM forks"
        args: tuple[str, ...] = ()
        if space is not None:
            sql += " WHERE space=%s"
            args = (space,)
        return [ForkRecord(s, a, int(q), bytes(p), src, int(t)) for s, a, q, p, src, t in
                self._rows(sql + " ORDER BY space, author, seq", args)]

    def fork_keys(self, space: str) -> list[tuple[str, int]]:
        return [(a, int(s)) for a, s in self._rows(
            "SELECT author, seq FROM forks WHERE space=%s ORDER BY author, seq", (space,))]

    def spaces(self) -> list[str]:
        return [str(r[0]) for r in self._rows("SELECT space FROM spaces ORDER BY space")]

    def rejections(self, limit: int = 100) -> list[RejectionRecord]:
        return [RejectionRecord(int(at), src, reason, detail) for at, src, reason, detail in self._rows(
            "SELECT at, source, reason, detail FROM rejections ORDER BY id DESC LIMIT %s",
            (max(0, limit),))]

    def quarantined(self, space: str) -> dict[str, SetAside]:
        return {a: SetAside(int(f), r, d) for a, f, r, d in self._rows(
            "SELECT author, from_seq, reason, detail FROM quarantine WHERE space=%s", (space,))}

    def snapshot(self, space: str, wire: bool = True) -> SnapshotRow | None:
        record = "wire" if wire else "''::bytea"  # (the record is up to 64 MiB)
        row = self._row(f"SELECT space, author, hlc, hash, covered, {record}, at FROM space_snapshots "
                        "WHERE space=%s", (space,))
        return None if row is None else SnapshotRow(row[0], row[1], int(row[2]), bytes(row[3]),
                                                    bytes(row[4]), bytes(row[5]), int(row[6]))

    def membership_envelopes(self, space: str) -> list[bytes]:
        return [bytes(w) for (w,) in self._rows(
            "SELECT e.wire FROM membership m JOIN envelopes e ON e.space=m.space AND "
            "e.author=m.author AND e.seq=m.seq WHERE m.space=%s ORDER BY e.id", (space,))]

    def quarantine(self, space: str, author: str) -> QuarantineRecord | None:
        row = self._row(f"SELECT {_QUARANTINE} FROM quarantine WHERE space=%s AND author=%s",
                        (space, author))
        return None if row is None else _quarantine_record(row)

    def quarantines(self, space: str | None = None) -> list[QuarantineRecord]:
        sql = f"SELECT {_QUARANTINE} FROM quarantine"
        args: tuple[str, ...] = ()
        if space is not None:
            sql += " WHERE space=%s"
            args = (space,)
        return [_quarantine_record(r) for r in self._rows(sql + " ORDER BY space, author", args)]

    def size_bytes(self) -> int:
        """The relay tables' size on the server (with their indexes and TOAST)."""
        row = self._row("SELECT COALESCE(SUM(pg_total_relation_size(t::regclass)), 0) "
                        "FROM unnest(%s::text[]) AS t", (list(TABLES),))
        return 0 if row is None else int(row[0])

    def healthy(self) -> bool:
        """Whether the server answers (within :data:`HEALTH_TIMEOUT` seconds)."""
        try:
            with self._conn(timeout=HEALTH_TIMEOUT) as conn:
                conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        except Exception:  # any failure means storage is not reachable
            return False
        return True

    # -- writes ----------------------------------------------------------------------------
    def stage(self, batch: WriteBatch) -> None:
        """Keep ``batch`` (copied) for :meth:`commit`: nothing is sent to the server yet."""
        if self._batch is not None:
            raise StoreError("a batch is staged already: commit or roll it back first")
        self._batch = WriteBatch(**{f.name: list(getattr(batch, f.name))
                                    for f in dataclasses.fields(WriteBatch)})

    def commit(self) -> None:
        """Write the staged batch in one transaction and commit it (durable once this returns).

        Several relay nodes may commit to one database at once (see :func:`_insert_envelopes`).

        Raises:
            WriteConflict: another node committed a different envelope at a position of the
                batch; nothing of it is kept.
            PostgresUnavailable: the server did not answer; nothing of the batch is kept.
            psycopg.Error: the server refused the batch (nothing of it is kept).
        """
        batch, self._batch = self._batch, None
        if batch is None:
            return
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                with self._conn() as conn, conn.transaction():
                    _write(conn, batch)
                return
            except psycopg.errors.DeadlockDetected:  # two nodes' batches crossed: once more
                if attempt == _DEADLOCK_RETRIES - 1:
                    raise

    def pool_stats(self) -> dict[str, int]:
        """The connection pool's counters (psycopg_pool's ``get_stats``: pool_size,
        pool_available, requests_waiting, ...), for /metrics."""
        return {k: int(v) for k, v in self._pool.get_stats().items()}

    def rollback(self) -> None:
        self._batch = None

    def close(self) -> None:
        self._batch = None
        self._pool.close()


_QUARANTINE = "space, author, from_seq, reason, detail, hash, wire, since"

_MISSING = """
WITH c(author, covered, stop) AS (
    SELECT * FROM unnest(%(authors)s::text[], %(covered)s::bigint[], %(stops)s::bigint[])),
first AS (
    SELECT MIN(e.id) AS id FROM heads h LEFT JOIN c ON c.author = h.author
    JOIN envelopes e ON e.space = h.space AND e.author = h.author AND e.seq = COALESCE(c.covered, 0) + 1
    WHERE h.space = %(space)s AND LEAST(h.seq, COALESCE(c.stop, %(none)s) - 1) > COALESCE(c.covered, 0))
SELECT e.author, e.seq, e.wire FROM first, envelopes e LEFT JOIN c ON c.author = e.author
WHERE e.space = %(space)s AND e.id >= first.id AND e.seq > COALESCE(c.covered, 0)
    AND e.seq < COALESCE(c.stop, %(none)s)
ORDER BY e.id LIMIT %(limit)s
"""


def _quarantine_record(row: TupleRow) -> QuarantineRecord:
    s, a, f, r, d, h, w, t = row
    return QuarantineRecord(s, a, int(f), r, d, bytes(h), bytes(w), int(t))


def _write(conn: Conn, batch: WriteBatch) -> None:
    """The batch's statements, in the SQLite backend's order, inside the caller's transaction."""
    cur = conn.cursor()
    if batch.envelopes:
        _insert_envelopes(cur, batch.envelopes)
    if batch.membership:
        cur.executemany("INSERT INTO membership(space, author, seq) VALUES(%s, %s, %s) "
                        "ON CONFLICT DO NOTHING", batch.membership)
    if batch.spaces:
        cur.executemany("INSERT INTO spaces(space) VALUES(%s) ON CONFLICT DO NOTHING",
                        [(s,) for s in batch.spaces])
    if batch.rejections:
        cur.executemany("INSERT INTO rejections(at, source, reason, detail) VALUES(%s, %s, %s, %s)",
                        batch.rejections)
    for fork in batch.forks:
        kept = cur.execute("INSERT INTO forks(space, author, seq, proof, source, at) "
                           "VALUES(%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
                           fork).fetchone()
        if kept is not None:
            _drop_branch(cur, fork.space, fork.author, fork.seq)
            cur.execute("DELETE FROM membership WHERE space=%s AND author=%s AND seq>=%s",
                        (fork.space, fork.author, fork.seq))
    for q in batch.quarantines:
        cur.execute(f"INSERT INTO quarantine({_QUARANTINE}) VALUES(%s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (space, author) DO UPDATE SET from_seq=EXCLUDED.from_seq, "
                    "reason=EXCLUDED.reason, detail=EXCLUDED.detail, hash=EXCLUDED.hash, "
                    "wire=EXCLUDED.wire, since=EXCLUDED.since WHERE EXCLUDED.from_seq < quarantine.from_seq",
                    (q.space, q.author, q.from_seq, q.reason, q.detail, q.hash, q.wire, q.since))
    for space, author in batch.lifts:
        cur.execute("DELETE FROM quarantine WHERE space=%s AND author=%s", (space, author))
    if batch.snapshots:
        cur.executemany("INSERT INTO space_snapshots(space, author, hlc, hash, covered, wire, at) "
                        "VALUES(%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (space) DO UPDATE SET "
                        "author=EXCLUDED.author, hlc=EXCLUDED.hlc, hash=EXCLUDED.hash, "
                        "covered=EXCLUDED.covered, wire=EXCLUDED.wire, at=EXCLUDED.at "
                        "WHERE EXCLUDED.hlc >= space_snapshots.hlc", batch.snapshots)


_INSERT_ENVELOPES = """
INSERT INTO envelopes(space, author, seq, hash, hlc, wire)
SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bytea[], %s::bigint[], %s::bytea[])
ON CONFLICT (space, author, seq) DO NOTHING RETURNING space, author, seq
"""


def _insert_envelopes(cur: psycopg.Cursor[TupleRow], rows: list[EnvelopeRow]) -> None:
    """Insert the batch's envelopes and move their heads; several relay nodes may write at once.

    UNIQUE(space, author, seq) decides a race between writers: a position another writer
    committed first is skipped here (ON CONFLICT DO NOTHING, after waiting for that writer's
    transaction). Skipped with the same hash, it is the same envelope: a duplicate, durable
    already. With another hash it is a fork this node could not see: :class:`WriteConflict`,
    and the caller's transaction rolls back (the rows after it in that chain chain onto an
    envelope that is not stored). Rows go in the batch's order (their ids are its arrival
    order); heads are moved in (space, author) order, so that two writers lock them in the
    same order (a deadlock between two nodes' envelope rows is retried by the caller).
    """
    ordered = rows
    cur.execute(_INSERT_ENVELOPES, [list(col) for col in zip(*ordered, strict=True)])
    inserted = {(s, a, int(q)) for s, a, q in cur.fetchall()}
    if len(inserted) < len(ordered):
        taken = [r for r in ordered if (r.space, r.author, r.seq) not in inserted]
        stored = {(s, a, int(q)): bytes(h) for s, a, q, h in cur.execute(
            "SELECT e.space, e.author, e.seq, e.hash FROM envelopes e JOIN unnest("
            "%s::text[], %s::text[], %s::bigint[]) AS t(space, author, seq) "
            "ON e.space=t.space AND e.author=t.author AND e.seq=t.seq",
            ([r.space for r in taken], [r.author for r in taken], [r.seq for r in taken])).fetchall()}
        forks = [(r.space, r.author, r.seq) for r in taken
                 if stored.get((r.space, r.author, r.seq)) != r.hash]
        if forks:
            raise WriteConflict(forks)
    heads: dict[tuple[str, str], tuple[int, bytes]] = {}
    for row in ordered:
        heads[(row.space, row.author)] = (row.seq, row.hash)  # each chain's rows in seq order
    cur.executemany("INSERT INTO heads(space, author, seq, hash) VALUES(%s, %s, %s, %s) "
                    "ON CONFLICT (space, author) DO UPDATE SET seq=EXCLUDED.seq, hash=EXCLUDED.hash "
                    "WHERE EXCLUDED.seq > heads.seq",
                    [(s, a, q, h) for (s, a), (q, h) in sorted(heads.items())])


def _drop_branch(cur: psycopg.Cursor[TupleRow], space: str, author: str, from_seq: int) -> None:
    """As :func:`crdt_sync.fork_table.drop_branch`: the author's envelopes of ``space`` from
    ``from_seq`` on go, and its head moves back to ``from_seq - 1`` (or goes)."""
    if cur.execute("DELETE FROM envelopes WHERE space=%s AND author=%s AND seq>=%s",
                   (space, author, from_seq)).rowcount == 0:
        return  # the chain ends below from_seq: its head stays
    row = cur.execute("SELECT seq, hash FROM envelopes WHERE space=%s AND author=%s AND seq=%s",
                      (space, author, from_seq - 1)).fetchone()
    if row is None:
        cur.execute("DELETE FROM heads WHERE space=%s AND author=%s", (space, author))
    else:
        cur.execute("UPDATE heads SET seq=%s, hash=%s WHERE space=%s AND author=%s",
                    (row[0], row[1], space, author))


__all__ = ["CONNECT_TIMEOUT", "URL_SCHEMES", "PostgresRelayBackend", "PostgresUnavailable",
           "describe", "is_postgres_url"]
