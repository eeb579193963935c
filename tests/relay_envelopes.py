"""Hand-made spaces and envelopes for the relay's membership tests, and a bare sync host that
pushes and pulls them through a real relay over loopback.

:class:`SpaceMaker` makes a space as a device would (a genesis and the creator's keys record
in seq 1, encrypted data, grants with their keys boxes, revocations with a rotation, invites
and their redemptions) with :mod:`crdt_sync.membership`, :mod:`crdt_sync.space_crypto` and
:mod:`crdt_sync.envelope`, each author's chain numbered as a replica numbers it; nothing of
the device side (``Replica``) is involved. :class:`EnvelopeHost` is a
:class:`~crdt_sync.protocol.SyncHost` over a dict: it offers the envelopes it holds, keeps
what the relay sends and the QUARANTINED notices it gets; :func:`exchange` runs one session
of it against a relay (a real :class:`~crdt_sync.protocol.Session`, a real WebSocket).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cbor2

from crdt_sync import forks
from crdt_sync.envelope import Envelope, open_envelope, seal
from crdt_sync.identity import Identity
from crdt_sync.membership import (
    Genesis,
    Invite,
    Record,
    Rights,
    encode_membership,
    make_genesis,
    make_grant,
    make_invite,
    make_keys,
    make_redeem,
    make_revoke,
    space_id_of,
)
from crdt_sync.protocol import Session, SessionConfig
from crdt_sync.protocol.events import Quarantined
from crdt_sync.quarantine import SetAside
from crdt_sync.results import Accepted
from crdt_sync.space_crypto import encrypt_payload, new_epoch, new_key, seal_box
from crdt_sync.transports.driver import Hooks, SessionOutcome, drive
from crdt_sync.transports.websocket import connect
from tests.relay_helpers import FAST
from tests.sync_helpers import WAIT

_counter = itertools.count(1)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def hlc_at(ms: int) -> int:
    """An HLC at wall time ``ms`` (a fresh counter, so that clocks made in a row differ)."""
    return ms << 16 | (next(_counter) & 0xFFFF)


def identity() -> Identity:
    return Identity.generate()


@dataclass
class SpaceMaker:
    """One space, made by ``creator``: its records, its keys, and its authors' chains."""

    __test__ = False  # (not a test class)

    creator: Identity
    genesis: Genesis = field(init=False)
    space: str = field(init=False)
    secret: bytes = field(default_factory=new_key)
    epochs: list[tuple[bytes, bytes]] = field(default_factory=list)  # (epoch id, key), by n
    #: author key -> (last seq, last hash) of its chain in this space
    heads: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    #: device key -> the hash it quotes as its proof (its grant; the genesis for the creator)
    authority: dict[bytes, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.genesis = make_genesis(self.creator, hlc_at(now_ms()))
        self.space = space_id_of(self.genesis)
        self.epochs.append(new_epoch())
        self.authority[self.creator.public_key] = self.genesis.hash

    # -- envelopes ---------------------------------------------------------------------------
    def envelope(self, author: Identity, payload: bytes, hlc: int | None = None,
                 seq: int | None = None, space: str | None = None) -> Envelope:
        """``author``'s next envelope in this space (or at ``seq``, which forks it when taken)."""
        last, prev = self.heads.get(author.public_key, (0, b""))
        if seq is None:
            seq = last + 1
        elif seq == 1:
            prev = b""
        env = seal(author, space or self.space, seq, prev, hlc if hlc is not None else hlc_at(now_ms()),
                   payload)
        if seq > last:
            self.heads[author.public_key] = (seq, env.hash)
        return env

    def carry(self, author: Identity, records: Sequence[Record], hlc: int | None = None,
              seq: int | None = None, space: str | None = None) -> Envelope:
        """A membership envelope (kind 4) of ``author`` carrying ``records``."""
        at = hlc if hlc is not None else max(r.hlc for r in records) + 1
        return self.envelope(author, encode_membership(records), at, seq, space)

    def data(self, author: Identity, body: bytes = b"field data", hlc: int | None = None,
             epoch: int = -1) -> Envelope:
        """An encrypted data envelope (kind 3) of ``author`` under an epoch (the latest)."""
        last, _ = self.heads.get(author.public_key, (0, b""))
        epoch_id, key = self.epochs[epoch]
        payload = encrypt_payload(key, epoch_id, self.space, author.public_key, last + 1, body)
        return self.envelope(author, payload, hlc)

    def plaintext(self, author: Identity) -> Envelope:
        """A kind-2 (plaintext) data envelope, as devices sent before encryption."""
        return self.envelope(author, cbor2.dumps([2, [["site", "a", b"\x00"]]]))

    # -- records -------------------------------------------------------------------------------
    def keys_record(self, issuer: Identity, recipients: Sequence[bytes], epoch: int = -1,
                    hlc: int | None = None) -> Record:
        epoch_id, key = self.epochs[epoch]
        n = epoch % len(self.epochs)
        return make_keys(issuer, self.space, n, epoch_id,
                         [(r, seal_box(r, key, self.secret)) for r in recipients],
                         hlc if hlc is not None else hlc_at(now_ms()), self.authority[issuer.public_key])

    def open(self) -> Envelope:
        """Seq 1 of the creator: the genesis and the keys of epoch 0 sealed to the creator."""
        keys = self.keys_record(self.creator, [self.creator.public_key])
        return self.carry(self.creator, [self.genesis, keys])

    def grant_record(self, subject: bytes, rights: Rights = Rights.WRITE, issuer: Identity | None = None,
                     scope: Sequence[bytes] = (), not_after_ms: int = 0, hlc: int | None = None,
                     proof: bytes | None = None, space: str | None = None) -> Record:
        issuer = issuer or self.creator
        record = make_grant(issuer, space or self.space, subject, rights, scope, not_after_ms,
                            hlc if hlc is not None else hlc_at(now_ms()),
                            proof if proof is not None else self.authority[issuer.public_key])
        self.authority.setdefault(subject, record.hash)
        return record

    def grant(self, subject: bytes, rights: Rights = Rights.WRITE, issuer: Identity | None = None,
              not_after_ms: int = 0, scope: Sequence[bytes] = ()) -> Envelope:
        """A grant to ``subject`` and a keys record sealing the epochs to it, in one envelope
        of the issuer's chain (what ``Replica.grant`` publishes)."""
        issuer = issuer or self.creator
        grant = self.grant_record(subject, rights, issuer, scope, not_after_ms)
        keys = self.keys_record(issuer, [subject])
        return self.carry(issuer, [grant, keys])

    def revoke(self, subject: Identity, after_seq: int, readers: Sequence[bytes],
               issuer: Identity | None = None) -> Envelope:
        """A revocation of ``subject`` after ``after_seq`` and a rotation: a new epoch sealed
        to ``readers`` (what ``Replica.revoke`` publishes)."""
        issuer = issuer or self.creator
        revoke = make_revoke(issuer, self.space, subject.public_key, after_seq, hlc_at(now_ms()),
                             self.authority[issuer.public_key])
        self.epochs.append(new_epoch())
        return self.carry(issuer, [revoke, self.keys_record(issuer, readers)])

    def invite(self, rights: Rights = Rights.WRITE, expires_ms: int = 7 * 24 * 3600 * 1000,
               issuer: Identity | None = None) -> tuple[Envelope, Invite, Identity]:
        """An invite published in the issuer's chain; with the record and its one-time key."""
        issuer = issuer or self.creator
        one_time = Identity.generate()
        at = now_ms()
        invite = make_invite(issuer, self.space, one_time.public_key, rights, (), at + expires_ms, 0, True,
                             hlc_at(at), self.authority[issuer.public_key])
        return self.carry(issuer, [invite]), invite, one_time

    def redeem(self, invite: Invite, one_time: Identity, joiner: bytes) -> Envelope:
        """Seq 1 of the invite key's chain: the invite and a redeem naming ``joiner``."""
        redeem = make_redeem(one_time, self.space, joiner, hlc_at(now_ms()), invite.hash)
        self.authority.setdefault(joiner, redeem.hash)
        return self.carry(one_time, [invite, redeem], seq=1)


class EnvelopeHost:
    """A bare sync host holding envelopes in memory (see the module)."""

    keeps_all_spaces = False

    def __init__(self, device: Identity, *envelopes: Envelope, spaces: Sequence[str] = ()) -> None:
        self.identity = device
        self.spaces = set(spaces)  # named to the relay even when nothing of them is held
        self.device_id = device.id
        #: space -> (author, seq) -> envelope, and each space's envelopes in arrival order
        self.held: dict[str, dict[tuple[str, int], Envelope]] = {}
        self.order: dict[str, list[Envelope]] = {}
        self.proofs: dict[str, list[bytes]] = {}
        #: the QUARANTINED notices of the relay: (space, author, from_seq, reason)
        self.refused: list[tuple[str, str, int, str]] = []
        #: (peer, space) -> what the peer acknowledged holding
        self.acked: dict[tuple[str, str], dict[str, int]] = {}
        self._grew: asyncio.Event | None = None
        #: the hooks of its live session (set by :func:`exchange`): :meth:`push` wakes it
        self.hooks: Hooks | None = None
        self.add(*envelopes)

    @property
    def sync_host(self) -> EnvelopeHost:
        """Itself (what :class:`~tests.relay_helpers.RawPeer` runs a session against)."""
        return self

    def push(self, *envelopes: Envelope) -> None:
        """New envelopes of this device: its live session sends them."""
        self.add(*envelopes)
        if self.hooks is not None:
            self.hooks.changed.set()

    def add(self, *envelopes: Envelope) -> None:
        for env in envelopes:
            if (env.author, env.seq) not in self.held.setdefault(env.space, {}):
                self.held[env.space][(env.author, env.seq)] = env
                self.order.setdefault(env.space, []).append(env)
                if self._grew is not None:
                    self._grew.set()

    async def until(self, check: Callable[[], bool], what: str) -> None:
        """Wait (woken by each envelope this host takes) until ``check()`` holds."""
        self._grew = self._grew or asyncio.Event()
        try:
            async with asyncio.timeout(WAIT):
                while not check():
                    self._grew.clear()
                    await self._grew.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    def got(self, space: str, exclude: str | None = None) -> list[Envelope]:
        """What this host holds of ``space`` that is not ``exclude``'s chain."""
        return [e for e in self.order.get(space, []) if e.author != exclude]

    def reasons(self, space: str | None = None) -> set[str]:
        return {r for s, _a, _q, r in self.refused if space is None or s == space}

    # -- SyncHost --------------------------------------------------------------------------
    def admit(self, peer: str, relay: bool = False) -> str | None:
        return None

    def sync_spaces(self) -> list[str]:
        return sorted(set(self.held) | self.spaces)

    def version_vector(self, space: str) -> dict[str, int]:
        vv: dict[str, int] = {}
        held = self.held.get(space, {})
        for author, seq in sorted(held):
            if seq == vv.get(author, 0) + 1:
                vv[author] = seq
        return vv

    def missing_envelopes(self, space: str, covered: dict[str, int], max_count: int,
                          max_bytes: int) -> list[Envelope]:
        vv = self.version_vector(space)
        out = [e for e in self.order.get(space, [])
               if covered.get(e.author, 0) < e.seq <= vv.get(e.author, 0)]
        return sorted(out, key=lambda e: (e.seq, e.author))[:max_count]

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None:
        env = self.held.get(space, {}).get((author, seq))
        return env.hash if env is not None else None

    def envelope_wire(self, space: str, author: str, seq: int) -> bytes | None:
        env = self.held.get(space, {}).get((author, seq))
        return env.wire if env is not None else None

    def receive(self, envelopes: list[bytes], source: str, space: str | None = None,
                tolerate_gaps: bool = False) -> tuple[int, int, int]:
        got = self.accept(envelopes, source, space or "")
        return got.applied, got.duplicates, got.gaps

    def accept(self, envelopes: list[bytes], source: str, space: str) -> Accepted:
        applied = dups = 0
        for wire in envelopes:
            env = open_envelope(wire)
            if (env.author, env.seq) in self.held.get(env.space, {}):
                dups += 1
            else:
                self.add(env)
                applied += 1
        return Accepted(applied, dups, 0)

    def quarantined(self, space: str) -> dict[str, SetAside]:
        return {}

    def peer_refused(self, peer: str, space: str, author: str, from_seq: int, reason: str,
                     detail: str) -> None:
        self.refused.append((space, author, from_seq, reason))

    def record_ack(self, peer: str, space: str, vv: dict[str, int]) -> None:
        self.acked[(peer, space)] = dict(vv)

    # -- forks -------------------------------------------------------------------------------
    def fork_proofs(self, space: str) -> list[bytes]:
        return list(self.proofs.get(space, []))

    def fork_count(self, space: str) -> int:
        return len(self.proofs.get(space, []))

    def receive_fork_proof(self, proof: bytes, source: str, space: str | None = None) -> bool:
        checked = forks.verify(proof)
        mine = self.proofs.setdefault(checked.space, [])
        if proof in mine:
            return False
        mine.append(proof)
        return True


def own_space(device: Identity, count: int, tag: str = "e") -> tuple[SpaceMaker, list[Envelope]]:
    """A space ``device`` created, with ``count`` envelopes of its chain (the genesis
    carrier, then encrypted data)."""
    sp = SpaceMaker(device)
    return sp, [sp.open(), *(sp.data(device, f"{tag}-{i}".encode()) for i in range(1, count))]


async def exchange(host: EnvelopeHost, url: str, live_until: asyncio.Event | None = None,
                   spaces: list[str] | None = None, config: SessionConfig = FAST,
                   on_session: Callable[[Session], None] | None = None) -> SessionOutcome:
    """One session of ``host`` with the relay at ``url`` (one-shot unless ``live_until``)."""
    link = await connect(url)
    session = Session(host, time.monotonic(), config, spaces=spaces)
    if on_session is not None:
        on_session(session)
    hooks = host.hooks = Hooks()
    if live_until is not None:
        return await drive(session, link, hooks, live=True, stop=live_until)
    async with asyncio.timeout(2 * WAIT):
        return await drive(session, link, hooks, timeout=WAIT)


def notices(outcome: SessionOutcome) -> set[tuple[str, str]]:
    """``(author, reason)`` of each chain the relay set aside in a session."""
    return {(e.author, e.reason) for e in outcome.events if isinstance(e, Quarantined) and e.by_peer}
