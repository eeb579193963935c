"""Three and four devices that each take both roles at once (the default), on one bumble
virtual link in process: they discover each other and converge, and no connect stalls.

Before the fix (bumble 0.0.236's virtual radio, unchanged transport) a device that dialled
while another was connecting to it took that inbound connection as the result of its own
dial (bumble's ``Device.connect_le`` resolves on any new connection), the real outbound
connection then hit an ``AssertionError`` in ``Device.on_le_connection``, and a dial waited
out the connect timeout (10 s, sometimes three in a row): so these tests count connect
timeouts (the transports' ``connect_timeouts`` and their refusals), the exceptions the event
loop saw (bumble raises those in its HCI packet callback) and the virtual controller's "no
connection for" warnings (a central holding a connection its peripheral never had) until the
devices converged, and assert there are none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bumble.link import LocalLink

from crdt_sync import Replica
from crdt_sync.transports.ble import BleTransport
from crdt_sync.transports.interface import LinkReady, PeerEvent
from tests.helpers import share
from tests.sync_helpers import WAIT, fill

EDITS = 10


@contextlib.contextmanager
def loop_exceptions() -> Iterator[list[dict[str, Any]]]:
    """What reaches the event loop's exception handler (bumble's HCI callbacks raise there)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


async def all_converged(replicas: list[Replica], space: str, total: int) -> None:
    """Wait on change events until every replica holds the same vector, ``total`` envelopes or
    more (the space's own: genesis and grants, and the edits)."""
    changed = asyncio.Event()
    stops = [r.observe(lambda _c: changed.set()) for r in replicas]
    try:
        async with asyncio.timeout(6 * WAIT):
            while True:
                vectors = [r.version_vector(space) for r in replicas]
                if all(v == vectors[0] for v in vectors) and sum(vectors[0].values()) >= total:
                    return
                changed.clear()
                await changed.wait()
    finally:
        for stop in stops:
            stop()


async def collect(transport: BleTransport, into: list[PeerEvent]) -> None:
    async for event in transport.events():
        into.append(event)


@pytest.mark.parametrize("count", [3, 4])
async def test_dual_role_devices_converge_without_a_connect_stall(
        tmp_path: Path, count: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bumble")
    replicas = [Replica(tmp_path / f"r{i}", seal_interval=0) for i in range(count)]
    try:
        space = share(*replicas)
        for i, replica in enumerate(replicas):
            fill(replica, f"r{i}", EDITS, space)
        link = LocalLink()
        events: list[PeerEvent] = []
        with loop_exceptions() as errors:
            async with contextlib.AsyncExitStack() as stack:
                transports = [await stack.enter_async_context(BleTransport(r, link)) for r in replicas]
                collectors = [asyncio.get_running_loop().create_task(collect(t, events))
                              for t in transports]
                await all_converged(replicas, space, count * EDITS)
                # What happened until they converged (a close races data in flight: bumble
                # logs and raises about packets for connections that just ended).
                until_converged = list(errors)
                ghosts = [r.getMessage() for r in caplog.records if "no connection for" in r.getMessage()]
                for transport in transports:
                    await transport.close()
                async with asyncio.timeout(WAIT):
                    await asyncio.gather(*collectors)
        assert all(t.central and t.peripheral for t in transports)  # the default: both roles
        refusals = [reason for t in transports for _address, reason in t.table.refusals]
        assert not [r for r in refusals if "Timeout" in r], refusals
        assert sum(t.connect_timeouts for t in transports) == 0
        assert until_converged == [], [c.get("message") for c in until_converged]
        assert ghosts == [], ghosts  # a central held a connection its peripheral never had
        assert any(e.outbound for e in events if isinstance(e, LinkReady))
        assert any(not e.outbound for e in events if isinstance(e, LinkReady))
    finally:
        for replica in replicas:
            replica.close()


def test_the_bumble_internals_are_checked_and_can_be_turned_off() -> None:
    import os
    import subprocess
    import sys

    from crdt_sync.transports.ble import _bumble_compat
    from tests.helpers import REPO

    assert _bumble_compat.INTERNALS, _bumble_compat.FALLBACK_REASON  # bumble 0.0.236 here
    code = ("from crdt_sync.transports.ble import _bumble_compat as c; "
            "print(c.INTERNALS, c.FALLBACK_REASON)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                                         "CRDT_SYNC_BUMBLE_INTERNALS": "0"})
    assert done.stdout.strip() == "False CRDT_SYNC_BUMBLE_INTERNALS=0", done.stderr
