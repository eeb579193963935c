"""What the LAN transport knows about candidates and sessions: pure state, no I/O.

* :class:`PeerTable`: the candidates discovery reported, bounded in count (a flood of fake
  announcements evicts the stalest of those that failed most, never grows memory), with the
  refusals recorded.
* :class:`Retries`: names to try again (a resolution that timed out, a dial that failed, a
  name a full queue evicted), bounded, with a doubling delay and a bounded number of
  attempts. Without it a real peer lost once under a flood (or a slow network) was never
  tried again, because discovery reports a name only once.
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
#: Names waiting to be tried again; a name is tried again after 1, 2, 4, 8 and 16 s, then
#: forgotten until discovery reports it again.
MAX_RETRIES = 256
RETRY_FIRST = 1.0
RETRY_ATTEMPTS = 5


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
        """Add or refresh ``candidate``; True when its token or address changed (dial again).

        Past the bound, the candidate evicted is the least recently seen of those whose dials
        failed most: fakes that point where nothing listens go before a peer that answered.
        """
        old = self.candidates.pop(candidate.name, None)
        changed = old is None or (old.token, old.addresses, old.port) != (
            candidate.token, candidate.addresses, candidate.port)
        if old is not None and not changed:
            candidate.failures = old.failures
        self.candidates[candidate.name] = candidate
        while len(self.candidates) > self.limit:
            worst = max(c.failures for c in self.candidates.values())
            victim = next(n for n, c in self.candidates.items() if c.failures == worst)
            del self.candidates[victim]
            self.evicted += 1
        return changed

    def get(self, name: str) -> Candidate | None:
        return self.candidates.get(name)

    def failed(self, name: str) -> None:
        """A dial to ``name`` failed: it goes first when the table is full."""
        candidate = self.candidates.get(name)
        if candidate is not None:
            candidate.failures += 1

    def lost(self, name: str) -> Candidate | None:
        return self.candidates.pop(name, None)

    def refuse(self, name: str, reason: str) -> None:
        self.refusals.append((name[:128], reason[:256]))

    def __len__(self) -> int:
        return len(self.candidates)


class Retries(Generic[T]):
    """Names to try again, each with its attempts so far, when it is due and what to try
    (``T``: where to dial it; None: resolve it again); bounded.

    ``fail`` schedules a name (``first``, then twice the delay each time, at most ``attempts``
    times); ``due`` hands out the names whose time has come (they stay counted, not due
    again, until the next ``fail`` or ``forget``); ``forget`` drops a name that got through.
    """

    def __init__(self, limit: int = MAX_RETRIES, first: float = RETRY_FIRST,
                 attempts: int = RETRY_ATTEMPTS) -> None:
        self.limit, self.first, self.attempts = limit, first, attempts
        self.items: OrderedDict[str, tuple[int, float, T | None]] = OrderedDict()
        self.given_up = 0

    def fail(self, name: str, now: float, target: T | None = None) -> None:
        tries, _, old = self.items.pop(name, (0, 0.0, None))
        tries += 1
        if tries > self.attempts:
            self.given_up += 1
            return
        self.items[name] = (tries, now + self.first * 2 ** (tries - 1), old if target is None else target)
        while len(self.items) > self.limit:
            self.items.popitem(last=False)
            self.given_up += 1

    def due(self, now: float) -> list[tuple[str, T | None]]:
        ready = [(name, target) for name, (_, when, target) in self.items.items() if when <= now]
        for name, target in ready:
            self.items[name] = (self.items[name][0], float("inf"), target)
        return ready

    def forget(self, name: str) -> None:
        self.items.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self.items

    def __len__(self) -> int:
        return len(self.items)


class NewestFirst(Generic[T]):
    """A bounded work queue by name, taken newest first; a new name past the bound evicts the
    oldest. Under a flood of announcements the work (resolving, dialling) stays bounded, and
    a peer announced during it is taken soon (it is the newest), not dropped behind the
    flood as a first-come queue would drop it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: OrderedDict[str, T] = OrderedDict()
        self.evicted = 0

    def put(self, name: str, value: T) -> list[tuple[str, T]]:
        """Queue ``name`` (newest); returns what was evicted to make room."""
        self.items.pop(name, None)
        self.items[name] = value
        evicted: list[tuple[str, T]] = []
        while len(self.items) > self.limit:
            evicted.append(self.items.popitem(last=False))
            self.evicted += 1
        return evicted

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
