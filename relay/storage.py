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
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cbor2

from crdt_sync import chain, clocks
from crdt_sync.chain import Fault, Outcome, PendingChains
from crdt_sync.envelope import Envelope, open_envelope
from crdt_sync.errors import Rejected
from crdt_sync.fork_table import ForkRecord
from crdt_sync.hlc import DEFAULT_MAX_SKEW_MS
from crdt_sync.identity import Identity
from crdt_sync.protocol.messages import E_LIMIT, ProtocolViolation
from crdt_sync.quarantine import QuarantineBook, QuarantineRecord, SetAside, check_liftable
from crdt_sync.results import Accepted

from .backend import EnvelopeRow, RejectionRecord, RelayBackend, WriteBatch
from .fork_store import RelayForks
from .sqlite_store import SqliteRelayBackend

RELAY_DB = "relay"  # the relay's own store lives in DIR/relay/

#: One envelope as sessions send it: (author id, author key, seq, wire size, tail), where
#: tail is the CBOR of ``seq, hlc, payload, signature`` (see Session._pump).
Outgoing = tuple[str, bytes, int, int, bytes]
#: Opens one connection's worth of relay storage in a directory (the writer's, the reader's).
OpenBackend = Callable[[Path], RelayBackend]
#: An entry's bookkeeping beyond its tail bytes, for the memory budget.
_ENTRY_OVERHEAD = 200
#: Each space state numbers its tail entries from a base of its own: a cursor from a state
#: that was evicted and created again is below the new base, hence invalid.
_BASE_STEP = 1 << 48


@dataclass(eq=False)
class _Space:
    """What the relay keeps in memory of one space."""

    name: str
    vv: dict[str, int]
    hashes: dict[str, bytes]
    base: int
    #: entries ``lo .. lo + len(tail) - 1``; the next one appended gets ``lo + len(tail)``
    tail: deque[Outgoing] = field(default_factory=deque)
    lo: int = 0
    #: staged or committing envelopes of this space: (author, seq) -> hash
    pending: dict[tuple[str, int], bytes] = field(default_factory=dict)
    #: tail position of the first envelope not yet committed (committed ones are a prefix)
    durable_end: int = 0
    #: entries dropped by the per-space bound whose FIFO entries are still counted
    skip: int = 0
    #: a session found uncommitted envelopes trimmed from the tail: wake it at the commit
    stalled: bool = False
    #: its row in the spaces table is known to be committed
    joined: bool = False
    #: fork points ({author: seq}: nothing of it from there is served) and proofs (relay/fork_store.py)
    forks: dict[str, int] = field(default_factory=dict)
    proofs: set[tuple[str, int]] = field(default_factory=set)
    #: authors set aside here (committed or staged): their envelopes are skipped
    quarantined: dict[str, SetAside] = field(default_factory=dict)
    #: no session names it any more: dropped once nothing of it is pending (see release)
    released: bool = False

    @property
    def end(self) -> int:
        return self.lo + len(self.tail)


@dataclass(eq=False)
class _Batch:
    """Writes staged for one commit."""

    rows: list[EnvelopeRow] = field(default_factory=list)
    spaces: dict[str, _Space] = field(default_factory=dict)
    keys: list[tuple[_Space, tuple[str, int]]] = field(default_factory=list)
    #: each space's tail end after its last envelope of this batch
    ends: dict[_Space, int] = field(default_factory=dict)
    rejections: list[RejectionRecord] = field(default_factory=list)
    forks: list[ForkRecord] = field(default_factory=list)
    quarantines: list[QuarantineRecord] = field(default_factory=list)
    lifts: list[tuple[str, str]] = field(default_factory=list)
    future: asyncio.Future[None] | None = None

    def __bool__(self) -> bool:
        """Whether it has anything to write."""
        return _has_writes(self)


def _has_writes(batch: _Batch) -> bool:
    return bool(batch.rows or batch.rejections or batch.forks or batch.quarantines or batch.lifts)


class RelayStore(RelayForks):
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
                 backend: OpenBackend = SqliteRelayBackend) -> None:
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
        self._spaces: OrderedDict[str, _Space] = OrderedDict()
        self._next_base = 0
        #: every tail entry in append order, for the global byte budget: (space, size)
        self._fifo: deque[tuple[_Space, int]] = deque()
        self._fifo_bytes = 0
        self._staged = _Batch()
        self._committing: _Batch | None = None
        self._scheduled = False
        self._writer: ThreadPoolExecutor | None = None
        self._lock = threading.RLock()  # the writer connection: the loop, the writer thread, close()
        #: called with a space whose tail grew (fan-out)
        self.on_append: Callable[[str], None] = lambda space: None
        #: called after each commit with how long it took (metrics)
        self.on_commit: Callable[[float], None] = lambda seconds: None
        self.commits = 0
        #: the authors set aside per space (crdt_sync.quarantine.QuarantineBook)
        self.quarantine = RelayQuarantine(self)

    # -- in-memory state -------------------------------------------------------------------
    def _space(self, name: str) -> _Space:
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
        st = self._spaces[name] = _Space(name, vv, hashes, self._next_base, lo=self._next_base,
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

    def _append(self, st: _Space, entry: Outgoing) -> None:
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
        return bool(_has_writes(self._staged) or self._committing is not None)

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
        if self._committing is not None or not _has_writes(self._staged):
            return
        batch, self._staged = self._staged, _Batch()
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

    def _write(self, batch: _Batch) -> None:
        """One transaction for the batch, committed with fsync (without an event loop)."""
        with self._lock:
            self._insert(batch)
            self._commit_tx()

    def _insert(self, batch: _Batch) -> None:
        """Open the batch's transaction and write it (not committed)."""
        new_spaces = [s for s, st in batch.spaces.items() if not st.joined]
        self.store.stage(WriteBatch(batch.rows, new_spaces, batch.rejections, batch.forks,
                                    batch.quarantines, batch.lifts))

    def _commit_tx(self) -> None:
        """COMMIT the open transaction (with fsync); in the writer thread when serving."""
        with self._lock:
            self.store.commit()

    def _committed(self, batch: _Batch, done: asyncio.Future[None], started: float) -> None:
        self._committing = None
        exc = done.exception()
        if exc is not None:
            self._failed(batch, exc)
            return
        self.commits += 1
        for st in batch.spaces.values():
            st.joined = True  # (a space state outlives no commit of its own: see _evict)
        self._settle(batch)
        if batch.future is not None and not batch.future.done():
            batch.future.set_result(None)
        self.on_commit(time.monotonic() - started)
        if _has_writes(self._staged):
            self._schedule()

    def _failed(self, batch: _Batch, exc: BaseException) -> None:
        """The disk failed: nobody may ACK what was not stored, and what was staged after
        it may chain onto envelopes that are not there: drop it all, reload from SQLite."""
        staged, self._staged = self._staged, _Batch()
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
        batch, self._staged = self._staged, _Batch()
        if _has_writes(batch):
            self._write(batch)
            self.commits += 1
            for st in batch.spaces.values():
                st.joined = True
        self._settle(batch)

    def _settle(self, batch: _Batch) -> None:
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
        """From SQLite: committed envelopes only (none of an author past its fork point)."""
        return self.reader.missing_envelopes(space, covered, max_count, max_bytes,
                                             self._space(space).forks)

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
        committed = self.reader.missing_envelopes(space, covered, max_count, max_bytes, st.forks)
        if committed:
            out = [(env.author, env.author_key, env.seq, len(env.wire), _tail(env)) for env in committed]
            return out, None
        # Everything committed is covered; the rest is in the tail from durable_end on,
        # unless the tail was trimmed past it: then read again once that is committed.
        if st.durable_end < st.lo:
            st.stalled = True
            return [], None
        return self._scan(st, covered, st.durable_end, max_count, max_bytes)

    def _scan(self, st: _Space, covered: dict[str, int], cursor: int, max_count: int,
              max_bytes: int) -> tuple[list[Outgoing], int]:
        out: list[Outgoing] = []
        size = 0
        tail, pos, end = st.tail, cursor, st.end
        get = covered.get
        while pos < end:
            entry = tail[pos - st.lo]
            if entry[2] > get(entry[0], 0):
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
            except Rejected as rejected:  # signed, so its author is known: set aside
                if not per_author:
                    raise
                started.append(self.quarantine.quarantine(QuarantineRecord.of(env, rejected)))
                continue
            if outcome is Outcome.DUPLICATE:
                dups += 1
            elif outcome is Outcome.GAP:
                gaps += 1
            else:
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
            batch.spaces[env.space] = st
            self._append(st, (author, env.author_key, env.seq, len(env.wire), _tail(env)))
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


def _tail(env: Envelope) -> bytes:
    # The CBOR of the items after the author in a WireEnvelope ([author, seq, hlc, payload,
    # signature]): the array header (1 byte for 4 items) is dropped.
    return cbor2.dumps([env.seq, env.hlc, env.payload, env.signature])[1:]


class RelayHost:
    """One session's view of the relay (a :class:`~crdt_sync.protocol.SyncHost`)."""

    keeps_all_spaces = True

    def __init__(self, relay: RelayStore, admit: Callable[[str], str | None],
                 limit: Callable[[str, int, int], str | None],
                 check: Callable[[str], str | None] | None = None,
                 stored: Callable[[str, int], None] | None = None) -> None:
        """``admit(device)``, and ``limit(device, envelopes, bytes)`` and ``check(space)``
        before a frame's envelopes are stored, return a refusal or None; ``stored(space,
        applied)`` is told what was stored of each frame (the relay's pacing)."""
        self.relay = relay
        self.identity = relay.identity
        self.device_id = relay.identity.id
        self.peer: str | None = None
        self._admit = admit
        self._limit = limit
        #: how far ahead of the relay's clock an envelope may be stamped (the session holds
        #: back what is further ahead: docs/PROTOCOL.md, "Clocks"); the server sets it
        self.max_clock_skew_ms = DEFAULT_MAX_SKEW_MS
        self._check = check
        self._stored = stored
        self.version_vector = relay.version_vector
        self.missing_envelopes = relay.missing_envelopes
        self.outgoing = relay.outgoing
        self.envelope_hash = relay.envelope_hash
        self.fork_proofs = relay.fork_proofs
        self.fork_count = relay.fork_count
        self.envelope_wire = relay.envelope_wire
        self.quarantine: QuarantineBook = relay.quarantine

    def admit(self, peer: str) -> str | None:
        self.peer = peer
        return self._admit(peer)

    def sync_spaces(self) -> list[str]:
        return []  # a relay takes the spaces each device names

    def _admit_frame(self, envelopes: list[bytes], space: str | None) -> None:
        """The relay's limits on one frame of envelopes, before any of it is stored."""
        refused = self._limit(self.peer or "?", len(envelopes), sum(map(len, envelopes)))
        if refused is None and self._check is not None:
            refused = self._check(space or "")
        if refused is not None:
            raise ProtocolViolation(E_LIMIT, refused)

    def receive(self, envelopes: list[bytes], source: str, space: str | None = None,
                tolerate_gaps: bool = False) -> tuple[int, int, int]:
        self._admit_frame(envelopes, space)
        try:
            result = self.relay.receive(envelopes, space, tolerate_gaps, source)
        except Rejected as rejected:
            self.relay.record_rejection(source, rejected)
            raise
        if self._stored is not None:
            self._stored(space or "", result[0])
        return result

    def accept(self, envelopes: list[bytes], source: str, space: str) -> Accepted:
        self._admit_frame(envelopes, space)
        try:
            got = self.relay.accept(envelopes, space, source)
        except Rejected as rejected:
            self.relay.record_rejection(source, rejected)
            raise
        for q in got.quarantined:
            self.relay.record_rejection(source, Rejected(q.reason, q.detail))
        if self._stored is not None:
            self._stored(space, got.applied)
        return got

    def quarantined(self, space: str) -> dict[str, SetAside]:
        return self.relay.quarantine.authors(space)  # read only: the session looks authors up

    def peer_refused(self, peer: str, space: str, author: str, from_seq: int, reason: str,
                     detail: str) -> None:
        """Not kept: a device's refusal stops this session sending it that chain (the
        session's own state); the relay does not take one device's word to stop serving an
        author to the others. The server logs it (the session's Quarantined event)."""

    def receive_fork_proof(self, proof: bytes, source: str, space: str | None = None) -> bool:
        """A peer's fork proof, under the same budget as its envelopes (two of them)."""
        refused = self._limit(self.peer or "?", 2, len(proof))
        if refused is not None:
            raise ProtocolViolation(E_LIMIT, refused)
        return self.relay.receive_fork_proof(proof, source, space)

    def record_ack(self, peer: str, space: str, vv: dict[str, int]) -> None:
        """Not kept (see RelayStore.record_ack)."""


class RelayQuarantine:
    """The relay's quarantine (a :class:`crdt_sync.quarantine.QuarantineBook`): kept in
    memory with each space's heads, written with the group commit (a quarantine or lift is
    durable once :meth:`RelayStore.durable` says so); :meth:`list` reads what is committed."""

    def __init__(self, relay: RelayStore) -> None:
        self._relay = relay

    def quarantine(self, record: QuarantineRecord) -> QuarantineRecord:
        return self._relay.set_aside(record)

    def is_quarantined(self, space: str, author: str) -> QuarantineRecord | None:
        return self._relay.quarantine_record(space, author)

    def authors(self, space: str) -> dict[str, SetAside]:
        return self._relay.quarantined_authors(space)

    def list(self, space: str | None = None) -> list[QuarantineRecord]:
        return self._relay.quarantines(space)

    def lift(self, space: str, author: str) -> bool:
        return self._relay.lift(space, author)


__all__ = ["OpenBackend", "Outgoing", "RelayHost", "RelayQuarantine", "RelayStore"]
