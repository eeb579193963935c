"""The relay's rate limit is flow control (relay/pacing.py): a device over its rate is paced
by ACKs held back, not refused; a device that ignores the window is refused with ERROR 10
before anything of the offending frame is stored; the budgets stay bounded.

The in-process relay tests run real sockets on loopback and real SQLite; the unit tests drive
the pacer with an injected clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from crdt_sync.protocol import Session
from crdt_sync.protocol.messages import E_LIMIT, E_NORMAL, Ack, Error, encode
from crdt_sync.protocol.session import RELIABLE_LINK
from crdt_sync.relay.pacing import Flow, Pacer, TokenBucket, ack_batch
from tests.relay_envelopes import EnvelopeHost, exchange, identity, own_space
from tests.relay_helpers import (
    FAST,
    RawPeer,
    bystanders,
    rejections,
    running_relay,
    sample,
    scrape,
    still_serves,
    wait_until,
)
from tests.sync_helpers import SPACE


# -- through a relay -----------------------------------------------------------------------------
async def test_a_device_over_its_rate_is_paced_not_refused(tmp_path: Path) -> None:
    # 50 envelopes/s with bursts of 500: 600 envelopes put the device 100 in debt (2 s).
    async with running_relay(tmp_path / "relay", rate_envelopes=50.0) as relay:
        sp, flood = own_space(identity(), 600, "flood")
        eager = EnvelopeHost(sp.creator, *flood)
        async with bystanders(relay.url) as check:
            outcome = await exchange(eager, relay.url, config=RELIABLE_LINK)  # as relay clients do
            assert outcome.synced and outcome.closed is not None and outcome.closed.code == E_NORMAL
            assert relay.store.version_vector(sp.space)[eager.device_id] == 600
            samples = await scrape(relay.url)
            assert sample(samples, "crdt_relay_paced_seconds_count") >= 1  # its ACKs were held
            assert sample(samples, "crdt_relay_read_stalls_total") == 0  # one window: never stalled
            assert await rejections(relay.url, "flow-control") == 0
            await check("after-flood")  # budgets are per device: the others were not paced
            await still_serves(relay.url, "probe")


async def test_a_device_that_ignores_the_window_gets_error_10_and_nothing_of_that_frame_is_kept(
        tmp_path: Path) -> None:
    # 1 envelope/s with bursts of 10, batches of 2: five batches spend the burst, every later
    # one adds 2 s of debt, so the relay holds their ACKs (and the debt stays below the 10 s
    # at which it would stop reading), while the device, with a window of 8 instead of the
    # protocol's 4, sends on.
    async with running_relay(tmp_path / "relay", rate_envelopes=1.0) as relay:
        sp, envelopes = own_space(identity(), 200, "g")
        device = EnvelopeHost(sp.creator, *envelopes)
        greedy = dataclasses.replace(FAST, window=8, batch_count=2)
        async with bystanders(relay.url) as check:
            async with RawPeer.open(relay.url, device, config=greedy) as raw:
                error = await raw.converse(lambda m: isinstance(m, Error))
            assert isinstance(error, Error) and error.code == E_LIMIT
            assert "ignored flow control" in error.message and "the window is 4" in error.message
            assert raw.received[-1] is error
            stored = relay.store.version_vector(sp.space)[device.device_id]
            assert 8 <= stored < 200  # at least its first 4 batches; the refused one not at all
            # The ACKs held for the debt went out before the ERROR: the device knows what is stored.
            assert raw.session is not None and raw.session.envelopes_acked == stored
            assert await rejections(relay.url, "flow-control") == 1
            await check("after-greedy")
            await still_serves(relay.url, "probe")


async def test_a_device_deep_in_debt_is_not_read_until_it_is_back_under_the_cap(
        tmp_path: Path) -> None:
    # Held ACKs stop each space at its window; many spaces at once would still run up a
    # debt of a window each. Past 10 s of debt the relay stops reading the device instead.
    async with running_relay(tmp_path / "relay", rate_envelopes=1.0) as relay:  # bursts of 10
        wide = identity()
        made = [own_space(wide, 100, f"wide-{i}") for i in range(4)]
        spaces = [sp.space for sp, _ in made]
        device = EnvelopeHost(wide, *(e for _, envelopes in made for e in envelopes))
        config = dataclasses.replace(FAST, batch_count=5)  # windows of 20 envelopes per space
        syncing = asyncio.ensure_future(exchange(device, relay.url, config=config))
        try:
            async def stalled() -> bool:
                return sample(await scrape(relay.url), "crdt_relay_read_stalls_total") >= 1

            await wait_until(stalled, "the relay to stop reading the device")
            stored = sum(relay.store.version_vector(s).get(device.device_id, 0) for s in spaces)
            # the burst (10), 10 s of debt (10) and the frame that crossed it, not 4 windows (80)
            assert 20 <= stored <= 30
            assert not syncing.done()
        finally:
            syncing.cancel()
            await asyncio.wait([syncing])


async def test_stopping_releases_held_acks(tmp_path: Path) -> None:
    # A relay told to stop lets the ACKs it holds go before its going-away: the envelopes
    # are committed, and the device learns that they are stored.
    async with running_relay(tmp_path / "relay", rate_envelopes=1.0) as relay:  # bursts of 10
        sp, envelopes = own_space(identity(), 18, "p")  # batches of 2: five in the burst, four
        device = EnvelopeHost(sp.creator, *envelopes)  # more held (2 s of debt each)
        config = dataclasses.replace(RELIABLE_LINK, batch_count=2)
        sessions: list[Session] = []
        syncing = asyncio.ensure_future(exchange(device, relay.url, config=config,
                                                 on_session=sessions.append))

        async def stored() -> bool:
            return relay.store.version_vector(sp.space).get(device.device_id, 0) == 18

        await wait_until(stored, "the relay to store every batch")
        assert sessions[0].envelopes_acked < 18  # the last ACKs are held
        await relay.stop()
        outcome = await syncing
        # The released ACKs reached it before the relay's going-away: it finished the sync.
        assert outcome.synced and sessions[0].envelopes_acked == 18


# -- the pacer ----------------------------------------------------------------------------------
def test_a_bucket_goes_into_debt_and_says_for_how_long() -> None:
    bucket = TokenBucket(rate=10.0, burst=100.0, now=0.0)
    assert bucket.charge(60, 0.0) == 0.0
    assert bucket.charge(60, 0.0) == pytest.approx(2.0)  # 20 short at 10/s
    assert bucket.charge(0, 1.0) == pytest.approx(1.0)
    assert bucket.full_at() == pytest.approx(12.0)
    assert bucket.take(50, 12.0) and not bucket.take(60, 12.0)  # full again; take as before


@pytest.mark.parametrize("batch", [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32, 2**40])
def test_the_batch_of_an_ack_frame_is_read_from_its_head(batch: int) -> None:
    for space in (0, 7, 300):
        assert ack_batch(encode(Ack(space, batch, [(0, 5), (bytes(32), 2)]))) == batch


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ack(batch: int) -> bytes:
    return encode(Ack(0, batch, []))


async def test_the_window_counts_batches_of_new_envelopes_until_their_ack_leaves() -> None:
    pacer = Pacer(10.0, 1e9, window=4, clock=Clock())
    flow = pacer.flow()
    for _ in range(4):
        assert flow.check(SPACE) is None
        assert flow.charge("dev", 1, 100) is None
        flow.stored(SPACE, 1)
    assert flow.check(SPACE) is not None  # four unanswered: a fifth ignores the window
    assert flow.check("other") is None  # per space
    flow.answered([ack(0)])  # the ACK of a HAVE answers no batch
    assert flow.check(SPACE) is not None
    flow.answered([ack(1)])
    assert flow.check(SPACE) is None
    flow.stored(SPACE, 0)  # all duplicates: a batch the sender may have retired early
    assert flow.check(SPACE) is None
    flow.close()


async def test_held_acks_wait_for_the_debt_and_the_commit() -> None:
    clock = Clock()
    pacer = Pacer(10.0, 1e9, window=4, clock=clock)
    flow = pacer.flow()
    loop = asyncio.get_running_loop()
    assert flow.hold(None) is None  # no debt: nothing held
    flow.charge("dev", 100, 10)  # the burst exactly: still not in debt
    assert flow.hold(None) is None
    flow.charge("dev", 900, 10)  # 90 s of debt
    commit: asyncio.Future[None] = loop.create_future()
    held = flow.hold(commit)
    assert held is not None and held is not commit
    assert flow.hold(commit) is held  # one hold per charge and commit
    commit.set_result(None)
    await asyncio.sleep(0)  # the commit's callbacks run
    assert not held.done()  # committed, but the debt is not paid
    flow.release()  # (what a stopping relay does; else the timer, in 90 s)
    assert held.done() and held.exception() is None

    flow.charge("dev", 900, 10)  # in debt again; now the commit is the one pending
    failing: asyncio.Future[None] = loop.create_future()
    held = flow.hold(failing)
    assert held is not None
    pacer.release()
    assert not held.done()
    failing.set_exception(OSError("disk full"))
    await asyncio.sleep(0)
    assert held.done() and isinstance(held.exception(), OSError)  # the gate sees the failure
    assert flow.hold(None) is None  # a released pacer holds nothing more
    clock.now = 100.0
    flow.close()


def test_budgets_outlive_connections_only_until_refilled() -> None:
    clock = Clock()
    pacer = Pacer(10.0, 1e9, window=4, clock=clock)
    first: Flow = pacer.flow()
    first.charge("a", 100, 1)  # a's bucket is empty now
    first.close()
    again = pacer.flow()
    again.charge("a", 1, 1)
    assert pacer.budgets() == 1  # reconnecting found the same, empty budget: no new burst
    again.close()
    most = 0
    for i in range(300):  # a stream of devices, one second apart, each gone after one frame
        clock.now = 20.0 + i
        flow = pacer.flow()
        flow.charge(f"d{i}", 1, 1)
        flow.close()
        most = max(most, pacer.budgets())
    assert most <= 65  # refilled budgets of devices that left are forgotten
