"""What the LAN transport knows about candidates and sessions: pure state, no I/O.

* :class:`PeerTable`: the candidates discovery reported, bounded in count (a flood of fake
  announcements evicts the stalest, never grows memory), with the refusals recorded.
* :func:`dials` and :func:`keeps`: the tie-breaks. Discovery is symmetric, so both devices
  see each other; only the one with the smaller instance token dials (``dials``). Tokens are
  unauthenticated, so they only avoid the common race; they never decide *which device* a
  session belongs to. Static peers dial regardless, so two sessions to one device can still
  open; once both are authenticated, ``keeps`` picks the same survivor on both sides from the
  authenticated device ids (the session dialled by the smaller id), which an attacker cannot
  forge and which is stable across restarts and address changes.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

#: Candidates kept at once; more announcements evict the least recently seen.
MAX_CANDIDATES = 64
#: Refusals kept for status.
MAX_REFUSALS = 32


@dataclass(slots=True)
class Candidate:
    """One advertised instance: its token and where it listens."""

    name: str
    token: str
    addresses: tuple[str, ...]
    port: int
    seen: float
    failures: int = 0


@dataclass
class PeerTable:
    """Candidates by mDNS instance name, bounded; refusals recorded with their reason."""

    limit: int = MAX_CANDIDATES
    candidates: OrderedDict[str, Candidate] = field(default_factory=OrderedDict)
    refusals: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=MAX_REFUSALS))
    evicted: int = 0

    def seen(self, candidate: Candidate) -> bool:
        """Add or refresh ``candidate``; True when its token or address changed (dial again)."""
        old = self.candidates.pop(candidate.name, None)
        self.candidates[candidate.name] = candidate
        while len(self.candidates) > self.limit:
            self.candidates.popitem(last=False)
            self.evicted += 1
        return old is None or (old.token, old.addresses, old.port) != (
            candidate.token, candidate.addresses, candidate.port)

    def lost(self, name: str) -> Candidate | None:
        return self.candidates.pop(name, None)

    def refuse(self, name: str, reason: str) -> None:
        self.refusals.append((name[:128], reason[:256]))

    def __len__(self) -> int:
        return len(self.candidates)


class NewestFirst(Generic[T]):
    """A bounded work queue by name, taken newest first; a new name past the bound evicts the
    oldest. Under a flood of announcements the work (resolving, dialling) stays bounded, and
    a peer announced during it is taken soon (it is the newest), not dropped behind the
    flood as a first-come queue would drop it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: OrderedDict[str, T] = OrderedDict()
        self.evicted = 0

    def put(self, name: str, value: T) -> None:
        self.items.pop(name, None)
        self.items[name] = value
        while len(self.items) > self.limit:
            self.items.popitem(last=False)
            self.evicted += 1

    def pop(self) -> tuple[str, T] | None:
        return self.items.popitem(last=True) if self.items else None

    def clear(self) -> None:
        self.items.clear()

    def __contains__(self, name: object) -> bool:
        return name in self.items

    def __len__(self) -> int:
        return len(self.items)


def dials(own_token: str, peer_token: str) -> bool:
    """Whether this device dials a discovered peer: the smaller token dials, the other listens.

    Equal tokens (one's own announcement, or a replay of it) never dial.
    """
    return own_token < peer_token


def keeps(own_id: str, peer_id: str, outbound: bool) -> bool:
    """Of two authenticated sessions with one device, whether this one survives.

    Both sides agree: the survivor is the session that the device with the smaller id dialled.
    """
    dialled_by_me = outbound
    return dialled_by_me == (own_id < peer_id)
