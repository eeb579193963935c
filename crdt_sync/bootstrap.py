"""A new device from a snapshot plus the tail, instead of a space's whole history
(docs/PROTOCOL.md, "Snapshots"; docs/DESIGN.md, "Snapshots and chain bases").

:class:`Bootstrap` makes snapshots (:meth:`Bootstrap.make`: only an admin of the space),
chooses what a bundle carries (:meth:`Bootstrap.bundle_parts`: the snapshot, the
membership envelopes it covers, the tail after it) and imports a bundle's snapshot
(:meth:`Bootstrap.apply`): verify it, judge the membership envelopes below its covered point,
check the author is an admin, decrypt, compare the covered heads with this device's own
chains, apply the entity states and leave a **chain base** per covered author, so that the
tail is accepted by the chain rules although its predecessors are absent. The tail itself
goes through :meth:`crdt_sync.receive.Receiver.accept` like a session's batch.
"""

from __future__ import annotations

from . import clocks
from .bundle import Bundle
from .cache import EntityCache
from .envelope import Envelope, decode_trusted, open_envelope
from .errors import Rejected
from .hlc import HybridClock
from .identity import Identity, public_key_of
from .members import Members
from .membership import MEMBERSHIP_PAYLOAD, Carrier, Record, Rights, wall_of
from .payload import pack_item, unpack_items
from .sealing import Sealer, fold_updates
from .snapshot import Snapshot, decode_snapshot, make_snapshot, open_snapshot
from .snapshot import decode_trusted as decode_kept
from .space_crypto import payload_kind
from .store import EntityKey, Store

#: The reason of a snapshot that is applied (:attr:`crdt_sync.results.ImportResult.snapshot`).
APPLIED = "applied"


class Bootstrap:
    """Snapshots of one replica's spaces: making, exporting, importing.

    Args:
        client_id: this process's Yjs client id (stored with the parts a snapshot adds).
    """

    def __init__(self, store: Store, cache: EntityCache, clock: HybridClock, sealer: Sealer,
                 members: Members, identity: Identity, client_id: int) -> None:
        self._store = store
        self._cache = cache
        self._clock = clock
        self._sealer = sealer
        self._members = members
        self._identity = identity
        self._client_id = client_id

    # -- making and exporting -----------------------------------------------------------------
    def make(self, space: str) -> Snapshot:
        """A snapshot of ``space`` as this device holds it (its whole version vector), signed
        by this device and kept to be passed on (it replaces the one kept before).

        Raises:
            Rejected: ``not-admin`` (only an admin's snapshot is accepted), ``snapshot-unavailable``
                (envelopes wait for their epoch keys: the state would miss them).
        """
        store = self._store
        me = self._identity.public_key
        rights = self._members.log(space).rights_of(me, self._clock.wall())
        if rights is not Rights.ADMIN:
            raise Rejected("not-admin", f"{self._identity.id} is not an admin of {space}: only an "
                                        "admin's snapshot is accepted")
        if store.held_wires(space):
            raise Rejected("snapshot-unavailable", f"envelopes of {space} wait for their keys: "
                                                   "a snapshot would miss them")
        covered = []
        for author in store.version_vector(space):
            seq, head = store.chain_head(space, author)
            covered.append((public_key_of(author), seq, head))
        entities = []
        for coll, ent in store.entity_keys(space):
            snapshot, parts = store.load_entity((space, coll, ent))
            updates = [] if snapshot is None else [snapshot]
            for data in parts:
                updates.extend(update for _hlc, update in unpack_items(data))
            entities.append((coll, ent, fold_updates(updates)))
        key, epoch_id = self._sealer.epoch(space)
        hlc = self._clock.now()
        snap = make_snapshot(self._identity, space, hlc, covered, key, epoch_id, entities)
        with store.write():
            store.keep_snapshot(space, self._identity.id, hlc, snap.wire)
        return snap

    def bundle_parts(self, space: str, since: dict[str, int],
                     snapshot: bool) -> tuple[bytes | None, list[bytes]]:
        """``(snapshot wire or None, envelopes)`` of a bundle of ``space`` for a peer that holds
        ``since``. With ``snapshot`` (or when this device started some chain from a snapshot
        that ``since`` does not cover: it cannot give that history), the kept snapshot (made
        here when none is kept), the membership envelopes it covers and the tail after it;
        else every envelope not covered by ``since``.

        Raises:
            Rejected: a snapshot is needed and this device can neither pass one on nor make
                one (see :meth:`make`).
        """
        store = self._store
        bases = store.chain_bases(space)
        if not snapshot and all(since.get(a, 0) >= seq for a, (seq, _h) in bases.items()):
            return None, store.envelopes_since(space, since)
        wire = store.kept_snapshot(space)
        snap = decode_kept(wire) if wire is not None else self.make(space)
        covered = snap.version_vector
        membership = [w for w in store.membership_wires(space)
                      if (env := decode_trusted(w)).seq <= covered.get(env.author, 0)]
        return snap.wire, membership + store.envelopes_since(space, covered)

    # -- importing ----------------------------------------------------------------------------
    def apply(self, bundle: Bundle, source: str) -> tuple[str, str, set[EntityKey]]:
        """Verify and apply the snapshot of ``bundle`` (all of it or nothing). Returns
        :data:`APPLIED` or the reason it was refused (recorded), its detail, and the entities
        it changed. The caller then accepts the bundle's envelopes (the tail), either way (a
        session's snapshot: its tail follows in ENVELOPES)."""
        assert bundle.snapshot is not None
        touched: set[EntityKey] = set()
        try:
            snap = decode_snapshot(bundle.snapshot)
            if snap.space != bundle.space:
                raise Rejected("snapshot-wrong-space",
                               f"a snapshot of {snap.space} in a bundle of {bundle.space}")
            with self._store.write():
                self._apply_locked(snap, bundle.envelopes, touched, source)
        except Rejected as rejected:
            for key in touched:
                self._cache.drop(key)
            self._members.forget(bundle.space)  # (it may have taken the rolled-back records)
            self._store.record_rejection(source, rejected)
            return rejected.reason, rejected.detail, set()
        self._members.forget(bundle.space)  # (it holds the tail's records: built again from the store)
        self._clock.observe(snap.hlc)
        return APPLIED, f"{len(touched)} entities from {snap.author}'s snapshot", touched

    def _apply_locked(self, snap: Snapshot, wires: list[bytes], touched: set[EntityKey], source: str) -> None:
        store, space = self._store, snap.space
        heads = snap.heads
        before = {author: store.chain_head(space, author) for author in heads}
        self._check_heads(snap, before)
        later = self._membership_below(snap, wires, source)
        rights = self._members.log(space).rights_of(snap.author_key, wall_of(snap.hlc))
        if rights is not Rights.ADMIN:
            raise Rejected("snapshot-not-admin", f"the snapshot's author {snap.author} is not an "
                                                 f"admin of {space} by this device's membership log")
        self._open_later_keys(later)
        entities = open_snapshot(snap, self._members.keys_of(space))
        for coll, ent_id, state in entities:
            key = (space, coll, ent_id)
            ent = self._cache.get(key)
            touched.add(key)
            store.insert_part(key, snap.author, self._client_id, pack_item(snap.hlc, state))
            try:
                written = ent.apply_remote(state)
            except ValueError as exc:
                raise Rejected("snapshot-malformed", f"the state of {key} does not apply: {exc}") from None
            if any(hlc > snap.hlc for hlc in written):
                raise Rejected("snapshot-malformed", f"{key} has a register later than the snapshot")
        for author, (seq, head) in heads.items():
            if before[author][0] < seq:
                store.set_chain_base(space, author, seq, head)
        store.keep_snapshot(space, snap.author, snap.hlc, snap.wire)
        store.join(space)
        for key in sorted(touched):
            try:
                self._sealer.index(key, readable=True)
            except Rejected as rejected:
                raise Rejected("snapshot-malformed", rejected.detail) from None
            except Exception as exc:  # trust boundary: a signed state that breaks the entity
                raise Rejected("snapshot-malformed",
                               f"{key} is unreadable after the snapshot: {exc}") from None

    def _check_heads(self, snap: Snapshot, before: dict[str, tuple[int, bytes]]) -> None:
        """Each covered chain this device holds up to the covered seq must have the head hash
        the snapshot names there, and must not have forked at or below it."""
        store, space = self._store, snap.space
        forks = store.fork_points(space)
        for author, (seq, head) in snap.heads.items():
            point = forks.get(author)
            if point is not None and point <= seq:
                raise Rejected("snapshot-fork", f"the snapshot covers {author} up to seq {seq}, whose "
                                                f"chain forked at seq {point} here")
            top, top_hash = before[author]
            if top < seq:
                continue
            have = top_hash if top == seq else store.envelope_hash(space, author, seq)
            if have is not None and have != head:
                raise Rejected("snapshot-fork", f"the snapshot names {head.hex()[:16]}.. as {author}'s seq "
                                                f"{seq}; this device holds {have.hex()[:16]}..")

    def _membership_below(self, snap: Snapshot, wires: list[bytes], source: str) -> list[Envelope]:
        """Store the bundle's membership envelopes at or below the covered seq of their author
        that this device lacks (membership is never compacted: the bundle carries them in
        full), judged as any membership envelope, without the chain rule (their predecessors
        are covered by the snapshot). A refused one is recorded and left out. Returns the
        membership envelopes of the tail (stored later, by the chain rules)."""
        store, covered = self._store, snap.version_vector
        later: list[Envelope] = []
        for wire in wires:
            try:
                env = open_envelope(wire)
            except Rejected:
                continue  # (the tail's receive refuses it with its reason)
            if env.space != snap.space or payload_kind(env.payload) != MEMBERSHIP_PAYLOAD:
                continue
            if env.seq > covered.get(env.author, 0):
                later.append(env)
                continue
            if store.envelope_hash(env.space, env.author, env.seq) is not None:
                continue
            try:
                clocks.check_envelope(env)
                judged = self._members.judge(env)
            except Rejected as rejected:
                store.record_rejection(source, rejected)
                continue
            if judged.store:
                self._store_membership(env, judged.records or [])
        return later

    def _open_later_keys(self, later: list[Envelope]) -> None:
        """The epoch keys sealed to this device in the tail's membership envelopes (a device
        let in after the snapshot was made gets its keys there): each envelope is judged by
        the log (which takes its records for the moment: it is rebuilt from the store after
        the import) and the boxes of a valid one are opened. Nothing of them is stored here."""
        for env in later:
            try:
                judged = self._members.judge(env)
            except Rejected:
                continue
            if judged.store and judged.records:
                log = self._members.log(env.space)
                log.add(judged.records, Carrier(env.author_key, env.seq, env.hlc))
                self._members.open_boxes(env.space, judged.records)

    def _store_membership(self, env: Envelope, records: list[Record]) -> None:
        self._store.insert_envelope(env)
        self._members.stored(env, records)
        self._store.join(env.space)


__all__ = ["APPLIED", "Bootstrap"]
