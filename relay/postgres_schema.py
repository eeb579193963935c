"""The relay's schema in Postgres, and its versioned migrations.

The same records as the SQLite store (:mod:`crdt_sync.relay.sqlite_store`, schema 4), in one
migration: Postgres stores start at version 1 of their own numbering.

Schema version 1::

    schema_version(version PK, name, applied)      one row per migration applied
    meta(key PK, value)                            the relay's identity seed ("device_seed")
    spaces(space PK)                               every space the relay was given
    envelopes(id PK, space, author, seq, hash, hlc, wire, UNIQUE(space, author, seq))
                                                   id: commit order within a space (an identity
                                                   column; with several writers only each
                                                   chain's seq order is guaranteed:
                                                   relay/shared_store.py)
    heads(space, author, seq, hash, PK(space, author))   each chain's last envelope
    rejections(id PK, at, source, reason, detail)
    quarantine(space, author, from_seq, reason, detail, hash, wire, since, PK(space, author))
                                                   authors set aside (crdt_sync.quarantine)
    forks(id PK, space, author, seq, proof, source, at, UNIQUE(space, author, seq))
                                                   fork proofs (crdt_sync.fork_table)
    membership(space, author, seq, PK(space, author, seq))
                                                   the envelopes that carry membership records

Schema version 2 adds (SQLite's schema 5)::

    space_snapshots(space PK, author, hlc, hash, covered, wire, at)
                                                   the newest admin snapshot of each space

Opening a database brings it to :data:`SCHEMA_VERSION` by running, in one transaction under
an advisory lock (one opener migrates, every other waits and then sees it done), each
migration past the version it records. A database with a newer schema is refused with
:class:`~crdt_sync.errors.StoreVersionError`; one that holds tables of these names but no
``schema_version`` (another program's) with :class:`~crdt_sync.errors.StoreError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
from psycopg.rows import TupleRow

from crdt_sync.errors import StoreError, StoreVersionError

SCHEMA_VERSION = 2
Conn = psycopg.Connection[TupleRow]
#: ``pg_advisory_xact_lock`` key of the migration (any constant of ours: "crdtsync").
MIGRATION_LOCK = 0x6372647473796E63

_V1 = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE spaces(space TEXT PRIMARY KEY);
CREATE TABLE envelopes(
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, space TEXT NOT NULL, author TEXT NOT NULL,
    seq BIGINT NOT NULL, hash BYTEA NOT NULL, hlc BIGINT NOT NULL, wire BYTEA NOT NULL,
    UNIQUE(space, author, seq));
CREATE INDEX envelopes_arrival ON envelopes(space, id);
CREATE TABLE heads(
    space TEXT NOT NULL, author TEXT NOT NULL, seq BIGINT NOT NULL, hash BYTEA NOT NULL,
    PRIMARY KEY(space, author));
CREATE TABLE rejections(
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at BIGINT NOT NULL, source TEXT NOT NULL,
    reason TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE quarantine(
    space TEXT NOT NULL, author TEXT NOT NULL, from_seq BIGINT NOT NULL, reason TEXT NOT NULL,
    detail TEXT NOT NULL, hash BYTEA NOT NULL, wire BYTEA NOT NULL, since BIGINT NOT NULL,
    PRIMARY KEY(space, author));
CREATE TABLE forks(
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, space TEXT NOT NULL, author TEXT NOT NULL,
    seq BIGINT NOT NULL, proof BYTEA NOT NULL, source TEXT NOT NULL, at BIGINT NOT NULL,
    UNIQUE(space, author, seq));
CREATE TABLE membership(
    space TEXT NOT NULL, author TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY(space, author, seq))
"""

_V2 = """
CREATE TABLE space_snapshots(
    space TEXT PRIMARY KEY, author TEXT NOT NULL, hlc BIGINT NOT NULL, hash BYTEA NOT NULL,
    covered BYTEA NOT NULL, wire BYTEA NOT NULL, at BIGINT NOT NULL)
"""

#: The tables of the relay schema (what marks a database as a relay's, or another program's).
TABLES = ("meta", "spaces", "envelopes", "heads", "rejections", "quarantine", "forks", "membership",
          "space_snapshots")


def _execute_all(conn: Conn, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement.strip())


def _v1(conn: Conn) -> None:
    _execute_all(conn, _V1)


def _v2(conn: Conn) -> None:
    _execute_all(conn, _V2)


#: ``(version, name, step)``: each step brings the schema from ``version - 1`` to ``version``.
MIGRATIONS: list[tuple[int, str, Callable[[Conn], None]]] = [
    (1, "relay schema: envelopes, heads, spaces, rejections, quarantine, forks, membership", _v1),
    (2, "snapshots: the newest admin snapshot per space", _v2),
]


def _exists(conn: Conn, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    return row is not None and row[0] is not None


def open_schema(conn: Conn, where: str) -> int:
    """Bring the database of ``conn`` (autocommit) to :data:`SCHEMA_VERSION`; returns it.

    Raises:
        StoreVersionError: the database has a newer schema.
        StoreError: it holds tables of the relay's names that are not a relay's.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        if _exists(conn, "schema_version"):
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
            version = int(row[0]) if row is not None else 0
        else:
            clash = [t for t in TABLES if _exists(conn, t)]
            if clash:
                raise StoreError(f"{where} is not a crdt-sync relay database (it has tables "
                                 f"{', '.join(clash)} but no schema_version): give the relay a "
                                 f"database of its own")
            conn.execute("CREATE TABLE schema_version(version INTEGER PRIMARY KEY, "
                         "name TEXT NOT NULL, applied BIGINT NOT NULL)")
            version = 0
        if version > SCHEMA_VERSION:
            raise StoreVersionError(
                f"{where} has relay schema version {version}; this crdt-sync reads up to "
                f"{SCHEMA_VERSION}: upgrade crdt-sync to open it")
        for number, name, step in MIGRATIONS:
            if number > version:
                step(conn)
                conn.execute("INSERT INTO schema_version(version, name, applied) VALUES(%s, %s, %s)",
                             (number, name, int(time.time())))
    return SCHEMA_VERSION


__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "TABLES", "open_schema"]
