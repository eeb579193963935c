"""The session's side of the encrypted link (protocol version 3): its ephemeral key, the
:class:`~crdt_sync.protocol.link.Link` once the peer's HELLO came, which frames go sealed,
and what a frame must be before authentication (its size, how many may come early). No
I/O; the crypto is in ``link``."""

from __future__ import annotations

import contextlib

from .link import SEALED_HEAD, Link, ephemeral_key, parse_sealed, public_of
from .messages import (
    E_TOO_LARGE,
    E_UNEXPECTED,
    MAX_FRAME,
    MAX_FRAME_BEFORE_AUTH,
    MessageType,
    ProtocolViolation,
    decode,
    peek_type,
)

_HELLO = b"\x00"  # a frame's second byte: its type (every frame is a short array)


class Channel:
    """Seals what a session sends and opens what it receives.

    Frames go out SEALED once the link is up, but HELLO (and an ERROR made before any HELLO
    came) in the clear. With ``deferred`` the session returns frames in the clear and its
    driver seals each as it sends it (:meth:`seal`).
    """

    __slots__ = ("_early", "_max_early", "_secret", "deferred", "link", "public")

    def __init__(self, secret: bytes | None = None, max_early: int = 64) -> None:
        self._secret: bytes | None
        if secret is None:
            self._secret, self.public = ephemeral_key()
        else:
            self._secret, self.public = secret, public_of(secret)
        self.link: Link | None = None
        self.deferred = False
        self._early = 0
        self._max_early = max_early

    def establish(self, peer_public: bytes, transcript: bytes, my_hello: bytes, peer_hello: bytes) -> None:
        """The link's keys, once; the ephemeral secret is let go (a resent HELLO is the same
        bytes, and a later one is refused), so nothing kept can recompute them."""
        assert self._secret is not None, "one handshake per session"
        self.link = Link.establish(self._secret, peer_public, transcript, my_hello, peer_hello)
        self._secret = None

    def outgoing(self, frames: list[bytes]) -> list[bytes]:
        """``frames`` as the session returns them: sealed, unless deferred."""
        link = self.link
        if link is None or self.deferred:
            return frames
        return [f if f[1:2] == _HELLO else link.seal(f) for f in frames]

    def seal(self, frame: bytes) -> bytes:
        link = self.link
        return frame if link is None or frame[1:2] == _HELLO else link.seal(frame)

    def early(self, name: str, stage: str) -> None:
        """A frame came before the handshake allows it. Reordered or resent frames can
        overtake the handshake: they are dropped (their sender resends), but a peer that
        keeps sending them is not doing a handshake at all (ERROR 6)."""
        self._early += 1
        if self._early > self._max_early:
            raise ProtocolViolation(E_UNEXPECTED, f"{name} before {stage}")

    def incoming(self, frame: bytes, authenticated: bool) -> bytes | None:
        """The frame a session handles of one it received (see :meth:`open`), or None."""
        if not authenticated and len(frame) > MAX_FRAME_BEFORE_AUTH:
            self._too_large_before_auth(frame)  # raises unless it is dropped
            return None
        if frame[:2] == SEALED_HEAD and self.link is None:
            parse_sealed(frame)  # a broken one is ERROR 1, as anywhere
            self.early("SEALED", "HELLO")  # before the peer's HELLO: its sender resends it
            return None
        return self.open(frame)

    def _too_large_before_auth(self, frame: bytes) -> None:
        # Nothing of it is decoded. A long SPACES list that overtook AUTH on a reordering
        # link is dropped like any early frame (the duplicate HELLO brings it again, after
        # AUTH); anything else this large before AUTH is not a handshake. (It is SEALED: the
        # link's keys exist once the peer's HELLO came; opening costs no more than reading.)
        if self.link is not None and frame[:2] == SEALED_HEAD:
            inner = self.link.open(frame)
            if inner is None:
                return  # a replay
            if peek_type(inner) is MessageType.SPACES and self._early < self._max_early:
                self._early += 1
                return
        raise ProtocolViolation(E_TOO_LARGE, f"frame of {len(frame)} bytes before authentication exceeds "
                                f"{MAX_FRAME_BEFORE_AUTH} (the limit is {MAX_FRAME} once authenticated)")

    def open(self, frame: bytes) -> bytes | None:
        """The frame to handle: the inner frame of a SEALED one (None: a replay), or a
        plaintext frame where plaintext is allowed (before the peer's HELLO; HELLO itself).
        A plaintext frame after HELLO is ERROR 6: there is no unencrypted mode."""
        link = self.link
        if link is None:
            return frame
        if frame[:2] == SEALED_HEAD:
            inner = link.open(frame)
            if inner is not None and inner[1:2] in (_HELLO, SEALED_HEAD[1:]):
                decode(inner)  # a broken one gets the decoder's code, like any inner frame
                raise ProtocolViolation(E_UNEXPECTED, "HELLO or SEALED inside SEALED")
            return inner
        decode(frame)  # a broken frame gets the decoder's code, as before the link
        if peek_type(frame) is not MessageType.HELLO:
            raise ProtocolViolation(E_UNEXPECTED, _downgrade(frame))
        return frame


def _downgrade(frame: bytes) -> str:
    # A plaintext ERROR is unauthenticated, so it cannot end the session as the peer's word;
    # what it claims is kept for the log.
    kind = peek_type(frame)
    said = ""
    if kind is MessageType.ERROR:
        with contextlib.suppress(ProtocolViolation):
            said = f" (unauthenticated, it says: {decode(frame)})"
    name = kind.name if kind is not None else "frame"
    return f"plaintext {name} after HELLO{said}: version 3 sends every frame after HELLO SEALED"


__all__ = ["Channel"]
