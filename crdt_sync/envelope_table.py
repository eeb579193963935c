"""Reads of the envelope tables in SQLite, as devices and the relay both keep them
(``envelopes`` and ``heads``, the same columns in both schemas): chain heads, hashes,
version vectors and what a peer lacks.

One piece of code for both, so that a device and the relay answer a peer alike. Each store
keeps its own schema (and migrations) with these two tables in it.
"""

from __future__ import annotations

import sqlite3

from .envelope import Envelope, decode_trusted


class EnvelopeReads:
    """Reads of the envelope tables through ``self.db`` (a mixin of the stores that hold them)."""

    db: sqlite3.Connection

    def chain_head(self, space: str, author: str) -> tuple[int, bytes]:
        """``(seq, hash)`` of the author's last envelope in ``space``; ``(0, b"")`` if none."""
        row = self.db.execute("SELECT seq, hash FROM heads WHERE space=? AND author=?",
                              (space, author)).fetchone()
        return (0, b"") if row is None else (int(row[0]), bytes(row[1]))

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None:
        row = self.db.execute("SELECT hash FROM envelopes WHERE space=? AND author=? AND seq=?",
                              (space, author, seq)).fetchone()
        return None if row is None else bytes(row[0])

    def version_vector(self, space: str) -> dict[str, int]:
        return {a: int(s) for a, s in self.db.execute(
            "SELECT author, seq FROM heads WHERE space=? ORDER BY author", (space,))}

    def missing_envelopes(self, space: str, covered: dict[str, int], max_count: int,
                          max_bytes: int, excluded: dict[str, int] | None = None) -> list[Envelope]:
        """Envelopes of ``space`` beyond ``covered``, in arrival order (which is causal
        order), at most ``max_count`` and about ``max_bytes`` (always at least one).
        ``excluded`` (``{author: seq}``): none of that author from that seq on (a fork's
        envelopes still stored, as at the relay until the commit that drops them).

        Decoded without verification: they were verified on the way in. Starts at the
        first envelope any author is missing, so a peer that is a few envelopes behind
        costs a few rows, not a scan of the whole space.
        """
        stop = excluded or {}
        start = None
        for author, top in self.version_vector(space).items():
            if min(top, stop.get(author, top + 1) - 1) > covered.get(author, 0):
                row = self.db.execute("SELECT id FROM envelopes WHERE space=? AND author=? AND "
                                      "seq=?", (space, author, covered.get(author, 0) + 1)).fetchone()
                if row is not None:
                    start = row[0] if start is None else min(start, row[0])
        if start is None:
            return []
        out: list[Envelope] = []
        size = 0
        rows = self.db.execute("SELECT author, seq, wire FROM envelopes WHERE space=? AND id>=? "
                               "ORDER BY id", (space, start))
        for author, seq, wire in rows:
            if seq <= covered.get(author, 0) or (stop and seq >= stop.get(author, seq + 1)):
                continue
            if out and (len(out) >= max_count or size + len(wire) > max_bytes):
                break
            out.append(decode_trusted(bytes(wire)))
            size += len(wire)
        return out
