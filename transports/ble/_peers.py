"""What the BLE transport knows about the devices it hears: pure state, no I/O.

A flood of advertisements (random addresses, each a "new device") evicts the least recently
heard candidate and never grows memory; refusals are kept with their reason, bounded; a
candidate that failed is dialled again only after a backoff that doubles up to a ceiling.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

MAX_CANDIDATES = 64
MAX_REFUSALS = 32
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 10.0


@dataclass(slots=True)
class Candidate:
    """One device heard advertising our service."""

    address: str
    hint: bytes
    seen: float
    failures: int = 0
    retry_at: float = 0.0


@dataclass
class PeerTable:
    """Candidates by BLE address (bounded, least recently heard evicted), refusals recorded."""

    limit: int = MAX_CANDIDATES
    candidates: OrderedDict[str, Candidate] = field(default_factory=OrderedDict)
    refusals: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=MAX_REFUSALS))
    evicted: int = 0

    def seen(self, address: str, hint: bytes, now: float) -> tuple[Candidate, bool]:
        """Add or refresh; the candidate, and whether it is new (or its hint changed)."""
        old = self.candidates.pop(address, None)
        candidate = old or Candidate(address, hint, now)
        changed = old is None or old.hint != hint
        candidate.hint, candidate.seen = hint, now
        self.candidates[address] = candidate
        while len(self.candidates) > self.limit:
            self.candidates.popitem(last=False)
            self.evicted += 1
        return candidate, changed

    def failed(self, address: str, now: float, reason: str) -> None:
        self.refuse(address, reason)
        candidate = self.candidates.get(address)
        if candidate is not None:
            candidate.failures += 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(candidate.failures - 1, 16))
            candidate.retry_at = now + delay

    def succeeded(self, address: str) -> None:
        candidate = self.candidates.get(address)
        if candidate is not None:
            candidate.failures, candidate.retry_at = 0, 0.0

    def refuse(self, address: str, reason: str) -> None:
        self.refusals.append((address[:64], reason[:256]))

    def __len__(self) -> int:
        return len(self.candidates)
