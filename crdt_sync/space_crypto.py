"""End-to-end encryption of a space: epoch keys, the boxes that carry them to members, the
encrypted data payload (kind 3), the space label, and the keyring that holds them.

Pure: no I/O (:mod:`crdt_sync.secrets` stores the :class:`Keyring`). Every function that
reads bytes from outside checks their sizes and shapes first and raises
:class:`~crdt_sync.errors.Rejected` with one of the reasons ``bad-payload`` (does not
decode), ``no-key`` (no key for the epoch it names) or ``undecryptable`` (it does not
authenticate under the key: tampered, or made for another space, author, seq or epoch).

Data payload (docs/DESIGN.md, "Encryption")::

    cbor([3, epoch_id: bstr16, nonce: bstr24, ciphertext: bstr])
    ciphertext = XChaCha20-Poly1305-IETF(key, nonce, ad, codec(1 byte) || body)
    ad = cbor(["crdt-sync/1 payload", space_id, author_key, seq, epoch_id])

``codec`` 0 is the body as is, 1 a single zstandard frame that declares its size (at most
:data:`MAX_BODY_BYTES`). The body is the plaintext payload (format 2 of
:mod:`crdt_sync.payload`). This is on the write path (one call per sealed envelope): the
payload is framed by hand (its canonical CBOR has a fixed layout), the associated data's
constant prefix is cached per ``(space, author)``, and the libsodium bindings are called
directly.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from functools import lru_cache
from hashlib import blake2b

import cbor2
import zstandard
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_box_seal,
    crypto_box_seal_open,
    crypto_secretbox,
    crypto_secretbox_open,
    crypto_sign_ed25519_pk_to_curve25519,
    crypto_sign_ed25519_sk_to_curve25519,
)
from nacl.exceptions import CryptoError

from .cbor_exact import loads_exact
from .envelope import MAX_SPACE_NAME
from .errors import Rejected
from .identity import Identity

#: The payload kind of an encrypted data payload (the first item of its CBOR array).
DATA_PAYLOAD = 3
KEY_BYTES = 32
EPOCH_ID_BYTES = 16
NONCE_BYTES = 24
TAG_BYTES = 16
#: codec byte: the body follows as is / as one zstandard frame
CODEC_RAW, CODEC_ZSTD = 0, 1
#: The largest body a payload may decrypt (and decompress) to: a zstd bomb stops here.
MAX_BODY_BYTES = 1 << 20
#: The largest kind-3 payload read: the largest body, uncompressed, plus the framing.
MAX_PAYLOAD_BYTES = MAX_BODY_BYTES + 128
#: Largest decoder window accepted (a frame asking for more memory is refused).
MAX_WINDOW_BYTES = 1 << 20
#: A writer does not try to compress bodies shorter than this (they never save 1/8).
COMPRESS_MIN_BYTES = 128
ZSTD_LEVEL = 3
#: Bytes a kind-3 payload adds to its body at most (framing, codec byte, tag).
PAYLOAD_OVERHEAD = 3 + EPOCH_ID_BYTES + 2 + NONCE_BYTES + 5 + 1 + TAG_BYTES
#: The plaintext of a box: canonical cbor([epoch_key, secret]) is 69 bytes; sealing adds 48.
BOX_BYTES = 69 + 48
MAX_BOX_BYTES = 1024
MAX_LABEL_BLOB = 1024

AD_DOMAIN = "crdt-sync/1 payload"
SCOPE_DOMAIN = b"crdt-sync/1 scope"
LABEL_DOMAIN = b"crdt-sync/1 label"
EPOCH_DOMAIN = b"crdt-sync/1 epoch"

#: canonical CBOR of ``[3, epoch_id`` (array of 4, uint 3, bstr of 16) and of a 24-byte bstr head
_HEAD = b"\x84\x03\x50"
_NONCE_HEAD = b"\x58\x18"
_BODY_AT = len(_HEAD) + EPOCH_ID_BYTES + len(_NONCE_HEAD) + NONCE_BYTES  # where the ciphertext's head is


# -- keys --------------------------------------------------------------------------------
def new_key() -> bytes:
    """32 random bytes: an epoch key or a space secret."""
    return os.urandom(KEY_BYTES)


def epoch_id_of(epoch_key: bytes) -> bytes:
    """The epoch id of a key: ``H_16(key=epoch_key, "crdt-sync/1 epoch")``. Binding the id to
    the key lets every recipient check that the key it was sealed is the one the id names
    (:meth:`Keyring.add`): a writer cannot give two members different keys under one id."""
    return blake2b(EPOCH_DOMAIN, key=epoch_key, digest_size=EPOCH_ID_BYTES).digest()


def new_epoch() -> tuple[bytes, bytes]:
    """A fresh epoch: ``(epoch_id, epoch_key)``."""
    key = new_key()
    return epoch_id_of(key), key


def scope_key(secret: bytes) -> bytes:
    """``H_32(key=S, "crdt-sync/1 scope")``: the key of collection scope digests."""
    return blake2b(SCOPE_DOMAIN, key=_check_key("space secret", secret), digest_size=32).digest()


def label_key(secret: bytes) -> bytes:
    """``H_32(key=S, "crdt-sync/1 label")``: the key the space's human name is sealed under."""
    return blake2b(LABEL_DOMAIN, key=_check_key("space secret", secret), digest_size=32).digest()


def _check_key(what: str, key: object, size: int = KEY_BYTES) -> bytes:
    if not isinstance(key, bytes) or len(key) != size:
        raise ValueError(f"{what} must be {size} bytes")
    return key


# -- boxes: an epoch key and the space secret, sealed to one member ------------------------
@lru_cache(maxsize=4096)  # a rotation seals to every reader; the same readers each time
def _x25519_public(ed25519_public: bytes) -> bytes:
    return crypto_sign_ed25519_pk_to_curve25519(ed25519_public)  # type: ignore[no-any-return]


@lru_cache(maxsize=16)
def _x25519_secret(seed: bytes, public: bytes) -> bytes:
    return crypto_sign_ed25519_sk_to_curve25519(seed + public)  # type: ignore[no-any-return]


def seal_box(recipient_ed25519: bytes, epoch_key: bytes, secret: bytes) -> bytes:
    """``SealedBox(cbor([epoch_key, S]))`` to the X25519 key of the recipient's Ed25519
    device key (libsodium's ``crypto_box_seal``): :data:`BOX_BYTES` bytes."""
    _check_key("recipient key", recipient_ed25519)
    plain = cbor2.dumps([_check_key("epoch key", epoch_key), _check_key("space secret", secret)],
                        canonical=True)
    try:
        public = _x25519_public(recipient_ed25519)
    except (CryptoError, ValueError, TypeError) as exc:  # not a point of the curve
        raise ValueError(f"recipient key is not an Ed25519 public key: {exc}") from None
    return crypto_box_seal(plain, public)  # type: ignore[no-any-return]


def open_box(identity: Identity, sealed: bytes) -> tuple[bytes, bytes]:
    """``(epoch_key, secret)`` from a box sealed to this device.

    Raises:
        Rejected: ``bad-payload`` (not a box of the right size, or its content does not
            decode), ``undecryptable`` (not sealed to this device, or altered).
    """
    if not isinstance(sealed, bytes) or not 48 < len(sealed) <= MAX_BOX_BYTES:
        raise Rejected("bad-payload", f"a key box is 49..{MAX_BOX_BYTES} bytes")
    try:
        plain = crypto_box_seal_open(sealed, _x25519_public(identity.public_key),
                                     _x25519_secret(identity.seed, identity.public_key))
    except CryptoError:
        raise Rejected("undecryptable", f"the key box is not sealed to {identity.id}") from None
    try:
        items = loads_exact(plain)
    except Exception as exc:  # trust boundary: cbor2 raises several types on garbage
        raise Rejected("bad-payload", f"key box content is not CBOR: {exc}") from None
    if not (isinstance(items, list) and len(items) == 2
            and all(isinstance(k, bytes) and len(k) == KEY_BYTES for k in items)):
        raise Rejected("bad-payload", "key box content is not [epoch_key(32), secret(32)]")
    return items[0], items[1]


# -- the data payload (kind 3) --------------------------------------------------------------
@lru_cache(maxsize=1024)
def _ad_prefix(space: str, author: bytes) -> bytes:
    """canonical CBOR of ``["crdt-sync/1 payload", space, author`` (an array of 5)."""
    return b"\x85" + cbor2.dumps(AD_DOMAIN) + cbor2.dumps(space) + cbor2.dumps(author)


def _uint(n: int) -> bytes:
    """The canonical CBOR head of an unsigned integer (major type 0)."""
    if n < 24:
        return bytes((n,))
    if n < 0x100:
        return b"\x18" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\x19" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\x1a" + n.to_bytes(4, "big")
    return b"\x1b" + n.to_bytes(8, "big")


def _bstr_head(n: int) -> bytes:
    head = _uint(n)
    return bytes((head[0] | 0x40,)) + head[1:]


def associated_data(space: str, author: bytes, seq: int, epoch_id: bytes) -> bytes:
    """``cbor(["crdt-sync/1 payload", space_id, author_key, seq, epoch_id])``."""
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < 2**63:
        raise ValueError("seq must be an int in 1 .. 2**63 - 1")
    return _ad_prefix(space, author) + _uint(seq) + b"\x50" + epoch_id


class _Codecs(threading.local):
    """zstandard's (de)compressors are not thread-safe, and making one costs more than using
    it: one of each per thread."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False,
                                                   write_content_size=True)
        self.decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_BYTES)


_codecs = _Codecs()


def encode_plaintext(body: bytes) -> bytes:
    """``codec || body``: zstandard (codec 1) when it saves at least 1/8 of the body."""
    if len(body) >= COMPRESS_MIN_BYTES:
        packed = _codecs.compressor.compress(body)
        if len(packed) <= len(body) - len(body) // 8:
            return b"\x01" + packed
    return b"\x00" + body


def decode_plaintext(plain: bytes, max_body: int = MAX_BODY_BYTES) -> bytes:
    """The body of ``codec || data``; a zstd frame must declare its size (at most
    ``max_body``), be one frame with nothing after it, and fit a 1 MiB window.

    Raises:
        Rejected: ``bad-payload``.
    """
    codec = plain[0] if plain else -1
    if codec == CODEC_RAW:
        if len(plain) - 1 > max_body:
            raise Rejected("bad-payload", f"payload body over {max_body} bytes")
        return plain[1:]
    if codec != CODEC_ZSTD:
        raise Rejected("bad-payload", f"unknown codec {codec}" if plain else "empty plaintext")
    frame = plain[1:]
    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise Rejected("bad-payload", f"not a zstd frame: {exc}") from None
    if size < 0:  # CONTENTSIZE_UNKNOWN / ERROR: nothing bounds the output
        raise Rejected("bad-payload", "the zstd frame does not declare its size")
    if size > max_body:
        raise Rejected("bad-payload", f"the zstd frame would decompress to {size} bytes (over {max_body})")
    try:
        body = _codecs.decompressor.decompress(frame, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise Rejected("bad-payload", f"zstd frame does not decompress: {exc}") from None
    if len(body) != size:
        raise Rejected("bad-payload", "the zstd frame's content is not the size it declares")
    return body


def encrypt_payload(key: bytes, epoch_id: bytes, space: str, author: bytes, seq: int,
                    body: bytes) -> bytes:
    """The kind-3 payload of envelope ``seq`` of ``author`` (its 32-byte key) in ``space``:
    ``body`` compressed where it pays, then encrypted under the epoch key."""
    if len(key) != KEY_BYTES or len(epoch_id) != EPOCH_ID_BYTES or len(author) != 32:
        raise ValueError("key and author are 32 bytes, epoch_id 16")
    nonce = os.urandom(NONCE_BYTES)
    return seal_payload(key, epoch_id, nonce, associated_data(space, author, seq, epoch_id),
                        encode_plaintext(body))


def seal_payload(key: bytes, epoch_id: bytes, nonce: bytes, ad: bytes, plain: bytes) -> bytes:
    """The kind-3 framing of an encryption of ``plain`` (``codec || body``) under ``key``
    with this nonce and associated data (the test vectors fix the nonce; a writer uses
    :func:`encrypt_payload`, which draws it at random)."""
    ct: bytes = crypto_aead_xchacha20poly1305_ietf_encrypt(plain, ad, nonce, key)
    return _HEAD + epoch_id + _NONCE_HEAD + nonce + _bstr_head(len(ct)) + ct


def _split(payload: bytes) -> tuple[bytes, bytes, bytes]:
    """``(epoch_id, nonce, ciphertext)`` of a kind-3 payload, which must be in canonical CBOR.

    Raises:
        Rejected: ``bad-payload``.
    """
    if not isinstance(payload, bytes) or len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejected("bad-payload", f"an encrypted payload is bytes of at most {MAX_PAYLOAD_BYTES}")
    if not payload.startswith(_HEAD) or payload[19:21] != _NONCE_HEAD or len(payload) < _BODY_AT + 2:
        raise Rejected("bad-payload", "not an encrypted payload [3, epoch_id(16), nonce(24), ciphertext]")
    head = payload[_BODY_AT]
    at = _BODY_AT + 1
    if 0x40 <= head < 0x58:
        length = head - 0x40
    elif 0x58 <= head <= 0x5A:
        width = 1 << (head - 0x58)
        length = int.from_bytes(payload[at:at + width], "big")
        at += width
        if length < (24, 0x100, 0x10000)[head - 0x58]:  # a longer head than needed
            raise Rejected("bad-payload", "the ciphertext's length is not in canonical CBOR")
    else:
        raise Rejected("bad-payload", "the fourth item is not a byte string")
    if length != len(payload) - at:
        raise Rejected("bad-payload", "the ciphertext's length does not match the payload")
    if length < TAG_BYTES + 1:
        raise Rejected("bad-payload", "the ciphertext is shorter than a tag and a codec byte")
    return payload[3:19], payload[21:45], payload[at:]


def decrypt_payload(keys: Callable[[bytes], bytes | None], space: str, author: bytes, seq: int,
                    payload: bytes, max_body: int = MAX_BODY_BYTES) -> bytes:
    """The body of a kind-3 payload of envelope ``seq`` of ``author`` in ``space``.

    Args:
        keys: the epoch key of an epoch id, or None (e.g. ``keyring.keys_of(space)``).
        max_body: the largest body accepted (decompressed).

    Raises:
        Rejected: ``bad-payload`` (does not decode, or its plaintext does not), ``no-key``
            (``keys`` has no key for its epoch), ``undecryptable`` (does not authenticate:
            tampered, or made for another space, author, seq or epoch).
    """
    epoch_id, nonce, ct = _split(payload)
    key = keys(epoch_id)
    if key is None:
        raise Rejected("no-key", f"no key for epoch {epoch_id.hex()} of {space}")
    try:
        plain: bytes = crypto_aead_xchacha20poly1305_ietf_decrypt(
            ct, associated_data(space, author, seq, epoch_id), nonce, key)
    except CryptoError:
        raise Rejected("undecryptable", f"payload of seq {seq} does not authenticate under "
                                        f"epoch {epoch_id.hex()}") from None
    return decode_plaintext(plain, max_body)


def epoch_of(payload: bytes) -> bytes | None:
    """The epoch id a kind-3 payload names, or None if it is not one (cheap: no decode)."""
    if len(payload) > _BODY_AT and payload.startswith(_HEAD):
        return payload[3:19]
    return None


def payload_kind(payload: bytes) -> int | None:
    """The kind a payload says it is (its first item: 2 plaintext data, 3 encrypted data,
    4 membership), from its first two bytes; None for anything else (format 1 included)."""
    if len(payload) >= 2 and 0x81 <= payload[0] <= 0x97 and payload[1] < 24:
        return payload[1]
    return None


# -- the space's human name -------------------------------------------------------------
def seal_label(secret: bytes, name: str) -> bytes:
    """``cbor([nonce24, secretbox(label_key(S), name as UTF-8)])``."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_SPACE_NAME:
        raise ValueError(f"a space name is 1..{MAX_SPACE_NAME} characters")
    nonce = os.urandom(NONCE_BYTES)
    box: bytes = crypto_secretbox(name.encode("utf-8"), nonce, label_key(secret))
    return cbor2.dumps([nonce, box], canonical=True)


def open_label(secret: bytes, blob: bytes) -> str:
    """The name in a label blob.

    Raises:
        Rejected: ``bad-payload``, ``undecryptable`` (not sealed under this space's secret).
    """
    if not isinstance(blob, bytes) or len(blob) > MAX_LABEL_BLOB:
        raise Rejected("bad-payload", f"a label is bytes of at most {MAX_LABEL_BLOB}")
    try:
        items = loads_exact(blob)
    except Exception as exc:  # trust boundary: cbor2 raises several types on garbage
        raise Rejected("bad-payload", f"label is not CBOR: {exc}") from None
    if not (isinstance(items, list) and len(items) == 2 and isinstance(items[0], bytes)
            and len(items[0]) == NONCE_BYTES and isinstance(items[1], bytes)
            and len(items[1]) > TAG_BYTES):
        raise Rejected("bad-payload", "label is not [nonce(24), secretbox]")
    try:
        raw: bytes = crypto_secretbox_open(items[1], items[0], label_key(secret))
    except CryptoError:
        raise Rejected("undecryptable", "the label is not sealed under this space's secret") from None
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("bad-payload", "the label is not UTF-8") from None
    if not 0 < len(name) <= MAX_SPACE_NAME:
        raise Rejected("bad-payload", f"a space name is 1..{MAX_SPACE_NAME} characters")
    return name


# -- the keyring ------------------------------------------------------------------------
#: Invite seeds kept per space (one per token this device joined with; more is hostile).
MAX_INVITE_SEEDS = 16


class Keyring:
    """Every space's secret ``S`` and epoch keys that this device holds.

    Owned by the replica (one per data directory), stored by :class:`crdt_sync.secrets.Secrets`
    (call its ``save()`` after adding). Keys are only ever added: an epoch key, once
    held, is never replaced. Thread-safe for one writer and many readers (plain dicts).
    """

    __slots__ = ("_epochs", "_invites", "_keys", "_secrets", "version")

    def __init__(self) -> None:
        self._secrets: dict[str, bytes] = {}
        self._keys: dict[str, dict[bytes, bytes]] = {}
        self._epochs: dict[str, dict[bytes, int]] = {}
        #: seeds of the invite keys this device joined with (boxes sealed to them open too)
        self._invites: dict[str, tuple[bytes, ...]] = {}
        #: grows by one per change (what :class:`~crdt_sync.secrets.Secrets` saves)
        self.version = 0

    def add(self, space: str, epoch_n: int, epoch_id: bytes, key: bytes, secret: bytes) -> bool:
        """Hold epoch ``(epoch_n, epoch_id)`` of ``space`` and its secret. True if it is new.

        Raises:
            Rejected: ``bad-key``: ``epoch_id`` is not the id of ``key``
                (:func:`epoch_id_of`), or this space's secret or this epoch's number is
                already held with another value (the first one held stays).
        """
        _check_key("epoch key", key)
        _check_key("space secret", secret)
        if not isinstance(epoch_n, int) or isinstance(epoch_n, bool) or not 0 <= epoch_n < 2**63:
            raise ValueError("epoch_n must be an int in 0 .. 2**63 - 1")
        if epoch_id_of(key) != epoch_id:
            raise Rejected("bad-key", f"the key sealed for epoch {epoch_n} of {space} is not "
                                      f"the key its id {epoch_id.hex()} names")
        held = self._secrets.get(space)
        if held is not None and held != secret:
            raise Rejected("bad-key", f"a different secret for {space} than the one held")
        numbers = self._epochs.get(space, {})
        if epoch_id in numbers:
            if numbers[epoch_id] != epoch_n:
                raise Rejected("bad-key", f"epoch {epoch_id.hex()} of {space} is held as number "
                                          f"{numbers[epoch_id]}, not {epoch_n}")
            return False
        if held is None:
            self._secrets[space] = secret
        # new dicts replace the old ones whole: a reader never sees one half-updated
        self._keys[space] = {**self._keys.get(space, {}), epoch_id: key}
        self._epochs[space] = {**numbers, epoch_id: epoch_n}
        self.version += 1
        return True

    def add_invite(self, space: str, seed: bytes) -> bool:
        """Hold the seed of an invite key this device joined ``space`` with: a keys record
        made after the invite and before the redemption reached its admin is sealed to the
        invite key, not to this device (docs/DESIGN.md, "Single-use invites"). At most
        :data:`MAX_INVITE_SEEDS` per space (the oldest goes). True if it is new."""
        _check_key("invite seed", seed)
        held = self._invites.get(space, ())
        if seed in held:
            return False
        self._invites[space] = (*held, seed)[-MAX_INVITE_SEEDS:]
        self.version += 1
        return True

    def invite_seeds(self, space: str) -> tuple[bytes, ...]:
        return self._invites.get(space, ())

    def key(self, space: str, epoch_id: bytes) -> bytes | None:
        keys = self._keys.get(space)
        return None if keys is None else keys.get(epoch_id)

    def keys_of(self, space: str) -> Callable[[bytes], bytes | None]:
        """``epoch_id -> key`` of one space, for :func:`decrypt_payload` (sees later adds)."""
        return lambda epoch_id: self.key(space, epoch_id)

    def secret(self, space: str) -> bytes | None:
        return self._secrets.get(space)

    def epochs(self, space: str) -> list[tuple[int, bytes]]:
        """``(epoch_n, epoch_id)`` of the epochs held, in ``(n, id)`` order (the last is the
        highest; the epoch a writer uses is chosen from these by the membership rules)."""
        return sorted((n, eid) for eid, n in self._epochs.get(space, {}).items())

    def spaces(self) -> list[str]:
        return sorted(self._secrets)

    def merge(self, other: Keyring) -> int:
        """Add everything ``other`` holds that this one does not (another process saved it);
        the number of epochs added. A conflicting value is skipped (the one held stays)."""
        added = 0
        for space, keys in other._keys.items():
            for epoch_id, key in keys.items():
                try:
                    added += self.add(space, other._epochs[space][epoch_id], epoch_id, key,
                                      other._secrets[space])
                except Rejected:
                    continue
        for space, seeds in other._invites.items():
            for seed in seeds:
                added += self.add_invite(space, seed)
        return added

    # -- the stored form (docs/DESIGN.md, "Encryption", "Key file") -------------------------
    def to_cbor(self) -> dict[str, list[object]]:
        """``{space: [secret, [[epoch_n, epoch_id, key], ...]] (+ [invite_seed, ...])}``, epochs
        in ``(n, id)`` order; the third item only when invite seeds are held."""
        out: dict[str, list[object]] = {}
        for space, secret in self._secrets.items():
            epochs = [[n, eid, self._keys[space][eid]] for n, eid in self.epochs(space)]
            entry: list[object] = [secret, epochs]
            if self._invites.get(space):
                entry.append(list(self._invites[space]))
            out[space] = entry
        return out

    @classmethod
    def from_cbor(cls, data: object) -> Keyring:
        """Inverse of :meth:`to_cbor`; ValueError if it does not have that shape."""
        ring = cls()
        if not isinstance(data, dict):
            raise ValueError("keyring is not a map")
        for space, entry in data.items():
            if not (isinstance(space, str) and isinstance(entry, list) and len(entry) in (2, 3)
                    and isinstance(entry[1], list)):
                raise ValueError("keyring entry is not space: [secret, [epoch, ...]]")
            secret, epochs = entry[0], entry[1]
            seeds = entry[2] if len(entry) == 3 else []
            if not (isinstance(seeds, list) and 0 < len(seeds) <= MAX_INVITE_SEEDS) and len(entry) == 3:
                raise ValueError("keyring invite seeds are not a list of 1 to 16 seeds")
            for epoch in epochs:
                if not (isinstance(epoch, list) and len(epoch) == 3):
                    raise ValueError("keyring epoch is not [n, id, key]")
                try:
                    ring.add(space, epoch[0], epoch[1], epoch[2], secret)
                except Rejected as exc:
                    raise ValueError(str(exc)) from None
            if not epochs:
                ring._secrets[space] = _check_key("space secret", secret)
            for seed in seeds:
                if not isinstance(seed, bytes):
                    raise ValueError("keyring invite seed is not bytes")
                ring.add_invite(space, seed)
        ring.version = 0
        return ring
