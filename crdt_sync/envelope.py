"""Signed envelopes: the unit that moves between devices.

Wire form (canonical CBOR, one array)::

    [version, space, author_key(32 B), seq, prev_hash(32 B or empty), hlc, payload, signature]

The signature (Ed25519, the author's key) covers the canonical CBOR of the first seven items.
The envelope's hash is BLAKE2b-256 of its whole wire form; the next envelope of the same
(space, author) names it as ``prev_hash``, so each author's history in a space is a chain.
``payload`` is opaque here: the replica gives it meaning (and end-to-end encryption will
wrap it without touching this layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import blake2b

import cbor2

from .cbor_exact import TrailingBytes, loads_exact
from .errors import Rejected
from .identity import Identity, device_id, verify

FORMAT_VERSION = 1
#: Largest wire size of one envelope; below the sync protocol's largest frame (1 MiB).
MAX_ENVELOPE_BYTES = 512 * 1024
#: Room left for the header and signature when packing a payload.
ENVELOPE_OVERHEAD = 512
MAX_SPACE_NAME = 128
#: The CBOR head of the signed part (an array of 7), and the wire size of a signature item.
_SIGNED_HEAD = b"\x87"
_SIGNATURE_BYTES = 66


def envelope_hash(wire: bytes) -> bytes:
    return blake2b(wire, digest_size=32).digest()


@dataclass(frozen=True, slots=True)
class Envelope:
    version: int
    space: str
    author_key: bytes
    seq: int
    prev_hash: bytes
    hlc: int
    payload: bytes
    signature: bytes
    wire: bytes
    hash: bytes

    @property
    def author(self) -> str:
        return device_id(self.author_key)


def _signed_part(space: str, author_key: bytes, seq: int, prev_hash: bytes, hlc: int,
                 payload: bytes) -> list[object]:
    return [FORMAT_VERSION, space, author_key, seq, prev_hash, hlc, payload]


def seal(identity: Identity, space: str, seq: int, prev_hash: bytes, hlc: int,
         payload: bytes) -> Envelope:
    """Sign a payload as envelope ``seq`` of ``identity``'s chain in ``space``."""
    part = _signed_part(space, identity.public_key, seq, prev_hash, hlc, payload)
    signature = identity.sign(cbor2.dumps(part, canonical=True))
    wire = cbor2.dumps([*part, signature], canonical=True)
    if len(wire) > MAX_ENVELOPE_BYTES:
        raise ValueError(f"envelope of {len(wire)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    return Envelope(FORMAT_VERSION, space, identity.public_key, seq, prev_hash, hlc, payload,
                    signature, wire, envelope_hash(wire))


def open_envelope(wire: bytes) -> Envelope:
    """Decode and check one envelope on its own (signature, shape, limits).

    Chain checks need the store: see :meth:`crdt_sync.store.Store.check_chain`.

    Raises:
        Rejected: with reason ``too-large``, ``malformed``, ``unknown-version``,
            ``non-canonical`` or ``bad-signature``.
    """
    if len(wire) > MAX_ENVELOPE_BYTES:
        raise Rejected("too-large", f"envelope of {len(wire)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    try:
        items = loads_exact(wire)
    except TrailingBytes as exc:  # one envelope is one CBOR item, nothing after it
        raise Rejected("malformed", f"envelope has {exc}") from None
    except Exception as exc:  # trust boundary: cbor2 raises several types on garbage
        raise Rejected("malformed", f"envelope is not CBOR: {exc}") from None
    if not isinstance(items, list) or len(items) != 8:
        raise Rejected("malformed", "envelope is not an array of 8 items")
    version, space, author, seq, prev, hlc, payload, signature = items
    if version != FORMAT_VERSION:
        raise Rejected("unknown-version", f"envelope format {version!r}; this build reads {FORMAT_VERSION}")
    ok = (isinstance(space, str) and 0 < len(space) <= MAX_SPACE_NAME
          and isinstance(author, bytes) and len(author) == 32
          and isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq < 2**63
          and isinstance(prev, bytes) and len(prev) == (0 if seq == 1 else 32)
          and isinstance(hlc, int) and not isinstance(hlc, bool) and 0 <= hlc < 2**64
          and isinstance(payload, bytes) and isinstance(signature, bytes) and len(signature) == 64)
    if not ok:
        raise Rejected("malformed", "envelope fields have the wrong types or sizes")
    if cbor2.dumps([FORMAT_VERSION, space, author, seq, prev, hlc, payload, signature],
                   canonical=True) != wire:
        raise Rejected("non-canonical", "envelope is not in canonical CBOR")
    # The signed part is the canonical CBOR of the first seven items: the wire (canonical,
    # just checked) with a 7-item array head instead of its 8-item one, and without the
    # signature's 66 bytes (a 64-byte string's head is 0x58 0x40) at its end.
    if not verify(author, _SIGNED_HEAD + wire[1:-_SIGNATURE_BYTES], signature):
        raise Rejected("bad-signature", f"signature of {device_id(author)} seq {seq} does not verify")
    return Envelope(version, space, author, seq, prev, hlc, payload, signature, wire,
                    envelope_hash(wire))


def assemble(space: str, author_key: bytes, seq: int, prev_hash: bytes, hlc: int, payload: bytes,
             signature: bytes) -> bytes:
    """The wire form of an envelope from its parts (as the sync protocol rebuilds it)."""
    return cbor2.dumps([*_signed_part(space, author_key, seq, prev_hash, hlc, payload), signature],
                       canonical=True)


def decode_trusted(wire: bytes) -> Envelope:
    """Decode an envelope from our own store, which verified it on the way in."""
    version, space, author, seq, prev, hlc, payload, signature = cbor2.loads(wire)
    return Envelope(version, space, author, seq, prev, hlc, payload, signature, wire,
                    envelope_hash(wire))
