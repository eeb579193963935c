"""Link encryption (protocol version 3): the key schedule, SEALED frames and the replay window.

Pure: no I/O, no clock. The session (``session.py``) calls it; docs/PROTOCOL.md, "Link
encryption", is the specification and holds test vectors for every step.

- Each side's HELLO carries an ephemeral X25519 key. ``dh = X25519(mine, theirs)``;
  ``k = BLAKE2b-512(key=dh, "crdt-sync/3 link" || T)`` with ``T`` the handshake transcript;
  the side whose HELLO sorts first (bytewise) sends with ``k[:32]`` and receives with
  ``k[32:]``, the other the reverse.
- Every frame after HELLO is ``[13, counter, ciphertext]`` (canonical CBOR): ChaCha20-Poly1305
  (IETF), nonce ``be32(0) || be64(counter)``, no associated data; the plaintext is one
  ordinary frame. Each side counts its frames from 0.
- A receiver keeps a sliding window of 1024 counters (RFC 6479): a counter already seen, or
  older than the window, is a replay (dropped and counted, never an error: links duplicate).
  The window moves only for frames that authenticate.
"""

from __future__ import annotations

from hashlib import blake2b

from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
)
from nacl.exceptions import CryptoError
from nacl.utils import random as random_bytes

from .messages import (
    E_AUTH_FAILED,
    E_MALFORMED,
    E_TOO_LARGE,
    MAX_FRAME,
    MAX_INNER_FRAME,
    SEALED_TAG_BYTES,
    ProtocolViolation,
)

LINK_CONTEXT = b"crdt-sync/3 link"
KEY_BYTES = 32
TAG_BYTES = SEALED_TAG_BYTES
#: Counters a receiver remembers behind the highest one it accepted.
REPLAY_WINDOW = 1024
#: The first bytes of every SEALED frame: a 3-item array, then the type (13).
SEALED_HEAD = b"\x83\x0d"
_MAX_COUNTER = 2**64 - 1
_MASK = (1 << REPLAY_WINDOW) - 1


def ephemeral_key() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair ``(secret, public)`` for one session's HELLO."""
    secret = random_bytes(KEY_BYTES)
    return secret, crypto_scalarmult_base(secret)


def public_of(secret: bytes) -> bytes:
    """The X25519 public key of ``secret`` (tests pin the secret)."""
    return crypto_scalarmult_base(secret)


def shared_secret(secret: bytes, peer_public: bytes) -> bytes:
    """X25519 of this side's ephemeral secret and the peer's public key. A key of low order
    (whose result is all zeros, so known to anyone) is refused (ERROR 3)."""
    try:
        dh = crypto_scalarmult(secret, peer_public)
    except Exception:  # libsodium refuses an all-zero result; pynacl raises its RuntimeError
        dh = bytes(KEY_BYTES)
    if dh == bytes(KEY_BYTES):
        raise ProtocolViolation(E_AUTH_FAILED, "the peer's ephemeral key is of low order")
    return dh


def session_keys(dh: bytes, transcript: bytes, my_hello: bytes, peer_hello: bytes) -> tuple[bytes, bytes]:
    """``(send_key, receive_key)`` from the shared secret and the transcript."""
    k = blake2b(LINK_CONTEXT + transcript, key=dh, digest_size=64).digest()
    first, second = k[:KEY_BYTES], k[KEY_BYTES:]
    return (first, second) if my_hello < peer_hello else (second, first)


def nonce_of(counter: int) -> bytes:
    """The AEAD nonce of a frame counter: four zero bytes, then the counter big-endian."""
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "big")


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major | n])
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([major | info]) + n.to_bytes(width, "big")
    raise ValueError(n)


def seal_frame(key: bytes, counter: int, frame: bytes) -> bytes:
    """The SEALED frame of ``frame`` under ``key`` with ``counter``."""
    ciphertext = crypto_aead_chacha20poly1305_ietf_encrypt(frame, None, nonce_of(counter), key)
    return b"".join([SEALED_HEAD, _head(0x00, counter), _head(0x40, len(ciphertext)), ciphertext])


def _uint_at(frame: bytes, pos: int, major: int) -> tuple[int, int]:
    """A canonical CBOR head of ``major`` type at ``pos``: ``(value, next position)``."""
    if pos >= len(frame) or frame[pos] >> 5 != major >> 5:
        raise ProtocolViolation(E_MALFORMED, "SEALED is not [13, counter, ciphertext]")
    info = frame[pos] & 0x1F
    if info < 24:
        return info, pos + 1
    if info > 27:
        raise ProtocolViolation(E_MALFORMED, "SEALED is not [13, counter, ciphertext]")
    width = 1 << (info - 24)
    if pos + 1 + width > len(frame):
        raise ProtocolViolation(E_MALFORMED, "SEALED is cut short")
    value = int.from_bytes(frame[pos + 1:pos + 1 + width], "big")
    if value < (24 if width == 1 else 1 << (4 * width)):
        raise ProtocolViolation(E_MALFORMED, "SEALED is not canonical CBOR")
    return value, pos + 1 + width


def parse_sealed(frame: bytes) -> tuple[int, bytes]:
    """``(counter, ciphertext)`` of a SEALED frame, checked like any frame: canonical heads,
    no trailing bytes, at most :data:`MAX_FRAME`, a ciphertext at least a tag long."""
    if len(frame) > MAX_FRAME:
        raise ProtocolViolation(E_TOO_LARGE, f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
    if frame[:2] != SEALED_HEAD:
        raise ProtocolViolation(E_MALFORMED, "SEALED is not [13, counter, ciphertext]")
    counter, pos = _uint_at(frame, 2, 0x00)
    size, pos = _uint_at(frame, pos, 0x40)
    if pos + size != len(frame):
        raise ProtocolViolation(E_MALFORMED, "SEALED ciphertext length does not match the frame")
    if size < TAG_BYTES:
        raise ProtocolViolation(E_MALFORMED, "SEALED ciphertext is shorter than its tag")
    return counter, frame[pos:]


def open_frame(key: bytes, frame: bytes) -> tuple[int, bytes]:
    """``(counter, inner frame)`` of a SEALED frame; ERROR 1 when it does not authenticate."""
    counter, ciphertext = parse_sealed(frame)
    try:
        inner = crypto_aead_chacha20poly1305_ietf_decrypt(ciphertext, None, nonce_of(counter), key)
    except CryptoError:
        raise ProtocolViolation(E_MALFORMED, "a SEALED frame did not authenticate: it was altered on "
                                "the way or is not from this session's peer (a broken link or a man "
                                "in the middle); the session ends, sync again") from None
    if len(inner) > MAX_INNER_FRAME:
        raise ProtocolViolation(E_TOO_LARGE, f"inner frame of {len(inner)} bytes exceeds {MAX_INNER_FRAME}")
    return counter, inner


class ReplayWindow:
    """Which of the last :data:`REPLAY_WINDOW` counters were accepted (RFC 6479's sliding
    window, as a bitmap: bit ``i`` is counter ``top - i``)."""

    __slots__ = ("_bits", "top")

    def __init__(self) -> None:
        self.top = -1
        self._bits = 0

    def fresh(self, counter: int) -> bool:
        """True if ``counter`` was not accepted yet and is within the window."""
        if counter > self.top:
            return True
        behind = self.top - counter
        return behind < REPLAY_WINDOW and not (self._bits >> behind) & 1

    def accept(self, counter: int) -> None:
        """Record ``counter`` (one :meth:`fresh` allowed, whose frame authenticated)."""
        if counter > self.top:
            shift = counter - self.top
            self._bits = ((self._bits << shift) | 1) & _MASK if shift < REPLAY_WINDOW else 1
            self.top = counter
        else:
            self._bits |= 1 << (self.top - counter)


class Link:
    """One session's encrypted link: counters out, the replay window in.

    ``replays`` counts the frames dropped as replays (already seen, or older than the window).
    """

    __slots__ = ("_recv_key", "_send_key", "_window", "replays", "sent")

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        self._send_key, self._recv_key = send_key, recv_key
        self._window = ReplayWindow()
        self.sent = 0  # the next counter to send
        self.replays = 0

    @classmethod
    def establish(cls, secret: bytes, peer_public: bytes, transcript: bytes, my_hello: bytes,
                  peer_hello: bytes) -> Link:
        """The link of a handshake, from this side's ephemeral secret and both HELLOs."""
        dh = shared_secret(secret, peer_public)
        return cls(*session_keys(dh, transcript, my_hello, peer_hello))

    def seal(self, frame: bytes) -> bytes:
        """``frame`` as the next SEALED frame."""
        if len(frame) > MAX_INNER_FRAME:
            raise ProtocolViolation(E_TOO_LARGE, f"frame of {len(frame)} bytes exceeds {MAX_INNER_FRAME} "
                                    "(the largest frame that fits in SEALED)")
        counter = self.sent
        if counter > _MAX_COUNTER:
            raise ProtocolViolation(E_TOO_LARGE, "the link's frame counter is exhausted")
        self.sent = counter + 1
        return seal_frame(self._send_key, counter, frame)

    def open(self, frame: bytes) -> bytes | None:
        """The inner frame of a SEALED frame from the peer; None for a replay (counted).
        Raises :class:`ProtocolViolation` (ERROR 1) for a frame that does not authenticate."""
        counter, _ = parse_sealed(frame)
        if not self._window.fresh(counter):
            self.replays += 1
            return None
        _, inner = open_frame(self._recv_key, frame)
        self._window.accept(counter)
        return inner

    def inspect(self, frame: bytes) -> bytes:
        """The inner frame of a SEALED frame from the peer, without the replay window (for
        taps in tests and debugging: nothing is recorded)."""
        return open_frame(self._recv_key, frame)[1]

    def inspect_own(self, frame: bytes) -> bytes:
        """The inner frame of a SEALED frame this side sent (tests and debugging)."""
        return open_frame(self._send_key, frame)[1]


__all__ = ["KEY_BYTES", "LINK_CONTEXT", "REPLAY_WINDOW", "SEALED_HEAD", "TAG_BYTES", "Link", "ReplayWindow",
           "ephemeral_key", "nonce_of", "open_frame", "parse_sealed", "public_of", "seal_frame",
           "session_keys", "shared_secret"]
