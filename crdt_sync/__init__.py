"""crdt-sync: an offline-first, peer-to-peer sync engine for field teams.

The public surface::

    from crdt_sync import Replica

    with Replica("/var/lib/myapp/crdt") as replica:
        site = replica.space("site-42")   # a local name; site.id is the space's id
        with site.transaction() as tx:
            pump = tx.entity("equipment", "pump-7")
            pump.set("status", "ok")
            pump.text("notes").append("bearing replaced")
        print(site.get("equipment", "pump-7"))
"""

from .errors import (
    AmbiguousSpace,
    CrdtSyncError,
    DiskFull,
    NotFound,
    PassphraseError,
    Rejected,
    StoreCorrupt,
    StoreError,
    StoreVersionError,
    ValueRejected,
)
from .replica import Replica
from .results import (
    Accepted,
    Change,
    ClockRefusal,
    Conflict,
    FieldWrite,
    HistoryEntry,
    ImportResult,
    JournalDamage,
    ReceiveResult,
    Rejection,
    SpaceInfo,
    Status,
)
from .space import EntityWriter, ListField, Space, SpaceTransaction, TextField

__all__ = [
    "Accepted", "AmbiguousSpace", "Change", "ClockRefusal", "Conflict", "CrdtSyncError", "DiskFull",
    "EntityWriter", "SpaceInfo",
    "FieldWrite", "HistoryEntry", "ImportResult", "JournalDamage", "ListField", "NotFound",
    "PassphraseError", "ReceiveResult", "Rejected", "Rejection", "Replica", "Space", "SpaceTransaction",
    "Status", "StoreCorrupt", "StoreError", "StoreVersionError", "TextField", "ValueRejected",
]
__version__ = "0.1.0"
