"""The transport conformance suite (tests/conformance.py) on the memory transport.

It runs twice: with the faults injected by the memory links' own conditions, and with a
memory transport that injects none, so the suite's generic fault wrapper (what transports
without simulated faults will use) is held to the same cases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from crdt_sync.transports.base import FrameLink
from crdt_sync.transports.memory import LinkConditions, MemoryNetwork
from tests.conformance import Faults, LinkFactory, TransportConformance


class MemoryLinks:
    """Memory link pairs; ``native`` says which faults the link conditions inject."""

    def __init__(self, native: frozenset[str]) -> None:
        self._native = native

    @property
    def native_faults(self) -> frozenset[str]:
        return self._native

    @property
    def max_frame(self) -> int | None:
        return None

    @asynccontextmanager
    async def connect(self, faults: Faults) -> AsyncIterator[tuple[FrameLink, FrameLink]]:
        assert faults.active() <= self._native, "the suite asked for a fault this transport lacks"
        network = MemoryNetwork(seed=faults.seed)
        a, b = network.pair(LinkConditions(duplicate=faults.duplicate, reorder=faults.reorder,
                                           disconnect_after_frames=faults.disconnect_after_frames))
        try:
            yield a, b
        finally:
            network.close_all()


class TestMemoryTransport(TransportConformance):
    @pytest.fixture
    def link_factory(self) -> LinkFactory:
        return MemoryLinks(frozenset({"duplicate", "reorder", "disconnect_after_frames"}))


class TestMemoryTransportWrappedFaults(TransportConformance):
    @pytest.fixture
    def link_factory(self) -> LinkFactory:
        return MemoryLinks(frozenset())
