"""Device identities: Ed25519 key pairs (pynacl); a device id is its public key in base32."""

from __future__ import annotations

import base64
from functools import lru_cache

from nacl.bindings import crypto_sign_BYTES, crypto_sign_open, crypto_sign_PUBLICKEYBYTES
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from .errors import CrdtSyncError


@lru_cache(maxsize=8192)  # (bytes only: a key is asked for its id several times per envelope)
def _device_id(public_key: bytes) -> str:
    return base64.b32encode(public_key).decode("ascii").rstrip("=").lower()


def device_id(public_key: bytes) -> str:
    """The printable id of a device: lowercase base32 of its 32-byte public key, unpadded."""
    return _device_id(bytes(public_key))


def public_key_of(device: str) -> bytes:
    """Inverse of :func:`device_id`."""
    return _public_key_of(device)


@lru_cache(maxsize=8192)  # (a session asks it once per received envelope; errors are not cached)
def _public_key_of(device: str) -> bytes:
    try:
        key = base64.b32decode(device.upper() + "=" * (-len(device) % 8))
    except ValueError as exc:
        raise CrdtSyncError(f"not a device id: {device!r}") from exc
    if len(key) != 32:
        raise CrdtSyncError(f"not a device id: {device!r}")
    return key


class Identity:
    """A device's key pair. The private key never leaves the data directory."""

    __slots__ = ("_signing", "id", "public_key")

    def __init__(self, seed: bytes) -> None:
        self._signing = SigningKey(seed)
        self.public_key: bytes = bytes(self._signing.verify_key)
        self.id: str = device_id(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(bytes(SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        return bytes(self._signing)

    def sign(self, message: bytes) -> bytes:
        return self._signing.sign(message).signature


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    # (what VerifyKey(public_key).verify(message, signature) does, without building the key
    # object: the same libsodium check, crypto_sign_open)
    try:
        if len(public_key) != crypto_sign_PUBLICKEYBYTES or len(signature) != crypto_sign_BYTES:
            return False
        crypto_sign_open(signature + message, public_key)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True
