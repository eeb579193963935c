"""Membership of a space: signed records, the log that judges them, invite tokens.

Pure (no I/O): bytes and values in, verdicts out. docs/DESIGN.md, "Membership", is the
specification; the public names are re-exported here.
"""

from __future__ import annotations

from .log import MembershipLog
from .payload import MAX_RECORDS, MEMBERSHIP_PAYLOAD, decode_membership, encode_membership, is_membership
from .records import (
    MAX_INVITE_MS,
    MAX_RECORD_BYTES,
    Genesis,
    Grant,
    Invite,
    Keys,
    Kind,
    Record,
    Redeem,
    Revoke,
    Rights,
    decode_record,
    is_space_id,
    make_genesis,
    make_grant,
    make_invite,
    make_keys,
    make_redeem,
    make_revoke,
    record_hash,
    scope_digest,
    space_id_of,
    wall_of,
)
from .token import TOKEN_PREFIX, InviteToken, decode_token, encode_token
from .verdicts import Carrier, EpochInfo, Member, Verdict

__all__ = [
    "MAX_INVITE_MS", "MAX_RECORDS", "MAX_RECORD_BYTES", "MEMBERSHIP_PAYLOAD", "TOKEN_PREFIX",
    "Carrier", "EpochInfo", "Genesis", "Grant", "Invite", "InviteToken", "Keys", "Kind", "Member",
    "MembershipLog", "Record", "Redeem", "Revoke", "Rights", "Verdict",
    "decode_membership", "decode_record", "decode_token", "encode_membership", "encode_token",
    "is_membership", "is_space_id",
    "make_genesis", "make_grant", "make_invite", "make_keys", "make_redeem", "make_revoke",
    "record_hash", "scope_digest", "space_id_of", "wall_of",
]
