"""Loro (Rust, Python binding ``loro``): text is a root ``LoroText``, assets ``LoroMap``
containers in a root map. Storage form: a snapshot. Catch-up: the replica behind sends its
version vector, the one ahead answers with ``export(Updates(vv))``."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from time import perf_counter
from typing import Any

from ..._trace import Patch
from .base import CatchUp, Fields, Update

# Untyped on purpose: loro's stubs leave constructors unannotated and type containers as a
# union the runtime narrows, so strict mypy would need a cast on every line.
loro: Any = importlib.import_module("loro")
ExportMode, LoroDoc, LoroMap, VersionVector = loro.ExportMode, loro.LoroDoc, loro.LoroMap, loro.VersionVector


class LoroReplica:
    def __init__(self, track: bool) -> None:
        self.doc = LoroDoc()
        self._text = self.doc.get_text("text")
        self._assets = self.doc.get_map("assets")
        self._handles: dict[str, Any] = {}
        self._local: list[bytes] = []
        if track:  # fires for local commits only
            self._sub = self.doc.subscribe_local_update(self._on_update)

    def _on_update(self, update: bytes) -> bool:
        self._local.append(bytes(update))
        return True  # stay subscribed

    def edit(self, patches: Sequence[Patch]) -> None:
        text = self._text
        for pos, deleted, inserted in patches:
            if deleted:
                text.delete(pos, deleted)
            if inserted:
                text.insert(pos, inserted)
        self.doc.commit()

    def settle(self) -> None:
        pass

    def text(self) -> str:
        return str(self._text.to_string())

    def seed(self, ids: Sequence[str], initial: Sequence[Fields]) -> None:
        for id, fields in zip(ids, initial, strict=True):
            asset = self._assets.insert_container(id, LoroMap())
            for name, value in fields.items():
                asset.insert(name, value)
        self.doc.commit()

    def _asset(self, id: str) -> Any:
        asset = self._handles.get(id)
        if asset is None:
            found = getattr(self._assets.get(id), "container", None)
            if not isinstance(found, LoroMap):
                raise KeyError(id)
            asset = self._handles[id] = found
        return asset

    def put(self, id: str, fields: Fields) -> None:
        asset = self._asset(id)
        for name, value in fields.items():
            asset.insert(name, value)
        self.doc.commit()

    def content(self) -> dict[str, dict[str, Any]]:
        value: dict[str, dict[str, Any]] = self._assets.get_deep_value()
        return value

    def take_local(self) -> Update:
        out, self._local = self._local, []
        return out

    def merge(self, update: Update) -> None:
        if len(update) == 1:
            self.doc.import_(update[0])
        elif update:
            self.doc.import_batch(update)

    def encode(self) -> bytes:
        return bytes(self.doc.export(ExportMode.Snapshot()))

    def full_update(self) -> bytes:
        return bytes(self.doc.export(ExportMode.Updates(VersionVector())))


class LoroEngine:
    name = "loro"
    unit = "cp"  # LoroText.insert/delete count Unicode code points

    def version(self) -> str:
        return metadata.version("loro")

    def new_doc(self, work: Path, agent: int, track: bool) -> LoroReplica:
        return LoroReplica(track)

    def merge_new(self, work: Path, update: bytes) -> LoroReplica:
        doc = LoroReplica(False)
        doc.doc.import_(update)
        return doc

    def before_load(self, doc: Any) -> dict[str, Any]:
        return {}

    def load(self, doc: Any, state: bytes) -> LoroReplica:
        return self.merge_new(Path(), state)  # importing a snapshot is how Loro loads one

    def catch_up(self, ahead: Any, behind: Any) -> CatchUp:
        t0 = perf_counter()
        vector = bytes(behind.doc.oplog_vv.encode())
        update = bytes(ahead.doc.export(ExportMode.Updates(VersionVector.decode(vector))))
        behind.doc.import_(update)
        seconds = perf_counter() - t0
        return CatchUp(len(vector) + len(update), seconds,
                       {"version_vector": len(vector), "update": len(update)})

    def extra(self, doc: Any) -> dict[str, Any]:
        return {"updates_bytes": len(doc.full_update())}


ENGINE = LoroEngine()
