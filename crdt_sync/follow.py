"""Other processes on the same data directory: pick up what they committed."""

from __future__ import annotations

from .cache import EntityCache
from .hlc import HybridClock
from .payload import unpack_items
from .store import EntityKey, Store


class StoreFollower:
    """Applies the entity parts other processes committed to the loaded entities.

    It owns the cursor: the last stored part this process has seen.
    """

    def __init__(self, store: Store, cache: EntityCache, clock: HybridClock, client_id: int) -> None:
        self._store = store
        self._cache = cache
        self._clock = clock
        self._client_id = client_id
        self._cursor = store.max_part()

    def catch_up(self) -> set[EntityKey]:
        """Apply every part stored after the cursor by another process; returns the entities
        changed. Cheap to call when nothing changed only after ``store.changed_elsewhere()``."""
        changed: set[EntityKey] = set()
        for part_id, key, client, data in self._store.parts_after(self._cursor):
            self._cursor = part_id
            if client == self._client_id:
                continue
            changed.add(key)
            ent = self._cache.peek(key)
            if ent is not None:
                for hlc, update in unpack_items(data):
                    self._clock.observe(hlc)
                    ent.apply(update)
        return changed
