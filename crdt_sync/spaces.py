"""Spaces bound to keys on a device: their ids, local names, creation and grants
(docs/DESIGN.md, "Spaces bound to keys on a device").

A space is created by a device: its genesis record (signed by that device, the first
admin) gives the space id (:func:`~crdt_sync.membership.space_id_of`). Humans keep using
names: each device binds a local name to an id in the store's ``space_names`` table, and
:meth:`SpaceBook.resolve` turns a name or an id into the id (a name bound to two ids is
:class:`~crdt_sync.errors.AmbiguousSpace`). :class:`SpaceBook` owns naming and the
membership envelopes this device publishes (genesis, grants); the records' log is
:class:`~crdt_sync.members.Members`'.

Creating a space seals the creator's seq 1, the membership envelope ``[genesis, keys]``
(epoch 0 sealed to the creator), and stores the space secret and the epoch key in the
keyring; the replica then writes the label (seq 2), the entity ``_space/label`` whose field
``name`` is the name sealed under the space secret (:func:`~crdt_sync.space_crypto.seal_label`).
"""

from __future__ import annotations

from collections.abc import Sequence

from .envelope import MAX_SPACE_NAME, Envelope
from .envelope import seal as seal_envelope
from .errors import AmbiguousSpace, NotFound, Rejected
from .hlc import HybridClock
from .identity import Identity, public_key_of
from .members import Members, judge_membership
from .membership import (
    MAX_INVITE_MS,
    Keys,
    Record,
    Rights,
    decode_token,
    encode_membership,
    encode_token,
    is_space_id,
    make_genesis,
    make_grant,
    make_invite,
    make_keys,
    make_revoke,
    scope_digest,
    space_id_of,
)
from .results import SpaceInfo
from .secrets import Secrets
from .space_crypto import new_epoch, new_key, open_label, scope_key, seal_box, seal_label
from .store import SPACE_COLLECTION, Store
from .values import check_name

#: The entity of a space that holds its label (its human name, sealed under the space secret).
LABEL_ENTITY = (SPACE_COLLECTION, "label")
LABEL_FIELD = "name"

RIGHTS = {"read": Rights.READ, "write": Rights.WRITE, "admin": Rights.ADMIN}


def parse_rights(rights: str | Rights | int) -> Rights:
    """``"read"``, ``"write"``, ``"admin"`` or a :class:`~crdt_sync.membership.Rights`."""
    if isinstance(rights, str):
        try:
            return RIGHTS[rights]
        except KeyError:
            raise ValueError(f"rights are read, write or admin, not {rights!r}") from None
    return Rights(rights)


def rights_name(rights: Rights | None) -> str | None:
    return None if rights is None else rights.name.lower()


class SpaceBook:
    """A device's spaces: names, creation, grants (every write inside the caller's
    ``store.write()``)."""

    def __init__(self, store: Store, members: Members, identity: Identity, secrets: Secrets,
                 clock: HybridClock) -> None:
        self._store = store
        self._members = members
        self._identity = identity
        self._secrets = secrets
        self._clock = clock

    # -- names ------------------------------------------------------------------------------
    def find(self, name_or_id: str) -> str | None:
        """The id ``name_or_id`` names here: an id as it is, else the space of that local
        name (None: no such name).

        Raises:
            AmbiguousSpace: the name is bound to more than one id.
        """
        check_name("space", name_or_id, MAX_SPACE_NAME)
        if is_space_id(name_or_id) or self._store.knows_space(name_or_id):
            return name_or_id  # (a space kept under that exact string is its id)
        ids = self._store.spaces_named(name_or_id)
        if len(ids) > 1:
            raise AmbiguousSpace(name_or_id, ids)
        return ids[0] if ids else None

    def resolve(self, name_or_id: str) -> str:
        """Like :meth:`find`; an unknown name raises :class:`~crdt_sync.errors.NotFound`."""
        found = self.find(name_or_id)
        if found is None:
            raise NotFound(f"no space named {name_or_id!r} on this device (crdt-sync spaces lists them)")
        return found

    def name(self, space: str) -> str | None:
        return self._store.space_name(space)

    def learn_name(self, space: str, label: bytes) -> None:
        """A label of ``space`` arrived: it becomes the local name if there is none yet."""
        if self._store.space_name(space) is not None:
            return
        secret = self._secrets.keyring().secret(space)
        if secret is None:
            return
        try:
            name = open_label(secret, label)
        except Rejected:
            return
        self._store.set_space_name(space, name)

    def rename(self, space: str, name: str) -> bytes:
        """Bind ``space`` to the local ``name``; returns its new sealed label."""
        check_name("space name", name, MAX_SPACE_NAME)
        self._store.set_space_name(space, name)
        return self.label(space, name)

    def label(self, space: str, name: str) -> bytes:
        secret = self._secrets.keyring().secret(space)
        if secret is None:
            raise NotFound(f"this device holds no key of space {space}")
        return seal_label(secret, name)

    # -- creating and granting --------------------------------------------------------------
    def create(self, name: str) -> str:
        """A new space named ``name`` here, with this device as its admin: seals seq 1 of
        its chain (``[genesis, keys]``) and keeps the keys. Returns the id."""
        check_name("space name", name, MAX_SPACE_NAME)
        me = self._identity
        hlc = self._clock.now()
        genesis = make_genesis(me, hlc)
        space = space_id_of(genesis)
        epoch_id, epoch_key = new_epoch()
        secret = new_key()
        self._secrets.keyring().add(space, 0, epoch_id, epoch_key, secret)
        self._secrets.save()  # before the envelope that needs it is committed
        box = seal_box(me.public_key, epoch_key, secret)
        keys = make_keys(me, space, 0, epoch_id, [(me.public_key, box)], hlc, genesis.hash)
        self.publish(space, [genesis, keys], hlc)
        self._store.join(space)
        self._store.set_space_name(space, name)
        return space

    def grant(self, space: str, devices: Sequence[str], rights: str | Rights | int,
              collections: Sequence[str] | None = None, expires_ms: int = 0) -> Envelope:
        """Grant ``rights`` in ``space`` to each of ``devices`` (scoped to ``collections``,
        ending ``expires_ms`` from now: 0 never), with a keys record per epoch this device
        holds sealing it to them, in one envelope of this device's chain.

        Raises:
            Rejected: this device may not grant so (``not-admin``, ``beyond-delegation``,
                ...); nothing was published.
        """
        me = self._identity
        level = parse_rights(rights)
        keyring = self._secrets.keyring()
        secret = keyring.secret(space)
        if secret is None:
            raise NotFound(f"this device holds no key of space {space}")
        subjects = sorted({public_key_of(d) for d in devices})
        if not subjects:
            raise ValueError("grant to at least one device")
        hlc = self._clock.now()
        wall = hlc >> 16
        proof = self._members.log(space).authority(me.public_key, wall)
        if proof is None:
            raise Rejected("not-admin", f"{me.id} holds no grant in {space}")
        key_s = scope_key(secret)
        scope = [scope_digest(key_s, c) for c in collections or ()]
        not_after = 0 if not expires_ms else wall + expires_ms
        records: list[Record] = [make_grant(me, space, s, level, scope, not_after, hlc, proof)
                                 for s in subjects]
        for n, epoch_id in keyring.epochs(space):
            epoch_key = keyring.key(space, epoch_id)
            assert epoch_key is not None
            records.append(make_keys(me, space, n, epoch_id,
                                     [(s, seal_box(s, epoch_key, secret)) for s in subjects], hlc, proof))
        return self.publish(space, records, hlc)

    def revoke(self, space: str, device: str) -> Envelope:
        """Revoke ``device`` in ``space``: what it wrote up to the last seq of its chain held
        here stays valid (``after_seq``), nothing later does; and rotate the key in the same
        envelope: a new epoch sealed to every reader but it, so that it cannot read what is
        written from now on (docs/DESIGN.md, "The removal race", "Which epoch a writer uses").

        Raises:
            Rejected: this device may not revoke (``not-admin``); nothing was published.
        """
        me = self._identity
        subject = public_key_of(device)
        keyring = self._secrets.keyring()
        secret = keyring.secret(space)
        if secret is None:
            raise NotFound(f"this device holds no key of space {space}")
        hlc = self._clock.now()
        wall = hlc >> 16
        log = self._members.log(space)
        proof = log.authority(me.public_key, wall)
        if proof is None:
            raise Rejected("not-admin", f"{me.id} holds no grant in {space}")
        after_seq = self._store.chain_head(space, device)[0]
        revoke = make_revoke(me, space, subject, after_seq, hlc, proof)
        keys = self._new_epoch(space, secret, hlc, proof, {subject})
        return self.publish(space, [revoke, keys], hlc)

    def writer_epoch(self, space: str, held: Sequence[tuple[int, bytes]]) -> bytes | None:
        """(:class:`~crdt_sync.sealing.EpochPolicy`) :meth:`Members.writer_epoch`."""
        return self._members.writer_epoch(space, held)

    def rotate(self, space: str) -> bytes:
        """Publish a new epoch of ``space`` sealed to every current reader (and this device), in
        a keys record of this device's chain; returns its id. What a writer does when every
        epoch it holds is sealed to a device revoked since (docs/DESIGN.md, "Which epoch a
        writer uses"): two admins revoking at once each rotate, and each new epoch is sealed
        to the device the other revoked.

        Raises:
            Rejected: this device may not (``not-admin``: no grant; ``read-only``).
        """
        me = self._identity
        secret = self._secrets.keyring().secret(space)
        if secret is None:
            raise NotFound(f"this device holds no key of space {space}")
        hlc = self._clock.now()
        proof = self._members.log(space).authority(me.public_key, hlc >> 16)
        if proof is None:
            raise Rejected("not-admin", f"{me.id} holds no grant in {space}")
        keys = self._new_epoch(space, secret, hlc, proof, set())
        self.publish(space, [keys], hlc)
        return keys.epoch_id

    def _new_epoch(self, space: str, secret: bytes, hlc: int, proof: bytes, without: set[bytes]) -> Keys:
        """A keys record of a new epoch sealed to every reader but ``without`` (and to this
        device); its key is saved in the keyring first."""
        me = self._identity
        keyring = self._secrets.keyring()
        log = self._members.log(space)
        held = keyring.epochs(space)
        n = (max(e.n for e in log.epochs()) if log.epochs() else held[-1][0] if held else 0) + 1
        epoch_id, epoch_key = new_epoch()
        readers = [r for r in log.readers(hlc >> 16) if r not in without]
        if me.public_key not in readers:
            readers.append(me.public_key)
        boxes = [(r, seal_box(r, epoch_key, secret)) for r in readers]
        keys = make_keys(me, space, n, epoch_id, boxes, hlc, proof)
        keyring.add(space, n, epoch_id, epoch_key, secret)
        self._secrets.save()  # before the envelope that names the epoch is committed
        return keys

    def invite(self, space: str, rights: str | Rights | int, collections: Sequence[str] | None,
               expires_ms: int, history: bool, grant_expires_ms: int) -> str:
        """A single-use invite to ``space``: a one-time key, the invite record published in
        this device's chain, and the token a joiner redeems it with (docs/DESIGN.md,
        "Single-use invites"): the genesis, the invite and its key's seed, the epoch keys the
        joiner may read (every epoch held; the current one only without ``history``), the
        space secret and the sealed label.

        Raises:
            Rejected: this device may not invite so (``not-admin``, ``beyond-delegation``,
                ``bad-record`` for an expiry past 30 days); nothing was published.
        """
        me = self._identity
        level = parse_rights(rights)
        if not 0 < expires_ms <= MAX_INVITE_MS:
            raise ValueError(f"an invite expires after 1 ms to 30 days, not {expires_ms} ms")
        if grant_expires_ms < 0:
            raise ValueError("grant_expires_ms is 0 (never) or a duration in ms")
        keyring = self._secrets.keyring()
        secret = keyring.secret(space)
        held = keyring.epochs(space)
        genesis = self._members.log(space).genesis()
        if secret is None or not held or genesis is None:
            raise NotFound(f"this device holds no key (or no genesis) of space {space}")
        hlc = self._clock.now()
        wall = hlc >> 16
        proof = self._members.log(space).authority(me.public_key, wall)
        if proof is None:
            raise Rejected("not-admin", f"{me.id} holds no grant in {space}")
        seed = new_key()
        one_time = Identity(seed)
        key_s = scope_key(secret)
        scope = [scope_digest(key_s, c) for c in collections or ()]
        grant_end = 0 if not grant_expires_ms else wall + grant_expires_ms
        record = make_invite(me, space, one_time.public_key, level, scope, wall + expires_ms, grant_end,
                             history, hlc, proof)
        epochs = held if history else held[-1:]
        keys = []
        for n, epoch_id in epochs:
            epoch_key = keyring.key(space, epoch_id)
            assert epoch_key is not None
            keys.append((n, epoch_id, epoch_key))
        label = self.label(space, self.name(space) or space)
        token = encode_token(genesis, record, seed, keys, secret, label)
        self.publish(space, [record], hlc)
        return token

    def join(self, token: str) -> str:
        """Redeem an invite token: keep the genesis, the keys and the invite key it carries,
        and store the invite key's seq-1 envelope ``[invite, redeem]`` naming this device
        (once: joining again with the same token on this device changes nothing). Returns
        the space id.

        Raises:
            Rejected: ``bad-token``, ``expired-token``, or the redemption would not count
                here (``expired``, ``not-admin``, ...); nothing was stored.
        """
        me = self._identity
        parsed = decode_token(token, self._clock.wall())
        space = parsed.space
        one_time = parsed.invite_identity()
        self._members.know_genesis(space, parsed.genesis, one_time)
        head = self._store.chain_head(space, one_time.id)
        env, records = None, []
        if head[0] == 0:
            self._clock.observe(parsed.invite.hlc)  # (the admin's clock may be ahead of this one)
            hlc = self._clock.now()
            records = parsed.redemption(me.public_key, hlc)
            env = seal_envelope(one_time, space, 1, head[1], hlc, encode_membership(records))
            judged = judge_membership(self._members.log(space), env)
            if not judged.store or judged.notice is not None:
                reason = judged.notice or Rejected("unknown-proof", "not valid here")
                raise Rejected(reason.reason, f"this invite cannot be redeemed: {reason.detail}")
        keyring = self._secrets.keyring()
        for n, epoch_id, epoch_key in parsed.keys:
            keyring.add(space, n, epoch_id, epoch_key, parsed.secret)
        self._secrets.save()  # before the envelope that needs them is committed
        if env is not None:
            self._store.insert_envelope(env)
            self._members.stored(env, records)
        self._store.join(space)
        self.learn_name(space, parsed.label)
        return space

    def publish(self, space: str, records: Sequence[Record], hlc: int) -> Envelope:
        """Seal ``records`` as the next envelope of this device's chain in ``space``, after
        checking that they count (what every receiver will check).

        Raises:
            Rejected: they would not count here; nothing was sealed.
        """
        head = self._store.chain_head(space, self._identity.id)
        env = seal_envelope(self._identity, space, head[0] + 1, head[1], hlc, encode_membership(records))
        judged = judge_membership(self._members.log(space), env)
        if not judged.store or judged.notice is not None:
            reason = judged.notice or Rejected("unknown-proof", "not valid here")
            raise Rejected(reason.reason, f"this device may not publish that: {reason.detail}")
        self._store.insert_envelope(env)
        self._members.stored(env, records)
        return env

    # -- views ------------------------------------------------------------------------------
    def infos(self, spaces: Sequence[str], now_ms: int) -> list[SpaceInfo]:
        out = []
        for space in spaces:
            log = self._members.log(space)
            rights = log.rights_of(self._identity.public_key, now_ms)
            members = [m for m in log.members(now_ms) if m.revoked_after is None and not m.reused_invite]
            out.append(SpaceInfo(space, self.name(space), rights_name(rights), len(members)))
        return out


__all__ = ["LABEL_ENTITY", "LABEL_FIELD", "SpaceBook", "parse_rights", "rights_name"]
