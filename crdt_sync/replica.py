"""The replica: a device's data directory opened for use.

Write path (why it is fast and still durable): a local transaction ends in one record per
entity appended to this process's journal (see :mod:`crdt_sync.journal`: a copy into a
memory-mapped file); that is the moment the edit is durable against ``kill -9``. The
journal is *folded* (its records sealed into signed envelopes and written to SQLite in one
transaction, which is when other processes on the same data directory see them) after a
pause of ``seal_interval`` seconds in the edits, at least every ``seal_max_wait`` seconds
while they keep coming (a debounce: both checked on the next call), and always before an
export, a sync or close. A person typing pauses between keystrokes, so each keystroke is
sealed soon after it; a burst (a paste replayed, an import, a program) is sealed once a
second rather than per 50 ms, which costs less per edit (docs/BENCHMARKS.md, Write path).
"""

from __future__ import annotations

import os
import random
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from pycrdt import TransactionEvent

from .bundle import decode_bundle, encode_bundle
from .entity import EntityDoc
from .envelope import (
    ENVELOPE_OVERHEAD,
    MAX_ENVELOPE_BYTES,
    MAX_SPACE_NAME,
    Envelope,
    open_envelope,
    seal,
)
from .errors import CrdtSyncError, Rejected
from .hlc import HybridClock, hlc_to_iso, wall_ms
from .identity import Identity
from .journal import Journal, group_records, orphans, read_records
from .payload import ITEM_HEADER, decode_payload, encode_payload, item_hlc, unpack_items
from .space import Space, Transaction
from .store import EntityKey, Store
from .values import check_name

#: Start a new journal file once the current one is this large and folded.
JOURNAL_ROTATE_BYTES = 4 << 20
#: Fold into a fresh snapshot when an entity has this many stored parts after its snapshot.
SNAPSHOT_AFTER_PARTS = 64
#: Received times (HLCs) at or beyond this are refused. Every local time must exceed every
#: time seen and SQLite integers end at 2**63 - 1, so a peer's clock (hostile or broken)
#: near that end would make every later local write fail. 2**62 is the year 4199.
MAX_HLC = 1 << 62


@dataclass(frozen=True, slots=True)
class Change:
    """What an observer is told: an entity changed, and where the change came from.

    ``origin`` is ``"local"`` (this process), ``"store"`` (another process on the same data
    directory) or ``"remote"`` (merged from another device).
    """

    space: str
    collection: str
    id: str
    origin: str


@dataclass(frozen=True, slots=True)
class ImportResult:
    space: str
    exporter: str
    applied: int
    duplicates: int


Observer = Callable[[list[Change]], None]


class Replica:
    """A device's local replica, opened on a data directory.

    Several processes may open the same directory at once. Use as a context manager or call
    :meth:`close`; an unclosed replica loses nothing (its journal is folded by the next
    process that opens the directory).

    Args:
        path: the data directory (created if missing).
        fsync: also survive power loss (fsync per transaction; slower).
        cache_size: entities kept loaded; others are evicted and reloaded on demand.
        seal_interval: the pause in local edits, in seconds, after which the journal is
            folded into sealed envelopes (0: after every transaction).
        seal_max_wait: the longest, in seconds, edits that keep coming wait for a fold.
        wall: wall clock in milliseconds (tests inject one).
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False,
                 cache_size: int = 256, seal_interval: float = 0.05, seal_max_wait: float = 1.0,
                 wall: Callable[[], int] = wall_ms) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._store = Store(self.path, fsync)
        store = self._store
        with store.write():
            seed = store.meta("device_seed")
            if seed is None:
                seed = Identity.generate().seed
                store.set_meta("device_seed", seed)
            self.identity = Identity(bytes(seed))
            while True:  # a Yjs client id no other process of any device will use
                client = random.getrandbits(53)
                if client and store.allocate_client(client, os.getpid()):
                    break
        self.client_id: int = client
        self.device_id: str = self.identity.id
        self._clock = HybridClock(wall, store.max_hlc())
        self._cache: OrderedDict[EntityKey, EntityDoc] = OrderedDict()
        self._cache_size = cache_size
        self._lost: set[EntityKey] = set()
        self._evict_blocked = False
        self._touched: set[EntityKey] = set()
        self._observers: list[tuple[str | None, Observer]] = []
        #: whether the end of a transaction has more to do than fold on time (see _recheck):
        #: one flag, so that a keystroke's transaction checks one thing
        self._attention = False
        # The fold's debounce (see the module docstring): edits are due a fold at _fold_at
        # at the latest, or once seal_interval has passed since the last transaction ended.
        self._seal_interval = seal_interval
        self._seal_max_wait = max(seal_interval, seal_max_wait)
        self._fold_at = time.monotonic() + self._seal_max_wait
        self._last_edit = 0.0  # time.monotonic() when the last local transaction ended
        self._tx: Transaction | None = None
        self._closed = False
        self._recover_orphans()
        self._journal = Journal(self.path / "journal", client, fsync)
        # Records of this journal file folded so far, and the byte offset after them: a fold
        # reads the records after it back from the journal (kept in memory only there:
        # holding each edit's item until the fold cost more, per edit, than reading back).
        self._folded = self._fold_from = 0
        self._cursor = store.max_part()

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> Replica:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Seal what is pending, compact what grew, and release the journal. Idempotent."""
        if self._closed:
            return
        self.flush()
        for key in list(self._touched):
            self._compact(key)
        for ent in self._cache.values():
            ent.close()
        self._cache.clear()
        # Remove the file while still holding its lock, then forget its folded count: the
        # other order let an opener take the unlocked file for a dead process's journal with
        # nothing folded, and seal every record of it a second time.
        (self.path / "journal" / self._journal.name).unlink(missing_ok=True)
        self._journal.close()
        with self._store.write():
            self._store.forget_journal(self._journal.name)
        self._store.close()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise CrdtSyncError("this replica is closed")

    # -- spaces --------------------------------------------------------------------------
    def space(self, name: str) -> Space:
        check_name("space name", name, MAX_SPACE_NAME)
        return Space(self, name)

    def spaces(self) -> list[str]:
        self.refresh()
        return self._store.spaces()

    def join(self, space: str) -> None:
        check_name("space name", space, MAX_SPACE_NAME)
        with self._store.write():
            self._store.join(space)

    def leave(self, space: str) -> None:
        """Stop keeping and syncing ``space``; its data stays until the space is joined again."""
        with self._store.write():
            self._store.join(space, joined=False)

    # -- observing -----------------------------------------------------------------------
    def observe(self, callback: Observer, space: str | None = None) -> Callable[[], None]:
        """Call ``callback(changes)`` after each batch of changes; returns an unsubscribe."""
        item = (space, callback)
        self._observers.append(item)
        self._recheck()

        def unsubscribe() -> None:
            if item in self._observers:
                self._observers.remove(item)
                self._recheck()
        return unsubscribe

    def _recheck(self) -> None:
        """Recompute :attr:`_attention` after any of the things it sums up changed."""
        self._attention = bool(self._lost or self._observers or self._evict_blocked
                               or len(self._cache) > self._cache_size)

    def _notify(self, keys: set[EntityKey], origin: str) -> None:
        if not keys or not self._observers:
            return
        changes = [Change(s, c, e, origin) for s, c, e in sorted(keys)]
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

    # -- entities ------------------------------------------------------------------------
    def _entity(self, key: EntityKey) -> EntityDoc:
        ent = self._cache.get(key)
        if ent is not None:
            self._cache.move_to_end(key)
            return ent
        ent = self._load(key)
        self._evict(room=1)  # before inserting: the entity being handed out is never evicted
        self._cache[key] = ent
        if len(self._cache) > self._cache_size:
            self._attention = True
        return ent

    def _load(self, key: EntityKey) -> EntityDoc:
        ent = EntityDoc(key, self.client_id, self._on_local_update)
        snapshot, parts = self._store.load_entity(key)
        try:
            if snapshot is not None:
                ent.apply(snapshot)
            for data in parts:
                for _hlc, update in unpack_items(data):
                    ent.apply(update)
        except ValueError as exc:
            ent.close()
            raise Rejected("bad-payload", f"stored updates of {key} do not decode: {exc}") from None
        self._observe_hlcs(ent)
        return ent

    def _observe_hlcs(self, ent: EntityDoc) -> None:
        for entries in ent.registers().values():
            self._clock.observe(entries[0].hlc)

    def _evict(self, room: int = 0) -> None:
        """Unload least recently used entities down to the cache size (less ``room``).

        Entities with unsealed edits or in the open transaction stay (their unsealed
        updates are not in SQLite yet), so the cache may overshoot inside a transaction.
        """
        limit = self._cache_size - room
        if len(self._cache) <= limit or self._evict_blocked:
            return
        if self._journal.count != self._folded and self._tx is None:
            self.flush()
        for key in list(self._cache):
            if len(self._cache) <= limit:
                break
            if self._cache[key].unsealed or (self._tx is not None and key in self._tx.docs):
                continue
            self._cache.pop(key).close()
        # Everything left is pinned until the transaction ends: do not scan again per load
        # (that made one large transaction quadratic); _end trims the cache.
        self._evict_blocked = self._tx is not None and len(self._cache) > limit
        self._recheck()

    # -- the write path ------------------------------------------------------------------
    def transaction(self) -> Transaction:
        """Group writes: one timestamp, one journal write per entity, one notification.

        Use as ``with replica.transaction() as tx:``. Writes are checked before they touch
        the document, so a refused value changes nothing; but a transaction does not roll
        back: writes made before an exception raised by your own code are kept. Nested
        transactions join the outer one.
        """
        self._check_open()
        return Transaction(self)

    def _end(self, tx: Transaction) -> None:
        """After the open transaction ``tx`` committed its entities: notify, fold, evict."""
        self._tx = None
        self._evict_blocked = False
        if self._lost:
            self.flush()  # so the entity reloads with every edit that did reach the journal
            while self._lost:
                lost = self._cache.pop(self._lost.pop(), None)
                if lost is not None:
                    lost.close()
        if self._observers:
            self._notify(tx.changed(), "local")
        self.maintain()
        if len(self._cache) > self._cache_size:
            self._evict()
        self._recheck()

    def _on_local_update(self, ent: EntityDoc, event: TransactionEvent) -> None:
        """Journal a committed local transaction of ``ent`` (the document's observer)."""
        if ent.applying:  # a stored or received update being applied: not a local edit
            return
        update = event.update
        tx = self._tx
        hlc = tx.hlc if tx is not None else self._clock.now()
        prefix, prefix_crc, head, base = ent.journal_prefix
        n = len(update)
        # frame_record(prefix, pack_item(hlc, update), prefix_crc), built with fewer calls:
        # the item's header is packed with the frame (record_head), its CRC chained
        crc = zlib.crc32(update, zlib.crc32(ITEM_HEADER.pack(hlc, n), prefix_crc))
        journal = self._journal
        try:
            record = head.pack(base + n, crc, prefix, hlc, n) + update
            start = journal.size
            end = start + len(record)
            if end <= journal.limit:  # Journal.append_record's copy, inlined: per keystroke
                journal.map[start:end] = record  # type: ignore[index]
                journal.size = end
                journal.count += 1
            else:
                journal.append_record(record)
        except BaseException:
            # The document holds an edit the disk does not (a full disk, most likely): drop
            # it from memory after the transaction, so the entity reloads as stored (the
            # caller sees the error).
            self._lost.add(ent.key)
            self._attention = True
            raise
        ent.updated = ent.unsealed = True
        if ent.txn is None:  # an edit made outside our transactions (a raw pycrdt object)
            self._notify({ent.key}, "local")

    def maintain(self, now: float | None = None) -> None:
        """Fold the journal if its edits are due (see the module docstring). Cheap; call it
        from idle loops, so that edits followed by a pause are sealed without waiting for
        the next call."""
        now = now or time.monotonic()
        if now >= self._fold_at or now - self._last_edit >= self._seal_interval:
            if self._journal.count != self._folded:
                self.flush()
            else:
                self._fold_at = now + self._seal_max_wait

    def flush(self) -> None:
        """Seal every pending local edit into envelopes and make it visible to other processes."""
        self._check_open()
        self._fold_at = time.monotonic() + self._seal_max_wait
        journal = self._journal
        if journal.count == self._folded:
            return
        records, _ = group_records(journal.written_since(self._fold_from), verify=False)
        changed: set[EntityKey] = set()
        with self._store.write():
            changed = self._refresh_locked()
            self._seal(records)
            self._store.set_journal_folded(journal.name, journal.count)
        self._touched.update(records)
        for key in records:
            ent = self._cache.get(key)
            if ent is not None:
                ent.unsealed = False
        self._folded, self._fold_from = journal.count, journal.size
        if self._tx is None:
            self._evict()
        if journal.size >= JOURNAL_ROTATE_BYTES:
            old = journal.rotate()
            self._folded = self._fold_from = 0
            (self.path / "journal" / old).unlink(missing_ok=True)
            with self._store.write():
                self._store.forget_journal(old)
        self._notify(changed, "store")

    def _seal(self, records: dict[EntityKey, list[bytes]], client: int | None = None) -> None:
        """Sign pending items into envelopes (split to stay under the size limit) and store them.

        ``records`` maps each entity to its packed items in journal order, which is time
        order (one process's clock only moves forward), so an entity's last item is its latest.
        """
        by_space: dict[str, list[tuple[str, str, list[bytes]]]] = {}
        for (space, coll, ent), items in records.items():
            by_space.setdefault(space, []).append((coll, ent, items))
        budget = MAX_ENVELOPE_BYTES - ENVELOPE_OVERHEAD
        for space, entities in by_space.items():
            chain = self._store.chain_head(space, self.device_id)
            chunk: list[tuple[str, str, bytes]] = []
            size = hlc = 0
            for coll, ent, items in entities:
                overhead = len(coll) + len(ent) + 16
                total = sum(map(len, items))
                if size + overhead + total <= budget:  # the common case: all of it fits
                    chunk.append((coll, ent, b"".join(items)))
                    size += overhead + total
                    hlc = max(hlc, item_hlc(items[-1]))
                    continue
                start = 0
                for i, item in enumerate(items):
                    if size + overhead + len(item) > budget and (chunk or i > start):
                        if i > start:
                            chunk.append((coll, ent, b"".join(items[start:i])))
                        chain = self._seal_one(space, chain, chunk, hlc, client)
                        chunk, size, hlc, start = [], 0, 0, i
                    size += len(item)
                    hlc = max(hlc, item_hlc(item))
                chunk.append((coll, ent, b"".join(items[start:])))
                size += overhead
            if chunk:
                self._seal_one(space, chain, chunk, hlc, client)
            self._store.join(space)
        for space, entities in by_space.items():
            for coll, ent, _items in entities:
                self._index((space, coll, ent))

    def _seal_one(self, space: str, chain: tuple[int, bytes], chunk: list[tuple[str, str, bytes]],
                  hlc: int, client: int | None) -> tuple[int, bytes]:
        """Seal ``chunk`` (whose latest time is ``hlc``) as the next envelope of ``chain``."""
        env = seal(self.identity, space, chain[0] + 1, chain[1], hlc, encode_payload(chunk))
        self._store.insert_envelope(env)
        for coll, ent, blob in chunk:
            self._store.insert_part((space, coll, ent), self.device_id,
                                    self.client_id if client is None else client, blob)
        return env.seq, env.hash

    def _index(self, key: EntityKey, readable: bool = False) -> None:
        """Update the query index of ``key``; ``readable`` also reads every field (so a
        received update that leaves a text or list undecodable raises here)."""
        ent = self._cache.get(key)
        temporary = ent is None
        if ent is None:
            ent = self._load(key)
        try:
            if readable:
                ent.fields()
            # canonical: equal values (dicts in any key order) index to the same bytes, as
            # Space.find encodes them
            fields = [(name, cbor2.dumps(value, canonical=True)) for name, value in ent.scalar_fields()]
            conflicts = [(name, cbor2.dumps([[e.hlc, e.author, e.kind, e.value] for e in (won, *losers)]))
                         for name, (won, losers) in ent.conflicts().items()]
            self._store.index_entity(key, ent.deleted, fields, conflicts)
        finally:
            if temporary:
                ent.close()

    # -- other processes -----------------------------------------------------------------
    def refresh(self) -> None:
        """Pick up what other processes on this data directory committed (cheap when nothing)."""
        self._check_open()
        if not self._store.changed_elsewhere():
            return
        self._notify(self._refresh_locked(), "store")

    def _refresh_locked(self) -> set[EntityKey]:
        changed: set[EntityKey] = set()
        for part_id, key, client, data in self._store.parts_after(self._cursor):
            self._cursor = part_id
            if client == self.client_id:
                continue
            changed.add(key)
            ent = self._cache.get(key)
            if ent is not None:
                for hlc, update in unpack_items(data):
                    self._clock.observe(hlc)
                    ent.apply(update)
        return changed

    def _recover_orphans(self) -> None:
        """Fold the journals of processes that died before folding them."""
        directory = self.path / "journal"
        for name, fd in orphans(directory):
            try:
                done = self._store.journal_folded(name)
                records, count = group_records((directory / name).read_bytes(), skip=done)
                for items in records.values():
                    for item in items:
                        self._clock.observe(item_hlc(item))
                if records:
                    with self._store.write():
                        self._seal(records, int(name.split("-")[0], 16))
                        # in the same commit, so dying before the unlink cannot fold them twice
                        self._store.set_journal_folded(name, count)
                (directory / name).unlink(missing_ok=True)
                with self._store.write():
                    self._store.forget_journal(name)
            finally:
                os.close(fd)

    # -- receiving -----------------------------------------------------------------------
    def receive(self, envelopes: list[bytes], source: str, space: str | None = None,
                tolerate_gaps: bool = False) -> tuple[int, int, int]:
        """Verify and apply received envelopes, all or nothing.

        With ``tolerate_gaps`` (sync sessions over lossy links), an envelope whose
        predecessor is missing is skipped rather than rejected: the sender resends it.

        Returns ``(applied, duplicates, skipped_gaps)``.

        Raises:
            Rejected: the first envelope that fails verification; nothing was applied and
                the rejection is recorded.
        """
        self.flush()
        touched: set[EntityKey] = set()
        try:
            with self._store.write():
                applied, dups, gaps = self._receive_locked(envelopes, space, touched, tolerate_gaps)
        except Rejected as rejected:
            for key in touched:
                ent = self._cache.pop(key, None)
                if ent is not None:
                    ent.close()
            self._store.record_rejection(source, rejected)
            raise
        self._touched.update(touched)  # so close() compacts received entities too
        self._notify(touched, "remote")
        return applied, dups, gaps

    def _receive_locked(self, envelopes: list[bytes], space: str | None, touched: set[EntityKey],
                        tolerate_gaps: bool) -> tuple[int, int, int]:
        applied = dups = gaps = 0
        for wire in envelopes:
            env = open_envelope(wire)
            if space is not None and env.space != space:
                raise Rejected("wrong-space", f"envelope of space {env.space!r} in a bundle of {space!r}")
            status = self._store.check_chain(env, tolerate_gaps)
            if status != "new":
                dups += status == "duplicate"
                gaps += status == "gap"
                continue
            entities = _decode_payload(env)
            if max([env.hlc, *(h for *_, items in entities for h, _ in items)]) >= MAX_HLC:
                raise Rejected("malformed", f"{env.author} seq {env.seq}: a time beyond the clock's range")
            self._store.insert_envelope(env)
            for coll, ent_id, blob, items in entities:
                key = (env.space, coll, ent_id)
                self._store.insert_part(key, env.author, self.client_id, blob)
                touched.add(key)
                cached = self._cache.get(key)
                for hlc, update in items:
                    self._clock.observe(hlc)
                    if cached is not None:
                        try:
                            cached.apply(update)
                        except ValueError as exc:
                            raise Rejected("bad-payload", f"{env.author} seq {env.seq}: {exc}") from None
            self._clock.observe(env.hlc)
            self._store.join(env.space)
            applied += 1
        for key in sorted(touched):
            try:  # loads uncached entities: a bad update is refused here too
                # Keep it loaded (LRU): the next frame for it, in a long catch-up, then applies
                # its few new updates instead of replaying the entity's whole history again.
                self._entity(key)
                self._index(key, readable=True)
            except Rejected:
                raise
            except Exception as exc:  # trust boundary: signed updates that break the entity
                raise Rejected("bad-payload", f"{key} is unreadable after the update: {exc}") from None
        return applied, dups, gaps

    # -- bundles -------------------------------------------------------------------------
    def export_bundle(self, space: str, since: dict[str, int] | None = None) -> bytes:
        """Everything of ``space`` not covered by ``since`` (all of it by default)."""
        self.flush()
        self.refresh()
        envelopes = self._store.envelopes_since(space, since or {})
        return encode_bundle(self.identity, space, self._store.version_vector(space),
                             since or {}, envelopes)

    def import_bundle(self, data: bytes, source: str = "bundle") -> ImportResult:
        """Verify and apply a bundle, all or nothing (see :meth:`receive`)."""
        self._check_open()
        try:
            bundle = decode_bundle(data)
        except Rejected as rejected:
            self._store.record_rejection(source, rejected)
            raise
        applied, dups, _ = self.receive(bundle.envelopes, source, bundle.space)
        with self._store.write():
            self._store.join(bundle.space)
            if bundle.exporter != self.device_id:
                self._store.record_peer(bundle.exporter, bundle.space, bundle.version_vector)
        return ImportResult(bundle.space, bundle.exporter, applied, dups)

    # -- what sync sessions need (see crdt_sync.protocol.session.SyncHost) ----------------
    keeps_all_spaces = False

    def admit(self, peer: str) -> str | None:
        """Devices sync with any authenticated peer (capabilities come later)."""
        return None

    def sync_spaces(self) -> list[str]:
        """The spaces this device keeps and syncs (after sealing pending edits)."""
        self.flush()
        self.refresh()
        return self._store.spaces()

    def missing_envelopes(self, space: str, covered: dict[str, int], max_count: int,
                          max_bytes: int) -> list[Envelope]:
        """Envelopes of ``space`` beyond ``covered``, in causal order, at most about ``max_bytes``."""
        self.flush()
        self.refresh()
        return self._store.missing_envelopes(space, covered, max_count, max_bytes)

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None:
        return self._store.envelope_hash(space, author, seq)

    def record_ack(self, peer: str, space: str, vv: dict[str, int]) -> None:
        """Remember what ``peer`` acknowledged of ``space`` (``status`` shows it)."""
        with self._store.write():
            self._store.record_peer(peer, space, vv)

    # -- status --------------------------------------------------------------------------
    def peer_version_vector(self, peer: str, space: str) -> dict[str, int]:
        """What ``peer`` is known to have of ``space`` (from its bundles and sessions)."""
        return self._store.peer_vv(peer, space)

    def version_vector(self, space: str) -> dict[str, int]:
        self.refresh()
        return self._store.version_vector(space)

    def status(self) -> dict[str, Any]:
        """Device id, spaces with version vectors, unsealed edits, what no peer acknowledged."""
        self.refresh()
        spaces = {}
        for name in self._store.spaces():
            vv = self._store.version_vector(name)
            peers = self._store.peers(name)
            acked = max((p_vv.get(self.device_id, 0) for _, p_vv, _ in peers), default=0)
            spaces[name] = {
                "version_vector": vv,
                "unacknowledged": max(0, vv.get(self.device_id, 0) - acked),
                "peers": [{"device": p, "version_vector": p_vv, "seen": hlc_to_iso(seen << 16),
                           "behind": sum(max(0, s - p_vv.get(a, 0)) for a, s in vv.items()),
                           "synced": all(p_vv.get(a, 0) >= s for a, s in vv.items())}
                          for p, p_vv, seen in peers],
            }
        return {"device": self.device_id, "data": str(self.path), "spaces": spaces,
                "unsealed": self.unsealed(), "rejections": len(self._store.rejections())}

    def unsealed(self) -> int:
        """Journal records of every process on this directory that are not sealed yet."""
        directory = self.path / "journal"
        total = self._journal.count - self._folded
        for path in directory.glob("*.log"):
            if path.name == self._journal.name:
                continue
            try:
                count = sum(1 for _ in read_records(path))
            except FileNotFoundError:
                continue
            total += max(0, count - self._store.journal_folded(path.name))
        return total

    def rejections(self, limit: int = 100) -> list[dict[str, Any]]:
        return [{"at": at, "source": s, "reason": r, "detail": d}
                for at, s, r, d in self._store.rejections(limit)]

    def _compact(self, key: EntityKey) -> None:
        count, upto = self._store.parts_since_snapshot(key)
        if count < SNAPSHOT_AFTER_PARTS:
            return
        with self._store.write():
            count, upto = self._store.parts_since_snapshot(key)
            snapshot, parts = self._store.load_entity(key)
            updates = [] if snapshot is None else [snapshot]
            for data in parts:
                updates.extend(update for _hlc, update in unpack_items(data))
            self._store.save_snapshot(key, _snapshot(updates), upto)


def _snapshot(updates: list[bytes]) -> bytes:
    """One update standing for all of ``updates``, quick to load.

    A Doc's own encoding is compact and loads fast but drops the structs still waiting for
    a causal dependency (an edit received before the one it builds on), which the snapshot
    must keep since it replaces the parts that held them. So: the Doc's state, plus whatever
    of the merged updates that state does not cover (the waiting structs; usually nothing).
    """
    from pycrdt import Doc, get_update, merge_updates

    doc: Doc[Any] = Doc()
    for update in updates:
        doc.apply_update(update)
    waiting = get_update(_merge(updates), doc.get_state())
    return merge_updates(doc.get_update(), waiting)


def _merge(updates: list[bytes], fan_in: int = 256) -> bytes:
    """One update equal to all of ``updates``. pycrdt's merge_updates is superlinear in the
    number of updates (20,000 took 7.4 s); merging in groups gives the same bytes in a few
    hundredths of that, since merging is associative."""
    from pycrdt import merge_updates

    while len(updates) > 1:
        updates = [merge_updates(*updates[i:i + fan_in]) for i in range(0, len(updates), fan_in)]
    return updates[0]


def _decode_payload(env: Envelope) -> list[tuple[str, str, bytes, list[tuple[int, bytes]]]]:
    try:
        return decode_payload(env.payload)
    except Exception as exc:  # trust boundary: a signed but malformed payload
        raise Rejected("bad-payload", f"{env.author} seq {env.seq}: payload is malformed: {exc}") from None
