"""The asyncio driver's own guarantees (the protocol's are in the session and conformance
tests): a peer that sends without reading cannot make it queue answers without bound, and a
peer that takes no frame at all does not hold it past the session's ``dead_after``."""

from __future__ import annotations

import asyncio
import contextlib
import time

from crdt_sync.identity import Identity
from crdt_sync.protocol import Session, SessionConfig
from crdt_sync.protocol.messages import E_GOING_AWAY, Ping, encode
from crdt_sync.transports.driver import MAX_PENDING, Hooks, drive


class _Host:
    """Just enough of a SyncHost for a session that never gets past PING."""

    keeps_all_spaces = False

    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.device_id = self.identity.id


class FloodingPeer:
    """Sends PING after PING, as fast as it is read, and never reads after the first frame."""

    label = "flooder"

    def __init__(self) -> None:
        self.reads = 0
        self.sent = 0
        self.never = asyncio.Event()

    async def send(self, frame: bytes) -> None:
        self.sent += 1
        if self.sent > 1:  # the HELLO goes out; then the peer stops reading
            await self.never.wait()

    async def recv(self) -> bytes:
        self.reads += 1
        return encode(Ping(self.reads))

    async def close(self) -> None:
        pass


async def test_a_peer_that_does_not_read_is_not_read_either() -> None:
    peer = FloodingPeer()
    session = Session(_Host(), 0.0)  # type: ignore[arg-type]
    task = asyncio.create_task(drive(session, peer, Hooks(), live=True))
    # recv() never suspends, so the driver reads until it stops itself: a few turns of the
    # loop are all it gets (and would be enough to read everything if it did not stop).
    for _ in range(100):
        await asyncio.sleep(0)
    assert not task.done()
    assert peer.reads <= MAX_PENDING + 1, f"read {peer.reads} frames it could not answer"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class DeafPeer:
    """Takes no frame: its send never returns, and it sends nothing."""

    label = "deaf"

    def __init__(self) -> None:
        self.never = asyncio.Event()
        self.closed = False

    async def send(self, frame: bytes) -> None:
        await self.never.wait()

    async def recv(self) -> bytes:
        await self.never.wait()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self.closed = True


async def test_a_send_the_peer_never_takes_is_given_up_after_dead_after() -> None:
    peer = DeafPeer()
    session = Session(_Host(), time.monotonic(), SessionConfig(dead_after=0.2))  # type: ignore[arg-type]
    async with asyncio.timeout(10.0):
        outcome = await drive(session, peer, Hooks(), live=True)
    assert outcome.closed is not None and outcome.closed.code == E_GOING_AWAY, outcome.closed
    assert outcome.frames_out == 0 and peer.closed
