"""What an engine adapter implements for the Python side of the merge benchmark.

An adapter is small on purpose: the workloads (:mod:`benchmarks.merge.driver`) are written
once against these two protocols, so every engine does the same work in the same order and
is timed by the same code. Node engines implement the same operations in
``benchmarks/merge/node/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..._trace import Patch

Fields = Mapping[str, Any]
Update = list[bytes]  # one segment of updates, in the engine's own format


@dataclass(frozen=True, slots=True)
class CatchUp:
    """One catch-up through the engine's own sync mechanism."""

    wire_bytes: int  # what crossed the wire, both ways, that the sync itself needs
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)


class Doc(Protocol):
    """One replica of one document."""

    def edit(self, patches: Sequence[Patch]) -> None:
        """One local transaction on the text (positions in the engine's unit)."""

    def settle(self) -> None:
        """Finish local work the engine defers (crdt-sync seals its journal): part of apply."""

    def text(self) -> str: ...

    def seed(self, ids: Sequence[str], initial: Sequence[Fields]) -> None:
        """Create these assets, in one transaction."""

    def put(self, id: str, fields: Fields) -> None:
        """One local transaction writing ``fields`` of an existing asset."""

    def content(self) -> dict[str, dict[str, Any]]:
        """Every asset's fields."""

    def take_local(self) -> Update:
        """The local edits made since the last call, for other replicas to merge."""

    def merge(self, update: Update) -> None:
        """Merge what another replica's :meth:`take_local` returned."""

    def encode(self) -> bytes:
        """The whole document in the engine's storage form (its state size)."""

    def full_update(self) -> bytes:
        """The whole document as the engine sends it to a replica that has nothing."""



class Engine(Protocol):
    name: str
    unit: str  # what text positions count: "cp", "utf8" or "utf16"

    def version(self) -> str: ...

    def new_doc(self, work: Path, agent: int, track: bool) -> Doc:
        """A new, empty replica. :meth:`Doc.take_local` works only with ``track`` (keeping
        local updates costs something, so the sequential replay does without)."""

    def merge_new(self, work: Path, update: bytes) -> Doc:
        """A new replica that has merged ``update`` (from :meth:`Doc.full_update`)."""

    def before_load(self, doc: Doc) -> dict[str, Any]:
        """Untimed preparation for :meth:`load`; returns figures worth reporting."""

    def load(self, doc: Doc, state: bytes) -> Doc:
        """``doc`` reopened from its storage form (``state``, from :meth:`Doc.encode`)."""

    def catch_up(self, ahead: Doc, behind: Doc) -> CatchUp:
        """Bring ``behind`` up to ``ahead`` through the engine's own sync mechanism."""

    def extra(self, doc: Doc) -> dict[str, Any]:
        """Engine-specific figures about ``doc`` for the JSON results."""
