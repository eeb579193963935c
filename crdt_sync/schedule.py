"""When local edits are sealed: a debounce (see docs/DESIGN.md, "The write path").

Edits are due to be sealed after a pause of ``interval`` seconds in them, or ``max_wait``
seconds after the previous seal while they keep coming. A person typing pauses between
keystrokes, so each keystroke is sealed soon after it; a burst (a paste replayed, an import,
a program) is sealed once a second rather than per 50 ms, which costs less per edit
(docs/BENCHMARKS.md, Write path). Both are checked when a transaction ends and when the
replica's owner calls ``maintain()``; nothing here runs by itself.
"""

from __future__ import annotations

import time


class SealSchedule:
    """The debounce's state: when the last local transaction ended and when a seal is due.

    Args:
        interval: the pause in the edits, in seconds, after which they are due (0: always).
        max_wait: the longest, in seconds, that edits which keep coming wait.
    """

    __slots__ = ("_deadline", "_interval", "_last_edit", "_max_wait")

    def __init__(self, interval: float, max_wait: float) -> None:
        self._interval = interval
        self._max_wait = max(interval, max_wait)
        self._deadline = time.monotonic() + self._max_wait
        self._last_edit = 0.0  # time.monotonic() when the last local transaction ended

    def edited(self, now: float) -> bool:
        """A local transaction ended at ``now``: whether a seal is due (runs per keystroke)."""
        due = now >= self._deadline or now - self._last_edit >= self._interval
        self._last_edit = now
        return due

    def due(self, now: float) -> bool:
        """Whether edits made so far are due to be sealed at ``now``."""
        return now >= self._deadline or now - self._last_edit >= self._interval

    def sealed(self, now: float | None = None) -> None:
        """A seal happened (or nothing was pending) at ``now``: the next deadline starts."""
        self._deadline = (time.monotonic() if now is None else now) + self._max_wait
