"""What the replica's public methods return: typed, frozen, and plain to turn into JSON
(:func:`dataclasses.asdict`), so the CLI's ``--json`` output is the same data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple


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


class ReceiveResult(NamedTuple):
    """What :meth:`crdt_sync.Replica.receive` did with a batch of envelopes (a named tuple:
    ``applied, duplicates, gaps = replica.receive(...)`` works too)."""

    applied: int
    duplicates: int
    #: envelopes skipped because their predecessor is missing (``tolerate_gaps``)
    gaps: int


@dataclass(frozen=True, slots=True)
class ImportResult:
    space: str
    exporter: str
    applied: int
    duplicates: int
    #: fork proofs new to this device that the bundle brought or its envelopes proved
    forks: int = 0


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused input, as recorded: when (ms since the epoch), from where, why."""

    at: int
    source: str
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class PeerStatus:
    device: str
    version_vector: dict[str, int]
    #: when this device last heard from the peer (ISO 8601)
    seen: str
    #: envelopes this device holds that the peer did not acknowledge
    behind: int
    synced: bool


@dataclass(frozen=True, slots=True)
class ForkStatus:
    """A proven fork: ``author`` signed two envelopes as ``seq``; it is excluded in the space
    from ``seq`` on (both branches). Not liftable: the proof stays true."""

    author: str
    seq: int
    #: the two envelopes' hashes (hex), in the proof's order
    hashes: list[str]
    #: where the proof came from, and when this device got it (ISO 8601)
    source: str
    since: str
    reason: str = "fork"
    liftable: bool = False


@dataclass(frozen=True, slots=True)
class SpaceStatus:
    version_vector: dict[str, int]
    #: this device's envelopes that no peer acknowledged
    unacknowledged: int
    peers: list[PeerStatus]
    #: proven forks in this space (each author excluded from its fork seq on)
    forks: list[ForkStatus] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Status:
    """Device id, spaces with version vectors, unsealed edits, rejections recorded."""

    device: str
    data: str
    spaces: dict[str, SpaceStatus]
    unsealed: int
    rejections: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FieldWrite:
    """One write of a field, as :meth:`crdt_sync.Space.conflicts` shows it."""

    #: ``"value"``, ``"text"``, ``"list"`` or ``"removed"``
    kind: str
    #: the value for ``kind == "value"``, else None
    value: Any
    author: str
    #: ISO 8601 time of ``hlc``
    time: str
    hlc: int


@dataclass(frozen=True, slots=True)
class Conflict:
    """A field whose concurrent writes disagreed: the one that won and those that lost."""

    collection: str
    id: str
    #: the field's name, or ``"(deleted)"`` for the entity's tombstone
    field: str
    winner: FieldWrite
    losers: list[FieldWrite]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One change to an entity (:meth:`crdt_sync.Space.history`)."""

    author: str
    time: str
    hlc: int
    #: fields whose value this change set, with their new value
    changes: dict[str, Any]
    #: fields this change removed
    removed: list[str]
    #: True or False when this change deleted or revived the entity, else None
    deleted: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``deleted`` only when the change deleted or revived the entity."""
        out = asdict(self)
        if self.deleted is None:
            del out["deleted"]
        return out
