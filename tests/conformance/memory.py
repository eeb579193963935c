"""The memory transport's harness.

It is registered twice: with the faults injected by the memory links' own conditions, and
injecting none, so the suite's generic fault wrapper (what transports without simulated faults
use) is held to the same cases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from crdt_sync.transports.base import FrameLink
from crdt_sync.transports.memory import LinkConditions, MemoryNetwork
from tests.conformance.harness import Faults, PointToPoint

#: Every fault the memory links' conditions can inject.
ALL_FAULTS = frozenset({"duplicate", "reorder", "disconnect_after_frames"})


class MemoryHarness(PointToPoint):
    """Memory link pairs; ``native`` says which faults the link conditions inject."""

    max_frame: int | None = None
    instant_hangup = True  # closing a memory link ends it for both ends at once

    def __init__(self, name: str, native: frozenset[str]) -> None:
        self.name = name
        self.native_faults = native

    @asynccontextmanager
    async def connect(self, faults: Faults) -> AsyncIterator[tuple[FrameLink, FrameLink]]:
        assert faults.active() <= self.native_faults, "the suite asked for a fault this transport lacks"
        network = MemoryNetwork(seed=faults.seed)
        a, b = network.pair(LinkConditions(duplicate=faults.duplicate, reorder=faults.reorder,
                                           disconnect_after_frames=faults.disconnect_after_frames))
        try:
            yield a, b
        finally:
            network.close_all()
