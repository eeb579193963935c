"""When a device advertises: never while it dials, again after each central connects.

Two rules, both about connections that arrive while the host is busy with another:

* **Quiet while dialling.** A device that connects out stops advertising first and starts
  again when the connect is done (:meth:`Advertising.quiet`), so no central can connect to it
  while its own connect is pending. bumble's ``Device.connect_le`` takes whatever connection
  completes first as the result of the dial, an inbound one too; the real outbound connection
  then completes behind the host's back. With the advertiser off, a central that connected
  just before is reported (HCI events are in order) before the dial starts, and one that was
  about to waits for the next advertisement.
* **Advertise again while connected.** A legacy advertiser stops when a central connects. The
  device starts again at once while it has fewer than ``max_links`` connections, so several
  centrals can reach it (three or four devices that all take both roles form a mesh, instead
  of waiting for a peripheral that went silent). A controller that refuses to advertise while
  connected is logged once and serves one central at a time, as before.

Every command is bounded (``COMMAND_TIMEOUT``) and serialised (one lock): a hint rotation, a
dial and a connection event never interleave their start and stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from bumble.device import Device

log = logging.getLogger("crdt_sync.ble")
#: How long one advertising command to the controller may take.
COMMAND_TIMEOUT = 5.0


class Advertising:
    """The advertiser of one device: on unless closed, dialling, or at ``max_links``.

    Args:
        device: the bumble device (powered on before :meth:`sync`).
        data: the advertising data to use now (it changes with the hint).
        max_links: connections (either role) at which the device stops advertising.
    """

    def __init__(self, device: Device, data: Callable[[], bytes], max_links: int) -> None:
        self.device = device
        self.data = data
        self.max_links = max_links
        self.closed = False
        #: Why the controller refused to advertise, the last time it did (or None).
        self.refused: str | None = None
        self._dials = 0
        self._lock = asyncio.Lock()

    def wanted(self) -> bool:
        return not self.closed and self._dials == 0 and len(self.device.connections) < self.max_links

    async def sync(self, *, restart: bool = False) -> None:
        """Make the controller advertise or not, as :meth:`wanted` says; ``restart``: with
        fresh data (a new hint) if it advertises."""
        async with self._lock:
            on = bool(self.device.is_advertising)
            if on and (restart or not self.wanted()):
                await self._command(self.device.stop_advertising(), "stop")
                on = False
            if not on and self.wanted():
                await self._command(self.device.start_advertising(
                    advertising_data=self.data(), auto_restart=False, advertising_interval_min=20,
                    advertising_interval_max=40), "start")

    async def _command(self, command: Coroutine[Any, Any, None], what: str) -> None:
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await command
        except Exception as exc:  # the controller's answer: a refusal is no crash
            reason = f"{what} advertising: {type(exc).__name__}: {exc}"
            if reason != self.refused:
                log.info("ble: %s (%d connections)", reason, len(self.device.connections))
            self.refused = reason
        else:
            self.refused = None

    @asynccontextmanager
    async def quiet(self) -> AsyncIterator[None]:
        """Not advertising for the duration (a dial)."""
        self._dials += 1
        try:
            await self.sync()
            yield
        finally:
            self._dials -= 1
            if not self.closed:
                await self.sync()

    async def close(self) -> None:
        """Stop advertising for good."""
        self.closed = True
        await self.sync()
