"""Snapshots at the relay's store (part of :class:`~crdt_sync.relay.storage.RelayStore`, a
mixin like :mod:`~crdt_sync.relay.member_store`): the relay keeps the newest valid admin
snapshot of each space, which it cannot read, and serves it to devices far behind
(docs/PROTOCOL.md, "Snapshots in sessions", which states the rule checked here).

What the relay checks of a snapshot a member pushes, in this order (the first failure is the
refusal's reason, recorded in ``rejections``; nothing is kept):

1. the transfer's and the record's bounds, shape and signature (:mod:`crdt_sync.snapshot_transfer`,
   :func:`crdt_sync.snapshot.decode_snapshot`); the record's space is the session's
   (``snapshot-wrong-space``);
2. its author is an admin of the space by the relay's membership log at the snapshot's hlc
   (``snapshot-not-admin``);
3. every covered chain ``[a, s, h]`` is one the relay holds up to ``s`` at least
   (``snapshot-ahead``: it claims more than the relay knows), whose envelope ``s`` hashes to
   ``h`` and has no fork at or below ``s`` (``snapshot-fork``), and ``s`` is not past a
   revoked author's cut (``snapshot-revoked``: it would serve what the relay serves to no one);
4. it is newer than the kept one: it covers every chain at least as far, and one further
   (``snapshot-stale``); the kept one again is ``known``, not a refusal.

Kept snapshots are written with the next commit (``WriteBatch.snapshots``); one staged or
committing is what sessions see until then.
"""

from __future__ import annotations

import time
from typing import Protocol, cast

import cbor2

from crdt_sync.errors import Rejected
from crdt_sync.membership import Rights, wall_of
from crdt_sync.snapshot import Snapshot, decode_snapshot
from crdt_sync.snapshot_transfer import decode_transfer

from .backend import RelayBackend, SnapshotRow
from .members import SpaceMembers

STORED, KNOWN = "stored", "known"


class _Batch(Protocol):
    snapshots: list[SnapshotRow]


class _Space(Protocol):
    forks: dict[str, int]


class _Store(Protocol):
    reader: RelayBackend

    @property
    def _staged(self) -> _Batch: ...

    @property
    def _committing(self) -> _Batch | None: ...

    def _space(self, name: str) -> _Space: ...

    def _schedule(self) -> None: ...

    def members(self, space: str) -> SpaceMembers: ...

    def chain_head(self, space: str, author: str) -> tuple[int, bytes]: ...

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None: ...

    def record_rejection(self, source: str, rejected: Rejected) -> None: ...


def covered_of(row: SnapshotRow) -> dict[str, int]:
    """The version vector a kept snapshot covers."""
    return {str(a): int(s) for a, s in cbor2.loads(row.covered)}


class RelaySnapshots:
    """The kept snapshot of each space, and the judging of new ones (mixed into RelayStore)."""

    @property
    def _sstore(self) -> _Store:
        return cast(_Store, self)

    def kept_snapshot(self, space: str, wire: bool = True) -> SnapshotRow | None:
        """The snapshot kept for ``space`` (a staged or committing one first)."""
        store = self._sstore
        for batch in (store._staged, store._committing):
            rows = [r for r in batch.snapshots if r.space == space] if batch is not None else []
            if rows:
                return rows[-1]
        return store.reader.snapshot(space, wire)

    def offer_snapshot(self, space: str, data: bytes, source: str) -> tuple[str, str]:
        """Judge a transfer a member pushed (see the module docstring) and keep its snapshot
        if it is valid and newer. Returns the verdict and its detail."""
        store = self._sstore
        try:
            snap = decode_snapshot(decode_transfer(data).snapshot)
            kept = self.kept_snapshot(space, wire=False)
            if kept is not None and kept.hash == snap.hash:
                return KNOWN, "the relay keeps this snapshot"
            self._judge_snapshot(space, snap, kept)
        except Rejected as rejected:
            store.record_rejection(source, rejected)
            return rejected.reason, rejected.detail
        covered = cbor2.dumps(sorted([a, s] for a, s in snap.version_vector.items()), canonical=True)
        now_ms = time.time_ns() // 1_000_000
        row = SnapshotRow(space, snap.author, snap.hlc, snap.hash, covered, snap.wire, now_ms)
        store._staged.snapshots.append(row)
        store._schedule()
        return STORED, f"kept as the snapshot of {space}"

    def _judge_snapshot(self, space: str, snap: Snapshot, kept: SnapshotRow | None) -> None:
        store = self._sstore
        if snap.space != space:
            raise Rejected("snapshot-wrong-space", f"a snapshot of {snap.space} pushed in {space}")
        members = store.members(space)
        if members.log.rights_of(snap.author_key, wall_of(snap.hlc)) is not Rights.ADMIN:
            raise Rejected("snapshot-not-admin", f"the snapshot's author {snap.author} is not an admin "
                                                 f"of {space} by the relay's membership log")
        forks = store._space(space).forks
        cuts = members.cuts()
        for author, (seq, head) in snap.heads.items():
            top, _ = store.chain_head(space, author)
            if top < seq:
                raise Rejected("snapshot-ahead", f"the snapshot covers {author} up to seq {seq}; the "
                                                 f"relay holds its chain up to {top}")
            point = forks.get(author)
            have = store.envelope_hash(space, author, seq)
            if (point is not None and point <= seq) or have != head:
                raise Rejected("snapshot-fork", f"the snapshot names {head.hex()[:16]}.. as {author}'s "
                                                f"seq {seq}, which the relay holds otherwise or forked")
            cut = cuts.get(author)
            if cut is not None and seq > cut:
                raise Rejected("snapshot-revoked", f"the snapshot covers {author} up to seq {seq}, past "
                                                   f"its revocation's cut at {cut}")
        if kept is not None:
            old, new = covered_of(kept), snap.version_vector
            short = [a for a, s in old.items() if new.get(a, 0) < s]
            if short or new == old:
                why = (f"it covers {short[0]} up to {new.get(short[0], 0)}, the kept one up to "
                       f"{old[short[0]]}" if short else "it covers what the kept one does")
                raise Rejected("snapshot-stale", f"not newer than the snapshot the relay keeps: {why}")


__all__ = ["KNOWN", "STORED", "RelaySnapshots", "covered_of"]
