"""A protocol-3 peer by hand, without a Session: its HELLO, the link's keys from the other
side's HELLO, AUTH frames, sealing and opening. Tests use it to speak (and misspeak) the
handshake of docs/PROTOCOL.md ("Handshake", "Link encryption") frame by frame, the way a
second implementation would.
"""

from __future__ import annotations

import os

from crdt_sync.identity import Identity
from crdt_sync.protocol.handshake import AUTH_CONTEXT, transcript
from crdt_sync.protocol.link import SEALED_HEAD, Link, public_of
from crdt_sync.protocol.messages import PROTOCOL_VERSION as V
from crdt_sync.protocol.messages import Auth, Hello, Message, decode, encode


class HandPeer:
    """One side of a handshake, by hand. ``hello`` is its HELLO frame; after :meth:`on_hello`
    with the other side's HELLO, :meth:`seal` and :meth:`open` speak the link."""

    def __init__(self, identity: Identity | None = None, *, nonce: bytes | None = None,
                 secret: bytes | None = None, versions: tuple[int, int] = (V, V),
                 capabilities: dict[str, object] | None = None, ephemeral: bytes | None = None) -> None:
        self.identity = identity or Identity.generate()
        self.secret = secret or os.urandom(32)
        self.public = ephemeral if ephemeral is not None else public_of(self.secret)
        self.nonce = nonce or os.urandom(32)
        caps = dict(capabilities or {})
        self.hello = encode(Hello(versions[0], versions[1], self.public, self.nonce, caps))
        self.link: Link | None = None
        self.transcript = b""
        self.peer_nonce = b""

    def on_hello(self, peer_hello: bytes) -> None:
        """The other side's HELLO: the transcript and the link's keys."""
        msg = decode(peer_hello)
        assert isinstance(msg, Hello)
        self.peer_nonce = msg.nonce
        self.transcript = transcript(self.hello, peer_hello)
        self.link = Link.establish(self.secret, msg.ephemeral_key, self.transcript, self.hello, peer_hello)

    def auth(self, identity: Identity | None = None, signature: bytes | None = None) -> bytes:
        """An AUTH frame (in the clear: :meth:`seal` it): ``identity``'s key, signed by this
        peer's identity unless ``signature`` is given."""
        key = (identity or self.identity).public_key
        if signature is None:
            signature = self.identity.sign(AUTH_CONTEXT + self.transcript + self.peer_nonce)
        return encode(Auth(key, signature))

    def seal(self, frame: bytes) -> bytes:
        assert self.link is not None, "on_hello first"
        return self.link.seal(frame)

    def open(self, frame: bytes) -> Message:
        """A frame from the other side, decoded (SEALED ones opened, no replay window)."""
        if frame[:2] == SEALED_HEAD:
            assert self.link is not None, "a SEALED frame before the other side's HELLO"
            return decode(self.link.inspect(frame))
        return decode(frame)

    def inner(self, frame: bytes) -> bytes:
        """The inner frame of a SEALED frame from the other side (a plaintext one as is)."""
        if frame[:2] == SEALED_HEAD:
            assert self.link is not None
            return self.link.inspect(frame)
        return frame
