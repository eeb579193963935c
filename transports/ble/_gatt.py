"""The BLE service's names and its advertisement: pure data, no radio.

The GATT service (docs/PROTOCOL.md, "BLE framing"): the central writes chunks to ``RX``
(write without response), the peripheral notifies chunks on ``TX``. The advertisement holds
the service UUID and a 4-byte random *hint* that rotates (:class:`HintClock`): never the
device id, nothing about spaces. Advertising data from the air is parsed with bounds
(:func:`parse_ad`) before anything is built from it.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ..base import TransportError

SERVICE_UUID = "f9750001-39b7-4749-8a72-174d6e37db28"
RX_UUID = "f9750002-39b7-4749-8a72-174d6e37db28"  # central -> peripheral, write without response
TX_UUID = "f9750003-39b7-4749-8a72-174d6e37db28"  # peripheral -> central, notify
#: Readable where the peripheral serves an LE credit-based channel: its PSM, u16 little-endian.
PSM_UUID = "f9750004-39b7-4749-8a72-174d6e37db28"
#: Manufacturer-specific data under the company id reserved for tests and internal use.
COMPANY_ID = 0xFFFF
AD_FORMAT = 1
HINT_SIZE = 4
#: Seconds between two hints.
HINT_ROTATION = 15 * 60.0
AD_FLAGS, AD_UUID128_COMPLETE, AD_UUID128_INCOMPLETE = 0x01, 0x07, 0x06
AD_UUID16_COMPLETE, AD_UUID16_INCOMPLETE, AD_NAME_SHORT, AD_NAME_COMPLETE = 0x03, 0x02, 0x08, 0x09
AD_MANUFACTURER = 0xFF
#: Legacy advertising data, and with a scan response at most twice that.
MAX_AD = 31
MAX_REPORT = 2 * MAX_AD


class AdError(TransportError, ValueError):
    """Advertising data that breaks its length rules."""


def uuid_bytes_le(value: str) -> bytes:
    """A 128-bit UUID as advertised: little-endian."""
    return uuid.UUID(value).bytes[::-1]


def advertising_data(hint: bytes) -> bytes:
    """The advertisement: flags, the service UUID, and the hint (30 of 31 bytes)."""
    if len(hint) != HINT_SIZE:
        raise ValueError(f"a hint is {HINT_SIZE} bytes")
    flags = bytes([2, AD_FLAGS, 0x06])  # LE general discoverable, no BR/EDR
    service = bytes([17, AD_UUID128_COMPLETE]) + uuid_bytes_le(SERVICE_UUID)
    maker = bytes([4 + HINT_SIZE, AD_MANUFACTURER]) + COMPANY_ID.to_bytes(2, "little") + \
        bytes([AD_FORMAT]) + hint
    return flags + service + maker


@dataclass(frozen=True, slots=True)
class ParsedAd:
    """What a receiver reads from advertising data."""

    service_uuids: tuple[str, ...] = ()
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    local_name: str | None = None

    @property
    def hint(self) -> bytes | None:
        """Our hint, if the advertisement is ours and well-formed."""
        data = self.manufacturer_data.get(COMPANY_ID)
        if SERVICE_UUID not in self.service_uuids or data is None:
            return None
        if len(data) != 1 + HINT_SIZE or data[0] != AD_FORMAT:
            return None
        return data[1:]


def parse_ad(data: bytes) -> ParsedAd:
    """Advertising data (AD structures: ``length · type · value``), bounded; AdError if broken."""
    if len(data) > MAX_REPORT:
        raise AdError(f"advertising data of {len(data)} bytes (at most {MAX_REPORT})")
    uuids: list[str] = []
    maker: dict[int, bytes] = {}
    name: str | None = None
    at = 0
    while at < len(data):
        length = data[at]
        if length == 0:  # padding ends the significant part
            break
        if at + 1 + length > len(data):
            raise AdError(f"AD structure of {length} bytes runs past the end at {at}")
        kind, value = data[at + 1], data[at + 2:at + 1 + length]
        at += 1 + length
        if kind in (AD_UUID128_COMPLETE, AD_UUID128_INCOMPLETE):
            if len(value) % 16:
                raise AdError("a 128-bit UUID list of a length not a multiple of 16")
            uuids += [str(uuid.UUID(bytes=value[i:i + 16][::-1])) for i in range(0, len(value), 16)]
        elif kind in (AD_UUID16_COMPLETE, AD_UUID16_INCOMPLETE):
            if len(value) % 2:
                raise AdError("a 16-bit UUID list of odd length")
            uuids += [f"0000{int.from_bytes(value[i:i + 2], 'little'):04x}-0000-1000-8000-00805f9b34fb"
                      for i in range(0, len(value), 2)]
        elif kind == AD_MANUFACTURER:
            if len(value) < 2:
                raise AdError("manufacturer data without a company id")
            maker[int.from_bytes(value[:2], "little")] = bytes(value[2:])
        elif kind in (AD_NAME_SHORT, AD_NAME_COMPLETE):
            name = value.decode("utf-8", "replace")
    return ParsedAd(tuple(uuids), maker, name)


class HintClock:
    """The rotating hint: random bytes, drawn again every ``rotation`` seconds.

    Args:
        now: the clock (injected in tests).
        draw: the random source (``secrets.token_bytes`` by default).
    """

    def __init__(self, now: Callable[[], float], *, rotation: float = HINT_ROTATION,
                 draw: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self._now, self.rotation, self._draw = now, rotation, draw
        self._hint = draw(HINT_SIZE)
        self._since = now()

    def current(self) -> tuple[bytes, bool]:
        """The hint now, and whether it changed since the last call (advertise again)."""
        if self._now() - self._since >= self.rotation:
            self._hint, self._since = self._draw(HINT_SIZE), self._now()
            return self._hint, True
        return self._hint, False


def dials(own_hint: bytes, peer_hint: bytes) -> bool:
    """Whether this device connects to a peer it saw (as central): the smaller hint does."""
    return own_hint < peer_hint


def keeps(own_id: str, peer_id: str, outbound: bool) -> bool:
    """Of two authenticated links with one device, whether this one survives: the link the
    device with the smaller id dialled (both ends agree; the LAN rule)."""
    return outbound == (own_id < peer_id)
