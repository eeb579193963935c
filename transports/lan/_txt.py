"""The DNS-SD TXT record of a crdt-sync LAN service (spec: docs/PROTOCOL.md, "LAN discovery").

It says only what a dialler needs before any handshake: which protocol versions the device
speaks and a random token that changes at every start. No device id, no space: a stranger on
the network learns that a crdt-sync service exists and nothing that tracks the device.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

SERVICE_TYPE = "_crdtsync._tcp.local."
TXT_VERSION = 1
#: Bounds checked before anything is built from a peer's record.
MAX_KEYS = 16
MAX_KEY_LEN = 9
MAX_VALUE_LEN = 64
MAX_VERSIONS = 8
TOKEN_BYTES = 16


class TxtError(ValueError):
    """A TXT record that is refused; the message is the reason, recorded for status."""


@dataclass(frozen=True, slots=True)
class TxtRecord:
    """What a peer's TXT record says."""

    versions: tuple[int, ...]
    token: str

    def properties(self) -> dict[str, str]:
        return {"txtvers": str(TXT_VERSION), "v": ",".join(map(str, self.versions)),
                "t": self.token}


def new_token() -> str:
    """A fresh instance token: 16 random bytes, lowercase hex."""
    return secrets.token_hex(TOKEN_BYTES)


def _text(raw: bytes | None, key: str) -> str:
    if raw is None:
        raise TxtError(f"key {key!r} has no value")
    if len(raw) > MAX_VALUE_LEN:
        raise TxtError(f"value of {key!r} is {len(raw)} bytes, at most {MAX_VALUE_LEN}")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise TxtError(f"value of {key!r} is not ASCII") from None
    return text


def _versions(text: str) -> tuple[int, ...]:
    parts = text.split(",")
    if len(parts) > MAX_VERSIONS:
        raise TxtError(f"{len(parts)} protocol versions, at most {MAX_VERSIONS}")
    versions: list[int] = []
    for part in parts:
        if not part.isdigit() or len(part) > 5 or not 1 <= int(part) <= 65535:
            raise TxtError(f"protocol version {part!r} is not an integer in 1..65535")
        versions.append(int(part))
    if len(set(versions)) != len(versions):
        raise TxtError("a protocol version is listed twice")
    return tuple(versions)


def parse_txt(properties: Mapping[bytes, bytes | None]) -> TxtRecord:
    """Check a peer's TXT properties (as python-zeroconf gives them) within strict bounds.

    Unknown keys are ignored (a later ``txtvers`` may add some) but counted in the bounds.

    Raises:
        TxtError: the record is refused; the message says why.
    """
    if len(properties) > MAX_KEYS:
        raise TxtError(f"{len(properties)} keys, at most {MAX_KEYS}")
    for key in properties:
        if len(key) > MAX_KEY_LEN:
            raise TxtError(f"a key is {len(key)} bytes, at most {MAX_KEY_LEN}")
    txtvers = _text(properties.get(b"txtvers"), "txtvers") if b"txtvers" in properties else None
    if txtvers is None:
        raise TxtError("no txtvers key")
    if txtvers != str(TXT_VERSION):
        raise TxtError(f"txtvers {txtvers!r} is not {TXT_VERSION}")
    if b"v" not in properties or b"t" not in properties:
        raise TxtError("missing key 'v' or 't'")
    versions = _versions(_text(properties[b"v"], "v"))
    token = _text(properties[b"t"], "t")
    if len(token) != 2 * TOKEN_BYTES or token.strip("0123456789abcdef"):
        raise TxtError(f"token is not {2 * TOKEN_BYTES} lowercase hex digits")
    return TxtRecord(versions, token)
