"""Invite tokens: what a joiner needs to enroll with no admin online.

``token = "cs1" + base64url_nopad(cbor([1, genesis_wire, invite_wire, invite_seed(32),
[[epoch_n, epoch_id(16), epoch_key(32)], ...], secret(32), label_blob]))``

The token is a secret: whoever holds it can join (once: a second redemption forks the invite
key's chain and voids both). It carries the genesis (so the joiner knows the space id and
checks it), the invite record, the one-time invite key's seed (the joiner signs the
redemption with it), the epoch keys it may read (only the current one when the invite's
``history`` is false), the space secret and the sealed human name of the space.
:func:`decode_token` checks all of it with bounds and says what is wrong in words a user
can act on.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

import cbor2

from .. import cbor_limits
from ..errors import Rejected
from ..hlc import hlc_to_iso
from ..identity import Identity
from .records import MAX_RECORD_BYTES, Genesis, Invite, Record, decode_record, make_redeem, space_id_of

TOKEN_PREFIX = "cs1"
TOKEN_VERSION = 1
#: Most epoch keys in one token.
MAX_TOKEN_KEYS = 1024
#: Largest sealed label.
MAX_LABEL_BYTES = 1024
#: Largest token text (the genesis, an invite, 1024 keys and a label fit well below it).
MAX_TOKEN_CHARS = 160 * 1024


@dataclass(frozen=True, slots=True)
class InviteToken:
    genesis: Genesis
    invite: Invite
    invite_seed: bytes
    keys: tuple[tuple[int, bytes, bytes], ...]  # (epoch_n, epoch_id, epoch_key)
    secret: bytes
    label: bytes

    @property
    def space(self) -> str:
        return self.invite.space

    def invite_identity(self) -> Identity:
        return Identity(self.invite_seed)

    def redemption(self, subject: bytes, hlc: int) -> list[Record]:
        """The records of the invite key's seq-1 envelope: the invite, and a redeem naming
        ``subject`` (the joiner's device key) at ``hlc`` (the envelope's hlc or earlier)."""
        redeem = make_redeem(self.invite_identity(), self.invite.space, subject, hlc, self.invite.hash)
        return [self.invite, redeem]


def encode_token(genesis: Genesis, invite: Invite, invite_seed: bytes,
                 keys: Sequence[tuple[int, bytes, bytes]], secret: bytes, label: bytes) -> str:
    """The token text; checked by decoding it (raises ValueError on a bad part, or on more
    than one epoch key for an invite without ``history``)."""
    if not invite.history and len(keys) > 1:
        raise ValueError("an invite without history carries only the current epoch's key")
    body = cbor2.dumps([TOKEN_VERSION, genesis.wire, invite.wire, invite_seed,
                        [[n, eid, k] for n, eid, k in sorted(keys)], secret, label], canonical=True)
    text = TOKEN_PREFIX + base64.urlsafe_b64encode(body).decode("ascii").rstrip("=")
    try:
        decode_token(text)
    except Rejected as exc:
        raise ValueError(exc.detail) from None
    return text


def _bad(detail: str) -> Rejected:
    return Rejected("bad-token", f"{detail}: check that the whole token was copied, or ask for a new one")


def decode_token(text: str, now_ms: int | None = None) -> InviteToken:
    """Read a token (whitespace inside it is ignored: it may come wrapped from a terminal).

    Args:
        now_ms: when given, a token whose invite expired at or before it is refused.

    Raises:
        Rejected: ``bad-token`` (malformed, with what is wrong) or ``expired-token``.
    """
    if not isinstance(text, str):
        raise _bad("a token is text")
    text = "".join(text.split())
    if len(text) > MAX_TOKEN_CHARS:
        raise _bad(f"a token is at most {MAX_TOKEN_CHARS} characters, this one has {len(text)}")
    if not text.startswith(TOKEN_PREFIX):
        raise _bad(f"not a crdt-sync invite token (it starts with {TOKEN_PREFIX!r})")
    body = text[len(TOKEN_PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise _bad("the token is not base64url text") from None
    if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != body:
        raise _bad("the token is not base64url text")
    try:
        items = cbor_limits.loads(raw, max_depth=3, max_items=4 * MAX_TOKEN_KEYS + 16)
    except ValueError as exc:
        raise _bad(f"the token's content is damaged ({exc})") from None
    if not (type(items) is list and len(items) == 7 and type(items[0]) is int):
        raise _bad("the token's content is not [version, genesis, invite, seed, keys, secret, label]")
    if items[0] != TOKEN_VERSION:
        raise Rejected("bad-token", f"token format {items[0]}; this build reads format {TOKEN_VERSION}: "
                                    "upgrade crdt-sync to use it")
    _version, genesis_wire, invite_wire, seed, keys, secret, label = items
    genesis, invite = _records(genesis_wire, invite_wire)
    if type(seed) is not bytes or len(seed) != 32 or Identity(seed).public_key != invite.invite_key:
        raise _bad("the token's invite key does not match its invite")
    if type(secret) is not bytes or len(secret) != 32:
        raise _bad("the token's space secret is not 32 bytes")
    if type(label) is not bytes or len(label) > MAX_LABEL_BYTES:
        raise _bad(f"the token's label is not a byte string of at most {MAX_LABEL_BYTES} bytes")
    token = InviteToken(genesis, invite, seed, _keys(keys), secret, label)
    if now_ms is not None and now_ms >= invite.not_after_ms:
        raise Rejected("expired-token", f"the invite expired at {hlc_to_iso(invite.not_after_ms << 16)}: "
                                        "ask an admin of the space for a new one")
    return token


def _records(genesis_wire: object, invite_wire: object) -> tuple[Genesis, Invite]:
    for wire in (genesis_wire, invite_wire):
        if type(wire) is not bytes or len(wire) > MAX_RECORD_BYTES:
            raise _bad("the token's records are not byte strings")
    assert isinstance(genesis_wire, bytes) and isinstance(invite_wire, bytes)
    try:
        genesis, invite = decode_record(genesis_wire), decode_record(invite_wire)
    except Rejected as exc:
        raise _bad(f"a record in the token does not verify ({exc.detail})") from None
    if not isinstance(genesis, Genesis) or not isinstance(invite, Invite):
        raise _bad("the token does not hold a genesis and an invite")
    if space_id_of(genesis) != invite.space:
        raise _bad("the token's invite is for another space than its genesis")
    return genesis, invite


def _keys(keys: object) -> tuple[tuple[int, bytes, bytes], ...]:
    if type(keys) is not list or len(keys) > MAX_TOKEN_KEYS:
        raise _bad(f"the token's keys are not a list of at most {MAX_TOKEN_KEYS}")
    out = []
    for entry in keys:
        if not (type(entry) is list and len(entry) == 3 and type(entry[0]) is int and 0 <= entry[0] < 1 << 63
                and type(entry[1]) is bytes and len(entry[1]) == 16
                and type(entry[2]) is bytes and len(entry[2]) == 32):
            raise _bad("a key in the token is not [epoch_n, epoch_id (16 bytes), key (32 bytes)]")
        out.append((entry[0], entry[1], entry[2]))
    if out != sorted(set(out)):
        raise _bad("the token's keys are not sorted and unique")
    return tuple(out)


__all__ = ["MAX_TOKEN_CHARS", "TOKEN_PREFIX", "InviteToken", "decode_token", "encode_token"]
