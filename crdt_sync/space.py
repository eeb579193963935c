"""The integrator's API: spaces, transactions and entity writers."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Self

import cbor2

from .entity import (
    DELETED,
    KIND_LIST,
    KIND_REMOVED,
    KIND_TEXT,
    KIND_VALUE,
    EntityDoc,
    Entry,
    check_field_name,
    check_text_insert,
)
from .errors import CrdtSyncError, NotFound, ValueRejected
from .hlc import COUNTER_BITS, hlc_to_iso, wall_ms
from .payload import unpack_items
from .values import MAX_TEXT_INSERT, check_name, decode_value, encode_value

if TYPE_CHECKING:
    from .replica import Change, Replica
    from .store import EntityKey

#: Largest total of values one transaction may write into one entity (keeps every
#: transaction's update well inside one envelope).
MAX_TX_BYTES_PER_ENTITY = 256 * 1024
KIND_NAMES = {KIND_VALUE: "value", KIND_TEXT: "text", KIND_LIST: "list", KIND_REMOVED: "removed"}


class Transaction:
    """An open transaction of a replica (see :meth:`Replica.transaction`).

    Kept lean on purpose: typing into a text field is one transaction per keystroke, so
    every attribute and call here is paid per edit (see docs/BENCHMARKS.md, Write path).
    Per-entity state (bytes written, whether it changed) lives on the entity while the
    transaction holds it open.
    """

    __slots__ = ("_outer", "docs", "hlc", "replica")

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.hlc = 0
        self.docs: dict[EntityKey, EntityDoc] = {}  # opened entities, in order
        self._outer: Transaction | None = None

    @property
    def author(self) -> str:
        return self.replica.device_id

    def __enter__(self) -> Self:
        # Become the replica's open transaction, or join the one already open. (Written
        # out here rather than in a Replica method: it runs per keystroke.)
        replica = self.replica
        outer = replica._tx
        if outer is not None:
            # Nested: share the outer transaction's state, so writes made through this
            # object belong to the outer one (one timestamp, one journal write per entity).
            self._outer, self.hlc, self.docs = outer, outer.hlc, outer.docs
            return self
        if replica._closed:
            raise CrdtSyncError("this replica is closed")
        # refresh(), inlined, and the store's signal read here first (per keystroke)
        store = replica._store
        if store.signal[0] != store.seen and store.changed_elsewhere():
            replica._notify(replica._refresh_locked(), "store")
        clock = replica._clock
        if clock._wall is wall_ms:  # HybridClock.now() with the default clock, inlined
            physical = time.time_ns() // 1_000_000 << COUNTER_BITS
            last = clock._last
            self.hlc = clock._last = physical if physical > last else last + 1
        else:
            self.hlc = clock.now()
        replica._tx = self
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._outer is not None:
            return
        error: BaseException | None = None
        try:
            # Commit every entity's pycrdt transaction even when one fails: the edits are in
            # the documents already and must reach the journal, or memory and disk would differ.
            for ent in self.docs.values():
                txn = ent.txn  # what pycrdt's Transaction.__exit__ does (see doc())
                try:
                    txn.commit()  # the observer journals the update here, and may raise
                except BaseException as failed:  # a journal write failed: the replica knows
                    error = error or failed
                finally:
                    # the document lets go of our pycrdt transaction object (doc() resets
                    # the object itself before its next use)
                    ent.txn = ent.doc._txn = None
                    txn.drop()
        finally:
            replica = self.replica
            replica._tx = None
            # Replica._end does the rest only when there is something to do (checked here:
            # this runs per keystroke): a fold is due after a pause or at the latest at
            # _fold_at (Replica.maintain)
            now = time.monotonic()
            if replica._attention or now >= replica._fold_at \
                    or now - replica._last_edit >= replica._seal_interval:
                replica._end(self)
            replica._last_edit = now
            # Writers and text fields outlive their transaction (they are reused): let go
            # of the entities, which may be evicted now.
            self.docs.clear()
        if error is not None:
            raise error

    def changed(self) -> set[EntityKey]:
        """Entities this transaction changed (after it committed them)."""
        return {key for key, ent in self.docs.items() if ent.updated}

    def doc(self, key: EntityKey) -> EntityDoc:
        ent = self.docs.get(key)
        if ent is None:
            replica = self.replica
            open_tx = replica._tx
            if open_tx is not self and (open_tx is None or open_tx is not self._outer):
                raise CrdtSyncError("this transaction has ended: write inside "
                                    "`with space.transaction() as tx:`")
            cache = replica._cache  # Replica._entity's cache hit, inlined
            ent = cache.get(key)
            if ent is None:
                ent = replica._entity(key)
            else:
                cache.move_to_end(key)
            self.docs[key] = ent
            # Open the document's transaction: what pycrdt's Transaction.__enter__ does for
            # a document like ours (no origin, no lock, no pycrdt-level observers), without
            # its Python frames (typing pays for this per keystroke, and on a long text every
            # Python call between two edits also costs the next edit cache misses in the
            # CRDT's block list). Reads made through pycrdt inside find ``doc._txn`` and join.
            doc, ytx = ent.doc, ent.ytx
            if doc._txn is not None:  # cannot happen through our API; never nest a second one
                raise RuntimeError(f"{key} already has an open transaction")
            ytx._txn = ent.txn = ent.binding.create_transaction()
            ytx._leases = 1
            doc._txn = ytx
            ent.spent = 0
            ent.updated = False
        return ent


def spend(ent: EntityDoc, size: int) -> None:
    """Count ``size`` bytes written into ``ent`` by its open transaction; refuse past the
    per-transaction limit."""
    ent.spent += size
    if ent.spent > MAX_TX_BYTES_PER_ENTITY:
        ent.spent -= size
        raise ValueRejected(f"one transaction may write at most {MAX_TX_BYTES_PER_ENTITY} bytes "
                            f"into one entity; split the writes into several transactions")


class SpaceTransaction(Transaction):
    """Writes to one space; ``with space.transaction() as tx:``."""

    __slots__ = ("space",)

    def __init__(self, space: Space) -> None:  # Transaction.__init__, inlined (per keystroke)
        self.replica = space.replica
        self.hlc = 0
        self.docs = {}
        self._outer = None
        self.space = space

    def entity(self, collection: str, id: str) -> EntityWriter:
        key = (self.space.name, collection, id)
        # Writers are kept per entity and handed to each transaction in turn (a keystroke
        # is a transaction: building one each time showed); the names were checked when
        # the writer was made.
        writers = self.space._writers
        writer = writers.get(key)
        if writer is None:
            check_name("collection", collection)
            check_name("entity id", id)
            if len(writers) > 4096:
                writers.clear()
            writer = writers[key] = EntityWriter(self, key)
        else:
            writer._tx = self
        return writer

    def put(self, collection: str, id: str, fields: Mapping[str, Any]) -> None:
        """Merge ``fields`` into the entity, creating it (or reviving it if deleted)."""
        self.entity(collection, id).update(fields)

    def delete(self, collection: str, id: str) -> None:
        self.entity(collection, id).delete()


class EntityWriter:
    """Writes to one entity inside a transaction. Every value is checked before it is written."""

    __slots__ = ("_tx", "key")

    def __init__(self, tx: Transaction, key: EntityKey) -> None:
        self._tx = tx
        self.key = key

    def _write(self, name: str, kind: int, value: Any, size: int) -> None:
        ent = self._tx.doc(self.key)
        spend(ent, size)
        ent.write(name, kind, value, self._tx.hlc, self._tx.author)
        if name != DELETED and ent.deleted:  # writing to a deleted entity revives it
            ent.write(DELETED, KIND_VALUE, False, self._tx.hlc, self._tx.author)

    def set(self, name: str, value: Any) -> None:
        check_field_name(name)
        self._write(name, KIND_VALUE, value, len(encode_value(value)))

    def update(self, fields: Mapping[str, Any]) -> None:
        sizes = {}
        for name, value in fields.items():  # check all before writing any
            check_field_name(name)
            sizes[name] = len(encode_value(value))
        if not fields:
            self._write_touch()
        for name, value in fields.items():
            self._write(name, KIND_VALUE, value, sizes[name])

    def _write_touch(self) -> None:
        ent = self._tx.doc(self.key)
        if not ent.registers() or ent.deleted:
            ent.write(DELETED, KIND_VALUE, False, self._tx.hlc, self._tx.author)

    def remove(self, name: str) -> None:
        check_field_name(name)
        self._write(name, KIND_REMOVED, None, 16)

    def delete(self) -> None:
        """Tombstone the entity; it merges like any other write (the later one by HLC wins)."""
        ent = self._tx.doc(self.key)
        spend(ent, 16)
        ent.write(DELETED, KIND_VALUE, True, self._tx.hlc, self._tx.author)

    def text(self, name: str) -> TextField:
        ent = self._tx.doc(self.key)
        # The entity's handle on a field known to be text (nothing to check), reused by
        # every transaction: it writes through the entity's open transaction.
        field: TextField | None = ent.texts.get(name)
        if field is None:
            check_field_name(name)
            field = TextField(ent, ent.text(name, self._tx.hlc, self._tx.author))
            ent.texts[name] = field  # after ent.text(), whose register write forgets it
        return field

    def list(self, name: str) -> ListField:
        check_field_name(name)
        ent = self._tx.doc(self.key)
        return ListField(ent, ent.array(name, self._tx.hlc, self._tx.author))

    def fields(self) -> dict[str, Any]:
        return self._tx.doc(self.key).fields()


def _insert_at(index: int, size: int) -> int:
    """Where ``list.insert(index, x)`` inserts: negative counts from the end, out of range clamps."""
    if index < 0:
        index += size
    return min(max(index, 0), size)


def _span(index: int, length: int, size: int) -> tuple[int, int]:
    """``(start, stop)`` of ``length`` items from ``index``, clamped like slicing."""
    start = _insert_at(index, size)
    return start, min(start + max(length, 0), size)


class TextField:
    """A collaborative text field (pycrdt Text): concurrent inserts and deletes interleave.

    Indices count characters, as in a Python ``str``; out-of-range indices clamp as slicing
    does. (pycrdt counts UTF-8 bytes and panics past the end: both are handled here.)
    """

    __slots__ = ("_bound", "_ent", "_size", "_text")

    def __init__(self, ent: EntityDoc, text: Any) -> None:
        self._ent, self._text = ent, text
        self._bound = text._integrated  # the binding's Text (see insert)
        #: the length while the text is known to hold only ASCII (pycrdt's UTF-8 byte
        #: offsets are then character indices), else None. Known-ASCII texts skip the O(n)
        #: conversion, which keeps typing into long texts fast. The entity forgets it
        #: (:meth:`EntityDoc.forget_text`) when an update from elsewhere is applied.
        self._size: int | None = None

    def _chars(self) -> str | None:
        """The text if it holds non-ASCII characters, else None (and its size is known)."""
        if self._size is not None:
            return None
        text = str(self._text)
        if text.isascii():
            self._size = len(text)
            return None
        return text

    def _resized(self, delta: int, text: str = "") -> None:
        if self._size is not None and text.isascii():
            self._size += delta
        else:
            self._size = None

    def insert(self, index: int, text: str) -> None:
        size = self._size
        if size is not None and type(text) is str and text.isascii() and 0 <= index <= size:
            # Typing into a known-ASCII text (the common case, kept lean): characters are
            # bytes, so the index needs no conversion and the length is known.
            n = len(text)
            ent = self._ent
            spent = ent.spent + n
            if n > MAX_TEXT_INSERT or spent > MAX_TX_BYTES_PER_ENTITY:
                check_text_insert(text)  # raise, with the reason
                spend(ent, n)
            ent.spent = spent
            txn = ent.txn
            if txn is not None:  # inside our transaction: the binding directly (pycrdt's
                self._bound.insert(txn, index, text, None)  # wrapper costs 5 calls)
            else:
                self._text.insert(index, text)
            self._size = size + n
            return
        check_text_insert(text)
        spend(self._ent, len(text))
        chars = self._chars()
        if chars is None:
            at = _insert_at(index, self._size or 0)
        else:
            at = len(chars[:_insert_at(index, len(chars))].encode("utf-8"))
        self._text.insert(at, text)
        self._resized(len(text), text)

    def append(self, text: str) -> None:
        check_text_insert(text)
        spend(self._ent, len(text))
        self._text.insert(len(self._text), text)  # the end in bytes is the end in characters
        self._resized(len(text), text)

    def delete(self, index: int, length: int = 1) -> None:
        size = self._size
        if size is not None and index >= 0 and length > 0 and index + length <= size:
            txn = self._ent.txn  # known-ASCII, in range: the lean case (see insert)
            if txn is not None:
                self._bound.remove_range(txn, index, length)
            else:
                del self._text[index:index + length]
            self._size = size - length
            return
        chars = self._chars()
        if chars is None:
            start, stop = _span(index, length, self._size or 0)
        else:
            first, last = _span(index, length, len(chars))
            start = len(chars[:first].encode("utf-8"))
            stop = start + len(chars[first:last].encode("utf-8"))
        if stop > start:
            del self._text[start:stop]
            self._resized(start - stop)

    def set(self, text: str) -> None:
        """Replace the whole text (a delete and an insert: not a merge with concurrent edits)."""
        check_text_insert(text)
        spend(self._ent, len(text))
        self._text.clear()
        self._text.insert(0, text)
        self._size = len(text) if text.isascii() else None

    def __str__(self) -> str:
        return str(self._text)

    def __len__(self) -> int:
        chars = self._chars()
        return (self._size or 0) if chars is None else len(chars)


class ListField:
    """A collaborative list field (pycrdt Array) of exact values."""

    def __init__(self, ent: EntityDoc, array: Any) -> None:
        self._ent, self._array = ent, array

    def _encode(self, value: Any) -> bytes:
        data = encode_value(value)
        spend(self._ent, len(data))
        return data

    def append(self, value: Any) -> None:
        self._array.append(self._encode(value))

    def extend(self, values: list[Any]) -> None:
        encoded = [encode_value(v) for v in values]
        spend(self._ent, sum(map(len, encoded)))
        self._array.extend(encoded)

    def insert(self, index: int, value: Any) -> None:
        """Insert like ``list.insert`` (out-of-range indices clamp; pycrdt would raise)."""
        data = self._encode(value)
        self._array.insert(_insert_at(index, len(self._array)), data)

    def delete(self, index: int, length: int = 1) -> None:
        """Delete ``length`` items from ``index``, clamped like slicing (pycrdt would panic)."""
        start, stop = _span(index, length, len(self._array))
        if stop > start:
            del self._array[start:stop]

    def to_list(self) -> list[Any]:
        return [decode_value(v) for v in self._array]

    def __len__(self) -> int:
        return len(self._array)


def _entry_dict(e: Entry) -> dict[str, Any]:
    return {"kind": KIND_NAMES.get(e.kind, "value"), "value": e.value if e.kind == KIND_VALUE else None,
            "author": e.author, "time": hlc_to_iso(e.hlc), "hlc": e.hlc}


class Space:
    """A space of a replica: the unit of sharing. Obtained from :meth:`Replica.space`."""

    def __init__(self, replica: Replica, name: str) -> None:
        self.replica = replica
        self.name = name
        self._writers: dict[EntityKey, EntityWriter] = {}  # see SpaceTransaction.entity

    def transaction(self) -> SpaceTransaction:
        """Writes to this space: ``with space.transaction() as tx:`` (see :meth:`Replica.transaction`)."""
        return SpaceTransaction(self)  # entering it checks that the replica is open

    # conveniences for one-write transactions
    def put(self, collection: str, id: str, fields: Mapping[str, Any]) -> None:
        with self.transaction() as tx:
            tx.put(collection, id, fields)

    def delete(self, collection: str, id: str) -> None:
        self.get(collection, id)  # NotFound for what does not exist
        with self.transaction() as tx:
            tx.delete(collection, id)

    def _loaded(self, collection: str, id: str) -> EntityDoc:
        check_name("collection", collection)
        check_name("entity id", id)
        self.replica.refresh()
        key = (self.name, collection, id)
        # (an entity with unsealed edits is never evicted, so it is in the cache)
        if key not in self.replica._cache and self.replica._store.entity_state(key) is None:
            raise NotFound(f"no entity {collection}/{id} in space {self.name!r}")
        return self.replica._entity(key)

    def get(self, collection: str, id: str) -> dict[str, Any]:
        """The entity's fields as plain Python.

        Raises:
            NotFound: the entity does not exist or is deleted.
        """
        ent = self._loaded(collection, id)
        if not ent.exists():
            raise NotFound(f"no entity {collection}/{id} in space {self.name!r}"
                           + (" (deleted)" if ent.deleted else ""))
        return ent.fields()

    def exists(self, collection: str, id: str) -> bool:
        try:
            self.get(collection, id)
        except NotFound:
            return False
        return True

    def list(self, collection: str | None = None) -> builtins.list[tuple[str, str]]:
        """``(collection, id)`` of every live entity, without loading them."""
        self.replica.flush()
        self.replica.refresh()
        return self.replica._store.list_entities(self.name, collection)

    def rows(self, collection: str | None = None) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """``(collection, id, fields)`` of every live entity, loading one at a time."""
        for coll, ent in self.list(collection):
            yield coll, ent, self.replica._entity((self.name, coll, ent)).fields()

    def find(self, collection: str, **where: Any) -> builtins.list[str]:
        """Ids of live entities whose plain fields equal the given values (uses the index)."""
        self.replica.flush()
        self.replica.refresh()
        encoded = {k: cbor2.dumps(v, canonical=True) for k, v in where.items()}  # as the index
        return self.replica._store.find(self.name, collection, encoded)

    def conflicts(self) -> builtins.list[dict[str, Any]]:
        """Fields whose concurrent writes disagreed: the winner and the values that lost."""
        self.replica.flush()
        self.replica.refresh()
        out = []
        for coll, ent, field, detail in self.replica._store.conflicts(self.name):
            entries = [Entry(h, a, 0, k, v) for h, a, k, v in cbor2.loads(detail)]
            out.append({"collection": coll, "id": ent,
                        "field": "(deleted)" if field == DELETED else field,
                        "winner": _entry_dict(entries[0]),
                        "losers": [_entry_dict(e) for e in entries[1:]]})
        return out

    def history(self, collection: str, id: str) -> builtins.list[dict[str, Any]]:
        """Provenance: every change to the entity, oldest first, with author and time."""
        self._loaded(collection, id)
        self.replica.flush()
        key = (self.name, collection, id)
        scratch = EntityDoc(key, 1, lambda _ent, _event: None)
        before: dict[str, Any] = {}
        was_deleted = False
        out = []
        try:
            for author, data in self.replica._store.entity_parts(key):
                for hlc, update in unpack_items(data):
                    scratch.apply(update)
                    after = scratch.fields()
                    changed = {k: v for k, v in after.items() if k not in before or before[k] != v}
                    removed = sorted(k for k in before if k not in after)
                    item: dict[str, Any] = {"author": author, "time": hlc_to_iso(hlc), "hlc": hlc,
                                            "changes": changed, "removed": removed}
                    if scratch.deleted != was_deleted:
                        item["deleted"] = was_deleted = scratch.deleted
                    out.append(item)
                    before = after
        finally:
            scratch.close()
        return out

    def observe(self, callback: Callable[[builtins.list[Change]], None]) -> Callable[[], None]:
        """Call ``callback(changes)`` for changes to this space from anywhere; returns unsubscribe."""
        return self.replica.observe(callback, self.name)

    def version_vector(self) -> dict[str, int]:
        return self.replica.version_vector(self.name)
