"""End-to-end encryption primitives (crdt_sync/space_crypto.py): the kind-3 data payload,
key boxes, the label and the keyring. Each attack is tried on the real functions: a
payload tampered with in any byte or replayed under any other associated-data field, a
payload without its key, a zstd bomb, a box for someone else."""

from __future__ import annotations

import os

import cbor2
import pytest
import zstandard

from crdt_sync import space_crypto as sc
from crdt_sync.errors import Rejected
from crdt_sync.identity import Identity

ALICE = Identity(bytes([1]) * 32)
BOB = Identity(bytes([2]) * 32)
SPACE = "s" + "a" * 32
EPOCH_ID, KEY = sc.new_epoch()
KEYS = {EPOCH_ID: KEY}.get
#: a body that compresses (as real payloads of repeated field names do)
BODY = cbor2.dumps([2, [["equipment", f"pump-{i}", b"status ok " * 8] for i in range(20)]])


def encrypt(body: bytes = BODY, seq: int = 7, space: str = SPACE, author: bytes = ALICE.public_key,
            key: bytes = KEY, epoch_id: bytes = EPOCH_ID) -> bytes:
    return sc.encrypt_payload(key, epoch_id, space, author, seq, body)


def decrypt(payload: bytes, seq: int = 7, space: str = SPACE, author: bytes = ALICE.public_key,
            keys: object = KEYS) -> bytes:
    return sc.decrypt_payload(keys, space, author, seq, payload)  # type: ignore[arg-type]


def reason(call: object, *args: object) -> str:
    with pytest.raises(Rejected) as info:
        call(*args)  # type: ignore[operator]
    return info.value.reason


# -- the data payload ---------------------------------------------------------------------
@pytest.mark.parametrize("body", [b"", b"x", os.urandom(200), os.urandom(5000), os.urandom(70_000), BODY,
                                  b"a" * 100_000])
def test_round_trip(body: bytes) -> None:
    payload = encrypt(body)
    assert decrypt(payload) == body
    assert len(payload) <= len(body) + sc.PAYLOAD_OVERHEAD  # what a sealer must leave room for
    assert sc.epoch_of(payload) == EPOCH_ID and sc.payload_kind(payload) == sc.DATA_PAYLOAD
    top = cbor2.loads(payload)
    assert top[0] == 3 and top[1] == EPOCH_ID and len(top[2]) == 24
    assert cbor2.dumps(top, canonical=True) == payload  # the hand framing is canonical CBOR


def test_each_payload_has_its_own_nonce() -> None:
    assert cbor2.loads(encrypt())[2] != cbor2.loads(encrypt())[2]


def test_compression_only_where_it_saves_an_eighth() -> None:
    key = {EPOCH_ID: KEY}
    packed = sc.encode_plaintext(BODY)
    assert packed[0] == sc.CODEC_ZSTD and len(packed) - 1 <= len(BODY) * 7 // 8
    noise = os.urandom(4000)
    assert sc.encode_plaintext(noise) == b"\x00" + noise
    assert sc.encode_plaintext(b"ab" * 20) == b"\x00" + b"ab" * 20  # too short to try
    assert len(encrypt(BODY)) < len(BODY)  # the stored payload is the compressed one
    assert decrypt(encrypt(BODY), keys=key.get) == BODY


def test_the_ciphertext_is_encrypted_not_merely_compressed() -> None:
    payload = encrypt(BODY)
    ciphertext = cbor2.loads(payload)[3]
    assert b"pump" not in payload and b"equipment" not in payload
    for start in range(0, 8):  # no zstd frame hides at the start of it, codec byte or not
        with pytest.raises(zstandard.ZstdError):
            zstandard.ZstdDecompressor().decompress(ciphertext[start:])
    assert decrypt(payload) == BODY  # ...and the key opens it


@pytest.mark.parametrize("field", ["space", "author", "seq", "epoch"])
def test_a_payload_moved_to_another_place_does_not_decrypt(field: str) -> None:
    payload = encrypt()
    other_id, other_key = sc.new_epoch()
    if field == "space":
        assert reason(decrypt, payload, 7, "s" + "b" * 32) == "undecryptable"
    elif field == "author":
        assert reason(decrypt, payload, 7, SPACE, BOB.public_key) == "undecryptable"
    elif field == "seq":
        assert reason(decrypt, payload, 8) == "undecryptable"
    else:  # the epoch id rewritten to another epoch whose key the reader holds
        moved = payload.replace(EPOCH_ID, other_id, 1)
        both = {EPOCH_ID: KEY, other_id: other_key}.get
        assert reason(decrypt, moved, 7, SPACE, ALICE.public_key, both) == "undecryptable"
        # the same key under the other id: the id is in the associated data
        assert reason(decrypt, moved, 7, SPACE, ALICE.public_key, {other_id: KEY}.get) == "undecryptable"


def test_every_flipped_byte_is_refused() -> None:
    payload = encrypt(b"short body")
    for i in range(len(payload)):
        bad = bytearray(payload)
        bad[i] ^= 0x01
        with pytest.raises(Rejected) as info:
            decrypt(bytes(bad))
        assert info.value.reason in {"bad-payload", "undecryptable", "no-key"}, i


def test_without_the_key() -> None:
    assert reason(decrypt, encrypt(), 7, SPACE, ALICE.public_key, {}.get) == "no-key"
    _other_id, other_key = sc.new_epoch()
    assert reason(decrypt, encrypt(), 7, SPACE, ALICE.public_key, {EPOCH_ID: other_key}.get) \
        == "undecryptable"


@pytest.mark.parametrize("payload", [
    b"", b"\x84", b"\x84\x03\x50" + bytes(16), cbor2.dumps([2, []]), cbor2.dumps([3, b"", b"", b""]),
    cbor2.dumps([3, EPOCH_ID, bytes(24), b"short"]),  # shorter than a tag
    b"\x84\x03\x50" + EPOCH_ID + b"\x58\x18" + bytes(24) + b"\x58\x05" + bytes(5),  # non-canonical head
    b"\x84\x03\x50" + EPOCH_ID + b"\x58\x18" + bytes(24) + b"\x58\x20" + bytes(31),  # truncated
    b"\x84\x03\x50" + EPOCH_ID + b"\x58\x18" + bytes(24) + b"\x58\x20" + bytes(33),  # trailing byte
    b"\x84\x03\x50" + EPOCH_ID + b"\x58\x18" + bytes(24) + b"\x78\x20" + bytes(32),  # a text string
    b"\x84\x03\x50" + EPOCH_ID + b"\x58\x18" + bytes(24) + b"\x5a" + (2**31).to_bytes(4, "big"),
    bytes(sc.MAX_PAYLOAD_BYTES + 1),
])
def test_malformed_payloads(payload: bytes) -> None:
    assert reason(decrypt, payload) == "bad-payload"


def _sealed_plaintext(plain: bytes, seq: int = 7) -> bytes:
    """A kind-3 payload that authenticates and holds ``plain`` as its plaintext (what a
    member with the key, or a buggy writer, could make)."""
    ad = sc.associated_data(SPACE, ALICE.public_key, seq, EPOCH_ID)
    return sc.seal_payload(KEY, EPOCH_ID, os.urandom(24), ad, plain)


def test_a_zstd_bomb_is_refused() -> None:
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(64 << 20))  # 64 MiB of zeros
    assert len(bomb) < 4096 < len(bomb) * 10_000
    assert reason(decrypt, _sealed_plaintext(b"\x01" + bomb)) == "bad-payload"
    # the same without the size in its header: nothing bounds it, refused before decoding
    hidden = zstandard.ZstdCompressor(level=19, write_content_size=False).compress(bytes(64 << 20))
    assert reason(decrypt, _sealed_plaintext(b"\x01" + hidden)) == "bad-payload"
    # just at the bound: accepted
    edge = zstandard.ZstdCompressor().compress(bytes(sc.MAX_BODY_BYTES))
    assert decrypt(_sealed_plaintext(b"\x01" + edge)) == bytes(sc.MAX_BODY_BYTES)
    over = zstandard.ZstdCompressor().compress(bytes(sc.MAX_BODY_BYTES + 1))
    assert reason(decrypt, _sealed_plaintext(b"\x01" + over)) == "bad-payload"


@pytest.mark.parametrize("plain", [
    b"", b"\x02body", b"\x01not zstd", b"\x01" + zstandard.ZstdCompressor().compress(b"x" * 300) + b"!",
    b"\x01" + zstandard.ZstdCompressor().compress(b"x" * 300) * 2,  # two frames
])
def test_bad_plaintexts(plain: bytes) -> None:
    assert reason(decrypt, _sealed_plaintext(plain)) == "bad-payload"


def test_max_body_is_the_callers() -> None:
    payload = encrypt(os.urandom(2000))
    with pytest.raises(Rejected, match="bad-payload"):
        sc.decrypt_payload(KEYS, SPACE, ALICE.public_key, 7, payload, max_body=1000)


def test_associated_data_is_the_canonical_cbor_of_the_spec() -> None:
    for seq in (1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1):
        assert sc.associated_data(SPACE, ALICE.public_key, seq, EPOCH_ID) == cbor2.dumps(
            ["crdt-sync/1 payload", SPACE, ALICE.public_key, seq, EPOCH_ID], canonical=True)
    for seq in (0, -1, 2**63, True):
        with pytest.raises(ValueError):
            sc.associated_data(SPACE, ALICE.public_key, seq, EPOCH_ID)


def test_payload_kind_and_epoch_of() -> None:
    assert sc.payload_kind(cbor2.dumps([2, []])) == 2
    assert sc.payload_kind(cbor2.dumps([4, []])) == 4
    assert sc.payload_kind(cbor2.dumps([["c", "e", b"x"]])) is None  # format 1
    assert sc.payload_kind(b"") is None and sc.epoch_of(b"") is None
    assert sc.epoch_of(cbor2.dumps([2, []])) is None


# -- boxes --------------------------------------------------------------------------------
def test_box_round_trip_and_only_for_its_recipient() -> None:
    secret = sc.new_key()
    box = sc.seal_box(BOB.public_key, KEY, secret)
    assert len(box) == sc.BOX_BYTES
    assert sc.open_box(BOB, box) == (KEY, secret)
    assert reason(sc.open_box, ALICE, box) == "undecryptable"
    bad = bytearray(box)
    bad[-1] ^= 1
    assert reason(sc.open_box, BOB, bytes(bad)) == "undecryptable"
    assert reason(sc.open_box, BOB, b"") == "bad-payload"
    assert reason(sc.open_box, BOB, bytes(sc.MAX_BOX_BYTES + 1)) == "bad-payload"


def test_a_box_with_the_wrong_content_is_refused() -> None:
    from nacl.bindings import crypto_box_seal, crypto_sign_ed25519_pk_to_curve25519

    public = crypto_sign_ed25519_pk_to_curve25519(BOB.public_key)
    for content in (b"\xff", cbor2.dumps([KEY]), cbor2.dumps([KEY, b"short"]),
                    cbor2.dumps([KEY, KEY]) + b"x"):
        assert reason(sc.open_box, BOB, crypto_box_seal(content, public)) == "bad-payload"


def test_seal_box_checks_its_arguments() -> None:
    with pytest.raises(ValueError):
        sc.seal_box(b"short", KEY, KEY)
    with pytest.raises(ValueError):
        sc.seal_box(BOB.public_key, b"short", KEY)
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        sc.seal_box(bytes(32), KEY, KEY)  # not a point of the curve's main subgroup


# -- scope and label keys -----------------------------------------------------------------
def test_scope_and_label_keys_are_keyed_blake2b() -> None:
    from hashlib import blake2b

    secret = bytes(range(32))
    assert sc.scope_key(secret) == blake2b(b"crdt-sync/1 scope", key=secret, digest_size=32).digest()
    assert sc.label_key(secret) == blake2b(b"crdt-sync/1 label", key=secret, digest_size=32).digest()
    assert sc.scope_key(secret) != sc.label_key(secret)


def test_label_round_trip_and_refusals() -> None:
    secret = sc.new_key()
    blob = sc.seal_label(secret, "site-42 ✓")
    assert b"site-42" not in blob
    assert sc.open_label(secret, blob) == "site-42 ✓"
    assert reason(sc.open_label, sc.new_key(), blob) == "undecryptable"
    assert reason(sc.open_label, secret, blob + b"x") == "bad-payload"
    assert reason(sc.open_label, secret, cbor2.dumps([bytes(24)])) == "bad-payload"
    assert reason(sc.open_label, secret, bytes(2000)) == "bad-payload"
    with pytest.raises(ValueError):
        sc.seal_label(secret, "")


# -- the keyring --------------------------------------------------------------------------
def test_keyring_add_and_lookup() -> None:
    ring = sc.Keyring()
    secret = sc.new_key()
    e1, k1 = sc.new_epoch()
    assert ring.add(SPACE, 0, EPOCH_ID, KEY, secret)
    assert not ring.add(SPACE, 0, EPOCH_ID, KEY, secret)  # held already
    assert ring.add(SPACE, 1, e1, k1, secret)
    assert ring.key(SPACE, e1) == k1 and ring.key(SPACE, b"x" * 16) is None and ring.key("other", e1) is None
    assert ring.secret(SPACE) == secret and ring.secret("other") is None
    assert ring.epochs(SPACE) == [(0, EPOCH_ID), (1, e1)] and ring.epochs("other") == []
    assert ring.spaces() == [SPACE]
    lookup = ring.keys_of(SPACE)
    e2, k2 = sc.new_epoch()
    ring.add(SPACE, 2, e2, k2, secret)
    assert lookup(e2) == k2  # sees later adds
    assert decrypt(encrypt(key=k2, epoch_id=e2), keys=lookup) == BODY


def test_keyring_refuses_a_key_its_id_does_not_name_and_a_second_secret() -> None:
    ring = sc.Keyring()
    secret = sc.new_key()
    assert reason(ring.add, SPACE, 0, EPOCH_ID, sc.new_key(), secret) == "bad-key"
    ring.add(SPACE, 0, EPOCH_ID, KEY, secret)
    e1, k1 = sc.new_epoch()
    assert reason(ring.add, SPACE, 1, e1, k1, sc.new_key()) == "bad-key"
    assert reason(ring.add, SPACE, 5, EPOCH_ID, KEY, secret) == "bad-key"  # another number
    assert ring.epochs(SPACE) == [(0, EPOCH_ID)] and ring.secret(SPACE) == secret


def test_keyring_stored_form_round_trips_and_merges() -> None:
    ring = sc.Keyring()
    secret = sc.new_key()
    ring.add(SPACE, 0, EPOCH_ID, KEY, secret)
    back = sc.Keyring.from_cbor(cbor2.loads(cbor2.dumps(ring.to_cbor(), canonical=True)))
    assert back.to_cbor() == ring.to_cbor() and back.version == 0
    other = sc.Keyring()
    e1, k1 = sc.new_epoch()
    other.add(SPACE, 1, e1, k1, secret)
    other.add("s" + "c" * 32, 0, *sc.new_epoch(), sc.new_key())
    assert back.merge(other) == 2 and back.merge(other) == 0
    assert back.epochs(SPACE) == [(0, EPOCH_ID), (1, e1)] and len(back.spaces()) == 2
    for bad in ([], {1: []}, {SPACE: [secret]}, {SPACE: [secret, [[0, EPOCH_ID]]]},
                {SPACE: [secret, [[0, EPOCH_ID, bytes(32)]]]}):
        with pytest.raises(ValueError):
            sc.Keyring.from_cbor(bad)
