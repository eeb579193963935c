"""A link model for BLE: what our chunks cost on air, and how long moving them takes.

bumble's virtual link has no radio timing (a run here is CPU-bound), so a run's *bytes* are
exact and its *times* mean nothing. This model turns the chunks a run wrote into link-layer
packets and time, for a given PHY, ATT MTU, data length extension, connection interval and
number of packets a device gets through per connection event. Pure arithmetic, no I/O.

Per chunk (GATT): an ATT PDU (opcode + handle: 3 bytes) in an L2CAP B-frame (4 bytes),
fragmented into link-layer PDUs of at most ``ll_payload`` bytes (27 without data length
extension, 251 with). Per chunk (LE credit-based channel): an SDU (2-byte length) segmented
into K-frames of at most MPS = ``ll_payload - 4`` bytes, each with its 4-byte L2CAP header.
On air, each LL PDU adds preamble (1 byte on the 1M PHY, 2 on 2M), access address (4),
header (2) and CRC (3); no MIC, because links are not paired (the session encrypts).

Calibration (see docs/BENCHMARKS.md): the free parameter is ``packets_per_event``, fitted to
published figures, never to runs here: Ditto's ~5 KB/s over GATT and ~22 KB/s over L2CAP
on iOS, and 300-400 kbit/s at best on an iPhone's 2M PHY.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ._framing import MAX_CHUNK, MIN_CHUNK, chunk_size_for, split

#: Inter-frame space; each data packet is acknowledged by an empty one.
T_IFS_US = 150.0


@dataclass(frozen=True, slots=True)
class LinkModel:
    """One BLE link's parameters.

    Attributes:
        name: for tables.
        phy_mbps: 1 (LE 1M) or 2 (LE 2M).
        att_mtu: the negotiated ATT MTU (GATT); a chunk is ``min(att_mtu - 3, 512)`` bytes.
        ll_payload: the largest link-layer payload: 27, or up to 251 with data length extension.
        interval_ms: the connection interval.
        packets_per_event: data packets one side gets through per connection event (fitted).
        l2cap: an LE credit-based channel instead of GATT (chunks of up to 512 bytes as SDUs).
        loss: fraction of link-layer packets sent again (CRC errors, interference).
    """

    name: str
    phy_mbps: float
    att_mtu: int
    ll_payload: int
    interval_ms: float
    packets_per_event: int
    l2cap: bool = False
    loss: float = 0.0

    @property
    def chunk(self) -> int:
        """The chunk our framing uses on this link: aligned to whole LL packets."""
        if self.l2cap:  # an SDU (2-byte length + chunk) in whole K-frames of MPS bytes
            mps = self.ll_payload - 4
            return max(MIN_CHUNK, min(MAX_CHUNK + 2, (MAX_CHUNK + 2) // mps * mps) - 2)
        return chunk_size_for(self.att_mtu, self.ll_payload)

    def ll_pdus(self, chunk_len: int) -> list[int]:
        """Link-layer payload sizes that carry one chunk."""
        if self.l2cap:
            mps = self.ll_payload - 4
            sdu = 2 + chunk_len
            return [4 + min(mps, sdu - at) for at in range(0, sdu, mps)]
        pdu = 4 + 3 + chunk_len
        return [min(self.ll_payload, pdu - at) for at in range(0, pdu, self.ll_payload)]

    def air_bytes(self, ll_len: int) -> int:
        preamble = 2 if self.phy_mbps >= 2 else 1
        return preamble + 4 + 2 + ll_len + 3

    def packet_us(self, ll_len: int) -> float:
        """One data packet, its acknowledgement and the two inter-frame spaces."""
        return (self.air_bytes(ll_len) + self.air_bytes(0)) * 8 / self.phy_mbps + 2 * T_IFS_US

    def packets_per_second(self, ll_len: int | None = None) -> float:
        """Data packets per second: the fitted count per event, capped by airtime."""
        size = self.ll_payload if ll_len is None else ll_len
        fit = math.floor(self.interval_ms * 1000 / self.packet_us(size))
        return max(1, min(self.packets_per_event, fit)) * 1000 / self.interval_ms

    @property
    def budget(self) -> float:
        """The link budget in bytes/s: full link-layer payloads at the modelled packet rate."""
        return self.ll_payload * self.packets_per_second() * (1 - self.loss)

    def cost(self, frames: Iterable[bytes | int]) -> Cost:
        """What moving ``frames`` (bytes, or just their sizes) one way costs on this link."""
        frame_bytes = chunk_count = chunk_bytes = pdus = ll_bytes = air = 0
        for frame in frames:
            data = bytes(frame) if isinstance(frame, int) else frame
            frame_bytes += len(data)
            for chunk in split(data, self.chunk):
                chunk_count += 1
                chunk_bytes += len(chunk)
                for size in self.ll_pdus(len(chunk)):
                    pdus += 1
                    ll_bytes += size
                    air += self.air_bytes(size)
        rate = self.packets_per_second() * (1 - self.loss)
        return Cost(self.name, frame_bytes, chunk_count, chunk_bytes, pdus, ll_bytes, air,
                    pdus / rate if rate else math.inf, self.budget)


@dataclass(frozen=True, slots=True)
class Cost:
    """Frames moved one way: counts, bytes at each layer, and the modelled time."""

    link: str
    frame_bytes: int
    chunks: int
    chunk_bytes: int
    ll_pdus: int
    ll_bytes: int
    air_bytes: int
    seconds: float
    budget: float

    @property
    def goodput(self) -> float:
        """Frame bytes per second."""
        return self.frame_bytes / self.seconds if self.seconds else 0.0

    @property
    def fraction(self) -> float:
        """Goodput as a fraction of the link budget."""
        return self.goodput / self.budget if self.budget else 0.0


#: Links calibrated on the published figures (docs/BENCHMARKS.md, "BLE").
GATT_23_1M = LinkModel("GATT, MTU 23, 1M PHY", 1, 23, 27, 30.0, 6)
GATT_185_IOS = LinkModel("GATT, MTU 185, 1M PHY, DLE (iOS-like)", 1, 185, 251, 30.0, 1)
GATT_247_2M = LinkModel("GATT, MTU 247, 2M PHY, DLE", 2, 247, 251, 15.0, 3)
GATT_517_2M = LinkModel("GATT, MTU 517, 2M PHY, DLE", 2, 517, 251, 15.0, 3)
L2CAP_IOS = LinkModel("L2CAP CoC, 1M PHY, DLE (iOS-like)", 1, 247, 251, 30.0, 3, l2cap=True)
L2CAP_2M = LinkModel("L2CAP CoC, 2M PHY, DLE", 2, 247, 251, 15.0, 3, l2cap=True)
LINKS = (GATT_23_1M, GATT_185_IOS, GATT_247_2M, GATT_517_2M, L2CAP_IOS, L2CAP_2M)
