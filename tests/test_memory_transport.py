"""The in-process memory transport: ordering, seeded faults, bandwidth, drops and closing.

Every wait is on an event (a frame, ``wait_delivered``, a closed link) under a timeout;
nothing sleeps and hopes, and no assertion depends on wall-clock timings.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync.transports.base import FrameLink, LinkClosed, TransportError
from crdt_sync.transports.memory import FrameTooLarge, LinkConditions, LinkStats, MemoryLink, MemoryNetwork

TIMEOUT = 5.0


def frames(n: int, size: int = 8) -> list[bytes]:
    return [i.to_bytes(4, "big") + bytes(size - 4) for i in range(n)]


async def recv_n(link: MemoryLink, n: int) -> list[bytes]:
    return [await asyncio.wait_for(link.recv(), TIMEOUT) for _ in range(n)]


async def send_and_collect(sender: MemoryLink, receiver: MemoryLink, sent: list[bytes]) -> list[bytes]:
    """Send everything, wait until each frame landed or was lost, and read what arrived."""
    for frame in sent:
        await sender.send(frame)
    await asyncio.wait_for(sender.wait_delivered(), TIMEOUT)
    return await recv_n(receiver, sender.stats.frames_delivered)


async def blocked_recv(link: MemoryLink) -> asyncio.Task[bytes]:
    """A ``recv()`` task that has started and is waiting for a frame."""
    task = asyncio.create_task(link.recv())
    await asyncio.sleep(0)  # one loop turn, so the task reaches its await: no timing involved
    assert not task.done()
    return task


def balanced(stats: LinkStats) -> bool:
    return stats.frames_sent + stats.frames_duplicated == (
        stats.frames_delivered + stats.frames_dropped + stats.frames_in_flight)


@pytest.mark.parametrize("conditions", [
    LinkConditions(),
    LinkConditions(latency=0.002),
    LinkConditions(latency=0.001, jitter=0.003),  # jitter alone never reorders
    LinkConditions(bandwidth=1_000_000),
], ids=["perfect", "latency", "jitter", "bandwidth"])
async def test_fault_free_links_deliver_everything_in_order(conditions: LinkConditions) -> None:
    a, b = MemoryNetwork(seed=1).pair(conditions)
    sent = frames(200)
    assert await send_and_collect(a, b, sent) == sent
    back = frames(50, size=16)
    assert await send_and_collect(b, a, back) == back
    assert a.stats == LinkStats(frames_sent=200, bytes_sent=1600, frames_delivered=200, bytes_delivered=1600)
    await a.close()


async def test_memory_link_is_a_frame_link() -> None:
    a, b = MemoryNetwork(seed=0).pair(label_a="bob", label_b="alice")
    assert isinstance(a, FrameLink)
    assert (a.label, b.label) == ("bob", "alice")


LOSSY = LinkConditions(latency=0.001, jitter=0.002, loss=0.2, duplicate=0.2, reorder=0.3)


async def lossy_run(seed: int) -> tuple[list[bytes], LinkStats]:
    a, b = MemoryNetwork(seed).pair(LOSSY)
    received = await send_and_collect(a, b, frames(300))
    stats = a.stats
    await a.close()
    return received, stats


async def test_same_seed_gives_the_same_delivered_sequence() -> None:
    first, stats = await lossy_run(seed=7)
    again, stats_again = await lossy_run(seed=7)
    assert first == again and stats == stats_again
    other, _ = await lossy_run(seed=8)
    assert other != first
    # Every kind of fault happened, and every frame is accounted for.
    assert stats.frames_dropped > 0 and stats.frames_duplicated > 0
    assert first != sorted(first), "reorder=0.3 over 300 frames never reordered"
    assert stats.frames_in_flight == 0 and balanced(stats)
    assert set(first) <= set(frames(300))


async def test_reorder_delivers_a_held_frame_right_after_the_next_one() -> None:
    a, b = MemoryNetwork(seed=3).pair(LinkConditions(reorder=1.0))
    sent = frames(6)
    # Each odd frame overtakes the even one held before it.
    assert await send_and_collect(a, b, sent) == [sent[i] for i in (1, 0, 3, 2, 5, 4)]


async def test_a_held_frame_is_released_when_no_next_frame_comes() -> None:
    a, b = MemoryNetwork(seed=3).pair(LinkConditions(latency=0.001, reorder=1.0))
    await a.send(b"lonely")
    assert await asyncio.wait_for(b.recv(), TIMEOUT) == b"lonely"


async def test_bandwidth_queues_frames_behind_each_other() -> None:
    a, b = MemoryNetwork(seed=0).pair(LinkConditions(bandwidth=100_000))
    sent = frames(20, size=1000)
    for frame in sent:
        await a.send(frame)
    # Serialisation takes time even with zero latency, so nothing has arrived yet.
    assert a.stats.frames_in_flight == 20 and a.stats.frames_delivered == 0
    assert await recv_n(b, 20) == sent
    assert a.stats.bytes_delivered == 20_000


async def test_disconnect_after_frames_drops_the_link_and_wakes_a_blocked_recv() -> None:
    a, b = MemoryNetwork(seed=0).pair(LinkConditions(latency=0.01, disconnect_after_frames=3))
    blocked = await blocked_recv(b)
    await a.send(b"one")
    await b.send(b"two")  # both directions count towards the limit
    assert not blocked.done()
    await a.send(b"three")
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(blocked, TIMEOUT)
    with pytest.raises(LinkClosed):
        await a.send(b"four")
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(a.recv(), TIMEOUT)
    # The frames were in flight when the link dropped: lost, not delivered.
    assert a.stats.frames_dropped == 2 and b.stats.frames_dropped == 1
    assert a.stats.frames_delivered == 0 and balanced(a.stats)


async def test_frames_delivered_before_a_drop_can_still_be_read() -> None:
    a, b = MemoryNetwork(seed=0).pair(LinkConditions(disconnect_after_frames=2))
    await a.send(b"one")
    await a.send(b"two")
    assert await recv_n(b, 2) == [b"one", b"two"]
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(b.recv(), TIMEOUT)


async def test_disconnect_after_bytes_cuts_off_the_frame_that_crosses_the_limit() -> None:
    a, b = MemoryNetwork(seed=0).pair(LinkConditions(disconnect_after_bytes=10))
    await a.send(b"12345")
    await a.send(b"123456")  # bytes 11 and beyond never made it
    assert await asyncio.wait_for(b.recv(), TIMEOUT) == b"12345"
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(b.recv(), TIMEOUT)
    assert a.stats.frames_dropped == 1 and a.stats.bytes_sent == 11


async def test_oversized_frame_is_refused_and_the_link_stays_usable() -> None:
    a, b = MemoryNetwork(seed=0).pair(LinkConditions(max_frame=4))
    with pytest.raises(FrameTooLarge) as info:
        await a.send(b"12345")
    assert isinstance(info.value, TransportError) and isinstance(info.value, ValueError)
    assert a.stats.frames_sent == 0
    await a.send(b"1234")
    assert await asyncio.wait_for(b.recv(), TIMEOUT) == b"1234"


async def test_close_is_idempotent_and_the_peer_drains_before_linkclosed() -> None:
    a, b = MemoryNetwork(seed=0).pair()
    await a.send(b"for b")
    await b.send(b"for a")
    await a.close()
    await a.close()
    with pytest.raises(LinkClosed):
        await a.recv()  # the closing end discards unread frames
    # b did not close, so it still reads what had arrived, then fails, and keeps failing.
    assert await asyncio.wait_for(b.recv(), TIMEOUT) == b"for b"
    for _ in range(2):
        with pytest.raises(LinkClosed):
            await asyncio.wait_for(b.recv(), TIMEOUT)
    for link in (a, b):
        with pytest.raises(LinkClosed):
            await link.send(b"late")
    await b.close()


async def test_close_wakes_blocked_receivers_on_both_ends() -> None:
    a, b = MemoryNetwork(seed=0).pair()
    waiting = [await blocked_recv(link) for link in (a, b)]
    await b.close()
    for task in waiting:
        with pytest.raises(LinkClosed):
            await asyncio.wait_for(task, TIMEOUT)


async def test_close_loses_frames_in_flight_and_leaves_nothing_running() -> None:
    network = MemoryNetwork(seed=0)
    a, b = network.pair(LinkConditions(latency=60, reorder=0.5, bandwidth=10))
    for frame in frames(10):
        await a.send(frame)
    assert a.stats.frames_in_flight == 10
    network.close_all()
    network.close_all()
    await asyncio.wait_for(a.wait_delivered(), TIMEOUT)  # nothing left to wait for
    assert a.stats.frames_dropped == 10 and a.stats.frames_in_flight == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(b.recv(), TIMEOUT)


async def test_network_stats_sum_every_link() -> None:
    network = MemoryNetwork(seed=0)
    (a, b), (c, _) = network.pair(), network.pair()
    await a.send(b"abc")
    await b.send(b"de")
    await c.send(b"f")
    assert network.stats.bytes_sent == 6 and network.stats.frames_delivered == 3


@pytest.mark.parametrize("bad", [
    {"loss": 1.5}, {"duplicate": -0.1}, {"latency": -1}, {"bandwidth": 0},
    {"disconnect_after_frames": 0}, {"max_frame": -1},
])
def test_conditions_are_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LinkConditions(**bad)  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(0, 60),
       loss=st.floats(0, 1), duplicate=st.floats(0, 1), reorder=st.floats(0, 1))
def test_faults_only_lose_duplicate_or_reorder(seed: int, n: int, loss: float, duplicate: float,
                                               reorder: float) -> None:
    conditions = LinkConditions(loss=loss, duplicate=duplicate, reorder=reorder)

    async def run() -> tuple[list[bytes], LinkStats]:
        a, b = MemoryNetwork(seed).pair(conditions)
        received = await send_and_collect(a, b, frames(n))
        await a.close()
        return received, a.stats

    received, stats = asyncio.run(run())
    assert set(received) <= set(frames(n))
    assert balanced(stats) and stats.frames_in_flight == 0
    if duplicate == 0:
        assert len(set(received)) == len(received)
    if loss == 0 and duplicate == 0:
        assert sorted(received) == frames(n)
