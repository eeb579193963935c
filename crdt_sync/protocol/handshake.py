"""The handshake's pure parts: version negotiation, the transcript both sides sign, blinded
space ids, and the space names a relay is given (docs/PROTOCOL.md, "Handshake"). The keys
the link is encrypted with come from the transcript too (``link``)."""

from __future__ import annotations

from hashlib import blake2b

from ..values import check_name
from .messages import (
    BLIND_BYTES,
    E_MALFORMED,
    E_UNEXPECTED,
    E_UNSUPPORTED_VERSION,
    MAX_SPACE_NAME,
    MAX_VERSION,
    MIN_VERSION,
    Hello,
    ProtocolViolation,
    Spaces,
)

AUTH_CONTEXT = b"crdt-sync/3 auth"
TRANSCRIPT_CONTEXT = b"crdt-sync/1 transcript"


def negotiate(msg: Hello) -> int:
    """The version both sides speak, given the peer's HELLO; refuses one with none in common."""
    version = min(MAX_VERSION, msg.max_version)
    if version < max(MIN_VERSION, msg.min_version):
        older = "the peer" if msg.max_version < MIN_VERSION else "this side"
        raise ProtocolViolation(E_UNSUPPORTED_VERSION, f"peer speaks versions {msg.min_version}.."
                                f"{msg.max_version}; this side {MIN_VERSION}..{MAX_VERSION}: "
                                f"upgrade crdt-sync on {older}")
    return version


def transcript(mine: bytes, theirs: bytes) -> bytes:
    """The hash of both HELLO frames, in byte order, that each side signs with the nonce."""
    first, second = sorted([mine, theirs])
    return blake2b(TRANSCRIPT_CONTEXT + len(first).to_bytes(4, "big") + first + second,
                   digest_size=32).digest()


def blind(space: str, transcript: bytes) -> bytes:
    """A space's id in SPACES between devices: keyed by the session's transcript."""
    return blake2b(space.encode(), key=transcript, digest_size=BLIND_BYTES).digest()


def relay_spaces(msg: Spaces) -> list[str]:
    """The spaces a device gives a relay, each checked: as the envelopes name them, so space
    ids (``s`` + base32, derived from the genesis) since spaces are bound to a key; any other
    text name is taken too (a device of an older release), and is a space nobody can read."""
    names = []
    for entry in msg.blinded:
        if not isinstance(entry, str):
            raise ProtocolViolation(E_UNEXPECTED, "a relay needs space ids in text, not blinded ids")
        try:
            check_name("space id", entry, MAX_SPACE_NAME)
        except ValueError as exc:
            raise ProtocolViolation(E_MALFORMED, str(exc)) from None
        names.append(entry)
    return names
