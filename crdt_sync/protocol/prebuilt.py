"""ENVELOPES frames from envelopes already encoded (how a relay keeps them ready to send):
the same bytes :func:`crdt_sync.protocol.messages.encode` makes, without building the
message. Imports nothing of the package (``messages`` re-exports these)."""

from __future__ import annotations

#: An author as sent: an index into the frame sender's author table, or a 32-byte key.
AuthorRef = int | bytes
_ENVELOPES = 4  # MessageType.ENVELOPES


def cbor_head(major: int, n: int) -> bytes:
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
    return cbor_head(0x40, len(ref)) + ref if isinstance(ref, bytes) else cbor_head(0x00, ref)


_ENVELOPES_HEAD = bytes([0x84, _ENVELOPES])
_SMALL_REFS = [cbor_head(0x00, i) for i in range(256)]


def envelope_item(ref: AuthorRef, tail: bytes) -> bytes:
    """One item of an ENVELOPES frame, from ``tail``: the canonical CBOR of ``seq, hlc,
    payload, signature`` one after the other (how a relay keeps envelopes ready to send).
    The same bytes :func:`encode` makes of the :class:`WireEnvelope`."""
    head = _SMALL_REFS[ref] if type(ref) is int and ref < 256 else cbor_ref(ref)
    return b"\x85" + head + tail


def encode_envelopes(space: int, batch: int, items: list[bytes]) -> bytes:
    """The ENVELOPES frame of already encoded envelope items (each the canonical CBOR of
    ``[author, seq, hlc, payload, signature]``): the same bytes as :func:`encode` makes."""
    return b"".join([_ENVELOPES_HEAD, cbor_head(0x00, space), cbor_head(0x00, batch),
                     cbor_head(0x80, len(items)), *items])


__all__ = ["AuthorRef", "cbor_head", "cbor_ref", "encode_envelopes", "envelope_item"]
