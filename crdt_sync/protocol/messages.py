"""Sync protocol messages: frozen dataclasses in a tagged union, and their CBOR framing.

One frame is one message: the canonical CBOR of an array whose first item is the message
type. See docs/PROTOCOL.md for the layouts; this module is their single implementation.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2

from ..cbor_limits import CborLimitError, is_canonical, loads_plain, scan
from ..quarantine import MAX_REASON  # a QUARANTINED notice's reason: the bound of what is stored
from ..snapshot_transfer import MAX_TRANSFER_BYTES
from .prebuilt import AuthorRef as AuthorRef

#: Version 3: encrypted links (ephemeral keys in HELLO, every later frame SEALED, type 13); a
#: version 2 peer gets ERROR 2 (docs/PROTOCOL.md, "Link encryption").
#: Version 4: snapshots in sessions (SNAPSHOT, SNAPSHOT_ACK: docs/PROTOCOL.md, "Snapshots in
#: sessions"); a version 3 peer still syncs, without them.
PROTOCOL_VERSION = 4
MIN_VERSION = 3
MAX_VERSION = 4
#: Largest frame either side sends or accepts.
MAX_FRAME = 1024 * 1024
#: Largest frame inside SEALED (the SEALED head and the AEAD tag take the rest).
MAX_INNER_FRAME = MAX_FRAME - 64
#: Largest frame accepted before the peer's AUTH has been verified (HELLO is ~100 bytes).
MAX_FRAME_BEFORE_AUTH = 4096
#: Deepest nesting of arrays and maps in a frame (the frame's array is depth 1; ENVELOPES
#: needs 3), and most CBOR items in one frame (4,096 envelopes of 6 items need ~24,600).
MAX_FRAME_DEPTH = 16
MAX_FRAME_ITEMS = 32_768
NONCE_BYTES = 32
BLIND_BYTES = 16
MAX_SPACES = 1024
MAX_VV_ENTRIES = 4096
MAX_BATCH_ENVELOPES = 4096
MAX_TEXT = 512
MAX_SPACE_NAME = 128
#: Envelopes one FORK_PROOF carries: one (its sender's, to compare) or two (a proof).
MAX_FORK_ENVELOPES = 2
#: Largest envelope (``crdt_sync.envelope.MAX_ENVELOPE_BYTES``; the protocol layer does not
#: import the envelope module).
MAX_FORK_ENVELOPE_BYTES = 512 * 1024
HASH_BYTES = 32
#: The AEAD tag every SEALED ciphertext ends with (``crdt_sync.protocol.link``).
SEALED_TAG_BYTES = 16



class MessageType(enum.IntEnum):
    """A frame's first item (docs/PROTOCOL.md, "Messages")."""

    HELLO = 0
    AUTH = 1
    SPACES = 2
    HAVE = 3
    ENVELOPES = 4
    ACK = 5
    PING = 6
    PONG = 7
    ERROR = 8
    BYE = 9
    QUARANTINED = 10
    FORK_PROOF = 11
    CLOCK_SKEW = 12
    SEALED = 13
    SNAPSHOT = 14
    SNAPSHOT_ACK = 15


class ErrorCode(enum.IntEnum):
    """The code of an ERROR or BYE frame (docs/PROTOCOL.md, "Error codes")."""

    NORMAL = 0
    MALFORMED = 1
    UNSUPPORTED_VERSION = 2
    AUTH_FAILED = 3
    TOO_LARGE = 4
    REJECTED = 5
    UNEXPECTED = 6
    TIMEOUT = 7
    INTERNAL = 8
    GOING_AWAY = 9
    LIMIT = 10

    @property
    def label(self) -> str:
        """The code's name as docs/PROTOCOL.md and log lines spell it (``rejected-envelope``)."""
        return ERROR_NAMES[self]


def error_name(code: int) -> str:
    """The label of a known error code, else the number (a newer peer may send others)."""
    return ERROR_NAMES.get(code, str(code))


def error_code(code: int) -> int:
    """``code`` as an :class:`ErrorCode` when it is one (a newer peer's stays an int)."""
    try:
        return ErrorCode(code)
    except ValueError:
        return code


class ProtocolViolation(Exception):
    """A frame that cannot be accepted; ``code`` is the ERROR code to answer with."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


# The short names the rest of the code (and the tests) import; the same members.
E_NORMAL = ErrorCode.NORMAL
E_MALFORMED = ErrorCode.MALFORMED
E_UNSUPPORTED_VERSION = ErrorCode.UNSUPPORTED_VERSION
E_AUTH_FAILED = ErrorCode.AUTH_FAILED
E_TOO_LARGE = ErrorCode.TOO_LARGE
E_REJECTED = ErrorCode.REJECTED
E_UNEXPECTED = ErrorCode.UNEXPECTED
E_TIMEOUT = ErrorCode.TIMEOUT
E_INTERNAL = ErrorCode.INTERNAL
E_GOING_AWAY = ErrorCode.GOING_AWAY
E_LIMIT = ErrorCode.LIMIT
ERROR_NAMES: dict[int, str] = {
    E_NORMAL: "normal", E_MALFORMED: "malformed", E_UNSUPPORTED_VERSION: "unsupported-version",
    E_AUTH_FAILED: "auth-failed", E_TOO_LARGE: "too-large", E_REJECTED: "rejected-envelope",
    E_UNEXPECTED: "unexpected-message", E_TIMEOUT: "timeout", E_INTERNAL: "internal",
    E_GOING_AWAY: "going-away", E_LIMIT: "limit"}

T_HELLO = MessageType.HELLO
T_AUTH = MessageType.AUTH
T_SPACES = MessageType.SPACES
T_HAVE = MessageType.HAVE
T_ENVELOPES = MessageType.ENVELOPES
T_ACK = MessageType.ACK
T_PING = MessageType.PING
T_PONG = MessageType.PONG
T_ERROR = MessageType.ERROR
T_BYE = MessageType.BYE
T_QUARANTINED = MessageType.QUARANTINED
T_FORK_PROOF = MessageType.FORK_PROOF
T_CLOCK_SKEW = MessageType.CLOCK_SKEW
T_SEALED = MessageType.SEALED
T_SNAPSHOT = MessageType.SNAPSHOT
T_SNAPSHOT_ACK = MessageType.SNAPSHOT_ACK
#: The first version with SNAPSHOT and SNAPSHOT_ACK (in a version 3 session they are ERROR 6).
SNAPSHOT_VERSION = 4


@dataclass(frozen=True, slots=True)
class Hello:
    """The first frame, in the clear: no device key, only this session's X25519 key."""

    min_version: int
    max_version: int
    ephemeral_key: bytes
    nonce: bytes
    capabilities: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Auth:
    """Inside SEALED: the sender's device key and its signature over the transcript."""

    device_key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Spaces:
    """Blinded space ids (16 bytes each), or space names (text) between a device and a relay."""

    blinded: list[bytes | str]


@dataclass(frozen=True, slots=True)
class Have:
    """A space's version vector and, per author, the hash of its head (the envelope at
    that seq): 32 bytes, empty only for seq 0. ``heads[i]`` belongs to ``vv[i]``; missing
    ones encode as empty."""

    space: int
    vv: list[tuple[AuthorRef, int]]
    heads: list[bytes] = field(default_factory=list)


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


@dataclass(frozen=True, slots=True)
class Quarantined:
    """The sender set aside ``author``'s chain in ``space`` (an index into the receiver's
    SPACES, like HAVE's) from ``from_seq`` on, for ``reason`` (a code such as ``bad-payload``)
    with ``detail`` for people: the receiver stops sending that chain in this session."""

    space: int
    author: AuthorRef
    from_seq: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class ForkProof:
    """Envelope wire forms of one (space, author, seq): one (the sender's, for the receiver
    to compare with its own) or two with different hashes (a fork proof)."""

    space: int
    envelopes: list[bytes]


@dataclass(frozen=True, slots=True)
class ClockSkew:
    """The receiver holds back ``author``'s envelopes of space ``space`` (the receiver's own
    space index) from ``seq`` on: their HLC is ``ahead_ms`` ahead of its wall clock, more than
    it allows (docs/PROTOCOL.md, "Clocks")."""

    space: int
    author: AuthorRef
    seq: int
    ahead_ms: int


@dataclass(frozen=True, slots=True)
class Sealed:
    """An encrypted frame (crdt_sync.protocol.link): ``ciphertext`` is one frame and its tag."""

    counter: int
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """Bytes ``offset ..`` of a transfer of ``total`` bytes (:mod:`crdt_sync.snapshot_transfer`)
    whose record hashes to ``id``; ``bases``: ``(key, seq)`` of chains the sender lacks below."""

    space: int
    id: bytes
    total: int
    offset: int
    chunk: bytes
    bases: list[tuple[bytes, int]]


@dataclass(frozen=True, slots=True)
class SnapshotAck:
    """The receiver holds ``received`` bytes of transfer ``id``; ``verdict``: empty while it
    receives, else ``applied``, ``stored``, ``known`` or the reason it refused the snapshot."""

    space: int
    id: bytes
    received: int
    verdict: str
    detail: str


Message = (Hello | Auth | Spaces | Have | Envelopes | Ack | Ping | Pong | Error | Bye | Quarantined
           | ForkProof | ClockSkew | Sealed | SnapshotChunk | SnapshotAck)


# Plain ints for the encoder (an enum member costs cbor2 a slower type lookup per item).
_HELLO, _AUTH, _SPACES, _HAVE, _ENVELOPES, _ACK, _PING, _PONG, _ERROR, _BYE = map(int, list(MessageType)[:10])
_QUARANTINED = int(MessageType.QUARANTINED)
_FORK_PROOF = int(MessageType.FORK_PROOF)
_CLOCK_SKEW = int(MessageType.CLOCK_SKEW)
_SEALED = int(MessageType.SEALED)


def peek_type(frame: bytes) -> MessageType | None:
    """The type of a well-formed frame without decoding the rest of it (the driver orders
    frames by it; the relay times its fan-out by it); None when the frame does not start
    with an array head and a known type (:func:`decode` says what is wrong with it)."""
    if len(frame) < 2 or not 0x81 <= frame[0] <= 0x97:
        return None  # every frame is a short array whose first item is a one-byte uint
    return _TYPES.get(frame[1])


_TYPES = {int(t): t for t in MessageType}


def _vv_out(vv: list[tuple[AuthorRef, int]]) -> list[list[Any]]:
    return [[a, s] for a, s in vv]


def encode(msg: Message) -> bytes:
    """The frame of one message (canonical CBOR)."""
    items: list[Any]
    match msg:
        case Hello():
            items = [_HELLO, msg.min_version, msg.max_version, msg.ephemeral_key, msg.nonce,
                     msg.capabilities]
        case Auth():
            items = [_AUTH, msg.device_key, msg.signature]
        case Spaces():
            items = [_SPACES, msg.blinded]
        case Have():
            heads = msg.heads
            items = [_HAVE, msg.space, [[a, s, heads[i] if i < len(heads) else b""]
                                        for i, (a, s) in enumerate(msg.vv)]]
        case Envelopes():
            items = [_ENVELOPES, msg.space, msg.batch,
                     [[e.author, e.seq, e.hlc, e.payload, e.signature] for e in msg.envelopes]]
        case Ack():
            items = [_ACK, msg.space, msg.batch, _vv_out(msg.vv)]
        case Ping():
            items = [_PING, msg.token]
        case Pong():
            items = [_PONG, msg.token]
        case Error():
            items = [_ERROR, int(msg.code), msg.message[:MAX_TEXT]]
        case Bye():
            items = [_BYE, int(msg.code)]
        case Quarantined():
            items = [_QUARANTINED, msg.space, msg.author, msg.from_seq, msg.reason[:MAX_REASON],
                     msg.detail[:MAX_TEXT]]
        case ForkProof():
            items = [_FORK_PROOF, msg.space, list(msg.envelopes)]
        case ClockSkew():
            items = [_CLOCK_SKEW, msg.space, msg.author, msg.seq, msg.ahead_ms]
        case Sealed():
            items = [_SEALED, msg.counter, msg.ciphertext]
        case SnapshotChunk():
            items = [int(T_SNAPSHOT), msg.space, msg.id, msg.total, msg.offset, msg.chunk,
                     [[k, s] for k, s in msg.bases]]
        case SnapshotAck():
            items = [int(T_SNAPSHOT_ACK), msg.space, msg.id, msg.received, msg.verdict[:MAX_REASON],
                     msg.detail[:MAX_TEXT]]
    return cbor2.dumps(items, canonical=True)


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


def _have(a: list[Any]) -> Have:
    if not isinstance(a[1], list) or len(a[1]) > MAX_VV_ENTRIES:
        raise _bad("version vector is not a bounded array")
    vv: list[tuple[AuthorRef, int]] = []
    heads: list[bytes] = []
    for entry in a[1]:
        if not isinstance(entry, list) or len(entry) != 3:
            raise _bad("HAVE entry is not [author, seq, head hash]")
        seq = _uint(entry[1], "seq", _SEQ_LIMIT)
        vv.append((_author(entry[0]), seq))
        heads.append(_bytes(entry[2], "head hash", HASH_BYTES if seq else 0))
    return Have(_uint(a[0], "space index", MAX_SPACES), vv, heads)


def _fork_proof(a: list[Any]) -> ForkProof:
    envs = a[1]
    if not isinstance(envs, list) or not 1 <= len(envs) <= MAX_FORK_ENVELOPES:
        raise _bad(f"FORK_PROOF does not hold 1 to {MAX_FORK_ENVELOPES} envelopes")
    for e in envs:
        if not isinstance(e, bytes) or len(e) > MAX_FORK_ENVELOPE_BYTES:
            raise _bad("FORK_PROOF envelope is not bytes of a bounded size")
    return ForkProof(_uint(a[0], "space index", MAX_SPACES), envs)


#: An ACK (a 4-item array of type 5) this small takes the fast path (``loads_plain``); its
#: parser accepts only unsigned integers and 32-byte keys in arrays.
_ACK_HEAD, _FAST_ACK_MAX = b"\x84\x05", 4096


def decode(frame: bytes) -> Message:
    """Parse one frame. Raises :class:`ProtocolViolation` with the code to answer with.

    An ACK per frame received is most of what a relay reads; a small one is decoded by the
    C decoder and checked by encoding it back (``cbor_limits.loads_plain``) instead of the
    byte-by-byte scan. Whatever that path does not accept takes the full path, so what is
    refused, and why, is the same on both (``tests/test_fast_ack.py`` compares them).
    """
    if len(frame) <= _FAST_ACK_MAX and frame[:2] == _ACK_HEAD:
        items = loads_plain(frame, MAX_FRAME_DEPTH)
        if items is not None:
            try:
                return _PARSERS[T_ACK](items[1:])
            except ProtocolViolation:
                pass  # the full path says what is wrong
    return decode_full(frame)


def decode_full(frame: bytes) -> Message:
    """:func:`decode` without its fast path (every frame through ``scan``)."""
    if len(frame) > MAX_FRAME:
        raise ProtocolViolation(E_TOO_LARGE, f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
    try:
        # On the bytes, before any object is built: depth, item count, lengths against what
        # is left, no trailing bytes, the canonical heads (crdt_sync.cbor_limits).
        special = scan(frame, MAX_FRAME_DEPTH, MAX_FRAME_ITEMS)
    except CborLimitError as exc:
        raise ProtocolViolation(E_LIMIT if exc.over_limit else E_MALFORMED, f"frame: {exc}") from None
    try:
        items = cbor2.loads(frame)
    except Exception as exc:  # trust boundary: cbor2 raises several types on garbage
        raise _bad(f"frame is not CBOR: {exc}") from None
    if special and not is_canonical(items, frame):  # a map or a float: key order, float width
        raise _bad("frame is not canonical CBOR (map keys out of order or repeated, or a float "
                   "longer than needed)")
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
                 _bytes(a[2], "ephemeral key", 32), _bytes(a[3], "nonce", NONCE_BYTES), caps)


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
    return Error(error_code(_uint(a[0], "error code")), a[1][:MAX_TEXT])


def _quarantined(a: list[Any]) -> Quarantined:
    if not isinstance(a[3], str) or not 0 < len(a[3]) <= MAX_REASON:
        raise _bad("quarantine reason is not a short text")
    if not isinstance(a[4], str) or len(a[4]) > MAX_TEXT:
        raise _bad("quarantine detail is not a bounded text")
    from_seq = _uint(a[2], "from seq", _SEQ_LIMIT)
    if from_seq == 0:
        raise _bad("seq starts at 1")
    return Quarantined(_uint(a[0], "space index", MAX_SPACES), _author(a[1]), from_seq, a[3], a[4])


_SHAPES: dict[int, int] = {T_HELLO: 5, T_AUTH: 2, T_SPACES: 1, T_HAVE: 2, T_ENVELOPES: 3, T_ACK: 3, T_PING: 1,
           T_PONG: 1, T_ERROR: 2, T_BYE: 1, T_QUARANTINED: 5, T_FORK_PROOF: 2, T_CLOCK_SKEW: 4,
           T_SEALED: 2, T_SNAPSHOT: 6, T_SNAPSHOT_ACK: 5}
_PARSERS: dict[int, Callable[[list[Any]], Message]] = {
    T_HELLO: _hello,
    T_AUTH: lambda a: Auth(_bytes(a[0], "device key", 32), _bytes(a[1], "signature", 64)),
    T_SPACES: _spaces,
    T_HAVE: _have,
    T_ENVELOPES: _envelopes,
    T_ACK: lambda a: Ack(_uint(a[0], "space index", MAX_SPACES), _uint(a[1], "batch"), _vv_in(a[2])),
    T_PING: lambda a: Ping(_uint(a[0], "token")),
    T_PONG: lambda a: Pong(_uint(a[0], "token")),
    T_ERROR: _error,
    T_BYE: lambda a: Bye(error_code(_uint(a[0], "code"))),
    T_QUARANTINED: _quarantined,
    T_FORK_PROOF: _fork_proof,
    T_CLOCK_SKEW: lambda a: ClockSkew(_uint(a[0], "space index", MAX_SPACES), _author(a[1]),
                                      _seq(a[2]), _uint(a[3], "ahead_ms")),
    T_SEALED: lambda a: Sealed(_uint(a[0], "counter"), _ciphertext(a[1])),
}


def _snapshot_chunk(a: list[Any]) -> SnapshotChunk:
    total = _uint(a[2], "snapshot size", MAX_TRANSFER_BYTES + 1)
    offset, chunk = _uint(a[3], "snapshot offset", total), _bytes(a[4], "snapshot chunk")
    if not chunk or offset + len(chunk) > total:
        raise _bad("a snapshot chunk holds 1 byte or more, within the transfer's size")
    if not isinstance(a[5], list) or len(a[5]) > MAX_VV_ENTRIES:
        raise _bad("snapshot bases are not a bounded array")
    bases = []
    for entry in a[5]:
        if not isinstance(entry, list) or len(entry) != 2:
            raise _bad("a snapshot base is [author key, seq]")
        bases.append((_bytes(entry[0], "author key", 32), _seq(entry[1])))
    return SnapshotChunk(_uint(a[0], "space index", MAX_SPACES), _bytes(a[1], "snapshot id", HASH_BYTES),
                         total, offset, chunk, bases)


def _snapshot_ack(a: list[Any]) -> SnapshotAck:
    if not isinstance(a[3], str) or len(a[3]) > MAX_REASON:
        raise _bad("snapshot verdict is not a short text")
    if not isinstance(a[4], str) or len(a[4]) > MAX_TEXT:
        raise _bad("snapshot verdict detail is not a bounded text")
    return SnapshotAck(_uint(a[0], "space index", MAX_SPACES), _bytes(a[1], "snapshot id", HASH_BYTES),
                       _uint(a[2], "received", MAX_TRANSFER_BYTES + 1), a[3], a[4])


def _ciphertext(v: Any) -> bytes:
    if not isinstance(v, bytes) or len(v) < SEALED_TAG_BYTES:
        raise _bad("SEALED ciphertext is shorter than its tag")
    return v


def _seq(v: Any) -> int:
    seq = _uint(v, "seq", _SEQ_LIMIT)
    if seq == 0:
        raise _bad("seq starts at 1")
    return seq


_PARSERS[T_SNAPSHOT] = _snapshot_chunk
_PARSERS[T_SNAPSHOT_ACK] = _snapshot_ack
