"""When the relay's storage fails (a full disk, Postgres down), what it tells the devices that
push meanwhile: :class:`StoreOutage`, owned by :class:`~crdt_sync.relay.storage.RelayStore`.

A failed commit acknowledges nothing (its sessions end); for ``RETRY_AFTER`` seconds after it,
frames of envelopes are refused at once with the reason (ERROR 10, ``limit``: the device
keeps what it has and retries later) instead of each waiting out the storage's own timeout.
Then one frame is let through to try: its commit either succeeds, which ends the outage, or
fails, which starts the window again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Seconds after a failed commit during which pushes are refused without trying.
RETRY_AFTER = 5.0
#: The most of a failure's text that a refusal repeats.
MAX_REASON = 200


class StoreOutage:
    """Whether the storage failed lately, and why."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, retry_after: float = RETRY_AFTER) -> None:
        self._clock = clock
        #: seconds after a failure during which pushes are refused without trying
        self.retry_after = retry_after
        self._since: float | None = None
        self.reason = ""
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        self.reason = text[:MAX_REASON]
        self._since = self._clock()
        self.failures += 1

    def committed(self) -> None:
        self._since = None

    @property
    def down(self) -> bool:
        """A commit failed and none succeeded since."""
        return self._since is not None

    def refusal(self) -> str | None:
        """The refusal for a push now, or None to let it try."""
        if self._since is None or self._clock() - self._since >= self.retry_after:
            return None
        return (f"the relay cannot store now ({self.reason}); nothing of this push was "
                f"acknowledged: retry in a few seconds")


__all__ = ["RETRY_AFTER", "StoreOutage"]
