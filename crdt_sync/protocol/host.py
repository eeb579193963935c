"""What a session needs from the side it syncs for: a replica, or the relay's store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..envelope import Envelope
from ..identity import Identity
from ..quarantine import SetAside
from ..results import Accepted


class SyncHost(Protocol):
    """What a session needs from the replica (a :class:`~crdt_sync.Replica` is one)."""

    identity: Identity
    device_id: str
    #: A relay keeps every space a device asks for (and so learns their names).
    keeps_all_spaces: bool

    def admit(self, peer: str, relay: bool = False) -> str | None:
        """None to accept an authenticated peer, else the reason to refuse it; ``relay``:
        its HELLO says it is a relay (a claim: the host decides what that is worth)."""
        ...

    def sync_spaces(self) -> list[str]: ...

    def version_vector(self, space: str) -> dict[str, int]: ...

    def missing_envelopes(self, space: str, covered: dict[str, int], max_count: int,
                          max_bytes: int) -> list[Envelope]: ...

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None: ...

    def receive(self, envelopes: list[bytes], source: str, space: str | None = None,
                tolerate_gaps: bool = False) -> tuple[int, int, int]: ...

    def accept(self, envelopes: list[bytes], source: str, space: str) -> Accepted:
        """Per author (what a session calls): a signature-valid envelope that is refused
        quarantines its author in ``space`` and the rest carries on; raises
        :class:`~crdt_sync.errors.Rejected` only for one that does not verify."""
        ...

    def quarantined(self, space: str) -> dict[str, SetAside]:
        """The authors this side set aside in ``space`` (their envelopes are skipped)."""
        ...

    def peer_refused(self, peer: str, space: str, author: str, from_seq: int, reason: str,
                     detail: str) -> None:
        """The peer set aside ``author``'s chain in ``space`` (its QUARANTINED notice)."""
        ...

    def record_ack(self, peer: str, space: str, vv: dict[str, int]) -> None: ...


class StreamingHost(Protocol):
    """A host that also serves new envelopes already encoded (the relay: one copy of each
    envelope, encoded once, for every session that forwards it)."""

    def outgoing(self, space: str, covered: dict[str, int], cursor: int | None, max_count: int,
                 max_bytes: int) -> tuple[list[tuple[str, bytes, int, int, bytes]], int | None]:
        """Envelopes beyond ``covered`` in causal order, bounded like ``missing_envelopes``,
        as ``(author id, author key, seq, wire size, tail)`` where tail is the CBOR of
        ``seq, hlc, payload, signature``; and the cursor to pass next time.

        The session passes back the cursor it got (None at first and after a rewind of
        ``covered``: the host then reads its store); ``covered`` only grows in between.
        """
        ...


@dataclass(frozen=True, slots=True)
class SnapshotOffer:
    """The snapshot a host could send a peer in a space (docs/PROTOCOL.md, "Snapshots in
    sessions"): its record's hash, the version vector it covers, the chains this host holds
    only from a chain base (``{author: base seq}``), and how to read the transfer's bytes.
    ``to_relay``: the peer is a relay, which stores it rather than applying it; ``push``:
    send it even though the peer is not behind (a relay that has not answered this one)."""

    id: bytes
    covered: dict[str, int]
    bases: dict[str, int]
    load: Callable[[], bytes]
    to_relay: bool = False
    push: bool = False


class SnapshotHost(Protocol):
    """A host that sends and takes snapshots in sessions (a replica, the relay). A host
    without these methods sends none and refuses those it is sent (``snapshot-unsupported``)."""

    def snapshot_offer(self, space: str) -> SnapshotOffer | None:
        """The snapshot this host would send the session's peer; None when it has none or
        the peer may not read ``space``."""
        ...

    def snapshot_accepts(self, space: str, id: bytes, total: int) -> tuple[str, str] | None:
        """None to take a transfer, else its verdict (``known``, or a refusal) and detail,
        said on its first chunk so that the rest is not sent."""
        ...

    def snapshot_received(self, space: str, data: bytes, source: str) -> tuple[str, str]:
        """Check and apply (a device) or keep (a relay) a whole transfer; its verdict and detail."""
        ...

    def snapshot_answered(self, space: str, id: bytes, verdict: str) -> None:
        """The peer's verdict on the snapshot this host sent it."""
        ...
