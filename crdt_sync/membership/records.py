"""Membership records: the six signed kinds, their canonical wire form and a bounded decode.

Every record is ``cbor([1, kind, ...fields, signature])`` (canonical CBOR, one array). The
signature (Ed25519) is the issuer's over ``b"crdt-sync/1 record" || cbor([1, kind, ...fields])``;
``record_hash = BLAKE2b-256(wire)``. The field order and ranges of each kind are in
docs/DESIGN.md, "Membership", and in :func:`decode_record` below, which checks all of them
(sizes first, then types and ranges, then the canonical form, then the signature) and
raises :class:`crdt_sync.errors.Rejected` with reason ``bad-record``.

A record is self-contained: its issuer key is in it (the creator for a genesis, the invite
key for a redeem), so a decoded record's signature is already verified. Whether it *counts*
in a space is the membership log's question (:mod:`crdt_sync.membership.rules`).
"""

from __future__ import annotations

import base64
import enum
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, ClassVar

import cbor2

from .. import cbor_limits
from ..errors import Rejected
from ..hlc import COUNTER_BITS, MAX_HLC
from ..identity import Identity, verify

#: The record format this build writes and reads (the first item of every record).
RECORD_VERSION = 1
#: What the signature of every record covers, before the CBOR of its unsigned part.
SIGNING_PREFIX = b"crdt-sync/1 record"
#: Largest wire size of one record.
MAX_RECORD_BYTES = 64 * 1024
#: Most entries in a scope (collection digests).
MAX_SCOPE = 64
#: Most boxes in one keys record (the 64 KiB record bound allows about 420 of today's).
MAX_BOXES = 1024
#: Largest sealed box (today's: 117 bytes).
MAX_SEALED_BYTES = 1024
#: An invite expires at most this long after its own clock.
MAX_INVITE_MS = 30 * 24 * 3600 * 1000
#: Millisecond fields (expiries) hold a wall time that fits an HLC's wall part.
MAX_MS = 1 << (62 - COUNTER_BITS)
#: Sequence numbers (``after_seq``) and epoch numbers stay below SQLite's integer range.
MAX_SEQ = (1 << 63) - 1
SPACE_ID_LENGTH = 33
_B32 = frozenset("abcdefghijklmnopqrstuvwxyz234567")


class Rights(enum.IntEnum):
    """Each right includes the ones below it."""

    READ = 1
    WRITE = 2
    ADMIN = 3


class Kind(enum.IntEnum):
    GENESIS = 0
    GRANT = 1
    REVOKE = 2
    INVITE = 3
    REDEEM = 4
    KEYS = 5


def record_hash(wire: bytes) -> bytes:
    return blake2b(wire, digest_size=32).digest()


def wall_of(hlc: int) -> int:
    """The wall-clock milliseconds of an HLC (``hlc >> 16``)."""
    return hlc >> COUNTER_BITS


def scope_digest(scope_key: bytes, collection: str) -> bytes:
    """The scope entry naming ``collection``: BLAKE2b-128 keyed with the space's scope key."""
    return blake2b(collection.encode("utf-8"), key=scope_key, digest_size=16).digest()


# -- the six kinds -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Genesis:
    KIND: ClassVar[Kind] = Kind.GENESIS
    creator: bytes
    nonce: bytes
    hlc: int
    signature: bytes
    wire: bytes
    hash: bytes

    @property
    def issuer(self) -> bytes:
        return self.creator


@dataclass(frozen=True, slots=True)
class Grant:
    KIND: ClassVar[Kind] = Kind.GRANT
    space: str
    issuer: bytes
    subject: bytes
    rights: Rights
    scope: tuple[bytes, ...]
    not_after_ms: int
    hlc: int
    proof: bytes
    signature: bytes
    wire: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class Revoke:
    KIND: ClassVar[Kind] = Kind.REVOKE
    space: str
    issuer: bytes
    subject: bytes
    after_seq: int
    hlc: int
    proof: bytes
    signature: bytes
    wire: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class Invite:
    KIND: ClassVar[Kind] = Kind.INVITE
    space: str
    issuer: bytes
    invite_key: bytes
    rights: Rights
    scope: tuple[bytes, ...]
    not_after_ms: int
    grant_not_after_ms: int
    history: bool
    hlc: int
    proof: bytes
    signature: bytes
    wire: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class Redeem:
    KIND: ClassVar[Kind] = Kind.REDEEM
    space: str
    invite_key: bytes
    subject: bytes
    hlc: int
    proof: bytes
    signature: bytes
    wire: bytes
    hash: bytes

    @property
    def issuer(self) -> bytes:
        return self.invite_key


@dataclass(frozen=True, slots=True)
class Keys:
    KIND: ClassVar[Kind] = Kind.KEYS
    space: str
    issuer: bytes
    epoch_n: int
    epoch_id: bytes
    boxes: tuple[tuple[bytes, bytes], ...]
    hlc: int
    proof: bytes
    signature: bytes
    wire: bytes
    hash: bytes

    def box_for(self, device: bytes) -> bytes | None:
        for key, sealed in self.boxes:
            if key == device:
                return sealed
        return None


Record = Genesis | Grant | Revoke | Invite | Redeem | Keys


# -- decoding ------------------------------------------------------------------------------------
def _bad(detail: str) -> Rejected:
    return Rejected("bad-record", detail)


class _Fields:
    """Reads the fields of one decoded record in order, checking each one's type and range."""

    __slots__ = ("_at", "_items", "_kind")

    def __init__(self, items: list[Any], kind: Kind) -> None:
        self._items = items
        self._at = 2
        self._kind = kind.name.lower()

    def _next(self, what: str) -> Any:
        value = self._items[self._at]
        self._at += 1
        return value

    def _where(self, what: str) -> str:
        return f"{self._kind} field {self._at - 1} ({what})"

    def key(self, what: str) -> bytes:
        value = self._next(what)
        if type(value) is not bytes or len(value) != 32:
            raise _bad(f"{self._where(what)} is not a 32-byte key")
        return value

    def fixed(self, what: str, size: int) -> bytes:
        value = self._next(what)
        if type(value) is not bytes or len(value) != size:
            raise _bad(f"{self._where(what)} is not {size} bytes")
        return value

    def uint(self, what: str, end: int) -> int:
        value = self._next(what)
        if type(value) is not int or not 0 <= value < end:
            raise _bad(f"{self._where(what)} is not an integer in [0, {end})")
        return value

    def flag(self, what: str) -> bool:
        value = self._next(what)
        if type(value) is not bool:
            raise _bad(f"{self._where(what)} is not true or false")
        return value

    def rights(self) -> Rights:
        value = self._next("rights")
        if type(value) is not int or not 1 <= value <= 3:
            raise _bad(f"{self._where('rights')} is not 1 (read), 2 (write) or 3 (admin)")
        return Rights(value)

    def space(self) -> str:
        value = self._next("space id")
        if not is_space_id(value):
            raise _bad(f"{self._where('space id')} is not a space id ('s' + 32 base32 characters)")
        return str(value)

    def scope(self) -> tuple[bytes, ...]:
        value = self._next("scope")
        if type(value) is not list or len(value) > MAX_SCOPE:
            raise _bad(f"{self._where('scope')} is not an array of at most {MAX_SCOPE} digests")
        if any(type(d) is not bytes or len(d) != 16 for d in value):
            raise _bad(f"{self._where('scope')} holds an entry that is not a 16-byte digest")
        if any(a >= b for a, b in itertools.pairwise(value)):
            raise _bad(f"{self._where('scope')} is not sorted and unique")
        return tuple(value)

    def boxes(self) -> tuple[tuple[bytes, bytes], ...]:
        value = self._next("boxes")
        if type(value) is not list or len(value) > MAX_BOXES:
            raise _bad(f"{self._where('boxes')} is not an array of at most {MAX_BOXES} boxes")
        out = []
        for box in value:
            if not (type(box) is list and len(box) == 2 and type(box[0]) is bytes and len(box[0]) == 32
                    and type(box[1]) is bytes and 0 < len(box[1]) <= MAX_SEALED_BYTES):
                raise _bad(f"{self._where('boxes')} holds an entry that is not "
                           f"[recipient key (32 bytes), sealed (1..{MAX_SEALED_BYTES} bytes)]")
            out.append((box[0], box[1]))
        if any(a[0] >= b[0] for a, b in itertools.pairwise(out)):
            raise _bad(f"{self._where('boxes')} is not sorted by recipient key and unique")
        return tuple(out)


#: Items in the whole record array, by kind (version, kind, fields, signature).
_LENGTHS = {Kind.GENESIS: 6, Kind.GRANT: 11, Kind.REVOKE: 9, Kind.INVITE: 13, Kind.REDEEM: 8,
            Kind.KEYS: 10}


def is_space_id(value: object) -> bool:
    return (type(value) is str and len(value) == SPACE_ID_LENGTH and value[0] == "s"
            and set(value[1:]) <= _B32)


def decode_record(wire: bytes) -> Record:
    """Decode and verify one record.

    Raises:
        Rejected: reason ``bad-record``, the detail naming the first thing wrong.
    """
    if type(wire) is not bytes:
        raise _bad("a record is a CBOR byte string")
    if len(wire) > MAX_RECORD_BYTES:
        raise _bad(f"record of {len(wire)} bytes exceeds {MAX_RECORD_BYTES}")
    try:
        items = cbor_limits.loads(wire, max_depth=3, max_items=3 * MAX_BOXES + 16)
    except ValueError as exc:  # CborLimitError included
        raise _bad(f"not one canonical CBOR item: {exc}") from None
    if type(items) is not list or len(items) < 3:
        raise _bad("a record is an array [version, kind, ..., signature]")
    if items[0] != RECORD_VERSION or type(items[0]) is not int:
        raise _bad(f"record format {items[0]!r}; this build reads format {RECORD_VERSION}: "
                   "upgrade crdt-sync to read it")
    if type(items[1]) is not int or items[1] not in _LENGTHS:
        raise _bad(f"unknown record kind {items[1]!r}")
    kind = Kind(items[1])
    if len(items) != _LENGTHS[kind]:
        raise _bad(f"a {kind.name.lower()} record has {_LENGTHS[kind]} items, not {len(items)}")
    signature = items[-1]
    if type(signature) is not bytes or len(signature) != 64:
        raise _bad("the signature is not 64 bytes")
    if not cbor_limits.is_canonical(items, wire):
        raise _bad("not canonical CBOR")
    record = _build(kind, _Fields(items, kind), signature, wire)
    signed = SIGNING_PREFIX + cbor2.dumps(items[:-1], canonical=True)
    if not verify(record.issuer, signed, signature):
        raise _bad(f"the {kind.name.lower()} record's signature does not verify with its issuer's key")
    return record


def _build(kind: Kind, f: _Fields, sig: bytes, wire: bytes) -> Record:
    digest = record_hash(wire)
    if kind is Kind.GENESIS:
        return Genesis(f.key("creator key"), f.fixed("nonce", 16), f.uint("hlc", MAX_HLC), sig, wire, digest)
    space = f.space()
    if kind is Kind.GRANT:
        return Grant(space, f.key("issuer key"), f.key("subject key"), f.rights(), f.scope(),
                     f.uint("not_after_ms", MAX_MS), f.uint("hlc", MAX_HLC), f.key("proof"), sig, wire,
                     digest)
    if kind is Kind.REVOKE:
        return Revoke(space, f.key("issuer key"), f.key("subject key"), f.uint("after_seq", MAX_SEQ),
                      f.uint("hlc", MAX_HLC), f.key("proof"), sig, wire, digest)
    if kind is Kind.INVITE:
        invite = Invite(space, f.key("issuer key"), f.key("invite key"), f.rights(), f.scope(),
                        f.uint("not_after_ms", MAX_MS), f.uint("grant_not_after_ms", MAX_MS),
                        f.flag("history"), f.uint("hlc", MAX_HLC), f.key("proof"), sig, wire, digest)
        if not wall_of(invite.hlc) < invite.not_after_ms <= wall_of(invite.hlc) + MAX_INVITE_MS:
            raise _bad("an invite's not_after_ms must be after its hlc and at most 30 days after it")
        return invite
    if kind is Kind.REDEEM:
        return Redeem(space, f.key("invite key"), f.key("subject key"), f.uint("hlc", MAX_HLC),
                      f.key("proof"), sig, wire, digest)
    return Keys(space, f.key("issuer key"), f.uint("epoch_n", MAX_SEQ), f.fixed("epoch_id", 16), f.boxes(),
                f.uint("hlc", MAX_HLC), f.key("proof"), sig, wire, digest)


# -- making records ------------------------------------------------------------------------------
def _sign(identity: Identity, body: list[Any]) -> Record:
    """Sign ``body`` (``[1, kind, ...fields]``) and return the record as a reader decodes it.

    Raises:
        ValueError: a field is out of range (the detail of the decoder's refusal).
    """
    signature = identity.sign(SIGNING_PREFIX + cbor2.dumps(body, canonical=True))
    wire = cbor2.dumps([*body, signature], canonical=True)
    try:
        return decode_record(wire)
    except Rejected as exc:
        raise ValueError(exc.detail) from None


def _scope(scope: Sequence[bytes]) -> list[bytes]:
    return sorted(set(scope))


def make_genesis(identity: Identity, hlc: int, nonce: bytes | None = None) -> Genesis:
    """The genesis of a new space created by ``identity`` (a random 16-byte nonce unless given)."""
    nonce = os.urandom(16) if nonce is None else nonce
    record = _sign(identity, [RECORD_VERSION, Kind.GENESIS, identity.public_key, nonce, hlc])
    assert isinstance(record, Genesis)
    return record


def space_id_of(genesis: Genesis) -> str:
    """``"s" + b32(BLAKE2b-160(genesis wire))``: 33 characters."""
    digest = blake2b(genesis.wire, digest_size=20).digest()
    return "s" + base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def make_grant(identity: Identity, space: str, subject: bytes, rights: Rights | int,
               scope: Sequence[bytes], not_after_ms: int, hlc: int, proof: bytes) -> Grant:
    record = _sign(identity, [RECORD_VERSION, Kind.GRANT, space, identity.public_key, subject, int(rights),
                              _scope(scope), not_after_ms, hlc, proof])
    assert isinstance(record, Grant)
    return record


def make_revoke(identity: Identity, space: str, subject: bytes, after_seq: int, hlc: int,
                proof: bytes) -> Revoke:
    record = _sign(identity, [RECORD_VERSION, Kind.REVOKE, space, identity.public_key, subject, after_seq,
                              hlc, proof])
    assert isinstance(record, Revoke)
    return record


def make_invite(identity: Identity, space: str, invite_key: bytes, rights: Rights | int,
                scope: Sequence[bytes], not_after_ms: int, grant_not_after_ms: int, history: bool,
                hlc: int, proof: bytes) -> Invite:
    record = _sign(identity, [RECORD_VERSION, Kind.INVITE, space, identity.public_key, invite_key,
                              int(rights), _scope(scope), not_after_ms, grant_not_after_ms, bool(history),
                              hlc, proof])
    assert isinstance(record, Invite)
    return record


def make_redeem(invite_identity: Identity, space: str, subject: bytes, hlc: int, proof: bytes) -> Redeem:
    """The joiner's redemption, signed by the invite's one-time key; ``proof`` = the invite's hash."""
    record = _sign(invite_identity, [RECORD_VERSION, Kind.REDEEM, space, invite_identity.public_key,
                                     subject, hlc, proof])
    assert isinstance(record, Redeem)
    return record


def make_keys(identity: Identity, space: str, epoch_n: int, epoch_id: bytes,
              boxes: Sequence[tuple[bytes, bytes]], hlc: int, proof: bytes) -> Keys:
    """A keys record; ``boxes`` are ``(recipient key, sealed)`` in any order (sorted here)."""
    ordered = sorted((bytes(k), bytes(s)) for k, s in boxes)
    if len({k for k, _s in ordered}) != len(ordered):
        raise ValueError("two boxes for one recipient")
    record = _sign(identity, [RECORD_VERSION, Kind.KEYS, space, identity.public_key, epoch_n, epoch_id,
                              [list(b) for b in ordered], hlc, proof])
    assert isinstance(record, Keys)
    return record


__all__ = [
    "MAX_BOXES", "MAX_INVITE_MS", "MAX_RECORD_BYTES", "MAX_SCOPE", "RECORD_VERSION", "SIGNING_PREFIX",
    "Genesis", "Grant", "Invite", "Keys", "Kind", "Record", "Redeem", "Revoke", "Rights",
    "decode_record", "is_space_id", "make_genesis", "make_grant", "make_invite", "make_keys",
    "make_redeem", "make_revoke", "record_hash", "scope_digest", "space_id_of", "wall_of",
]
