"""A small world for membership tests: devices with chains, records made and carried as a
replica would (each author's envelopes numbered 1, 2, ...), and the log fed in any order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from crdt_sync.identity import Identity
from crdt_sync.membership import (
    Carrier,
    Genesis,
    Invite,
    MembershipLog,
    Record,
    Rights,
    make_genesis,
    make_grant,
    make_invite,
    make_keys,
    make_redeem,
    make_revoke,
    space_id_of,
)

WALL_MS = 1_767_225_600_000  # 2026-01-01T00:00:00.000Z
DAY_MS = 24 * 3600 * 1000


def hlc(ms: int, counter: int = 0) -> int:
    return (WALL_MS + ms) << 16 | counter


def key(n: int) -> Identity:
    return Identity(bytes([n]) * 32)


ADMIN, BOB, CAROL, DAVE, ERIN = key(1), key(2), key(3), key(4), key(5)


@dataclass(frozen=True)
class Delivery:
    """One envelope's worth of records, as a log receives it."""

    records: tuple[Record, ...]
    carrier: Carrier | None


@dataclass
class World:
    """One space and the envelopes its devices sent, in the order they were made."""

    creator: Identity = ADMIN
    genesis: Genesis = field(init=False)
    space: str = field(init=False)
    seqs: dict[bytes, int] = field(default_factory=dict)
    sent: list[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.genesis = make_genesis(self.creator, hlc(0), nonce=bytes(16))
        self.space = space_id_of(self.genesis)
        self.send(self.creator, [self.genesis], hlc(0))

    def send(self, author: Identity, records: Sequence[Record], at: int, seq: int | None = None) -> Delivery:
        """Carry ``records`` in ``author``'s next envelope (or at ``seq``)."""
        if seq is None:
            seq = self.seqs.get(author.public_key, 0) + 1
        self.seqs[author.public_key] = max(seq, self.seqs.get(author.public_key, 0))
        delivery = Delivery(tuple(records), Carrier(author.public_key, seq, at))
        self.sent.append(delivery)
        return delivery

    def write(self, author: Identity) -> int:
        """A data envelope of ``author``: just its next seq."""
        seq = self.seqs.get(author.public_key, 0) + 1
        self.seqs[author.public_key] = seq
        return seq

    def grant(self, issuer: Identity, proof: bytes, subject: Identity, rights: Rights = Rights.WRITE,
              scope: Sequence[bytes] = (), not_after_ms: int = 0, at: int = hlc(1000),
              space: str | None = None) -> Record:
        record = make_grant(issuer, space or self.space, subject.public_key, rights, scope, not_after_ms, at,
                            proof)
        self.send(issuer, [record], at)
        return record

    def revoke(self, issuer: Identity, proof: bytes, subject: Identity, after_seq: int,
               at: int = hlc(2000)) -> Record:
        record = make_revoke(issuer, self.space, subject.public_key, after_seq, at, proof)
        self.send(issuer, [record], at)
        return record

    def invite(self, issuer: Identity, proof: bytes, invite_key: Identity, rights: Rights = Rights.WRITE,
               at: int = hlc(1000), days: int = 7, grant_not_after_ms: int = 0,
               publish: bool = True, scope: Sequence[bytes] = ()) -> Invite:
        record = make_invite(issuer, self.space, invite_key.public_key, rights, scope,
                             (at >> 16) + days * DAY_MS, grant_not_after_ms, True, at, proof)
        if publish:
            self.send(issuer, [record], at)
        return record

    def redeem(self, invite_key: Identity, invite: Invite, joiner: Identity, at: int = hlc(3000)) -> Delivery:
        redeem = make_redeem(invite_key, self.space, joiner.public_key, at, invite.hash)
        return self.send(invite_key, [invite, redeem], at, seq=1)

    def keys(self, issuer: Identity, proof: bytes, n: int, recipients: Iterable[bytes],
             at: int = hlc(4000)) -> Record:
        boxes = [(r, b"sealed" + r[:4]) for r in recipients]
        record = make_keys(issuer, self.space, n, bytes([n]) * 16, boxes, at, proof)
        self.send(issuer, [record], at)
        return record

    def log(self, deliveries: Iterable[Delivery] | None = None) -> MembershipLog:
        log = MembershipLog(self.space)
        for delivery in self.sent if deliveries is None else deliveries:
            log.add(delivery.records, delivery.carrier)
        return log
