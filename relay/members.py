"""Membership at the relay: who may write a space, and who may read it, judged without
reading a payload (docs/RELAY.md, "Membership").

The relay keeps one :class:`~crdt_sync.membership.MembershipLog` per space
(:class:`SpaceMembers`, held with the space's heads in
:class:`~crdt_sync.relay.space_state.RelaySpace`), built from the stored membership
envelopes (the backend's ``membership`` index, schema 4) when the space is loaded and
updated with every membership envelope the relay stores. :func:`judge` is the rule every
new envelope passes before it is stored, in the same core code devices run:

- kind 4 (membership): the records decode and verify, then ``log.check`` with the envelope
  as their carrier. ``unknown-proof`` (and ``reused-invite``, ``forked``: the fork rules
  deal with those) is *skipped* like a gap: not stored, the sender told (QUARANTINED), no
  quarantine row, judged again when sent again; ``revoked`` is stored but set aside past
  the cut; every other reason quarantines the author.
- kind 3 (encrypted data): ``log.authorize(author, seq, hlc, None)`` (the relay cannot see
  collections). ``revoked``: stored, set aside past the cut; any other refusal
  (``not-a-member``, ``read-only``, ``expired``) is skipped like a gap (a grant on its way
  may make it valid).
- anything else (kind 2, plaintext, above all) quarantines the author: ``plaintext``.

What is set aside past a cut is stored but served to no one while the cut stands
(:meth:`SpaceMembers.cuts`); a space is served only to devices that ``can_read`` it.
"""

from __future__ import annotations

from collections.abc import Iterable

from crdt_sync.envelope import Envelope, decode_trusted
from crdt_sync.errors import Rejected
from crdt_sync.identity import device_id
from crdt_sync.members import MEMBERSHIP_SKIPS, Judged, judge_membership
from crdt_sync.membership import MEMBERSHIP_PAYLOAD, Carrier, MembershipLog, Record, decode_membership
from crdt_sync.space_crypto import DATA_PAYLOAD, epoch_of, payload_kind

#: What a refused data envelope is told (all skipped but ``revoked``, which is stored).
DATA_REFUSALS = frozenset({"not-a-member", "read-only", "expired", "out-of-scope", "revoked"})


ACCEPT = Judged(True)


class SpaceMembers:
    """The membership log of one space at the relay, with the views serving needs cached."""

    __slots__ = ("_cuts", "log")

    def __init__(self, space: str) -> None:
        self.log = MembershipLog(space)
        self._cuts: dict[str, int] | None = None

    @classmethod
    def load(cls, space: str, wires: Iterable[bytes], forked: Iterable[bytes]) -> SpaceMembers:
        """The log of stored membership envelopes ``wires`` (verified on the way in) and
        the keys whose chain forked."""
        members = cls(space)
        for wire in wires:
            env = decode_trusted(wire)
            try:
                records = decode_membership(env.payload)
            except Rejected:  # (stored only once judged: cannot happen but for a damaged file)
                continue
            members.add(records, env)
        for key in forked:
            members.fork(key)
        return members

    def add(self, records: list[Record], env: Envelope) -> None:
        self.log.add(records, Carrier(env.author_key, env.seq, env.hlc))
        self._cuts = None

    def fork(self, author_key: bytes) -> None:
        self.log.fork(author_key)
        self._cuts = None

    def cuts(self) -> dict[str, int]:
        """Revoked author (device id) -> the last seq of its chain that counts."""
        if self._cuts is None:
            self._cuts = {device_id(k): seq for k, seq in self.log.cuts().items()}
        return self._cuts

    def can_read(self, device_key: bytes, now_ms: int) -> bool:
        return self.log.can_read(device_key, now_ms)

    def judge(self, env: Envelope) -> Judged:
        """What to do with ``env`` (new, chain-valid, clock in range).

        Raises:
            Rejected: the author is to be quarantined, with the reason.
        """
        payload = env.payload
        kind = payload_kind(payload)
        if kind == DATA_PAYLOAD:
            if epoch_of(payload) is None:
                raise Rejected("bad-payload", "not an encrypted payload [3, epoch_id, nonce, ciphertext]")
            verdict = self.log.authorize(env.author_key, env.seq, env.hlc, None)
            if verdict.ok:
                return ACCEPT
            return Judged(verdict.reason == "revoked", Rejected(verdict.reason, verdict.detail))
        if kind == MEMBERSHIP_PAYLOAD:  # the rule devices apply too (crdt_sync.members)
            return judge_membership(self.log, env)
        what = "a plaintext payload (kind 2)" if kind == 2 else f"a payload of kind {kind}"
        raise Rejected("plaintext", f"{what}: a relay stores only encrypted data (kind 3) and "
                                    f"membership (kind 4) payloads")


def is_membership_wire(wire: bytes) -> bool:
    """Whether a stored envelope carries a membership payload (schema 4's backfill)."""
    return payload_kind(decode_trusted(wire).payload) == MEMBERSHIP_PAYLOAD


__all__ = ["ACCEPT", "DATA_REFUSALS", "MEMBERSHIP_SKIPS", "Judged", "SpaceMembers", "is_membership_wire"]
