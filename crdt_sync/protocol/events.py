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


Event = Authenticated | Received | SpaceSynced | Closed
