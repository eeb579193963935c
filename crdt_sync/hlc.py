"""Hybrid logical clock: wall-clock milliseconds in the high bits, a counter in the low 16.

Times from different devices compare meaningfully (close to wall time) and every time this
clock hands out is larger than every time it has seen, so "the later write wins" holds even
when device clocks disagree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

COUNTER_BITS = 16


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridClock:
    """Hands out strictly increasing HLC times.

    Args:
        wall: milliseconds since the epoch; injectable for tests.
    """

    __slots__ = ("_last", "_wall")

    def __init__(self, wall: Callable[[], int] = wall_ms, last: int = 0) -> None:
        self._wall = wall
        self._last = last

    def now(self) -> int:
        # wall_ms() inlined for the default clock: this runs once per local transaction
        wall = self._wall
        physical = (time.time_ns() // 1_000_000 if wall is wall_ms else wall()) << COUNTER_BITS
        self._last = physical if physical > self._last else self._last + 1
        return self._last

    def observe(self, remote: int) -> None:
        """Make every later :meth:`now` exceed ``remote``."""
        if remote > self._last:
            self._last = remote

    @property
    def last(self) -> int:
        return self._last


def hlc_to_datetime(hlc: int) -> datetime:
    return datetime.fromtimestamp((hlc >> COUNTER_BITS) / 1000, tz=UTC)


def hlc_to_iso(hlc: int) -> str:
    """ISO 8601 UTC time of an HLC value, to the millisecond."""
    return hlc_to_datetime(hlc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
