"""Signed snapshots of a space: the state of every entity at a version vector, encrypted as
one blob and signed by its author (docs/PROTOCOL.md, "Snapshots").

Pure: no I/O. Wire form (canonical CBOR, one array)::

    [1, space, author_key(32 B), hlc, covered, epoch_id(16 B), nonce(24 B), ciphertext, signature(64 B)]
    covered    = [[author_key(32 B), seq (>= 1), head_hash(32 B)], ...]   ascending by key, unique
    ciphertext = XChaCha20-Poly1305-IETF(epoch key, nonce, ad, codec(1 byte) || body)
    ad         = cbor(["crdt-sync/1 snapshot", space, author_key, hlc, epoch_id, BLAKE2b-256(cbor(covered))])
    body       = cbor([[collection, entity_id, state], ...])             ascending by (collection, id), unique
    signature  = Ed25519(author, "crdt-sync/1 snapshot" || cbor([1, space, ..., ciphertext]))

The signature covers everything but itself, so anyone (a relay) checks it without keys;
the associated data binds the ciphertext to the space, the author, the time, the epoch and
the covered vector, so a blob moved into another record does not authenticate.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from hashlib import blake2b

import cbor2
import zstandard
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from . import cbor_limits
from .envelope import MAX_SPACE_NAME
from .errors import Rejected
from .hlc import MAX_HLC
from .identity import Identity, device_id, verify
from .space_crypto import (
    COMPRESS_MIN_BYTES,
    EPOCH_ID_BYTES,
    KEY_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    ZSTD_LEVEL,
    decode_plaintext,
)
from .values import MAX_NAME

SNAPSHOT_FORMAT = 1
#: What the signature covers starts with these bytes (domain separation from records).
SIGN_DOMAIN = b"crdt-sync/1 snapshot"
#: The first item of the associated data.
AD_DOMAIN = "crdt-sync/1 snapshot"
#: Authors a snapshot covers at most (the protocol's version vector limit).
MAX_AUTHORS = 4096
#: Entities a snapshot holds at most.
MAX_ENTITIES = 262_144
#: The ciphertext is at most this (and the body decompresses to at most this).
MAX_BLOB_BYTES = 64 << 20
#: The whole record: the blob plus a full covered vector and the fixed fields.
MAX_SNAPSHOT_BYTES = MAX_BLOB_BYTES + MAX_AUTHORS * 80 + 1024
HASH_BYTES = 32
#: The compressor's window (the decoder of :mod:`crdt_sync.space_crypto` accepts up to 1 MiB).
_WINDOW_LOG = 20

Covered = tuple[tuple[bytes, int, bytes], ...]
EntityState = tuple[str, str, bytes]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A decoded snapshot whose shape, bounds and signature were checked."""

    space: str
    author_key: bytes
    hlc: int
    covered: Covered
    epoch_id: bytes
    nonce: bytes
    ciphertext: bytes
    signature: bytes
    wire: bytes

    @property
    def author(self) -> str:
        return device_id(self.author_key)

    @property
    def version_vector(self) -> dict[str, int]:
        """``{device id: seq}`` of the covered chains."""
        return {device_id(key): seq for key, seq, _head in self.covered}

    @property
    def heads(self) -> dict[str, tuple[int, bytes]]:
        """``{device id: (seq, head hash)}`` of the covered chains."""
        return {device_id(key): (seq, head) for key, seq, head in self.covered}

    @property
    def hash(self) -> bytes:
        return blake2b(self.wire, digest_size=HASH_BYTES).digest()


def covered_digest(covered: Covered) -> bytes:
    """BLAKE2b-256 of the canonical CBOR of the covered vector."""
    return blake2b(cbor2.dumps([list(c) for c in covered], canonical=True), digest_size=HASH_BYTES).digest()


def associated_data(space: str, author: bytes, hlc: int, epoch_id: bytes, covered: Covered) -> bytes:
    """``cbor(["crdt-sync/1 snapshot", space, author_key, hlc, epoch_id, covered digest])``."""
    return cbor2.dumps([AD_DOMAIN, space, author, hlc, epoch_id, covered_digest(covered)], canonical=True)


def _unsigned(space: str, author: bytes, hlc: int, covered: Covered, epoch_id: bytes, nonce: bytes,
              ciphertext: bytes) -> list[object]:
    return [SNAPSHOT_FORMAT, space, author, hlc, [list(c) for c in covered], epoch_id, nonce, ciphertext]


def signed_bytes(space: str, author: bytes, hlc: int, covered: Covered, epoch_id: bytes, nonce: bytes,
                 ciphertext: bytes) -> bytes:
    """What the signature covers: the domain, then the record without its signature."""
    return SIGN_DOMAIN + cbor2.dumps(_unsigned(space, author, hlc, covered, epoch_id, nonce, ciphertext),
                                     canonical=True)


def encode_body(entities: Sequence[EntityState]) -> bytes:
    """``cbor([[collection, id, state], ...])`` in ``(collection, id)`` order."""
    return cbor2.dumps([list(e) for e in sorted(entities)], canonical=True)


def compress(body: bytes) -> bytes:
    """``codec || data``: zstandard (level 3, 1 MiB window, size declared) when it saves an
    eighth, as payloads do (codec 0 otherwise)."""
    if len(body) >= COMPRESS_MIN_BYTES:
        params = zstandard.ZstdCompressionParameters.from_level(
            ZSTD_LEVEL, window_log=_WINDOW_LOG, write_content_size=True, write_checksum=False)
        packed = zstandard.ZstdCompressor(compression_params=params).compress(body)
        if len(packed) <= len(body) - len(body) // 8:
            return b"\x01" + packed
    return b"\x00" + body


def make_snapshot(identity: Identity, space: str, hlc: int, covered: Sequence[tuple[bytes, int, bytes]],
                  epoch_key: bytes, epoch_id: bytes, entities: Sequence[EntityState],
                  nonce: bytes | None = None, plaintext: bytes | None = None) -> Snapshot:
    """Seal the states of ``entities`` at ``covered`` under the epoch key, signed by
    ``identity``. ``nonce`` and ``plaintext`` (``codec || body``) are for test vectors; a
    writer lets them be drawn and compressed here.

    Raises:
        ValueError: a field out of range (the reader would refuse the record).
    """
    cov: Covered = tuple(sorted((bytes(k), int(s), bytes(h)) for k, s, h in covered))
    if len(entities) > MAX_ENTITIES:
        raise ValueError(f"a snapshot holds at most {MAX_ENTITIES} entities")
    if len(epoch_key) != KEY_BYTES or len(epoch_id) != EPOCH_ID_BYTES:
        raise ValueError("the epoch key is 32 bytes, its id 16")
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    plain = compress(encode_body(entities)) if plaintext is None else plaintext
    ad = associated_data(space, identity.public_key, hlc, epoch_id, cov)
    ciphertext: bytes = crypto_aead_xchacha20poly1305_ietf_encrypt(plain, ad, nonce, epoch_key)
    signature = identity.sign(signed_bytes(space, identity.public_key, hlc, cov, epoch_id, nonce, ciphertext))
    wire = cbor2.dumps([*_unsigned(space, identity.public_key, hlc, cov, epoch_id, nonce, ciphertext),
                        signature], canonical=True)
    try:
        return decode_snapshot(wire)  # what this build writes, it reads
    except Rejected as exc:
        raise ValueError(str(exc)) from None


def _uint(value: object, below: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < below


def _bstr(value: object, size: int) -> bool:
    return isinstance(value, bytes) and len(value) == size


def decode_snapshot(wire: bytes) -> Snapshot:
    """Check a snapshot's size, shape, bounds, canonical form and signature (no keys needed).

    Raises:
        Rejected: ``snapshot-too-large``, ``snapshot-malformed``, ``snapshot-unknown-version``,
            ``snapshot-bad-signature``.
    """
    if not isinstance(wire, bytes) or len(wire) > MAX_SNAPSHOT_BYTES:
        raise Rejected("snapshot-too-large", f"a snapshot is bytes of at most {MAX_SNAPSHOT_BYTES}")
    try:
        items = cbor_limits.loads(wire, max_depth=3, max_items=16 + 4 * (MAX_AUTHORS + 1))
    except cbor_limits.CborLimitError as exc:
        raise Rejected("snapshot-too-large" if exc.over_limit else "snapshot-malformed",
                       f"snapshot: {exc}") from None
    except ValueError as exc:
        raise Rejected("snapshot-malformed", f"snapshot: {exc}") from None
    if not isinstance(items, list) or not items or items[0] != SNAPSHOT_FORMAT:
        version = items[0] if isinstance(items, list) and items else None
        if isinstance(version, int) and not isinstance(version, bool):
            raise Rejected("snapshot-unknown-version",
                           f"snapshot format {version}; this build reads {SNAPSHOT_FORMAT}: "
                           "upgrade crdt-sync")
        raise Rejected("snapshot-malformed", "a snapshot is an array starting with its format")
    if len(items) != 9:
        raise Rejected("snapshot-malformed", "a snapshot is an array of 9 items")
    _, space, author, hlc, covered, epoch_id, nonce, ciphertext, signature = items
    if not (isinstance(space, str) and 0 < len(space) <= MAX_SPACE_NAME):
        raise Rejected("snapshot-malformed", "snapshot space is not a space id")
    if not (_bstr(author, 32) and _uint(hlc, MAX_HLC) and _bstr(epoch_id, EPOCH_ID_BYTES)
            and _bstr(nonce, NONCE_BYTES) and _bstr(signature, 64)):
        raise Rejected("snapshot-malformed", "snapshot author, hlc, epoch id, nonce or signature "
                                             "has the wrong type or size")
    if not (isinstance(ciphertext, bytes) and TAG_BYTES < len(ciphertext) <= MAX_BLOB_BYTES):
        raise Rejected("snapshot-too-large" if isinstance(ciphertext, bytes) and ciphertext else
                       "snapshot-malformed", f"snapshot blob is {TAG_BYTES + 1}..{MAX_BLOB_BYTES} bytes")
    if not isinstance(covered, list) or not 0 < len(covered) <= MAX_AUTHORS:
        raise Rejected("snapshot-too-large" if isinstance(covered, list) and covered
                       else "snapshot-malformed", f"a snapshot covers 1..{MAX_AUTHORS} authors")
    cov: list[tuple[bytes, int, bytes]] = []
    for entry in covered:
        if not (isinstance(entry, list) and len(entry) == 3 and _bstr(entry[0], 32)
                and _uint(entry[1], 2**63) and entry[1] >= 1 and _bstr(entry[2], HASH_BYTES)):
            raise Rejected("snapshot-malformed", "a covered entry is [author(32), seq >= 1, head(32)]")
        if cov and entry[0] <= cov[-1][0]:
            raise Rejected("snapshot-malformed", "covered authors are not strictly ascending")
        cov.append((entry[0], entry[1], entry[2]))
    covered_t = tuple(cov)
    signed = signed_bytes(space, author, hlc, covered_t, epoch_id, nonce, ciphertext)
    if not verify(author, signed, signature):
        raise Rejected("snapshot-bad-signature",
                       f"the snapshot signature of {device_id(author)} does not verify")
    return Snapshot(space, author, hlc, covered_t, epoch_id, nonce, ciphertext, signature, wire)


def decode_trusted(wire: bytes) -> Snapshot:
    """Decode a snapshot from this device's own store, which verified it on the way in."""
    _, space, author, hlc, covered, epoch_id, nonce, ciphertext, signature = cbor2.loads(wire)
    return Snapshot(space, author, hlc, tuple((k, s, h) for k, s, h in covered), epoch_id, nonce,
                    ciphertext, signature, wire)


def open_snapshot(snap: Snapshot, keys: Callable[[bytes], bytes | None]) -> list[EntityState]:
    """The entity states of a verified snapshot, decrypted with ``keys`` (``epoch_id -> key``).

    Raises:
        Rejected: ``snapshot-no-key``, ``snapshot-undecryptable`` (the AEAD does not
            authenticate: tampered, or moved to another space, author, time or vector),
            ``snapshot-too-large``, ``snapshot-malformed``.
    """
    key = keys(snap.epoch_id)
    if key is None:
        raise Rejected("snapshot-no-key", f"no key for epoch {snap.epoch_id.hex()} of {snap.space}")
    ad = associated_data(snap.space, snap.author_key, snap.hlc, snap.epoch_id, snap.covered)
    try:
        plain: bytes = crypto_aead_xchacha20poly1305_ietf_decrypt(snap.ciphertext, ad, snap.nonce, key)
    except CryptoError:
        raise Rejected("snapshot-undecryptable", f"the snapshot of {snap.author} does not authenticate "
                                                 f"under epoch {snap.epoch_id.hex()}") from None
    try:
        body = decode_plaintext(plain, MAX_BLOB_BYTES)
    except Rejected as exc:
        raise Rejected("snapshot-malformed", f"snapshot blob: {exc.detail}") from None
    return decode_body(body)


def decode_body(body: bytes) -> list[EntityState]:
    """The ``[[collection, id, state], ...]`` of a decrypted blob, bounded and ordered."""
    try:
        items = cbor_limits.loads(body, max_depth=2, max_items=1 + 4 * MAX_ENTITIES)
    except cbor_limits.CborLimitError as exc:
        raise Rejected("snapshot-too-large" if exc.over_limit else "snapshot-malformed",
                       f"snapshot body: {exc}") from None
    except ValueError as exc:
        raise Rejected("snapshot-malformed", f"snapshot body: {exc}") from None
    if not isinstance(items, list):
        raise Rejected("snapshot-malformed", "the snapshot body is not an array")
    if len(items) > MAX_ENTITIES:
        raise Rejected("snapshot-too-large", f"a snapshot holds at most {MAX_ENTITIES} entities")
    out: list[EntityState] = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                and isinstance(item[1], str) and 0 < len(item[0]) <= MAX_NAME
                and 0 < len(item[1]) <= MAX_NAME and isinstance(item[2], bytes)):
            raise Rejected("snapshot-malformed", "an entity is [collection, id, state]")
        entry = (item[0], item[1], item[2])
        if out and entry[:2] <= out[-1][:2]:
            raise Rejected("snapshot-malformed", "entities are not strictly ascending by (collection, id)")
        out.append(entry)
    return out


__all__ = ["MAX_AUTHORS", "MAX_BLOB_BYTES", "MAX_ENTITIES", "MAX_SNAPSHOT_BYTES", "SNAPSHOT_FORMAT",
           "Snapshot", "associated_data", "covered_digest", "decode_snapshot", "decode_trusted",
           "encode_body", "make_snapshot", "open_snapshot", "signed_bytes"]
