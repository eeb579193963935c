"""What a session's SNAPSHOT frames carry, reassembled: one snapshot record and the membership
envelopes that go with it (docs/PROTOCOL.md, "Snapshots in sessions"). Pure: no I/O.

Wire form (canonical CBOR)::

    transfer = [snapshot: bstr, [membership envelope: bstr, ...]]

The snapshot is the record of :mod:`crdt_sync.snapshot` (checked there); the membership
envelopes are whole envelope wire forms (DESIGN.md, "Envelope format"), each judged by the
receiver like any membership envelope. A relay sends every membership envelope of the space
it holds (a device let in after the snapshot finds its keys among them); a device pushing to a
relay sends none (the relay has its own log).
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

from . import cbor_limits
from .envelope import MAX_ENVELOPE_BYTES
from .errors import Rejected
from .snapshot import MAX_SNAPSHOT_BYTES

#: Membership envelopes one transfer carries at most, and their bytes at most.
MAX_MEMBERSHIP_ENVELOPES = 65_536
MAX_MEMBERSHIP_BYTES = 16 << 20
#: The largest transfer: a largest snapshot and the membership bound, with their heads.
MAX_TRANSFER_BYTES = MAX_SNAPSHOT_BYTES + MAX_MEMBERSHIP_BYTES + 5 * MAX_MEMBERSHIP_ENVELOPES + 64


@dataclass(frozen=True, slots=True)
class Transfer:
    """A reassembled transfer: the snapshot's bytes (not yet checked) and the envelopes'."""

    snapshot: bytes
    membership: list[bytes]


def encode_transfer(snapshot: bytes, membership: list[bytes]) -> bytes:
    """The transfer of ``snapshot`` with ``membership``, dropping the envelopes past the
    bounds (the oldest are kept: they come first, in arrival order)."""
    kept: list[bytes] = []
    size = 0
    for wire in membership[:MAX_MEMBERSHIP_ENVELOPES]:
        size += len(wire)
        if size > MAX_MEMBERSHIP_BYTES:
            break
        kept.append(wire)
    return cbor2.dumps([snapshot, kept], canonical=True)


def decode_transfer(data: bytes) -> Transfer:
    """Check a transfer's size and shape on its bytes, before anything is built.

    Raises:
        Rejected: ``snapshot-too-large``, ``snapshot-malformed``.
    """
    if len(data) > MAX_TRANSFER_BYTES:
        raise Rejected("snapshot-too-large", f"a snapshot transfer is at most {MAX_TRANSFER_BYTES} bytes")
    try:
        items = cbor_limits.loads(data, max_depth=2, max_items=4 + MAX_MEMBERSHIP_ENVELOPES)
    except cbor_limits.CborLimitError as exc:
        raise Rejected("snapshot-too-large" if exc.over_limit else "snapshot-malformed",
                       f"snapshot transfer: {exc}") from None
    except ValueError as exc:
        raise Rejected("snapshot-malformed", f"snapshot transfer: {exc}") from None
    if not (isinstance(items, list) and len(items) == 2 and isinstance(items[0], bytes)
            and isinstance(items[1], list)):
        raise Rejected("snapshot-malformed", "a snapshot transfer is [snapshot, [envelope, ...]]")
    snapshot, membership = items
    if len(snapshot) > MAX_SNAPSHOT_BYTES:
        raise Rejected("snapshot-too-large", f"a snapshot is at most {MAX_SNAPSHOT_BYTES} bytes")
    if not all(isinstance(w, bytes) and 0 < len(w) <= MAX_ENVELOPE_BYTES for w in membership):
        raise Rejected("snapshot-malformed", f"a transfer's envelope is bytes of 1..{MAX_ENVELOPE_BYTES}")
    if sum(map(len, membership)) > MAX_MEMBERSHIP_BYTES:
        raise Rejected("snapshot-too-large", f"envelopes of at most {MAX_MEMBERSHIP_BYTES} bytes")
    return Transfer(snapshot, list(membership))


__all__ = ["MAX_MEMBERSHIP_BYTES", "MAX_MEMBERSHIP_ENVELOPES", "MAX_TRANSFER_BYTES", "Transfer",
           "decode_transfer", "encode_transfer"]
