"""Forks at the relay: proofs kept and forwarded, and both branches no longer served.

Part of :class:`~crdt_sync.relay.storage.RelayStore` (a mixin: the same owner, the same
state). The relay cannot read payloads, so it rebuilds nothing: it keeps every proof it
makes or receives (:mod:`crdt_sync.forks`; the ``forks`` table, written in the same commit as
the envelopes), drops the forking author's envelopes in that space from the fork point on
(the stored branch, and every later envelope of either branch, which it refuses), moves that
author's head back to the seq before, and hands the proof to every session of the space,
which sends it to its peer. Every other author, and that author's other spaces, are served
as before. The membership log of the space learns of it (the forked author's records stop
counting: a reused invite's redemptions are void). The author is also quarantined
(:mod:`crdt_sync.quarantine`, reason ``fork``, in the same commit), so that the relay's one
"set aside" state holds it; a fork is not liftable (:meth:`RelayStore.lift` refuses it: the
proof would set it aside again).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, cast

from crdt_sync import forks
from crdt_sync.envelope import Envelope, decode_trusted
from crdt_sync.errors import Rejected
from crdt_sync.fork_table import ForkRecord
from crdt_sync.forks import ForkProof
from crdt_sync.quarantine import MAX_DETAIL, QuarantineRecord, clip

from .backend import EnvelopeRow, RelayBackend


class _Space(Protocol):
    """What this module uses of the relay's state of one space (``space_state.RelaySpace``)."""

    name: str
    vv: dict[str, int]
    hashes: dict[str, bytes]
    tail: deque[Any]
    lo: int
    skip: int
    forks: dict[str, int]
    proofs: set[tuple[str, int]]
    members: Any  # relay/members.py SpaceMembers, or None while not built


class _Batch(Protocol):
    rows: list[EnvelopeRow]
    forks: list[ForkRecord]


class _Store(Protocol):
    """What this module uses of the RelayStore it is mixed into (named here rather than
    imported, which would be an import circle)."""

    reader: RelayBackend
    on_append: Callable[[str], None]

    @property
    def _staged(self) -> _Batch: ...

    @property
    def _committing(self) -> _Batch | None: ...

    def _space(self, name: str) -> _Space: ...

    def _schedule(self) -> None: ...

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None: ...

    def record_rejection(self, source: str, rejected: Rejected) -> None: ...

    def set_aside(self, record: QuarantineRecord) -> QuarantineRecord: ...


class RelayForks:
    """The relay's fork proofs and exclusions (mixed into RelayStore, whose state it uses)."""

    @property
    def _store(self) -> _Store:
        return cast(_Store, self)

    def fork_proofs(self, space: str) -> list[bytes]:
        """The proofs of ``space``, committed or not (memory keeps only their keys: proofs are
        up to 1 MiB each, and sessions read them only when the count changed)."""
        store = self._store
        found = {(r.author, r.seq): r.proof for r in store.reader.fork_records(space)}
        for batch in (store._staged, store._committing):
            for rec in batch.forks if batch is not None else ():
                if rec.space == space:
                    found.setdefault((rec.author, rec.seq), rec.proof)
        return [found[key] for key in sorted(found)]

    def fork_count(self, space: str) -> int:
        return len(self._store._space(space).proofs)

    def fork_points(self, space: str) -> dict[str, int]:
        return dict(self._store._space(space).forks)

    def excluded(self, env: Envelope) -> bool:
        """Whether ``env`` is at or after its author's fork point in its space."""
        forks = self._store._space(env.space).forks
        if not forks:
            return False  # the common case: no author of the space forked (env.author costs)
        point = forks.get(env.author)
        return point is not None and env.seq >= point

    def envelope_wire(self, space: str, author: str, seq: int) -> bytes | None:
        """A stored envelope's wire form: staged or committing (not in SQLite yet), or committed."""
        for batch in (self._store._staged, self._store._committing):
            if batch is not None:
                for row in batch.rows:
                    if row.space == space and row.author == author and row.seq == seq:
                        return row.wire
        return self._store.reader.envelope_wire(space, author, seq)

    def receive_fork_proof(self, proof: bytes, source: str, space: str | None = None) -> bool:
        """Verify and keep a proof received from a peer; whether it was new.

        Raises:
            Rejected: it does not verify (recorded), or is of another space than ``space``.
        """
        try:
            checked = forks.verify(proof)
            if space is not None and checked.space != space:
                raise Rejected("wrong-space",
                               f"fork proof of space {checked.space!r} sent as part of {space!r}")
        except Rejected as rejected:
            self._store.record_rejection(source, rejected)
            raise
        return self.keep_fork(checked, source)

    def fork_of(self, env: Envelope, accepted: list[Envelope], source: str, record: bool = True) -> None:
        """``env`` forks a stored envelope (or one accepted earlier in the same call): keep the
        proof, stop serving the author there (and record the rejection, unless the caller
        does: a session's host records the quarantine it starts)."""
        stored = next((e.wire for e in accepted if e.author == env.author and e.seq == env.seq
                       and e.space == env.space), None)
        if stored is None:
            stored = self.envelope_wire(env.space, env.author, env.seq)
        if stored is None:
            raise Rejected("fork", f"{env.author} seq {env.seq} conflicts with an envelope that is gone")
        proof = forks.prove(decode_trusted(stored), env)
        if record:
            self._store.record_rejection(source, Rejected("fork", proof.describe()))
        self.keep_fork(proof, source, env)

    def keep_fork(self, proof: ForkProof, source: str, evidence: Envelope | None = None) -> bool:
        """Stage the proof with the next commit and exclude its author from its seq on, and
        quarantine it (reason ``fork``; ``evidence``, the branch that arrived second, is the
        record's envelope: else the proof's higher one)."""
        st = self._store._space(proof.space)
        slot = (proof.author, proof.seq)
        if slot in st.proofs:
            return False
        data = proof.encode()
        st.proofs.add(slot)
        self._store._staged.forks.append(ForkRecord(proof.space, proof.author, proof.seq, data, source,
                                             int(time.time())))
        point = st.forks.get(proof.author)
        if point is None or proof.seq < point:
            self._rewind(st, proof.author, proof.seq)
        if st.members is not None:  # its membership records stop counting (an invite key's
            st.members.fork(proof.low.author_key)  # redemption is void: reused-invite)
        self._store.set_aside(QuarantineRecord(
            proof.space, proof.author, proof.seq, "fork", clip(proof.describe(), MAX_DETAIL),
            (evidence or proof.high).hash, (evidence or proof.high).wire, time.time_ns() // 1_000_000))
        self._store._schedule()
        self._store.on_append(proof.space)  # wakes the space's sessions: they send the proof on
        return True

    def _rewind(self, st: _Space, author: str, point: int) -> None:
        """Serve nothing of ``author`` in ``st`` from ``point`` on; its head moves back."""
        if st.vv.get(author, 0) >= point:
            prev = self._store.envelope_hash(st.name, author, point - 1) if point > 1 else None
            if prev is None:
                st.vv.pop(author, None)
                st.hashes.pop(author, None)
            else:
                st.vv[author], st.hashes[author] = point - 1, prev
        st.forks[author] = point
        # The tail may hold the dropped branch. Sessions hold positions in it, so rather than
        # cut entries out of it, it is emptied: every session catches up from storage (which
        # skips excluded envelopes, see missing_envelopes), then from new entries.
        dropped = len(st.tail)
        st.tail.clear()
        st.lo += dropped
        st.skip += dropped  # their FIFO entries are still counted (see RelayStore._append)


__all__ = ["RelayForks"]
