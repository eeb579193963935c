"""Fork proofs: two signed envelopes of one author at one (space, seq) with different hashes.

An author's chain in a space has exactly one envelope per seq. Two different envelopes that
both carry the author's valid signature for the same ``(space, author, seq)`` prove that
the author's key signed both: the author forked its chain. The two envelopes, verbatim, are
the proof. Anyone can check it without trusting whoever sent it, and it stays true for ever.

Wire form (canonical CBOR)::

    [1, envelope_wire_low, envelope_wire_high]

where both items are envelope wire forms (:mod:`crdt_sync.envelope`) and the BLAKE2b-256 hash
of ``envelope_wire_low`` is lexicographically below that of ``envelope_wire_high``, so one fork
has exactly one encoding. :func:`decode` checks the framing with bounds before it decodes;
:func:`verify` checks the rest: both signatures, the same space, author key and seq, different
hashes. The module does no I/O.

The **fork seq** of a proof is its seq. When the two envelopes' ``prev_hash`` differ too, the
chains parted earlier: :attr:`ForkProof.parted_earlier` says so, and whoever holds the
envelopes at ``seq - 1`` can prove the fork there as well (see docs/DESIGN.md, "Forks").
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cbor2

from .envelope import MAX_ENVELOPE_BYTES, Envelope, decode_trusted, open_envelope
from .errors import Rejected

PROOF_VERSION = 1
#: Largest encoded proof: two envelopes of the largest size and the array around them.
MAX_PROOF_BYTES = 2 * MAX_ENVELOPE_BYTES + 32


@dataclass(frozen=True, slots=True)
class ForkProof:
    """A checked fork proof (build one with :func:`prove` or :func:`verify`)."""

    low: Envelope
    high: Envelope

    @property
    def space(self) -> str:
        return self.low.space

    @property
    def author(self) -> str:
        return self.low.author

    @property
    def seq(self) -> int:
        return self.low.seq

    @property
    def hashes(self) -> tuple[bytes, bytes]:
        return self.low.hash, self.high.hash

    @property
    def parted_earlier(self) -> bool:
        """The two envelopes name different predecessors: the fork began below :attr:`seq`."""
        return self.low.prev_hash != self.high.prev_hash

    @property
    def key(self) -> tuple[str, str, int]:
        return self.space, self.author, self.seq

    def encode(self) -> bytes:
        return encode(self)

    def describe(self) -> str:
        return (f"{self.author} signed two different envelopes as seq {self.seq} in "
                f"{self.space!r} ({self.low.hash.hex()[:16]}, {self.high.hash.hex()[:16]})")


def encode(proof: ForkProof) -> bytes:
    """The canonical wire form of ``proof``."""
    return cbor2.dumps([PROOF_VERSION, proof.low.wire, proof.high.wire], canonical=True)


def _same_slot(a: Envelope, b: Envelope) -> None:
    if a.space != b.space:
        raise Rejected("bad-fork-proof", f"the two envelopes are of spaces {a.space!r} and {b.space!r}")
    if a.author_key != b.author_key:
        raise Rejected("bad-fork-proof", f"the two envelopes are of authors {a.author} and {b.author}")
    if a.seq != b.seq:
        raise Rejected("bad-fork-proof", f"the two envelopes are seq {a.seq} and seq {b.seq}")
    if a.hash == b.hash:
        raise Rejected("bad-fork-proof", "the two envelopes are the same envelope")


def prove(a: Envelope, b: Envelope) -> ForkProof:
    """The proof made of two verified envelopes (in either order).

    Raises:
        Rejected: ``bad-fork-proof`` when they are not of one (space, author, seq) or are
            the same envelope.
    """
    _same_slot(a, b)
    low, high = (a, b) if a.hash < b.hash else (b, a)
    return ForkProof(low, high)


def decode(data: bytes) -> tuple[bytes, bytes]:
    """The two envelope wires of an encoded proof, framing checked (not the envelopes).

    Raises:
        Rejected: ``too-large``, ``malformed``, ``unknown-version``, ``non-canonical``.
    """
    if len(data) > MAX_PROOF_BYTES:
        raise Rejected("too-large", f"fork proof of {len(data)} bytes exceeds {MAX_PROOF_BYTES}")
    fp = io.BytesIO(data)
    try:
        items = cbor2.CBORDecoder(fp).decode()
    except Exception as exc:  # trust boundary: cbor2 raises several types on garbage
        raise Rejected("malformed", f"fork proof is not CBOR: {exc}") from None
    if fp.tell() != len(data):
        raise Rejected("malformed", f"{len(data) - fp.tell()} bytes after the fork proof")
    if not isinstance(items, list) or len(items) != 3:
        raise Rejected("malformed", "fork proof is not an array of 3 items")
    version, low, high = items
    if version != PROOF_VERSION:
        raise Rejected("unknown-version", f"fork proof format {version!r}; this build reads {PROOF_VERSION}")
    if not (isinstance(low, bytes) and isinstance(high, bytes)
            and len(low) <= MAX_ENVELOPE_BYTES and len(high) <= MAX_ENVELOPE_BYTES):
        raise Rejected("malformed", "fork proof items are not two envelopes of bounded size")
    if cbor2.dumps([version, low, high], canonical=True) != data:
        raise Rejected("non-canonical", "fork proof is not in canonical CBOR")
    return low, high


def proof_author(data: bytes) -> str:
    """The author of a proof this side stored (so already verified): which chain it forks."""
    return decode_trusted(decode(data)[0]).author


def verify(data: bytes) -> ForkProof:
    """Check an encoded proof completely: framing, both envelopes (signatures, shape), one
    (space, author, seq), different hashes in canonical order.

    Raises:
        Rejected: as :func:`decode`; as :func:`crdt_sync.envelope.open_envelope` for either
            envelope; ``bad-fork-proof`` when the envelopes do not prove a fork.
    """
    low_wire, high_wire = decode(data)
    low, high = open_envelope(low_wire), open_envelope(high_wire)
    _same_slot(low, high)
    if not low.hash < high.hash:
        raise Rejected("non-canonical", "fork proof envelopes are not in hash order")
    return ForkProof(low, high)


__all__ = ["MAX_PROOF_BYTES", "PROOF_VERSION", "ForkProof", "decode", "encode", "prove", "verify"]
