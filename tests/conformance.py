"""The transport conformance suite: every transport (memory, relay, LAN, BLE) runs it.

A transport's test module subclasses :class:`TransportConformance` and provides a
``link_factory`` fixture returning a :class:`LinkFactory` (one connected pair of
:class:`~transports.base.FrameLink` ends per ``connect``)::

    class TestLanTransport(TransportConformance):
        @pytest.fixture
        def link_factory(self) -> LinkFactory:
            return LanLinks(...)

This module is not collected on its own (its name does not start with ``test_``). The cases
run real replicas on real data directories through :func:`transports.driver.run_session`
over the transport under test.

Faults (duplication, reordering, a drop after N frames) are injected by the transport itself
where it can (``LinkFactory.native_faults``, e.g. the memory transport's link conditions);
the others are injected by :class:`FaultyLink`, a seeded wrapper around any ``FrameLink``, so
every case runs on every transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import random
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from crdt_sync import Change, Replica
from crdt_sync.cli import main as cli_main
from crdt_sync.protocol import Authenticated, Event, Session, SessionConfig, SpaceSynced
from crdt_sync.protocol.messages import (
    E_GOING_AWAY,
    E_MALFORMED,
    E_NORMAL,
    E_TOO_LARGE,
    MAX_FRAME,
    Ack,
    Envelopes,
    Error,
    Have,
    Hello,
    decode,
)
from crdt_sync.transports.base import FrameLink, LinkClosed, TransportError
from crdt_sync.transports.driver import run_session
from tests.sync_helpers import (
    FAST,
    SPACE,
    WAIT,
    applied,
    duplicates,
    expected_code,
    fill,
    snapshot,
    sync_over,
    wait_event,
)

#: Envelopes in the interrupted transfer: enough for dozens of batches at ``BIG_BATCH``.
BIG_COUNT = 2000
#: Clean links lose nothing: long timers, so a loaded machine adds no resends to count.
BIG_BATCH = SessionConfig(batch_count=64, handshake_timeout=WAIT, resend_interval=2.0, ack_timeout=5.0)


# -- the interface a transport provides --------------------------------------------------------
@dataclass(frozen=True)
class Faults:
    """Faults to inject into one link. The defaults are a clean link.

    Attributes:
        duplicate: probability that a frame is delivered twice.
        reorder: probability that a frame is held back and delivered after the next one.
        disconnect_after_frames: drop the link once this many frames were sent (both ways).
        seed: seeds every fault decision.
    """

    duplicate: float = 0.0
    reorder: float = 0.0
    disconnect_after_frames: int | None = None
    seed: int = 0

    def active(self) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(self)
                         if f.name != "seed" and getattr(self, f.name) != f.default)


class LinkFactory(Protocol):
    """Connects pairs of frame links of one transport."""

    @property
    def native_faults(self) -> frozenset[str]:
        """The :class:`Faults` fields the transport injects itself; the suite wraps the rest."""
        ...

    @property
    def max_frame(self) -> int | None:
        """The largest frame the transport carries, or None if it carries any size."""
        ...

    def connect(self, faults: Faults) -> AbstractAsyncContextManager[tuple[FrameLink, FrameLink]]:
        """A connected pair ``(a, b)`` with the native part of ``faults``; closed on exit."""
        ...


# -- faults for transports that cannot inject them ------------------------------------------
class _Chaos:
    """State shared by both ends of a wrapped pair: the random source and the frame count."""

    def __init__(self, faults: Faults, ends: tuple[FrameLink, FrameLink]) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.ends = ends
        self.frames = 0

    async def sent_one(self) -> None:
        self.frames += 1
        limit = self.faults.disconnect_after_frames
        if limit is not None and self.frames >= limit:
            for end in self.ends:
                await end.close()


class FaultyLink:
    """A :class:`FrameLink` that duplicates, reorders and drops the link on top of another.

    Every ``send`` counts as one frame towards ``disconnect_after_frames``, as the memory
    transport counts them.
    """

    def __init__(self, inner: FrameLink, chaos: _Chaos) -> None:
        self._inner, self._chaos = inner, chaos
        self._held: bytes | None = None

    @property
    def label(self) -> str:
        return f"faulty({self._inner.label})"

    async def send(self, frame: bytes) -> None:
        faults, rng = self._chaos.faults, self._chaos.rng
        if faults.reorder and self._held is None and rng.random() < faults.reorder:
            self._held = frame  # goes out right after the next frame (or never, if none follows)
        else:
            await self._put(frame)
            if self._held is not None:
                held, self._held = self._held, None
                await self._put(held)
        await self._chaos.sent_one()

    async def _put(self, frame: bytes) -> None:
        await self._inner.send(frame)
        if self._chaos.faults.duplicate and self._chaos.rng.random() < self._chaos.faults.duplicate:
            await self._inner.send(frame)

    async def recv(self) -> bytes:
        return await self._inner.recv()

    async def close(self) -> None:
        self._held = None
        await self._inner.close()


@asynccontextmanager
async def open_link(factory: LinkFactory,
                    faults: Faults | None = None) -> AsyncIterator[tuple[FrameLink, FrameLink]]:
    """A connected pair with ``faults``: native ones by the transport, the rest by wrapping."""
    faults = faults or Faults()
    wrapped = faults.active() - factory.native_faults
    native = dataclasses.replace(faults, **{name: getattr(Faults(), name) for name in wrapped})
    async with factory.connect(native) as (a, b):
        if not wrapped:
            yield a, b
            return
        rest = dataclasses.replace(faults, **{name: getattr(Faults(), name)
                                             for name in faults.active() - wrapped})
        chaos = _Chaos(rest, (a, b))
        yield FaultyLink(a, chaos), FaultyLink(b, chaos)


# -- a peer the test drives by hand ------------------------------------------------------------
class HandDriven:
    """One end of a link run by the test with a sans-I/O session, to send raw frames later."""

    def __init__(self, replica: Replica, link: FrameLink) -> None:
        self.session = Session(replica.sync_host, 0.0, FAST)
        self.link = link

    async def authenticate(self) -> None:
        """Handshake until the peer's first HAVE, which it sends once it verified our AUTH.

        The HAVE is not answered, so the peer (which lacks our envelopes) stays in SYNC.
        """
        for frame in self.session.start():
            await self.link.send(frame)
        async with asyncio.timeout(WAIT):
            while not isinstance(decode(frame := await self.link.recv()), Have):
                for reply in self.session.receive(frame, 0.0):
                    await self.link.send(reply)
        assert self.session.authenticated and self.session.closed is None

    async def error_reply(self) -> Error:
        """Read until the peer's ERROR, then check that the peer closed the link."""
        async with asyncio.timeout(WAIT):
            while not isinstance(msg := decode(await self.link.recv()), Error):
                pass
            with pytest.raises(LinkClosed):
                while True:  # frames the peer sent before its ERROR may still be queued
                    await self.link.recv()
        return msg


# -- the suite -------------------------------------------------------------------------------
class TransportConformance:
    """The cases every transport passes; subclasses provide the ``link_factory`` fixture."""

    @pytest.fixture
    def root(self, tmp_path: Path) -> Path:
        return tmp_path

    @pytest.fixture
    def open_replica(self, root: Path) -> Iterator[Any]:
        opened: list[Replica] = []

        def factory(name: str, **kwargs: Any) -> Replica:
            replica = Replica(root / name, **kwargs)
            opened.append(replica)
            return replica

        yield factory
        for replica in opened:
            replica.close()

    @pytest.fixture(scope="class")
    @classmethod
    def big_template(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """A closed data directory holding ``BIG_COUNT`` envelopes, copied by each test."""
        path = tmp_path_factory.mktemp("big") / "template"
        with Replica(path, seal_interval=0) as replica:
            fill(replica, "big", BIG_COUNT)
            assert replica.version_vector(SPACE) == {replica.device_id: BIG_COUNT}
        return path

    # -- connect and sync ----------------------------------------------------------------------
    async def test_one_shot_sync_converges(self, link_factory: LinkFactory, open_replica: Any) -> None:
        a, b = open_replica("a"), open_replica("b")
        fill(a, "a", 5)
        fill(b, "b", 3)
        a.space(SPACE).put("equipment", "shared", {"status": "ok"})
        b.space(SPACE).put("equipment", "shared", {"notes": "checked"})
        a.space("only-a").put("equipment", "x", {"n": 1})  # not shared: must not travel

        async with open_link(link_factory) as (la, lb):
            oa, ob = await sync_over(a, b, la, lb)

        for outcome, peer in ((oa, b), (ob, a)):
            assert outcome.synced and outcome.ok, outcome.closed
            assert outcome.peer == peer.device_id
        assert snapshot(a).key() == snapshot(b).key()
        assert len(snapshot(a).rows) == 5 + 3 + 1
        assert b.space(SPACE).get("equipment", "shared") == {"status": "ok", "notes": "checked"}
        assert "only-a" not in b.spaces()
        assert a.rejections() == [] and b.rejections() == []

    async def test_status_shows_what_the_peer_acknowledged(self, link_factory: LinkFactory,
                                                           open_replica: Any, root: Path) -> None:
        a, b = open_replica("a"), open_replica("b")
        fill(a, "a", 3)
        fill(b, "b", 2)
        async with open_link(link_factory) as (la, lb):
            oa, ob = await sync_over(a, b, la, lb)
        assert oa.synced and ob.synced
        vv = a.version_vector(SPACE)
        assert vv == b.version_vector(SPACE) and len(vv) == 2

        def peers(status: dict[str, Any]) -> dict[str, Any]:
            return {p["device"]: p["version_vector"] for p in status["spaces"][SPACE]["peers"]}

        assert peers(a.status().to_dict()) == {b.device_id: vv}
        assert peers(b.status().to_dict()) == {a.device_id: vv}
        assert a.status().spaces[SPACE].unacknowledged == 0
        a.close()  # the command opens the data directory itself
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli_main(["status", "--json", "--data", str(root / "a")]) == 0
        assert peers(json.loads(out.getvalue())) == {b.device_id: vv}

    # -- live push -------------------------------------------------------------------------------
    async def test_live_push_after_catch_up(self, link_factory: LinkFactory, open_replica: Any) -> None:
        a, b = open_replica("a"), open_replica("b")
        fill(a, "a", 2)
        b.join(SPACE)  # b holds nothing yet, but keeps the space: it is shared
        stop = asyncio.Event()
        caught_up = {name: asyncio.Event() for name in "ab"}

        def on_event(name: str) -> Any:
            def handle(event: Event) -> None:
                if isinstance(event, SpaceSynced):
                    caught_up[name].set()
            return handle

        def arrival(replica: Replica, entity: str) -> asyncio.Event:
            event = asyncio.Event()

            def seen(changes: list[Change]) -> None:
                if any(c.id == entity and c.origin == "remote" for c in changes):
                    event.set()
            replica.observe(seen, SPACE)
            return event

        async with open_link(link_factory) as (la, lb), asyncio.timeout(4 * WAIT), \
                asyncio.TaskGroup() as tg:
            ta = tg.create_task(run_session(a, la, live=True, stop=stop, config=FAST,
                                            on_event=on_event("a")))
            tb = tg.create_task(run_session(b, lb, live=True, stop=stop, config=FAST,
                                            on_event=on_event("b")))
            try:
                await wait_event(caught_up["a"], "a to catch up")
                await wait_event(caught_up["b"], "b to catch up")
                to_b, to_a = arrival(b, "pushed-a"), arrival(a, "pushed-b")
                a.space(SPACE).put("equipment", "pushed-a", {"status": "new"})
                await wait_event(to_b, "a's live edit to reach b")
                b.space(SPACE).put("equipment", "pushed-b", {"status": "also"})
                await wait_event(to_a, "b's live edit to reach a")
            finally:
                stop.set()
        assert b.space(SPACE).get("equipment", "pushed-a") == {"status": "new"}
        assert a.space(SPACE).get("equipment", "pushed-b") == {"status": "also"}
        assert snapshot(a).key() == snapshot(b).key()
        for outcome in (ta.result(), tb.result()):
            assert outcome.closed is not None and outcome.closed.code in (E_NORMAL, E_GOING_AWAY)

    # -- interruption and resume -------------------------------------------------------------
    async def test_disconnect_mid_transfer_then_resume(self, link_factory: LinkFactory, open_replica: Any,
                                                       big_template: Path, root: Path) -> None:
        shutil.copytree(big_template, root / "a")
        a, b = open_replica("a"), open_replica("b")
        fill(b, "b", 5)
        total = BIG_COUNT

        # Handshake and HAVEs are about ten frames; the drop comes a few batches later.
        async with open_link(link_factory, Faults(disconnect_after_frames=24)) as (la, lb):
            first = await sync_over(a, b, la, lb, config=BIG_BATCH)
        to_b, to_a = applied(first[1]), applied(first[0])
        assert not first[0].synced and not first[1].synced
        assert 0 < to_b < total, f"the drop did not fall mid-transfer ({to_b} of {total})"
        assert len(b.space(SPACE).list()) == 5 + to_b  # what was acknowledged is committed

        async with open_link(link_factory) as (la, lb):
            second = await sync_over(a, b, la, lb, config=BIG_BATCH)
        assert second[0].synced and second[1].synced
        # Each envelope applied exactly once over both sessions, and nothing sent twice.
        assert applied(second[1]) == total - to_b, "resumed from the wrong place"
        assert applied(second[0]) == 5 - to_a
        assert duplicates(second[0]) == duplicates(second[1]) == 0
        assert a.version_vector(SPACE) == b.version_vector(SPACE)
        assert len(a.space(SPACE).list()) == len(b.space(SPACE).list()) == total + 5
        assert b.space(SPACE).get("equipment", f"big-{total - 1}") == {"n": total - 1, "by": "big"}
        assert a.rejections() == [] and b.rejections() == []

    async def test_peer_closing_right_after_its_last_frames(self, link_factory: LinkFactory,
                                                            open_replica: Any) -> None:
        """The peer sends envelopes, its final ACK and BYE, and hangs up at once: the answer to
        the envelopes cannot be sent, but what the peer delivered must still be read."""
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
        assert outcome.closed is not None
        assert (outcome.closed.code, outcome.closed.by_peer) == (E_NORMAL, True)
        assert a.version_vector(SPACE) == b.version_vector(SPACE) == {a.device_id: 1, b.device_id: 1}

    # -- duplication and reordering ----------------------------------------------------------
    @pytest.mark.parametrize("faults", [Faults(duplicate=0.3, seed=1), Faults(reorder=0.3, seed=2),
                                        Faults(duplicate=0.25, reorder=0.25, seed=3)],
                             ids=["duplicate", "reorder", "both"])
    async def test_duplicated_and_reordered_frames_converge(self, link_factory: LinkFactory,
                                                            open_replica: Any, faults: Faults) -> None:
        a, b = open_replica("a", seal_interval=0), open_replica("b", seal_interval=0)
        fill(a, "a", 40)
        fill(b, "b", 30)
        with a.space(SPACE).transaction() as tx:
            tx.entity("equipment", "a-0").text("notes").append("from a")
        with b.space(SPACE).transaction() as tx:
            tx.entity("equipment", "a-0").list("parts").append("from b")
        config = dataclasses.replace(FAST, batch_count=4)  # many frames to disturb

        async with open_link(link_factory, faults) as (la, lb):
            oa, ob = await sync_over(a, b, la, lb, config=config)
        # The side that finishes first closes the link; its last frames may be lost with it,
        # so only one side is sure to see the end. The data is what must agree.
        assert oa.synced or ob.synced, (oa.closed, ob.closed)
        assert snapshot(a).key() == snapshot(b).key()
        assert a.version_vector(SPACE) == {a.device_id: 41, b.device_id: 31}
        assert a.space(SPACE).get("equipment", "a-0") == {"n": 0, "by": "a", "notes": "from a",
                                                        "parts": ["from b"]}
        assert a.rejections() == [] and b.rejections() == []

    # -- hostile frames ------------------------------------------------------------------------
    @pytest.mark.parametrize("stage", ["before-handshake", "in-sync"])
    async def test_oversized_frame_is_refused(self, link_factory: LinkFactory, open_replica: Any,
                                              stage: str) -> None:
        frame = b"\x5a" + (MAX_FRAME + 1).to_bytes(4, "big") + bytes(MAX_FRAME + 1)  # a CBOR bstr
        assert expected_code(frame) == E_TOO_LARGE
        if link_factory.max_frame is not None and link_factory.max_frame < len(frame):
            async with open_link(link_factory) as (la, _lb):
                with pytest.raises(TransportError):
                    await la.send(frame)  # the transport itself refuses it: equally safe
            return
        await self._hostile_frame(open_replica, link_factory, frame, stage, E_TOO_LARGE)

    @pytest.mark.parametrize("garbage", ["random", "empty", "truncated"])
    @pytest.mark.parametrize("stage", ["before-handshake", "in-sync"])
    async def test_garbage_frame_is_refused(self, link_factory: LinkFactory, open_replica: Any,
                                            garbage: str, stage: str) -> None:
        frame = {"random": random.Random(7).randbytes(300), "empty": b"",
                 "truncated": bytes.fromhex("8600010158208a88e3dd7409f195")}[garbage]
        assert expected_code(frame) == E_MALFORMED
        await self._hostile_frame(open_replica, link_factory, frame, stage, E_MALFORMED)

    async def _hostile_frame(self, open_replica: Any, link_factory: LinkFactory, frame: bytes,
                             stage: str, code: int) -> None:
        victim, attacker = open_replica("victim"), open_replica("attacker")
        fill(victim, "v", 3)
        fill(attacker, "x", 1)
        before = snapshot(victim)
        async with open_link(link_factory) as (lv, lx), asyncio.TaskGroup() as tg:
            session = tg.create_task(run_session(victim, lv, config=FAST, timeout=WAIT))
            peer = HandDriven(attacker, lx)
            if stage == "before-handshake":
                async with asyncio.timeout(WAIT):
                    assert isinstance(decode(await lx.recv()), Hello)
            else:
                await peer.authenticate()
            await lx.send(frame)
            error = await peer.error_reply()
        outcome = session.result()
        assert error.code == code, error
        assert outcome.closed is not None
        assert (outcome.closed.code, outcome.closed.by_peer) == (code, False)
        assert not outcome.synced
        assert (stage == "in-sync") == any(isinstance(e, Authenticated) for e in outcome.events)
        assert snapshot(victim) == before
        assert victim.rejections() == []
