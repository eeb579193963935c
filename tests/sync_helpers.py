"""Helpers shared by the sync-protocol tests (conformance, stateful, adversarial).

Everything here drives real parts: replicas on real data directories, real sessions, the
memory transport. Waits are on events or frames under a timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path
from typing import Any

import cbor2

from crdt_sync import Replica
from crdt_sync.envelope import Envelope
from crdt_sync.identity import Identity
from crdt_sync.membership import make_genesis, space_id_of
from crdt_sync.protocol import Received, Session, SessionConfig
from crdt_sync.protocol.link import SEALED_HEAD
from crdt_sync.protocol.messages import Error, Message, ProtocolViolation, decode
from crdt_sync.protocol.session import AUTH_CONTEXT, TRANSCRIPT_CONTEXT
from crdt_sync.space_crypto import decrypt_payload, encrypt_payload, epoch_id_of
from crdt_sync.transports.base import FrameLink
from crdt_sync.transports.driver import SessionOutcome, run_session

#: The space of tests that sign envelopes by hand: an id (spaces are bound to their creator's
#: key), of a genesis made by :data:`SITE_ADMIN`. Replicas keep it with ``keep(SPACE)``.
SITE_ADMIN = Identity(bytes([7]) * 32)
SITE_GENESIS = make_genesis(SITE_ADMIN, 1 << 16, nonce=bytes(16))
SPACE = space_id_of(SITE_GENESIS)
#: Its keys, which every test device of it holds (:func:`admit`): the space secret and epoch 0.
SITE_SECRET = bytes([8]) * 32
SITE_EPOCH_KEY = bytes([9]) * 32
SITE_EPOCH_ID = epoch_id_of(SITE_EPOCH_KEY)


def admit(replica: Replica, space: str = SPACE) -> Replica:
    """Give ``replica`` the keys of the test space :data:`SPACE` and keep it (what a grant
    and its keys record give a member), so that it can write there and read what the others
    wrote. Returns it."""
    ring = replica.secrets.keyring()
    if ring.key(space, SITE_EPOCH_ID) is None:
        ring.add(space, 0, SITE_EPOCH_ID, SITE_EPOCH_KEY, SITE_SECRET)
        if not replica.secrets.read_only:
            replica.secrets.save()
    if not replica.read_only:
        replica.keep(space)
    return replica


def body_of(env: Envelope) -> bytes:
    """The plaintext body of a test-space envelope's payload (decrypted with its keys)."""
    return decrypt_payload(lambda _epoch: SITE_EPOCH_KEY, env.space, env.author_key, env.seq, env.payload)


def data_payload(author: Identity, seq: int, body: bytes, space: str = SPACE) -> bytes:
    """The encrypted payload (kind 3) of ``author``'s envelope ``seq`` in the test space:
    ``body`` (a plaintext payload, :func:`crdt_sync.payload.encode_payload`) as a member seals it."""
    return encrypt_payload(SITE_EPOCH_KEY, SITE_EPOCH_ID, space, author.public_key, seq, body)
#: Upper bound for any single wait in these tests: generous, because CI machines stall.
WAIT = 10.0
#: Resend timers short enough that sessions over lossy links finish in well under a second
#: (a resend too early only costs a duplicate). No timer ends a session: ``timeout=`` does.
FAST = SessionConfig(handshake_timeout=WAIT, resend_interval=0.05, ack_timeout=0.05,
                     ping_interval=1.0, dead_after=WAIT)


# -- observing replicas ----------------------------------------------------------------------
def exact(value: Any) -> bytes:
    """A form of ``value`` whose equality is exact (1, 1.0 and True differ; -0.0 and 0.0 too)."""
    return bytes(cbor2.dumps(value, canonical=True))


@dataclass(frozen=True)
class Snapshot:
    """What a user can observe of one space, comparable exactly."""

    rows: list[tuple[str, str, dict[str, Any]]]
    conflicts: list[dict[str, Any]]
    version_vector: dict[str, int]

    def key(self) -> bytes:
        return exact([self.rows, self.conflicts, self.version_vector])


def snapshot(replica: Replica, space: str = SPACE) -> Snapshot:
    if space == SPACE:
        admit(replica)
    sp = replica.space(space)
    return Snapshot(sorted(sp.rows()), [c.to_dict() for c in sp.conflicts()], replica.version_vector(space))


def fill(replica: Replica, prefix: str, count: int, space: str = SPACE) -> None:
    """``count`` entities, one transaction (and, with ``seal_interval=0``, one envelope) each."""
    if space == SPACE:
        admit(replica)
    sp = replica.space(space)
    for i in range(count):
        sp.put("equipment", f"{prefix}-{i}", {"n": i, "by": prefix})
        replica.seal()


# -- sessions over links -----------------------------------------------------------------------
def applied(outcome: SessionOutcome) -> int:
    """Envelopes the session applied to its replica (duplicates excluded)."""
    return sum(e.applied for e in outcome.events if isinstance(e, Received))


def duplicates(outcome: SessionOutcome) -> int:
    return sum(e.duplicates for e in outcome.events if isinstance(e, Received))


Outcomes = tuple[SessionOutcome, SessionOutcome]


async def sync_over(a: Replica, b: Replica, link_a: FrameLink, link_b: FrameLink, *,
                    config: SessionConfig = FAST, timeout: float = WAIT) -> Outcomes:
    """One-shot sessions of ``a`` on ``link_a`` and ``b`` on ``link_b``, run concurrently."""
    async with asyncio.timeout(timeout + WAIT):  # the sessions' own timeout is the real bound
        return await asyncio.gather(run_session(a, link_a, config=config, timeout=timeout),
                                    run_session(b, link_b, config=config, timeout=timeout))


async def wait_event(event: asyncio.Event, what: str, timeout: float = WAIT) -> None:
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None


# -- sans-I/O sessions -------------------------------------------------------------------------
def error_of(frames: list[bytes]) -> Error | None:
    """The ERROR among ``frames`` (a failing session answers with exactly one), else None."""
    errors = [m for m in map(decode, frames) if isinstance(m, Error)]
    assert len(errors) <= 1, f"more than one ERROR: {errors}"
    return errors[0] if errors else None


def opened(receiver: Session, frame: bytes) -> Message:
    """A frame on its way to ``receiver``, decoded: a SEALED one opened with the receiver's
    link (without touching its replay window), a plaintext one (HELLO) as it is."""
    link = receiver.link
    if link is not None and frame[:2] == SEALED_HEAD:
        return decode(link.inspect(frame))
    return decode(frame)


def expected_code(frame: bytes) -> int | None:
    """The ERROR code the decoder demands for ``frame``, or None if it is a well-formed message."""
    try:
        decode(frame)
    except ProtocolViolation as exc:
        return exc.code
    return None


def transcript(hello_1: bytes, hello_2: bytes) -> bytes:
    """The handshake transcript of two HELLO frames (docs/PROTOCOL.md, Handshake step 2)."""
    first, second = sorted([hello_1, hello_2])
    return blake2b(TRANSCRIPT_CONTEXT + len(first).to_bytes(4, "big") + first + second,
                   digest_size=32).digest()


def auth_message(transcript_hash: bytes, peer_nonce: bytes) -> bytes:
    """What an AUTH signs: context, transcript, the nonce of the side being convinced."""
    return AUTH_CONTEXT + transcript_hash + peer_nonce


Tamper = Callable[[str, bytes], list[bytes]]


@dataclass
class Wire:
    """Moves frames between two sans-I/O sessions, in order, with an optional tamperer.

    The sessions hand out their frames in the clear (``defer_sealing``) and the wire seals
    each as the sending session would before delivering it, so ``tamper`` plays a hostile
    *peer*: ``tamper(direction, frame)`` sees every frame in the clear (direction ``"a>b"``
    or ``"b>a"``) and returns what its sender sends instead: ``[frame]`` to pass, ``[]`` to
    drop, or altered frames (sealed by the sender's own link). ``tap(direction, wire)`` sees
    the sealed bytes on the wire and returns what arrives (a man in the middle, who has no
    keys). ``log`` keeps every frame each side made, in the clear, before tampering;
    ``wire_log`` the bytes that went on the wire.
    """

    a: Session
    b: Session
    now: float = 0.0
    tamper: Tamper | None = None
    log: list[tuple[str, bytes]] = field(default_factory=list)
    tap: Tamper | None = None
    wire_log: list[tuple[str, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for session in (self.a, self.b):
            if not session.bytes_out:
                session.defer_sealing()

    def start(self, max_frames: int = 10_000) -> None:
        self.run(self.a.start(), self.b.start(), max_frames)

    def run(self, from_a: list[bytes], from_b: list[bytes], max_frames: int = 10_000) -> None:
        """Deliver frames until neither side has anything to say (bounded)."""
        queue: deque[tuple[str, bytes]] = deque([("a>b", f) for f in from_a] + [("b>a", f) for f in from_b])
        delivered = 0
        while queue:
            direction, frame = queue.popleft()
            self.log.append((direction, frame))
            sender = self.a if direction == "a>b" else self.b
            for out in self.tamper(direction, frame) if self.tamper else [frame]:
                sealed = sender.seal(out)
                self.wire_log.append((direction, sealed))
                for arrived in self.tap(direction, sealed) if self.tap else [sealed]:
                    delivered += 1
                    assert delivered <= max_frames, "the sessions did not go quiet"
                    target, back = (self.b, "b>a") if direction == "a>b" else (self.a, "a>b")
                    queue.extend((back, f) for f in target.receive(arrived, self.now))

    def sent(self, direction: str) -> list[Message]:
        return [decode(f) for d, f in self.log if d == direction]


@contextmanager
def replicas(root: Path, *names: str, **kwargs: Any) -> Iterator[list[Replica]]:
    """Replicas on ``root/name`` data directories, members of :data:`SPACE`, closed on exit."""
    opened = [admit(Replica(root / name, **kwargs)) for name in names]
    try:
        yield opened
    finally:
        for r in opened:
            r.close()
