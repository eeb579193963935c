"""The replica as a sync session's host (:class:`crdt_sync.protocol.SyncHost`).

Sessions need a few things integrators do not call (what to send a peer, what a peer
acknowledged); they live on this adapter, not on :class:`crdt_sync.Replica`'s public surface.
Get it from :attr:`crdt_sync.Replica.sync_host`.
"""

from __future__ import annotations

from typing import Protocol

from .envelope import Envelope
from .identity import Identity
from .results import ReceiveResult
from .store import Store


class HostedReplica(Protocol):
    """What the adapter calls on the replica (:class:`crdt_sync.Replica` is one)."""

    identity: Identity
    device_id: str

    def spaces(self, seal: bool = False) -> list[str]: ...

    def version_vector(self, space: str) -> dict[str, int]: ...

    def seal(self) -> None: ...

    def refresh(self) -> None: ...

    def receive(self, envelopes: list[bytes], source: str, space: str | None = None,
                tolerate_gaps: bool = False) -> ReceiveResult: ...

    def receive_fork_proof(self, proof: bytes, source: str, space: str | None = None) -> bool: ...


class ReplicaHost:
    """What a sync session asks of a device's replica."""

    #: A relay keeps every space a device asks for; a device keeps only its own.
    keeps_all_spaces = False

    def __init__(self, replica: HostedReplica, store: Store) -> None:
        self._replica = replica
        self._store = store
        self.identity: Identity = replica.identity
        self.device_id: str = replica.device_id

    def admit(self, peer: str) -> str | None:
        """Devices sync with any authenticated peer (capabilities come later)."""
        return None

    def sync_spaces(self) -> list[str]:
        """The spaces this device keeps and syncs (after sealing pending edits)."""
        return self._replica.spaces(seal=True)

    def version_vector(self, space: str) -> dict[str, int]:
        return self._replica.version_vector(space)

    def missing_envelopes(self, space: str, covered: dict[str, int], max_count: int,
                          max_bytes: int) -> list[Envelope]:
        """Envelopes of ``space`` beyond ``covered``, in causal order, at most about ``max_bytes``."""
        self._replica.seal()
        self._replica.refresh()
        return self._store.missing_envelopes(space, covered, max_count, max_bytes)

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None:
        return self._store.envelope_hash(space, author, seq)

    def receive(self, envelopes: list[bytes], source: str, space: str | None = None,
                tolerate_gaps: bool = False) -> ReceiveResult:
        return self._replica.receive(envelopes, source, space, tolerate_gaps=tolerate_gaps)

    def fork_proofs(self, space: str) -> list[bytes]:
        """Fork proofs held for ``space`` (:class:`crdt_sync.protocol.forks.ForkHost`)."""
        return self._store.fork_proofs(space)

    def fork_count(self, space: str) -> int:
        return self._store.fork_count(space)

    def envelope_wire(self, space: str, author: str, seq: int) -> bytes | None:
        return self._store.envelope_wire(space, author, seq)

    def receive_fork_proof(self, proof: bytes, source: str, space: str | None = None) -> bool:
        return self._replica.receive_fork_proof(proof, source, space)

    def record_ack(self, peer: str, space: str, vv: dict[str, int]) -> None:
        """Remember what ``peer`` acknowledged of ``space`` (``status`` shows it)."""
        with self._store.write():
            self._store.record_peer(peer, space, vv)
