"""The suite's fixtures: ``harness`` runs a case on every transport, ``direct_harness`` on the
point-to-point ones (see :mod:`tests.conformance.harnesses`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conformance.harness import TransportHarness
from tests.conformance.harnesses import DIRECT, HARNESSES, HarnessSpec


async def _opened(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TransportHarness]:
    spec: HarnessSpec = request.param
    async with spec.open(tmp_path / "transport") as harness:
        assert harness.name == spec.name and (harness.hub is None) == spec.direct
        yield harness


@pytest.fixture(params=HARNESSES, ids=[spec.name for spec in HARNESSES])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TransportHarness]:
    async for opened in _opened(request, tmp_path):
        yield opened


@pytest.fixture(params=DIRECT, ids=[spec.name for spec in DIRECT])
async def direct_harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TransportHarness]:
    async for opened in _opened(request, tmp_path):
        yield opened
