"""The validity rules of membership records: one pure function of the record set.

:func:`evaluate` takes the records of one space (with where each was carried) and returns
which count, the cuts of revoked authors, the valid grants of every device, the valid
invites and keys records. Nothing depends on the order records arrived in: revocations are
applied in the order ``(hlc, issuer_key, record_hash)`` and everything else is judged
against the final cuts. docs/DESIGN.md, "Membership", states the rules; the numbers below
are the spec's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .records import MAX_INVITE_MS, Genesis, Grant, Invite, Keys, Record, Redeem, Revoke, Rights, wall_of

#: Longest proof chain from a record down to the genesis (the genesis is depth 0).
MAX_DEPTH = 16

Fail = tuple[str, str]  # (reason, detail)

#: Why a proof does not count that a record depending on it reports as its own reason: the
#: ones that other records may still change (a proof on its way, a cut that a later-known
#: revocation can lift, a fork) and the depth bound. Every other failure of a proof makes the
#: record ``forged``, which no later record changes.
_PASSED_ON = frozenset({"unknown-proof", "beyond-delegation", "revoked", "forked", "reused-invite"})


@dataclass(frozen=True, slots=True)
class Cap:
    """A valid authority of ``subject``: the genesis, a grant, or a redeemed invite."""

    subject: bytes
    rights: Rights
    scope: tuple[bytes, ...]
    not_after_ms: int
    hash: bytes
    issuer: bytes
    via: str
    depth: int
    scope_set: frozenset[bytes] = field(default=frozenset(), compare=False)

    def live(self, wall_ms: int) -> bool:
        return self.not_after_ms == 0 or wall_ms < self.not_after_ms

    def rank(self) -> tuple[int, bool, bool, int, bytes]:
        """Stronger first when sorted in reverse: rights, unscoped, never expiring, later expiry."""
        return (self.rights, not self.scope, self.not_after_ms == 0, self.not_after_ms, self.hash)


@dataclass(slots=True)
class Inputs:
    """The record set of one space, as the log holds it.

    ``positions``: record hash -> the lowest seq of an envelope of its issuer that carries it
    (grants, revokes, keys, invites published in the admin's chain). ``invite_carried``:
    invites carried in an invite key's redemption envelope. ``redeems_placed``: redeems
    carried at seq 1 of their invite key's chain. ``forked``: authors whose chain forked.
    """

    space: str
    genesis: Genesis | None
    records: dict[bytes, Record] = field(default_factory=dict)
    positions: dict[bytes, int] = field(default_factory=dict)
    invite_carried: set[bytes] = field(default_factory=set)
    redeems_placed: set[bytes] = field(default_factory=set)
    forked: set[bytes] = field(default_factory=set)

    def copy(self) -> Inputs:
        return Inputs(self.space, self.genesis, dict(self.records), dict(self.positions),
                      set(self.invite_carried), set(self.redeems_placed), set(self.forked))


@dataclass(slots=True)
class Evaluation:
    """What the record set means (see :func:`evaluate`)."""

    status: dict[bytes, Fail | None]
    cuts: dict[bytes, int]
    caps: dict[bytes, list[Cap]]
    invites: list[Invite]
    keys: list[Keys]
    redeemed: dict[bytes, list[Redeem]]  # invite key -> every redeem of it (placed or not)
    reused: set[bytes]                   # invite keys redeemed twice, or whose chain forked
    cut_hlc: dict[bytes, int]            # revoked author -> the hlc of the first revocation of it
    waiting: bool                        # some held record waits for an unknown proof


def _short(digest: bytes) -> str:
    return digest[:8].hex()


class _Judge:
    """Judges records against one set of cuts (memoised: rebuilt when the cuts change)."""

    def __init__(self, inputs: Inputs, cuts: Mapping[bytes, int], cut_hlc: Mapping[bytes, int],
                 reused: set[bytes]) -> None:
        self.inputs = inputs
        self.cuts = cuts
        self.cut_hlc = cut_hlc
        self.reused = reused
        self.memo: dict[bytes, Fail | Cap] = {}
        genesis = inputs.genesis
        self.genesis_cap = None if genesis is None else Cap(
            genesis.creator, Rights.ADMIN, (), 0, genesis.hash, genesis.creator, "genesis", 0)

    # -- the authority records: genesis, grant, redeem --------------------------------------------
    def authority(self, digest: bytes, level: int = 0) -> Fail | Cap:
        """The cap a genesis, grant or redeem gives, or why it gives none."""
        if self.genesis_cap is not None and digest == self.genesis_cap.hash:
            return self.genesis_cap
        done = self.memo.get(digest)
        if done is not None:
            return done
        record = self.inputs.records.get(digest)
        if record is None:
            return ("unknown-proof", f"record {_short(digest)} is not known (yet)")
        if level > MAX_DEPTH:  # not memoised: the depth from here down is not known
            return ("beyond-delegation", f"proof chain deeper than {MAX_DEPTH}")
        if isinstance(record, Grant):
            result = self._grant(record, level)
        elif isinstance(record, Redeem):
            result = self._redeem(record, level)
        else:
            result = ("forged", f"record {_short(digest)} is a {record.KIND.name.lower()}, not a grant")
        if not (isinstance(result, tuple) and result[0] == "beyond-delegation"):
            self.memo[digest] = result
        return result

    def _grant(self, grant: Grant, level: int) -> Fail | Cap:
        fail = self._counts(grant)
        if fail:
            return fail
        cap = self._issuer(grant, grant.proof, Rights.ADMIN, level)
        if isinstance(cap, tuple):
            return cap
        fail = _within(grant.rights, grant.scope, grant.not_after_ms, cap)
        if fail:
            return fail
        return Cap(grant.subject, grant.rights, grant.scope, grant.not_after_ms, grant.hash, grant.issuer,
                   "grant", cap.depth + 1, frozenset(grant.scope))

    def _redeem(self, redeem: Redeem, level: int) -> Fail | Cap:
        fail = self._counts(redeem)
        if fail:
            return fail
        invite = self.inputs.records.get(redeem.proof)
        if invite is None:
            return ("unknown-proof", f"the invite {_short(redeem.proof)} is not known (yet)")
        if not isinstance(invite, Invite) or invite.invite_key != redeem.invite_key:
            return ("forged", "a redeem's proof is not the invite of its key")
        result = self.invite(invite, level + 1)
        if isinstance(result, tuple):
            return result
        if wall_of(redeem.hlc) >= invite.not_after_ms:
            return ("expired", "the invite expired before it was redeemed")
        if result + 1 > MAX_DEPTH:
            return ("beyond-delegation", f"proof chain deeper than {MAX_DEPTH}")
        return Cap(redeem.subject, invite.rights, invite.scope, invite.grant_not_after_ms, redeem.hash,
                   invite.issuer, "invite", result + 1, frozenset(invite.scope))

    # -- the other kinds ---------------------------------------------------------------------------
    def invite(self, invite: Invite, level: int = 0) -> Fail | int:
        """The depth of a valid invite, or why it is not valid."""
        fail = self._counts(invite)
        if fail:
            return fail
        cap = self._issuer(invite, invite.proof, Rights.ADMIN, level)
        if isinstance(cap, tuple):
            return cap
        fail = _within(invite.rights, invite.scope, invite.grant_not_after_ms, cap)
        if fail:
            return fail
        if cap.not_after_ms and invite.not_after_ms > cap.not_after_ms:
            return ("beyond-delegation", "the invite outlives its issuer's grant")
        if invite.not_after_ms > wall_of(invite.hlc) + MAX_INVITE_MS:  # decode refuses it too
            return ("expired", "an invite lives at most 30 days")
        return cap.depth + 1

    def revoke(self, revoke: Revoke) -> Fail | None:
        fail = self._counts(revoke)
        if fail:
            return fail
        cap = self._issuer(revoke, revoke.proof, Rights.ADMIN, 0)
        return cap if isinstance(cap, tuple) else None

    def keys(self, keys: Keys) -> Fail | None:
        fail = self._counts(keys)
        if fail:
            return fail
        cap = self._issuer(keys, keys.proof, Rights.WRITE, 0)
        return cap if isinstance(cap, tuple) else None

    # -- shared checks -----------------------------------------------------------------------------
    def _counts(self, record: Grant | Revoke | Invite | Redeem | Keys) -> Fail | None:
        """Rule 3 and the record's placement: does it count where it was carried?"""
        inputs = self.inputs
        if record.space != inputs.space:
            return ("wrong-space", f"the record names space {record.space}, not {inputs.space}")
        issuer = record.issuer
        if isinstance(record, Redeem):
            if issuer in self.reused:
                return ("reused-invite", "the invite was redeemed more than once: every redemption is void")
            if record.hash not in inputs.redeems_placed:
                return ("misplaced-record", "a redeem is carried at seq 1 of its invite key's chain")
            position: int | None = 1
        else:
            if issuer in inputs.forked:
                return ("forked", "its issuer's chain forked: its records do not count")
            position = inputs.positions.get(record.hash)
        cut = self.cuts.get(issuer)
        if position is None:
            if not (isinstance(record, Invite) and record.hash in inputs.invite_carried):
                return ("misplaced-record", "the record is not carried by its issuer")
            if cut is not None and record.hlc >= self.cut_hlc[issuer]:
                return ("revoked", "the invite is dated after its issuer's revocation")
        elif cut is not None and position > cut:
            return ("revoked", f"its issuer was revoked after seq {cut}; this record is at seq {position}")
        return None

    def _issuer(self, record: Grant | Revoke | Invite | Keys, proof: bytes, need: Rights,
                level: int) -> Fail | Cap:
        """The issuer's authority that ``proof`` names, if it is one and allows ``need``."""
        cap = self.authority(proof, level + 1)
        if isinstance(cap, tuple):
            reason, detail = cap
            if reason in _PASSED_ON:
                return (reason, f"its proof {_short(proof)} does not count: {detail}")
            return ("forged", f"its proof {_short(proof)} does not count ({reason}: {detail})")
        if cap.subject != record.issuer:
            return ("forged", f"its proof {_short(proof)} is not a grant to its issuer")
        if cap.rights < need:
            if need is Rights.ADMIN:
                return ("not-admin", f"its issuer has {cap.rights.name.lower()} rights, not admin")
            return ("read-only", "its issuer has read rights only")
        if not cap.live(wall_of(record.hlc)):
            return ("expired", "its issuer's grant had expired at the record's hlc")
        if cap.depth + 1 > MAX_DEPTH:
            return ("beyond-delegation", f"proof chain deeper than {MAX_DEPTH}")
        return cap


def _within(rights: Rights, scope: tuple[bytes, ...], not_after_ms: int, cap: Cap) -> Fail | None:
    """Rule 4: a delegation never exceeds its delegator (rights, scope, expiry)."""
    if rights > cap.rights:
        return ("beyond-delegation", "more rights than its issuer holds")
    if cap.scope and (not scope or not cap.scope_set.issuperset(scope)):
        return ("beyond-delegation", "a scope wider than its issuer's")
    if cap.not_after_ms and (not_after_ms == 0 or not_after_ms > cap.not_after_ms):
        return ("beyond-delegation", "an expiry later than its issuer's")
    return None


def _reused(records: Iterable[Record], forked: set[bytes]) -> tuple[dict[bytes, list[Redeem]], set[bytes]]:
    redeemed: dict[bytes, list[Redeem]] = {}
    for record in records:
        if isinstance(record, Redeem):
            redeemed.setdefault(record.invite_key, []).append(record)
    reused = {key for key, found in redeemed.items() if len(found) > 1 or key in forked}
    for found in redeemed.values():
        found.sort(key=lambda r: r.hash)
    return redeemed, reused


def evaluate(inputs: Inputs) -> Evaluation:
    """Judge every record of ``inputs`` (rules 1-4 of docs/DESIGN.md, "Membership")."""
    records = inputs.records
    redeemed, reused = _reused(records.values(), inputs.forked)
    status: dict[bytes, Fail | None] = {}
    cuts: dict[bytes, int] = {}
    cut_hlc: dict[bytes, int] = {}
    judge = _Judge(inputs, cuts, cut_hlc, reused)
    revokes = sorted((r for r in records.values() if isinstance(r, Revoke)),
                     key=lambda r: (r.hlc, r.issuer, r.hash))
    for revoke in revokes:  # rule 2: each judged given the ones before it
        refused = judge.revoke(revoke)
        status[revoke.hash] = refused
        if refused is None and (revoke.subject not in cuts or revoke.after_seq < cuts[revoke.subject]):
            cuts[revoke.subject] = revoke.after_seq
            cut_hlc.setdefault(revoke.subject, revoke.hlc)
            judge = _Judge(inputs, cuts, cut_hlc, reused)
    caps: dict[bytes, list[Cap]] = {}
    if judge.genesis_cap is not None:
        caps[judge.genesis_cap.subject] = [judge.genesis_cap]
        status[judge.genesis_cap.hash] = None
    invites: list[Invite] = []
    keys: list[Keys] = []
    for digest in sorted(records):
        record = records[digest]
        if isinstance(record, Revoke):
            continue
        fail: Fail | None
        if isinstance(record, Grant | Redeem):
            cap = judge.authority(digest)
            fail = cap if isinstance(cap, tuple) else None
            if isinstance(cap, Cap):
                caps.setdefault(cap.subject, []).append(cap)
        elif isinstance(record, Invite):
            depth = judge.invite(record)
            fail = depth if isinstance(depth, tuple) else None
            if fail is None:
                invites.append(record)
        elif isinstance(record, Keys):
            fail = judge.keys(record)
            if fail is None:
                keys.append(record)
        else:  # a second genesis can only be another space's
            fail = ("wrong-space", "the genesis of another space")
        status[digest] = fail
    for found in caps.values():
        found.sort(key=Cap.rank, reverse=True)
    waiting = any(fail is not None and fail[0] == "unknown-proof" for fail in status.values())
    return Evaluation(status, cuts, caps, invites, keys, redeemed, reused, cut_hlc, waiting)


def judge_new(inputs: Inputs, before: Evaluation, new: Sequence[Record]) -> list[Fail | None] | None:
    """The status of each record of ``new`` (already placed in ``inputs``) without judging the
    whole set again, when that is sure to give the same answer as :func:`evaluate`; None when
    it is not.

    It is when ``before`` (the evaluation of the set without ``new``) has nothing waiting for a
    proof (so no held record depends on a new one), no record of ``new`` was held before, and
    none can change a cut or the reused invites: grants, invites and keys records never do; a
    redeem does not when its invite key has no other redeem; a revocation does not when it
    fails, judged against the cuts of ``before``, for a reason that looser cuts do not change
    (at its turn in rule 2 the cuts are a prefix of those, and every check it passed it passes
    again). Strangers' envelopes, the ones a flood is made of, take this path.
    """
    if before.waiting or any(isinstance(r, Genesis) or r.hash in before.status for r in new):
        return None
    redeem_keys = [r.invite_key for r in new if isinstance(r, Redeem)]
    if len(set(redeem_keys)) != len(redeem_keys) or any(
            k in before.redeemed or k in inputs.forked for k in redeem_keys):
        return None
    judge = _Judge(inputs, before.cuts, before.cut_hlc, before.reused)
    out: list[Fail | None] = []
    for record in new:
        if isinstance(record, Grant | Redeem):
            cap = judge.authority(record.hash)
            out.append(cap if isinstance(cap, tuple) else None)
        elif isinstance(record, Invite):
            depth = judge.invite(record)
            out.append(depth if isinstance(depth, tuple) else None)
        elif isinstance(record, Keys):
            out.append(judge.keys(record))
        else:
            assert isinstance(record, Revoke)
            fail = judge.revoke(record)
            if fail is None or fail[0] in _CUT_DEPENDENT:
                return None
            out.append(fail)
    return out


#: The failures a revocation judged against tighter cuts may owe to those cuts.
_CUT_DEPENDENT = frozenset({"revoked", "forked", "reused-invite"})


__all__ = ["MAX_DEPTH", "Cap", "Evaluation", "Fail", "Inputs", "evaluate", "judge_new"]
