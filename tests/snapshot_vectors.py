"""Deterministic snapshot test vectors: `python -m tests.snapshot_vectors` prints the table of
docs/PROTOCOL.md, "Snapshots", "Test vector"; tests/test_snapshots.py checks that the table is
what the code makes and that the record reads back (signature, decryption, body).

Fixed keys (Alice's seed 01 x 32, the crypto vectors' epoch key 00..1f), a fixed nonce
(40..57) and codec 0 (no zstd frame, whose bytes may change with the zstd version): the
AEAD and Ed25519 are deterministic, so every byte is fixed.
"""

from __future__ import annotations

import cbor2

from crdt_sync import snapshot as sn
from crdt_sync.protocol.messages import SnapshotAck, SnapshotChunk, encode
from crdt_sync.snapshot_transfer import encode_transfer
from crdt_sync.space_crypto import epoch_id_of
from tests import crypto_vectors as cv
from tests import data_vectors as dv

ALICE, BOB = dv.ALICE, dv.BOB
SPACE_ID = cv.SPACE_ID
EPOCH_KEY = cv.EPOCH_KEY
EPOCH_ID = epoch_id_of(EPOCH_KEY)
NONCE = cv.NONCE
HLC = dv.H
#: Alice's chain covered up to seq 2, Bob's up to seq 1, with made-up head hashes
COVERED = ((ALICE.public_key, 2, bytes([0x33]) * 32), (BOB.public_key, 1, bytes([0x44]) * 32))
DATA = {name: data for name, _what, data in dv.vectors()}
#: one entity: the data vectors' pump-7, its state the data vectors' update (status = "ok")
ENTITIES = [(dv.COLLECTION, dv.ENTITY, DATA["update"])]


def build() -> sn.Snapshot:
    body = sn.encode_body(ENTITIES)
    return sn.make_snapshot(ALICE, SPACE_ID, HLC, COVERED, EPOCH_KEY, EPOCH_ID, ENTITIES,
                            nonce=NONCE, plaintext=b"\x00" + body)


def vectors() -> list[tuple[str, str, bytes]]:
    snap = build()
    covered = sorted(COVERED)
    body = sn.encode_body(ENTITIES)
    return [
        ("covered", "canonical CBOR of the covered vector: [[Bob's key, 1, 44 x 32], [Alice's key, 2, "
                    "33 x 32]] (ascending by key)", cbor2.dumps([list(c) for c in covered], canonical=True)),
        ("covered digest", "BLAKE2b-256 of the covered vector's CBOR", sn.covered_digest(tuple(covered))),
        ("associated data", f"canonical CBOR [\"crdt-sync/1 snapshot\", space, Alice's key, hlc {HLC:#x}, "
                            "epoch id, covered digest]",
         sn.associated_data(SPACE_ID, ALICE.public_key, HLC, EPOCH_ID, tuple(covered))),
        ("body", f"canonical CBOR [[\"{dv.COLLECTION}\", \"{dv.ENTITY}\", the data vectors' update]]", body),
        ("signature input", "\"crdt-sync/1 snapshot\" then canonical CBOR [1, space, Alice's key, hlc, "
                            "covered, epoch id, nonce 40..57, ciphertext]: the bytes Ed25519 signs",
         sn.signed_bytes(SPACE_ID, ALICE.public_key, HLC, snap.covered, EPOCH_ID, NONCE, snap.ciphertext)),
        ("snapshot", "the record: CBOR [1, space, Alice's key, hlc, covered, epoch id, nonce, "
                     "XChaCha20-Poly1305 of byte 00 (codec) then the body under the epoch key "
                     "000102..1f with the associated data, signature]", snap.wire),
    ]


def session_vectors() -> list[tuple[str, str, bytes]]:
    """The frames of "Snapshots in sessions": the record above in one chunk."""
    snap = build()
    transfer = encode_transfer(snap.wire, [])
    size = len(transfer)
    return [
        ("transfer", "canonical CBOR [the snapshot record above, []] (no membership envelopes: "
                     "what a device pushes to a relay)", transfer),
        ("SNAPSHOT", f"space 0, id = BLAKE2b-256 of the record, total {size}, offset 0, the whole "
                     "transfer as one chunk, bases [[Bob's key, 1]] (the sender holds Bob's chain "
                     "only from seq 1)",
         encode(SnapshotChunk(0, snap.hash, size, 0, transfer, [(BOB.public_key, 1)]))),
        ("SNAPSHOT_ACK", f"space 0, the same id, all {size} bytes received, verdict \"applied\", "
                         "no detail", encode(SnapshotAck(0, snap.hash, size, "applied", ""))),
    ]


def markdown(rows: list[tuple[str, str, bytes]] | None = None) -> str:
    lines = ["| vector | what | bytes (hex) |", "| --- | --- | --- |"]
    for name, what, data in vectors() if rows is None else rows:
        lines.append(f"| {name} | {what} | `{data.hex()}` |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
    print()
    print(markdown(session_vectors()))
