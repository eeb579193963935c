"""Receiving: verify envelopes from other devices and apply them.

Two ways, over the same checks:

* :meth:`Receiver.receive`, all or nothing (bundles, :meth:`crdt_sync.Replica.receive`): the
  first refused envelope refuses the batch.
* :meth:`Receiver.accept`, per author (sync sessions): a refused envelope whose signature
  verified quarantines its author in its space from that seq on (:mod:`crdt_sync.quarantine`)
  and the rest of the batch carries on; each envelope is applied fully or not at all. An
  envelope that does not verify cannot be attributed to an author: it refuses the batch as
  before (the peer that sent it is at fault, and the session ends).

Both skip the envelopes of authors already quarantined in the space. A proven fork
(:mod:`crdt_sync.fork_guard`) is not a refusal: both branches are excluded, the author is
quarantined with reason ``fork`` and the batch carries on.
"""

from __future__ import annotations

from . import chain, clocks
from .cache import EntityCache
from .chain import Fault, Outcome
from .envelope import Envelope, decode_trusted, open_envelope
from .errors import Rejected
from .fork_guard import FORK, ForkGuard
from .hlc import HybridClock
from .members import Entities, Members
from .membership import MEMBERSHIP_PAYLOAD
from .quarantine import Quarantine, QuarantineRecord, SetAside
from .results import Accepted, ReceiveResult
from .sealing import Sealer
from .space_crypto import payload_kind
from .store import EntityKey, Store

#: Refusals that a membership record arriving later can undo (the author's grant was on its
#: way): :meth:`Receiver._reconsider` judges their envelopes again. ``revoked`` is final.
RECONSIDERED = frozenset({"not-a-member", "read-only", "expired", "out-of-scope"})
#: The reason of a chain cut by a revocation.
REVOKED = "revoked"


class _Refused(Rejected):
    """A refusal of an envelope whose signature verified: its author is known."""

    def __init__(self, env: Envelope, rejected: Rejected) -> None:
        super().__init__(rejected.reason, rejected.detail)
        self.env = env


class _Unauthorized(Rejected):
    """A data envelope whose author had no right to write it there (raised before anything of
    it is stored): every way of receiving sets the author aside and carries on, so that one
    stranger's or revoked member's envelopes never refuse a bundle or a batch."""


class _Unreadable(Rejected):
    """An entity that the batch as a whole left unreadable (which envelope did it is found
    by applying them one by one)."""


class _Heads:
    """The chain heads one batch read or wrote (:class:`crdt_sync.chain.ChainView`): one
    query per author per batch instead of one per envelope. Forgotten (:meth:`clear`)
    whenever heads may change other than by an envelope the batch stored itself (a fork's
    exclusion, a cut, a savepoint rolled back). This device's own chains are always read
    from the store (a seal may extend them while the batch is received)."""

    __slots__ = ("_heads", "_own", "_store")

    def __init__(self, store: Store, own: str) -> None:
        self._store = store
        self._own = own
        self._heads: dict[tuple[str, str], tuple[int, bytes]] = {}

    def chain_head(self, space: str, author: str) -> tuple[int, bytes]:
        if author == self._own:
            return self._store.chain_head(space, author)
        got = self._heads.get((space, author))
        if got is None:
            got = self._heads[(space, author)] = self._store.chain_head(space, author)
        return got

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None:
        return self._store.envelope_hash(space, author, seq)

    def stored(self, env: Envelope) -> None:
        """``env`` was stored: it is its chain's head now (chains grow by their next seq)."""
        self._store.insert_envelope(env)
        self._heads[(env.space, env.author)] = (env.seq, env.hash)

    def clear(self) -> None:
        self._heads.clear()


class Receiver:
    """Verifies received envelopes against the chain rules and applies them to the store,
    the loaded entities and the index.

    Args:
        client_id: this process's Yjs client id (stored with received parts: they are not
            another process's of this device, so refresh skips them).
    """

    def __init__(self, store: Store, cache: EntityCache, clock: HybridClock, sealer: Sealer,
                 client_id: int, members: Members) -> None:
        self._store = store
        #: the membership logs (membership envelopes are judged and added there)
        self._members = members
        self._cache = cache
        self._clock = clock
        self._sealer = sealer
        self._client_id = client_id
        #: the authors set aside (the device's quarantine; see crdt_sync.quarantine)
        self.quarantine = Quarantine(store.db, store.write)
        #: fork proofs and exclusions (a fork is recorded in the quarantine too)
        self._forks = ForkGuard(store, self.quarantine, members.decode)
        #: the fork quarantines the current receive started (told to the peer like others)
        self._forked: list[QuarantineRecord] = []
        #: the chain heads of the current batch, and the spaces it stored envelopes in (each
        #: joined once, at the batch's end)
        self._heads = _Heads(store, sealer.device_id)
        self._joins: set[str] = set()

    def receive(self, envelopes: list[bytes], source: str, space: str | None = None,
                tolerate_gaps: bool = False) -> tuple[ReceiveResult, set[EntityKey]]:
        """Verify and apply received envelopes, all or nothing.

        With ``tolerate_gaps`` (sync sessions over lossy links), an envelope whose
        predecessor is missing is skipped rather than rejected: the sender resends it.
        Envelopes of an author quarantined in their space are skipped too (counted as gaps).

        Returns what was done, and the entities it changed. The caller seals its own
        pending edits first, and notifies observers.

        Raises:
            Rejected: the first envelope that fails verification; nothing was applied and
                the rejection is recorded.
        """
        touched: set[EntityKey] = set()
        self._forks.begin()
        self._forked = []
        try:
            with self._store.write():
                applied, dups, gaps, skipped = self._receive_locked(
                    envelopes, space, touched, tolerate_gaps, self._skips(space), source)
        except Rejected as rejected:
            self._rolled_back(touched)
            self._store.record_rejection(source, rejected)
            raise
        return ReceiveResult(applied, dups, gaps + skipped), touched

    def _rolled_back(self, touched: set[EntityKey]) -> None:
        """A store transaction was undone: unload what it changed, forget the logs it fed."""
        for key in touched:
            self._cache.drop(key)
        self._members.forget()

    def accept(self, envelopes: list[bytes], source: str,
               space: str | None = None) -> tuple[Accepted, set[EntityKey]]:
        """Verify and apply received envelopes per author (see the module docstring); gaps
        are tolerated (a session's sender resends).

        Returns what was done (with the quarantines it started) and the entities it changed.

        Raises:
            Rejected: an envelope that does not verify (its author cannot be known);
                nothing was applied and the rejection is recorded.
        """
        self._forks.begin()
        self._forked = []
        skips = self._skips(space)
        touched: set[EntityKey] = set()
        try:
            with self._store.write():  # the fast path: the whole batch in one go
                applied, dups, gaps, skipped = self._receive_locked(envelopes, space, touched, True, skips,
                                                                    source)
            return Accepted(applied, dups, gaps, skipped, tuple(self._forked)), touched
        except (_Refused, _Unreadable):
            self._rolled_back(touched)
        except Rejected as rejected:
            self._rolled_back(touched)
            self._store.record_rejection(source, rejected)
            raise
        # Something in the batch is refused: again, one envelope at a time.
        self._forks.begin()  # (fork points the rolled-back batch cached are gone)
        self._forked = []
        return self._accept_each(envelopes, source, space, skips)

    def _skips(self, space: str | None) -> dict[str, dict[str, SetAside]]:
        """The authors set aside per space, for the space of the batch (None: any space;
        then asked per space as envelopes name them)."""
        return {} if space is None else {space: self.quarantine.authors(space)}

    def _skipped(self, env: Envelope, skips: dict[str, dict[str, SetAside]]) -> bool:
        authors = skips.get(env.space)
        if authors is None:
            authors = skips[env.space] = self.quarantine.authors(env.space)
        if not authors:
            return False  # (env.author is computed: skip it if none)
        held = authors.get(env.author)
        return held is not None and env.seq >= held.from_seq

    def _accept_each(self, envelopes: list[bytes], source: str, space: str | None,
                     skips: dict[str, dict[str, SetAside]]) -> tuple[Accepted, set[EntityKey]]:
        touched: set[EntityKey] = set()
        applied = dups = gaps = skipped = 0
        started = self._forked  # forks proven on the way are added as they come
        refusals: list[Rejected] = []
        try:
            with self._store.write():
                for wire in envelopes:
                    mine: set[EntityKey] = set()
                    try:
                        with self._store.savepoint():
                            a, d, g, k = self._receive_locked([wire], space, mine, True, skips, source)
                    except (_Refused, _Unreadable) as refused:
                        self._rolled_back(mine)
                        env = refused.env if isinstance(refused, _Refused) else open_envelope(wire)
                        record = self.quarantine.quarantine(QuarantineRecord.of(env, refused))
                        skips.setdefault(env.space, {})[env.author] = SetAside(
                            record.from_seq, record.reason, record.detail)
                        started.append(record)
                        refusals.append(refused)
                        continue
                    touched |= mine
                    applied, dups, gaps, skipped = applied + a, dups + d, gaps + g, skipped + k
        except Rejected as rejected:  # one that does not verify: the batch is refused
            self._rolled_back(touched)
            self._store.record_rejection(source, rejected)
            raise
        for refusal in refusals:
            self._store.record_rejection(source, refusal)
        return Accepted(applied, dups, gaps, skipped, tuple(started)), touched

    def _receive_locked(self, envelopes: list[bytes], space: str | None, touched: set[EntityKey],
                        tolerate_gaps: bool, skips: dict[str, dict[str, SetAside]],
                        source: str = "") -> tuple[int, int, int, int]:
        self._heads = _Heads(self._store, self._sealer.device_id)
        self._joins = joins = set[str]()
        self._cache.hold(touched)  # (not loaded again to be indexed at the end)
        try:
            return self._receive_held(envelopes, space, touched, tolerate_gaps, skips, source, joins)
        finally:
            self._cache.hold(None)

    def _receive_held(self, envelopes: list[bytes], space: str | None, touched: set[EntityKey],
                      tolerate_gaps: bool, skips: dict[str, dict[str, SetAside]], source: str,
                      joins: set[str]) -> tuple[int, int, int, int]:
        applied = dups = gaps = skipped = 0
        times: list[int] = []
        rebuild: set[EntityKey] = set()
        for wire in envelopes:
            env = open_envelope(wire)
            if self._forks.excluded(env):  # its author forked before this seq: neither branch is kept
                chain.check_space(env, space).accept()
                continue
            if self._skipped(env, skips):
                skipped += 1
                continue
            try:
                outcome = self._apply(env, space, touched, tolerate_gaps, times, rebuild, source)
            except _Refused:
                raise
            except _Unauthorized as refused:  # nothing of it was stored: set aside, carry on
                record = self.quarantine.quarantine(QuarantineRecord.of(env, refused))
                skips.setdefault(env.space, {})[env.author] = SetAside(record.from_seq, record.reason,
                                                                       record.detail)
                self._forked.append(record)
                self._store.record_rejection(source, refused)
                skipped += 1
                continue
            except Rejected as rejected:
                raise _Refused(env, rejected) from None
            if outcome is Outcome.NEW and payload_kind(env.payload) == MEMBERSHIP_PAYLOAD:
                self._cut_revoked(env.space, rebuild, skips)
                self._reconsider(env.space, touched, times, rebuild, source, skips)
                self._heads.clear()  # (a cut, or a reconsidered envelope rolled back)
            dups += outcome is Outcome.DUPLICATE
            gaps += outcome is Outcome.GAP
            applied += outcome is Outcome.NEW
        for joined in sorted(joins):  # (what stored an envelope there joined it)
            self._store.join(joined)
        for key in rebuild:  # loaded with the excluded updates: load again without them
            self._cache.drop(key)
        touched |= rebuild
        for key in sorted(touched):
            # Only the excluded envelopes wrote it: gone. (Asked of its parts, not of its index
            # row: the exclusion removed the row, and a later envelope of this batch that wrote
            # the entity again has stored a part but not re-indexed it yet.)
            if key in rebuild and self._store.forget_if_empty(key):
                continue
            try:  # loads uncached entities: a bad update is refused here too
                # Keep it loaded (LRU): the next frame for it, in a long catch-up, then applies
                # its few new updates instead of replaying the entity's whole history again.
                self._cache.get(key)
                self._sealer.index(key, readable=True)
            except Rejected as rejected:
                raise _Unreadable(rejected.reason, rejected.detail) from None
            except Exception as exc:  # trust boundary: signed updates that break the entity
                raise _Unreadable("bad-payload", f"{key} is unreadable after the update: {exc}") from None
        for hlc in times:  # only once all of it was accepted
            self._clock.observe(hlc)
        return applied, dups, gaps, skipped

    def _apply(self, env: Envelope, space: str | None, touched: set[EntityKey], tolerate_gaps: bool,
               times: list[int], rebuild: set[EntityKey], source: str) -> Outcome | None:
        """Check one verified envelope and, when new, store and apply it. None: it proved a
        fork with a stored envelope (both branches are excluded; ``rebuild`` gets the entities)."""
        chain.check_space(env, space).accept()
        clocks.check_envelope(env)
        verdict = chain.check(env, self._heads, tolerate_gaps)
        if verdict.fault is Fault.FORK and self._below_base(env):
            return Outcome.DUPLICATE  # a snapshot covers it (crdt_sync.bootstrap)
        if verdict.fault is Fault.FORK:  # proven: both branches go (crdt_sync.fork_guard)
            excluded = self._forks.conflict(env, source)
            self._heads.clear()
            self._unload(excluded)
            rebuild |= excluded
            self._members.forget(env.space)  # the forked author's records stop counting
            self._store.record_rejection(source, verdict.error())
            record = self.quarantine.is_quarantined(env.space, env.author)
            if record is not None and record.reason == FORK:
                self._forked.append(record)
            return None
        status = verdict.accept()
        if status is not Outcome.NEW:
            return status
        if payload_kind(env.payload) == MEMBERSHIP_PAYLOAD:
            judged = self._members.judge(env)  # Rejected: the author is quarantined
            if not judged.store:
                return Outcome.GAP  # a proof on its way: skipped like a gap, judged when sent again
            self._heads.stored(env)
            if self._members.stored(env, judged.records or []):
                self._release_held(env.space, touched, times)
            times.append(env.hlc)
            self._joins.add(env.space)
            return Outcome.NEW
        try:
            entities = self._members.decode(env)
        except Rejected as rejected:
            if rejected.reason != "no-key":
                raise
            # Its epoch's key has not arrived (the keys record may follow, in this batch or
            # later): stored, so the chain goes on, and applied once the key is here.
            self._heads.stored(env)
            self._store.hold(env)
            times.append(env.hlc)
            self._joins.add(env.space)
            return Outcome.NEW
        allowed = self._members.authorize(env.space, env.author_key, env.seq, env.hlc,
                                          (coll for coll, *_ in entities))
        if not allowed.ok:
            # Refused with the reason: the author is quarantined from this seq (a session is
            # told so and does not wait for it). not-a-member, read-only, expired and
            # out-of-scope are looked at again when a membership record arrives (a grant on
            # its way may make it valid: _reconsider); revoked cuts the chain for good.
            raise _Unauthorized(allowed.reason, allowed.detail)
        clocks.check_items(env, (h for *_, items in entities for h, _ in items))
        self._heads.stored(env)
        self._apply_entities(env, entities, touched)
        times.append(env.hlc)  # (every item's clock is at most the envelope's)
        self._joins.add(env.space)
        return Outcome.NEW

    def _below_base(self, env: Envelope) -> bool:
        """``env`` is at or below the chain base a snapshot left for its author, and this
        device does not hold that seq: the snapshot covers it (a duplicate, not a fork; a
        device that started from a snapshot cannot compare what lies below it)."""
        base = self._store.chain_base(env.space, env.author)
        return (base is not None and env.seq <= base[0]
                and self._store.envelope_hash(env.space, env.author, env.seq) is None)

    def _cut_revoked(self, space: str, rebuild: set[EntityKey],
                     skips: dict[str, dict[str, SetAside]]) -> None:
        """A membership record was stored in ``space``: a revoked author whose chain this
        device holds beyond the cut has those envelopes set aside (removed, their entities
        rebuilt without them, the author quarantined as ``revoked`` from ``cut + 1``), as
        docs/DESIGN.md, "The removal race", says: every device then holds the same updates."""
        for author, cut in self._members.overrun_cuts(space).items():
            wire = self._store.envelope_wire(space, author, cut + 1)
            first = None if wire is None else decode_trusted(wire)
            cut_keys = self._forks.set_aside(
                space, author, cut + 1, REVOKED, f"{author} was revoked after seq {cut}: its "
                f"envelopes from seq {cut + 1} on are dropped", b"" if first is None else first.hash,
                b"" if first is None else first.wire)
            self._unload(cut_keys)
            rebuild |= cut_keys
            record = self.quarantine.is_quarantined(space, author)
            if record is not None:
                self._forked.append(record)
                skips.setdefault(space, {})[author] = SetAside(record.from_seq, record.reason, record.detail)

    def _unload(self, keys: set[EntityKey]) -> None:
        """Entities an exclusion took parts out of: unloaded at once, so that the later
        envelopes of the batch apply to them as rebuilt, not to the copy still holding the
        excluded updates (what a device holds must not depend on where in a batch the
        exclusion came)."""
        for key in keys:
            self._cache.drop(key)

    def _reconsider(self, space: str, touched: set[EntityKey], times: list[int], rebuild: set[EntityKey],
                    source: str, skips: dict[str, dict[str, SetAside]]) -> None:
        """A membership record was stored in ``space``: the data envelopes refused there for
        want of rights (:data:`RECONSIDERED`) are judged again. One now allowed is applied
        and its author's quarantine lifted (its later seqs then come as the sender resends
        them); one still refused is quarantined again, as it was."""
        for record in self.quarantine.list(space):
            if record.reason not in RECONSIDERED or payload_kind(open_envelope(record.wire).payload) \
                    == MEMBERSHIP_PAYLOAD:
                continue
            self.quarantine.lift(space, record.author)
            skips.get(space, {}).pop(record.author, None)
            env = open_envelope(record.wire)
            mine: set[EntityKey] = set()
            try:
                with self._store.savepoint():
                    self._apply(env, space, mine, True, times, rebuild, source)
            except Rejected as rejected:
                for key in mine:
                    self._cache.drop(key)
                again = self.quarantine.quarantine(QuarantineRecord.of(env, rejected, since=record.since))
                skips.setdefault(space, {})[record.author] = SetAside(again.from_seq, again.reason,
                                                                      again.detail)
                continue
            touched |= mine

    def _release_held(self, space: str, touched: set[EntityKey], times: list[int]) -> None:
        """Keys arrived for ``space``: apply the stored envelopes that waited for them. One
        that still does not read is set aside (its author quarantined from there), as it
        would have been on arrival."""
        for wire in self._store.held_wires(space):
            env = decode_trusted(wire)
            try:
                entities = self._members.decode(env)
            except Rejected as rejected:
                if rejected.reason == "no-key":
                    continue  # (another epoch, still missing)
                self._set_held_aside(env, rejected)
                continue
            verdict = self._members.authorize(env.space, env.author_key, env.seq, env.hlc,
                                              (coll for coll, *_ in entities))
            if not verdict.ok:
                self._set_held_aside(env, Rejected(verdict.reason, verdict.detail))
                continue
            mine: set[EntityKey] = set()
            try:
                with self._store.savepoint():
                    clocks.check_items(env, (h for *_, items in entities for h, _ in items))
                    self._apply_entities(env, entities, mine)
            except Rejected as rejected:
                for key in mine:
                    self._cache.drop(key)
                self._set_held_aside(env, rejected)
                continue
            self._store.release(env)
            touched |= mine

    def _set_held_aside(self, env: Envelope, rejected: Rejected) -> None:
        self._store.release(env)
        record = self.quarantine.quarantine(QuarantineRecord.of(env, rejected))
        self._forked.append(record)

    def _apply_entities(self, env: Envelope, entities: Entities, touched: set[EntityKey]) -> None:
        """Store and apply the entity updates of ``env`` (stored already)."""
        for coll, ent_id, blob, items in entities:
            key = (env.space, coll, ent_id)
            touched.add(key)
            # Loaded before its part is stored, so that each update is applied here and the
            # registers it writes are checked against this envelope's clock.
            ent = self._cache.get(key)
            self._store.insert_part(key, env.author, self._client_id, blob)
            for _hlc, update in items:
                try:
                    written = ent.apply_remote(update)
                except ValueError as exc:
                    raise Rejected("bad-payload", f"{env.author} seq {env.seq}: {exc}") from None
                clocks.check_registers(env, written)


    def receive_proof(self, data: bytes, source: str,
                      space: str | None = None) -> tuple[bool, set[EntityKey]]:
        """Verify and keep a fork proof; its author is set aside and the entities its
        excluded envelopes touched are rebuilt. Returns whether it was new, and those entities.

        Raises:
            Rejected: the proof does not verify; it is recorded and nothing changed.
        """
        try:
            with self._store.write():
                self._forks.begin()
                proof, new, rebuild = self._forks.receive_proof(data, source, space)
                self._members.forget(proof.space)
                for key in rebuild:
                    self._cache.drop(key)
                    if self._store.entity_state(key) is not None:  # else only they wrote it
                        self._cache.get(key)
                        self._sealer.index(key)
        except Rejected as rejected:
            self._store.record_rejection(source, rejected)
            raise
        return new, rebuild
