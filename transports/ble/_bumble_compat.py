"""The one place that touches bumble's private internals (see docs/DESIGN.md, "BLE transport",
"bumble's virtual radio").

bumble's virtual controller (:class:`bumble.controller.Controller` on a
:class:`bumble.link.LocalLink`, what the tests, the demo and :mod:`.virtual` run on) gets two
things wrong that a real radio does not, and three or more devices that take both roles hit
both at once:

* **Two initiators on one advertisement.** Every controller that waits to connect to an
  advertiser creates its connection when the advertiser's next PDU arrives, and the PDU
  reaches them all in one turn of the loop. The advertiser takes the first ``CONNECT_IND``
  and stops advertising; the others' ``CONNECT_IND`` arrive later and are ignored, but their
  controllers already told their hosts the connection exists: a central then holds a
  connection its peripheral never had (the controller logs "no connection for ..."), and the
  GATT exchange on it waits out the connect timeout. On air the losing ``CONNECT_IND`` is
  simply not heard and the initiator keeps going.
* **A connect that cannot be cancelled.** ``LE Create Connection Cancel`` does nothing: the
  pending connection stays, no ``LE Connection Complete`` (Unknown Connection Identifier) is
  sent, so bumble's ``connect_le`` waits on after its own timeout, every later connect is
  refused (``COMMAND_DISALLOWED``), and when the target advertises again the stale connect
  completes behind its host's back (an ``AssertionError`` in ``Device.on_le_connection``).

:func:`make_controller` builds a controller that fixes both: a ``CONNECT_IND`` reaches its
advertiser at once (so the advertiser is taken before any other initiator hears the same
PDU), an initiator whose advertiser is taken keeps waiting for the next advertisement (as on
air), and a cancel ends the pending connect with Unknown Connection Identifier (as the spec
says). A reset (a new host taking the controller of one that was killed) also ends the
controller's links, telling their peers, instead of leaving them to a host that is gone
(their controllers would refuse to connect again: "Connection ... already exists?"). It
overrides ``Controller.create_le_connection``, ``send_advertising_pdu``,
``on_hci_le_create_connection_cancel_command`` and ``on_hci_reset_command`` and reads
``pending_le_connection``, ``le_legacy_advertiser``, ``advertising_sets`` and
``le_connections``. :func:`power_off` (a controller leaving
the air, ``VirtualRadio.drop``) uses the same internals.

At import this module checks the installed bumble version against the range these internals
were read from and probes them on a scratch controller. If either check fails, or
``CRDT_SYNC_BUMBLE_INTERNALS=0``, :func:`make_controller` returns bumble's own controller (the
races above come back: three dual-role devices may stall for a connect timeout) and
:func:`power_off` only takes the controller off the link. :data:`INTERNALS` says which one is
in use and :data:`FALLBACK_REASON` why. Nothing here is used with a real controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from bumble import hci, ll
from bumble.controller import Controller
from bumble.link import LocalLink

#: bumble versions whose internals this module was written against: [low, high)
SUPPORTED = ((0, 0, 236), (0, 0, 240))
_OVERRIDDEN = ("create_le_connection", "send_advertising_pdu",
               "on_hci_le_create_connection_cancel_command", "on_hci_reset_command", "on_le_connect_ind",
               "on_ll_advertising_pdu", "send_hci_packet")
_STATE = ("pending_le_connection", "le_legacy_advertiser", "advertising_sets", "le_connections", "link")


def _version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit()) or "0"
        parts.append(int(digits))
    return tuple(parts)


def _accepting(target: Controller, address: hci.Address) -> bool:
    """Whether ``target`` would take a ``CONNECT_IND`` for ``address`` now (what
    ``Controller.on_le_connect_ind`` checks)."""
    legacy = target.le_legacy_advertiser
    if legacy.enabled and legacy.address == address:
        return True
    return any(s.enabled and s.address == address for s in target.advertising_sets.values())


class VirtualController(Controller):
    """bumble's virtual controller with the two races above fixed."""

    def create_le_connection(self, peer_address: hci.Address) -> None:
        target = self.link.find_le_controller(peer_address) if self.link else None
        if target is not None and target is not self and not _accepting(target, peer_address):
            return  # another initiator took the advertiser on this PDU: keep initiating
        super().create_le_connection(peer_address)

    def send_advertising_pdu(self, packet: ll.AdvertisingPdu) -> None:
        if isinstance(packet, ll.ConnectInd) and self.link:
            target = self.link.find_le_controller(packet.advertiser_address)
            if target is not None and target is not self:
                target.on_ll_advertising_pdu(packet)  # now: the advertiser is taken at once
                return
        super().send_advertising_pdu(packet)

    def on_hci_le_create_connection_cancel_command(
            self, command: hci.HCI_LE_Create_Connection_Cancel_Command) -> hci.HCI_StatusReturnParameters:
        pending, self.pending_le_connection = self.pending_le_connection, None
        if pending is not None:  # after the Command Complete: the connect ends, as the spec says
            failed = hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR, connection_handle=0,
                role=hci.Role.CENTRAL, peer_address_type=pending.peer_address.address_type,
                peer_address=pending.peer_address, connection_interval=0, peripheral_latency=0,
                supervision_timeout=0, central_clock_accuracy=0)
            asyncio.get_running_loop().call_soon(self.send_hci_packet, failed)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)


    def on_hci_reset_command(self, command: hci.HCI_Reset_Command) -> hci.HCI_StatusReturnParameters:
        # A reset (a new host on this controller: the old one was killed) drops every link, as
        # a real controller's would: its peers see the connection time out, not a dead link.
        self.pending_le_connection = None
        _drop_links(self)
        return super().on_hci_reset_command(command)


def _drop_links(controller: Controller) -> None:
    """Stop advertising; every LE connection ends, its peer told (HCI reason 0x08)."""
    controller.le_legacy_advertiser.stop()
    for advertising_set in controller.advertising_sets.values():
        advertising_set.enabled = False
        if advertising_set.timer_handle is not None:
            advertising_set.timer_handle.cancel()
    for connection in list(controller.le_connections.values()):
        with contextlib.suppress(Exception):
            connection.send_ll_control_pdu(ll.TerminateInd(hci.HCI_CONNECTION_TIMEOUT_ERROR))
    controller.le_connections.clear()


def _probe() -> str | None:
    """Why the internals cannot be used, or None."""
    if os.environ.get("CRDT_SYNC_BUMBLE_INTERNALS", "1") == "0":
        return "CRDT_SYNC_BUMBLE_INTERNALS=0"
    try:
        installed = version("bumble")
    except PackageNotFoundError:
        return "bumble's version is unknown"
    low, high = SUPPORTED
    if not low <= _version_tuple(installed) < high:
        return f"bumble {installed} is outside the range these internals were read from"
    missing = [name for name in _OVERRIDDEN if not callable(getattr(Controller, name, None))]
    missing += [f"hci.{n}" for n in ("HCI_LE_Connection_Complete_Event", "HCI_StatusReturnParameters")
                if not hasattr(hci, n)]
    if not hasattr(ll, "ConnectInd"):
        missing.append("ll.ConnectInd")
    return f"bumble {installed} lacks {', '.join(missing)}" if missing else None


def _lacks(controller: Controller) -> list[str]:
    """The state the fixes read that ``controller`` lacks (a controller needs a running loop,
    so this is checked on the first one built, not at import)."""
    missing = [name for name in _STATE if not hasattr(controller, name)]
    legacy: Any = getattr(controller, "le_legacy_advertiser", None)
    missing += [f"le_legacy_advertiser.{a}" for a in ("enabled", "address", "stop") if not hasattr(legacy, a)]
    return missing


#: Why bumble's own controller is used instead of :class:`VirtualController`, or None.
FALLBACK_REASON = _probe()
#: Whether :func:`make_controller` builds the fixed controller.
INTERNALS = FALLBACK_REASON is None


def make_controller(name: str, *, link: LocalLink, public_address: str | None = None,
                    host_source: Any = None, host_sink: Any = None) -> Controller:
    """A virtual controller on ``link`` (the fixed one where the internals check passed)."""
    global INTERNALS, FALLBACK_REASON
    if INTERNALS:
        controller: Controller = VirtualController(name, host_source=host_source, host_sink=host_sink,
                                                   link=link, public_address=public_address)
        missing = _lacks(controller)
        if not missing:
            return controller
        with contextlib.suppress(KeyError):
            link.remove_controller(controller)
        INTERNALS, FALLBACK_REASON = False, f"bumble's controller lacks {', '.join(missing)}"
    return Controller(name, host_source=host_source, host_sink=host_sink, link=link,
                      public_address=public_address)


def power_off(controller: Controller, link: LocalLink) -> None:
    """The controller leaves the air: it stops advertising, its peers' connections to it time
    out (HCI reason 0x08), and the link forgets it (only the last without the internals)."""
    if INTERNALS:
        _drop_links(controller)
    with contextlib.suppress(KeyError):
        link.remove_controller(controller)
