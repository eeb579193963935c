"""One session's view of the relay: :class:`RelayHost`, the
:class:`~crdt_sync.protocol.SyncHost` a relay session runs against, over the shared
:class:`~crdt_sync.relay.storage.RelayStore` and the server's limits."""

from __future__ import annotations

from collections.abc import Callable

from crdt_sync.errors import Rejected
from crdt_sync.hlc import DEFAULT_MAX_SKEW_MS
from crdt_sync.protocol.messages import E_LIMIT, ProtocolViolation
from crdt_sync.quarantine import QuarantineBook, SetAside
from crdt_sync.results import Accepted

from .storage import RelayStore


class RelayHost:
    """One session's view of the relay (a :class:`~crdt_sync.protocol.SyncHost`)."""

    keeps_all_spaces = True

    def __init__(self, relay: RelayStore, admit: Callable[[str], str | None],
                 limit: Callable[[str, int, int], str | None],
                 check: Callable[[str], str | None] | None = None,
                 stored: Callable[[str, int], None] | None = None) -> None:
        """``admit(device)``, and ``limit(device, envelopes, bytes)`` and ``check(space)``
        before a frame's envelopes are stored, return a refusal or None; ``stored(space,
        applied)`` is told what was stored of each frame (the relay's pacing)."""
        self.relay = relay
        self.identity = relay.identity
        self.device_id = relay.identity.id
        self.peer: str | None = None
        self._admit = admit
        self._limit = limit
        #: how far ahead of the relay's clock an envelope may be stamped (the session holds
        #: back what is further ahead: docs/PROTOCOL.md, "Clocks"); the server sets it
        self.max_clock_skew_ms = DEFAULT_MAX_SKEW_MS
        self._check = check
        self._stored = stored
        self.version_vector = relay.version_vector
        self.missing_envelopes = relay.missing_envelopes
        self.outgoing = relay.outgoing
        self.envelope_hash = relay.envelope_hash
        self.fork_proofs = relay.fork_proofs
        self.fork_count = relay.fork_count
        self.envelope_wire = relay.envelope_wire
        self.quarantine: QuarantineBook = relay.quarantine

    def admit(self, peer: str) -> str | None:
        self.peer = peer
        return self._admit(peer)

    def sync_spaces(self) -> list[str]:
        return []  # a relay takes the spaces each device names

    def _admit_frame(self, envelopes: list[bytes], space: str | None) -> None:
        """The relay's limits on one frame of envelopes, before any of it is stored."""
        refused = self._limit(self.peer or "?", len(envelopes), sum(map(len, envelopes)))
        if refused is None and self._check is not None:
            refused = self._check(space or "")
        if refused is not None:
            raise ProtocolViolation(E_LIMIT, refused)

    def receive(self, envelopes: list[bytes], source: str, space: str | None = None,
                tolerate_gaps: bool = False) -> tuple[int, int, int]:
        self._admit_frame(envelopes, space)
        try:
            result = self.relay.receive(envelopes, space, tolerate_gaps, source)
        except Rejected as rejected:
            self.relay.record_rejection(source, rejected)
            raise
        if self._stored is not None:
            self._stored(space or "", result[0])
        return result

    def accept(self, envelopes: list[bytes], source: str, space: str) -> Accepted:
        self._admit_frame(envelopes, space)
        try:
            got = self.relay.accept(envelopes, space, source)
        except Rejected as rejected:
            self.relay.record_rejection(source, rejected)
            raise
        for q in got.quarantined:
            self.relay.record_rejection(source, Rejected(q.reason, q.detail))
        if self._stored is not None:
            self._stored(space, got.applied)
        return got

    def quarantined(self, space: str) -> dict[str, SetAside]:
        return self.relay.quarantine.authors(space)  # read only: the session looks authors up

    def peer_refused(self, peer: str, space: str, author: str, from_seq: int, reason: str,
                     detail: str) -> None:
        """Not kept: a device's refusal stops this session sending it that chain (the
        session's own state); the relay does not take one device's word to stop serving an
        author to the others. The server logs it (the session's Quarantined event)."""

    def receive_fork_proof(self, proof: bytes, source: str, space: str | None = None) -> bool:
        """A peer's fork proof, under the same budget as its envelopes (two of them)."""
        refused = self._limit(self.peer or "?", 2, len(proof))
        if refused is not None:
            raise ProtocolViolation(E_LIMIT, refused)
        return self.relay.receive_fork_proof(proof, source, space)

    def record_ack(self, peer: str, space: str, vv: dict[str, int]) -> None:
        """Not kept (see RelayStore.record_ack)."""


__all__ = ["RelayHost"]
