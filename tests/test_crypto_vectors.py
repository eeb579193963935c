"""docs/DESIGN.md's encryption vectors are what the code makes, and each means what its row
says: payloads decrypt with the epoch key and not with anything else, the box opens with
Bob's seed, the label and both key files open through the real readers. A vector added to
the document without a check here fails."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest
import zstandard
from nacl.bindings import crypto_sign_ed25519_sk_to_curve25519
from nacl.public import PrivateKey

from crdt_sync import space_crypto as sc
from crdt_sync.errors import Rejected
from crdt_sync.payload import decode_payload
from crdt_sync.secrets import KEYS_FILE, PASSPHRASE_ENV, PassphraseError, Secrets
from tests import crypto_vectors as cv

DOC = Path(__file__).resolve().parent.parent / "docs" / "DESIGN.md"
ROW = re.compile(r"^\| (?P<name>[^|]+?) \| (?P<what>.+) \| `(?P<hex>[0-9a-f]+)` \|$")


def doc_vectors() -> dict[str, bytes]:
    text = DOC.read_text()
    block = text.split("<!-- crypto-vectors:begin -->")[1].split("<!-- crypto-vectors:end -->")[0].strip()
    assert block == cv.markdown(), "regenerate with: python -m tests.crypto_vectors"
    out: dict[str, bytes] = {}
    for line in block.splitlines()[2:]:
        match = ROW.match(line)
        assert match, f"not a vector row: {line[:80]}"
        out[match["name"]] = bytes.fromhex(match["hex"])
    return out


V = doc_vectors()
KEYS = {cv.epoch_id(): cv.EPOCH_KEY}.get


def check_epoch_id(data: bytes) -> None:
    assert data == sc.epoch_id_of(cv.EPOCH_KEY) and len(data) == 16


def check_scope_key(data: bytes) -> None:
    assert data == sc.scope_key(cv.SECRET)


def check_label_key(data: bytes) -> None:
    assert data == sc.label_key(cv.SECRET)


def check_associated_data(data: bytes) -> None:
    assert data == sc.associated_data(cv.SPACE_ID, cv.ALICE.public_key, cv.SEQ, cv.epoch_id())


def _decrypts(data: bytes) -> bytes:
    body = sc.decrypt_payload(KEYS, cv.SPACE_ID, cv.ALICE.public_key, cv.SEQ, data)
    assert sc.epoch_of(data) == cv.epoch_id() and cbor2.loads(data)[2] == cv.NONCE
    assert cbor2.dumps(cbor2.loads(data), canonical=True) == data
    for wrong in ({}.get, {cv.epoch_id(): cv.SECRET}.get):
        with pytest.raises(Rejected):
            sc.decrypt_payload(wrong, cv.SPACE_ID, cv.ALICE.public_key, cv.SEQ, data)
    with pytest.raises(Rejected, match="undecryptable"):
        sc.decrypt_payload(KEYS, cv.SPACE_ID, cv.ALICE.public_key, cv.SEQ + 1, data)
    return body


def check_payload_codec_0(data: bytes) -> None:
    body = _decrypts(data)
    assert body == cv.DATA["payload"]
    ((coll, ent, _blob, _items),) = decode_payload(body)
    assert (coll, ent) == ("equipment", "pump-7")


def check_payload_codec_1(data: bytes) -> None:
    body = _decrypts(data)
    assert body == cv.BODY_ZSTD and len(body) == 487 and len(cv.ZSTD_FRAME) == 148
    assert zstandard.ZstdDecompressor().decompress(cv.ZSTD_FRAME) == body
    assert sc.encode_plaintext(body)[0] == sc.CODEC_ZSTD  # a writer of this build compresses it too
    assert [e for _c, e, _b, _i in decode_payload(body)] == [f"pump-{i}" for i in range(4)]


def check_x25519_key_of_bob(data: bytes) -> None:
    # the public half of the X25519 key Bob's seed converts to: the same point
    private = crypto_sign_ed25519_sk_to_curve25519(cv.BOB.seed + cv.BOB.public_key)
    assert bytes(PrivateKey(private).public_key) == data


def check_box_to_bob(data: bytes) -> None:
    assert len(data) == sc.BOX_BYTES
    assert sc.open_box(cv.BOB, data) == (cv.EPOCH_KEY, cv.SECRET)
    with pytest.raises(Rejected, match="undecryptable"):
        sc.open_box(cv.ALICE, data)


def check_label(data: bytes) -> None:
    assert sc.open_label(cv.SECRET, data) == cv.NAME
    with pytest.raises(Rejected, match="undecryptable"):
        sc.open_label(cv.EPOCH_KEY, data)


def _key_file(data: bytes, tmp: Path) -> Path:
    directory = tmp / "keys-vector"
    directory.mkdir(exist_ok=True)
    (directory / KEYS_FILE).write_bytes(data)
    return directory


def check_key_file(data: bytes, tmp: Path) -> None:
    secrets = Secrets.open(_key_file(data, tmp), read_only=True)
    assert secrets.device_seed() == cv.ALICE.seed and not secrets.sealed
    assert secrets.keyring().to_cbor() == cv.keyring_cbor()
    assert secrets.keyring().key(cv.SPACE_ID, cv.epoch_id()) == cv.EPOCH_KEY


def check_key_file_sealed(data: bytes, tmp: Path) -> None:
    directory = _key_file(data, tmp)
    secrets = Secrets.open(directory, cv.PASSPHRASE, read_only=True)
    assert secrets.device_seed() == cv.ALICE.seed and secrets.sealed
    assert secrets.keyring().to_cbor() == cv.keyring_cbor()
    assert cv.ALICE.seed not in data and cv.EPOCH_KEY not in data
    with pytest.raises(PassphraseError):
        Secrets.open(directory, "wrong", read_only=True)


CHECKS: dict[str, Callable[[bytes], None]] = {
    "epoch id": check_epoch_id, "scope key": check_scope_key, "label key": check_label_key,
    "associated data": check_associated_data, "payload, codec 0": check_payload_codec_0,
    "payload, codec 1": check_payload_codec_1, "x25519 key of Bob": check_x25519_key_of_bob,
    "box to Bob": check_box_to_bob, "label": check_label,
}
FILE_CHECKS: dict[str, Callable[[bytes, Path], None]] = {
    "key file": check_key_file, "key file, sealed": check_key_file_sealed,
}


def test_every_vector_in_the_doc_is_checked() -> None:
    assert set(V) == set(CHECKS) | set(FILE_CHECKS) == {name for name, _what, _data in cv.vectors()}


@pytest.mark.parametrize("name", list(CHECKS))
def test_vector(name: str) -> None:
    CHECKS[name](V[name])


@pytest.mark.parametrize("name", list(FILE_CHECKS))
def test_key_file_vector(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    FILE_CHECKS[name](V[name], tmp_path)
