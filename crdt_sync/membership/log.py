"""The membership log of one space: its records, where each was carried, and what they mean.

Pure state (no I/O): the replica and the relay keep one per space, rebuilt from the stored
membership envelopes on open. Adding records only marks the derived state stale; it is
recomputed (:func:`crdt_sync.membership.rules.evaluate`) on the next question, so that
:meth:`MembershipLog.authorize`, asked for every received envelope, is a dict lookup and a
few comparisons.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..identity import device_id
from .records import Genesis, Invite, Record, Redeem, Rights, space_id_of, wall_of
from .rules import Cap, Evaluation, Fail, Inputs, evaluate, judge_new
from .verdicts import OK, Carrier, EpochInfo, Member, Verdict

#: :meth:`MembershipLog.check` judges only the new records when that gives the same answer
#: (:func:`crdt_sync.membership.rules.judge_new`); tests turn it off to compare.
FAST_CHECK = True

_NOT_A_MEMBER = Verdict(False, "not-a-member", "no grant of this author is known")
_READ_ONLY = Verdict(False, "read-only", "the author may read this space, not write to it")
_EXPIRED = Verdict(False, "expired", "the author's write grant had expired at the envelope's hlc")
_OUT_OF_SCOPE = Verdict(False, "out-of-scope", "the author may not write to a collection of this envelope")


def placement(records: Sequence[Record], carrier: Carrier | None, space: str) -> Fail | None:
    """Rule 7's placement: is each record carried by the envelope that may carry it?"""
    if carrier is None:
        if all(isinstance(r, Genesis) for r in records):
            return None
        return ("misplaced-record", "only a genesis is known without a carrier")
    redeems = [r for r in records if isinstance(r, Redeem)]
    if redeems or any(isinstance(r, Invite) and r.invite_key == carrier.author for r in records):
        return _redemption(records, carrier)
    for record in records:
        if record.issuer != carrier.author:
            return ("misplaced-record", f"a {record.KIND.name.lower()} is carried by its issuer's chain")
        if record.hlc > carrier.hlc:
            return ("misplaced-record", "a record's hlc is later than its carrier's")
        if isinstance(record, Genesis):
            if space_id_of(record) != space:
                return ("wrong-space", "the genesis of another space")
            if carrier.seq != 1:
                return ("misplaced-record", "the genesis is carried by its creator's first envelope (seq 1)")
    return None


def _redemption(records: Sequence[Record], carrier: Carrier) -> Fail | None:
    """An invite key's chain is one envelope at seq 1: the invite and its redeem."""
    invites = [r for r in records if isinstance(r, Invite)]
    redeems = [r for r in records if isinstance(r, Redeem)]
    if not (len(records) == 2 and len(invites) == 1 and len(redeems) == 1):
        return ("misplaced-record", "a redemption envelope holds exactly the invite and its redeem")
    invite, redeem = invites[0], redeems[0]
    if not (carrier.seq == 1 and carrier.author == redeem.invite_key == invite.invite_key
            and redeem.proof == invite.hash):
        return ("misplaced-record", "a redeem is carried at seq 1 of its invite key's chain, with its invite")
    if redeem.hlc > carrier.hlc or invite.hlc > carrier.hlc:
        return ("misplaced-record", "a record's hlc is later than its carrier's")
    return None


def _place(inputs: Inputs, record: Record, carrier: Carrier | None) -> bool:
    """Note where ``record`` was carried; whether that changed anything."""
    digest = record.hash
    if isinstance(record, Genesis):
        if inputs.genesis is None and space_id_of(record) == inputs.space:
            inputs.genesis = record
            return True
        return False
    if carrier is None:
        return False
    changed = digest not in inputs.records
    inputs.records.setdefault(digest, record)
    if isinstance(record, Redeem):
        if carrier.author == record.invite_key and carrier.seq == 1 and digest not in inputs.redeems_placed:
            inputs.redeems_placed.add(digest)
            changed = True
    elif isinstance(record, Invite) and carrier.author == record.invite_key:
        if carrier.seq == 1 and digest not in inputs.invite_carried:
            inputs.invite_carried.add(digest)
            changed = True
    elif carrier.author == record.issuer:
        old = inputs.positions.get(digest)
        if old is None or carrier.seq < old:
            inputs.positions[digest] = carrier.seq
            changed = True
    return changed


#: devices whose read verdict a log keeps at once (more: it starts again)
MAX_READERS_KEPT = 4096
NO_EXPIRY = 1 << 62  # a verdict kept as "until" for a grant that never expires

class MembershipLog:
    """The records of one space and what they mean (docs/DESIGN.md, "Membership")."""

    __slots__ = ("_eval", "_inputs", "_readers", "space")

    def __init__(self, space: str) -> None:
        self.space = space
        self._inputs = Inputs(space, None)
        self._eval: Evaluation | None = None
        #: device -> the wall ms until which it may read (0: it may not), while the log is
        #: unchanged: sessions ask at every read, thousands of times a second on a relay
        self._readers: dict[bytes, int] = {}

    # -- changing it ------------------------------------------------------------------------------
    def check(self, records: Sequence[Record], carrier: Carrier) -> Verdict:
        """Would these records, carried so, all count? (Changes nothing.)"""
        fail = placement(records, carrier, self.space)
        if fail is None:
            inputs = self._inputs.copy()
            changed = False
            for record in records:
                changed = _place(inputs, record, carrier) or changed
            if inputs.genesis is None:
                fail = ("unknown-proof", "the space's genesis is not known (yet)")
            else:
                found = None
                if FAST_CHECK and self._inputs.genesis is not None:
                    state = self._state()
                    if changed:
                        found = judge_new(inputs, state, records)
                    else:  # all held, carried so already: what they mean now
                        found = [state.status.get(r.hash) for r in records]
                if found is None:
                    status = evaluate(inputs).status
                    found = [status.get(r.hash) for r in records]
                fail = next((s for s in found if s is not None), None)
        return OK if fail is None else Verdict(False, *fail)

    def add(self, records: Sequence[Record], carrier: Carrier | None) -> None:
        """Hold these records, carried so (``None``: a genesis known from a token or an id).

        Records that do not count are held all the same (they may count later, or never):
        :meth:`check` is the gate that decides what is stored.
        """
        changed = False
        for record in records:
            changed = _place(self._inputs, record, carrier) or changed
        if changed:
            self._changed()

    def fork(self, author: bytes) -> None:
        """The chain of ``author`` forked: its records stop counting (an invite key's: its
        redemptions are void)."""
        if author not in self._inputs.forked:
            self._inputs.forked.add(author)
            self._changed()

    def _changed(self) -> None:
        self._eval = None
        self._readers.clear()

    def _state(self) -> Evaluation:
        if self._eval is None:
            self._eval = evaluate(self._inputs)
        return self._eval

    # -- the checks -------------------------------------------------------------------------------
    def authorize(self, author: bytes, seq: int, hlc: int, collections: Sequence[bytes] | None) -> Verdict:
        """Rule 5, the write check of a data envelope; ``collections`` as scope digests (None:
        the relay, which cannot see them)."""
        state = self._eval if self._eval is not None else self._state()
        cut = state.cuts.get(author)
        if cut is not None and seq > cut:
            return Verdict(False, "revoked", f"the author was revoked after seq {cut}")
        caps = state.caps.get(author)
        if not caps:
            return _NOT_A_MEMBER
        wall = wall_of(hlc)
        best = caps[0]  # strongest first: most envelopes stop here
        if best.rights >= Rights.WRITE and not best.scope and best.live(wall):
            return OK
        writers = [c for c in caps if c.rights >= Rights.WRITE]
        if not writers:
            return _READ_ONLY
        live = [c for c in writers if c.live(wall)]
        if not live:
            return _EXPIRED
        if collections is None or any(not c.scope or c.scope_set.issuperset(collections) for c in live):
            return OK
        if any(not c.scope or c.scope_set.issuperset(collections) for c in writers):
            return _EXPIRED  # the grant that covered these collections has ended
        return _OUT_OF_SCOPE

    def _live_caps(self, device: bytes, now_ms: int) -> list[Cap]:
        state = self._state()
        if device in state.cuts:
            return []
        return [c for c in state.caps.get(device, ()) if c.live(now_ms)]

    def can_read(self, device: bytes, now_ms: int) -> bool:
        """Rule 6: a valid grant (any rights) unexpired at ``now_ms``, and not revoked.

        The answer is kept until the log changes, as the time until which it holds: a grant
        has no start, so only its expiry (the latest of the device's live grants) ends a yes,
        and a no lasts until a record arrives. (A clock set back past an expiry it already
        passed is not undone.)"""
        until = self._readers.get(device)
        if until is None:
            if len(self._readers) >= MAX_READERS_KEPT:
                self._readers.clear()
            caps = self._live_caps(device, now_ms)
            until = 0 if not caps else NO_EXPIRY if any(c.not_after_ms == 0 for c in caps) \
                else max(c.not_after_ms for c in caps)
            self._readers[device] = until
        return now_ms < until

    def rights_of(self, device: bytes, now_ms: int) -> Rights | None:
        caps = self._live_caps(device, now_ms)
        return max(c.rights for c in caps) if caps else None

    # -- views ------------------------------------------------------------------------------------
    def genesis(self) -> Genesis | None:
        return self._inputs.genesis

    def cuts(self) -> dict[bytes, int]:
        """Revoked author -> the last seq of its chain that stays valid."""
        return dict(self._state().cuts)

    def authority(self, device: bytes, now_ms: int | None = None) -> bytes | None:
        """The record hash ``device`` quotes as ``proof`` (its strongest valid grant, one live at
        ``now_ms`` when given and there is one), None when it has none or is revoked."""
        state = self._state()
        caps = state.caps.get(device)
        if not caps or device in state.cuts:
            return None
        if now_ms is not None:
            return next((c for c in caps if c.live(now_ms)), caps[0]).hash
        return caps[0].hash

    def members(self, now_ms: int) -> list[Member]:
        """Every device with a valid grant (its strongest, preferring unexpired ones), revoked
        ones with ``revoked_after``, and the joiners of reused invites (``reused_invite``),
        by device id."""
        state = self._state()
        out: dict[bytes, Member] = {}
        for subject, caps in state.caps.items():
            best = next((c for c in caps if c.live(now_ms)), caps[0])
            out[subject] = Member(device_id(subject), best.rights, best.scope, best.not_after_ms,
                                  device_id(best.issuer), best.via, state.cuts.get(subject))
        records = self._inputs.records
        for key in sorted(state.reused):
            for redeem in state.redeemed.get(key, ()):
                invite = records.get(redeem.proof)
                if redeem.subject in out or not isinstance(invite, Invite):
                    continue
                out[redeem.subject] = Member(
                    device_id(redeem.subject), invite.rights, invite.scope, invite.grant_not_after_ms,
                    device_id(invite.issuer), "invite", state.cuts.get(redeem.subject), reused_invite=True)
        return sorted(out.values(), key=lambda m: m.device)

    def reused_invites(self) -> list[bytes]:
        """Invite keys redeemed more than once (every redemption void)."""
        return sorted(self._state().reused)

    def readers(self, now_ms: int) -> list[bytes]:
        """Who a new epoch key is sealed to: every device that may read now, and the keys of
        valid invites that are unexpired and not redeemed yet."""
        state = self._state()
        out = {s for s, caps in state.caps.items()
               if s not in state.cuts and any(c.live(now_ms) for c in caps)}
        for invite in state.invites:
            key = invite.invite_key
            if (now_ms < invite.not_after_ms and key not in state.redeemed and key not in state.cuts
                    and key not in self._inputs.forked):
                out.add(key)
        return sorted(out)

    def epochs(self) -> list[EpochInfo]:
        """The epochs valid keys records name, by ``(n, epoch_id)``."""
        merged: dict[tuple[int, bytes], tuple[set[bytes], int]] = {}
        for keys in self._state().keys:
            recipients, hlc = merged.setdefault((keys.epoch_n, keys.epoch_id), (set(), keys.hlc))
            recipients.update(k for k, _s in keys.boxes)
            if keys.hlc < hlc:
                merged[(keys.epoch_n, keys.epoch_id)] = (recipients, keys.hlc)
        return [EpochInfo(n, eid, tuple(sorted(rec)), hlc) for (n, eid), (rec, hlc) in sorted(merged.items())]

    def tainted_epochs(self) -> set[bytes]:
        """Epoch ids sealed to a device that is revoked now: no writer uses them again
        (docs/DESIGN.md, "Which epoch a writer uses")."""
        cuts = self._state().cuts
        if not cuts:
            return set()
        return {e.epoch_id for e in self.epochs() if any(r in cuts for r in e.recipients)}

    def boxes_for(self, device: bytes) -> list[tuple[int, bytes, bytes]]:
        """``(epoch_n, epoch_id, sealed)`` of every valid box sealed to ``device``."""
        found = set()
        for keys in self._state().keys:
            sealed = keys.box_for(device)
            if sealed is not None:
                found.add((keys.epoch_n, keys.epoch_id, sealed))
        return sorted(found)

    def status(self, record_hash: bytes) -> Verdict | None:
        """Whether a held record counts (None: not held)."""
        state = self._state()
        if record_hash not in state.status:
            return None
        fail = state.status[record_hash]
        return OK if fail is None else Verdict(False, *fail)

    def records(self) -> list[Record]:
        """Every record held, the genesis first, then by hash."""
        held = self._inputs.records
        first: list[Record] = [] if self._inputs.genesis is None else [self._inputs.genesis]
        return first + [held[h] for h in sorted(held)]


__all__ = ["MembershipLog", "placement"]
