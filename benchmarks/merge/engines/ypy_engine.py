"""y-py: the older Python binding of yrs (unmaintained since pycrdt took over; kept for the
comparison). Same data model and state-vector catch-up as :mod:`.pycrdt_engine`."""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from time import perf_counter
from typing import Any

from ..._trace import Patch
from .base import CatchUp, Fields, Update

# Untyped on purpose: y-py's stubs type transactions and prelim maps in ways its runtime
# does not follow (context managers, YMap(dict)).
Y: Any = importlib.import_module("y_py")

#: What y-py's after-transaction event reports for a transaction that changed nothing.
EMPTY_UPDATE = b"\x00\x00"


class YpyDoc:
    def __init__(self, track: bool, client_id: int | None = None) -> None:
        self.doc = Y.YDoc() if client_id is None else Y.YDoc(client_id=client_id)
        self._text = self.doc.get_text("text")
        self._assets = self.doc.get_map("assets")
        self._local: list[bytes] = []
        self._merging = False
        if track:
            self._sub = self.doc.observe_after_transaction(self._on_update)

    def _on_update(self, event: Any) -> None:
        update = bytes(event.get_update())
        if not self._merging and update != EMPTY_UPDATE:
            self._local.append(update)

    def edit(self, patches: Sequence[Patch]) -> None:
        text = self._text
        with self.doc.begin_transaction() as txn:
            for pos, deleted, inserted in patches:
                if deleted:
                    text.delete_range(txn, pos, deleted)
                if inserted:
                    text.insert(txn, pos, inserted)

    def settle(self) -> None:
        pass

    def text(self) -> str:
        return str(self._text)

    def seed(self, ids: Sequence[str], initial: Sequence[Fields]) -> None:
        with self.doc.begin_transaction() as txn:
            for id, fields in zip(ids, initial, strict=True):
                self._assets.set(txn, id, Y.YMap(dict(fields)))

    def put(self, id: str, fields: Fields) -> None:
        asset = self._assets[id]
        with self.doc.begin_transaction() as txn:
            for name, value in fields.items():
                asset.set(txn, name, value)

    def content(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = json.loads(self._assets.to_json())
        return out

    def take_local(self) -> Update:
        out, self._local = self._local, []
        return out

    def merge(self, update: Update) -> None:
        self._merging = True
        try:
            for u in update:
                Y.apply_update(self.doc, u)
        finally:
            self._merging = False

    def encode(self) -> bytes:
        return bytes(Y.encode_state_as_update(self.doc))

    def full_update(self) -> bytes:
        return self.encode()


class YpyEngine:
    name = "y-py"
    unit = "utf8"  # y-py's YText counts UTF-8 bytes, as pycrdt's

    def version(self) -> str:
        return metadata.version("y-py")

    def new_doc(self, work: Path, agent: int, track: bool) -> YpyDoc:
        return YpyDoc(track, client_id=agent + 1)  # as pycrdt_engine: agent order breaks ties

    def merge_new(self, work: Path, update: bytes) -> YpyDoc:
        doc = YpyDoc(False)
        Y.apply_update(doc.doc, update)
        return doc

    def before_load(self, doc: Any) -> dict[str, Any]:
        return {}

    def load(self, doc: Any, state: bytes) -> YpyDoc:
        return self.merge_new(Path(), state)

    def catch_up(self, ahead: Any, behind: Any) -> CatchUp:
        t0 = perf_counter()
        vector = bytes(Y.encode_state_vector(behind.doc))
        update = bytes(Y.encode_state_as_update(ahead.doc, vector))
        Y.apply_update(behind.doc, update)
        seconds = perf_counter() - t0
        return CatchUp(len(vector) + len(update), seconds,
                       {"state_vector": len(vector), "update": len(update)})

    def extra(self, doc: Any) -> dict[str, Any]:
        return {}


ENGINE = YpyEngine()
