"""The integrator's API: spaces, transactions and entity writers."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import cbor2

from .cache import EntityCache
from .entity import (
    DELETED,
    KIND_LIST,
    KIND_REMOVED,
    KIND_TEXT,
    KIND_VALUE,
    EntityDoc,
    Entry,
    check_text_insert,
)
from .errors import NotFound, ValueRejected
from .hlc import hlc_to_iso
from .payload import unpack_items
from .results import Change, Conflict, FieldWrite, HistoryEntry
from .store import EntityKey, Store
from .values import (
    INDEX_MAX_STR,
    MAX_TEXT_INSERT,
    check_field_name,
    check_name,
    decode_value,
    encode_field,
    encode_value,
    indexable,
)
from .writes import LocalWrites, Transaction

KIND_NAMES = {KIND_VALUE: "value", KIND_TEXT: "text", KIND_LIST: "list", KIND_REMOVED: "removed"}


class SpaceHost(Protocol):
    """What a space needs of its replica (:class:`crdt_sync.Replica` is one)."""

    def refresh(self) -> None: ...

    def seal(self) -> None: ...

    def observe(self, callback: Callable[[builtins.list[Change]], None],
                space: str | None = None) -> Callable[[], None]: ...

    def version_vector(self, space: str) -> dict[str, int]: ...

    def check_writable(self, space: str, collection: str) -> None: ...


class SpaceTransaction(Transaction):
    """Writes to one space; ``with space.transaction() as tx:`` (made by :meth:`Space.transaction`)."""

    __slots__ = ("space",)
    space: Space  # set by Space.transaction (no __init__ of its own: one call less per keystroke)

    def entity(self, collection: str, id: str) -> EntityWriter:
        space = self.space
        key = (space.id, collection, id)
        # Space.writer's cache hit, written out (a keystroke is a transaction)
        writer = space._writers.get(key)
        if writer is None:
            return space.writer(self, key)
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

    def rebind(self, tx: Transaction) -> None:
        """Write in ``tx`` from now on (see :meth:`Space.writer`)."""
        self._tx = tx

    def _write(self, name: str, kind: int, value: Any, size: int) -> None:
        ent = self._tx.doc(self.key)
        ent.spend(size)
        ent.write(name, kind, value, self._tx.hlc, self._tx.author)
        if name != DELETED and ent.deleted:  # writing to a deleted entity revives it
            ent.write(DELETED, KIND_VALUE, False, self._tx.hlc, self._tx.author)

    def set(self, name: str, value: Any) -> None:
        check_field_name(name)
        self._write(name, KIND_VALUE, value, len(encode_field(name, value)))

    def update(self, fields: Mapping[str, Any]) -> None:
        sizes = {}
        for name, value in fields.items():  # check all before writing any
            check_field_name(name)
            sizes[name] = len(encode_field(name, value))
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
        ent.spend(16)
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
        self._bound = ent.handle.text_binding(text)  # see insert
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

    def forget_size(self) -> None:
        """Forget the known-ASCII length (an update from elsewhere may have changed the text)."""
        self._size = None

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
            if n > MAX_TEXT_INSERT:
                check_text_insert(text)  # raises, with the reason
            ent.spend(n)
            handle = ent.handle
            if handle.open:  # inside our transaction: through the handle (pycrdt's wrapper
                handle.insert_text(self._bound, index, text)  # costs 5 calls)
            else:
                self._text.insert(index, text)
            self._size = size + n
            return
        check_text_insert(text)
        self._ent.spend(len(text))
        chars = self._chars()
        if chars is None:
            at = _insert_at(index, self._size or 0)
        else:
            at = len(chars[:_insert_at(index, len(chars))].encode("utf-8"))
        self._text.insert(at, text)
        self._resized(len(text), text)

    def append(self, text: str) -> None:
        check_text_insert(text)
        self._ent.spend(len(text))
        self._text.insert(len(self._text), text)  # the end in bytes is the end in characters
        self._resized(len(text), text)

    def delete(self, index: int, length: int = 1) -> None:
        size = self._size
        if size is not None and index >= 0 and length > 0 and index + length <= size:
            handle = self._ent.handle  # known-ASCII, in range: the lean case (see insert)
            if handle.open:
                handle.remove_text(self._bound, index, length)
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
        self._ent.spend(len(text))
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
        self._ent.spend(len(data))
        return data

    def append(self, value: Any) -> None:
        self._array.append(self._encode(value))

    def extend(self, values: list[Any]) -> None:
        encoded = [encode_value(v) for v in values]
        self._ent.spend(sum(map(len, encoded)))
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


def _field_write(e: Entry) -> FieldWrite:
    return FieldWrite(KIND_NAMES.get(e.kind, "value"), e.value if e.kind == KIND_VALUE else None,
                      e.author, hlc_to_iso(e.hlc), e.hlc)


class Space:
    """A space of a replica: the unit of sharing. Obtained from :meth:`Replica.space`."""

    def __init__(self, replica: SpaceHost, id: str, name: str, writes: LocalWrites, cache: EntityCache,
                 store: Store) -> None:
        self.replica = replica
        #: the space id (bound to its creator's key: the same on every device)
        self.id = id
        #: its local name on this device (the id when it has none)
        self.name = name
        self._writes = writes
        self._cache = cache
        self._store = store
        self._writers: dict[EntityKey, EntityWriter] = {}  # see SpaceTransaction.entity

    def transaction(self) -> SpaceTransaction:
        """Writes to this space: ``with space.transaction() as tx:`` (see :meth:`Replica.transaction`)."""
        tx = SpaceTransaction(self._writes)  # entering it checks that the replica is open
        tx.space = self
        return tx

    def writer(self, tx: SpaceTransaction, key: EntityKey) -> EntityWriter:
        """The writer of entity ``key`` for ``tx``: writers are kept per entity and handed to
        each transaction in turn (a keystroke is a transaction: building one each time
        showed). The names are checked when the writer is made."""
        writers = self._writers
        writer = writers.get(key)
        if writer is None:
            check_name("collection", key[1])
            check_name("entity id", key[2])
            self.replica.check_writable(self.id, key[1])  # (once per entity writer: they are kept)
            if len(writers) > 4096:
                writers.clear()
            writer = writers[key] = EntityWriter(tx, key)
        else:
            writer.rebind(tx)
        return writer

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
        key = (self.id, collection, id)
        # (an entity with unsealed edits is never evicted, so it is in the cache)
        if key not in self._cache and self._store.entity_state(key) is None:
            raise NotFound(f"no entity {collection}/{id} in space {self.name!r}")
        return self._cache.get(key)

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
        if collection is not None:
            check_name("collection", collection)
        self.replica.seal()
        self.replica.refresh()
        return self._store.list_entities(self.id, collection)

    def rows(self, collection: str | None = None) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """``(collection, id, fields)`` of every live entity, loading one at a time: memory
        stays flat in the size of the space (ids are read a page at a time, and an entity
        not already loaded is loaded for the moment, not cached)."""
        if collection is not None:
            check_name("collection", collection)
        self.replica.seal()
        self.replica.refresh()
        for coll, ent in self._store.iter_entities(self.id, collection):
            key = (self.id, coll, ent)
            loaded = self._cache.peek(key)
            if loaded is not None:
                yield coll, ent, loaded.fields()
                continue
            temporary = self._cache.load(key)
            try:
                fields = temporary.fields()
            finally:
                temporary.close()
            yield coll, ent, fields

    def find(self, collection: str, **where: Any) -> builtins.list[str]:
        """Ids of live entities whose plain fields equal the given values (uses the index).

        The index holds small values only: numbers, booleans, ``None``, strings of at most
        :data:`~crdt_sync.values.INDEX_MAX_STR` (256) characters and small dicts or lists of
        those (about 256 bytes). Bytes (photos), longer strings and larger containers are
        not indexed, so finding by one raises :class:`ValueRejected` (read the entities and
        compare instead).
        """
        check_name("collection", collection)
        for name, value in where.items():
            check_field_name(name)
            encode_field(name, value)
            if not indexable(value):
                raise ValueRejected(
                    f"find({name}=...): the query index holds numbers, booleans, None, strings of "
                    f"at most {INDEX_MAX_STR} characters and small dicts or lists of those, not "
                    f"this {type(value).__name__}"
                    + (f" of {len(value)} characters" if isinstance(value, str) else "")
                    + ": read the entities and compare instead")
        self.replica.seal()
        self.replica.refresh()
        encoded = {k: cbor2.dumps(v, canonical=True) for k, v in where.items()}  # as the index
        return self._store.find(self.id, collection, encoded)

    def conflicts(self) -> builtins.list[Conflict]:
        """Fields whose concurrent writes disagreed: the winner and the values that lost."""
        self.replica.seal()
        self.replica.refresh()
        out = []
        for coll, ent, field, detail in self._store.conflicts(self.id):
            entries = [Entry(h, a, 0, k, v) for h, a, k, v in cbor2.loads(detail)]
            out.append(Conflict(coll, ent, "(deleted)" if field == DELETED else field,
                                _field_write(entries[0]), [_field_write(e) for e in entries[1:]]))
        return out

    def history(self, collection: str, id: str) -> builtins.list[HistoryEntry]:
        """Provenance: every change to the entity, oldest first, with author and time."""
        self._loaded(collection, id)
        self.replica.seal()
        key = (self.id, collection, id)
        scratch = EntityDoc(key, 1, lambda _ent, _event: None)
        before: dict[str, Any] = {}
        was_deleted = False
        out: builtins.list[HistoryEntry] = []
        try:
            for author, data in self._store.entity_parts(key):
                for hlc, update in unpack_items(data):
                    scratch.apply(update)
                    after = scratch.fields()
                    changed = {k: v for k, v in after.items() if k not in before or before[k] != v}
                    removed = sorted(k for k in before if k not in after)
                    deleted: bool | None = None
                    if scratch.deleted != was_deleted:
                        deleted = was_deleted = scratch.deleted
                    out.append(HistoryEntry(author, hlc_to_iso(hlc), hlc, changed, removed, deleted))
                    before = after
        finally:
            scratch.close()
        return out

    def observe(self, callback: Callable[[builtins.list[Change]], None]) -> Callable[[], None]:
        """Call ``callback(changes)`` for changes to this space from anywhere; returns unsubscribe."""
        return self.replica.observe(callback, self.id)

    def version_vector(self) -> dict[str, int]:
        return self.replica.version_vector(self.id)
