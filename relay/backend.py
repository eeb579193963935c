"""What the relay needs from durable storage: the :class:`RelayBackend` interface, and the
records that cross it.

:class:`~crdt_sync.relay.storage.RelayStore` (group commit, in-memory heads and tails) sits on
top of a backend and owns every decision: chain checks (:mod:`crdt_sync.chain`), what is
staged, when it commits. A backend only stores and reads. The embedded implementation is
:class:`~crdt_sync.relay.sqlite_store.SqliteRelayBackend`; a Postgres one (several relay
nodes) implements the same interface.

A backend object is one connection's worth of storage: the relay opens one for the writer
(staging and committing batches) and one for reads on the event loop thread, which must see
only committed state.

Where the next records go: quarantine records, fork proofs, the membership index (schema
4) and snapshots (schema 5) each became a list in :class:`WriteBatch` (written in the same
transaction as the envelopes they refer to), a table in a new schema migration, and a read
method here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from crdt_sync.envelope import Envelope
from crdt_sync.errors import StoreError
from crdt_sync.fork_table import ForkRecord
from crdt_sync.quarantine import QuarantineRecord, SetAside


class EnvelopeRow(NamedTuple):
    """One stored envelope: its chain position, hash, clock and wire form."""

    space: str
    author: str
    seq: int
    hash: bytes
    hlc: int
    wire: bytes


class WriteConflict(StoreError):
    """A batch was written by this node while another writer (a relay node on the same
    database) committed different envelopes at some of its chain positions: nothing of the
    batch is kept. ``forks`` names each ``(space, author, seq)`` stored with another hash;
    the relay re-reads those heads and judges the batch again (relay/shared_store.py)."""

    def __init__(self, forks: list[tuple[str, str, int]]) -> None:
        self.forks = forks
        super().__init__(f"{len(forks)} chain position(s) were taken by another writer: "
                         + ", ".join(f"{a[:12]}… seq {q} in {s[:12]}…" for s, a, q in forks[:3]))


class RejectionRecord(NamedTuple):
    """One refusal the relay recorded (``at`` in Unix seconds; ``source`` names the peer)."""

    at: int
    source: str
    reason: str
    detail: str


class SnapshotRow(NamedTuple):
    """The snapshot the relay keeps for a space (docs/PROTOCOL.md, "Snapshots in sessions"):
    its author (device id), hlc, hash (BLAKE2b-256 of ``wire``), covered vector (canonical
    CBOR of ``[[author id, seq], ...]``), the record, and when it was stored (ms)."""

    space: str
    author: str
    hlc: int
    hash: bytes
    covered: bytes
    wire: bytes
    at: int


@dataclass(eq=False, slots=True)
class WriteBatch:
    """Everything one commit writes.

    Attributes:
        envelopes: accepted envelopes, each chain's in seq order (each was judged new by
            :func:`crdt_sync.chain.check` against the committed heads plus the rows before
            it), so the last row of a chain is its new head.
        spaces: spaces the relay may not have stored yet.
        rejections: refusals to record.
        forks: fork proofs to keep; each also drops its author's envelopes of that space
            from its seq on (written after the envelopes, so rows of this batch go too).
        quarantines: authors set aside (:mod:`crdt_sync.quarantine`), in order.
        lifts: ``(space, author)`` quarantines lifted, after ``quarantines``.
        membership: ``(space, author, seq)`` of the envelopes of ``envelopes`` that carry
            membership records (the index the membership log is rebuilt from).
        snapshots: snapshots to keep, one per space (each replaces the space's kept one
            unless that one's hlc is higher: the relay judged it newer first).
    """

    envelopes: list[EnvelopeRow] = field(default_factory=list)
    spaces: list[str] = field(default_factory=list)
    rejections: list[RejectionRecord] = field(default_factory=list)
    forks: list[ForkRecord] = field(default_factory=list)
    quarantines: list[QuarantineRecord] = field(default_factory=list)
    lifts: list[tuple[str, str]] = field(default_factory=list)
    membership: list[tuple[str, str, int]] = field(default_factory=list)
    snapshots: list[SnapshotRow] = field(default_factory=list)


class RelayBackend(Protocol):
    """Durable relay storage (one connection; methods are called from one thread at a time).

    Writes are in two steps, so that the relay stages a batch on its event loop and only the
    commit (the fsync) waits in a writer thread: :meth:`stage` opens a transaction and
    writes the batch into it; :meth:`commit` makes it durable; :meth:`rollback` drops it.
    Nothing staged is visible to another connection before :meth:`commit` returns. A backend
    whose writes cost a network round trip (Postgres) may keep the batch in :meth:`stage`
    and write it in :meth:`commit`, which runs in the writer thread.

    Every method blocks. The relay reads on its event loop only on a miss of its memory (a
    space's heads, a session's catch-up past the in-memory tail), so a networked backend
    should answer those from a pool without holding the loop long.
    """

    #: the schema version this backend's storage is at once opened
    schema_version: int

    def identity_seed(self, generate: bytes) -> bytes:
        """The relay's Ed25519 seed: the stored one, or ``generate`` stored now."""
        ...

    def heads(self, space: str) -> dict[str, tuple[int, bytes]]:
        """Each author's committed head in ``space``: ``{author: (seq, hash)}``."""
        ...

    def chain_head(self, space: str, author: str) -> tuple[int, bytes]:
        """``(seq, hash)`` of the author's last committed envelope; ``(0, b"")`` if none."""
        ...

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None:
        ...

    def version_vector(self, space: str) -> dict[str, int]:
        ...

    def missing_envelopes(self, space: str, covered: dict[str, int], max_count: int,
                          max_bytes: int, excluded: dict[str, int] | None = None) -> list[Envelope]:
        """Committed envelopes of ``space`` beyond ``covered``, in arrival (causal) order,
        at most ``max_count`` and (but for the first) ``max_bytes``; none of an author at or
        past its seq in ``excluded``."""
        ...

    def fork_records(self, space: str | None = None) -> list[ForkRecord]:
        """The stored fork proofs (of ``space``, or all)."""
        ...

    def fork_keys(self, space: str) -> list[tuple[str, int]]:
        """``(author, seq)`` of each stored proof of ``space``."""
        ...

    def envelope_wire(self, space: str, author: str, seq: int) -> bytes | None:
        ...

    def spaces(self) -> list[str]:
        ...

    def rejections(self, limit: int = 100) -> list[RejectionRecord]:
        """The latest refusals, newest first."""
        ...

    def quarantined(self, space: str) -> dict[str, SetAside]:
        """The authors set aside in ``space`` (committed), without their evidence."""
        ...

    def membership_envelopes(self, space: str) -> list[bytes]:
        """The wire forms of the committed envelopes of ``space`` that carry membership
        records (payload kind 4), in arrival order: what its membership log is built from."""
        ...

    def snapshot(self, space: str, wire: bool = True) -> SnapshotRow | None:
        """The committed snapshot of ``space`` (without its record's bytes unless ``wire``)."""
        ...

    def quarantine(self, space: str, author: str) -> QuarantineRecord | None:
        """The committed quarantine of ``author`` in ``space``, with its evidence."""
        ...

    def quarantines(self, space: str | None = None) -> list[QuarantineRecord]:
        """Every committed quarantine (of ``space``), by space and author."""
        ...

    def stage(self, batch: WriteBatch) -> None:
        ...

    def commit(self) -> None:
        """Make the staged batch durable. Raises :class:`WriteConflict` (nothing kept) when
        another writer on the same storage committed a different envelope at a position of
        the batch; a position it committed with the same envelope is no conflict."""
        ...

    def rollback(self) -> None:
        ...

    def size_bytes(self) -> int:
        ...

    def healthy(self) -> bool:
        ...

    def close(self) -> None:
        ...


__all__ = ["EnvelopeRow", "RejectionRecord", "RelayBackend", "SnapshotRow", "WriteBatch", "WriteConflict"]
