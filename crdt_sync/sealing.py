"""Sealing: journal records into signed envelopes, entity parts and the query index in
SQLite; and compaction of an entity's parts into a snapshot.

Sealing is the one word for what happens to local edits after the journal (it was also
called folding and flushing): items are grouped per entity, split to stay under the
envelope size limit, signed as the next envelopes of this device's chain, and stored with
the entity parts they carry, in the caller's SQLite transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import cbor2

from .cache import EntityCache
from .entity import KIND_VALUE, EntityDoc
from .envelope import ENVELOPE_OVERHEAD, MAX_ENVELOPE_BYTES
from .envelope import seal as seal_envelope
from .errors import CrdtSyncError
from .identity import Identity
from .payload import encode_payload, item_hlc, pack_item, unpack_items
from .space_crypto import PAYLOAD_OVERHEAD, Keyring, encrypt_payload
from .store import EntityKey, Store
from .values import indexable

#: Fold into a fresh snapshot when an entity has this many stored parts after its snapshot,
#: or this many bytes of them: whichever comes first, right after a seal (docs/DESIGN.md,
#: "Local compaction"). Bytes bound reopen whatever the edit pattern: a part holds one
#: update per transaction, so few parts of many keystrokes cost as much to load as many parts.
SNAPSHOT_AFTER_PARTS = 64
SNAPSHOT_AFTER_BYTES = 16 * 1024
#: On close and when idle (``Replica.maintain``), an entity folds from this many parts.
IDLE_FOLD_PARTS = 2


class EpochPolicy(Protocol):
    """Which epoch a writer uses (:class:`~crdt_sync.spaces.SpaceBook` is the one)."""

    def writer_epoch(self, space: str, held: Sequence[tuple[int, bytes]]) -> bytes | None:
        """The epoch id to write with, of those ``held`` in ``(n, id)`` order; None: rotate."""
        ...

    def rotate(self, space: str) -> bytes:
        """Publish a new epoch sealed to every current reader; its id."""
        ...


class Sealer:
    """Signs pending items into envelopes and keeps the query index current.

    Args:
        identity: this device's signing key.
        client_id: the Yjs client id of this process (stored with each part it seals).
        store: where envelopes, parts and the index go (inside the caller's ``store.write()``).
        cache: loaded entities, read to index them (others are loaded for the moment).
    """

    def __init__(self, identity: Identity, client_id: int, store: Store, cache: EntityCache,
                 keyring: Keyring, policy: EpochPolicy | None = None) -> None:
        self.identity = identity
        #: which epoch a writer uses, and the rotation when none is clean (None: the highest)
        self._policy = policy
        #: the epoch keys every payload is encrypted with (docs/DESIGN.md, "Encryption")
        self._keyring = keyring
        self.device_id = identity.id
        self.client_id = client_id
        self._store = store
        self._cache = cache
        #: ``(parts, bytes)`` this process sealed per entity since it last folded it
        self._grown: dict[EntityKey, tuple[int, int]] = {}

    def seal(self, records: dict[EntityKey, list[bytes]], client: int | None = None) -> None:
        """Sign pending items into envelopes (split to stay under the size limit) and store them.

        ``records`` maps each entity to its packed items in journal order, which is time
        order (one process's clock only moves forward), so an entity's last item is its latest.
        """
        by_space: dict[str, list[tuple[str, str, list[bytes]]]] = {}
        for (space, coll, ent), items in records.items():
            by_space.setdefault(space, []).append((coll, ent, items))
        budget = MAX_ENVELOPE_BYTES - ENVELOPE_OVERHEAD - PAYLOAD_OVERHEAD
        for space, entities in by_space.items():
            epoch = self.epoch(space)  # (first: it may publish a rotation in this chain)
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
                        chain = self._seal_one(space, epoch, chain, chunk, hlc, client)
                        chunk, size, hlc, start = [], 0, 0, i
                    size += len(item)
                    hlc = max(hlc, item_hlc(item))
                chunk.append((coll, ent, b"".join(items[start:])))
                size += overhead
            if chunk:
                self._seal_one(space, epoch, chain, chunk, hlc, client)
            self._store.join(space)
        for space, entities in by_space.items():
            for coll, ent, _items in entities:
                self.index((space, coll, ent))

    def _seal_one(self, space: str, epoch: tuple[bytes, bytes], chain: tuple[int, bytes],
                  chunk: list[tuple[str, str, bytes]], hlc: int, client: int | None) -> tuple[int, bytes]:
        """Seal ``chunk`` (whose latest time is ``hlc``) as the next envelope of ``chain``,
        encrypted with ``epoch`` (its key and id)."""
        seq = chain[0] + 1
        chunk = [(coll, ent, merged_items(blob)) for coll, ent, blob in chunk]
        key, epoch_id = epoch
        payload = encrypt_payload(key, epoch_id, space, self.identity.public_key, seq, encode_payload(chunk))
        env = seal_envelope(self.identity, space, seq, chain[1], hlc, payload)
        self._store.insert_envelope(env)
        for coll, ent, blob in chunk:
            self._store.insert_part((space, coll, ent), self.device_id,
                                    self.client_id if client is None else client, blob)
        return env.seq, env.hash

    def seal_register(self, key: EntityKey, field: str, value: bytes, hlc: int) -> None:
        """Write one plain register of ``key`` and seal it at once, without the journal
        (the space's own entity, its label: made by the engine, not by a transaction)."""
        updates: list[bytes] = []

        def local(ent: EntityDoc, event: Any) -> None:
            if not ent.applying:
                updates.append(event.update)

        self._cache.drop(key)  # (loaded again from the store, with this write)
        ent = EntityDoc(key, self.client_id, local)
        try:
            snapshot, parts = self._store.load_entity(key)
            for update in ([] if snapshot is None else [snapshot]):
                ent.apply(update)
            for data in parts:
                for _hlc, update in unpack_items(data):
                    ent.apply(update)
            ent.begin()
            ent.write(field, KIND_VALUE, value, hlc, self.device_id)
            ent.handle.commit()
        finally:
            ent.close()
        self.seal({key: [pack_item(hlc, update) for update in updates]})

    def epoch(self, space: str) -> tuple[bytes, bytes]:
        """``(key, epoch_id)`` a writer uses in ``space`` (docs/DESIGN.md, "Which epoch a writer
        uses"): the highest epoch held that is sealed to no revoked device; when every one
        held is, the policy rotates first (a keys record in this device's chain, before the
        data that uses it).

        Raises:
            CrdtSyncError: this device holds no key of ``space`` (it was not let in).
        """
        epochs = self._keyring.epochs(space)
        if not epochs:
            raise CrdtSyncError(f"this device holds no key of space {space}: it may not write there "
                                "until a member grants it access")
        epoch_id = epochs[-1][1] if self._policy is None else self._policy.writer_epoch(space, epochs)
        if epoch_id is None:
            assert self._policy is not None
            epoch_id = self._policy.rotate(space)
        key = self._keyring.key(space, epoch_id)
        assert key is not None
        return key, epoch_id

    def index(self, key: EntityKey, readable: bool = False) -> None:
        """Update the query index of ``key``; ``readable`` also reads every field (so a
        received update that leaves a text or list undecodable raises here)."""
        ent = self._cache.peek(key)
        temporary = ent is None
        if ent is None:
            ent = self._cache.load(key)
        try:
            if readable:
                ent.fields()
            # canonical: equal values (dicts in any key order) index to the same bytes, as
            # Space.find encodes them
            # only what find can use: bytes, long strings and containers are left out
            fields = [(name, cbor2.dumps(value, canonical=True)) for name, value in ent.scalar_fields()
                      if indexable(value)]
            conflicts = [(name, cbor2.dumps([[e.hlc, e.author, e.kind, e.value] for e in (won, *losers)]))
                         for name, (won, losers) in ent.conflicts().items()]
            self._store.index_entity(key, ent.deleted, fields, conflicts)
        finally:
            if temporary:
                ent.close()

    def sealed(self, records: dict[EntityKey, list[bytes]]) -> None:
        """After a seal: fold the entities whose parts since their snapshot passed
        :data:`SNAPSHOT_AFTER_PARTS` or :data:`SNAPSHOT_AFTER_BYTES`. Counted in memory (no
        query per sealed entity); the store is checked again before folding."""
        grown = self._grown
        for key, items in records.items():
            count, size = grown.get(key, (0, 0))
            count, size = count + 1, size + sum(len(item) for item in items)
            if count >= SNAPSHOT_AFTER_PARTS or size >= SNAPSHOT_AFTER_BYTES:
                self.compact(key)
                grown.pop(key, None)
            else:
                grown[key] = (count, size)

    def compact(self, key: EntityKey, parts: int | None = None, size: int | None = None) -> bool:
        """Fold ``key``'s parts after its snapshot into a new snapshot when there are at
        least ``parts`` of them or ``size`` bytes (one SQLite transaction: a kill leaves the
        old snapshot or the new one). Parts are kept (``history`` reads them); loading reads
        the snapshot and the parts after it. Returns whether it folded."""
        parts = SNAPSHOT_AFTER_PARTS if parts is None else parts
        size = SNAPSHOT_AFTER_BYTES if size is None else size
        count, size_now, upto = self._store.parts_since_snapshot(key)
        if count < 1 or (count < parts and size_now < size):
            return False
        with self._store.write():
            count, size_now, upto = self._store.parts_since_snapshot(key)
            if count < 1:
                return False
            snapshot, stored = self._store.load_entity(key)
            updates = [] if snapshot is None else [snapshot]
            for data in stored:
                updates.extend(update for _hlc, update in unpack_items(data))
            self._store.save_snapshot(key, _snapshot(updates), upto)
        self._grown.pop(key, None)
        return True


def merged_items(blob: bytes) -> bytes:
    """One entity's packed items of one envelope as a single item: the updates merged into
    one (``merge_updates`` in groups: they are one device's consecutive updates of this
    entity, which a scratch Doc could not hold without the state they build on), stamped
    with the latest item's time. An envelope thus carries one update per entity, whatever
    the number of transactions that made it; a merge that would not be smaller keeps the
    items as they are (docs/DESIGN.md, "One update per entity per envelope")."""
    items = unpack_items(blob)
    if len(items) < 2:
        return blob
    merged = pack_item(max(hlc for hlc, _ in items), _merge([update for _, update in items]))
    return merged if len(merged) < len(blob) else blob


def fold_updates(updates: list[bytes]) -> bytes:
    """One update standing for all of ``updates`` (what compaction folds an entity into; a
    signed snapshot carries each entity's state so: :mod:`crdt_sync.bootstrap`)."""
    return _snapshot(updates)


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
