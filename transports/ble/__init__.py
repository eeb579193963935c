"""Bluetooth LE: chunked framing with credits, a GATT service, and discovery by advertising.

The framing and the advertisement format import nothing of a Bluetooth stack; the radio parts
(bumble, bleak: the ``ble`` extra) load on first use of :class:`BleTransport` or the bleak
backend, so a missing Bluetooth stack never breaks LAN or the relay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._framing import ChunkChannel, Frame, FramingError, Refused, chunk_size_for, split
from ._gatt import RX_UUID, SERVICE_UUID, TX_UUID, advertising_data, parse_ad

if TYPE_CHECKING:
    from ._bleak_backend import BumbleClient, BumbleScanner
    from ._link import BleLink, LinkTimers
    from ._transport import BleTransport, RadioUnavailable

_LAZY = {"BleTransport": "._transport", "RadioUnavailable": "._transport", "BleLink": "._link",
         "LinkTimers": "._link", "BumbleClient": "._bleak_backend", "BumbleScanner": "._bleak_backend"}

__all__ = ["RX_UUID", "SERVICE_UUID", "TX_UUID", "BleLink", "BleTransport", "BumbleClient",
           "BumbleScanner", "ChunkChannel", "Frame", "FramingError", "LinkTimers", "RadioUnavailable",
           "Refused", "advertising_data", "chunk_size_for", "parse_ad", "split"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
