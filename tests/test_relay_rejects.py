"""Each way an envelope is refused, reproduced against a real relay over loopback WebSockets.

An honest author has seq 1 and 2 of its chain at the relay. Another device ("mallory",
authenticated with its own key) runs a genuine session and swaps the envelope of its first
ENVELOPES frame for a crafted one under the honest author's key. The relay answers ERROR 5
(rejected-envelope) with the reason, records the refusal, stores nothing of the frame, and
closes that session; two live bystanders keep exchanging edits throughout, and the honest
author's next envelopes are still taken.

What the wire allows: a session does not carry an envelope's version, space or
``prev_hash``; the receiver rebuilds them from the frame's space and from its own copy of
the chain (crdt_sync.protocol.session). So an envelope signed over another ``prev_hash``,
or for another space, reaches the chain rules as one whose signature does not verify
(``bad-signature``); the chain rules' own wrong-prev and wrong-space branches are reached
through full envelope wires (bundles, the relay's store: the last test here, and
tests/test_chain.py), as are the envelope checks a session's decoder and rebuild leave no room
for (malformed, unknown version, non-canonical). A seq gap is no refusal on a session: the
envelope is skipped and its author resends in order.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import cbor2
import pytest

from crdt_sync import forks
from crdt_sync.envelope import FORMAT_VERSION, MAX_ENVELOPE_BYTES, seal
from crdt_sync.errors import Rejected
from crdt_sync.identity import Identity
from crdt_sync.protocol import Quarantined as QuarantinedEvent
from crdt_sync.protocol.messages import (
    E_REJECTED,
    MAX_FRAME,
    Ack,
    Envelopes,
    Error,
    ForkProof,
    Quarantined,
    WireEnvelope,
    decode,
    encode,
)
from crdt_sync.relay.host import RelayHost
from crdt_sync.relay.server import RelayServer
from crdt_sync.relay.storage import RelayStore
from tests.relay_envelopes import EnvelopeHost, SpaceMaker, exchange, identity
from tests.relay_helpers import RawPeer, bystanders, rejections, running_relay


@dataclass
class World:
    """An admin's space at the relay: the honest author's chain holds seq 1 and 2; mallory
    (a member too) holds one envelope of its own; the author also created a space of its
    own (``other``), not at the relay yet."""

    relay: RelayServer
    author: EnvelopeHost
    mallory: EnvelopeHost
    sp: SpaceMaker
    other: SpaceMaker

    @property
    def space(self) -> str:
        return self.sp.space

    def head(self) -> tuple[int, bytes]:
        seq = self.author.version_vector(self.space)[self.author.device_id]
        h = self.author.envelope_hash(self.space, self.author.device_id, seq)
        assert h is not None
        return seq, h

    def hash_of(self, seq: int) -> bytes:
        h = self.author.envelope_hash(self.space, self.author.device_id, seq)
        assert h is not None
        return h

    def write(self, tag: str) -> None:
        """The author's next envelope in the space."""
        self.author.add(self.sp.data(self.author.identity, tag.encode()))

    def elsewhere(self) -> None:
        """The author's own space, with an envelope of data."""
        self.author.add(self.other.open(), self.other.data(self.author.identity))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with running_relay(tmp_path / "relay") as relay:
        admin, honest, bad = identity(), identity(), identity()
        sp = SpaceMaker(admin)
        setup = EnvelopeHost(admin, sp.open(), sp.grant(honest.public_key), sp.grant(bad.public_key))
        assert (await exchange(setup, relay.url)).ok
        author = EnvelopeHost(honest, sp.data(honest, b"honest-0"), sp.data(honest, b"honest-1"))
        first = await exchange(author, relay.url)
        assert first.synced and relay.store.version_vector(sp.space) == {admin.id: 3, honest.id: 2}
        mallory = EnvelopeHost(bad, sp.data(bad, b"m"))  # so that its session sends one ENVELOPES frame
        yield World(relay, author, mallory, sp, SpaceMaker(honest))


def signed(w: World, seq: int, prev: bytes, payload: bytes = b"crafted",
           space: str | None = None) -> WireEnvelope:
    env = seal(w.author.identity, space or w.space, seq, prev, (1 << 40) + seq, payload)
    return WireEnvelope(env.author_key, env.seq, env.hlc, env.payload, env.signature)


def forged(w: World) -> WireEnvelope:
    seq, prev = w.head()
    genuine = signed(w, seq + 1, prev)
    bad = bytes([genuine.signature[0] ^ 0x01]) + genuine.signature[1:]
    return WireEnvelope(genuine.author, genuine.seq, genuine.hlc, genuine.payload, bad)


def oversize(w: World) -> WireEnvelope:
    """Signed correctly, but over the envelope limit (and within the frame limit)."""
    seq, prev = w.head()
    payload = os.urandom(MAX_ENVELOPE_BYTES + 1024)
    assert len(payload) + 1024 < MAX_FRAME
    key = w.author.identity.public_key
    part = [FORMAT_VERSION, w.space, key, seq + 1, prev, 1 << 40, payload]
    signature = w.author.identity.sign(cbor2.dumps(part, canonical=True))
    return WireEnvelope(key, seq + 1, 1 << 40, payload, signature)


Craft = Callable[[World], WireEnvelope]
CASES: list[tuple[str, Craft, str]] = [
    ("forged-signature", forged, "bad-signature"),
    ("wrong-prev-hash", lambda w: signed(w, 3, os.urandom(32)), "bad-signature"),
    ("other-space", lambda w: signed(w, 3, w.hash_of(2), space="elsewhere"), "bad-signature"),
    ("oversize", oversize, "too-large"),
]
#: Signed by the author itself, so attributable: since protocol 2 they quarantine the author
#: in the space (test_a_fork_quarantines_its_author) instead of ending the session.
FORK_CASES: list[tuple[str, Craft, int]] = [
    ("fork-at-the-head", lambda w: signed(w, 2, w.hash_of(1), b"the other branch"), 2),
    ("fork-below-the-head", lambda w: signed(w, 1, b"", b"another seq 1"), 1),
]


class Swap:
    """Replaces the envelopes of the first ENVELOPES frame with crafted ones."""

    def __init__(self, crafted: list[WireEnvelope]) -> None:
        self.crafted = crafted
        self.batch: int | None = None

    def __call__(self, frame: bytes) -> bytes:
        msg = decode(frame)
        if self.batch is not None or not isinstance(msg, Envelopes):
            return frame
        self.batch = msg.batch
        return encode(Envelopes(msg.space, msg.batch, self.crafted))


@pytest.mark.parametrize(("craft", "reason"), [pytest.param(c, r, id=name) for name, c, r in CASES])
async def test_refused_envelope(world: World, craft: Craft,
                                reason: str) -> None:
    relay, author, mallory = world.relay, world.author, world.mallory
    before = relay.store.version_vector(world.space)
    async with bystanders(relay.url) as check:
        swap = Swap([craft(world)])
        async with RawPeer.open(relay.url, mallory) as raw:
            error = await raw.converse(lambda m: isinstance(m, Error), tamper=swap)
            assert swap.batch is not None, "the session sent no envelopes"
            assert isinstance(error, Error)
            assert error.code == E_REJECTED and error.message.startswith(f"{reason}: "), error
            assert await raw.recv() is None  # the relay closed that session
        # Nothing of the frame was stored (mallory's own envelope was swapped out).
        assert relay.store.version_vector(world.space) == before
        recorded = relay.store.rejections()
        assert [r.reason for r in recorded] == [reason]
        assert mallory.device_id in recorded[0].source  # who sent it, not whose key signed it
        assert await rejections(relay.url, "rejected-envelope") == 1
        await check(f"after-{reason}")  # the other devices keep syncing through the relay

        # The honest author's chain goes on: its next envelope is taken.
        world.write("after")
        again = await exchange(author, relay.url)
        assert again.synced and again.ok, again.closed
        assert relay.store.version_vector(world.space)[author.device_id] == 3
        await check("after-the-author")


# Forks were refused with ERROR 5 here before fork proofs (protocol 1); they are proven now.
@pytest.mark.parametrize(("craft", "seq"), [pytest.param(c, s, id=name) for name, c, s in FORK_CASES])
async def test_a_fork_is_proven_kept_and_sent_back_not_refused(
        world: World, craft: Craft, seq: int) -> None:
    relay, author, mallory = world.relay, world.author, world.mallory
    async with bystanders(relay.url) as check:
        swap = Swap([craft(world)])
        async with RawPeer.open(relay.url, mallory) as raw:
            got = await raw.converse(lambda m: isinstance(m, ForkProof) and len(m.envelopes) == 2,
                                     tamper=swap)
            assert swap.batch is not None, "the session sent no envelopes"
            assert not any(isinstance(m, Error) for m in raw.received)  # the session goes on
        assert isinstance(got, ForkProof)
        await relay.store.commit()  # (the proof and the record are in the next group commit)
        [data] = relay.store.fork_proofs(world.space)
        proof = forks.verify(data)
        assert (proof.author, proof.seq) == (author.device_id, seq)
        assert [e for e in got.envelopes] == [proof.low.wire, proof.high.wire]
        assert mallory.fork_proofs(world.space) == [data]  # the sender holds the proof too
        # The author's envelopes from the fork seq on are no longer served or accepted.
        assert relay.store.version_vector(world.space).get(author.device_id, 0) == seq - 1
        assert [r.reason for r in relay.store.rejections()] == ["fork"]
        assert await rejections(relay.url, "rejected-envelope") == 0
        await check("after-the-fork")  # every other author keeps syncing through the relay
        world.write("after")
        await exchange(author, relay.url)
        assert relay.store.version_vector(world.space).get(author.device_id, 0) == seq - 1
        # Its other spaces are served as before.
        world.elsewhere()
        again = await exchange(author, relay.url, spaces=[world.other.space])
        assert again.synced and again.ok, again.closed
        assert relay.store.version_vector(world.other.space) == {author.device_id: 2}
        await check("after-the-author")


@pytest.mark.parametrize(("craft", "from_seq"), [pytest.param(c, q, id=name) for name, c, q in FORK_CASES])
async def test_a_fork_quarantines_its_author(world: World, craft: Craft,
                                             from_seq: int) -> None:
    """The relay checks the chain rules itself: a second envelope at a seq it holds sets the
    author aside in that space (QUARANTINED, not ERROR), stores and forwards nothing more of
    that chain there, and goes on serving that session, every other author, and the same
    author's other spaces. The fork is proven too (the test above): both branches go, so
    the author's head moves back to the seq before the fork."""
    relay, author, mallory = world.relay, world.author, world.mallory
    before = relay.store.version_vector(world.space)
    async with bystanders(relay.url) as check:
        swap = Swap([craft(world)])
        async with RawPeer.open(relay.url, mallory) as raw:
            notice = await raw.converse(lambda m: isinstance(m, Quarantined), tamper=swap)
            assert isinstance(notice, Quarantined)
            assert raw.session is not None  # its session read the notice (author by the relay's table)
            told = [e for e in raw.session.pop_events() if isinstance(e, QuarantinedEvent)]
            assert [(e.author, e.from_seq, e.reason, e.by_peer) for e in told] == [
                (author.device_id, from_seq, "fork", True)]
            # The session goes on: the ACK of that batch follows, and no ERROR.
            await raw.converse(lambda m: isinstance(m, Ack) and m.batch == swap.batch)
            assert not any(isinstance(m, Error) for m in raw.received)
        # Nothing of the author's was stored (mallory's session went on, and may have resent
        # its own envelope that the swap took out); the fork excluded both branches.
        stored = relay.store.version_vector(world.space)
        expected = {**before, author.device_id: from_seq - 1}
        assert {a: s for a, s in stored.items() if a != mallory.device_id} == {
            a: s for a, s in expected.items() if s}
        held = relay.store.quarantine.is_quarantined(world.space, author.device_id)
        assert held is not None and (held.from_seq, held.reason) == (from_seq, "fork")
        assert [r.reason for r in relay.store.rejections()] == ["fork"]
        assert await rejections(relay.url, "rejected-envelope") == 0
        assert await rejections(relay.url, "quarantined") == 1
        await check("after-the-fork")  # the other devices keep syncing through the relay

        # The author's later envelopes in that space are neither stored nor forwarded; its
        # session is told so, and still ends synced (what was set aside is not waited for).
        world.write("after")
        world.elsewhere()
        again = await exchange(author, relay.url)
        assert again.synced and again.ok, again.closed
        assert relay.store.version_vector(world.space).get(author.device_id, 0) == from_seq - 1
        assert relay.store.version_vector(world.other.space) == {author.device_id: 2}
        # It learns the fork from the relay's proof (not a QUARANTINED: it no longer sends
        # that chain past the fork point, see docs/PROTOCOL.md, "Forks").
        assert [forks.verify(p).author for p in author.fork_proofs(world.space)] == [author.device_id]
        await check("after-the-author")
async def test_a_seq_gap_is_skipped_not_refused(world: World) -> None:
    relay, author, mallory = world.relay, world.author, world.mallory
    seq, _ = world.head()
    async with bystanders(relay.url) as check:
        swap = Swap([signed(world, seq + 2, os.urandom(32))])  # seq 4 while seq 3 is missing
        async with RawPeer.open(relay.url, mallory) as raw:
            ack = await raw.converse(lambda m: isinstance(m, Ack) and swap.batch is not None
                                     and m.batch == swap.batch, tamper=swap)
            assert isinstance(ack, Ack)
            assert not any(isinstance(m, Error) for m in raw.received)
        # (mallory's session goes on, and may by now have resent its own envelope)
        assert relay.store.version_vector(world.space)[author.device_id] == seq
        assert relay.store.rejections() == []
        assert await rejections(relay.url, "rejected-envelope") == 0
        await check("after-the-gap")
        world.write("after")
        again = await exchange(author, relay.url)
        assert again.synced and relay.store.version_vector(world.space)[author.device_id] == seq + 1


async def test_a_resent_envelope_is_a_duplicate_not_a_refusal(world: World) -> None:
    relay, author, mallory = world.relay, world.author, world.mallory
    genuine = author.missing_envelopes(world.space, {}, 1, 1 << 24)[0]
    swap = Swap([WireEnvelope(genuine.author_key, genuine.seq, genuine.hlc, genuine.payload,
                              genuine.signature)])
    async with RawPeer.open(relay.url, mallory) as raw:
        await raw.converse(lambda m: isinstance(m, Ack) and swap.batch is not None
                           and m.batch == swap.batch, tamper=swap)
        assert not any(isinstance(m, Error) for m in raw.received)
    assert relay.store.version_vector(world.space)[author.device_id] == 2
    assert relay.store.rejections() == []


# -- what a session cannot carry: the relay's store, given whole envelope wires ----------------------
def _resigned(identity: Identity, items: list[object]) -> bytes:
    """A wire of ``items`` (the first seven of an envelope) with a valid signature."""
    signature = identity.sign(cbor2.dumps(items, canonical=True))
    return cbor2.dumps([*items, signature], canonical=True)


def _indefinite(wire: bytes) -> bytes:
    """The same envelope as an indefinite-length array: it decodes, and is not canonical."""
    assert wire[0] == 0x88  # a definite array of 8 items
    return b"\x9f" + wire[1:] + b"\xff"


WIRE_CASES: list[tuple[str, Callable[[Identity, str], bytes], str]] = [
    ("not-cbor", lambda i, s: b"\xff\x00garbage", "malformed"),
    ("seven-items", lambda i, s: cbor2.dumps([1, s, i.public_key, 1, b"", 0, b""]), "malformed"),
    ("seq-0", lambda i, s: _resigned(i, [FORMAT_VERSION, s, i.public_key, 0, b"", 0, b"x"]), "malformed"),
    ("hlc-over-64-bits", lambda i, s: _resigned(i, [FORMAT_VERSION, s, i.public_key, 1, b"", 2**64, b"x"]),
     "malformed"),
    ("version-2", lambda i, s: _resigned(i, [2, s, i.public_key, 1, b"", 0, b"x"]), "unknown-version"),
    ("non-canonical", lambda i, s: _indefinite(seal(i, s, 1, b"", 0, b"x").wire), "non-canonical"),
    ("too-large", lambda i, s: b"\x00" * (MAX_ENVELOPE_BYTES + 1), "too-large"),
    ("wrong-space", lambda i, s: seal(i, "elsewhere", 1, b"", 0, b"x").wire, "wrong-space"),
    ("seq-gap", lambda i, s: seal(i, s, 2, os.urandom(32), 0, b"x").wire, "broken-chain"),
    ("plaintext", lambda i, s: seal(i, s, 1, b"", 1, cbor2.dumps([2, []])).wire, "plaintext"),
]


@pytest.mark.parametrize(("make", "reason"), [pytest.param(m, r, id=n) for n, m, r in WIRE_CASES])
def test_the_relay_store_refuses_whole_wires(tmp_path: Path, make: Callable[[Identity, str], bytes],
                                             reason: str) -> None:
    """Without an event loop the store writes through: each refusal is recorded at once, and
    nothing of the refused call (an honest envelope before the bad one) is kept."""
    store = RelayStore(tmp_path, enforce_membership=True)
    host = RelayHost(store, lambda device: None, lambda device, n, size: None)
    honest, other = Identity.generate(), Identity.generate()
    sp = SpaceMaker(other)  # the space's genesis comes first, from its creator
    grant = [sp.open().wire, sp.grant(honest.public_key).wire]
    first = sp.data(honest)
    try:
        with pytest.raises(Rejected) as info:
            host.receive([*grant, make(honest, sp.space)], "peer x", sp.space)
        assert info.value.reason == reason
        assert store.version_vector(sp.space) == {}
        assert store.members(sp.space).log.genesis() is None  # its log forgot the genesis too
        assert [(r.source, r.reason) for r in store.rejections()] == [("peer x", reason)]
        assert host.receive([*grant, first.wire], "peer x", sp.space) == (3, 0, 0)  # the store goes on
    finally:
        store.close()
