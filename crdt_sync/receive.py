"""Receiving: verify envelopes from other devices and apply them, all or nothing."""

from __future__ import annotations

from . import chain
from .cache import EntityCache
from .chain import Fault, Outcome
from .envelope import Envelope, open_envelope
from .errors import Rejected
from .fork_guard import ForkGuard
from .hlc import HybridClock
from .payload import decode_payload
from .results import ReceiveResult
from .sealing import Sealer
from .store import EntityKey, Store

#: Received times (HLCs) at or beyond this are refused. Every local time must exceed every
#: time seen and SQLite integers end at 2**63 - 1, so a peer's clock (hostile or broken)
#: near that end would make every later local write fail. 2**62 is the year 4199.
MAX_HLC = 1 << 62


class Receiver:
    """Verifies received envelopes against the chain rules and applies them to the store,
    the loaded entities and the index.

    Args:
        client_id: this process's Yjs client id (stored with received parts: they are not
            another process's of this device, so refresh skips them).
    """

    def __init__(self, store: Store, cache: EntityCache, clock: HybridClock, sealer: Sealer,
                 client_id: int) -> None:
        self._store = store
        self._cache = cache
        self._clock = clock
        self._sealer = sealer
        self._client_id = client_id
        self._forks = ForkGuard(store)

    def receive(self, envelopes: list[bytes], source: str, space: str | None = None,
                tolerate_gaps: bool = False) -> tuple[ReceiveResult, set[EntityKey]]:
        """Verify and apply received envelopes, all or nothing.

        With ``tolerate_gaps`` (sync sessions over lossy links), an envelope whose
        predecessor is missing is skipped rather than rejected: the sender resends it.

        Returns what was done, and the entities it changed. The caller seals its own
        pending edits first, and notifies observers.

        Raises:
            Rejected: the first envelope that fails verification; nothing was applied and
                the rejection is recorded.
        """
        touched: set[EntityKey] = set()
        self._forks.begin()
        try:
            with self._store.write():
                applied, dups, gaps = self._receive_locked(envelopes, space, touched, tolerate_gaps,
                                                           source)
        except Rejected as rejected:
            for key in touched:
                self._cache.drop(key)
            self._store.record_rejection(source, rejected)
            raise
        return ReceiveResult(applied, dups, gaps), touched

    def _receive_locked(self, envelopes: list[bytes], space: str | None, touched: set[EntityKey],
                        tolerate_gaps: bool, source: str = "") -> tuple[int, int, int]:
        applied = dups = gaps = 0
        rebuild: set[EntityKey] = set()
        for wire in envelopes:
            env = open_envelope(wire)
            chain.check_space(env, space).accept()
            if self._forks.excluded(env):
                continue  # its author forked before this seq: neither branch is kept
            verdict = chain.check(env, self._store, tolerate_gaps)
            if verdict.fault is Fault.FORK:  # proven: both branches go (crdt_sync.fork_guard)
                rebuild |= self._forks.conflict(env, source)
                self._store.record_rejection(source, verdict.error())
                continue
            status = verdict.accept()
            if status is not Outcome.NEW:
                dups += status is Outcome.DUPLICATE
                gaps += status is Outcome.GAP
                continue
            entities = _decode_payload(env)
            if max([env.hlc, *(h for *_, items in entities for h, _ in items)]) >= MAX_HLC:
                raise Rejected("malformed", f"{env.author} seq {env.seq}: a time beyond the clock's range")
            self._store.insert_envelope(env)
            for coll, ent_id, blob, items in entities:
                key = (env.space, coll, ent_id)
                self._store.insert_part(key, env.author, self._client_id, blob)
                touched.add(key)
                cached = self._cache.peek(key)
                for hlc, update in items:
                    self._clock.observe(hlc)
                    if cached is not None:
                        try:
                            cached.apply(update)
                        except ValueError as exc:
                            raise Rejected("bad-payload", f"{env.author} seq {env.seq}: {exc}") from None
            self._clock.observe(env.hlc)
            self._store.join(env.space)
            applied += 1
        for key in rebuild:  # loaded with the excluded updates: load again without them
            self._cache.drop(key)
        touched |= rebuild
        for key in sorted(touched):
            if key in rebuild and self._store.entity_state(key) is None:
                continue  # only the excluded envelopes wrote it: gone
            try:  # loads uncached entities: a bad update is refused here too
                # Keep it loaded (LRU): the next frame for it, in a long catch-up, then applies
                # its few new updates instead of replaying the entity's whole history again.
                self._cache.get(key)
                self._sealer.index(key, readable=True)
            except Rejected:
                raise
            except Exception as exc:  # trust boundary: signed updates that break the entity
                raise Rejected("bad-payload", f"{key} is unreadable after the update: {exc}") from None
        return applied, dups, gaps


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
                _proof, new, rebuild = self._forks.receive_proof(data, source, space)
                for key in rebuild:
                    self._cache.drop(key)
                    if self._store.entity_state(key) is not None:  # else only they wrote it
                        self._cache.get(key)
                        self._sealer.index(key)
        except Rejected as rejected:
            self._store.record_rejection(source, rejected)
            raise
        return new, rebuild


def _decode_payload(env: Envelope) -> list[tuple[str, str, bytes, list[tuple[int, bytes]]]]:
    try:
        return decode_payload(env.payload)
    except Exception as exc:  # trust boundary: a signed but malformed payload
        raise Rejected("bad-payload", f"{env.author} seq {env.seq}: payload is malformed: {exc}") from None
