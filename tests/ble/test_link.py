"""BleLink, the I/O shell around the framing, over a wire of two callables (no radio): frames
arrive whole and in order at any size, a slow reader slows the writer (credit), close sends
what is queued first, a peer that never opens ends the link with a reason."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync.transports.base import LinkClosed
from crdt_sync.transports.ble import BleLink, FramingError, LinkTimers
from crdt_sync.transports.ble._gatt import HintClock
from tests.sync_helpers import WAIT


def wired(chunk: int = 60, window: int = 4, timers: LinkTimers | None = None,
          deliver: bool = True) -> tuple[BleLink, BleLink, list[bytes]]:
    """Two links whose chunks go straight to each other; ``deliver=False``: b's never reach a."""
    wire: list[bytes] = []
    holder: dict[str, BleLink] = {}

    async def a_writes(c: bytes) -> None:
        wire.append(c)
        holder["b"].feed(c)

    async def b_writes(c: bytes) -> None:
        if deliver:
            holder["a"].feed(c)

    async def hangup_a() -> None:
        holder["b"].lost("a hung up")

    async def hangup_b() -> None:
        holder["a"].lost("b hung up")

    a = BleLink("b", a_writes, hangup_a, chunk, window=window, timers=timers)
    b = BleLink("a", b_writes, hangup_b, chunk, window=window, timers=timers)
    holder.update(a=a, b=b)
    a.start()
    b.start()
    return a, b, wire


@settings(max_examples=25)
@given(frames=st.lists(st.binary(max_size=3000), min_size=1, max_size=10), chunk=st.integers(20, 200),
       window=st.integers(1, 8), seed=st.integers(0, 1000))
def test_frames_arrive_whole_and_in_order(frames: list[bytes], chunk: int, window: int, seed: int) -> None:
    async def run() -> None:
        a, b, wire = wired(chunk, window)
        rng = random.Random(seed)

        async def reader() -> list[bytes]:
            got = []
            for _ in frames:
                if rng.random() < 0.3:
                    await asyncio.sleep(0)  # a slow reader: a turn of the loop, not a timer
                got.append(await b.recv())
            return got

        async with asyncio.timeout(WAIT):
            task = asyncio.create_task(reader())
            for frame in frames:
                await a.send(frame)
            assert await task == frames
        assert max(len(c) for c in wire) <= chunk
        await a.close()
        with pytest.raises(LinkClosed):
            await b.recv()
        assert a.channel.refused == b.channel.refused == 0

    asyncio.run(run())


async def test_close_sends_what_is_queued_first() -> None:
    a, b, _ = wired()
    for i in range(5):
        await a.send(bytes([i]) * 500)
    await a.close()
    got = []
    with pytest.raises(LinkClosed, match="a hung up"):
        while True:
            got.append(await b.recv())
    assert got == [bytes([i]) * 500 for i in range(5)]


async def test_a_peer_that_never_opens_ends_the_link() -> None:
    a, _b, _ = wired(timers=LinkTimers(stall=0.2), deliver=False)  # b's OPEN never reaches a
    await a.send(b"hello")
    with pytest.raises(LinkClosed, match="granted no credit"):
        async with asyncio.timeout(WAIT):
            await a.recv()
    assert a.reason is not None and "granted no credit for 0.2 s" in a.reason


async def test_a_frame_over_the_limit_is_refused_by_send() -> None:
    a, _b, _ = wired()
    with pytest.raises(FramingError):
        await a.send(bytes(1024 * 1024 + 1))
    await a.close()


def test_the_hint_rotates_on_its_clock() -> None:
    now = [0.0]
    draws = iter([b"\x01" * 4, b"\x02" * 4])
    clock = HintClock(lambda: now[0], rotation=60, draw=lambda _n: next(draws))
    assert clock.current() == (b"\x01" * 4, False)
    now[0] = 59.9
    assert clock.current() == (b"\x01" * 4, False)
    now[0] = 60.0
    assert clock.current() == (b"\x02" * 4, True)
