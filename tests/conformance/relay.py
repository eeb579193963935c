"""The relay's harnesses: its WebSocket links point to point, and store-and-forward through it.

The suite's direct cases are point to point: two replicas, one link, a session at each end.
A relay is not such a link: it runs a session of its own with each device and stores and
forwards envelopes between them. So the relay takes part in two shapes:

* :class:`WebSocketHarness` is the relay's WebSocket transport as a link: a real
  :class:`~crdt_sync.relay.server.RelayServer` on an ephemeral loopback port accepts each
  connection on ``/v1/sync`` (its handler, limits and WebSocket settings), but hands the server
  side of the link to the test instead of running the relay's own session on it. Both ends are
  the WebSocket link the relay and its clients use, so frames, their limits, ordering and every
  way a connection ends are held to the suite.
* :class:`RelayHubHarness` is two devices syncing **through** a running relay: ``connect``
  gives each device its own connection to the relay, ``sync`` runs sessions with the relay in
  turn until both hold the same, and ``hub`` is the relay. Faults are the suite's own
  (:func:`~tests.conformance.harness.open_link` wraps the devices' ends, so what a device
  sends to the relay is duplicated, reordered or cut off).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from crdt_sync import Replica
from crdt_sync.protocol import SessionConfig
from crdt_sync.relay.config import RelayConfig
from crdt_sync.relay.server import RelayServer
from crdt_sync.transports.base import FrameLink
from crdt_sync.transports.driver import SessionOutcome, run_session
from crdt_sync.transports.websocket import WS_MAX_MESSAGE, WebSocketLink, connect
from tests.conformance.harness import BIG_BATCH, Faults, PointToPoint, common_vvs, open_link
from tests.relay_helpers import FAST as RELAY_TIMERS
from tests.relay_helpers import running_relay
from tests.sync_helpers import FAST, WAIT


# -- the relay's WebSocket links, point to point ---------------------------------------------------
class HandoffRelay(RelayServer):
    """A relay whose ``/v1/sync`` hands each accepted link to the test (see the module doc).

    It overrides the relay's per-connection handler, ``RelayServer._serve(link, label)``: if
    that changes, this is the one place to follow it.
    """

    def __init__(self, config: RelayConfig) -> None:
        super().__init__(config)
        self.accepted: Accepted = asyncio.Queue()

    async def _serve(self, link: WebSocketLink, label: str) -> None:
        released = asyncio.Event()
        await self.accepted.put((link, released))
        async with asyncio.TaskGroup() as tg:  # the handler lives as long as the test's link
            waits = [tg.create_task(released.wait()), tg.create_task(self.stopping.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()


#: what a handoff server gives the test for each accepted link: its server end, and the
#: event that releases the handler once the test is done with it
Accepted = asyncio.Queue[tuple[WebSocketLink, asyncio.Event]]


class WebSocketHarness(PointToPoint):
    """Pairs (client end, server end) of WebSocket links to a handoff server at ``url``
    (:class:`HandoffRelay` here; the LAN listener's in ``tests.conformance.lan``)."""

    name = "relay-websocket"
    native_faults: frozenset[str] = frozenset()  # a TCP stream neither loses nor reorders
    max_frame: int | None = WS_MAX_MESSAGE
    instant_hangup = False  # a WebSocket closes by handshake

    def __init__(self, url: str, accepted: Accepted) -> None:
        self.url = url
        self.accepted = accepted

    @asynccontextmanager
    async def connect(self, faults: Faults) -> AsyncIterator[tuple[FrameLink, FrameLink]]:
        assert not faults.active(), "the suite wraps every fault of this transport"
        client = await connect(self.url, timeout=WAIT)
        async with asyncio.timeout(WAIT):
            server, released = await self.accepted.get()
        try:
            yield client, server
        finally:
            await client.close()
            await server.close()
            released.set()


@asynccontextmanager
async def websocket_harness(data: Path) -> AsyncIterator[WebSocketHarness]:
    relay = HandoffRelay(RelayConfig(data=data / "relay", host="127.0.0.1", port=0))
    await relay.start()
    try:
        yield WebSocketHarness(relay.url, relay.accepted)
    finally:
        await relay.stop(grace=WAIT)


# -- store and forward through a running relay ------------------------------------------------------
class RelayHub:
    """A running relay as the suite's :class:`~tests.conformance.harness.Hub`."""

    def __init__(self, relay: RelayServer) -> None:
        self.relay = relay

    @property
    def device_id(self) -> str:
        return self.relay.device_id

    def spaces(self) -> list[str]:
        return self.relay.store.spaces()

    def version_vector(self, space: str) -> dict[str, int]:
        return self.relay.store.version_vector(space)

    def rejections(self) -> list[Any]:
        return list(self.relay.store.store.rejections())


async def one_session(replica: Replica, link: FrameLink, config: SessionConfig = FAST,
                      **kwargs: Any) -> SessionOutcome:
    """One one-shot session of ``replica`` on ``link``, under a deadline."""
    async with asyncio.timeout(2 * WAIT):
        return await run_session(replica, link, config=config, timeout=WAIT, **kwargs)


class RelayHubHarness:
    """Two devices' connections to one running relay."""

    name = "relay-store-and-forward"
    native_faults: frozenset[str] = frozenset()
    max_frame: int | None = WS_MAX_MESSAGE
    instant_hangup = False

    def __init__(self, relay: RelayServer) -> None:
        self.relay = relay
        self.hub = RelayHub(relay)

    @asynccontextmanager
    async def connect(self, faults: Faults) -> AsyncIterator[tuple[FrameLink, FrameLink]]:
        assert not faults.active(), "the suite wraps every fault of this transport"
        a = await connect(self.relay.url, timeout=WAIT)
        try:
            b = await connect(self.relay.url, timeout=WAIT)
        except BaseException:
            await a.close()
            raise
        try:
            yield a, b
        finally:
            await a.close()
            await b.close()

    async def sync(self, a: Replica, b: Replica, *, faults: Faults | None = None,
                   config: SessionConfig = FAST, max_rounds: int = 4) -> list[SessionOutcome]:
        """What ``sync_over`` is point to point: a, then b, syncs with the relay, each on its own
        connection, round after round until both hold the same of every space they both
        keep (bounded)."""
        outcomes = []
        for _ in range(max_rounds):
            async with open_link(self, faults) as (la, lb):
                outcomes.append(await one_session(a, la, config))
                outcomes.append(await one_session(b, lb, config))
            mine, theirs = common_vvs(a, b)
            if mine == theirs:
                return outcomes
        raise AssertionError(f"not converged through the relay in {max_rounds} rounds: {outcomes}")

    async def upload(self, replica: Replica) -> None:
        """One session of ``replica`` with the relay, which then holds everything it has."""
        async with open_link(self) as (link, _):
            outcome = await one_session(replica, link)
        assert outcome.synced and outcome.ok, outcome.closed


@asynccontextmanager
async def relay_hub_harness(data: Path) -> AsyncIterator[RelayHubHarness]:
    # The relay sends in the suite's batch size, as the device it stands in for would. It
    # enforces membership, as a relay does by default: the cases sync real spaces (share()).
    timers = dataclasses.replace(RELAY_TIMERS, batch_count=BIG_BATCH.batch_count)
    async with running_relay(data / "relay", session_config=timers) as server:
        yield RelayHubHarness(server)
