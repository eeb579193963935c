"""The loaded entities of a replica: an LRU cache over the store."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Container, Iterator
from typing import Any

from .entity import EntityDoc
from .errors import Rejected
from .hlc import HybridClock
from .payload import unpack_items
from .store import EntityKey, Store

#: How many evicted entities a receive keeps aside, per entity the cache holds
#: (:meth:`EntityCache.hold`).
HELD_PER_SLOT = 4


class EntityCache:
    """Loads entities from the store on demand and keeps the most recently used ones.

    Args:
        store: where entities are loaded from.
        client_id: the Yjs client id of this process's writes.
        clock: told every register time a loaded entity holds (so later local times exceed them).
        on_update: each loaded entity's observer (:meth:`crdt_sync.writes.LocalWrites.on_update`).
        journal_key: the journal's key for an entity (:meth:`crdt_sync.journal.Journal.record_key`).
        size: entities kept loaded; more may stay while pinned (see :meth:`evict`).
    """

    def __init__(self, store: Store, client_id: int, clock: HybridClock,
                 on_update: Callable[[EntityDoc, Any], None],
                 journal_key: Callable[[EntityKey], Any], size: int) -> None:
        self._store = store
        self._client_id = client_id
        self._clock = clock
        self._on_update = on_update
        self._journal_key = journal_key
        self.size = size
        self._docs: OrderedDict[EntityKey, EntityDoc] = OrderedDict()
        #: called before an entity is loaded into the cache (the write path makes room)
        self.before_load: Callable[[], None] | None = None
        #: the entities a receive is applying (the set it fills as it goes, see :meth:`hold`)
        self._held: set[EntityKey] | None = None
        #: those of them evicted meanwhile, still open: :meth:`get` takes them back
        self._parked: dict[EntityKey, EntityDoc] = {}

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, key: object) -> bool:
        return key in self._docs

    def __iter__(self) -> Iterator[EntityKey]:
        return iter(list(self._docs))

    @property
    def over(self) -> bool:
        """Whether more entities are loaded than the cache holds."""
        return len(self._docs) > self.size

    def peek(self, key: EntityKey) -> EntityDoc | None:
        """The entity if it is loaded (its place in the LRU order unchanged)."""
        return self._docs.get(key)

    def get(self, key: EntityKey) -> EntityDoc:
        """The entity, loaded if needed, now the most recently used.

        Raises:
            Rejected: its stored updates do not decode.
        """
        docs = self._docs
        ent = docs.get(key)
        if ent is not None:
            docs.move_to_end(key)
            return ent
        parked = self._parked.pop(key, None) if self._parked else None
        if self.before_load is not None:
            self.before_load()
        ent = self.load(key) if parked is None else parked
        docs[key] = ent
        return ent

    def load(self, key: EntityKey) -> EntityDoc:
        """A new copy of the entity from the store, not cached (the caller closes it)."""
        ent = EntityDoc(key, self._client_id, self._on_update, self._journal_key(key))
        snapshot, parts = self._store.load_entity(key)
        try:
            if snapshot is not None:
                ent.apply(snapshot)
            for data in parts:
                for _hlc, update in unpack_items(data):
                    ent.apply(update)
        except ValueError as exc:
            ent.close()
            raise Rejected("bad-payload", f"stored updates of {key} do not decode: {exc}") from None
        for entries in ent.registers().values():
            self._clock.observe(entries[0].hlc)
        return ent

    def drop(self, key: EntityKey) -> None:
        """Unload ``key`` (it reloads from the store when next used)."""
        ent = self._docs.pop(key, None)
        if ent is not None:
            ent.close()
        ent = self._parked.pop(key, None)
        if ent is not None:
            ent.close()

    def hold(self, keys: set[EntityKey] | None) -> None:
        """While a receive applies envelopes, ``keys`` (the set it fills as it goes) that
        are evicted stay open aside, and :meth:`get` takes them back instead of loading them
        from the store again: its last step reads and indexes each entity it touched, and a
        batch may touch more of them than the cache holds. At most :data:`HELD_PER_SLOT`
        times :attr:`size` are kept aside (a larger receive, a bundle, loads them again).
        None: the receive ended (rolled back or not); what was kept aside is closed."""
        self._held = keys
        if keys is None:
            for ent in self._parked.values():
                ent.close()
            self._parked.clear()

    def evict(self, limit: int, pinned: Container[EntityKey]) -> bool:
        """Unload least recently used entities down to ``limit``, keeping those with
        unsealed edits (their updates are not in the store yet) and those ``pinned``.

        Returns whether the cache is still over ``limit`` (everything left is pinned).
        """
        docs = self._docs
        over = len(docs) - limit
        victims: list[EntityKey] = []
        for key, ent in docs.items():  # (oldest first; not a copy of all the keys per load)
            if len(victims) >= over:
                break
            if not (ent.unsealed or key in pinned):
                victims.append(key)
        held, parked = self._held, self._parked
        for key in victims:
            ent = docs.pop(key)
            if held is not None and key in held and len(parked) < HELD_PER_SLOT * self.size:
                parked[key] = ent
            else:
                ent.close()
        return len(docs) > limit

    def close(self) -> None:
        self.hold(None)
        for ent in self._docs.values():
            ent.close()
        self._docs.clear()
