"""Separate processes meet over one virtual radio: ``python -m crdt_sync.transports.ble.virtual``
serves bumble controllers as HCI over loopback TCP, and each device process (tests/ble/node.py)
runs a BleTransport on its ``tcp-client:`` SPEC, as ``crdt-sync peer --ble --ble-transport``
will. Each process waits on its own events; the test waits on their output lines."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from crdt_sync import Replica
from tests.helpers import REPO, share
from tests.sync_helpers import WAIT

LIMIT = 6 * WAIT


async def line(stream: asyncio.StreamReader) -> str:
    async with asyncio.timeout(LIMIT):
        return (await stream.readline()).decode().strip()


async def test_two_device_processes_sync_over_the_virtual_radio(tmp_path: Path) -> None:
    with Replica(tmp_path / "a") as a, Replica(tmp_path / "b") as b:
        space = share(a, b)  # the common space, made here; each process opens its directory
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    radio = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crdt_sync.transports.ble.virtual", "--count", "2", env=env,
        stdout=asyncio.subprocess.PIPE, cwd=REPO)
    nodes: list[asyncio.subprocess.Process] = []
    try:
        assert radio.stdout is not None
        specs = [await line(radio.stdout), await line(radio.stdout)]
        assert all(spec.startswith("tcp-client:127.0.0.1:") for spec in specs), specs
        for name, spec in zip(("a", "b"), specs, strict=True):
            nodes.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.ble.node", str(tmp_path / name), space, spec, "15", "30",
                str(LIMIT),
                env=env, cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE))
        outputs = []
        for node in nodes:
            assert node.stdout is not None
            outputs.append(await line(node.stdout))
        assert outputs == ["converged", "converged"], outputs
        for node in nodes:  # both hold everything: let them go
            assert node.stdin is not None
            node.stdin.close()
        async with asyncio.timeout(LIMIT):
            codes = [await node.wait() for node in nodes]
        assert codes == [0, 0]
    finally:
        for proc in [*nodes, radio]:
            if proc.returncode is None:
                proc.terminate()
                async with asyncio.timeout(WAIT):
                    await proc.wait()
