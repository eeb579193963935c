"""What a session tells its driver and the driver's user: authenticated, received, synced, closed."""

from __future__ import annotations

from dataclasses import dataclass

from .messages import error_name


@dataclass(frozen=True, slots=True)
class Authenticated:
    peer: str
    version: int


@dataclass(frozen=True, slots=True)
class Received:
    space: str
    applied: int
    duplicates: int
    gaps: int
    #: envelopes of authors quarantined here (not applied, not an error)
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class Quarantined:
    """An author's chain in a space was set aside from ``from_seq`` on: by this side (its
    envelopes are skipped; the peer was told), or by the peer (``by_peer``: this side stops
    sending that chain in this session)."""

    space: str
    author: str
    from_seq: int
    reason: str
    detail: str
    by_peer: bool


@dataclass(frozen=True, slots=True)
class SpaceSynced:
    space: str


@dataclass(frozen=True, slots=True)
class Closed:
    code: int
    reason: str
    by_peer: bool
    #: the link dropped under the session (no ERROR or BYE was said by either side)
    link_lost: bool = False

    @property
    def name(self) -> str:
        return error_name(self.code)


@dataclass(frozen=True, slots=True)
class ClockRefused:
    """The peer holds back ``author``'s envelopes of ``space`` from ``seq`` on: their clock
    is ``ahead_ms`` ahead of the peer's wall clock, more than it allows (its CLOCK_SKEW)."""

    space: str
    author: str
    seq: int
    ahead_ms: int


@dataclass(frozen=True, slots=True)
class HeldBack:
    """This side holds back ``author``'s envelopes of ``space`` from ``seq`` on: their clock
    is ``ahead_ms`` ahead of this side's wall clock, more than it allows (it sent CLOCK_SKEW)."""

    space: str
    author: str
    seq: int
    ahead_ms: int


@dataclass(frozen=True, slots=True)
class SnapshotVerdict:
    """A snapshot of ``space`` (its record's hash ``id``) moved in the session: sent by this
    side and answered by the peer (``by_peer``), or received here. ``verdict``: ``applied``,
    ``stored``, ``known``, or the reason it was refused (docs/PROTOCOL.md, "Snapshots in
    sessions"); ``size``: the transfer's bytes."""

    space: str
    id: bytes
    verdict: str
    detail: str
    by_peer: bool
    size: int = 0


Event = (Authenticated | Received | SpaceSynced | Closed | Quarantined | ClockRefused | HeldBack
         | SnapshotVerdict)
