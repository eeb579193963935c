"""The replica as a sync session's host (:class:`crdt_sync.protocol.SyncHost`).

Sessions need a few things integrators do not call (what to send a peer, what a peer
acknowledged); they live on this adapter, not on :class:`crdt_sync.Replica`'s public surface.
Get one per session from :meth:`crdt_sync.Replica.session_host` (or
:attr:`crdt_sync.Replica.sync_host`, which makes one that trusts relays).

Members only (docs/DESIGN.md, "Who a device serves"): once a session has authenticated its
peer, the host serves a space only to a peer that may read it now (``can_read`` of the space's
membership log, asked at each read, so a grant that arrives in the session opens the space and
a revocation closes it before the next batch). To any other peer the space looks empty: its
HAVE and ACKs name only the chains that peer pushed in this session (so it sees them
acknowledged or quarantined, and the session ends), and no envelope, fork proof or head hash
of the space is sent to it. A relay is not a member of anything: it is served in full only
when the host trusts relays (a session to a relay URL the user chose) and the peer's HELLO
says it is one. A LAN or Bluetooth neighbour is never trusted as a relay, whatever it says.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from .envelope import Envelope, decode_trusted
from .forks import proof_author
from .hlc import DEFAULT_MAX_SKEW_MS, HybridClock, wall_ms
from .identity import Identity, public_key_of
from .protocol.host import SnapshotOffer
from .quarantine import MAX_DETAIL, MAX_REASON, PeerRefusal, Quarantine, QuarantineBook, SetAside, clip
from .results import Accepted, ReceiveResult
from .snapshot import decode_trusted as decode_kept
from .snapshot_transfer import encode_transfer
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

    def accept(self, envelopes: list[bytes], source: str, space: str | None = None) -> Accepted: ...

    def apply_snapshot(self, space: str, data: bytes, source: str) -> tuple[str, str]: ...


class ReplicaHost:
    """What a sync session asks of a device's replica."""

    #: A relay keeps every space a device asks for; a device keeps only its own.
    keeps_all_spaces = False

    def __init__(self, replica: HostedReplica, store: Store, quarantine: Quarantine,
                 clock: HybridClock | None = None,
                 max_clock_skew_ms: int = DEFAULT_MAX_SKEW_MS,
                 can_read: Callable[[str, bytes, int], bool] | None = None,
                 trust_relays: bool = True) -> None:
        """``can_read(space, device_key, wall_ms)``: whether a device may be served a space
        (None: every peer may, as before membership); ``trust_relays``: serve a peer that says
        it is a relay in full (only for links to a relay the user chose)."""
        self._replica = replica
        self._store = store
        self._quarantine = quarantine
        #: the device's quarantine (a :class:`~crdt_sync.quarantine.QuarantineBook`)
        self.quarantine: QuarantineBook = quarantine
        self.identity: Identity = replica.identity
        self.device_id: str = replica.device_id
        #: the receiver's wall clock and allowed skew for holding back envelopes stamped too
        #: far ahead (docs/PROTOCOL.md, "Clocks"): the replica's own
        self.wall_ms: Callable[[], int] = clock.wall if clock is not None else wall_ms
        self.max_clock_skew_ms = max_clock_skew_ms
        self._can_read = can_read
        self._trust_relays = trust_relays
        self._peer_key: bytes | None = None  # None until a session admits its peer: not gated
        self._peer = ""
        self._incoming: dict[str, bytes] = {}  # space -> the snapshot id the peer is sending
        self._open = False  # the peer is a trusted relay: served in full
        #: space -> the authors whose envelopes the peer pushed (what a non-reader is shown)
        self._pushed: dict[str, set[str]] = {}

    def admit(self, peer: str, relay: bool = False) -> str | None:
        """Any authenticated peer may sync; what it is served is gated by :meth:`reads`."""
        self._peer_key = public_key_of(peer)
        self._peer = peer
        self._open = relay and self._trust_relays
        return None

    # -- serving, gated by read rights ------------------------------------------------------
    def reads(self, space: str) -> bool:
        """Whether the session's peer may be served ``space`` now."""
        if self._peer_key is None or self._open or self._can_read is None:
            return True
        return self._can_read(space, self._peer_key, self.wall_ms())

    def _shown(self, space: str) -> set[str]:
        return self._pushed.get(space, set())

    def sync_spaces(self) -> list[str]:
        """The spaces this device keeps and syncs (after sealing pending edits)."""
        return self._replica.spaces(seal=True)

    def version_vector(self, space: str) -> dict[str, int]:
        vv = self._replica.version_vector(space)
        if self.reads(space):
            return vv
        shown = self._shown(space)
        return {a: s for a, s in vv.items() if a in shown}

    def missing_envelopes(self, space: str, covered: dict[str, int], max_count: int,
                          max_bytes: int) -> list[Envelope]:
        """Envelopes of ``space`` beyond ``covered``, in causal order, at most about ``max_bytes``."""
        if not self.reads(space):
            return []
        self._replica.seal()
        self._replica.refresh()
        return self._store.missing_envelopes(space, covered, max_count, max_bytes)

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None:
        """The hash of ``author``'s envelope ``seq`` as this device holds it: stored, or the
        head hash a chain base names at its seq (a chain started from a snapshot)."""
        held = self._store.envelope_hash(space, author, seq)
        if held is None:
            base = self._store.chain_base(space, author)
            if base is not None and base[0] == seq:
                return base[1]
        return held

    def receive(self, envelopes: list[bytes], source: str, space: str | None = None,
                tolerate_gaps: bool = False) -> ReceiveResult:
        return self._replica.receive(envelopes, source, space, tolerate_gaps=tolerate_gaps)

    def fork_proofs(self, space: str) -> list[bytes]:
        """Fork proofs held for ``space`` (:class:`crdt_sync.protocol.forks.ForkHost`): to a
        peer that may not read it, only those of the chains it pushed."""
        proofs = self._store.fork_proofs(space)
        if not proofs or self.reads(space):
            return proofs
        shown = self._shown(space)
        return [p for p in proofs if proof_author(p) in shown]

    def fork_count(self, space: str) -> int:
        return self._store.fork_count(space)

    def envelope_wire(self, space: str, author: str, seq: int) -> bytes | None:
        if author not in self._shown(space) and not self.reads(space):
            return None
        return self._store.envelope_wire(space, author, seq)

    def receive_fork_proof(self, proof: bytes, source: str, space: str | None = None) -> bool:
        return self._replica.receive_fork_proof(proof, source, space)

    def accept(self, envelopes: list[bytes], source: str, space: str) -> Accepted:
        """Per author: a refused author is quarantined and the rest carries on."""
        if envelopes and self._peer_key is not None and not self.reads(space):
            self._pushed.setdefault(space, set()).update(decode_trusted(w).author for w in envelopes)
        return self._replica.accept(envelopes, source, space)

    def quarantined(self, space: str) -> dict[str, SetAside]:
        """The authors set aside in ``space``: the session skips them."""
        return self._quarantine.authors(space)

    def peer_refused(self, peer: str, space: str, author: str, from_seq: int, reason: str,
                     detail: str) -> None:
        """``peer`` set aside ``author``'s chain in ``space`` (its QUARANTINED): kept for
        ``status`` (one row per peer, space and author; the session only passes authors this
        device holds in that space)."""
        self._quarantine.record_refusal(PeerRefusal(peer, space, author, from_seq, clip(reason, MAX_REASON),
                                                    clip(detail, MAX_DETAIL), time.time_ns() // 1_000_000))

    def record_ack(self, peer: str, space: str, vv: dict[str, int]) -> None:
        """Remember what ``peer`` acknowledged of ``space`` (``status`` shows it)."""
        with self._store.write():
            self._store.record_peer(peer, space, vv)

    def record_clock_refusal(self, peer: str, space: str, author: str, seq: int, ahead_ms: int) -> None:
        """``peer`` holds back ``author``'s envelopes of ``space`` from ``seq`` on: their
        clock is ``ahead_ms`` ahead of its own (``status`` shows it)."""
        with self._store.write():
            self._store.record_clock_refusal(peer, space, author, seq, ahead_ms)

    # -- snapshots (docs/PROTOCOL.md, "Snapshots in sessions") ----------------------------------
    def snapshot_offer(self, space: str) -> SnapshotOffer | None:
        """The snapshot this device keeps of ``space`` (the last it made or imported), to a
        peer that may read it: with the space's membership envelopes to a device; alone, and
        pushed once, to a trusted relay."""
        if not self.reads(space):
            return None
        wire = self._store.kept_snapshot(space)
        if wire is None:
            return None
        snap = decode_kept(wire)
        bases = {a: seq for a, (seq, _h) in self._store.chain_bases(space).items()}
        to_relay = self._open
        push = to_relay and self._store.snapshot_answer(self._peer, space) != snap.hash

        def load() -> bytes:
            return encode_transfer(wire, [] if to_relay else self._store.membership_wires(space))

        return SnapshotOffer(snap.hash, snap.version_vector, bases, load, to_relay, push)

    def snapshot_accepts(self, space: str, id: bytes, total: int) -> tuple[str, str] | None:
        wire = self._store.kept_snapshot(space)
        if wire is not None and decode_kept(wire).hash == id:
            return "known", "this device holds this snapshot"
        self._incoming[space] = id
        return None

    def snapshot_received(self, space: str, data: bytes, source: str) -> tuple[str, str]:
        verdict = self._replica.apply_snapshot(space, data, source)
        if verdict[0] == "applied" and self._open:  # the relay holds it: not pushed back to it
            self.snapshot_answered(space, self._incoming[space], "known")
        return verdict

    def snapshot_answered(self, space: str, id: bytes, verdict: str) -> None:
        """A relay's answer to the snapshot pushed to it: not pushed to it again."""
        if self._open:
            with self._store.write():
                self._store.record_snapshot_answer(self._peer, space, id, verdict)
