"""The membership of a device's spaces: one :class:`~crdt_sync.membership.MembershipLog` per
space, and what a device does with each membership envelope (docs/DESIGN.md, "Membership
on a device").

:class:`Members` owns the logs. A space's log is built from its stored membership envelopes
(the store's ``membership`` index) the first time it is asked for, and updated with every
membership envelope stored afterwards (sealed here or received). The logs are caches of the
store: a receive that rolls back, or another process's commit, makes the replica call
:meth:`Members.forget`, and the log is built again on the next question.

:func:`judge_membership` is the rule for a new, chain-valid membership envelope (kind 4),
the same on devices and at the relay:

- ``ok``: store it and add its records;
- ``revoked``: store it and add its records (a revocation learnt later may lift the cut),
  but tell the sender its chain is set aside from there;
- ``unknown-proof``, ``reused-invite``, ``forked``: not stored, skipped like a gap (the
  proof may be on its way; the fork rules decide the others);
- any other reason: the author is quarantined with it (:class:`~crdt_sync.errors.Rejected`).

Keys records that hold a box sealed to this device are opened as they are stored, and the
epoch key goes into the keyring (:class:`~crdt_sync.secrets.Secrets`, saved by
:meth:`Members.save_keys`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from . import forks
from .envelope import Envelope, decode_trusted
from .errors import Rejected
from .identity import Identity, device_id, public_key_of
from .membership import (
    Carrier,
    Genesis,
    Keys,
    MembershipLog,
    Record,
    Verdict,
    decode_membership,
    decode_record,
    is_membership,
    scope_digest,
)
from .membership.verdicts import OK
from .payload import PayloadVersionError, decode_payload
from .secrets import Secrets
from .space_crypto import DATA_PAYLOAD, decrypt_payload, open_box, payload_kind, scope_key
from .store import Store

#: Membership verdicts that skip the envelope (not stored, no quarantine row): a proof on
#: its way, or what the fork rules decide.
MEMBERSHIP_SKIPS = frozenset({"unknown-proof", "reused-invite", "forked"})
#: The store's meta key (+ space id) of a genesis known from an invite token.
GENESIS_META = "genesis:"


class Judged(NamedTuple):
    """What to do with a new, chain-valid membership envelope.

    ``store``: keep it; ``notice``: tell the sender its chain is set aside from here (no
    quarantine row); ``records``: the records to add to the log once it is stored.
    """

    store: bool
    notice: Rejected | None = None
    records: list[Record] | None = None


def judge_membership(log: MembershipLog, env: Envelope) -> Judged:
    """What to do with ``env``, a membership envelope of ``log``'s space.

    Raises:
        Rejected: the author is to be quarantined, with the reason (``bad-record``,
            ``misplaced-record``, ``wrong-space``, ``forged``, ``not-admin``, ``read-only``,
            ``beyond-delegation``, ``expired``).
    """
    records = decode_membership(env.payload)  # Rejected("bad-record")
    verdict = log.check(records, Carrier(env.author_key, env.seq, env.hlc))
    if verdict.ok:
        return Judged(True, None, records)
    if verdict.reason == "revoked":
        return Judged(True, Rejected(verdict.reason, verdict.detail), records)
    if verdict.reason in MEMBERSHIP_SKIPS:
        return Judged(False, Rejected(verdict.reason, verdict.detail))
    raise Rejected(verdict.reason, verdict.detail)


Entities = list[tuple[str, str, bytes, list[tuple[int, bytes]]]]


def decode_data(env: Envelope, keys: Callable[[bytes], bytes | None]) -> Entities:
    """The entities of the data envelope ``env``: its kind-3 payload decrypted with ``keys``
    (bound to the envelope's space, author and seq), then the format-2 body decoded.

    Raises:
        Rejected: ``plaintext`` (a payload of another kind: a device seals only kind 3),
            ``no-key``, ``undecryptable``, ``bad-payload``, ``unknown-version``.
    """
    kind = payload_kind(env.payload)
    if kind != DATA_PAYLOAD:
        what = "a plaintext payload (kind 2)" if kind == 2 else f"a payload of kind {kind}"
        raise Rejected("plaintext", f"{env.author} seq {env.seq}: {what}; data envelopes are "
                                    f"encrypted (kind 3)")
    body = decrypt_payload(keys, env.space, env.author_key, env.seq, env.payload)
    try:
        return decode_payload(body)
    except PayloadVersionError as exc:  # written by a newer crdt-sync: say so, not "malformed"
        raise Rejected("unknown-version", f"{env.author} seq {env.seq}: {exc}") from None
    except Exception as exc:  # trust boundary: a signed, authenticated, but malformed body
        raise Rejected("bad-payload", f"{env.author} seq {env.seq}: payload is malformed: {exc}") from None


class Members:
    """The membership logs of one replica's spaces.

    Args:
        store: where the membership envelopes are (read inside or outside a transaction).
        identity: this device (boxes sealed to it are opened).
        secrets: the keyring that opened epoch keys go into.
    """

    def __init__(self, store: Store, identity: Identity, secrets: Secrets) -> None:
        self._store = store
        self._identity = identity
        self._secrets = secrets
        self._logs: dict[str, MembershipLog] = {}
        self._scope_keys: dict[str, bytes] = {}
        #: invite keys whose seeds this device holds (it joined with their tokens): boxes
        #: sealed to them are opened too
        self._invites: dict[str, list[Identity]] = {}
        self._unsaved = False

    def log(self, space: str) -> MembershipLog:
        """The log of ``space`` (built from the store the first time)."""
        log = self._logs.get(space)
        if log is None:
            log = MembershipLog(space)
            known = self._store.meta(GENESIS_META + space)  # (a joiner's, from its token)
            if known is not None:
                with contextlib.suppress(Rejected):  # (checked before it was stored: a damaged file)
                    log.add([decode_record(bytes(known))], None)
            for wire in self._store.membership_wires(space):
                env = decode_trusted(wire)
                try:
                    records = decode_membership(env.payload)
                except Rejected:  # (stored only once judged: only a damaged file gets here)
                    continue
                log.add(records, Carrier(env.author_key, env.seq, env.hlc))
            for author in self._store.fork_points(space):
                log.fork(public_key_of(author))
            self._add_forked(log, space)
            self._logs[space] = log
        return log

    def writer_epoch(self, space: str, held: Sequence[tuple[int, bytes]]) -> bytes | None:
        """The epoch a writer uses in ``space`` of those it ``held`` (in ``(n, id)`` order): the
        highest that is sealed to no device revoked now; None when every one is (the writer
        rotates first: :meth:`crdt_sync.spaces.SpaceBook.rotate`). Epochs no keys record of
        the log names (a space whose genesis is not held) count as clean."""
        tainted = self.log(space).tainted_epochs()
        return next((eid for _n, eid in reversed(held) if eid not in tainted), None)

    def can_read(self, space: str, device_key: bytes, wall_ms: int) -> bool:
        """Whether the device may be served ``space`` at ``wall_ms`` (rule 6 of its log). A
        space whose genesis this device does not hold is gated by its key alone, as writes
        to it are (:meth:`authorize`): the peer gets ciphertext it cannot open without it."""
        log = self.log(space)
        return log.genesis() is None or log.can_read(device_key, wall_ms)

    def _add_forked(self, log: MembershipLog, space: str) -> None:
        """The membership records of forked chains' proofs: they count for nothing (the
        chain forked), but a reused invite's redemptions show in ``members`` so."""
        for proof in self._store.fork_proofs(space):
            try:
                wires = forks.decode(proof)
            except Rejected:
                continue
            for wire in wires:
                env = decode_trusted(wire)
                if env.seq != 1 or not is_membership(env.payload):
                    continue
                try:
                    records = decode_membership(env.payload)
                except Rejected:
                    continue
                log.add(records, Carrier(env.author_key, env.seq, env.hlc))

    def know_genesis(self, space: str, genesis: Genesis, invite: Identity) -> None:
        """A token's genesis (checked by :func:`~crdt_sync.membership.decode_token`) and
        invite key: the genesis is kept in the store (inside the caller's transaction), the
        invite key's seed in the key file (boxes sealed to it are opened, after a restart too;
        the caller saves the secrets)."""
        self._store.set_meta(GENESIS_META + space, genesis.wire)
        self.log(space).add([genesis], None)
        self._secrets.keyring().add_invite(space, invite.seed)

    def _invite_keys(self, space: str) -> list[Identity]:
        seeds = self._secrets.keyring().invite_seeds(space)
        held = self._invites.get(space)
        if held is None or len(held) != len(seeds):
            held = self._invites[space] = [Identity(seed) for seed in seeds]
        return held

    def forget(self, space: str | None = None) -> None:
        """Drop the cached log of ``space`` (every log: None); rebuilt on the next question."""
        if space is None:
            self._logs.clear()
        else:
            self._logs.pop(space, None)

    def overrun_cuts(self, space: str) -> dict[str, int]:
        """The revoked authors of ``space`` (device id -> cut) whose chain this device holds
        beyond their cut: what it applied before the revocation arrived ("The removal race").
        This device's own chain is never in it (it keeps its seqs; others refuse them)."""
        cuts = self.log(space).cuts()
        if not cuts:
            return {}
        vv = self._store.version_vector(space)
        me = self._identity.public_key
        return {author: cut for key, cut in cuts.items()
                if key != me and vv.get(author := device_id(key), 0) > cut}

    def judge(self, env: Envelope) -> Judged:
        """:func:`judge_membership` of ``env`` against its space's log."""
        return judge_membership(self.log(env.space), env)

    def stored(self, env: Envelope, records: Sequence[Record]) -> int:
        """``env`` (judged, carrying ``records``) was stored: index it, add its records to
        the log, and open the key boxes sealed to this device. Returns how many epoch keys
        were new (the envelopes held for them can be applied now)."""
        self._store.record_membership(env)
        self.log(env.space).add(list(records), Carrier(env.author_key, env.seq, env.hlc))
        return self.open_boxes(env.space, records, self._invite_keys(env.space))

    def keys_of(self, space: str) -> Callable[[bytes], bytes | None]:
        """``epoch_id -> key`` of ``space`` (what :func:`~crdt_sync.space_crypto.decrypt_payload` takes)."""
        return self._secrets.keyring().keys_of(space)

    def authorize(self, space: str, author: bytes, seq: int, hlc: int, collections: Iterable[str]) -> Verdict:
        """Rule 5 of "Membership" for a data envelope (or a local write) of ``author`` at
        ``seq`` and ``hlc`` writing ``collections``: their scope digests are checked too. A
        space whose genesis this device does not hold yet is gated by its key alone."""
        log = self.log(space)
        if log.genesis() is None:
            return OK
        secret = self._secrets.keyring().secret(space)
        if secret is None:
            return Verdict(False, "not-a-member", "this device holds no key of the space")
        key = self._scope_keys.get(space)
        if key is None:
            key = self._scope_keys[space] = scope_key(secret)
        return log.authorize(author, seq, hlc, [scope_digest(key, c) for c in sorted(set(collections))])

    def decode(self, env: Envelope) -> list[tuple[str, str, bytes, list[tuple[int, bytes]]]]:
        """The entities of a data envelope: decrypted (kind 3) and decoded.

        Raises:
            Rejected: ``no-key`` (the epoch's key has not arrived), ``undecryptable``,
                ``bad-payload``, ``unknown-version``, ``plaintext`` (not kind 3).
        """
        return decode_data(env, self.keys_of(env.space))

    def open_boxes(self, space: str, records: Sequence[Record],
                   identities: Sequence[Identity] = ()) -> int:
        """Add to the keyring the epoch keys that ``records`` seal to this device (or to one
        of ``identities``: an invite key whose seed this device holds). Returns how many
        were new. A box that does not open or names the wrong key is skipped: another
        member's keys are not this device's to judge."""
        keyring = self._secrets.keyring()
        added = 0
        for record in records:
            if not isinstance(record, Keys):
                continue
            for identity in (self._identity, *identities):
                sealed = record.box_for(identity.public_key)
                if sealed is None:
                    continue
                try:
                    key, secret = open_box(identity, sealed)
                    added += keyring.add(space, record.epoch_n, record.epoch_id, key, secret)
                except Rejected:
                    continue
        if added:
            self._unsaved = True
        return added

    def save_keys(self) -> None:
        """Write the keyring if keys were added since the last save (``DIR/keys``)."""
        if self._unsaved and not self._secrets.read_only:
            self._secrets.save()
        self._unsaved = False


__all__ = ["MEMBERSHIP_SKIPS", "Entities", "Judged", "Members", "decode_data", "judge_membership"]
