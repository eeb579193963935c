"""The registry of transport harnesses that the conformance suite runs on.

Each entry opens a harness under a directory of its own (for a relay's data, say) and closes
it after the case. ``direct`` says whether the transport is point to point: the suite's cases
that drive one end of a link by hand run only on those.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conformance.ble import ble_harness, ble_l2cap_harness
from tests.conformance.harness import TransportHarness
from tests.conformance.lan import lan_harness
from tests.conformance.memory import ALL_FAULTS, MemoryHarness
from tests.conformance.relay import relay_hub_harness, websocket_harness


@dataclass(frozen=True)
class HarnessSpec:
    name: str
    direct: bool
    open: Callable[[Path], AbstractAsyncContextManager[TransportHarness]]


def _memory(name: str, native: frozenset[str]) -> Callable[[Path], AbstractAsyncContextManager[Any]]:
    @asynccontextmanager
    async def open_harness(_data: Path) -> AsyncIterator[MemoryHarness]:
        yield MemoryHarness(name, native)
    return open_harness


HARNESSES: tuple[HarnessSpec, ...] = (
    HarnessSpec("memory", True, _memory("memory", ALL_FAULTS)),
    HarnessSpec("memory-wrapped-faults", True, _memory("memory-wrapped-faults", frozenset())),
    HarnessSpec("relay-websocket", True, websocket_harness),
    HarnessSpec("lan-websocket", True, lan_harness),
    HarnessSpec("ble-gatt", True, ble_harness),
    HarnessSpec("ble-l2cap", True, ble_l2cap_harness),
    HarnessSpec("relay-store-and-forward", False, relay_hub_harness),
)
DIRECT: tuple[HarnessSpec, ...] = tuple(spec for spec in HARNESSES if spec.direct)
