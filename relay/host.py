"""One session's view of the relay: :class:`RelayHost`, the
:class:`~crdt_sync.protocol.SyncHost` a relay session runs against, over the shared
:class:`~crdt_sync.relay.storage.RelayStore` and the server's limits.

It serves a space only to a device that may read it (``can_read`` of the space's membership
log, asked at each read, so a device that joins in the session is served from then on and
a revoked one gets nothing more). To any other device the space looks empty: its HAVE and
ACKs name only the chains it pushed itself (so that it sees them acknowledged), no
envelope of the space is sent to it, and of the fork proofs only those of those chains.
Relay peers (``ungated``) are served everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from crdt_sync.envelope import Envelope, decode_trusted
from crdt_sync.errors import Rejected
from crdt_sync.forks import proof_author
from crdt_sync.hlc import DEFAULT_MAX_SKEW_MS
from crdt_sync.identity import public_key_of
from crdt_sync.protocol.host import SnapshotOffer
from crdt_sync.protocol.messages import E_LIMIT, ProtocolViolation
from crdt_sync.quarantine import QuarantineBook, SetAside
from crdt_sync.results import Accepted
from crdt_sync.snapshot_transfer import MAX_TRANSFER_BYTES, encode_transfer

from .snapshot_store import KNOWN, covered_of
from .space_state import Outgoing
from .storage import RelayStore


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class RelayHost:
    """One session's view of the relay (a :class:`~crdt_sync.protocol.SyncHost`)."""

    keeps_all_spaces = True

    def __init__(self, relay: RelayStore, admit: Callable[[str], str | None],
                 limit: Callable[[str, int, int], str | None],
                 check: Callable[[str], str | None] | None = None,
                 stored: Callable[[str, int], None] | None = None,
                 ungated: Callable[[str], bool] | None = None,
                 clock: Callable[[], int] = _wall_ms) -> None:
        """``admit(device)``, and ``limit(device, envelopes, bytes)`` and ``check(space)``
        before a frame's envelopes are stored, return a refusal or None; ``stored(space,
        applied)`` is told what was stored of each frame (the relay's pacing);
        ``ungated(device)``: a relay peer, served every space; ``clock``: the wall clock
        (ms) that read rights are judged at."""
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
        self._ungated = ungated
        self._clock = clock
        self._open = False  # the peer is a relay peer: not gated
        self._peer_key = b""
        #: space -> the authors whose envelopes the peer sent (what a non-reader is shown)
        self._pushed: dict[str, set[str]] = {}
        self.envelope_hash = relay.envelope_hash
        self.fork_count = relay.fork_count
        self.quarantine: QuarantineBook = relay.quarantine

    def admit(self, peer: str, relay: bool = False) -> str | None:
        """(A peer's claim to be a relay is not trusted here: ``ungated`` decides.)"""
        self.peer = peer
        self._peer_key = public_key_of(peer)
        self._open = self._ungated is not None and self._ungated(peer)
        return self._admit(peer)

    # -- serving, gated by read rights -------------------------------------------------------
    def reads(self, space: str) -> bool:
        """Whether the peer may be served ``space`` now."""
        return self._open or (bool(self._peer_key)
                              and self.relay.can_read(space, self._peer_key, self._clock()))

    def _shown(self, space: str) -> set[str]:
        """The chains a non-reader is shown: those it pushed in this session."""
        return self._pushed.get(space, set())

    def version_vector(self, space: str) -> dict[str, int]:
        vv = self.relay.served_vector(space)
        if self.reads(space):
            return vv
        shown = self._shown(space)
        return {a: s for a, s in vv.items() if a in shown}

    def missing_envelopes(self, space: str, covered: dict[str, int], max_count: int,
                          max_bytes: int) -> list[Envelope]:
        if not self.reads(space):
            return []
        return self.relay.missing_envelopes(space, covered, max_count, max_bytes)

    def outgoing(self, space: str, covered: dict[str, int], cursor: int | None, max_count: int,
                 max_bytes: int) -> tuple[list[Outgoing], int | None]:
        if not self.reads(space):
            return [], cursor  # (the cursor stays: nothing was passed over)
        return self.relay.outgoing(space, covered, cursor, max_count, max_bytes)

    def fork_proofs(self, space: str) -> list[bytes]:
        proofs = self.relay.fork_proofs(space)
        if not proofs or self.reads(space):
            return proofs
        shown = self._shown(space)
        return [p for p in proofs if proof_author(p) in shown]

    def envelope_wire(self, space: str, author: str, seq: int) -> bytes | None:
        if author not in self._shown(space) and not self.reads(space):
            return None
        return self.relay.envelope_wire(space, author, seq)

    def _pushing(self, space: str, envelopes: list[bytes]) -> None:
        """Note the chains the peer sent (after the store took the frame: each verified)."""
        if envelopes and not self.reads(space):
            self._pushed.setdefault(space, set()).update(decode_trusted(w).author for w in envelopes)

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
        if space is not None:
            self._pushing(space, envelopes)
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
        self._pushing(space, envelopes)
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

    # -- snapshots (docs/PROTOCOL.md, "Snapshots in sessions"; relay/snapshot_store.py) -----------
    def snapshot_offer(self, space: str) -> SnapshotOffer | None:
        """The kept snapshot of ``space``, with every membership envelope the relay holds
        (a device let in after it was made finds its keys there); none to a non-reader."""
        if not self.reads(space):
            return None
        row = self.relay.kept_snapshot(space, wire=False)
        if row is None:
            return None

        def load() -> bytes:
            kept = self.relay.kept_snapshot(space)
            assert kept is not None  # (a kept snapshot is only ever replaced)
            return encode_transfer(kept.wire, self.relay.membership_wires(space))

        # (a relay peer never starts from one: ``to_relay``)
        return SnapshotOffer(row.hash, covered_of(row), {}, load, to_relay=self._open)

    def snapshot_accepts(self, space: str, id: bytes, total: int) -> tuple[str, str] | None:
        """Only a member's push is taken (a stranger cannot make the relay hold a transfer)."""
        if not self.reads(space):
            return "not-a-member", f"{self.peer} may not read {space}: the relay takes no snapshot from it"
        if total > MAX_TRANSFER_BYTES:
            return "snapshot-too-large", f"a snapshot transfer is at most {MAX_TRANSFER_BYTES} bytes"
        row = self.relay.kept_snapshot(space, wire=False)
        if row is not None and row.hash == id:
            return KNOWN, "the relay keeps this snapshot"
        refused = self._limit(self.peer or "?", 1, total)  # paced like envelopes (relay/pacing.py)
        if refused is not None:
            return "limit", refused
        return None

    def snapshot_received(self, space: str, data: bytes, source: str) -> tuple[str, str]:
        return self.relay.offer_snapshot(space, data, source)


__all__ = ["RelayHost"]
