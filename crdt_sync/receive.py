"""Receiving: verify envelopes from other devices and apply them, all or nothing."""

from __future__ import annotations

from . import chain, clocks
from .cache import EntityCache
from .chain import Outcome
from .envelope import Envelope, open_envelope
from .errors import Rejected
from .hlc import HybridClock
from .payload import decode_payload
from .results import ReceiveResult
from .sealing import Sealer
from .store import EntityKey, Store


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
        try:
            with self._store.write():
                applied, dups, gaps = self._receive_locked(envelopes, space, touched, tolerate_gaps)
        except Rejected as rejected:
            for key in touched:
                self._cache.drop(key)
            self._store.record_rejection(source, rejected)
            raise
        return ReceiveResult(applied, dups, gaps), touched

    def _receive_locked(self, envelopes: list[bytes], space: str | None, touched: set[EntityKey],
                        tolerate_gaps: bool) -> tuple[int, int, int]:
        applied = dups = gaps = 0
        for wire in envelopes:
            env = open_envelope(wire)
            chain.check_space(env, space).accept()
            clocks.check_envelope(env)
            status = self._store.check_chain(env, tolerate_gaps)  # chain.check on the store
            if status is not Outcome.NEW:
                dups += status is Outcome.DUPLICATE
                gaps += status is Outcome.GAP
                continue
            entities = _decode_payload(env)
            clocks.check_items(env, (h for *_, items in entities for h, _ in items))
            self._store.insert_envelope(env)
            for coll, ent_id, blob, items in entities:
                key = (env.space, coll, ent_id)
                touched.add(key)
                # Loaded before its part is stored, so that each update is applied here and
                # the registers it writes are checked against this envelope's clock.
                ent = self._cache.get(key)
                self._store.insert_part(key, env.author, self._client_id, blob)
                for _hlc, update in items:
                    try:
                        written = ent.apply_remote(update)
                    except ValueError as exc:
                        raise Rejected("bad-payload", f"{env.author} seq {env.seq}: {exc}") from None
                    clocks.check_registers(env, written)
            self._clock.observe(env.hlc)  # (every item's clock is at most the envelope's)
            self._store.join(env.space)
            applied += 1
        for key in sorted(touched):
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


def _decode_payload(env: Envelope) -> list[tuple[str, str, bytes, list[tuple[int, bytes]]]]:
    try:
        return decode_payload(env.payload)
    except Exception as exc:  # trust boundary: a signed but malformed payload
        raise Rejected("bad-payload", f"{env.author} seq {env.seq}: payload is malformed: {exc}") from None
