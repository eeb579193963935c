"""Spaces of the relay load as issue 12 makes them: bound to a key, member-signed, encrypted.

Each space's first member (by device id) is its creator and admin: its chain opens with the
genesis and the keys of epoch 0 sealed to itself (seq 1), then grants every other member
write rights with the keys sealed to them (at most :data:`GRANTS_PER_ENVELOPE` a envelope).
Every other member's chain opens with one encrypted data envelope (what a device that synced
before left). Every edit's payload is encrypted (kind 3) under epoch 0. The relay sees what
a relay of issue 12 sees: membership records, and ciphertext it cannot read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: grants (with one keys record for their subjects) per envelope: under MAX_RECORDS (64)
GRANTS_PER_ENVELOPE = 60
#: the relay load's modes: the plain load (spaces named, plaintext payloads) or sealed spaces,
#: with the relay's membership enforcement off or on
MODES = {"crdt-sync": None, "crdt-sync-baseline": None, "crdt-sync-sealed": "sealed",
         "crdt-sync-members": "members"}


@dataclass
class SealedSpace:
    """One space's id, its key, and each member's envelopes before its edits."""

    space: str
    key: bytes
    epoch_id: bytes
    #: by member position: the envelopes of its chain that precede its edits
    heads: list[list[Any]] = field(default_factory=list)

    def payload(self, author: bytes, seq: int, body: bytes) -> bytes:
        from crdt_sync.space_crypto import encrypt_payload

        return encrypt_payload(self.key, self.epoch_id, self.space, author, seq, body)


def sealed_space(identities: list[Any], hlc0: int, first_body: bytes) -> SealedSpace:
    """The space the first of ``identities`` creates and shares with the others."""
    from crdt_sync.envelope import seal
    from crdt_sync.membership import (
        Rights,
        encode_membership,
        make_genesis,
        make_grant,
        make_keys,
        space_id_of,
    )
    from crdt_sync.space_crypto import new_epoch, new_key, seal_box

    admin, others = identities[0], identities[1:]
    genesis = make_genesis(admin, hlc0)
    sid = space_id_of(genesis)
    epoch_id, key = new_epoch()
    secret = new_key()
    out = SealedSpace(sid, key, epoch_id)
    tick = iter(range(1, 1 << 15))

    def keys(to: list[Any], hlc: int) -> Any:
        boxes = [(r.public_key, seal_box(r.public_key, key, secret)) for r in to]
        return make_keys(admin, sid, 0, epoch_id, boxes, hlc, genesis.hash)

    chain = [seal(admin, sid, 1, b"", hlc0, encode_membership([genesis, keys([admin], hlc0)]))]
    for lo in range(0, len(others), GRANTS_PER_ENVELOPE):
        chunk = others[lo:lo + GRANTS_PER_ENVELOPE]
        hlc = hlc0 + next(tick)
        records = [make_grant(admin, sid, o.public_key, Rights.WRITE, (), 0, hlc, genesis.hash)
                   for o in chunk]
        chain.append(seal(admin, sid, len(chain) + 1, chain[-1].hash, hlc,
                          encode_membership([*records, keys(chunk, hlc)])))
    out.heads.append(chain)
    at = hlc0 + (1 << 15)  # after every grant, before every edit
    for ident in others:
        out.heads.append([seal(ident, sid, 1, b"", at, out.payload(ident.public_key, 1, first_body))])
    return out
