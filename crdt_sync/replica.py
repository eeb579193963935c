"""The replica: a device's data directory opened for use.

:class:`Replica` is the integrator's entry point and the composition of the parts that do
the work, each the one owner of its state (docs/DESIGN.md, "The write path"):

- :class:`~crdt_sync.writes.LocalWrites`: local transactions and their journal records;
- :class:`~crdt_sync.journal.Journal`: this process's journal file and its record layout;
- :class:`~crdt_sync.schedule.SealSchedule`: when journaled edits are due to be sealed;
- :class:`~crdt_sync.sealing.Sealer`: sealing records into envelopes, the index, compaction;
- :class:`~crdt_sync.cache.EntityCache`: the loaded entities;
- :class:`~crdt_sync.follow.StoreFollower`: other processes' commits;
- :class:`~crdt_sync.receive.Receiver`: envelopes from other devices, and the authors set
  aside (:class:`~crdt_sync.quarantine.Quarantine`);
- :class:`~crdt_sync.host.ReplicaHost`: what sync sessions ask (:meth:`Replica.session_host`).

Why the write path is fast and still durable: a local transaction ends in one record per
entity appended to this process's journal (a copy into a memory-mapped file); that is the
moment the edit is durable against ``kill -9``. Journaled edits are *sealed* (signed into
envelopes and written to SQLite in one transaction, which is when other processes on the
same data directory see them) on the debounce of :mod:`crdt_sync.schedule`, and always
before an export, a sync or close.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path

from .bootstrap import Bootstrap
from .cache import EntityCache
from .clocks import check_skew
from .errors import CrdtSyncError, DiskFull
from .follow import StoreFollower
from .hlc import DEFAULT_MAX_SKEW_MS, HybridClock, wall_ms
from .host import ReplicaHost
from .identity import Identity
from .journal import Journal, ReadOnlyJournal
from .members import Members
from .quarantine import PeerRefusal, QuarantineRecord
from .receive import Receiver
from .recovery import recover_orphans, unsealed_elsewhere
from .replica_bundles import BundleCommands
from .replica_members import MembershipCommands
from .results import (
    Accepted,
    Change,
    ImportResult,
    ReceiveResult,
    Rejection,
    Status,
)
from .schedule import SealSchedule
from .sealing import IDLE_FOLD_PARTS, Sealer
from .secrets import Secrets
from .space import Space
from .spaces import LABEL_ENTITY, LABEL_FIELD, SpaceBook
from .status_report import device_status
from .store import SPACE_COLLECTION, EntityKey, Store
from .values import check_name
from .writes import LocalWrites, Transaction

#: Start a new journal file once the current one is this large and sealed.
JOURNAL_ROTATE_BYTES = 4 << 20
#: Entities one idle ``maintain()`` call folds at most (each fold is one SQLite transaction).
IDLE_FOLDS_PER_CALL = 4
#: Seconds without a seal after which ``maintain()`` counts the replica idle.
IDLE_FOLD_AFTER = 1.0

Observer = Callable[[list[Change]], None]

__all__ = ["Accepted", "Change", "ImportResult", "Observer", "ReceiveResult", "Replica", "Status"]


class Replica(MembershipCommands, BundleCommands):
    """A device's local replica, opened on a data directory.

    Several processes may open the same directory at once. Use as a context manager or call
    :meth:`close`; an unclosed replica loses nothing (its journal is sealed by the next
    process that opens the directory).

    Args:
        path: the data directory (created if missing).
        fsync: also survive power loss (fsync per transaction; slower).
        cache_size: entities kept loaded; others are evicted and reloaded on demand.
        seal_interval: the pause in local edits, in seconds, after which they are sealed
            into envelopes (0: after every transaction).
        seal_max_wait: the longest, in seconds, edits that keep coming wait to be sealed.
        wall: wall clock in milliseconds (tests inject one).
        max_clock_skew: how far, in seconds, another device's clock may be ahead of ``wall``:
            sync sessions hold back envelopes stamped further ahead, and no received time
            moves this device's clock past ``wall`` plus this (docs/PROTOCOL.md, "Clocks").
        read_only: open without writing anything (for a full disk): no journal, dead
            processes' journals left for a writer to seal, every write raises StoreError.
        passphrase: opens ``DIR/keys`` when it is sealed, and seals a new one (None: the
            environment variable ``CRDT_SYNC_PASSPHRASE``, else none); a missing or wrong
            one raises :class:`~crdt_sync.secrets.PassphraseError` (see :mod:`crdt_sync.secrets`).
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False,
                 cache_size: int = 256, seal_interval: float = 0.05, seal_max_wait: float = 1.0,
                 wall: Callable[[], int] = wall_ms,
                 max_clock_skew: float = DEFAULT_MAX_SKEW_MS / 1000, read_only: bool = False,
                 passphrase: str | None = None) -> None:
        skew_ms = check_skew(max_clock_skew)
        self.path = Path(path)
        if not read_only:
            self.path.mkdir(parents=True, exist_ok=True)
        self._store = store = Store(self.path, fsync, read_only)
        try:
            self._secrets = self._open_secrets(store, passphrase)
            self._assemble(store, fsync, cache_size, seal_interval, seal_max_wait, wall, skew_ms)
        except BaseException:
            store.close()
            raise

    def _assemble(self, store: Store, fsync: bool, cache_size: int, seal_interval: float,
                  seal_max_wait: float, wall: Callable[[], int], skew_ms: int) -> None:
        self.identity = Identity(self._secrets.device_seed())
        if store.read_only:
            client = random.getrandbits(53) | 1  # never registered: it writes nothing
        else:
            with store.write():
                while True:  # a Yjs client id no other process of any device will use
                    client = random.getrandbits(53)
                    if client and store.allocate_client(client, os.getpid()):
                        break
        self.client_id: int = client
        self.device_id: str = self.identity.id
        self._clock = clock = HybridClock(wall, store.max_hlc(), skew_ms)
        self._schedule = SealSchedule(seal_interval, seal_max_wait)
        self._observers: list[tuple[str | None, Observer]] = []
        #: entities sealed or received since opening (close() compacts those that grew)
        self._touched: set[EntityKey] = set()
        #: of those, the ones maintain() has not folded yet
        self._idle_folds: set[EntityKey] = set()
        self._sealed_at = 0.0
        self._closed = False
        directory = self.path / "journal"
        self._writes = writes = LocalWrites(self.device_id, store, clock, self._schedule,
                                            _Hooks(self._catch_up, self.seal, self._transaction_ended,
                                                   self._notify))
        self._cache = cache = EntityCache(store, client, clock, writes.on_update, Journal.record_key,
                                          cache_size)
        self._members = members = Members(store, self.identity, self._secrets)
        self._book = SpaceBook(store, members, self.identity, self._secrets, clock)
        self._sealer = sealer = Sealer(self.identity, client, store, cache, self._secrets.keyring(),
                                       self._book)
        if store.read_only:  # dead processes' journals stay for a writer to seal
            self._journal: Journal = ReadOnlyJournal(directory, client)
        else:
            # before this process's own journal exists: recovery seals dead processes' journals
            recover_orphans(directory, store, sealer, clock)
            self._journal = Journal(directory, client, fsync)
        writes.attach(cache, self._journal)
        self._follower = StoreFollower(store, cache, clock, client)
        self._receiver = Receiver(store, cache, clock, sealer, client, members)
        self._bootstrap = Bootstrap(store, cache, clock, sealer, members, self.identity, client)
        self._skew_ms = skew_ms

    def session_host(self, trust_relays: bool = True) -> ReplicaHost:
        """A host for one sync session: it serves each space only to a peer that may read
        it, and in full to a relay only when ``trust_relays`` (a link to a relay the user
        chose; never a LAN or Bluetooth neighbour). See :mod:`crdt_sync.host`."""
        return ReplicaHost(self, self._store, self._receiver.quarantine, self._clock, self._skew_ms,
                           self._members.can_read, trust_relays)

    @property
    def sync_host(self) -> ReplicaHost:
        """A new :meth:`session_host` that trusts relays (one per session)."""
        return self.session_host()

    def _open_secrets(self, store: Store, passphrase: str | None) -> Secrets:
        """``DIR/keys``; a directory of an older build kept its device seed in the store's
        meta table: it moves into the key file (and out of the store) on the first writable open."""
        legacy = store.meta("device_seed")
        if store.read_only or legacy is None:
            return Secrets.open(self.path, passphrase, read_only=store.read_only,
                                legacy_seed=None if legacy is None else bytes(legacy))
        with store.write():  # one process migrates; the others then find the key file
            legacy = store.meta("device_seed")
            secrets = Secrets.open(self.path, passphrase,
                                   legacy_seed=None if legacy is None else bytes(legacy))
            store.delete_meta("device_seed")
        return secrets

    @property
    def secrets(self) -> Secrets:
        """This device's local secrets (:class:`~crdt_sync.secrets.Secrets`): the device seed
        and the :class:`~crdt_sync.space_crypto.Keyring` of every space (``secrets.keyring()``;
        after adding keys, ``secrets.save()``). The engine's parts that encrypt and decrypt
        are handed the keyring; an application needs none of it."""
        return self._secrets

    @property
    def read_only(self) -> bool:
        """Opened with ``read_only=True``: reads work, every write raises StoreError."""
        return self._store.read_only

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> Replica:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Seal what is pending, compact what grew, and release the journal. Idempotent."""
        if self._closed:
            return
        self.seal()
        if not self._store.read_only:  # fold what grew: the next open loads one state each
            for key in list(self._touched):
                self._sealer.compact(key, parts=IDLE_FOLD_PARTS)
        self._cache.close()
        # Remove the file while still holding its lock, then forget its sealed count: the
        # other order let an opener take the unlocked file for a dead process's journal with
        # nothing sealed, and seal every record of it a second time.
        (self.path / "journal" / self._journal.name).unlink(missing_ok=True)
        self._journal.close()
        if not self._store.read_only:
            with self._store.write():
                self._store.forget_journal(self._journal.name)
        self._store.close()
        self._writes.close()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise CrdtSyncError("this replica is closed")

    # -- spaces --------------------------------------------------------------------------
    def create_space(self, name: str) -> Space:
        """A new space with this device as its admin, named ``name`` here (docs/DESIGN.md,
        "Spaces bound to keys on a device"): its genesis, keys and label are sealed into this
        device's chain. Another space may have the same name: names are local, ids are not."""
        return self._create(name, only_if_new=False)

    def _create(self, name: str, only_if_new: bool) -> Space:
        self._check_open()
        self.seal()
        with self._store.write():  # one process creates it; the others find it
            space = self._book.find(name) if only_if_new else None
            created = space is None
            if space is None:
                space = self._book.create(name)
        if created:
            self._write_label(space, name)
        return Space(self, space, self._book.name(space) or space, self._writes, self._cache, self._store)

    def _write_label(self, space: str, name: str) -> None:
        self.seal()
        with self._store.write():
            label = self._book.label(space, name)
            self._sealer.seal_register((space, *LABEL_ENTITY), LABEL_FIELD, label, self._clock.now())

    def space(self, name_or_id: str) -> Space:
        """The space of an id, or of a local name; an unknown name creates a space (this
        device its admin).

        Raises:
            AmbiguousSpace: the name is bound to more than one space (use the id).
        """
        space = self._book.find(name_or_id)
        if space is None:
            return self._create(name_or_id, only_if_new=True)
        return Space(self, space, self._book.name(space) or space, self._writes, self._cache, self._store)

    def space_id(self, name_or_id: str) -> str:
        """The id of a space given by id or local name.

        Raises:
            NotFound: no space has that name here. AmbiguousSpace: more than one has.
        """
        return self._book.resolve(name_or_id)

    def spaces(self, seal: bool = False) -> list[str]:
        """The ids of the spaces this device keeps (``seal``: seal pending edits first, as a
        sync does)."""
        if seal:
            self.seal()
        self.refresh()
        return self._store.spaces()

    def join(self, token: str) -> Space:
        """Redeem an invite token (from :meth:`invite`) on this device: it keeps the space,
        holds its keys and is a member from now on; the space's data arrives with the next
        sync (a bundle, a session, the relay), which carries the redemption to the others.

        Raises:
            Rejected: ``bad-token`` (malformed, with what is wrong), ``expired-token``, or
                the redemption does not count (``expired``, ``not-admin``, ...).
        """
        self._check_open()
        self.seal()
        try:
            with self._store.write():
                space = self._book.join(token)
        except BaseException:
            self._members.forget()
            raise
        return Space(self, space, self._book.name(space) or space, self._writes, self._cache, self._store)

    # -- observing -----------------------------------------------------------------------
    def observe(self, callback: Observer, space: str | None = None) -> Callable[[], None]:
        """Call ``callback(changes)`` after each batch of changes; returns an unsubscribe."""
        item = (None if space is None else self._book.resolve(space), callback)
        self._observers.append(item)
        self._writes.observed(True)

        def unsubscribe() -> None:
            if item in self._observers:
                self._observers.remove(item)
                self._writes.observed(bool(self._observers))
        return unsubscribe

    def _notify(self, keys: set[EntityKey], origin: str) -> None:
        if not keys or not self._observers:
            return
        # (the space's own entities, its label, are not the application's data)
        changes = [Change(s, c, e, origin) for s, c, e in sorted(keys) if c != SPACE_COLLECTION]
        errors: list[Exception] = []
        for space, callback in list(self._observers):
            mine = changes if space is None else [c for c in changes if c.space == space]
            if mine:
                try:
                    callback(mine)
                except Exception as exc:  # one failing observer must not starve the others
                    errors.append(exc)
        if errors:
            raise errors[0]

    # -- the write path ------------------------------------------------------------------
    def transaction(self) -> Transaction:
        """Group writes: one timestamp, one journal write per entity, one notification.

        Use as ``with replica.transaction() as tx:``. Writes are checked before they touch
        the document, so a refused value changes nothing; but a transaction does not roll
        back: writes made before an exception raised by your own code are kept. Nested
        transactions join the outer one.
        """
        self._check_open()
        return Transaction(self._writes)

    def _transaction_ended(self, changed: set[EntityKey], seal_due: bool) -> None:
        """After a transaction that needs attention or whose edits are due: notify, seal, evict."""
        writes = self._writes
        if writes.lost:
            try:
                self.seal()  # so the entity reloads with every edit that did reach the journal
            except DiskFull as exc:
                raise DiskFull(f"the last edit was not saved (its journal write failed), and "
                               f"sealing the earlier ones failed too: {exc}", exc.path) from exc
            finally:
                writes.drop_lost()
        if self._observers:
            self._notify(changed, "local")
        if seal_due:
            if self._journal.unsealed:
                self.seal()
            else:
                self._schedule.sealed()
        if self._cache.over:
            writes.evict()
        writes.recheck()

    def maintain(self, now: float | None = None) -> None:
        """Seal the journal if its edits are due (see :mod:`crdt_sync.schedule`); once nothing
        was sealed for :data:`IDLE_FOLD_AFTER` seconds, fold up to :data:`IDLE_FOLDS_PER_CALL`
        entities that grew into one state each (docs/DESIGN.md, "Local compaction"). Cheap;
        call it from idle loops, so that edits followed by a pause are sealed without waiting
        for the next call."""
        now = now or time.monotonic()
        if self._schedule.due(now):
            if self._journal.unsealed:
                self.seal()
                return
            self._schedule.sealed(now)
        if (self._idle_folds and not self._journal.unsealed and not self._store.read_only
                and now - self._sealed_at >= IDLE_FOLD_AFTER):
            # idle: fold a few entities that grew (bounded, so that a call stays cheap)
            for _ in range(min(IDLE_FOLDS_PER_CALL, len(self._idle_folds))):
                self._sealer.compact(self._idle_folds.pop(), parts=IDLE_FOLD_PARTS)

    def seal(self) -> None:
        """Seal every pending local edit into envelopes and make it visible to other processes."""
        self._check_open()
        self._schedule.sealed()
        journal = self._journal
        if not journal.unsealed:
            return
        records = journal.unsealed_records()
        try:
            with self._store.write():
                changed = self._follower.catch_up()
                self._sealer.seal(records)
                self._store.set_journal_folded(journal.name, journal.size)
        except DiskFull as exc:
            raise DiskFull(f"{exc}. Nothing is lost: the {journal.unsealed} edits not sealed "
                           f"yet are in the journal {journal.directory / journal.name}, and "
                           "are sealed once there is room (by this process, or by the next "
                           "one to open the data directory)", exc.path) from exc
        journal.mark_sealed()
        self._touched.update(records)
        self._idle_folds.update(records)
        self._sealed_at = time.monotonic()
        if not self._store.read_only:
            self._sealer.sealed(records)  # fold those whose parts passed a threshold
        for key in records:
            ent = self._cache.peek(key)
            if ent is not None:
                ent.unsealed = False
        if self._writes.open is None:
            self._writes.evict()
        if journal.size >= JOURNAL_ROTATE_BYTES:
            old = journal.rotate()
            (self.path / "journal" / old).unlink(missing_ok=True)
            with self._store.write():
                self._store.forget_journal(old)
        self._notify(changed, "store")

    # -- other processes -----------------------------------------------------------------
    def refresh(self) -> None:
        """Pick up what other processes on this data directory committed (cheap when nothing)."""
        self._check_open()
        if self._store.changed_elsewhere():
            self._catch_up()

    def _catch_up(self) -> None:
        self._members.forget()  # another process may have stored membership envelopes
        self._secrets.reload()  # ... and saved keys
        self._notify(self._follower.catch_up(), "store")

    # -- receiving -----------------------------------------------------------------------
    def receive(self, envelopes: list[bytes], source: str, space: str | None = None,
                tolerate_gaps: bool = False) -> ReceiveResult:
        """Verify and apply received envelopes, all or nothing (sync sessions use
        :meth:`accept`, per author).

        With ``tolerate_gaps`` (sync sessions over lossy links), an envelope whose
        predecessor is missing is skipped rather than rejected: the sender resends it.
        Envelopes of an author quarantined in their space are skipped too.

        Raises:
            Rejected: the first envelope that fails verification; nothing was applied and
                the rejection is recorded.
        """
        space = self._sid(space)
        self.seal()
        try:
            result, touched = self._receiver.receive(envelopes, source, space, tolerate_gaps)
        finally:
            self._members.save_keys()
        self._received(touched)
        return result

    def receive_fork_proof(self, proof: bytes, source: str, space: str | None = None) -> bool:
        """Verify and keep a fork proof (:mod:`crdt_sync.forks`): its author is excluded in its
        space from the fork seq on, and the entities it touched from there are rebuilt
        without it. Returns whether the proof was new here.

        Raises:
            Rejected: the proof does not verify (or is not of ``space``); it is recorded.
        """
        space = self._sid(space)
        self.seal()
        new, rebuilt = self._receiver.receive_proof(proof, source, space)
        self._touched.update(rebuilt)
        self._notify(rebuilt, "remote")
        return new

    def fork_proofs(self, space: str) -> list[bytes]:
        """The fork proofs this device holds for ``space`` (encoded)."""
        space = self._book.resolve(space)
        self.refresh()
        return self._store.fork_proofs(space)

    def accept(self, envelopes: list[bytes], source: str, space: str | None = None) -> Accepted:
        """Verify and apply received envelopes per author, as a sync session does: a
        signature-valid envelope that is refused quarantines its author in its space from that
        seq on (see :meth:`quarantined`), and the rest carries on. Gaps are tolerated.

        Raises:
            Rejected: an envelope whose signature does not verify; nothing was applied and
                the rejection is recorded.
        """
        space = self._sid(space)
        self.seal()
        try:
            result, touched = self._receiver.accept(envelopes, source, space)
        finally:
            self._members.save_keys()
        self._received(touched)
        return result

    def _sid(self, space: str | None) -> str | None:
        return None if space is None else self._book.resolve(space)

    def _received(self, touched: set[EntityKey]) -> None:
        """After a receive: compact them at close, learn the names of new spaces, notify."""
        self._touched.update(touched)  # so close() compacts received entities too
        self._idle_folds.update(touched)
        labels = [key for key in touched if key[1:] == LABEL_ENTITY]
        if labels and not self._store.read_only:
            with self._store.write():
                for key in labels:
                    try:
                        label = self._cache.get(key).fields().get(LABEL_FIELD)
                    except Exception:  # trust boundary: a member's label that does not read
                        continue
                    if isinstance(label, bytes):
                        self._book.learn_name(key[0], label)
        self._notify(touched, "remote")

    # -- quarantine ----------------------------------------------------------------------
    def quarantined(self, space: str | None = None) -> list[QuarantineRecord]:
        """The authors set aside (per space, from a refused seq on), with reason and evidence."""
        self._check_open()
        return self._receiver.quarantine.list(self._sid(space))

    def lift_quarantine(self, space: str, author: str) -> bool:
        """Accept ``author``'s envelopes in ``space`` again (once the cause is fixed); they are
        judged like any others, so a refused envelope that is still bad quarantines the author
        again. Returns False when the author was not quarantined there."""
        self._check_open()
        return self._receiver.quarantine.lift(self._book.resolve(space), author)

    def refused_by_peers(self, space: str | None = None) -> list[PeerRefusal]:
        """What peers said they set aside of what this device sent them."""
        self._check_open()
        return self._receiver.quarantine.refusals(self._sid(space))

    # -- status --------------------------------------------------------------------------
    def peer_version_vector(self, peer: str, space: str) -> dict[str, int]:
        """What ``peer`` is known to have of ``space`` (from its bundles and sessions)."""
        check_name("device id", peer)
        return self._store.peer_vv(peer, self._book.resolve(space))

    def version_vector(self, space: str) -> dict[str, int]:
        space = self._book.resolve(space)
        self.refresh()
        return self._store.version_vector(space)

    def status(self) -> Status:
        """Device id, spaces with version vectors, unsealed edits, what no peer acknowledged."""
        self.refresh()
        return device_status(self._store, self.device_id, self.path, self.unsealed(), self.quarantined(),
                             self.refused_by_peers())

    def unsealed(self) -> int:
        """Journal records of every process on this directory that are not sealed yet."""
        return self._journal.unsealed + unsealed_elsewhere(self.path / "journal", self._journal.name,
                                                           self._store)

    def rejections(self, limit: int = 100) -> list[Rejection]:
        """The latest refused inputs, newest first."""
        return [Rejection(at, s, r, d) for at, s, r, d in self._store.rejections(limit)]


class _Hooks:
    """The replica's side of the write path (:class:`crdt_sync.writes.WriteHost`): its
    bound methods, so that the write path sees nothing else of the replica."""

    __slots__ = ("catch_up", "edited_outside", "seal", "transaction_ended")

    def __init__(self, catch_up: Callable[[], None], seal: Callable[[], None],
                 transaction_ended: Callable[[set[EntityKey], bool], None],
                 notify: Callable[[set[EntityKey], str], None]) -> None:
        self.catch_up = catch_up
        self.seal = seal
        self.transaction_ended = transaction_ended
        self.edited_outside = lambda key: notify({key}, "local")
