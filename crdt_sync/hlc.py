"""Hybrid logical clock: wall-clock milliseconds in the high bits, a counter in the low 16.

Times from different devices compare meaningfully (close to wall time) and every time this
clock hands out is larger than every time it has seen, so "the later write wins" holds even
when device clocks disagree. What it has seen counts only up to its wall time plus
``max_ahead_ms`` (the allowed skew): a device whose clock runs far ahead does not drag the
others along (docs/PROTOCOL.md, "Clocks").

The layout and range, the same for every clock (an envelope's HLC, each payload item's, the
register clocks inside the Yjs updates): ``hlc = wall_ms << 16 | counter``, an integer with
``0 <= hlc < MAX_HLC = 2**62`` (wall times up to the year 4199). The range leaves room
below SQLite's 2**63 - 1 and below every 64-bit encoding; the rule functions that enforce
it are in :mod:`crdt_sync.clocks`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

COUNTER_BITS = 16
#: Bits of the wall-clock milliseconds: 46, so that every HLC is below :data:`MAX_HLC`.
WALL_BITS = 46
#: Every clock is ``0 <= hlc < MAX_HLC`` (exclusive end: 2**62, the year 4199).
MAX_HLC = 1 << (WALL_BITS + COUNTER_BITS)
#: The default allowed skew: a received clock more than this ahead of the receiver's wall
#: clock is held back, and no received clock moves a device's clock past wall + this.
DEFAULT_MAX_SKEW_MS = 24 * 3600 * 1000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridClock:
    """Hands out strictly increasing HLC times.

    Args:
        wall: milliseconds since the epoch; injectable for tests.
        last: the latest time this clock handed out or learnt (e.g. from the store); counted
            like an observed time, so at most ``max_ahead_ms`` ahead of the wall clock.
        max_ahead_ms: how far ahead of the wall clock an observed time may move this clock.
    """

    __slots__ = ("_last", "_max_ahead", "_wall")

    def __init__(self, wall: Callable[[], int] = wall_ms, last: int = 0,
                 max_ahead_ms: int = DEFAULT_MAX_SKEW_MS) -> None:
        self._wall = wall
        self._max_ahead = max_ahead_ms << COUNTER_BITS
        self._last = 0
        self.observe(last)

    def now(self) -> int:
        # wall_ms() inlined for the default clock: this runs once per local transaction
        wall = self._wall
        physical = (time.time_ns() // 1_000_000 if wall is wall_ms else wall()) << COUNTER_BITS
        self._last = physical if physical > self._last else self._last + 1
        return self._last

    def observe(self, remote: int) -> None:
        """Make every later :meth:`now` exceed ``remote``, up to the wall clock plus the
        allowed skew: a time further ahead moves this clock only that far."""
        if remote > self._last:
            bound = (self._wall() << COUNTER_BITS) + self._max_ahead
            if remote > bound:
                remote = bound
            if remote > self._last:
                self._last = remote

    def wall(self) -> int:
        """The wall clock this clock reads, in milliseconds since the epoch."""
        return self._wall()

    @property
    def last(self) -> int:
        return self._last


def hlc_to_datetime(hlc: int) -> datetime:
    return datetime.fromtimestamp((hlc >> COUNTER_BITS) / 1000, tz=UTC)


def hlc_to_iso(hlc: int) -> str:
    """ISO 8601 UTC time of an HLC value, to the millisecond."""
    return hlc_to_datetime(hlc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
