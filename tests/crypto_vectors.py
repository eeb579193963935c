"""Deterministic encryption test vectors: `python -m tests.crypto_vectors` prints the table of
docs/DESIGN.md, "Encryption", "Test vectors"; tests/test_crypto_vectors.py checks that the
table is what the code makes and that every row means what its text says.

Encryption draws nonces (and sealed boxes an ephemeral key) at random: the vectors fix the
nonce, and the two parts that this library cannot reproduce (a zstd frame, whose bytes
may change with the zstd version, and a sealed box) are fixed bytes here, each checked by
what it opens to.
"""

from __future__ import annotations

from hashlib import blake2b

import cbor2
from nacl.bindings import crypto_secretbox, crypto_sign_ed25519_pk_to_curve25519
from nacl.pwhash import argon2id
from nacl.secret import SecretBox

from crdt_sync import space_crypto as sc
from crdt_sync.payload import encode_payload
from tests import data_vectors as dv

ALICE, BOB = dv.ALICE, dv.BOB  # Ed25519 seeds 32 x 01 and 32 x 02
#: an arbitrary space id (real ones are the genesis record's hash: docs/DESIGN.md, "Membership")
SPACE_ID = "s" + "k" * 32
EPOCH_KEY = bytes(range(32))
SECRET = bytes(range(32, 64))
NONCE = bytes(range(0x40, 0x58))
SEQ = 1
NAME = "site-42"
PASSPHRASE = "correct horse battery staple"
SALT = bytes([0x11]) * 16
FILE_NONCE = bytes([0x22]) * 24
DATA = {name: data for name, _what, data in dv.vectors()}
#: the data vectors' item (status = "ok") under four entity ids: a body that compresses
BODY_ZSTD = encode_payload([(dv.COLLECTION, f"pump-{i}", DATA["item"]) for i in range(4)])
#: zstandard level 3 of BODY_ZSTD (one frame with its content size, no checksum)
ZSTD_FRAME = bytes.fromhex(
    "28b52ffd60e700550400f2471e2490b90dffff5787fe10d4bb918848f6d1e652b12622e9b71878774936e8614fef"
    "a3e79f528a2159e86e9b2f7236c9b4a6feac69072586c985372ffa429d7a09522864917238aec6c9f1868dc3c4bb"
    "5724b25850219e93a5f5dbd3c0631e2c33efae82ad2872ed72270a8409d5f95e36349fcae80752011e0104000"
    "4a452417a1552c6f3738802")
#: seal_box(Bob's key, EPOCH_KEY, SECRET), made once
BOX = bytes.fromhex(
    "4891b4487342b35516639473f8245ec6c516a526199f2d98f1e388bbc9d2d40de2ca0870b9c3b2c46579592162d6"
    "f00295446c3974d572429d22c5088a86b5475379bb98778ee3561a95aea021ef62ddde9a5954e30468dec2022287"
    "f73a38bb2786aa9e3462911c21d75aec605726f230c8ba321f")


def epoch_id() -> bytes:
    return blake2b(b"crdt-sync/1 epoch", key=EPOCH_KEY, digest_size=16).digest()


def associated_data() -> bytes:
    return cbor2.dumps(["crdt-sync/1 payload", SPACE_ID, ALICE.public_key, SEQ, epoch_id()], canonical=True)


def keyring_cbor() -> dict[str, list[object]]:
    return {SPACE_ID: [SECRET, [[0, epoch_id(), EPOCH_KEY]]]}


def contents() -> bytes:
    return cbor2.dumps({"device_seed": ALICE.seed, "spaces": keyring_cbor()}, canonical=True)


def _build() -> dict[str, tuple[str, bytes]]:
    ad = associated_data()
    body = DATA["payload"]
    label_key = blake2b(b"crdt-sync/1 label", key=SECRET, digest_size=32).digest()
    kdf = ["argon2id13", SALT, argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE]
    file_key = argon2id.kdf(32, PASSPHRASE.encode(), SALT, opslimit=kdf[2], memlimit=kdf[3])
    sealed_file = bytes(SecretBox(file_key).encrypt(contents(), FILE_NONCE))
    return {
        "epoch id": ("BLAKE2b-128 keyed with the epoch key 000102...1f of \"crdt-sync/1 epoch\"",
                     epoch_id()),
        "scope key": ("BLAKE2b-256 keyed with the space secret S = 2021...3f of \"crdt-sync/1 scope\"",
                      blake2b(b"crdt-sync/1 scope", key=SECRET, digest_size=32).digest()),
        "label key": ("BLAKE2b-256 keyed with S of \"crdt-sync/1 label\"", label_key),
        "associated data": (f"canonical CBOR [\"crdt-sync/1 payload\", \"{SPACE_ID}\", Alice's key, "
                            f"seq {SEQ}, the epoch id]", ad),
        "payload, codec 0": ("kind 3: CBOR [3, epoch id, nonce 404142...57, XChaCha20-Poly1305-IETF of "
                             "byte 00 (codec) then the data vectors' format-2 payload, with the "
                             "associated data above]",
                             sc.seal_payload(EPOCH_KEY, epoch_id(), NONCE, ad, b"\x00" + body)),
        "payload, codec 1": ("the same with plaintext byte 01 then a zstd frame (level 3) of the item under "
                             "entity ids pump-0..pump-3 (487 bytes, 148 compressed)",
                             sc.seal_payload(EPOCH_KEY, epoch_id(), NONCE, ad, b"\x01" + ZSTD_FRAME)),
        "x25519 key of Bob": ("crypto_sign_ed25519_pk_to_curve25519 of Bob's Ed25519 key: whom boxes "
                              "for Bob are sealed to",
                              crypto_sign_ed25519_pk_to_curve25519(BOB.public_key)),
        "box to Bob": ("crypto_box_seal of CBOR [epoch key, S] to Bob's X25519 key (ephemeral key, "
                       "then the box); Bob's seed opens it, Alice's does not", BOX),
        "label": (f"CBOR [nonce 404142...57, secretbox under the label key of \"{NAME}\"]",
                  cbor2.dumps([NONCE, crypto_secretbox(NAME.encode(), NONCE, label_key)], canonical=True)),
        "key file": ("DIR/keys without a passphrase: CBOR [1, null, contents], contents = CBOR "
                     "{\"device_seed\": Alice's seed, \"spaces\": {space: [S, [[0, epoch id, "
                     "epoch key]]]}}", cbor2.dumps([1, None, contents()], canonical=True)),
        "key file, sealed": (f"the same sealed with passphrase \"{PASSPHRASE}\": kdf [\"argon2id13\", "
                             f"salt 11 x 16, opslimit {kdf[2]}, memlimit {kdf[3]}], body = nonce 22 x 24 "
                             "then secretbox of the contents under the 32-byte Argon2id key",
                             cbor2.dumps([1, kdf, sealed_file], canonical=True)),
    }


def vectors() -> list[tuple[str, str, bytes]]:
    return [(name, what, data) for name, (what, data) in _build().items()]


def markdown() -> str:
    lines = ["| vector | what | bytes (hex) |", "| --- | --- | --- |"]
    for name, what, data in vectors():
        lines.append(f"| {name} | {what} | `{data.hex()}` |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
