"""The transport conformance suite (tests/conformance.py) on the relay transport.

The suite's cases are point to point: two replicas, one link, a session at each end. A relay
is not such a link: it runs a session of its own with each device and stores and forwards
envelopes between them. So the suite runs here twice, in two shapes:

* :class:`TestRelayWebSocketLinks` runs the suite **unchanged** over the relay's WebSocket
  transport: a real :class:`~relay.server.RelayServer` on an ephemeral loopback port accepts
  each connection on ``/v1/sync`` (its handler, limits and WebSocket settings), but hands the
  server side of the link to the test instead of running the relay's own session on it. Both
  ends are the :class:`~transports.websocket.WebSocketLink` the relay and its clients use, so
  frames, their limits, ordering and every way a connection ends are held to the suite.
* :class:`TestRelayStoreAndForward` is the relay adapter: each suite case, under the same
  name, re-stated for two devices syncing **through** a running relay (sessions with the relay
  in turn, instead of one session with each other). Its link factory connects devices to the
  relay; faults are the suite's own (:func:`tests.conformance.open_link` wraps the devices'
  ends, so what a device sends to the relay is duplicated, reordered or cut off). A hostile
  frame's victim is the relay itself. ``test_every_suite_case_has_a_relay_version`` fails
  when the suite gains a case that has no relay version yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import random
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from crdt_sync import Replica
from crdt_sync.cli import main as cli_main
from crdt_sync.protocol import Session, SessionConfig
from crdt_sync.protocol.messages import (
    E_GOING_AWAY,
    E_MALFORMED,
    E_NORMAL,
    E_TOO_LARGE,
    ERROR_NAMES,
    MAX_FRAME,
    Ack,
    Envelopes,
    Hello,
    decode,
)
from crdt_sync.relay.config import RelayConfig
from crdt_sync.relay.server import RelayServer
from crdt_sync.transports.base import FrameLink
from crdt_sync.transports.driver import SessionOutcome, run_session
from crdt_sync.transports.websocket import WS_MAX_MESSAGE, WebSocketLink, connect
from tests.conformance import (
    BIG_BATCH,
    BIG_COUNT,
    Faults,
    HandDriven,
    LinkFactory,
    TransportConformance,
    open_link,
)
from tests.conftest import ReplicaFactory
from tests.relay_helpers import FAST as RELAY_TIMERS
from tests.relay_helpers import arrival, rejections, running_relay, synced_flag, wait_until
from tests.sync_helpers import (
    FAST,
    SPACE,
    WAIT,
    applied,
    duplicates,
    expected_code,
    fill,
    snapshot,
    wait_event,
)


@pytest.fixture(scope="module")
def big_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite's big template (``BIG_COUNT`` envelopes), made once for both classes here."""
    path = tmp_path_factory.mktemp("big") / "template"
    with Replica(path, seal_interval=0) as replica:
        fill(replica, "big", BIG_COUNT)
    return path


# -- the suite unchanged, over the relay's WebSocket endpoint ---------------------------------------
class HandoffRelay(RelayServer):
    """A relay whose ``/v1/sync`` hands each accepted link to the test (see the module doc)."""

    def __init__(self, config: RelayConfig) -> None:
        super().__init__(config)
        self.accepted: asyncio.Queue[tuple[WebSocketLink, asyncio.Event]] = asyncio.Queue()

    async def _serve(self, link: WebSocketLink, label: str) -> None:
        released = asyncio.Event()
        await self.accepted.put((link, released))
        async with asyncio.TaskGroup() as tg:  # the handler lives as long as the test's link
            waits = [tg.create_task(released.wait()), tg.create_task(self.stopping.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()


class WebSocketLinks:
    """Pairs (client end, relay end) of WebSocket links through a :class:`HandoffRelay`."""

    native_faults: frozenset[str] = frozenset()  # a TCP stream neither loses nor reorders
    max_frame: int | None = WS_MAX_MESSAGE

    def __init__(self, relay: HandoffRelay) -> None:
        self.relay = relay

    @asynccontextmanager
    async def connect(self, faults: Faults) -> AsyncIterator[tuple[FrameLink, FrameLink]]:
        assert not faults.active(), "the suite wraps every fault of this transport"
        client = await connect(self.relay.url, timeout=WAIT)
        async with asyncio.timeout(WAIT):
            server, released = await self.relay.accepted.get()
        try:
            yield client, server
        finally:
            await client.close()
            await server.close()
            released.set()


class TestRelayWebSocketLinks(TransportConformance):
    @pytest.fixture
    async def link_factory(self, tmp_path: Path) -> AsyncIterator[LinkFactory]:
        relay = HandoffRelay(RelayConfig(data=tmp_path / "relay", host="127.0.0.1", port=0))
        await relay.start()
        try:
            yield WebSocketLinks(relay)
        finally:
            await relay.stop(grace=WAIT)

    @pytest.fixture
    def big_template(self, big_data: Path) -> Path:
        return big_data

    async def test_peer_closing_right_after_its_last_frames(self, link_factory: LinkFactory,
                                                            open_replica: Any) -> None:
        """The suite's case, with one assertion adapted to a stream transport.

        The peer sends envelopes, its final ACK and BYE, and hangs up. On the memory link the
        hang-up is instant, so the answer to the envelopes fails and the peer's BYE ends the
        session (``by_peer``). A WebSocket closes by handshake: the answer still goes out, the
        peer's final ACK then completes the sync, and this side says BYE first. Both are the
        clean end the case is about; what must hold on every transport is unchanged: what the
        peer delivered is read, and the session ends synced with a normal close.
        """
        a, b = open_replica("a"), open_replica("b")
        fill(a, "a", 1)
        fill(b, "b", 1)
        async with open_link(link_factory) as (la, lb), asyncio.TaskGroup() as tg:
            task = tg.create_task(run_session(a, la, config=FAST, timeout=WAIT))
            peer = Session(b.sync_host, 0.0, FAST)
            held: list[bytes] = []
            for frame in peer.start():
                await lb.send(frame)
            async with asyncio.timeout(WAIT):  # until b holds a's envelope, answering nothing of it
                while b.version_vector(SPACE).get(a.device_id, 0) < 1:
                    for out in peer.receive(await lb.recv(), 0.0):
                        if isinstance(msg := decode(out), Envelopes):
                            held.append(out)
                        elif not isinstance(msg, Ack):
                            await lb.send(out)
            assert held, "b never had its envelope to send"
            for frame in [*held, *peer.close(0.0)]:
                await lb.send(frame)
            await lb.close()
        outcome = task.result()
        assert outcome.synced, outcome.closed
        assert outcome.closed is not None and outcome.closed.code == E_NORMAL, outcome.closed
        assert a.version_vector(SPACE) == b.version_vector(SPACE) == {a.device_id: 1, b.device_id: 1}


# -- the suite re-stated for store-and-forward ---------------------------------------------------
class RelayLinks:
    """Two devices' connections to one running relay (the relay adapter's link factory)."""

    native_faults: frozenset[str] = frozenset()
    max_frame: int | None = WS_MAX_MESSAGE

    def __init__(self, relay: RelayServer) -> None:
        self.relay = relay

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


async def one_session(replica: Replica, link: FrameLink, config: SessionConfig = FAST,
                      **kwargs: Any) -> SessionOutcome:
    async with asyncio.timeout(2 * WAIT):
        return await run_session(replica, link, config=config, timeout=WAIT, **kwargs)


async def through_relay(links: RelayLinks, a: Replica, b: Replica, faults: Faults | None = None,
                        config: SessionConfig = FAST, max_rounds: int = 4) -> list[SessionOutcome]:
    """What ``sync_over`` is point to point: a, then b, syncs with the relay, each on its own
    connection, round after round until both hold the same (bounded)."""
    outcomes = []
    for _ in range(max_rounds):
        async with open_link(links, faults) as (la, lb):
            outcomes.append(await one_session(a, la, config))
            outcomes.append(await one_session(b, lb, config))
        if a.version_vector(SPACE) == b.version_vector(SPACE):
            return outcomes
    raise AssertionError(f"not converged through the relay in {max_rounds} rounds: {outcomes}")


async def upload(links: RelayLinks, replica: Replica) -> None:
    """One session of ``replica`` with the relay, which then holds everything it has."""
    async with open_link(links) as (link, _):
        outcome = await one_session(replica, link)
    assert outcome.synced and outcome.ok, outcome.closed


class TestRelayStoreAndForward:
    """The suite's cases, by the same names, for two devices syncing through a relay."""

    @pytest.fixture
    async def relay(self, tmp_path: Path) -> AsyncIterator[RelayServer]:
        # The relay sends in the suite's batch size, as the device it stands in for would.
        timers = dataclasses.replace(RELAY_TIMERS, batch_count=BIG_BATCH.batch_count)
        async with running_relay(tmp_path / "relay", session_config=timers) as server:
            yield server

    @pytest.fixture
    def links(self, relay: RelayServer) -> RelayLinks:
        return RelayLinks(relay)

    # -- connect and sync ----------------------------------------------------------------------
    async def test_one_shot_sync_converges(self, links: RelayLinks, open_replica: ReplicaFactory) -> None:
        a, b = open_replica("a"), open_replica("b")
        fill(a, "a", 5)
        fill(b, "b", 3)
        a.space(SPACE).put("equipment", "shared", {"status": "ok"})
        b.space(SPACE).put("equipment", "shared", {"notes": "checked"})
        a.space("only-a").put("equipment", "x", {"n": 1})  # b does not keep it: must not reach b

        outcomes = await through_relay(links, a, b)
        assert len(outcomes) == 4  # a uploads, b takes a's and uploads, a takes b's
        for outcome in outcomes:
            assert outcome.synced and outcome.ok, outcome.closed
            assert outcome.peer == links.relay.device_id
        assert snapshot(a).key() == snapshot(b).key()
        assert len(snapshot(a).rows) == 5 + 3 + 1
        assert b.space(SPACE).get("equipment", "shared") == {"status": "ok", "notes": "checked"}
        assert "only-a" not in b.spaces()
        assert "only-a" in links.relay.store.spaces()  # the relay keeps every space it is given
        assert a.rejections() == [] and b.rejections() == []

    async def test_status_shows_what_the_peer_acknowledged(self, links: RelayLinks,
                                                           open_replica: ReplicaFactory) -> None:
        a, b = open_replica("a"), open_replica("b")
        fill(a, "a", 3)
        fill(b, "b", 2)
        await through_relay(links, a, b)
        vv = a.version_vector(SPACE)
        assert vv == b.version_vector(SPACE) and len(vv) == 2

        def peers(status: dict[str, Any]) -> dict[str, Any]:
            return {p["device"]: p["version_vector"] for p in status["spaces"][SPACE]["peers"]}

        relay = links.relay.device_id
        assert peers(a.status().to_dict()) == {relay: vv}  # a's peer is the relay, not b
        assert peers(b.status().to_dict()) == {relay: vv}
        assert a.status().spaces[SPACE].unacknowledged == 0
        a.close()  # the command opens the data directory itself
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli_main(["status", "--json", "--data", str(a.path)]) == 0
        assert peers(json.loads(out.getvalue())) == {relay: vv}

    # -- live push -------------------------------------------------------------------------------
    async def test_live_push_after_catch_up(self, links: RelayLinks, open_replica: ReplicaFactory) -> None:
        a, b = open_replica("a"), open_replica("b")
        fill(a, "a", 2)
        b.join(SPACE)
        stop = asyncio.Event()
        (a_ready, a_events), (b_ready, b_events) = synced_flag(SPACE), synced_flag(SPACE)
        async with open_link(links) as (la, lb), asyncio.timeout(4 * WAIT), asyncio.TaskGroup() as tg:
            ta = tg.create_task(run_session(a, la, live=True, stop=stop, config=FAST, on_event=a_events))
            tb = tg.create_task(run_session(b, lb, live=True, stop=stop, config=FAST, on_event=b_events))
            try:
                await wait_event(a_ready, "a to catch up")
                await wait_event(b_ready, "b to catch up (a's first edits came through the relay)")
                to_b, to_a = arrival(b, "pushed-a", SPACE), arrival(a, "pushed-b", SPACE)
                a.space(SPACE).put("equipment", "pushed-a", {"status": "new"})
                await wait_event(to_b, "a's live edit to reach b through the relay")
                b.space(SPACE).put("equipment", "pushed-b", {"status": "also"})
                await wait_event(to_a, "b's live edit to reach a through the relay")
            finally:
                stop.set()
        assert b.space(SPACE).get("equipment", "pushed-a") == {"status": "new"}
        assert a.space(SPACE).get("equipment", "pushed-b") == {"status": "also"}
        assert snapshot(a).key() == snapshot(b).key()
        for outcome in (ta.result(), tb.result()):
            assert outcome.closed is not None and outcome.closed.code in (E_NORMAL, E_GOING_AWAY)

    # -- interruption and resume -------------------------------------------------------------
    async def test_disconnect_mid_transfer_then_resume(self, links: RelayLinks, open_replica: ReplicaFactory,
                                                       big_data: Path, tmp_path: Path) -> None:
        shutil.copytree(big_data, tmp_path / "a")
        a, b = open_replica("a"), open_replica("b")
        fill(b, "b", 5)
        total, relay = BIG_COUNT, links.relay

        async with open_link(links, Faults(disconnect_after_frames=24)) as (la, _lb):
            first = await one_session(a, la, BIG_BATCH)
        got = relay.store.version_vector(SPACE).get(a.device_id, 0)
        acked = a.peer_version_vector(relay.device_id, SPACE).get(a.device_id, 0)
        assert not first.synced
        assert 0 < got < total, f"the drop did not fall mid-transfer ({got} of {total})"
        assert 0 < acked <= got  # what a saw acknowledged, the relay has committed

        sessions: list[Session] = []
        async with open_link(links) as (la, _lb):
            second = await one_session(a, la, BIG_BATCH, on_session=sessions.append)
        assert second.synced and second.ok
        assert sessions[0].envelopes_out == total - got, "resumed from the wrong place"
        assert relay.store.version_vector(SPACE) == {a.device_id: total}

        outcomes = await through_relay(links, b, a, config=BIG_BATCH)
        assert applied(outcomes[0]) == total and duplicates(outcomes[0]) == 0
        assert a.version_vector(SPACE) == b.version_vector(SPACE)
        assert len(a.space(SPACE).list()) == len(b.space(SPACE).list()) == total + 5
        assert b.space(SPACE).get("equipment", f"big-{total - 1}") == {"n": total - 1, "by": "big"}
        assert a.rejections() == [] and b.rejections() == []
        assert relay.store.store.rejections() == []

    async def test_peer_closing_right_after_its_last_frames(self, links: RelayLinks,
                                                            open_replica: ReplicaFactory) -> None:
        """A device sends its envelopes, its final ACK and BYE, and hangs up at once: the relay
        cannot answer, but must still store what the device delivered."""
        a, b = open_replica("a"), open_replica("b")
        fill(a, "a", 1)
        fill(b, "b", 1)
        await upload(links, a)  # the relay holds a's envelope
        relay = links.relay
        async with open_link(links) as (_la, lb):
            peer = Session(b.sync_host, 0.0, FAST)
            held: list[bytes] = []
            for frame in peer.start():
                await lb.send(frame)
            async with asyncio.timeout(WAIT):  # until b holds a's envelope, answering nothing of it
                while b.version_vector(SPACE).get(a.device_id, 0) < 1:
                    for out in peer.receive(await lb.recv(), 0.0):
                        if isinstance(msg := decode(out), Envelopes):
                            held.append(out)
                        elif not isinstance(msg, Ack):
                            await lb.send(out)
            assert held, "b never had its envelope to send"
            for frame in [*held, *peer.close(0.0)]:
                await lb.send(frame)
            await lb.close()

        async def stored() -> bool:
            return relay.store.version_vector(SPACE).get(b.device_id, 0) == 1

        await wait_until(stored, "the relay to store what b sent before hanging up")
        async with open_link(links) as (la, _lb):
            last = await one_session(a, la)
        assert last.synced
        assert a.version_vector(SPACE) == b.version_vector(SPACE) == {a.device_id: 1, b.device_id: 1}

    # -- duplication and reordering ----------------------------------------------------------
    @pytest.mark.parametrize("faults", [Faults(duplicate=0.3, seed=1), Faults(reorder=0.3, seed=2),
                                        Faults(duplicate=0.25, reorder=0.25, seed=3)],
                             ids=["duplicate", "reorder", "both"])
    async def test_duplicated_and_reordered_frames_converge(self, links: RelayLinks,
                                                            open_replica: ReplicaFactory,
                                                            faults: Faults) -> None:
        a, b = open_replica("a", seal_interval=0), open_replica("b", seal_interval=0)
        fill(a, "a", 40)
        fill(b, "b", 30)
        with a.space(SPACE).transaction() as tx:
            tx.entity("equipment", "a-0").text("notes").append("from a")
        with b.space(SPACE).transaction() as tx:
            tx.entity("equipment", "a-0").list("parts").append("from b")
        config = dataclasses.replace(FAST, batch_count=4)  # many frames to disturb

        await through_relay(links, a, b, faults, config=config)
        assert snapshot(a).key() == snapshot(b).key()
        assert a.version_vector(SPACE) == {a.device_id: 41, b.device_id: 31}
        assert links.relay.store.version_vector(SPACE) == a.version_vector(SPACE)
        assert a.space(SPACE).get("equipment", "a-0") == {"n": 0, "by": "a", "notes": "from a",
                                                        "parts": ["from b"]}
        assert a.rejections() == [] and b.rejections() == []
        assert links.relay.store.store.rejections() == []

    # -- hostile frames: the relay is the victim ----------------------------------------------
    @pytest.mark.parametrize("stage", ["before-handshake", "in-sync"])
    async def test_oversized_frame_is_refused(self, links: RelayLinks, open_replica: ReplicaFactory,
                                              stage: str) -> None:
        frame = b"\x5a" + (MAX_FRAME + 1).to_bytes(4, "big") + bytes(MAX_FRAME + 1)  # a CBOR bstr
        assert expected_code(frame) == E_TOO_LARGE
        assert links.max_frame is not None and len(frame) < links.max_frame  # reaches the session
        await self._hostile_frame(open_replica, links, frame, stage, E_TOO_LARGE)

    @pytest.mark.parametrize("garbage", ["random", "empty", "truncated"])
    @pytest.mark.parametrize("stage", ["before-handshake", "in-sync"])
    async def test_garbage_frame_is_refused(self, links: RelayLinks, open_replica: ReplicaFactory,
                                            garbage: str, stage: str) -> None:
        frame = {"random": random.Random(7).randbytes(300), "empty": b"",
                 "truncated": bytes.fromhex("8600010158208a88e3dd7409f195")}[garbage]
        assert expected_code(frame) == E_MALFORMED
        await self._hostile_frame(open_replica, links, frame, stage, E_MALFORMED)

    async def _hostile_frame(self, open_replica: ReplicaFactory, links: RelayLinks, frame: bytes,
                             stage: str, code: int) -> None:
        relay = links.relay
        device, attacker = open_replica("device"), open_replica("attacker")
        fill(device, "v", 3)
        fill(attacker, "x", 1)
        await upload(links, device)
        before = relay.store.version_vector(SPACE)
        async with open_link(links) as (lx, _lb):
            peer = HandDriven(attacker, lx)
            if stage == "before-handshake":
                async with asyncio.timeout(WAIT):
                    assert isinstance(decode(await lx.recv()), Hello)
            else:
                await peer.authenticate()
            await lx.send(frame)
            error = await peer.error_reply()
        assert error.code == code, error
        assert await rejections(relay.url, ERROR_NAMES[code]) == 1
        assert relay.store.version_vector(SPACE) == before  # nothing of the attacker's was taken
        assert relay.store.store.rejections() == []  # refused as a frame, before any envelope
        async with open_link(links) as (la, _lb):  # and the relay still serves devices
            again = await one_session(device, la)
        assert again.synced and again.ok


def test_every_suite_case_has_a_relay_version() -> None:
    suite = {name for name in dir(TransportConformance) if name.startswith("test_")}
    adapted = {name for name in dir(TestRelayStoreAndForward) if name.startswith("test_")}
    assert suite <= adapted, f"suite cases without a store-and-forward version: {sorted(suite - adapted)}"
