"""Deterministic membership test vectors: `python -m tests.membership_vectors` prints the table
of docs/DESIGN.md, "Membership", "Test vectors"; tests/test_membership_vectors.py checks that
the table is what the code makes and that every row means what its text says.

Ed25519 signatures are deterministic, and every random input (the genesis nonce, the invite
seed, the epoch key, the space secret) is fixed here, so every byte is reproducible.
"""

from __future__ import annotations

import cbor2

from crdt_sync.identity import Identity
from crdt_sync.membership import (
    Rights,
    encode_membership,
    encode_token,
    make_genesis,
    make_grant,
    make_invite,
    make_redeem,
    scope_digest,
    space_id_of,
)
from crdt_sync.membership.records import SIGNING_PREFIX

ALICE = Identity(bytes([1]) * 32)  # the same keys as docs/PROTOCOL.md's and the data layer's vectors
BOB = Identity(bytes([2]) * 32)
INVITE_KEY = Identity(bytes([9]) * 32)  # the one-time invite key
NONCE = bytes(range(16))
WALL_MS = 1_767_225_600_000  # 2026-01-01T00:00:00.000Z
H = WALL_MS << 16 | 1
DAY_MS = 24 * 3600 * 1000
SCOPE_KEY = bytes([0x5C]) * 32  # in a real space: derived from the space secret (see "Encryption")
SECRET = bytes([0x53]) * 32
EPOCH_ID, EPOCH_KEY = bytes([0xE0]) * 16, bytes([0x42]) * 32
LABEL = b"(the sealed label; see Encryption)"


def _build() -> dict[str, tuple[str, bytes]]:
    genesis = make_genesis(ALICE, H, nonce=NONCE)
    space = space_id_of(genesis)
    signed = SIGNING_PREFIX + cbor2.dumps([1, 0, ALICE.public_key, NONCE, H], canonical=True)
    notes = scope_digest(SCOPE_KEY, "notes")
    grant = make_grant(ALICE, space, BOB.public_key, Rights.WRITE, [notes], WALL_MS + 30 * DAY_MS,
                       H + (1000 << 16), genesis.hash)
    invite = make_invite(ALICE, space, INVITE_KEY.public_key, Rights.READ, [], WALL_MS + 7 * DAY_MS, 0, True,
                         H + (2000 << 16), genesis.hash)
    redeem = make_redeem(INVITE_KEY, space, BOB.public_key, H + (3000 << 16), invite.hash)
    token = encode_token(genesis, invite, INVITE_KEY.seed, [(0, EPOCH_ID, EPOCH_KEY)], SECRET, LABEL)
    return {
        "genesis signature input": ("\"crdt-sync/1 record\" then canonical CBOR [1, 0, Alice's key, nonce "
                                    "00 01 .. 0f, hlc 0x19b76daa8000001]: the bytes Ed25519 signs", signed),
        "genesis": ("CBOR [1, 0, creator key, nonce, hlc, signature]: Alice creates a space", genesis.wire),
        "genesis hash": ("BLAKE2b-256 of the genesis: the proof of the creator's records", genesis.hash),
        "space id": (f"\"s\" + base32 of BLAKE2b-160 of the genesis, as UTF-8: {space}",
                     space.encode("ascii")),
        "scope digest": ("BLAKE2b-128 of \"notes\" keyed with the scope key 5c 5c .. 5c", notes),
        "grant": ("Alice grants Bob write on [notes] until 2026-01-31 (not_after_ms 1769817600000), "
                  "hlc a second later, proof the genesis hash", grant.wire),
        "invite": ("Alice's invite: invite key of seed 09 09 .. 09, read, whole space, expires "
                   "2026-01-08, grant never expires, history true", invite.wire),
        "redeem": ("Bob's redemption, signed by the invite key, proof the invite's hash", redeem.wire),
        "membership payload": ("kind 4: CBOR [4, [invite, redeem]], the payload of the invite key's seq 1",
                               encode_membership([invite, redeem])),
        "token": ("the invite token text as ASCII: \"cs1\" + base64url (no padding) of CBOR [1, genesis, "
                  "invite, invite seed, [[0, epoch id e0.., epoch key 42..]], secret 53.., label]",
                  token.encode("ascii")),
    }


def vectors() -> list[tuple[str, str, bytes]]:
    return [(name, what, data) for name, (what, data) in _build().items()]


def markdown() -> str:
    rows = ["| vector | what | bytes (hex) |", "| --- | --- | --- |"]
    rows += [f"| {name} | {what} | `{data.hex()}` |" for name, what, data in vectors()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
