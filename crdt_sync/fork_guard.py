"""Forks on a device: proofs kept, the forking author set aside, its entities rebuilt.

The owner of what a device does about a proven fork (docs/DESIGN.md, "Forks"). The
:class:`~crdt_sync.receive.Receiver` calls it for every received envelope (is its author
excluded from that seq? does it fork a stored envelope?) and for every proof received on its
own (a FORK_PROOF frame, a bundle). Everything runs inside the caller's store transaction.

Exclusion: from the fork point on, the author's envelopes in that space are removed (both
branches: the stored one, and every later one that arrives is refused as ``forked``), its
head moves back to ``fork point - 1``, and the parts those envelopes added are removed from
the entities they touched, whose snapshots are dropped, so that each entity is rebuilt from
the parts that remain: other authors', and that author's from before the fork point. Two
honest devices then hold the same set of updates for every entity whichever branch each saw
first, hence the same data.

:meth:`ForkGuard.set_aside` is the one place that excludes an author, and it records the
exclusion in the device's quarantine (:mod:`crdt_sync.quarantine`, reason ``fork``), so that
status, sessions (which skip quarantined authors and send QUARANTINED) and lifting read one
"set aside" state. A fork is not liftable: the proof stays true, so
:meth:`crdt_sync.quarantine.Quarantine.lift` refuses a ``fork`` record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from . import fork_table, forks
from .envelope import Envelope, decode_trusted, envelope_hash
from .errors import Rejected
from .fork_table import ForkRecord
from .forks import ForkProof
from .payload import decode_payload
from .quarantine import MAX_DETAIL, QuarantineBook, QuarantineRecord, clip
from .results import ForkStatus
from .store import EntityKey, Store

#: ``reason`` of an exclusion because of a fork (quarantine has others).
FORK = "fork"


class ForkGuard:
    """A device's fork proofs and exclusions (one per replica; state lives in the store)."""

    def __init__(self, store: Store, quarantine: QuarantineBook | None = None,
                 decode: Callable[[Envelope], list[tuple[str, str, bytes, list[tuple[int, bytes]]]]]
                 | None = None) -> None:
        self._store = store
        self._quarantine = quarantine
        #: the entities of a stored data envelope (decrypting it: the replica's keys)
        self._decode = decode or (lambda env: decode_payload(env.payload))
        self._points: dict[str, dict[str, int]] = {}

    def begin(self) -> None:
        """Start of a receive: forget cached fork points (another process may have added some)."""
        self._points.clear()

    def _fork_points(self, space: str) -> dict[str, int]:
        points = self._points.get(space)
        if points is None:
            points = self._points[space] = self._store.fork_points(space)
        return points

    def excluded(self, env: Envelope) -> bool:
        """Whether ``env`` is at or after its author's fork point in its space."""
        points = self._fork_points(env.space)
        if not points:
            return False  # the common case (env.author is computed on each access)
        point = points.get(env.author)
        return point is not None and env.seq >= point

    def conflict(self, env: Envelope, source: str) -> set[EntityKey]:
        """``env`` (verified) has the seq of a stored envelope of its author and another hash
        (:attr:`crdt_sync.chain.Fault.FORK`): keep the proof, set the author aside.

        Returns the entities to rebuild.
        """
        stored = self._store.envelope_wire(env.space, env.author, env.seq)
        if stored is None:  # (the check saw it: only a racing writer could remove it)
            raise Rejected("fork", f"{env.author} seq {env.seq} conflicts with an envelope "
                                   f"that is gone")
        return self.keep(forks.prove(decode_trusted(stored), env), source, env)[1]

    def receive_proof(self, data: bytes, source: str,
                      space: str | None = None) -> tuple[ForkProof, bool, set[EntityKey]]:
        """Verify an encoded proof (of ``space``, when given), keep it, set the author aside.

        Returns the proof, whether it was new here, and the entities to rebuild.

        Raises:
            Rejected: the proof does not verify (see :func:`crdt_sync.forks.verify`), or is of
                another space.
        """
        proof = forks.verify(data)
        if space is not None and proof.space != space:
            raise Rejected("wrong-space", f"fork proof of space {proof.space!r} sent as part of {space!r}")
        return (proof, *self.keep(proof, source))

    def keep(self, proof: ForkProof, source: str,
             evidence: Envelope | None = None) -> tuple[bool, set[EntityKey]]:
        """Store a checked proof and exclude its author from its seq; returns whether it was
        new and the entities to rebuild (none when it was known). ``evidence`` is the branch
        that arrived second (the quarantine record's envelope; else the proof's higher one)."""
        other = proof.high if evidence is None else evidence
        record = ForkRecord(proof.space, proof.author, proof.seq, proof.encode(), source,
                            int(time.time()))
        with self._store.write():
            if not fork_table.insert_fork(self._store.db, record):
                return False, set()
            self._points.pop(proof.space, None)
            return True, self.set_aside(proof.space, proof.author, proof.seq, FORK,
                                        proof.describe(), other.hash, other.wire)

    def set_aside(self, space: str, author: str, from_seq: int, reason: str = FORK,
                  detail: str = "", envelope_hash: bytes = b"", wire: bytes = b"") -> set[EntityKey]:
        """Exclude ``author``'s chain in ``space`` from ``from_seq`` on: its envelopes from there
        are removed and the parts they added taken out of their entities. Returns those
        entities (the caller unloads them, and reloads and re-indexes those still known: one
        that only those envelopes wrote is forgotten).

        ``reason``, ``detail``, ``envelope_hash`` and ``wire`` (the evidence: for a fork, the
        branch that proved it) go into the quarantine record (the fork's full record is its
        proof, :meth:`keep`).
        """
        store = self._store
        if self._quarantine is not None:
            self._quarantine.quarantine(QuarantineRecord(
                space, author, from_seq, reason, clip(detail, MAX_DETAIL), envelope_hash, wire,
                time.time_ns() // 1_000_000))
        touched: set[EntityKey] = set()
        for wire in fork_table.drop_branch(store.db, space, author, from_seq):
            env = decode_trusted(wire)
            store.release(env)
            try:
                entities = self._decode(env)
            except Exception:  # trust boundary: stored, but never applied if it did not decode
                continue
            for coll, ent, blob, _items in entities:
                key = (space, coll, ent)
                store.drop_part(key, author, blob)
                touched.add(key)
        for key in touched:
            store.drop_snapshot(key)
            store.forget_if_empty(key)  # one only the excluded envelopes wrote is gone
        return touched


def fork_statuses(records: list[ForkRecord]) -> list[ForkStatus]:
    """What status shows of stored proofs (the lowest seq per author is the fork point)."""
    out = []
    for rec in records:
        low, high = forks.decode(rec.proof)
        out.append(ForkStatus(rec.author, rec.seq, [envelope_hash(low).hex(), envelope_hash(high).hex()],
                              rec.source, datetime.fromtimestamp(rec.at, UTC).isoformat()))
    return out


__all__ = ["FORK", "ForkGuard", "fork_statuses"]
