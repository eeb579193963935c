"""The relay's storage: envelopes only, with a pipelined group commit over a durable
backend (:mod:`crdt_sync.relay.backend`; SQLite by default), and a bounded in-memory tail of
each space for fan-out.

The relay never opens a payload and keeps no document in memory: it verifies signatures and
chains (:mod:`crdt_sync.chain`, the rules devices apply too), stores envelopes, and serves
what each device lacks. Every envelope is committed with fsync before it is acknowledged;
sessions that receive at the same time share one commit (group commit).

How the work is split:

* The event loop thread verifies envelopes and checks chains against the *heads* (each
  author's last seq and hash per space), kept in memory and updated as envelopes are
  accepted, so neither a chain check nor a version vector costs a query.
* Accepted envelopes are staged; each staged batch is written in one transaction
  (:meth:`RelayBackend.stage <crdt_sync.relay.backend.RelayBackend.stage>`), which a writer
  thread commits (the fsync) while the loop keeps serving (SQLite releases the GIL); the
  next batch gathers meanwhile. ``durable()`` gives the
  future of the commit that covers everything accepted so far: ACKs wait for it, nothing
  else does.
* Each accepted envelope is appended, already encoded for the wire, to its space's *tail*
  (a bounded in-memory log); sessions take new envelopes from there (:meth:`outgoing`)
  instead of each re-reading and re-decoding them from SQLite. A session that fell behind
  the tail (it was trimmed: memory is bounded) catches up from SQLite, then continues from
  the tail.

Beside it: :mod:`~crdt_sync.relay.space_state` (the per-space state and staged batch it owns),
:mod:`~crdt_sync.relay.quarantine` (:class:`RelayQuarantine`), :mod:`~crdt_sync.relay.member_store`
(each space's membership log), :mod:`~crdt_sync.relay.snapshot_store` (each space's kept
snapshot) and :mod:`~crdt_sync.relay.host` (``RelayHost``, one session's view of it).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from crdt_sync import chain, clocks
from crdt_sync.chain import Fault, Outcome, PendingChains
from crdt_sync.envelope import Envelope, open_envelope
from crdt_sync.errors import Rejected, StoreError
from crdt_sync.identity import Identity
from crdt_sync.quarantine import QuarantineRecord, SetAside, check_liftable
from crdt_sync.results import Accepted

from .backend import EnvelopeRow, RejectionRecord, RelayBackend, WriteBatch
from .fork_store import RelayForks
from .member_store import RelayMembership
from .outage import StoreOutage
from .quarantine import RelayQuarantine
from .snapshot_store import RelaySnapshots
from .space_state import Outgoing, RelaySpace, StagedBatch, has_writes, wire_tail
from .sqlite_store import SqliteRelayBackend

RELAY_DB = "relay"  # the relay's own store lives in DIR/relay/

#: Opens one connection's worth of relay storage in a directory (the writer's, the reader's).
OpenBackend = Callable[[Path], RelayBackend]


def backend_for(store: str | None) -> OpenBackend:
    """What opens the storage a ``store`` setting names: None, SQLite in the data directory;
    a ``postgresql://`` URL, that database. StoreError: Postgres without the postgres extra."""
    if store is None:
        return SqliteRelayBackend
    try:
        from .postgres_store import PostgresRelayBackend
    except ImportError:
        raise StoreError("a Postgres store needs the postgres extra: "
                         "pip install 'crdt-sync[postgres]'") from None
    return lambda directory: PostgresRelayBackend(store)


#: An entry's bookkeeping beyond its tail bytes, for the memory budget.
_ENTRY_OVERHEAD = 200
#: Each space state numbers its tail entries from a base of its own: a cursor from a state
#: that was evicted and created again is below the new base, hence invalid.
_BASE_STEP = 1 << 48


class RelayStore(RelayForks, RelayMembership, RelaySnapshots):
    """One store shared by every session of the relay process.

    Args:
        directory: the relay's data directory.
        commit_delay: how long a batch waits for others to join before its commit starts
            (0: the next turn of the event loop; a batch also grows while the previous
            commit is running).
        tail_entries: envelopes kept in memory per space for fan-out.
        tail_bytes: bytes kept in memory for fan-out, over all spaces.
        cached_spaces: spaces whose heads stay in memory (least recently used go first).
        backend: opens the storage (:class:`~crdt_sync.relay.sqlite_store.SqliteRelayBackend`
            by default) in ``directory/relay``.

    Raises:
        StoreError: the storage cannot be opened (or migrated); the message says why.
    """

    def __init__(self, directory: Path, commit_delay: float = 0.0, tail_entries: int = 4096,
                 tail_bytes: int = 16 * 1024 * 1024, cached_spaces: int = 10_000,
                 backend: OpenBackend = SqliteRelayBackend, enforce_membership: bool = True) -> None:
        self.enforce_membership = enforce_membership
        self.directory = directory / RELAY_DB
        self.directory.mkdir(parents=True, exist_ok=True)
        #: the writer's connection (stages and commits batches), which also migrates
        self.store: RelayBackend = backend(self.directory)
        try:
            self.identity = Identity(self.store.identity_seed(Identity.generate().seed))
            #: the loop thread's reads: committed state only
            self.reader: RelayBackend = backend(self.directory)
        except BaseException:
            self.store.close()
            raise
        self.commit_delay = commit_delay
        self.tail_entries, self.tail_bytes, self.cached_spaces = tail_entries, tail_bytes, cached_spaces
        self._spaces: OrderedDict[str, RelaySpace] = OrderedDict()
        self._next_base = 0
        #: every tail entry in append order, for the global byte budget: (space, size)
        self._fifo: deque[tuple[RelaySpace, int]] = deque()
        self._fifo_bytes = 0
        self._staged = StagedBatch()
        self._committing: StagedBatch | None = None
        self._scheduled = False
        self._writer: ThreadPoolExecutor | None = None
        self._lock = threading.RLock()  # the writer connection: the loop, the writer thread, close()
        #: called with a space whose tail grew (fan-out)
        self.on_append: Callable[[str], None] = lambda space: None
        #: called after each commit with how long it took (metrics)
        self.on_commit: Callable[[float], None] = lambda seconds: None
        self.commits = 0
        self.outage = StoreOutage()  # a failed commit: pushes are refused for a while
        #: the authors set aside per space (crdt_sync.quarantine.QuarantineBook)
        self.quarantine = RelayQuarantine(self)

    # -- in-memory state -------------------------------------------------------------------
    def _space(self, name: str) -> RelaySpace:
        st = self._spaces.get(name)
        if st is not None:
            self._spaces.move_to_end(name)
            st.released = False
            return st
        vv: dict[str, int] = {}
        hashes: dict[str, bytes] = {}
        for author, (seq, h) in self.reader.heads(name).items():
            vv[author], hashes[author] = seq, h
        self._next_base += _BASE_STEP
        st = self._spaces[name] = RelaySpace(name, vv, hashes, self._next_base, lo=self._next_base,
                                         durable_end=self._next_base,
                                         quarantined=self.reader.quarantined(name))
        for author, seq in self.reader.fork_keys(name):
            st.proofs.add((author, seq))
            st.forks[author] = min(seq, st.forks.get(author, seq))
        if len(self._spaces) > self.cached_spaces:
            self._evict()
        return st

    def _evict(self) -> None:
        # Spaces with uncommitted envelopes stay: SQLite does not have their heads yet.
        for name in list(self._spaces):
            if len(self._spaces) <= self.cached_spaces:
                break
            st = self._spaces[name]
            if not st.pending and not self._quarantine_staged(name):
                del self._spaces[name]
                st.tail.clear()

    def _quarantine_staged(self, space: str) -> bool:
        batches = [self._staged] if self._committing is None else [self._staged, self._committing]
        return any(q.space == space for b in batches for q in b.quarantines) or any(
            s == space for b in batches for s, _ in b.lifts)

    def spaces_in_memory(self) -> int:
        """How many spaces' state memory holds now (at most ``cached_spaces``)."""
        return len(self._spaces)

    def release(self, name: str) -> None:
        """No session names ``name`` any more: forget what memory holds of it (SQLite has it
        all), now or, with envelopes still being committed, once they are. A name nobody
        stored anything under leaves nothing behind."""
        st = self._spaces.get(name)
        if st is None:
            return
        if st.pending:
            st.released = True
            return
        del self._spaces[name]
        st.tail.clear()  # (its FIFO entries still count until they reach the front, as in _evict)

    def _append(self, st: RelaySpace, entry: Outgoing) -> None:
        st.tail.append(entry)
        size = entry[3] + _ENTRY_OVERHEAD
        self._fifo.append((st, size))
        self._fifo_bytes += size
        if len(st.tail) > self.tail_entries:
            st.tail.popleft()
            st.lo += 1
            st.skip += 1  # its FIFO entry is still counted until it reaches the front
        # The FIFO holds at most tail_bytes / _ENTRY_OVERHEAD entries.
        while self._fifo_bytes > self.tail_bytes:
            old, old_size = self._fifo.popleft()
            self._fifo_bytes -= old_size
            if old.skip:
                old.skip -= 1  # dropped already by its space's own bound
            elif old.tail:  # (an evicted space's tail is empty)
                old.tail.popleft()
                old.lo += 1

    # -- group commit ----------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return bool(has_writes(self._staged) or self._committing is not None)

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (tools, tests): write through
            self._flush_sync()
            return
        if self._staged.future is None:
            self._staged.future = loop.create_future()
        if not self._scheduled and self._committing is None:
            self._scheduled = True
            if self.commit_delay > 0:
                loop.call_later(self.commit_delay, self._start_commit)
            else:
                loop.call_soon(self._start_commit)

    def durable(self) -> asyncio.Future[None] | None:
        """A future done once everything accepted so far is committed (None: it is)."""
        if self._staged.future is not None:
            return self._staged.future
        if self._committing is not None:
            return self._committing.future
        return None

    async def commit(self) -> None:
        """Return once everything accepted so far is committed (fsync'd)."""
        future = self.durable()
        if future is not None:
            await asyncio.shield(future)

    def _start_commit(self) -> None:
        self._scheduled = False
        if self._committing is not None or not has_writes(self._staged):
            return
        batch, self._staged = self._staged, StagedBatch()
        self._committing = batch
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="relay-writer")
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            # The inserts run here (a few statements, no I/O wait); only the COMMIT, the
            # fsync, goes to the writer thread: one GIL hand-off per commit each way.
            with self._lock:
                self._insert(batch)
        except Exception as exc:  # the disk (or the database) failed
            self._committing = None
            self._failed(batch, exc)
            return
        done = loop.run_in_executor(self._writer, self._commit_tx)
        done.add_done_callback(lambda f: self._committed(batch, f, started))

    def _write(self, batch: StagedBatch) -> None:
        """One transaction for the batch, committed with fsync (without an event loop)."""
        with self._lock:
            self._insert(batch)
            self._commit_tx()

    def _insert(self, batch: StagedBatch) -> None:
        """Open the batch's transaction and write it (not committed)."""
        new_spaces = [s for s, st in batch.spaces.items() if not st.joined]
        self.store.stage(WriteBatch(batch.rows, new_spaces, batch.rejections, batch.forks,
                                    batch.quarantines, batch.lifts, batch.membership, batch.snapshots))

    def _commit_tx(self) -> None:
        """COMMIT the open transaction (with fsync); in the writer thread when serving."""
        with self._lock:
            self.store.commit()

    def _committed(self, batch: StagedBatch, done: asyncio.Future[None], started: float) -> None:
        self._committing = None
        exc = done.exception()
        if exc is not None:
            self._failed(batch, exc)
            return
        self.commits += 1
        self.outage.committed()
        for st in batch.spaces.values():
            st.joined = True  # (a space state outlives no commit of its own: see _evict)
        self._settle(batch)
        if batch.future is not None and not batch.future.done():
            batch.future.set_result(None)
        self.on_commit(time.monotonic() - started)
        if has_writes(self._staged):
            self._schedule()

    def _failed(self, batch: StagedBatch, exc: BaseException) -> None:
        """The disk failed: nobody may ACK what was not stored, and what was staged after
        it may chain onto envelopes that are not there: drop it all, reload from SQLite."""
        self.outage.failed(exc)
        staged, self._staged = self._staged, StagedBatch()
        for failed in (batch, staged):
            if failed.future is not None and not failed.future.done():
                failed.future.set_exception(exc)
                failed.future.exception()  # retrieved: sessions that were not waiting are fine
        for st in self._spaces.values():
            st.tail.clear()
        self._spaces.clear()
        self._fifo.clear()
        self._fifo_bytes = 0

    def _flush_sync(self) -> None:
        batch, self._staged = self._staged, StagedBatch()
        if has_writes(batch):
            self._write(batch)
            self.commits += 1
            for st in batch.spaces.values():
                st.joined = True
        self._settle(batch)

    def _settle(self, batch: StagedBatch) -> None:
        for st, key in batch.keys:
            st.pending.pop(key, None)
        for st, end in batch.ends.items():
            st.durable_end = end
            if st.stalled:
                st.stalled = False
                self.on_append(st.name)
        for st in batch.spaces.values():
            if st.released and not st.pending and self._spaces.get(st.name) is st:
                self.release(st.name)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        self._committing = None
        self._flush_sync()
        self.store.close()
        self.reader.close()

    # -- reads -----------------------------------------------------------------------------
    def version_vector(self, space: str) -> dict[str, int]:
        return dict(self._space(space).vv)

    def missing_envelopes(self, space: str, covered: dict[str, int], max_count: int,
                          max_bytes: int) -> list[Envelope]:
        """From SQLite: committed envelopes only (none of an author past its fork point or
        its cut)."""
        return self.reader.missing_envelopes(space, covered, max_count, max_bytes,
                                             self.serving_stops(space))

    def outgoing(self, space: str, covered: dict[str, int], cursor: int | None, max_count: int,
                 max_bytes: int) -> tuple[list[Outgoing], int | None]:
        """Envelopes of ``space`` beyond ``covered``, in causal order, bounded in count and
        bytes, with the cursor to pass next time.

        ``cursor`` None means "read SQLite"; a cursor is the tail position before which
        everything stored is covered (so ``covered`` may only have grown since).
        """
        st = self._space(space)
        if cursor is not None and cursor >= st.lo:
            if cursor >= st.end:
                return [], cursor  # nothing new: no query, no scan
            return self._scan(st, covered, cursor, max_count, max_bytes)
        # Catch up from storage (committed envelopes), then from the tail.
        committed = self.reader.missing_envelopes(space, covered, max_count, max_bytes,
                                                  self.serving_stops(space))
        if committed:
            out = [(env.author, env.author_key, env.seq, len(env.wire), wire_tail(env)) for env in committed]
            return out, None
        # Everything committed is covered; the rest is in the tail from durable_end on,
        # unless the tail was trimmed past it: then read again once that is committed.
        if st.durable_end < st.lo:
            st.stalled = True
            return [], None
        return self._scan(st, covered, st.durable_end, max_count, max_bytes)

    def _scan(self, st: RelaySpace, covered: dict[str, int], cursor: int, max_count: int,
              max_bytes: int) -> tuple[list[Outgoing], int]:
        out: list[Outgoing] = []
        size = 0
        tail, pos, end = st.tail, cursor, st.end
        get = covered.get
        stops = self.serving_stops(st.name)  # (forks empty the tail: these are the cuts)
        while pos < end:
            entry = tail[pos - st.lo]
            if entry[2] > get(entry[0], 0) and not (stops and entry[2] >= stops.get(entry[0], entry[2] + 1)):
                if out and (len(out) >= max_count or size + entry[3] > max_bytes):
                    break
                out.append(entry)
                size += entry[3]
            pos += 1
        return out, pos

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None:
        st = self._space(space)
        top = st.vv.get(author, 0)
        if seq > top:
            return None
        if seq == top:
            return st.hashes[author]
        h = st.pending.get((author, seq))
        return h if h is not None else self.reader.envelope_hash(space, author, seq)

    def chain_head(self, space: str, author: str) -> tuple[int, bytes]:
        """The author's head as accepted so far (committed or not)."""
        st = self._space(space)
        top = st.vv.get(author, 0)
        return (top, st.hashes[author]) if top else (0, b"")

    def spaces(self) -> list[str]:
        return self.reader.spaces()

    def rejections(self, limit: int = 100) -> list[RejectionRecord]:
        """The latest committed refusals, newest first."""
        return self.reader.rejections(limit)

    def size_bytes(self) -> int:
        return self.reader.size_bytes()

    def healthy(self) -> bool:
        return self.reader.healthy()

    # -- writes ------------------------------------------------------------------------------
    def receive(self, envelopes: list[bytes], space: str | None, tolerate_gaps: bool,
                source: str = "peer") -> tuple[int, int, int]:
        """Verify (signature, chain) and accept, all or nothing; the payloads stay unread.
        Accepted envelopes are committed by the next group commit (:meth:`durable`).
        Envelopes of quarantined authors are skipped (counted as gaps). A fork is proven and
        kept, and neither branch is accepted (relay/fork_store.py).

        Raises:
            Rejected: the first envelope that fails; nothing of this call is kept.
        """
        got = self._accept(envelopes, space, tolerate_gaps, per_author=False, source=source)
        return got.applied, got.duplicates, got.gaps + got.skipped

    def accept(self, envelopes: list[bytes], space: str | None, source: str = "peer") -> Accepted:
        """Verify and accept per author (sync sessions; gaps tolerated): an envelope that
        verifies but breaks a rule checked here (the chain rules, and every other rule on
        the envelope itself in the shared core code) quarantines its author in its space from
        that seq on, staged with the batch; later envelopes of that chain are neither stored
        nor forwarded; the rest of the batch carries on.

        Raises:
            Rejected: an envelope that does not verify (its author is unknown); nothing of
                this call is kept.
        """
        return self._accept(envelopes, space, True, per_author=True, source=source)

    def _accept(self, envelopes: list[bytes], space: str | None, tolerate_gaps: bool,
                per_author: bool, source: str = "peer") -> Accepted:
        verified = []
        for wire in envelopes:
            env = open_envelope(wire)
            chain.check_space(env, space).accept()
            verified.append(env)
        applied = dups = gaps = skipped = 0
        # Checked against the heads plus what this call accepts before any of it is kept.
        pending = PendingChains(self)
        accepted: list[Envelope] = []
        started: list[QuarantineRecord] = []
        carried: set[bytes] = set()  # hashes of the accepted envelopes that carry membership
        noticed: set[tuple[str, str]] = set()  # (space, author) told once per call
        aside: dict[str, dict[str, SetAside]] = {}  # each space's, looked up once per call
        for env in verified:
            if self.excluded(env):  # its author forked before this seq: neither branch is kept
                skipped += per_author  # (a session's: skipped like any set-aside chain)
                continue
            held = aside.get(env.space)
            if held is None:
                held = aside[env.space] = self._space(env.space).quarantined
            if held:
                aside_from = held.get(env.author)
                if aside_from is not None and env.seq >= aside_from.from_seq:
                    skipped += 1
                    continue
            try:
                verdict = self._judge(env, pending, tolerate_gaps)
                if verdict.fault is Fault.FORK:  # proven: kept, the author set aside (not an error)
                    # A session is told, as of any quarantine (its host records the rejection).
                    self.fork_of(env, accepted, source, record=not per_author)
                    accepted = [e for e in accepted if not self.excluded(e)]
                    held_now = self.quarantine_record(env.space, env.author) if per_author else None
                    if held_now is not None and held_now.reason == "fork":
                        started.append(held_now)
                    continue
                outcome = verdict.accept()
                judged = self.judge_members(env) if outcome is Outcome.NEW else None
            except Rejected as rejected:  # signed, so its author is known: set aside
                if not per_author:
                    self.forget_members({e.space for e in accepted if e.hash in carried})
                    raise
                started.append(self.quarantine.quarantine(QuarantineRecord.of(env, rejected)))
                continue
            if outcome is Outcome.DUPLICATE:
                dups += 1
                cut = self.past_cut(env)  # stored past its cut: served to no one
                if cut is not None and (env.space, env.author) not in noticed:
                    noticed.add((env.space, env.author))
                    started.append(QuarantineRecord.of(env, Rejected(
                        "revoked", f"the author was revoked after seq {cut}")))
            elif outcome is Outcome.GAP:
                gaps += 1
            else:
                assert judged is not None
                if judged.notice is not None and (env.space, env.author) not in noticed:
                    noticed.add((env.space, env.author))  # told, no quarantine row (members.py)
                    started.append(QuarantineRecord.of(env, judged.notice))
                if not judged.store:
                    skipped += 1
                    continue
                if judged.records is not None:
                    self.members(env.space).add(judged.records, env)
                    carried.add(env.hash)
                pending.extend(env)
                accepted.append(env)
        batch = self._staged
        for env in accepted:
            # Looked up here, not kept from the check: making room for another space of this
            # call may have evicted it (it had nothing pending then, so SQLite held what the
            # check saw).
            author = env.author
            st = self._space(env.space)
            st.vv[author] = env.seq
            st.hashes[author] = env.hash
            key = (author, env.seq)
            st.pending[key] = env.hash
            batch.keys.append((st, key))
            batch.rows.append(EnvelopeRow(env.space, author, env.seq, env.hash, env.hlc, env.wire))
            if env.hash in carried:
                batch.membership.append((env.space, author, env.seq))
            batch.spaces[env.space] = st
            self._append(st, (author, env.author_key, env.seq, len(env.wire), wire_tail(env)))
            batch.ends[st] = st.end
            applied += 1
        if accepted:
            self._schedule()
            for name in {env.space for env in accepted}:
                self.on_append(name)
        return Accepted(applied, dups, gaps, skipped, tuple(started))

    @staticmethod
    def _judge(env: Envelope, chains: PendingChains, tolerate_gaps: bool) -> chain.Verdict:
        """Every rule the relay applies to a verified envelope (the shared core code: the
        chain rules, and the envelope's own rules as they are added); raises
        :class:`Rejected` for a refusal, which quarantines the author in a session. The
        clock range comes first: nothing out of it is staged (SQLite ends at 2**63 - 1)."""
        clocks.check_envelope(env)
        return chain.check(env, chains, tolerate_gaps)  # a fork is the caller's (not a refusal)

    # -- quarantine (RelayQuarantine is the API) -------------------------------------------
    def quarantined_authors(self, space: str) -> dict[str, SetAside]:
        return self._space(space).quarantined

    def quarantines(self, space: str | None = None) -> list[QuarantineRecord]:
        """Committed quarantines (of ``space``)."""
        return self.reader.quarantines(space)

    def set_aside(self, record: QuarantineRecord) -> QuarantineRecord:
        st = self._space(record.space)
        held = st.quarantined.get(record.author)
        if held is not None and held.from_seq <= record.from_seq:
            return self.quarantine_record(record.space, record.author) or record
        st.quarantined[record.author] = SetAside(record.from_seq, record.reason, record.detail)
        self._staged.quarantines.append(record)
        self._schedule()
        return record

    def quarantine_record(self, space: str, author: str) -> QuarantineRecord | None:
        if author not in self._space(space).quarantined:
            return None
        for batch in (self._staged, self._committing):
            for q in reversed(batch.quarantines if batch is not None else []):
                if q.space == space and q.author == author:
                    return q
        return self.reader.quarantine(space, author)

    def lift(self, space: str, author: str) -> bool:
        held = self._space(space).quarantined.get(author)
        check_liftable(space, author, None if held is None else held.reason)  # a fork: never
        if self._space(space).quarantined.pop(author, None) is None:
            return False
        self._staged.lifts.append((space, author))
        self._schedule()
        return True

    def record_ack(self, peer: str, space: str, vv: dict[str, int]) -> None:
        """Not kept: a device's next HAVE says where it is, and writing every ACK would
        cost the relay a commit per frame."""

    def record_rejection(self, source: str, rejected: Rejected) -> None:
        self._staged.rejections.append(
            RejectionRecord(int(time.time()), source, rejected.reason, rejected.detail))
        self._schedule()


__all__ = ["OpenBackend", "backend_for", "Outgoing", "RelayQuarantine", "RelayStore"]
