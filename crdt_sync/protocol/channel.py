"""The session's side of the encrypted link (protocol version 3): its ephemeral key, the
:class:`~crdt_sync.protocol.link.Link` once the peer's HELLO came, and which frames go
sealed. No I/O; the crypto is in ``link``."""

from __future__ import annotations

import contextlib

from .link import SEALED_HEAD, Link, ephemeral_key, public_of
from .messages import E_UNEXPECTED, MessageType, ProtocolViolation, decode, peek_type

_HELLO = b"\x00"  # a frame's second byte: its type (every frame is a short array)


class Channel:
    """Seals what a session sends and opens what it receives.

    Frames go out SEALED once the link is up, but HELLO (and an ERROR made before any HELLO
    came) in the clear. With ``deferred`` the session returns frames in the clear and its
    driver seals each as it sends it (:meth:`seal`).
    """

    __slots__ = ("_secret", "deferred", "link", "public")

    def __init__(self, secret: bytes | None = None) -> None:
        if secret is None:
            self._secret, self.public = ephemeral_key()
        else:
            self._secret, self.public = secret, public_of(secret)
        self.link: Link | None = None
        self.deferred = False

    def establish(self, peer_public: bytes, transcript: bytes, my_hello: bytes, peer_hello: bytes) -> None:
        self.link = Link.establish(self._secret, peer_public, transcript, my_hello, peer_hello)

    def outgoing(self, frames: list[bytes]) -> list[bytes]:
        """``frames`` as the session returns them: sealed, unless deferred."""
        link = self.link
        if link is None or self.deferred:
            return frames
        return [f if f[1:2] == _HELLO else link.seal(f) for f in frames]

    def seal(self, frame: bytes) -> bytes:
        link = self.link
        return frame if link is None or frame[1:2] == _HELLO else link.seal(frame)

    def sealed(self, frame: bytes) -> bool:
        """True if ``frame`` is SEALED and the keys to open it exist."""
        return self.link is not None and frame[:2] == SEALED_HEAD

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
