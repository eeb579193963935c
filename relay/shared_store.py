"""The relay's store when several relay nodes share one database (Postgres):
:class:`SharedRelayStore`, a :class:`~crdt_sync.relay.storage.RelayStore` whose in-memory
heads may be stale, because another node commits too.

What each node keeps in memory (each author's head per space, the fan-out tail) is a cache
of the database plus what this node accepted. Another node's commits reach it two ways:

* **At commit.** UNIQUE(space, author, seq) decides a race between nodes. A position another
  node committed with the same envelope is a duplicate (durable already: the ACK is true).
  A different envelope there is a :class:`~crdt_sync.relay.backend.WriteConflict`: nothing
  of the batch is kept; :meth:`SharedRelayStore._rejudge` drops the memory of every space,
  re-reads the heads from the database and judges the batch again, and what was staged
  after it, with the chain rules (the same envelope: a duplicate; another one at a
  committed seq: a fork, proven and kept as :mod:`~crdt_sync.relay.fork_store` does). The
  ACKs that waited for the failed commit wait for the new one.
* **After their commit.** :meth:`SharedRelayStore.catch_up` reads from the database what a
  space in memory lacks (beyond its heads, as a device's version vector would), and appends
  it to the space's tail as if accepted here, so the space's sessions are woken and forward
  it as they forward local commits. The bus (:mod:`crdt_sync.relay.bus`) calls it on each
  notice of another node's commit, and periodically for every open space, so a lost notice
  only delays a delivery. :meth:`SharedRelayStore.refresh` also drops a space's memory when
  the database holds fork proofs or quarantines that memory does not (another node's), so
  they are enforced here from then on.

Ordering: each chain (space, author) is stored in seq order, which is all that catching up
on version vectors needs; the identity column (``id``) orders the rows of one space in the
order they were committed, whichever node committed them, but two nodes' transactions may
commit in another order than they drew ids. A session's cursor is a position in *this
node's* tail: it is never sent to a device nor to another node, and a device that moves to
another node resumes from its version vector.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from crdt_sync import forks
from crdt_sync.envelope import Envelope
from crdt_sync.errors import Rejected
from crdt_sync.membership import is_membership

from .backend import EnvelopeRow, WriteConflict
from .space_state import StagedBatch, has_writes, wire_tail
from .storage import RelayStore

log = logging.getLogger("crdt_sync.relay")
#: At most this many envelopes, and bytes, are read per catch-up query.
CATCH_UP_COUNT = 512
CATCH_UP_BYTES = 4 * 1024 * 1024
#: Pages one catch-up reads before it yields (the next notice or re-check goes on).
CATCH_UP_PAGES = 8


class SharedRelayStore(RelayStore):
    """A :class:`RelayStore` on storage other relay nodes write too (see the module)."""

    #: called with the rows of each commit once it is durable (the bus publishes them)
    on_durable: Callable[[list[EnvelopeRow]], None] = staticmethod(lambda rows: None)
    #: commits judged again after another node took one of their chain positions
    conflicts = 0

    # -- commits -----------------------------------------------------------------------
    def _committed(self, batch: StagedBatch, done: asyncio.Future[None], started: float) -> None:
        exc = None if done.cancelled() else done.exception()
        if isinstance(exc, WriteConflict):
            self._committing = None
            self._rejudge(batch, exc)
            return
        super()._committed(batch, done, started)
        if exc is None and batch.rows:
            self.on_durable(batch.rows)

    def _rejudge(self, batch: StagedBatch, conflict: WriteConflict) -> None:
        """Judge ``batch`` and everything staged after it again, against the heads as the
        database has them now (see the module)."""
        self.conflicts += 1
        log.info("relay.write-conflict", extra={"fields": {"detail": str(conflict)}})
        staged, self._staged = self._staged, StagedBatch()
        waiting = [f for f in (batch.future, staged.future) if f is not None and not f.done()]
        for st in self._spaces.values():
            st.tail.clear()
        self._spaces.clear()
        self._fifo.clear()
        self._fifo_bytes = 0
        new = self._staged
        for old in (batch, staged):
            new.rejections.extend(old.rejections)
            by_space: dict[str, list[bytes]] = {}
            for row in old.rows:
                by_space.setdefault(row.space, []).append(row.wire)
            for space, wires in by_space.items():
                try:
                    self.accept(wires, space, source="relay")
                except Rejected as rejected:  # (they verified before: not expected)
                    log.warning("relay.rejudge.refused", extra={"fields": {
                        "space": space, "reason": rejected.reason, "detail": rejected.detail}})
            for rec in old.forks:
                try:
                    self.keep_fork(forks.verify(rec.proof), rec.source)
                except Rejected:
                    continue
            for q in old.quarantines:
                self.set_aside(q)
            for space, author in old.lifts:
                try:
                    self.lift(space, author)
                except Rejected:
                    continue
        if has_writes(self._staged):
            self._schedule()
        after = self.durable()
        for future in waiting:
            if after is None:
                future.set_result(None)
            else:
                after.add_done_callback(functools.partial(_pass_on, future))
        for space in {row.space for old in (batch, staged) for row in old.rows}:
            self.on_append(space)  # their sessions read again (their tail positions are void)

    # -- other nodes' commits --------------------------------------------------------------
    def is_open(self, space: str) -> bool:
        return space in self._spaces

    async def catch_up(self, space: str) -> int:
        """Append to ``space``'s tail what the database holds beyond its heads in memory
        (other nodes' commits), and wake its sessions; returns how many. A space not in
        memory is skipped: it is read from the database when next asked for."""
        added = 0
        for _ in range(CATCH_UP_PAGES):
            st = self._spaces.get(space)
            if st is None:
                return added
            covered, stops = dict(st.vv), dict(st.forks)
            found = await asyncio.to_thread(self.reader.missing_envelopes, space, covered,
                                            CATCH_UP_COUNT, CATCH_UP_BYTES, stops)
            if not found:
                break
            got = self.apply_remote(space, found)
            added += got
            if not got or len(found) < CATCH_UP_COUNT:
                break
        return added

    def apply_remote(self, space: str, envelopes: list[Envelope]) -> int:
        """Append envelopes another node committed to ``space``'s tail (each the next of its
        chain in memory; others are skipped: a later catch-up reads them again)."""
        st = self._spaces.get(space)
        if st is None:
            return 0
        busy = {author for author, _ in st.pending}  # this node's own: its commit decides
        added = 0
        membership = False
        for env in envelopes:
            author = env.author
            if author in busy or env.seq != st.vv.get(author, 0) + 1 or self.excluded(env):
                continue
            committed = st.durable_end == st.end  # (committed entries stay a prefix)
            st.vv[author], st.hashes[author] = env.seq, env.hash
            self._append(st, (author, env.author_key, env.seq, len(env.wire), wire_tail(env)))
            if committed:
                st.durable_end = st.end
            membership = membership or is_membership(env.payload)
            added += 1
        if membership:
            self.forget_members([space])  # rebuilt from the database, with the new records
        if added:
            self.on_append(space)
        return added

    async def refresh(self, space: str) -> int:
        """The periodic re-check of an open space: :meth:`catch_up`, and when the database
        holds fork proofs or quarantines memory does not (another node's), the space's
        memory is dropped (read again from the database) and its sessions are woken."""
        st = self._spaces.get(space)
        if st is None:
            return 0
        keys, held = await asyncio.gather(asyncio.to_thread(self.reader.fork_keys, space),
                                          asyncio.to_thread(self.reader.quarantined, space))
        st = self._spaces.get(space)
        if st is None:
            return 0
        if (not set(keys) <= st.proofs or not set(held) <= set(st.quarantined)) and not st.pending:
            self.release(space)
            self.on_append(space)
            return 0
        return await self.catch_up(space)


def _pass_on(future: asyncio.Future[None], done: asyncio.Future[None]) -> None:
    if future.done():
        return
    exc = None if done.cancelled() else done.exception()
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
        future.exception()  # retrieved: sessions that were not waiting are fine


__all__ = ["CATCH_UP_COUNT", "SharedRelayStore"]
