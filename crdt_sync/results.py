"""What the replica's public methods return: typed, frozen, and plain to turn into JSON
(:func:`dataclasses.asdict`), so the CLI's ``--json`` output is the same data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from .quarantine import PeerRefusal, QuarantineRecord


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
    #: envelopes skipped because their predecessor is missing (``tolerate_gaps``) or their
    #: author is quarantined in the space
    gaps: int


@dataclass(frozen=True, slots=True)
class Accepted:
    """What a per-author receive (:meth:`crdt_sync.Replica.accept`, a sync session's) did
    with a batch: like :class:`ReceiveResult`, plus the envelopes skipped because their
    author is quarantined in the space and the quarantines this batch started."""

    applied: int
    duplicates: int
    gaps: int
    #: envelopes of authors quarantined in the space (not applied, not an error)
    skipped: int = 0
    #: authors set aside by this batch (each from its refused envelope on)
    quarantined: tuple[QuarantineRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class ImportResult:
    space: str
    exporter: str
    applied: int
    duplicates: int
    #: envelopes not imported because their clock is too far ahead of this device's (and
    #: those after them in their author's chain): import the bundle again once it agrees
    held_back: int = 0
    #: the furthest one of them is ahead, in milliseconds
    ahead_ms: int = 0
    #: fork proofs new to this device that the bundle brought or its envelopes proved
    forks: int = 0
    #: the bundle's snapshot: ``"applied"``, or the reason it was refused (recorded, and
    #: the envelopes were taken where they chain on); None: a full-history bundle
    snapshot: str | None = None


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
class SpaceInfo:
    """A space this device keeps (:meth:`crdt_sync.Replica.space_infos`): its id, its local
    name (None if it has none yet), this device's rights in it (``"read"``, ``"write"``,
    ``"admin"``, or None when it has none) and how many members hold a valid grant."""

    id: str
    name: str | None
    rights: str | None
    members: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ClockRefusal:
    """A peer holds back an author's envelopes (from ``seq`` on): their clock was
    ``ahead_ms`` ahead of the peer's wall clock, more than the peer allows. Shown until the
    peer acknowledges that seq (once its clock caught up, or this one was set right)."""

    peer: str
    space: str
    author: str
    seq: int
    ahead_ms: int
    #: when the peer said so (ISO 8601)
    at: str
    #: whether ``author`` is this device (its own clock is ahead)
    mine: bool


@dataclass(frozen=True, slots=True)
class JournalDamage:
    """A damaged run found in a dead process's journal when it was recovered: what was lost.

    Every intact record around it was sealed; the file was kept aside at ``kept``.
    """

    #: when it was found (ISO 8601)
    at: str
    #: the journal file's name under ``DIR/journal/``
    journal: str
    #: where the damaged file is now
    kept: str
    #: where the run starts in the file, and its length in bytes
    offset: int
    bytes: int
    #: journal records lost (transactions' edits of one entity each), at least 1
    records: int
    #: True when the run is at the end of the file: a write cut short when the process
    #: died (an edit that never returned) looks the same
    tail: bool


@dataclass(frozen=True, slots=True)
class Status:
    """Device id, spaces with version vectors, unsealed edits, rejections recorded, and the
    peers that hold back envelopes because their clock is too far ahead, and the journal
    damage recovery found (newest first)."""

    device: str
    data: str
    spaces: dict[str, SpaceStatus]
    unsealed: int
    rejections: int
    #: authors this device set aside, per space (see crdt_sync.quarantine)
    quarantined: list[QuarantineRecord] = field(default_factory=list)
    #: what peers told this device they set aside of what it sent them
    refused_by_peers: list[PeerRefusal] = field(default_factory=list)
    clock_refusals: list[ClockRefusal] = field(default_factory=list)
    journal_damage: list[JournalDamage] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["quarantined"] = [q.to_dict() for q in self.quarantined]
        out["refused_by_peers"] = [r.to_dict() for r in self.refused_by_peers]
        return out


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
