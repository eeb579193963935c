"""Sync protocol messages: frozen dataclasses in a tagged union, and their CBOR framing.

One frame is one message: the canonical CBOR of an array whose first item is the message
type. See docs/PROTOCOL.md for the layouts; this module is their single implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

PROTOCOL_VERSION = 1
MIN_VERSION = 1
MAX_VERSION = 1
#: Largest frame either side sends or accepts.
MAX_FRAME = 1024 * 1024
NONCE_BYTES = 32
BLIND_BYTES = 16
MAX_SPACES = 1024
MAX_VV_ENTRIES = 4096
MAX_BATCH_ENVELOPES = 4096
MAX_TEXT = 512
MAX_SPACE_NAME = 128

#: An author as sent: an index into the frame sender's author table, or a 32-byte key.
AuthorRef = int | bytes


class ProtocolViolation(Exception):
    """A frame that cannot be accepted; ``code`` is the ERROR code to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# Error codes (ERROR and BYE frames).
E_NORMAL = 0
E_MALFORMED = 1
E_UNSUPPORTED_VERSION = 2
E_AUTH_FAILED = 3
E_TOO_LARGE = 4
E_REJECTED = 5
E_UNEXPECTED = 6
E_TIMEOUT = 7
E_INTERNAL = 8
E_GOING_AWAY = 9
E_LIMIT = 10
ERROR_NAMES = {E_NORMAL: "normal", E_MALFORMED: "malformed", E_UNSUPPORTED_VERSION:
               "unsupported-version", E_AUTH_FAILED: "auth-failed", E_TOO_LARGE: "too-large",
               E_REJECTED: "rejected-envelope", E_UNEXPECTED: "unexpected-message",
               E_TIMEOUT: "timeout", E_INTERNAL: "internal", E_GOING_AWAY: "going-away",
               E_LIMIT: "limit"}

T_HELLO, T_AUTH, T_SPACES, T_HAVE, T_ENVELOPES, T_ACK, T_PING, T_PONG, T_ERROR, T_BYE = range(10)


@dataclass(frozen=True, slots=True)
class Hello:
    min_version: int
    max_version: int
    device_key: bytes
    nonce: bytes
    capabilities: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Auth:
    signature: bytes


@dataclass(frozen=True, slots=True)
class Spaces:
    """Blinded space ids (16 bytes each), or space names (text) between a device and a relay."""

    blinded: list[bytes | str]


@dataclass(frozen=True, slots=True)
class Have:
    space: int
    vv: list[tuple[AuthorRef, int]]


@dataclass(frozen=True, slots=True)
class WireEnvelope:
    """An envelope without what the receiver recomputes (version, space, prev_hash)."""

    author: AuthorRef
    seq: int
    hlc: int
    payload: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Envelopes:
    space: int
    batch: int
    envelopes: list[WireEnvelope]


@dataclass(frozen=True, slots=True)
class Ack:
    space: int
    batch: int
    vv: list[tuple[AuthorRef, int]]


@dataclass(frozen=True, slots=True)
class Ping:
    token: int


@dataclass(frozen=True, slots=True)
class Pong:
    token: int


@dataclass(frozen=True, slots=True)
class Error:
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class Bye:
    code: int


Message = Hello | Auth | Spaces | Have | Envelopes | Ack | Ping | Pong | Error | Bye


def _vv_out(vv: list[tuple[AuthorRef, int]]) -> list[list[Any]]:
    return [[a, s] for a, s in vv]


def encode(msg: Message) -> bytes:
    """The frame of one message (canonical CBOR)."""
    items: list[Any]
    match msg:
        case Hello():
            items = [T_HELLO, msg.min_version, msg.max_version, msg.device_key, msg.nonce,
                     msg.capabilities]
        case Auth():
            items = [T_AUTH, msg.signature]
        case Spaces():
            items = [T_SPACES, msg.blinded]
        case Have():
            items = [T_HAVE, msg.space, _vv_out(msg.vv)]
        case Envelopes():
            items = [T_ENVELOPES, msg.space, msg.batch,
                     [[e.author, e.seq, e.hlc, e.payload, e.signature] for e in msg.envelopes]]
        case Ack():
            items = [T_ACK, msg.space, msg.batch, _vv_out(msg.vv)]
        case Ping():
            items = [T_PING, msg.token]
        case Pong():
            items = [T_PONG, msg.token]
        case Error():
            items = [T_ERROR, msg.code, msg.message[:MAX_TEXT]]
        case Bye():
            items = [T_BYE, msg.code]
    return cbor2.dumps(items, canonical=True)


def _head(major: int, n: int) -> bytes:
    """A CBOR head in its shortest (canonical) form."""
    if n < 24:
        return bytes([major | n])
    if n < 0x100:
        return bytes([major | 24, n])
    if n < 0x10000:
        return bytes([major | 25]) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes([major | 26]) + n.to_bytes(4, "big")
    return bytes([major | 27]) + n.to_bytes(8, "big")


def cbor_ref(ref: AuthorRef) -> bytes:
    """The canonical CBOR of an author reference (an index or a key)."""
    return _head(0x40, len(ref)) + ref if isinstance(ref, bytes) else _head(0x00, ref)


_ENVELOPES_HEAD = bytes([0x84, T_ENVELOPES])


def encode_envelopes(space: int, batch: int, items: list[bytes]) -> bytes:
    """The ENVELOPES frame of already encoded envelope items (each the canonical CBOR of
    ``[author, seq, hlc, payload, signature]``): the same bytes as :func:`encode` makes."""
    return b"".join([_ENVELOPES_HEAD, _head(0x00, space), _head(0x00, batch),
                     _head(0x80, len(items)), *items])


# -- decoding: every check a hostile frame needs ----------------------------------------------

def _bad(what: str) -> ProtocolViolation:
    return ProtocolViolation(E_MALFORMED, what)


def _uint(v: Any, what: str, limit: int = 2**64) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < limit:
        raise _bad(f"{what} is not an unsigned integer")
    return v


def _bytes(v: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(v, bytes) or (size is not None and len(v) != size):
        raise _bad(f"{what} is not {size if size is not None else ''} bytes".replace("  ", " "))
    return v


def _author(v: Any) -> AuthorRef:
    if isinstance(v, bytes):
        return _bytes(v, "author key", 32)
    return _uint(v, "author index", MAX_VV_ENTRIES * 16)


_REF_LIMIT = MAX_VV_ENTRIES * 16
_SEQ_LIMIT = 2**63


def _vv_in(v: Any) -> list[tuple[AuthorRef, int]]:
    if not isinstance(v, list) or len(v) > MAX_VV_ENTRIES:
        raise _bad("version vector is not a bounded array")
    out = []
    for entry in v:
        # The common case inline (an ACK per frame carries the whole version vector); any
        # doubt goes through the checks that name what is wrong.
        if type(entry) is list and len(entry) == 2:
            a, s = entry
            if (type(s) is int and 0 <= s < _SEQ_LIMIT
                    and ((type(a) is int and 0 <= a < _REF_LIMIT) or (type(a) is bytes and len(a) == 32))):
                out.append((a, s))
                continue
        if not isinstance(entry, list) or len(entry) != 2:
            raise _bad("version vector entry is not [author, seq]")
        out.append((_author(entry[0]), _uint(entry[1], "seq", _SEQ_LIMIT)))
    return out


def decode(frame: bytes) -> Message:
    """Parse one frame. Raises :class:`ProtocolViolation` with the code to answer with."""
    if len(frame) > MAX_FRAME:
        raise ProtocolViolation(E_TOO_LARGE, f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
    try:
        items = cbor2.loads(frame)
    except Exception as exc:  # trust boundary: cbor2 raises several types on garbage
        raise _bad(f"frame is not CBOR: {exc}") from None
    if not isinstance(items, list) or not items:
        raise _bad("frame is not a non-empty array")
    kind, args = items[0], items[1:]
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise _bad("message type is not an integer")
    shape = _SHAPES.get(kind)
    if shape is None:
        raise ProtocolViolation(E_UNEXPECTED, f"unknown message type {kind}")
    if len(args) != shape:
        raise _bad(f"message type {kind} takes {shape} fields, got {len(args)}")
    return _PARSERS[kind](args)


def _hello(a: list[Any]) -> Hello:
    caps = a[4]
    if not isinstance(caps, dict) or not all(isinstance(k, str) for k in caps):
        raise _bad("capabilities are not a map of text keys")
    return Hello(_uint(a[0], "min version"), _uint(a[1], "max version"),
                 _bytes(a[2], "device key", 32), _bytes(a[3], "nonce", NONCE_BYTES), caps)


def _spaces(a: list[Any]) -> Spaces:
    if not isinstance(a[0], list):
        raise _bad("SPACES does not hold an array")
    if len(a[0]) > MAX_SPACES:
        raise ProtocolViolation(E_LIMIT, f"more than {MAX_SPACES} spaces")
    out: list[bytes | str] = []
    for entry in a[0]:
        if isinstance(entry, str):
            if not 0 < len(entry) <= MAX_SPACE_NAME:
                raise _bad("space name is empty or too long")
            out.append(entry)
        else:
            out.append(_bytes(entry, "blinded space id", BLIND_BYTES))
    return Spaces(out)


def _envelopes(a: list[Any]) -> Envelopes:
    if not isinstance(a[2], list) or len(a[2]) > MAX_BATCH_ENVELOPES:
        raise _bad("envelope batch is not a bounded array")
    out = []
    for e in a[2]:
        if not isinstance(e, list) or len(e) != 5:
            raise _bad("envelope is not [author, seq, hlc, payload, signature]")
        seq = _uint(e[1], "seq", 2**63)
        if seq == 0:
            raise _bad("seq starts at 1")
        out.append(WireEnvelope(_author(e[0]), seq, _uint(e[2], "hlc"),
                                _bytes(e[3], "payload"), _bytes(e[4], "signature", 64)))
    return Envelopes(_uint(a[0], "space index", MAX_SPACES), _uint(a[1], "batch"), out)


def _error(a: list[Any]) -> Error:
    if not isinstance(a[1], str):
        raise _bad("error message is not text")
    return Error(_uint(a[0], "error code"), a[1][:MAX_TEXT])


_SHAPES = {T_HELLO: 5, T_AUTH: 1, T_SPACES: 1, T_HAVE: 2, T_ENVELOPES: 3, T_ACK: 3, T_PING: 1,
           T_PONG: 1, T_ERROR: 2, T_BYE: 1}
_PARSERS: dict[int, Callable[[list[Any]], Message]] = {
    T_HELLO: _hello,
    T_AUTH: lambda a: Auth(_bytes(a[0], "signature", 64)),
    T_SPACES: _spaces,
    T_HAVE: lambda a: Have(_uint(a[0], "space index", MAX_SPACES), _vv_in(a[1])),
    T_ENVELOPES: _envelopes,
    T_ACK: lambda a: Ack(_uint(a[0], "space index", MAX_SPACES), _uint(a[1], "batch"), _vv_in(a[2])),
    T_PING: lambda a: Ping(_uint(a[0], "token")),
    T_PONG: lambda a: Pong(_uint(a[0], "token")),
    T_ERROR: _error,
    T_BYE: lambda a: Bye(_uint(a[0], "code")),
}
