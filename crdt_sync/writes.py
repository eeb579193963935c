"""Local transactions: open, write, commit, and one journal record per entity they changed.

This module owns the write path up to the journal (docs/DESIGN.md, "The write path"): the
open transaction, the entities it holds, the journal writes of the documents' observer, and
when the end of a transaction needs more than that (notify, seal, evict: the replica's part,
see :class:`WriteHost`). Typing into a text field is one transaction per keystroke, so every
call on the path from :meth:`Transaction.__enter__` to :meth:`Transaction.__exit__` is paid
per edit (docs/BENCHMARKS.md, Write path): what runs per keystroke is written out inside
this module rather than spread over small helpers.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, Self

from .cache import EntityCache
from .entity import EntityDoc
from .errors import CrdtSyncError
from .hlc import HybridClock
from .journal import Journal
from .schedule import SealSchedule
from .store import EntityKey, Store


class WriteHost(Protocol):
    """What the write path needs from the replica around a transaction."""

    def catch_up(self) -> None:
        """Apply other processes' commits and tell observers: called when a transaction
        opens and the store's signal says something changed (it was read already)."""

    def seal(self) -> None:
        """Seal every pending local edit (before evicting: unsealed entities stay loaded)."""

    def transaction_ended(self, changed: set[EntityKey], seal_due: bool) -> None:
        """After a transaction that needs attention (:attr:`LocalWrites.attention`) or whose
        edits are due to be sealed: notify, seal, evict."""

    def edited_outside(self, key: EntityKey) -> None:
        """An entity was changed outside our transactions (a raw pycrdt object)."""


class Transaction:
    """An open transaction of a replica (see :meth:`crdt_sync.Replica.transaction`).

    Kept lean on purpose: every attribute and call here is paid per edit. Per-entity state
    (bytes written, whether it changed) lives on the entity while the transaction holds it.
    """

    __slots__ = ("_outer", "_writes", "author", "docs", "hlc")

    def __init__(self, writes: LocalWrites) -> None:
        self._writes = writes
        self.author = writes.author
        self.hlc = 0
        self.docs: dict[EntityKey, EntityDoc] = {}  # opened entities, in order
        self._outer: Transaction | None = None

    def __enter__(self) -> Self:
        # LocalWrites.begin, written out here: it runs per keystroke, and the state it
        # touches is this module's.
        writes = self._writes
        outer = writes.open
        if outer is not None:
            # Nested: share the outer transaction's state, so writes made through this
            # object belong to the outer one (one timestamp, one journal write per entity).
            self._outer, self.hlc, self.docs = outer, outer.hlc, outer.docs
            return self
        if writes.closed:
            raise CrdtSyncError("this replica is closed")
        if writes.store.changed_elsewhere():
            writes.host.catch_up()
        self.hlc = writes.clock.now()
        writes.open = self
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._outer is None:
            self._writes.commit(self)

    def changed(self) -> set[EntityKey]:
        """Entities this transaction changed (after it committed them)."""
        return {key for key, ent in self.docs.items() if ent.updated}

    def doc(self, key: EntityKey) -> EntityDoc:
        """The entity ``key``, opened for writing in this transaction."""
        ent = self.docs.get(key)
        if ent is None:
            writes = self._writes
            open_tx = writes.open
            if open_tx is not self and (open_tx is None or open_tx is not self._outer):
                raise CrdtSyncError("this transaction has ended: write inside "
                                    "`with space.transaction() as tx:`")
            ent = writes.cache.get(key)
            self.docs[key] = ent
            ent.begin()
        return ent


class LocalWrites:
    """The open transaction, the journal writes of every loaded entity, and when a
    transaction's end needs the replica.

    Args:
        author: this device's id (the author of every local write).
        store: read for its cross-process change signal only.
        clock: the replica's clock; a transaction takes one time from it.
        schedule: when edits are due to be sealed.
        host: the replica's side (see :class:`WriteHost`).
    """

    def __init__(self, author: str, store: Store, clock: HybridClock, schedule: SealSchedule,
                 host: WriteHost) -> None:
        self.author = author
        self.store = store
        self.clock = clock
        self.schedule = schedule
        self.host = host
        # set by attach(): the cache's entities observe on_update, and the journal is opened
        # after recovery, which loads entities
        self.cache: EntityCache
        self.journal: Journal
        #: the open (outermost) transaction, if any
        self.open: Transaction | None = None
        self.closed = False
        #: entities whose last journal write failed: their documents hold an edit the disk
        #: does not, so they are unloaded after the transaction (and reload as stored)
        self.lost: set[EntityKey] = set()
        self._evict_blocked = False
        self._observed = False
        #: whether the end of a transaction has more to do than seal on time (one flag, so
        #: that a keystroke's transaction checks one thing); see :meth:`recheck`
        self.attention = False

    def attach(self, cache: EntityCache, journal: Journal) -> None:
        """Start writing: entities come from ``cache``, records go to ``journal``."""
        self.cache, self.journal = cache, journal
        cache.before_load = self.before_load

    # -- per transaction -------------------------------------------------------------------
    def commit(self, tx: Transaction) -> None:
        """Commit every entity of ``tx`` (each journals its update), then end it."""
        error: BaseException | None = None
        try:
            # Commit every entity even when one fails: the edits are in the documents
            # already and must reach the journal, or memory and disk would differ.
            for ent in tx.docs.values():
                try:
                    ent.handle.commit()  # the observer journals the update here, and may raise
                except BaseException as failed:  # a journal write failed: on_update knows
                    error = error or failed
        finally:
            self.open = None
            self._evict_blocked = False
            # The replica's part only when there is something to do (checked here: this
            # runs per keystroke).
            due = self.schedule.edited(time.monotonic())
            if self.attention or due:
                self.host.transaction_ended(tx.changed(), due)
            # Writers and text fields outlive their transaction (they are reused): let go
            # of the entities, which may be evicted now.
            tx.docs.clear()
        if error is not None:
            raise error

    def on_update(self, ent: EntityDoc, event: Any) -> None:
        """Journal a committed local transaction of ``ent`` (every entity's observer)."""
        if ent.applying:  # a stored or received update being applied: not a local edit
            return
        tx = self.open
        try:
            self.journal.append_update(ent.journal_key, tx.hlc if tx is not None else self.clock.now(),
                                       event.update)
        except BaseException:
            # The document holds an edit the disk does not (a full disk, most likely): drop
            # it from memory after the transaction, so the entity reloads as stored (the
            # caller sees the error).
            self.lost.add(ent.key)
            self.attention = True
            raise
        ent.updated = ent.unsealed = True
        if not ent.handle.open:  # an edit made outside our transactions
            self.host.edited_outside(ent.key)

    # -- entities --------------------------------------------------------------------------
    def before_load(self) -> None:
        """The cache is about to load an entity: make room first (the entity handed out is
        never evicted), and if there is none, trim the cache when the transaction ends."""
        cache = self.cache
        self.evict(room=1)
        if len(cache) + 1 > cache.size:
            self.attention = True

    def evict(self, room: int = 0) -> None:
        """Unload least recently used entities down to the cache size (less ``room``).

        Entities with unsealed edits or in the open transaction stay (their unsealed updates
        are not in SQLite yet), so the cache may overshoot inside a transaction.
        """
        cache = self.cache
        limit = cache.size - room
        if len(cache) <= limit or self._evict_blocked:
            return
        tx = self.open
        if self.journal.unsealed and tx is None:
            self.host.seal()  # then nothing is unsealed, and the seal evicted already
        still_over = cache.evict(limit, tx.docs if tx is not None else ())
        # Everything left is pinned until the transaction ends: do not scan again per load
        # (that made one large transaction quadratic); the transaction's end trims the cache.
        self._evict_blocked = tx is not None and still_over
        self.recheck()

    def drop_lost(self) -> None:
        """Unload the entities whose journal write failed (after sealing what did reach it)."""
        cache = self.cache
        while self.lost:
            cache.drop(self.lost.pop())

    def observed(self, yes: bool) -> None:
        """Whether anyone observes changes (then every transaction's end notifies)."""
        self._observed = yes
        self.recheck()

    def recheck(self) -> None:
        """Recompute :attr:`attention` after any of the things it sums up changed."""
        self.attention = bool(self.lost or self._observed or self._evict_blocked or self.cache.over)

    def close(self) -> None:
        self.closed = True
