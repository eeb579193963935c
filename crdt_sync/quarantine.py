"""Per-author quarantine: an author's chain in one space, set aside from a refused envelope on.

A receiver (a device or the relay) that refuses a *signature-valid* envelope knows who signed
it. Instead of refusing the whole batch (and with it every other author's edits, on every
sync, for ever), it sets that author's chain in that space aside from the refused seq on:
the refused envelope is kept here as evidence (its hash and wire bytes), every later
envelope of that author in that space is skipped (not applied, not an error), and every
other author and every other space of that author carry on. A member lifts a quarantine
once the cause is fixed (:meth:`Quarantine.lift`); the author's envelopes are then judged
again like any others, so one that is still bad quarantines the author again.

This module owns the records and their one SQLite table (:class:`QuarantineTable`), used
by the device store (:class:`crdt_sync.store.Store`) and the relay's SQLite backend alike,
and the device's API (:class:`Quarantine`). Which refusals quarantine is decided by the
receive paths (:mod:`crdt_sync.receive`, :mod:`crdt_sync.relay.storage`): every refusal of an
envelope whose signature verified. Reason codes are the refusal's (``bad-payload``,
``broken-chain``, ``fork``, ``malformed``, and the clock rules' codes such as
``clock-range``); :data:`MAX_REASON` and :data:`MAX_DETAIL` bound what is stored and sent.

A second table keeps what *peers* refused of ours (:class:`PeerRefusal`, from their
QUARANTINED notices), so that ``status`` shows it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from .envelope import Envelope
from .errors import Rejected

#: Longest reason code stored or sent (codes are short words like ``bad-payload``).
MAX_REASON = 64
#: Longest detail text stored or sent.
MAX_DETAIL = 512
#: Reasons that no lift undoes: a fork proof stays true (lifting would only let the proof
#: set the author aside again), so :meth:`Quarantine.lift` refuses them.
NOT_LIFTABLE = frozenset({"fork"})


def check_liftable(space: str, author: str, reason: str | None) -> None:
    """Raise :class:`Rejected` (reason ``not-liftable``) for a quarantine no lift undoes."""
    if reason in NOT_LIFTABLE:
        raise Rejected("not-liftable", f"{author} is set aside in {space} because of a proven "
                                       f"{reason}: the proof stays true, so it cannot be lifted")

SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine(
    space TEXT NOT NULL, author TEXT NOT NULL, from_seq INTEGER NOT NULL, reason TEXT NOT NULL,
    detail TEXT NOT NULL, hash BLOB NOT NULL, wire BLOB NOT NULL, since INTEGER NOT NULL,
    PRIMARY KEY(space, author)) WITHOUT ROWID
"""
#: A device's only: what peers refused of what it sent.
REFUSALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS peer_refusals(
    peer TEXT NOT NULL, space TEXT NOT NULL, author TEXT NOT NULL, from_seq INTEGER NOT NULL,
    reason TEXT NOT NULL, detail TEXT NOT NULL, since INTEGER NOT NULL,
    PRIMARY KEY(peer, space, author)) WITHOUT ROWID
"""


def _ms() -> int:
    return time.time_ns() // 1_000_000


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (what is stored and sent is bounded)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """One author's chain in one space, set aside from ``from_seq`` on.

    Attributes:
        space: the space.
        author: the author's device id.
        from_seq: the seq of the refused envelope; this and every later seq is skipped.
        reason: the refusal's code (``bad-payload``, ``fork``, ...).
        detail: what was wrong, for people.
        hash: the refused envelope's hash (BLAKE2b-256 of its wire form).
        wire: the refused envelope's wire bytes (the evidence).
        since: when it was set aside (ms since the Unix epoch, wall clock).
    """

    space: str
    author: str
    from_seq: int
    reason: str
    detail: str
    hash: bytes
    wire: bytes
    since: int

    @classmethod
    def of(cls, env: Envelope, rejected: Rejected, since: int | None = None) -> QuarantineRecord:
        """The record for refusing the verified envelope ``env`` with ``rejected``."""
        return cls(env.space, env.author, env.seq, clip(rejected.reason, MAX_REASON),
                   clip(rejected.detail, MAX_DETAIL), env.hash, env.wire,
                   _ms() if since is None else since)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``status --json``, ``quarantine list --json``): the hash in hex, the
        wire's size rather than its bytes, ``since`` also as ISO 8601."""
        return {"space": self.space, "author": self.author, "from_seq": self.from_seq,
                "reason": self.reason, "detail": self.detail, "hash": self.hash.hex(),
                "bytes": len(self.wire), "since": _iso(self.since), "since_ms": self.since}


class SetAside(NamedTuple):
    """What receiving needs of a quarantine (no evidence bytes): from which seq, and why."""

    from_seq: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class PeerRefusal:
    """A peer said (QUARANTINED) that it set aside ``author``'s chain in ``space`` from
    ``from_seq`` on; this side stops sending it that chain."""

    peer: str
    space: str
    author: str
    from_seq: int
    reason: str
    detail: str
    since: int

    def to_dict(self) -> dict[str, Any]:
        return {"peer": self.peer, "space": self.space, "author": self.author,
                "from_seq": self.from_seq, "reason": self.reason, "detail": self.detail,
                "since": _iso(self.since), "since_ms": self.since}


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


_COLUMNS = "space, author, from_seq, reason, detail, hash, wire, since"


def _record(row: Any) -> QuarantineRecord:
    s, a, f, r, d, h, w, t = row
    return QuarantineRecord(s, a, int(f), r, d, bytes(h), bytes(w), int(t))


class QuarantineTable:
    """The SQL of the quarantine tables, on a caller's connection and inside the caller's
    transactions (the device store's, the relay backend's): one schema, one set of queries."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    @staticmethod
    def create(db: sqlite3.Connection) -> None:
        """Create the quarantine table if missing (inside the caller's open transaction)."""
        db.execute(SCHEMA)

    @staticmethod
    def create_refusals(db: sqlite3.Connection) -> None:
        """Create the table of peers' refusals if missing (devices)."""
        db.execute(REFUSALS_SCHEMA)

    def insert(self, record: QuarantineRecord) -> None:
        """Set aside; an earlier record of the same (space, author) from a lower seq stays."""
        self.db.execute(
            f"INSERT INTO quarantine({_COLUMNS}) VALUES(?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET "
            "from_seq=excluded.from_seq, reason=excluded.reason, detail=excluded.detail, "
            "hash=excluded.hash, wire=excluded.wire, since=excluded.since "
            "WHERE excluded.from_seq < from_seq",
            (record.space, record.author, record.from_seq, record.reason, record.detail,
             record.hash, record.wire, record.since))

    def get(self, space: str, author: str) -> QuarantineRecord | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM quarantine WHERE space=? AND author=?",
                              (space, author)).fetchone()
        return None if row is None else _record(row)

    def authors(self, space: str) -> dict[str, SetAside]:
        """Every author set aside in ``space`` (one query, without the evidence bytes)."""
        return {a: SetAside(int(f), r, d) for a, f, r, d in self.db.execute(
            "SELECT author, from_seq, reason, detail FROM quarantine WHERE space=?", (space,))}

    def delete(self, space: str, author: str) -> bool:
        return self.db.execute("DELETE FROM quarantine WHERE space=? AND author=?",
                               (space, author)).rowcount > 0

    def record_refusal(self, refusal: PeerRefusal) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO peer_refusals(peer, space, author, from_seq, reason, detail, "
            "since) VALUES(?,?,?,?,?,?,?)",
            (refusal.peer, refusal.space, refusal.author, refusal.from_seq, refusal.reason,
             refusal.detail, refusal.since))

    def refusals(self, space: str | None = None) -> list[PeerRefusal]:
        sql = "SELECT peer, space, author, from_seq, reason, detail, since FROM peer_refusals"
        args: tuple[str, ...] = ()
        if space is not None:
            sql += " WHERE space=?"
            args = (space,)
        return [PeerRefusal(p, s, a, int(f), r, d, int(t)) for p, s, a, f, r, d, t in
                self.db.execute(sql + " ORDER BY space, author, peer", args)]

    def records(self, space: str | None = None) -> list[QuarantineRecord]:
        sql = f"SELECT {_COLUMNS} FROM quarantine"
        args: tuple[str, ...] = ()
        if space is not None:
            sql += " WHERE space=?"
            args = (space,)
        return [_record(r) for r in self.db.execute(sql + " ORDER BY space, author", args)]


class QuarantineBook(Protocol):
    """The quarantine API, alike on a device (:class:`Quarantine`) and on the relay
    (:class:`crdt_sync.relay.quarantine.RelayQuarantine`). Other rules that set an author aside
    (fork proofs: reason ``fork``) call :meth:`quarantine` with their own record."""

    def quarantine(self, record: QuarantineRecord) -> QuarantineRecord:
        """Set ``record.author``'s chain in ``record.space`` aside from ``record.from_seq``;
        returns the record in force (an existing one from a lower seq is kept)."""
        ...

    def is_quarantined(self, space: str, author: str) -> QuarantineRecord | None: ...

    def authors(self, space: str) -> dict[str, SetAside]:
        """Every author set aside in ``space``, without the evidence (what receiving skips)."""
        ...

    def list(self, space: str | None = None) -> list[QuarantineRecord]: ...

    def lift(self, space: str, author: str) -> bool:
        """Accept the author's envelopes again; False if it was not quarantined.

        Raises:
            Rejected: a quarantine of a reason in :data:`NOT_LIFTABLE` (a proven fork).
        """
        ...


class Quarantine:
    """A device's quarantine, in its store (the table is the truth: other processes on the
    data directory see the same state).

    Args:
        db: the store's connection.
        write: the store's write transaction (``Store.write``; nestable).
    """

    def __init__(self, db: sqlite3.Connection,
                 write: Callable[[], AbstractContextManager[None]]) -> None:
        self.table = QuarantineTable(db)
        self._write = write

    def quarantine(self, record: QuarantineRecord) -> QuarantineRecord:
        with self._write():
            self.table.insert(record)
            got = self.table.get(record.space, record.author)
        assert got is not None
        return got

    def is_quarantined(self, space: str, author: str) -> QuarantineRecord | None:
        return self.table.get(space, author)

    def authors(self, space: str) -> dict[str, SetAside]:
        """The authors set aside in ``space`` (what receiving skips)."""
        return self.table.authors(space)


    def lift(self, space: str, author: str) -> bool:
        with self._write():
            record = self.table.get(space, author)
            check_liftable(space, author, None if record is None else record.reason)
            return self.table.delete(space, author)

    def record_refusal(self, refusal: PeerRefusal) -> None:
        with self._write():
            self.table.record_refusal(refusal)

    def refusals(self, space: str | None = None) -> list[PeerRefusal]:
        return self.table.refusals(space)

    def list(self, space: str | None = None) -> list[QuarantineRecord]:  # last: it shadows `list`
        return self.table.records(space)


__all__ = ["MAX_DETAIL", "MAX_REASON", "NOT_LIFTABLE", "REFUSALS_SCHEMA", "SCHEMA", "PeerRefusal",
           "Quarantine", "QuarantineBook", "QuarantineRecord", "QuarantineTable", "SetAside",
           "check_liftable", "clip"]
