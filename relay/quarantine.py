"""The relay's quarantine API (:class:`RelayQuarantine`, a
:class:`crdt_sync.quarantine.QuarantineBook`) over the state
:class:`~crdt_sync.relay.storage.RelayStore` owns."""

from __future__ import annotations

from typing import Protocol

from crdt_sync.quarantine import QuarantineRecord, SetAside


class QuarantineStore(Protocol):
    """What :class:`RelayQuarantine` uses of the relay's store (``RelayStore``)."""

    def set_aside(self, record: QuarantineRecord) -> QuarantineRecord: ...

    def quarantine_record(self, space: str, author: str) -> QuarantineRecord | None: ...

    def quarantined_authors(self, space: str) -> dict[str, SetAside]: ...

    def quarantines(self, space: str | None = None) -> list[QuarantineRecord]: ...

    def lift(self, space: str, author: str) -> bool: ...


class RelayQuarantine:
    """The relay's quarantine (a :class:`crdt_sync.quarantine.QuarantineBook`): kept in
    memory with each space's heads, written with the group commit (a quarantine or lift is
    durable once :meth:`RelayStore.durable` says so); :meth:`list` reads what is committed."""

    def __init__(self, relay: QuarantineStore) -> None:
        self._relay = relay

    def quarantine(self, record: QuarantineRecord) -> QuarantineRecord:
        return self._relay.set_aside(record)

    def is_quarantined(self, space: str, author: str) -> QuarantineRecord | None:
        return self._relay.quarantine_record(space, author)

    def authors(self, space: str) -> dict[str, SetAside]:
        return self._relay.quarantined_authors(space)

    def list(self, space: str | None = None) -> list[QuarantineRecord]:
        return self._relay.quarantines(space)

    def lift(self, space: str, author: str) -> bool:
        return self._relay.lift(space, author)
