"""The relay's in-memory state of one space (:class:`RelaySpace`: heads, the fan-out tail,
what is pending) and the writes staged for one commit (:class:`StagedBatch`); both are owned
by :class:`~crdt_sync.relay.storage.RelayStore`, which alone reads and changes them."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import cbor2

from crdt_sync.envelope import Envelope
from crdt_sync.fork_table import ForkRecord
from crdt_sync.quarantine import QuarantineRecord, SetAside

from .backend import EnvelopeRow, RejectionRecord, SnapshotRow
from .members import SpaceMembers

#: One envelope as sessions send it: (author id, author key, seq, wire size, tail), where
#: tail is the CBOR of ``seq, hlc, payload, signature`` (see Session._pump).
Outgoing = tuple[str, bytes, int, int, bytes]


@dataclass(eq=False)
class RelaySpace:
    """What the relay keeps in memory of one space."""

    name: str
    vv: dict[str, int]
    hashes: dict[str, bytes]
    base: int
    #: entries ``lo .. lo + len(tail) - 1``; the next one appended gets ``lo + len(tail)``
    tail: deque[Outgoing] = field(default_factory=deque)
    lo: int = 0
    #: staged or committing envelopes of this space: (author, seq) -> hash
    pending: dict[tuple[str, int], bytes] = field(default_factory=dict)
    #: tail position of the first envelope not yet committed (committed ones are a prefix)
    durable_end: int = 0
    #: entries dropped by the per-space bound whose FIFO entries are still counted
    skip: int = 0
    #: a session found uncommitted envelopes trimmed from the tail: wake it at the commit
    stalled: bool = False
    #: its row in the spaces table is known to be committed
    joined: bool = False
    #: fork points ({author: seq}: nothing of it from there is served) and proofs (relay/fork_store.py)
    forks: dict[str, int] = field(default_factory=dict)
    proofs: set[tuple[str, int]] = field(default_factory=set)
    #: authors set aside here (committed or staged): their envelopes are skipped
    quarantined: dict[str, SetAside] = field(default_factory=dict)
    #: no session names it any more: dropped once nothing of it is pending (see release)
    released: bool = False
    #: its membership log (relay/members.py): built from storage when first asked for
    members: SpaceMembers | None = None

    @property
    def end(self) -> int:
        return self.lo + len(self.tail)


@dataclass(eq=False)
class StagedBatch:
    """Writes staged for one commit."""

    rows: list[EnvelopeRow] = field(default_factory=list)
    spaces: dict[str, RelaySpace] = field(default_factory=dict)
    keys: list[tuple[RelaySpace, tuple[str, int]]] = field(default_factory=list)
    #: each space's tail end after its last envelope of this batch
    ends: dict[RelaySpace, int] = field(default_factory=dict)
    rejections: list[RejectionRecord] = field(default_factory=list)
    forks: list[ForkRecord] = field(default_factory=list)
    quarantines: list[QuarantineRecord] = field(default_factory=list)
    lifts: list[tuple[str, str]] = field(default_factory=list)
    #: (space, author, seq) of the rows that carry membership records
    membership: list[tuple[str, str, int]] = field(default_factory=list)
    #: snapshots to keep (relay/snapshot_store.py)
    snapshots: list[SnapshotRow] = field(default_factory=list)
    future: asyncio.Future[None] | None = None

    def __bool__(self) -> bool:
        """Whether it has anything to write."""
        return has_writes(self)


def has_writes(batch: StagedBatch) -> bool:
    return bool(batch.rows or batch.rejections or batch.forks or batch.quarantines or batch.lifts
                or batch.snapshots)


def wire_tail(env: Envelope) -> bytes:
    """An envelope's tail as sessions send it (see :data:`Outgoing`)."""
    # The CBOR of the items after the author in a WireEnvelope ([author, seq, hlc, payload,
    # signature]): the array header (1 byte for 4 items) is dropped.
    return cbor2.dumps([env.seq, env.hlc, env.payload, env.signature])[1:]
