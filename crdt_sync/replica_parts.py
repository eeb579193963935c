"""What the mixins of :class:`~crdt_sync.replica.Replica` (``replica_members``,
``replica_bundles``) may use of it: its parts and the few methods they call, declared once
for the type checker. Nothing here exists at run time but the class: ``Replica`` holds the
attributes and defines the methods."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .bootstrap import Bootstrap
    from .hlc import HybridClock
    from .identity import Identity
    from .members import Members
    from .results import Accepted, ReceiveResult
    from .secrets import Secrets
    from .spaces import SpaceBook
    from .store import EntityKey, Store


class ReplicaParts:
    """The replica's parts as its mixins see them (see the module)."""

    identity: Identity
    device_id: str
    _book: SpaceBook
    _store: Store
    _members: Members
    _secrets: Secrets
    _clock: HybridClock
    _bootstrap: Bootstrap
    _skew_ms: int

    if TYPE_CHECKING:
        def _check_open(self) -> None: ...

        def seal(self) -> None: ...

        def refresh(self) -> None: ...

        def spaces(self, seal: bool = False) -> list[str]: ...

        def _write_label(self, space: str, name: str) -> None: ...

        def _received(self, touched: set[EntityKey]) -> None: ...

        def receive(self, envelopes: list[bytes], source: str, space: str | None = None,
                    tolerate_gaps: bool = False) -> ReceiveResult: ...

        def accept(self, envelopes: list[bytes], source: str, space: str | None = None) -> Accepted: ...

        def receive_fork_proof(self, proof: bytes, source: str, space: str | None = None) -> bool: ...
