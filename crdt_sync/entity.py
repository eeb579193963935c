"""One entity as one pycrdt Doc, with last-writer-wins fields by hybrid logical clock.

Layout inside the Doc:

- root Map ``"f"``: field registers. The key is ``field + "\\0" + writer_client_id`` and the
  value is the CBOR of ``[hlc, author, kind, value]``. Writers never share a key, so Yjs
  never silently drops a concurrent write; a write removes every entry of that field it has
  seen. The entry with the highest ``(hlc, author, client)`` wins on every device; the others
  stay visible as conflicts until the field is written again.
- root Text ``"t\\0" + field`` and root Array ``"l\\0" + field``: text and list fields. Root
  types are named, so two devices that start the same text field concurrently share it.
  The register of such a field holds a marker of its kind.
- the register ``"\\x01deleted"`` holds the entity's tombstone (``True``) or revival.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import cbor2
from pycrdt import Array, Doc, Map, Text

from ._pycrdt_compat import doc_handle
from .cbor_exact import loads_exact
from .errors import ValueRejected
from .hlc import MAX_HLC
from .values import MAX_TEXT_INSERT, MAX_VALUE_BYTES, check_value, decode_value

REGISTERS = "f"
TEXT_PREFIX = "t\x00"
LIST_PREFIX = "l\x00"
DELETED = "\x01deleted"
SEP = "\x00"

#: Largest total of values one transaction may write into one entity (keeps every
#: transaction's update well inside one envelope).
MAX_TX_BYTES_PER_ENTITY = 256 * 1024

KIND_VALUE = 0
KIND_TEXT = 1
KIND_LIST = 2
KIND_REMOVED = 3


@dataclass(frozen=True, slots=True, order=True)
class Entry:
    """One writer's value of one field. Ordered so that ``max()`` is the winner."""

    hlc: int
    author: str
    client: int
    kind: int
    value: Any


class EntityDoc:
    """A loaded entity. Local writes go through the methods here (so values are checked)."""

    __slots__ = ("_regs", "_resolved", "_roots", "_unsubscribe", "applying", "doc", "handle",
                 "journal_key", "key", "spent", "texts", "unsealed", "updated")

    def __init__(self, key: tuple[str, str, str], client_id: int,
                 on_update: Callable[[EntityDoc, Any], None], journal_key: Any = None) -> None:
        self.key = key
        self.doc: Doc[Any] = Doc(client_id=client_id)
        #: the document's transaction, text writes and observer (:mod:`crdt_sync._pycrdt_compat`)
        self.handle = doc_handle(self.doc)
        #: the journal's key for this entity's records (:meth:`crdt_sync.journal.Journal.record_key`),
        #: kept here so that a keystroke does not look it up; opaque to this module
        self.journal_key = journal_key
        self._regs: Map[Any] = self.doc.get(REGISTERS, type=Map)
        self._resolved: dict[str, list[Entry]] | None = None
        self._roots: dict[str, Any] = {}  # Doc.get() integrates a new prelim type each call
        #: set while applying stored or remote updates, so they are not journaled as local
        self.applying = False
        #: text fields whose register is known to say "text", with the writer's handle on
        #: each (name -> :class:`crdt_sync.space.TextField`, kept there): typing skips the
        #: register check; any write to the field or applied update forgets it (and the
        #: handle forgets what it knew of the text, see :meth:`forget_text`)
        self.texts: dict[str, Any] = {}
        #: while a local transaction holds it: bytes it wrote, and whether it committed an update
        self.spent = 0
        self.updated = False
        #: whether the journal holds edits of this entity not sealed yet (it stays loaded)
        self.unsealed = False
        # ``on_update(self, event)`` after every committed transaction, local or applied
        # (it checks ``applying``). An exception raised there (a failed journal write)
        # propagates out of the commit, as the caller needs.
        self._unsubscribe = self.handle.observe(partial(on_update, self))

    # -- applying updates that did not originate here -------------------------------------
    def apply(self, update: bytes) -> None:
        self.applying = True
        try:
            self.handle.apply_update(update)
        finally:
            self.applying = False
            self._resolved = None
            # an update from elsewhere may have added non-ASCII characters to any text
            for name in list(self.texts):
                self.forget_text(name)

    def apply_remote(self, update: bytes) -> list[int]:
        """Apply an update received from another device; returns the clocks of the registers
        it wrote (the receiver checks them against its envelope: :mod:`crdt_sync.clocks`).

        Raises:
            ValueError: the update does not apply, or a register it wrote is malformed.
        """
        written: list[tuple[str, Any]] = []

        def seen(keys: dict[str, Any]) -> None:
            for key, change in keys.items():
                if change["action"] != "delete":
                    written.append((key, change["newValue"]))

        unsubscribe = self.handle.observe_keys(self._regs, seen)
        try:
            self.apply(update)
        finally:
            unsubscribe()
        return [_register_clock(key, raw) for key, raw in written]

    # -- reading ---------------------------------------------------------------------------
    def registers(self) -> dict[str, list[Entry]]:
        """Every field's entries, the winner first."""
        if self._resolved is None:
            grouped: dict[str, list[Entry]] = {}
            for key, raw in self.handle.map_items(self._regs):
                name, entry = _parse_register(key, raw)
                grouped.setdefault(name, []).append(entry)
            for entries in grouped.values():
                entries.sort(reverse=True)
            self._resolved = grouped
        return self._resolved

    def winner(self, name: str) -> Entry | None:
        entries = self.registers().get(name)
        return entries[0] if entries else None

    @property
    def deleted(self) -> bool:
        won = self.winner(DELETED)
        return bool(won and won.value)

    def exists(self) -> bool:
        return bool(self.registers()) and not self.deleted

    def read(self, entry: Entry, name: str) -> Any:
        if entry.kind == KIND_TEXT:
            return str(self._root(TEXT_PREFIX + name, Text))
        if entry.kind == KIND_LIST:
            return [decode_value(v) for v in self._root(LIST_PREFIX + name, Array)]
        return _thaw(entry.value)

    def fields(self) -> dict[str, Any]:
        """The entity as plain Python: winning values, removed fields left out."""
        out: dict[str, Any] = {}
        for name, entries in sorted(self.registers().items()):
            won = entries[0]
            if name == DELETED or won.kind == KIND_REMOVED:
                continue
            out[name] = self.read(won, name)
        return out

    def scalar_fields(self) -> Iterator[tuple[str, Any]]:
        """Winning plain values (not text or list), for the query index."""
        for name, entries in self.registers().items():
            won = entries[0]
            if name != DELETED and won.kind == KIND_VALUE:
                yield name, won.value

    def conflicts(self) -> dict[str, tuple[Entry, list[Entry]]]:
        """Fields whose concurrent writes disagree: ``{field: (winner, losers)}``."""
        out: dict[str, tuple[Entry, list[Entry]]] = {}
        for name, entries in self.registers().items():
            won = entries[0]
            losers = [e for e in entries[1:] if not _same(e, won)]
            if losers:
                out[name] = (won, losers)
        return out

    # -- writing (inside a transaction of the Doc) -----------------------------------------
    def write(self, name: str, kind: int, value: Any, hlc: int, author: str) -> None:
        raw = cbor2.dumps([hlc, author, kind, value])
        if len(raw) > MAX_VALUE_BYTES + 256:
            raise ValueRejected(f"value is {len(raw)} bytes encoded; the limit is {MAX_VALUE_BYTES}")
        regs = self.registers()
        client = self.doc.client_id
        for old in regs.get(name, ()):
            if old.client != client:
                del self._regs[f"{name}{SEP}{old.client}"]
        self._regs[f"{name}{SEP}{client}"] = raw
        regs[name] = [Entry(hlc, author, client, kind, value)]
        self.forget_text(name)

    def forget_text(self, name: str) -> None:
        """Drop the handle on text field ``name`` and what it knew (its known-ASCII length):
        at most one handle per field knows it, the one kept in :attr:`texts`."""
        field = self.texts.pop(name, None)
        if field is not None:
            field.forget_size()

    def text(self, name: str, hlc: int, author: str) -> Text:
        won = self.winner(name)
        if won is None or won.kind != KIND_TEXT:
            self.write(name, KIND_TEXT, None, hlc, author)
        text: Text = self._root(TEXT_PREFIX + name, Text)
        return text

    def array(self, name: str, hlc: int, author: str) -> Array[Any]:
        won = self.winner(name)
        if won is None or won.kind != KIND_LIST:
            self.write(name, KIND_LIST, None, hlc, author)
        return self._root(LIST_PREFIX + name, Array)  # type: ignore[no-any-return]

    def _root(self, name: str, kind: type) -> Any:
        root = self._roots.get(name)
        if root is None:
            root = self._roots[name] = self.doc.get(name, type=kind)
        return root

    def begin(self) -> None:
        """Open the document's transaction for a local transaction (see
        :class:`crdt_sync.writes.Transaction`): reset what it counts."""
        self.handle.begin()
        self.spent = 0
        self.updated = False

    def spend(self, size: int) -> None:
        """Count ``size`` bytes written by the open transaction; refuse past the limit."""
        spent = self.spent + size
        if spent > MAX_TX_BYTES_PER_ENTITY:
            raise ValueRejected(f"one transaction may write at most {MAX_TX_BYTES_PER_ENTITY} bytes "
                                f"into one entity; split the writes into several transactions")
        self.spent = spent

    def close(self) -> None:
        self._unsubscribe()


_KINDS = (KIND_VALUE, KIND_TEXT, KIND_LIST, KIND_REMOVED)


def _parse_register(key: str, raw: Any, clock_end: int = MAX_HLC) -> tuple[str, Entry]:
    """One register as this module writes it, else ValueError: registers arrive in other
    devices' updates, and a signed update is still untrusted input."""
    name, sep, client = key.rpartition(SEP)
    if not (sep and name and _canonical_client(client) and isinstance(raw, (bytes, bytearray))):
        raise ValueError(f"register {key!r} is not field\\0client -> bytes")
    try:
        item = loads_exact(bytes(raw))
    except Exception as exc:  # trust boundary: cbor2 raises several types on garbage
        raise ValueError(f"register {key!r} is not CBOR: {exc}") from None
    if not (isinstance(item, list) and len(item) == 4):
        raise ValueError(f"register {key!r} is not [hlc, author, kind, value]")
    hlc, author, kind, value = item
    if not (type(hlc) is int and 0 <= hlc < clock_end and isinstance(author, str)
            and type(kind) is int and kind in _KINDS):
        raise ValueError(f"register {key!r} has the wrong types")
    try:
        check_value(value, finite=False)
    except ValueRejected as exc:  # a ValueError, as the callers expect
        raise ValueRejected(f"register {key!r}: {exc}") from None
    return name, Entry(hlc, author, int(client), kind, value)


def _canonical_client(text: str) -> bool:
    """The client id as a writer spells it: ASCII decimal, no sign or leading zero, < 2**64.
    (``str.isdigit`` alone admits other scripts' digits and leading zeros, so two keys could
    name one client, and the winner order would then compare the values themselves.)"""
    return (0 < len(text) <= 20 and text.isascii() and text.isdigit()
            and (text == "0" or text[0] != "0") and int(text) < 2**64)

def _register_clock(key: str, raw: Any) -> int:
    """The clock of one register (its first item). Any 64-bit clock is read: the receiver's
    check names one outside the range. Reading the rest is left to :func:`_parse_register`
    when the entity is read (a malformed register is refused then)."""
    if isinstance(raw, (bytes, bytearray)) and len(raw) > 9 and raw[0] == 0x84 and raw[1] == 0x1B:
        return int.from_bytes(raw[2:10], "big")  # [uint64, ...]: every clock from 2**32 on
    return _parse_register(key, raw, 2**64)[1].hlc


def _same(a: Entry, b: Entry) -> bool:
    """Exactly the same write: Python's == would call 1, 1.0 and True (or 0.0 and -0.0) equal,
    and hide a conflict between values that round-trip as different types."""
    return a.kind == b.kind and cbor2.dumps(a.value, canonical=True) == cbor2.dumps(b.value, canonical=True)


def _thaw(value: Any) -> Any:
    # cbor2 decodes what we encoded exactly, but arrays inside come back as lists already;
    # copy mutable values so callers cannot alter the cached register.
    if isinstance(value, list):
        return [_thaw(v) for v in value]
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    return value


def check_text_insert(text: str) -> None:
    if not isinstance(text, str):
        raise ValueRejected("text fields take str")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueRejected("text is not valid Unicode (lone surrogate)") from None
    if size > MAX_TEXT_INSERT:
        raise ValueRejected(f"text insert larger than {MAX_TEXT_INSERT} bytes")

