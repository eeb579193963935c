"""The interface a transport provides to the conformance suite, and what the suite builds on it.

A transport takes part through a :class:`TransportHarness`: it connects pairs of
:class:`~crdt_sync.transports.base.FrameLink` ends (``connect``), and syncs two replicas
through itself (``sync``). A point-to-point transport (memory, a WebSocket link, LAN, BLE)
connects the two replicas to each other and has no ``hub``. A store-and-forward transport
(the relay) connects each replica to a hub, which runs a session of its own with each and
forwards what it stores; ``hub`` lets the cases check what it holds.

Faults (duplication, reordering, a drop after N frames) are injected by the transport itself
where it can (``native_faults``, e.g. the memory transport's link conditions); the others are
injected by :class:`FaultyLink`, a seeded wrapper around any ``FrameLink``, so every case runs
on every transport.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import shutil
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from crdt_sync import Replica
from crdt_sync.protocol import Session, SessionConfig
from crdt_sync.protocol.messages import MAX_INNER_FRAME, Ack, Envelopes, Error, Have, decode
from crdt_sync.transports.base import FrameLink, LinkClosed
from crdt_sync.transports.driver import SessionOutcome
from tests.helpers import SHARED, share
from tests.sync_helpers import FAST, WAIT, fill, opened, sync_over

#: Envelopes in the interrupted transfer: enough for dozens of batches at ``BIG_BATCH``.
BIG_COUNT = 2000
#: Clean links lose nothing: long timers, so a loaded machine adds no resends to count.
BIG_BATCH = SessionConfig(batch_count=64, handshake_timeout=WAIT, resend_interval=2.0, ack_timeout=5.0)


#: The name of the template's space (:func:`make_big_template`) on both of its devices.
BIG_SPACE = "big"


def make_big_template(path: Path) -> Path:
    """Two closed data directories under ``path``: ``a``, whose space :data:`BIG_SPACE` (made
    by ``a``, ``b`` let in: ``SHARED`` envelopes) then took ``BIG_COUNT`` envelopes of ``a``,
    and ``b``, which holds only the ``SHARED`` ones (what the grant gave it)."""
    with Replica(path / "a", seal_interval=0) as a, Replica(path / "b", seal_interval=0) as b:
        space = share(a, b, name=BIG_SPACE)
        fill(a, "big", BIG_COUNT, space)
        assert a.version_vector(space) == {a.device_id: SHARED + BIG_COUNT}
        assert b.version_vector(space) == {a.device_id: SHARED}
    return path


def copy_big_template(template: Path, into: Path) -> None:
    """The template's data directories ``a`` and ``b`` copied into ``into`` (to open there)."""
    for name in ("a", "b"):
        shutil.copytree(template / name, into / name)


def common_vvs(a: Replica, b: Replica) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """The version vectors of every space both ``a`` and ``b`` keep, of each."""
    both = sorted(set(a.spaces()) & set(b.spaces()))
    return {s: a.version_vector(s) for s in both}, {s: b.version_vector(s) for s in both}


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


class Hub(Protocol):
    """What the cases check on a store-and-forward transport's hub (the relay)."""

    @property
    def device_id(self) -> str:
        """The hub's own identity: the peer every device's session sees."""
        ...

    def spaces(self) -> list[str]:
        """Every space the hub stores."""
        ...

    def version_vector(self, space: str) -> dict[str, int]:
        """What the hub holds of ``space``."""
        ...

    def rejections(self) -> list[Any]:
        """Envelopes the hub refused (signature, chain...); frames refused are not in it."""
        ...


class TransportHarness(Protocol):
    """One transport, as the suite sees it."""

    @property
    def name(self) -> str:
        ...

    @property
    def native_faults(self) -> frozenset[str]:
        """The :class:`Faults` fields the transport injects itself; the suite wraps the rest."""
        ...

    @property
    def max_frame(self) -> int | None:
        """The largest frame the transport carries, or None if it carries any size."""
        ...

    @property
    def instant_hangup(self) -> bool:
        """True when a ``close`` is seen by the other end at once, with nothing more delivered
        from this end (memory); False when a link closes by handshake, so frames still in
        flight both ways are delivered first (a WebSocket)."""
        ...

    @property
    def hub(self) -> Hub | None:
        """The store-and-forward hub between the two ends, or None when point to point."""
        ...

    def connect(self, faults: Faults) -> AbstractAsyncContextManager[tuple[FrameLink, FrameLink]]:
        """A pair ``(a, b)`` with the native part of ``faults``; closed on exit.

        Point to point, ``a`` and ``b`` are the two ends of one link; with a hub, ``a`` and
        ``b`` are two devices' links to the hub.
        """
        ...

    async def sync(self, a: Replica, b: Replica, *, faults: Faults | None = None,
                   config: SessionConfig = FAST) -> list[SessionOutcome]:
        """Sync ``a`` and ``b`` through this transport (bounded); every session's outcome, in
        order. Point to point that is one session each, run together: ``[a's, b's]``."""
        ...


class PointToPoint:
    """The parts of a :class:`TransportHarness` that every point-to-point transport shares."""

    hub: Hub | None = None

    async def sync(self, a: Replica, b: Replica, *, faults: Faults | None = None,
                   config: SessionConfig = FAST) -> list[SessionOutcome]:
        harness: Any = self  # a harness: it provides connect and native_faults
        async with open_link(harness, faults) as (la, lb):
            return list(await sync_over(a, b, la, lb, config=config))


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
async def open_link(harness: TransportHarness,
                    faults: Faults | None = None) -> AsyncIterator[tuple[FrameLink, FrameLink]]:
    """A connected pair with ``faults``: native ones by the transport, the rest by wrapping."""
    faults = faults or Faults()
    wrapped = faults.active() - harness.native_faults
    native = dataclasses.replace(faults, **{name: getattr(Faults(), name) for name in wrapped})
    async with harness.connect(native) as (a, b):
        if not wrapped:
            yield a, b
            return
        rest = dataclasses.replace(faults, **{name: getattr(Faults(), name)
                                             for name in faults.active() - wrapped})
        chaos = _Chaos(rest, (a, b))
        yield FaultyLink(a, chaos), FaultyLink(b, chaos)


# -- a peer the test drives by hand ------------------------------------------------------------
class HandDriven:
    """One end of a link run by the test with a sans-I/O session, to send raw frames later.

    The session's frames are sealed as they are sent (``defer_sealing``), and the peer's are
    read through its link: a hostile frame of an authenticated peer is one it seals itself
    (:meth:`seal`)."""

    def __init__(self, replica: Replica, link: FrameLink) -> None:
        self.session = Session(replica.sync_host, 0.0, FAST)
        self.session.defer_sealing()
        self.link = link

    def seal(self, frame: bytes) -> bytes:
        """``frame`` sealed by this peer's link, as it would send any frame (as it is if it
        does not fit in SEALED: then it can only be sent in the clear)."""
        link = self.session.link
        return link.seal(frame) if link is not None and len(frame) <= MAX_INNER_FRAME else frame

    async def authenticate(self) -> None:
        """Handshake until the peer's first HAVE, which it sends once it verified our AUTH.

        The HAVE is not answered, so the peer (which lacks our envelopes) stays in SYNC.
        """
        for frame in self.session.start():
            await self.link.send(self.session.seal(frame))
        async with asyncio.timeout(WAIT):
            while not isinstance(opened(self.session, frame := await self.link.recv()), Have):
                for reply in self.session.receive(frame, 0.0):
                    await self.link.send(self.session.seal(reply))
        assert self.session.authenticated and self.session.closed is None

    async def error_reply(self) -> Error:
        """Read until the peer's ERROR, then check that the peer closed the link."""
        async with asyncio.timeout(WAIT):
            while not isinstance(msg := opened(self.session, await self.link.recv()), Error):
                pass
            with pytest.raises(LinkClosed):
                while True:  # frames the peer sent before its ERROR may still be queued
                    await self.link.recv()
        return msg


async def deliver_then_hang_up(b: Replica, link: FrameLink, a: Replica, space: str) -> None:
    """``b``'s session, by hand, over ``link``: until ``b`` holds ``a``'s chain in ``space``
    (as far as ``a`` holds it now) it answers nothing of it; then it sends the held envelopes,
    its final ACK and BYE at once, and hangs up (the other end must still store what was delivered)."""
    peer = Session(b.sync_host, 0.0, FAST)
    peer.defer_sealing()  # its frames in the clear, sealed as they are sent
    held: list[bytes] = []
    for frame in peer.start():
        await link.send(peer.seal(frame))
    last = a.version_vector(space)[a.device_id]
    async with asyncio.timeout(WAIT):  # until b holds a's envelopes, answering nothing of them
        while b.version_vector(space).get(a.device_id, 0) < last:
            for out in peer.receive(await link.recv(), 0.0):
                if isinstance(msg := decode(out), Envelopes):
                    held.append(out)
                elif not isinstance(msg, Ack):
                    await link.send(peer.seal(out))
    assert held, "b never had its envelope to send"
    for frame in [*held, *peer.close(0.0)]:
        await link.send(peer.seal(frame))
    await link.close()
