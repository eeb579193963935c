"""A bleak backend on bumble: ``BleakScanner`` and ``BleakClient`` over a bumble ``Device``.

bleak picks an OS backend (BlueZ, CoreBluetooth, WinRT) unless it is handed one
(``backend=``). These two classes implement bleak's backend interface
(``BaseBleakScanner``, ``BaseBleakClient``) on a bumble host, so the central's code is the
code of a real phone or laptop (bleak's public API) while the radio is a bumble controller:
a virtual one in tests and the demo, or a USB dongle or HCI socket where BlueZ is absent.
The bumble ``Device`` is passed as the keyword argument ``bumble_device``; an optional
``bumble_register`` callable receives the client backend (whose ``connection`` opens L2CAP
channels, which bleak has no API for).

Only what the BLE transport and bleak's own API need is implemented: scanning with a service
filter, connect with an MTU exchange and service discovery, write (with or without response),
read, notifications. Pairing is not (the sync session authenticates and encrypts).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any, Literal

from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError
from bumble import hci
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt import Characteristic
from bumble.gatt_client import CharacteristicProxy, DescriptorProxy, ServiceProxy

from ._gatt import AdError, parse_ad

#: The ATT MTU the central asks for (an attribute value is at most 512 bytes: 512 + 3 + 2).
REQUESTED_MTU = 517
_PROPERTIES: tuple[tuple[int, str], ...] = (
    (Characteristic.Properties.BROADCAST, "broadcast"), (Characteristic.Properties.READ, "read"),
    (Characteristic.Properties.WRITE_WITHOUT_RESPONSE, "write-without-response"),
    (Characteristic.Properties.WRITE, "write"), (Characteristic.Properties.NOTIFY, "notify"),
    (Characteristic.Properties.INDICATE, "indicate"),
    (Characteristic.Properties.AUTHENTICATED_SIGNED_WRITES, "authenticated-signed-writes"),
    (Characteristic.Properties.EXTENDED_PROPERTIES, "extended-properties"),
)


def _device_of(kwargs: dict[str, Any]) -> Device:
    device = kwargs.get("bumble_device")
    if not isinstance(device, Device):
        raise BleakError("the bumble backend needs bumble_device=<bumble.device.Device>")
    return device


class BumbleScanner(BaseBleakScanner):
    """bleak's scanner backend on a bumble device: advertisements become bleak's reports."""

    def __init__(self, detection_callback: AdvertisementDataCallback | None,
                 service_uuids: list[str] | None, scanning_mode: Literal["active", "passive"],
                 **kwargs: Any) -> None:
        super().__init__(detection_callback, service_uuids)
        self._device = _device_of(kwargs)
        self._active = scanning_mode == "active"
        self._listening = False
        #: Reports refused as malformed (their reason is in ``refusals``).
        self.refused = 0
        self.refusals: list[str] = []

    async def start(self) -> None:
        self.seen_devices = {}
        if not self._listening:
            self._device.on("advertisement", self._on_advertisement)
            self._listening = True
        await self._device.start_scanning(active=self._active, filter_duplicates=False)

    async def stop(self) -> None:
        if self._listening:
            self._device.remove_listener("advertisement", self._on_advertisement)
            self._listening = False
        if self._device.scanning:
            await self._device.stop_scanning()

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        try:
            parsed = parse_ad(advertisement.data_bytes)
        except AdError as exc:
            self.refused += 1
            if len(self.refusals) < 32:
                self.refusals.append(str(exc))
            return
        if not self.is_allowed_uuid(list(parsed.service_uuids)):
            return
        tx_power = None if advertisement.tx_power == Advertisement.TX_POWER_NOT_AVAILABLE \
            else advertisement.tx_power
        address = str(advertisement.address)
        data = AdvertisementData(local_name=parsed.local_name,
                                 manufacturer_data=dict(parsed.manufacturer_data), service_data={},
                                 service_uuids=list(parsed.service_uuids), tx_power=tx_power,
                                 rssi=advertisement.rssi, platform_data=(advertisement,))
        device = self.create_or_update_device(address, address, parsed.local_name,
                                              advertisement.address, data)
        self.call_detection_callbacks(device, data)


class BumbleClient(BaseBleakClient):
    """bleak's client backend on a bumble device (the central's side of one connection)."""

    def __init__(self, address_or_ble_device: BLEDevice | str, *,
                 disconnected_callback: Callable[[], None] | None = None, timeout: float = 10.0,
                 services: set[str] | None = None, **kwargs: Any) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback,
                         timeout=timeout)
        self._device = _device_of(kwargs)
        register = kwargs.get("bumble_register")
        if callable(register):  # hands this backend to the caller (for what bleak lacks: L2CAP)
            register(self)
        details = address_or_ble_device.details if isinstance(address_or_ble_device, BLEDevice) else None
        self._target: hci.Address | str = details if isinstance(details, hci.Address) else self.address
        self._wanted = services
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._mtu = 23

    @property
    def name(self) -> str:
        return self.address

    @property
    def mtu_size(self) -> int:
        return self._mtu

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    @property
    def connection(self) -> Connection | None:
        """The bumble connection (for what bleak has no API for, like L2CAP channels)."""
        return self._connection

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        async with asyncio.timeout(self._timeout):
            connection = await self._device.connect(self._target, timeout=self._timeout)
            if connection.role != hci.Role.CENTRAL or str(connection.peer_address) != str(self._target):
                # bumble's connect_le resolves on the first connection that completes, an
                # inbound one too: that one is the peripheral's, not ours to use or hang up.
                raise BleakError(f"the connect to {self._target} returned another connection "
                                 f"({connection.peer_address}, as {hci.Role(connection.role).name})")
            self._connection = connection
            connection.on("disconnection", self._on_disconnection)
            try:
                self._peer = peer = Peer(connection)
                self._mtu = await peer.request_mtu(REQUESTED_MTU)
                self.services = await self._discover(peer)
            except BaseException:
                with contextlib.suppress(Exception):
                    await connection.disconnect()
                self._connection = None
                raise

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        from bumble.core import UUID

        uuids = [UUID(u) for u in self._wanted] if self._wanted else []
        collection = BleakGATTServiceCollection()
        services: list[ServiceProxy] = await peer.discover_services(uuids)
        for service in services:
            bleak_service = BleakGATTService(service, service.handle, _uuid(service.uuid))
            collection.add_service(bleak_service)
            characteristics: list[CharacteristicProxy[bytes]] = \
                await peer.discover_characteristics(service=service)
            for char in characteristics:
                names = [name for flag, name in _PROPERTIES if char.properties & flag]
                bleak_char = BleakGATTCharacteristic(char, char.handle, _uuid(char.uuid), names,  # type: ignore[arg-type]
                                                     lambda: min(self._mtu - 3, 512), bleak_service)
                collection.add_characteristic(bleak_char)
                descriptors: list[DescriptorProxy] = await peer.discover_descriptors(char)
                for desc in descriptors:
                    collection.add_descriptor(BleakGATTDescriptor(desc, desc.handle, _uuid(desc.type),
                                                                  bleak_char))
        return collection

    def _on_disconnection(self, _reason: int) -> None:
        self._connection = self._peer = None
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        connection, self._connection, self._peer = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):  # already gone: nothing to undo
                await connection.disconnect()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("pairing: the sync session authenticates and encrypts")

    async def unpair(self) -> None:
        raise NotImplementedError("pairing: the sync session authenticates and encrypts")

    def _gatt(self) -> Peer:
        if self._peer is None:
            raise BleakError("not connected")
        return self._peer

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False,
                             **kwargs: Any) -> bytearray:
        return bytearray(await self._gatt().read_value(characteristic.handle))

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False,
                                   **kwargs: Any) -> bytearray:
        return bytearray(await self._gatt().read_value(descriptor.handle))

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer,
                              response: bool) -> None:
        await self._gatt().write_value(characteristic.handle, bytes(data), with_response=response)

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        await self._gatt().write_value(descriptor.handle, bytes(data), with_response=True)

    async def start_notify(self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback,
                           **kwargs: Any) -> None:
        proxy = characteristic.obj
        if not isinstance(proxy, CharacteristicProxy):
            raise BleakError("not a characteristic of this backend")
        await self._gatt().subscribe(proxy, lambda value: callback(bytearray(value)))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        proxy = characteristic.obj
        if isinstance(proxy, CharacteristicProxy) and self._peer is not None:
            await self._peer.unsubscribe(proxy)


def _uuid(value: object) -> str:
    """A bumble UUID in bleak's form: 128 bits, lowercase, dashed (16-bit ones expanded)."""
    from bumble.core import UUID

    if not isinstance(value, UUID):
        raise BleakError(f"not a UUID: {value!r}")
    return str(uuid.UUID(bytes=value.to_bytes(force_128=True)[::-1]))
