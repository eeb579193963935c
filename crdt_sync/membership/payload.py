"""The membership payload (kind 4): ``cbor([4, [record_wire, ...]])``, 1 to 64 records.

A membership envelope is an ordinary envelope whose payload is this; the relay reads it
(records hold keys and rights, no content). Data payloads are kind 3 (encrypted, see
:mod:`crdt_sync.space_crypto`); the plaintext format 2 of :mod:`crdt_sync.payload` is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import cbor2

from .. import cbor_limits
from ..errors import Rejected
from .records import MAX_RECORD_BYTES, Record, decode_record

MEMBERSHIP_PAYLOAD = 4
#: Most records in one membership payload.
MAX_RECORDS = 64
#: The first two bytes of every membership payload: a CBOR array of 2, then the integer 4.
_HEAD = bytes([0x82, MEMBERSHIP_PAYLOAD])


def encode_membership(records: Sequence[Record]) -> bytes:
    """Raises ValueError on an empty list or more than :data:`MAX_RECORDS`."""
    if not 1 <= len(records) <= MAX_RECORDS:
        raise ValueError(f"a membership payload holds 1 to {MAX_RECORDS} records, not {len(records)}")
    return cbor2.dumps([MEMBERSHIP_PAYLOAD, [r.wire for r in records]], canonical=True)


def is_membership(payload: bytes) -> bool:
    """Whether ``payload`` claims to be a membership payload (its first two bytes; no decode)."""
    return payload[:2] == _HEAD


def decode_membership(payload: bytes) -> list[Record]:
    """Decode and verify every record of a membership payload (each on its own; whether they
    count is :class:`crdt_sync.membership.MembershipLog`'s question).

    Raises:
        Rejected: reason ``bad-record``.
    """
    if not is_membership(payload):
        raise Rejected("bad-record", "not a membership payload (kind 4)")
    if len(payload) > MAX_RECORDS * (MAX_RECORD_BYTES + 8) + 16:
        raise Rejected("bad-record", f"membership payload of {len(payload)} bytes is too large")
    try:
        top = cbor_limits.loads(payload, max_depth=2, max_items=MAX_RECORDS + 3)
    except cbor_limits.CborLimitError as exc:
        if exc.over_limit:
            raise Rejected("bad-record", f"a membership payload holds at most {MAX_RECORDS} records, "
                                         f"nested 2 deep ({exc})") from None
        raise Rejected("bad-record", f"membership payload is not canonical CBOR: {exc}") from None
    except ValueError as exc:
        raise Rejected("bad-record", f"membership payload is not CBOR: {exc}") from None
    if not (type(top) is list and len(top) == 2 and type(top[1]) is list):
        raise Rejected("bad-record", "a membership payload is [4, [record, ...]]")
    wires = top[1]
    if not 1 <= len(wires) <= MAX_RECORDS:
        raise Rejected("bad-record",
                       f"a membership payload holds 1 to {MAX_RECORDS} records, not {len(wires)}")
    out = []
    for i, wire in enumerate(wires):
        try:
            out.append(decode_record(wire))
        except Rejected as exc:
            raise Rejected("bad-record", f"record {i}: {exc.detail}") from None
    return out


__all__ = ["MAX_RECORDS", "MEMBERSHIP_PAYLOAD", "decode_membership", "encode_membership", "is_membership"]
