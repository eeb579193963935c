"""The one place that touches pycrdt's private internals (see docs/DESIGN.md, "Dependencies").

A keystroke is one local transaction, and pycrdt's public transaction and text wrappers cost
several Python frames each (and, on a long text, every Python call between two edits costs
the next edit cache misses in the CRDT's block list: docs/BENCHMARKS.md, Write path). So the
write path opens and commits the binding's transaction itself and writes text through the
binding. That needs pycrdt internals: ``Doc._doc`` (the binding's document),
``Doc._txn`` and ``Transaction._txn`` / ``_leases`` (so that reads made through pycrdt
inside our transaction join it), ``Text._integrated`` (the binding's text) and the binding's
``observe``, ``create_transaction``, ``insert`` and ``remove_range``.

At import this module checks the installed pycrdt version against the range these internals
were read from, and probes each internal on a scratch document (an insert and a remove
through the binding, an observer that sees the update). If either check fails, every
document uses :class:`PublicDocHandle`, built on pycrdt's public API only: slower, the same
results. ``CRDT_SYNC_PYCRDT_INTERNALS=0`` forces that fallback (tests run both).
:data:`INTERNALS` says which one is in use and :data:`FALLBACK_REASON` why.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, cast

from pycrdt import Doc, Map, Text, Transaction

#: pycrdt versions whose internals this module was written against: [low, high)
SUPPORTED = ((0, 12), (0, 15))

#: Called with an object that has ``.update`` (the transaction's update, bytes) after every
#: committed transaction of the document. An exception it raises propagates out of the
#: commit (a failed journal write must reach the caller).
UpdateCallback = Callable[[Any], None]
#: Called with the keys a transaction changed in a Map: ``{key: {"action": "add" | "update"
#: | "delete", "newValue": ..., "oldValue": ...}}`` (pycrdt's ``MapEvent.keys``).
KeysCallback = Callable[[dict[str, Any]], None]


def _version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit()) or "0"
        parts.append(int(digits))
    return tuple(parts)


class PublicDocHandle:
    """A document's transaction, text writes and observer through pycrdt's public API."""

    __slots__ = ("_ctx", "doc", "open")

    def __init__(self, doc: Doc[Any]) -> None:
        self.doc = doc
        self._ctx: Transaction | None = None
        #: whether a local transaction is open on the document (text writes go through it)
        self.open = False

    def observe(self, callback: UpdateCallback) -> Callable[[], None]:
        """Subscribe ``callback`` to committed transactions; returns the unsubscribe."""
        sub = self.doc.observe(callback)
        return lambda: self.doc.unobserve(sub)

    def begin(self) -> None:
        """Open the document's transaction (never nested: our API opens one at a time)."""
        if self.open:
            raise RuntimeError("the document already has an open transaction")
        ctx = self.doc.transaction()
        ctx.__enter__()
        self._ctx, self.open = ctx, True

    def commit(self) -> None:
        """Commit and close the transaction; the observer runs here and may raise."""
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return
        try:
            ctx.__exit__(None, None, None)  # the observer runs here, still inside ``open``
        except ExceptionGroup as group:  # pycrdt gathers what observers raised
            raise group.exceptions[0] from None
        finally:
            self.open = False

    def apply_update(self, update: bytes) -> None:
        """Apply ``update`` in a transaction of its own; the observers run at its commit.

        Raises:
            ValueError: the update does not apply.
        """
        self.doc.apply_update(update)

    @staticmethod
    def map_items(regs: Map[Any]) -> list[tuple[str, Any]]:
        """The entries of a map of the document (a nested type's value is never bytes)."""
        return list(regs.items())

    @staticmethod
    def text_binding(text: Text) -> Text:
        """What :meth:`insert_text` and :meth:`remove_text` take for ``text``."""
        return text

    def insert_text(self, bound: Any, index: int, text: str) -> None:
        """Insert ``text`` at UTF-8 byte offset ``index`` (in range) inside the open transaction."""
        bound.insert(index, text)

    def remove_text(self, bound: Any, index: int, length: int) -> None:
        """Remove ``length`` bytes at ``index`` (in range) inside the open transaction."""
        del bound[index:index + length]

    @staticmethod
    def observe_keys(regs: Map[Any], callback: KeysCallback) -> Callable[[], None]:
        # (MapEvent.keys is set at run time; pycrdt's annotations do not declare it)
        subscription = regs.observe(lambda event: callback(cast(Any, event).keys))
        return lambda: regs.unobserve(subscription)


class FastDocHandle:
    """The same through the binding, without pycrdt's Python wrappers (see the module docstring)."""

    __slots__ = ("_subscriptions", "binding", "doc", "open", "txn", "ytx")

    def __init__(self, doc: Doc[Any]) -> None:
        self.doc = doc
        self.binding = doc._doc
        # One pycrdt transaction object, entered by each local transaction (it is reusable):
        # reads made through pycrdt inside our transaction find it as ``doc._txn`` and join.
        self.ytx = Transaction(doc)
        self.txn: Any = None
        self.open = False
        # the binding drops an observer whose subscription is garbage-collected: keep them
        self._subscriptions: list[Any] = []

    def observe(self, callback: UpdateCallback) -> Callable[[], None]:
        # On the binding directly: pycrdt's Doc.observe adds two Python frames per
        # transaction, and collects exceptions instead of letting them out of the commit.
        sub = self.binding.observe(callback)
        self._subscriptions.append(sub)

        def unsubscribe() -> None:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)
                sub.drop()
        return unsubscribe

    def begin(self) -> None:
        # What pycrdt's Transaction.__enter__ does for a document like ours (no origin, no
        # lock, no pycrdt-level observers), without its Python frames.
        doc, ytx = self.doc, self.ytx
        if doc._txn is not None:
            raise RuntimeError("the document already has an open transaction")
        ytx._txn = self.txn = self.binding.create_transaction()
        ytx._leases = 1
        doc._txn = ytx
        self.open = True

    def commit(self) -> None:
        txn = self.txn
        if txn is None:
            return
        try:
            txn.commit()  # the observer runs here, and may raise
        finally:
            self.txn = self.doc._txn = self.ytx._txn = None
            self.open = False
            txn.drop()

    def apply_update(self, update: bytes) -> None:
        # Through the binding, in a transaction as begin() opens it: pycrdt's apply_update
        # costs several Python frames of transaction handling per update.
        if self.doc._txn is not None:  # inside someone's transaction: join it, as pycrdt does
            self.doc.apply_update(update)
            return
        self.begin()
        try:
            self.binding.apply_update(self.txn, update)
        finally:
            self.commit()

    def map_items(self, regs: Map[Any]) -> list[tuple[str, Any]]:
        # One binding transaction for all the entries: pycrdt's Map.items opens three per
        # entry (its __getitem__ checks the key with __contains__). Primitive values are what
        # pycrdt returns; a nested type is the binding's object rather than pycrdt's wrapper
        # (neither is bytes, which is all a register may be).
        bound = regs.integrated
        outer = self.doc._txn
        if outer is not None and outer._txn is not None:  # inside a transaction: join it
            txn = outer._txn
            return [(key, bound.get(txn, key)) for key in bound.keys(txn)]
        txn = self.binding.create_transaction()
        try:
            return [(key, bound.get(txn, key)) for key in bound.keys(txn)]
        finally:
            try:
                txn.commit()
            finally:
                txn.drop()

    @staticmethod
    def text_binding(text: Text) -> Any:
        return text._integrated

    def insert_text(self, bound: Any, index: int, text: str) -> None:
        bound.insert(self.txn, index, text, None)

    def remove_text(self, bound: Any, index: int, length: int) -> None:
        bound.remove_range(self.txn, index, length)

    @staticmethod
    def observe_keys(regs: Map[Any], callback: KeysCallback) -> Callable[[], None]:
        # On the binding: pycrdt's Map.observe costs about 40 us to subscribe and 15 us per
        # event in Python frames; this, a few microseconds (receiving calls it per update).
        subscription = regs.integrated.observe(lambda event: callback(event.keys))
        return subscription.drop  # type: ignore[no-any-return]


DocHandle = FastDocHandle | PublicDocHandle


def _probe() -> str | None:
    """None if the internals behave as :class:`FastDocHandle` expects, else why not."""
    try:
        installed = version("pycrdt")
    except PackageNotFoundError:
        return "pycrdt's version is unknown"
    low, high = SUPPORTED
    if not low <= _version_tuple(installed) < high:
        return f"pycrdt {installed} is outside the range checked ({'.'.join(map(str, low))} to " \
               f"{'.'.join(map(str, high))})"
    try:
        doc: Doc[Any] = Doc()
        text = doc.get("t", type=Text)
        seen: list[bytes] = []
        handle = FastDocHandle(doc)
        unsubscribe = handle.observe(lambda event: seen.append(event.update))
        bound = handle.text_binding(text)
        handle.begin()
        handle.insert_text(bound, 0, "abc")
        handle.remove_text(bound, 1, 1)
        if str(text) != "ac":  # a read inside the transaction joins it
            return "a read inside the binding's transaction saw the wrong text"
        handle.commit()
        unsubscribe()
        if len(seen) != 1 or not isinstance(seen[0], bytes):
            return "the binding's observer did not report the update"
        if doc._txn is not None:
            return "the document kept a transaction after commit"
        check: Doc[Any] = Doc()
        keys: list[dict[str, Any]] = []
        stop = FastDocHandle.observe_keys(check.get("m", type=Map), keys.append)
        check.apply_update(seen[0])
        if str(check.get("t", type=Text)) != "ac":
            return "the binding's update does not replay"
        source: Doc[Any] = Doc()
        source.get("m", type=Map)["k"] = b"v"
        FastDocHandle(check).apply_update(source.get_update())
        stop()
        if [(list(k), k["k"]["action"], bytes(k["k"]["newValue"])) for k in keys] != [(["k"], "add", b"v")]:
            return "the binding's map observer did not report the key"
        entries = FastDocHandle(check).map_items(check.get("m", type=Map))
        if entries != [("k", b"v")] or check._txn is not None:
            return "the binding's map entries differ from pycrdt's"
    except (AttributeError, TypeError, ValueError, RuntimeError) as exc:
        return f"pycrdt's internals differ: {type(exc).__name__}: {exc}"
    return None


FALLBACK_REASON: str | None = (
    "CRDT_SYNC_PYCRDT_INTERNALS=0" if os.environ.get("CRDT_SYNC_PYCRDT_INTERNALS") == "0" else _probe())
#: whether documents use pycrdt's internals (:class:`FastDocHandle`)
INTERNALS = FALLBACK_REASON is None


def doc_handle(doc: Doc[Any], internals: bool | None = None) -> DocHandle:
    """The handle for ``doc``: fast when the internals checked out (or as ``internals`` says)."""
    use = INTERNALS if internals is None else internals
    return FastDocHandle(doc) if use else PublicDocHandle(doc)
