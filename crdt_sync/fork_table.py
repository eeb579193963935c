"""The ``forks`` table in SQLite, as devices and the relay both keep it, and what a proven
fork does to the envelope tables (``envelopes`` and ``heads``, see
:mod:`crdt_sync.envelope_table`).

One row per proven fork (a :mod:`crdt_sync.forks` proof): ``(space, author, seq)``, the
proof's wire form, where it came from and when. The author's **fork point** in a space is
the lowest seq of its proofs there: every envelope of that author in that space from the
fork point on is excluded (both branches), and only that author, only in that space.

Each store adds the table in a schema migration of its own (:data:`SCHEMA`).
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS forks(
    id INTEGER PRIMARY KEY, space TEXT NOT NULL, author TEXT NOT NULL, seq INTEGER NOT NULL,
    proof BLOB NOT NULL, source TEXT NOT NULL, at INTEGER NOT NULL, UNIQUE(space, author, seq))
"""


class ForkRecord(NamedTuple):
    """One stored proof (``at`` in Unix seconds; ``source`` names where it came from)."""

    space: str
    author: str
    seq: int
    proof: bytes
    source: str
    at: int


def create(db: sqlite3.Connection) -> None:
    """The migration step that adds the table (inside the caller's transaction)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def insert_fork(db: sqlite3.Connection, record: ForkRecord) -> bool:
    """Keep a proof; False when this (space, author, seq) already has one."""
    cur = db.execute("INSERT OR IGNORE INTO forks(space, author, seq, proof, source, at) "
                     "VALUES(?,?,?,?,?,?)", record)
    return cur.rowcount == 1


def drop_branch(db: sqlite3.Connection, space: str, author: str, from_seq: int) -> list[bytes]:
    """Remove the author's envelopes of ``space`` from ``from_seq`` on and move its head back
    to ``from_seq - 1``; returns the wire forms removed (in seq order)."""
    wires = [bytes(w) for (w,) in db.execute(
        "SELECT wire FROM envelopes WHERE space=? AND author=? AND seq>=? ORDER BY seq",
        (space, author, from_seq))]
    if not wires:
        return []  # the chain ends below from_seq: its head stays
    db.execute("DELETE FROM envelopes WHERE space=? AND author=? AND seq>=?", (space, author, from_seq))
    row = db.execute("SELECT seq, hash FROM envelopes WHERE space=? AND author=? AND seq=?",
                     (space, author, from_seq - 1)).fetchone()
    if row is None:
        db.execute("DELETE FROM heads WHERE space=? AND author=?", (space, author))
    else:
        db.execute("UPDATE heads SET seq=?, hash=? WHERE space=? AND author=?",
                   (row[0], row[1], space, author))
    return wires


class ForkReads:
    """Reads of the ``forks`` table through ``self.db`` (a mixin of the stores that hold it)."""

    db: sqlite3.Connection

    def fork_points(self, space: str) -> dict[str, int]:
        """``{author: fork point}`` of the authors proven to have forked in ``space``."""
        return {a: int(s) for a, s in self.db.execute(
            "SELECT author, MIN(seq) FROM forks WHERE space=? GROUP BY author", (space,))}

    def fork_point(self, space: str, author: str) -> int | None:
        row = self.db.execute("SELECT MIN(seq) FROM forks WHERE space=? AND author=?",
                              (space, author)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def fork_keys(self, space: str) -> list[tuple[str, int]]:
        """``(author, seq)`` of each proof of ``space`` (without the proofs themselves)."""
        return [(a, int(s)) for a, s in self.db.execute(
            "SELECT author, seq FROM forks WHERE space=? ORDER BY author, seq", (space,))]

    def fork_count(self, space: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM forks WHERE space=?", (space,)).fetchone()[0])

    def fork_proofs(self, space: str) -> list[bytes]:
        """The encoded proofs of ``space`` (by author, then seq)."""
        return [bytes(p) for (p,) in self.db.execute(
            "SELECT proof FROM forks WHERE space=? ORDER BY author, seq", (space,))]

    def fork_records(self, space: str | None = None) -> list[ForkRecord]:
        sql = "SELECT space, author, seq, proof, source, at FROM forks"
        args: tuple[str, ...] = ()
        if space is not None:
            sql += " WHERE space=?"
            args = (space,)
        return [ForkRecord(s, a, int(q), bytes(p), src, int(t)) for s, a, q, p, src, t in
                self.db.execute(sql + " ORDER BY space, author, seq", args)]

    def envelope_wire(self, space: str, author: str, seq: int) -> bytes | None:
        row = self.db.execute("SELECT wire FROM envelopes WHERE space=? AND author=? AND seq=?",
                              (space, author, seq)).fetchone()
        return None if row is None else bytes(row[0])


__all__ = ["SCHEMA", "ForkReads", "ForkRecord", "create", "drop_branch", "insert_fork"]
