"""The device store's tables for snapshots (docs/PROTOCOL.md, "Snapshots"): the chain bases
a snapshot left, and the snapshot a device keeps to pass on.

- ``chain_bases(space, author, seq, hash)``: the author's chain in ``space`` starts above
  ``seq`` on this device; ``hash`` is the head hash the snapshot named there. The ``heads``
  row is moved there too, so the chain rules accept ``seq + 1`` if it names ``hash``.
  Envelopes at or below a base that the device does not hold are duplicates: the snapshot
  covers them.
- ``snapshots(space, author, hlc, wire, at)``: the latest snapshot this device made or
  imported for ``space`` (one row per space), what a bundle for a device never met carries.
- ``snapshot_answers(peer, space, hash, verdict, at)``: the last snapshot of ``space`` this
  device pushed to the relay ``peer`` in a session, and what the relay answered (a snapshot
  is pushed to a relay once: docs/PROTOCOL.md, "Snapshots in sessions").

Created on every open (``CREATE ... IF NOT EXISTS``, within store format 3), like the
quarantine tables.
"""

from __future__ import annotations

import sqlite3
import time

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS chain_bases(space TEXT NOT NULL, author TEXT NOT NULL, "
    "seq INTEGER NOT NULL, hash BLOB NOT NULL, PRIMARY KEY(space, author)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS snapshots(space TEXT PRIMARY KEY, author TEXT NOT NULL, "
    "hlc INTEGER NOT NULL, wire BLOB NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS snapshot_answers(peer TEXT NOT NULL, space TEXT NOT NULL, "
    "hash BLOB NOT NULL, verdict TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY(peer, space)) WITHOUT ROWID",
)


def create(db: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        db.execute(statement)


class SnapshotReads:
    """Reads and writes of the snapshot tables through ``self.db`` (a mixin of the device store)."""

    db: sqlite3.Connection

    def chain_base(self, space: str, author: str) -> tuple[int, bytes] | None:
        """``(seq, hash)`` where a snapshot started the author's chain here, or None."""
        return self.chain_bases(space).get(author)

    def chain_bases(self, space: str) -> dict[str, tuple[int, bytes]]:
        """Every chain base of ``space`` (none in a store opened read-only from before them)."""
        try:
            rows = self.db.execute("SELECT author, seq, hash FROM chain_bases WHERE space=? "
                                   "ORDER BY author", (space,)).fetchall()
        except sqlite3.OperationalError:  # a read-only open of an older store: no table
            return {}
        return {str(a): (int(s), bytes(h)) for a, s, h in rows}

    def set_chain_base(self, space: str, author: str, seq: int, head: bytes) -> None:
        """Start ``author``'s chain in ``space`` above ``seq`` (whose hash is ``head``): the
        base and the head move there (inside the caller's transaction)."""
        self.db.execute("INSERT INTO chain_bases(space, author, seq, hash) VALUES(?,?,?,?) ON CONFLICT "
                        "DO UPDATE SET seq=excluded.seq, hash=excluded.hash WHERE excluded.seq > seq",
                        (space, author, seq, head))
        self.db.execute("INSERT INTO heads(space, author, seq, hash) VALUES(?,?,?,?) ON CONFLICT "
                        "DO UPDATE SET seq=excluded.seq, hash=excluded.hash WHERE excluded.seq > seq",
                        (space, author, seq, head))

    def keep_snapshot(self, space: str, author: str, hlc: int, wire: bytes) -> None:
        """Keep ``wire`` as the snapshot of ``space`` to pass on (a later one replaces it)."""
        self.db.execute("INSERT INTO snapshots(space, author, hlc, wire, at) VALUES(?,?,?,?,?) ON CONFLICT "
                        "DO UPDATE SET author=excluded.author, hlc=excluded.hlc, wire=excluded.wire, "
                        "at=excluded.at WHERE excluded.hlc >= hlc",
                        (space, author, hlc, wire, time.time_ns() // 1_000_000))

    def kept_snapshot(self, space: str) -> bytes | None:
        try:
            row = self.db.execute("SELECT wire FROM snapshots WHERE space=?", (space,)).fetchone()
        except sqlite3.OperationalError:  # a read-only open of an older store: no table
            return None
        return None if row is None else bytes(row[0])

    def snapshot_answer(self, peer: str, space: str) -> bytes | None:
        """The hash of the last snapshot of ``space`` the relay ``peer`` answered, or None."""
        try:
            row = self.db.execute("SELECT hash FROM snapshot_answers WHERE peer=? AND space=?",
                                  (peer, space)).fetchone()
        except sqlite3.OperationalError:  # a read-only open of an older store: no table
            return None
        return None if row is None else bytes(row[0])

    def record_snapshot_answer(self, peer: str, space: str, hash: bytes, verdict: str) -> None:
        """The relay ``peer`` answered ``verdict`` to the snapshot ``hash`` of ``space``."""
        self.db.execute("INSERT OR REPLACE INTO snapshot_answers(peer, space, hash, verdict, at) "
                        "VALUES(?,?,?,?,?)", (peer, space, hash, verdict, time.time_ns() // 1_000_000))

    def entity_keys(self, space: str) -> list[tuple[str, str]]:
        """Every ``(collection, id)`` of ``space`` with a stored part (deleted ones and the
        space's own entities included), in order."""
        return [(str(c), str(e)) for c, e in self.db.execute(
            "SELECT DISTINCT collection, entity FROM parts WHERE space=? ORDER BY collection, entity",
            (space,))]
