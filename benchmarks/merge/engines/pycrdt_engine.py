"""Raw pycrdt (Yjs' Rust port, yrs): the baseline crdt-sync is built on.

Text is a root ``Text``; assets are ``Map`` values of a root ``Map``. Catch-up is Yjs'
state-vector sync: the replica behind sends its state vector, the one ahead answers with
the update it lacks (y-protocols' SyncStep1/SyncStep2 payloads, without their few bytes of
message framing).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from time import perf_counter
from typing import Any

from pycrdt import Doc as YDoc
from pycrdt import Map, Text

from ..._trace import Patch
from .base import CatchUp, Fields, Update


class PycrdtDoc:
    def __init__(self, track: bool, client_id: int | None = None) -> None:
        self.doc: YDoc[Any] = YDoc(client_id=client_id)
        self._text = self.doc.get("text", type=Text)
        self._assets = self.doc.get("assets", type=Map)
        self._local: list[bytes] = []
        self._merging = False
        if track:
            self.doc.observe(self._on_update)

    def _on_update(self, event: Any) -> None:
        if not self._merging:  # only local edits go out; merged ones came from elsewhere
            self._local.append(event.update)

    def edit(self, patches: Sequence[Patch]) -> None:
        text = self._text
        with self.doc.transaction():
            for pos, deleted, inserted in patches:
                if deleted:
                    del text[pos:pos + deleted]
                if inserted:
                    text.insert(pos, inserted)

    def settle(self) -> None:
        pass

    def text(self) -> str:
        return str(self._text)

    def seed(self, ids: Sequence[str], initial: Sequence[Fields]) -> None:
        with self.doc.transaction():
            for id, fields in zip(ids, initial, strict=True):
                self._assets[id] = Map(dict(fields))

    def put(self, id: str, fields: Fields) -> None:
        asset = self._assets[id]
        with self.doc.transaction():
            for name, value in fields.items():
                asset[name] = value

    def content(self) -> dict[str, dict[str, Any]]:
        return {id: dict(asset.to_py()) for id, asset in self._assets.items()}

    def take_local(self) -> Update:
        out, self._local = self._local, []
        return out

    def merge(self, update: Update) -> None:
        self._merging = True
        try:
            for u in update:
                self.doc.apply_update(u)
        finally:
            self._merging = False

    def encode(self) -> bytes:
        return bytes(self.doc.get_update())

    def full_update(self) -> bytes:
        return self.encode()


class PycrdtEngine:
    name = "pycrdt"
    unit = "utf8"  # pycrdt's Text counts UTF-8 bytes

    def version(self) -> str:
        return metadata.version("pycrdt")

    def new_doc(self, work: Path, agent: int, track: bool) -> PycrdtDoc:
        # Yjs orders concurrent inserts at one position by client id; the concurrent traces
        # recorded theirs with agent 0 first, so client ids follow agent numbers.
        return PycrdtDoc(track, client_id=agent + 1)

    def merge_new(self, work: Path, update: bytes) -> PycrdtDoc:
        doc = PycrdtDoc(False)
        doc.doc.apply_update(update)
        return doc

    def before_load(self, doc: Any) -> dict[str, Any]:
        return {}

    def load(self, doc: Any, state: bytes) -> PycrdtDoc:
        return self.merge_new(Path(), state)  # Yjs has one format for storage and sync

    def catch_up(self, ahead: Any, behind: Any) -> CatchUp:
        t0 = perf_counter()
        vector = behind.doc.get_state()  # behind -> ahead
        update = ahead.doc.get_update(vector)  # ahead -> behind
        behind.doc.apply_update(update)
        seconds = perf_counter() - t0
        return CatchUp(len(vector) + len(update), seconds,
                       {"state_vector": len(vector), "update": len(update)})

    def extra(self, doc: Any) -> dict[str, Any]:
        return {}


ENGINE = PycrdtEngine()
