"""The relay as a real process: SIGKILL in the middle of a large transfer loses no
acknowledged envelope, and the transfer resumes where it stopped; SIGTERM ends sessions with
going-away, exits 0, and live peers reconnect with backoff when a relay is back."""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from crdt_sync import Replica
from crdt_sync.protocol import Authenticated, Closed, Event, Session, SessionConfig, SpaceSynced
from crdt_sync.protocol.messages import E_GOING_AWAY, Ack
from crdt_sync.transports.base import FrameLink
from crdt_sync.transports.driver import run_session
from crdt_sync.transports.relay import Backoff, run_peer
from crdt_sync.transports.websocket import connect
from tests.conftest import ReplicaFactory
from tests.helpers import SHARED, share
from tests.relay_helpers import log_events, relay_process, sample, scrape, sync_once, wait_until
from tests.sync_helpers import WAIT, applied, duplicates, fill, opened, snapshot, wait_event

#: Envelopes device A holds: one per entity, sealed one by one.
BIG = 2000
#: Small batches make the transfer ~125 round trips, each ACKed after an fsync'd commit.
SMALL_BATCHES = SessionConfig(batch_count=16, handshake_timeout=5.0, resend_interval=0.2,
                              ack_timeout=1.0, ping_interval=1.0, dead_after=10.0)
KILL_AFTER_ACKS = 20  # of ~125 batches: well inside the transfer


@pytest.fixture(scope="module")
def big_device(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two closed data directories, copied per test: ``a``, which made the space ``big``, let
    ``b`` in (``SHARED`` envelopes) and then wrote ``BIG`` envelopes, and ``b``, which holds
    only the ``SHARED`` ones."""
    path = tmp_path_factory.mktemp("big")
    with Replica(path / "a", seal_interval=0) as a, Replica(path / "b", seal_interval=0) as b:
        fill(a, "a", BIG, share(a, b, name="big"))
    return path


class TapLink:
    """A :class:`FrameLink` that shows each received frame to ``on_frame`` before the session."""

    def __init__(self, inner: FrameLink, on_frame: Callable[[bytes], None]) -> None:
        self._inner, self._on_frame = inner, on_frame

    @property
    def label(self) -> str:
        return self._inner.label

    async def send(self, frame: bytes) -> None:
        await self._inner.send(frame)

    async def recv(self) -> bytes:
        frame = await self._inner.recv()
        self._on_frame(frame)
        return frame

    async def close(self) -> None:
        await self._inner.close()


async def test_sigkill_mid_transfer_loses_no_acknowledged_envelope(
        tmp_path: Path, big_device: Path, open_replica: ReplicaFactory) -> None:
    for name in ("a", "b"):
        shutil.copytree(big_device / name, tmp_path / name)
    a, b = open_replica("a"), open_replica("b")
    space, chain = a.space_id("big"), SHARED + BIG  # a's chain: b holds its first SHARED
    data = tmp_path / "relay"

    async with relay_process(data) as relay:
        acks = 0
        sessions: list[Session] = []

        def kill_after_some_acks(frame: bytes) -> None:
            nonlocal acks
            msg = opened(sessions[0], frame)  # SEALED: read through A's link
            if isinstance(msg, Ack) and msg.batch > 0:
                acks += 1
                if acks == KILL_AFTER_ACKS:
                    relay.signal(signal.SIGKILL)  # before the session even sees this ACK

        link = TapLink(await connect(relay.url), kill_after_some_acks)
        async with asyncio.timeout(3 * WAIT):
            interrupted = await run_session(a, link, config=SMALL_BATCHES, timeout=2 * WAIT,
                                            on_session=sessions.append)
        assert await relay.exit_code() == -signal.SIGKILL
        # >=: ACKs the relay sent before the signal landed may still be read (the driver reads
        # ahead of the session into a bounded inbox, so the tap sees them).
        assert acks >= KILL_AFTER_ACKS and not interrupted.synced
        assert interrupted.closed is not None and interrupted.closed.by_peer  # the link dropped

    # What A's session saw acknowledged, as A persisted it when the ACKs arrived.
    acked = a.peer_version_vector(relay.device_id, space).get(a.device_id, 0)
    assert SMALL_BATCHES.batch_count * KILL_AFTER_ACKS <= acked < chain, acked

    async with relay_process(data) as relay:  # same data directory, a new port
        assert relay.device_id == a.status().spaces[space].peers[0].device
        first = await sync_once(b, relay.url)
        assert first.synced
        had = b.version_vector(space).get(a.device_id, 0)
        assert had >= acked, f"the relay lost acknowledged envelopes: it has {had} of {acked}"
        written = had - SHARED  # of a's entities: envelope SHARED + k holds a-(k - 1)
        assert b.space(space).get("equipment", f"a-{written - 1}") == {"n": written - 1, "by": "a"}
        assert b.rejections() == []

        resumed = await sync_once(a, relay.url)
        assert resumed.synced and resumed.ok
        samples = await scrape(relay.url)
        assert sample(samples, "crdt_relay_envelopes_in_total") == chain - had  # from where it stopped

        last = await sync_once(b, relay.url)
        assert last.synced and applied(last) == chain - had and duplicates(last) == 0
    assert b.version_vector(space) == a.version_vector(space) == {a.device_id: chain}
    assert snapshot(a, space).key() == snapshot(b, space).key()
    assert b.rejections() == []


# -- SIGTERM ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordingBackoff(Backoff):
    """The client's backoff, recording the attempt number of every wait it is asked for."""

    attempts: list[int] = field(default_factory=list)

    def delay(self, attempt: int, rng: random.Random) -> float:
        self.attempts.append(attempt)
        return super().delay(attempt, rng)


def test_backoff_is_exponential_with_full_jitter() -> None:
    backoff, rng = Backoff(base=0.5, cap=30.0), random.Random(3)
    for attempt in range(12):
        bound = min(30.0, 0.5 * 2 ** attempt)
        delays = [backoff.delay(attempt, rng) for _ in range(400)]
        assert all(0 <= d <= bound for d in delays)
        assert max(delays) > 0.9 * bound and min(delays) < 0.1 * bound  # spread over all of it
    assert backoff.delay(10**6, rng) <= 30.0  # huge attempt numbers stay capped


async def test_sigterm_goes_away_and_peers_reconnect_with_backoff(tmp_path: Path,
                                                                  open_replica: ReplicaFactory) -> None:
    a, b = open_replica("a"), open_replica("b")
    space = share(a, b)
    fill(a, "a", 3, space)
    data = tmp_path / "relay"
    events: list[Event] = []
    syncs = [asyncio.Event(), asyncio.Event()]  # the first and the second session caught up
    went_away = asyncio.Event()

    def on_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, SpaceSynced):  # of the latest session (live edits re-sync it)
            syncs[sum(isinstance(e, Authenticated) for e in events) - 1].set()
        elif isinstance(event, Closed):
            went_away.set()

    backoff = RecordingBackoff(base=0.05, cap=0.4)
    stop = asyncio.Event()
    with log_events("crdt_sync.peer") as records:
        async with relay_process(data) as first:
            peer = asyncio.create_task(run_peer(a, first.url, stop, backoff=backoff, rng=random.Random(5),
                                                on_event=on_event))
            try:
                await wait_event(syncs[0], "the peer to catch up with the relay")
                first.signal(signal.SIGTERM)
                assert await first.exit_code() == 0
                await first.wait_log("relay.stopped")
                await wait_event(went_away, "the peer to see its session end")
                closed = [e for e in events if isinstance(e, Closed)]
                assert closed == [Closed(E_GOING_AWAY, "going-away", by_peer=True)]

                async def retried_twice() -> bool:
                    return sum(r.getMessage() == "peer.unreachable" for r in records) >= 2

                await wait_until(retried_twice, "the peer to retry while the relay is down")
                async with relay_process(data, port=first.port) as second:  # the relay is back
                    await wait_event(syncs[1], "the peer to reconnect and catch up")
                    a.space(space).put("equipment", "after-restart", {"status": "ok"})

                    async def stored() -> bool:
                        return sample(await scrape(second.url), "crdt_relay_envelopes_in_total") >= 1

                    await wait_until(stored, "the live edit to reach the restarted relay")
                    pulled = await sync_once(b, second.url)
                    assert pulled.synced
                    stop.set()
                    async with asyncio.timeout(WAIT):
                        sessions = await peer
            finally:
                stop.set()
                if not peer.done():
                    peer.cancel()
    assert sessions == 2
    # Reset after a session that authenticated, then growing while the relay was down.
    n = len(backoff.attempts)
    assert n >= 3 and backoff.attempts == list(range(n)), backoff.attempts
    # SIGTERM committed what was in flight: the restarted relay served a's first edits to b.
    assert b.space(space).get("equipment", "a-2") == {"n": 2, "by": "a"}
    assert b.space(space).get("equipment", "after-restart") == {"status": "ok"}
    assert snapshot(a, space).key() == snapshot(b, space).key()
