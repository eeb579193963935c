"""A session's state per shared space: author tables, what each side has, sent and
acknowledged, and the batches in flight (see the go-back-N notes in ``session``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..identity import device_id, public_key_of
from .messages import E_UNEXPECTED, AuthorRef, Have, ProtocolViolation, encode

#: A seq no chain reaches: ``sent`` at it means "send nothing more of this author" (a
#: refused chain), and :meth:`SpaceState.covered` says it of a held-back author.
NEVER = 2**63 - 1

@dataclass
class Inflight:
    """A batch sent and not yet acknowledged: the highest seq of each author it holds."""

    batch: int
    top: dict[str, int]
    sent_at: float
    count: int = 0  # envelopes in it


@dataclass
class SpaceState:
    """One shared space of a session; ``sent`` and ``acked`` are version vectors."""

    name: str
    mine: int  # index in my SPACES
    theirs: int  # index in the peer's SPACES
    my_table: list[str] = field(default_factory=list)  # authors of my HAVE: my refs
    my_index: dict[str, int] = field(default_factory=dict)
    their_table: list[str] | None = None  # authors of the peer's HAVE: its refs
    have_frame: bytes = b""
    have_sent_at: float = 0.0
    peer_have: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)
    inflight: list[Inflight] = field(default_factory=list)
    next_batch: int = 1
    peer_saw_have: bool = False
    synced: bool = False
    expect_in: int = 0  # envelopes the peer had that we lacked, at its HAVE
    expect_out: int = 0
    #: a StreamingHost's position in the space's new envelopes (None: from the store)
    cursor: int | None = None
    #: authors the peer set aside (its QUARANTINED): author -> from_seq; not sent again
    refused: dict[str, int] = field(default_factory=dict)
    #: authors this side set aside: author -> from_seq; the peer's beyond it are skipped
    quarantined: dict[str, int] = field(default_factory=dict)
    #: authors whose envelopes this side holds back (their clock is too far ahead of ours):
    #: author -> the first seq held back (docs/PROTOCOL.md, "Clocks")
    holding: dict[str, int] = field(default_factory=dict)
    #: authors the peer holds back (its CLOCK_SKEW): author -> the first seq it refused;
    #: they are not sent from that seq on until ``retry_at`` (monotonic session time)
    held: dict[str, int] = field(default_factory=dict)
    retry_at: dict[str, float] = field(default_factory=dict)
    #: authors the peer cannot give below its chain bases, after this side refused its
    #: snapshot: author -> the first seq not expected (docs/PROTOCOL.md, "Snapshots in sessions")
    unserved: dict[str, int] = field(default_factory=dict)
    ack_batch: int = 0  # the last batch received whose ACK waits
    ack_waiting: int = 0  # ENVELOPES frames whose ACK waits
    ack_due: float = 0.0  # when the waiting ACK must go (0: none waits)
    #: whether the host served this space to the peer when our HAVE was built (a peer
    #: without read rights is shown an empty space until they arrive: then HAVE is renewed)
    served: bool = True
    renewed: bool = False  # our HAVE was renewed: only an ACK of batch 0 confirms it

    def wait_ack(self, batch: int, now: float, delay: float, every: int) -> bool:
        """Hold the ACK of ``batch`` (a live push); True when the held ACK must go now."""
        self.ack_batch = max(self.ack_batch, batch)
        self.ack_waiting += 1
        if not self.ack_due:
            self.ack_due = now + delay
        return self.ack_waiting >= every

    def take_ack(self) -> int | None:
        """The last batch whose ACK waits (None: none waits); it no longer waits."""
        if not self.ack_waiting:
            return None
        batch, self.ack_batch, self.ack_waiting, self.ack_due = self.ack_batch, 0, 0, 0.0
        return batch

    def renew(self, vv: dict[str, int], heads: list[bytes], now: float) -> bytes:
        """HAVE again, now that the host serves the space (``heads`` in sorted author order):
        authors by key, so the refs of the first HAVE keep their meaning; resent until the
        peer's ACK of batch 0 (docs/PROTOCOL.md, "What a relay serves")."""
        self.served = self.renewed = True
        self.peer_saw_have = False
        self.have_frame = encode(Have(self.mine, [(public_key(a), vv[a]) for a in sorted(vv)], heads))
        self.have_sent_at = now
        return self.have_frame

    @classmethod
    def opened(cls, name: str, mine: int, theirs: int, vv: dict[str, int], heads: list[bytes],
               now: float) -> SpaceState:
        """A space both sides keep, with our HAVE (authors sorted, ``heads`` in that order)."""
        st = cls(name, mine, theirs)
        st.my_table = sorted(vv)
        st.my_index = {a: i for i, a in enumerate(st.my_table)}
        st.have_frame = encode(Have(mine, [(public_key(a), vv[a]) for a in st.my_table], heads))
        st.have_sent_at = now
        return st

    def covered(self) -> dict[str, int]:
        """What not to send: ``sent``, and every author the peer holds back."""
        if not self.held and not self.refused:
            return self.sent
        out = {**self.sent, **dict.fromkeys(self.held, NEVER)}
        for author, from_seq in self.refused.items():  # sent up to where the peer refused
            if out.get(author, 0) >= from_seq - 1:
                out[author] = NEVER
        return out

    def peer_holds(self, author: str, seq: int, retry_at: float) -> bool:
        """The peer holds back ``author`` from ``seq`` on (its CLOCK_SKEW); False when that
        says nothing new."""
        if seq >= self.held.get(author, NEVER):
            return False
        self.held[author] = seq
        self.retry_at[author] = retry_at
        return True

    def release(self, now: float) -> bool:
        """Stop holding back the authors whose retry time came; True if any (the caller
        resends them)."""
        due = [a for a, t in self.retry_at.items() if t <= now]
        for author in due:
            del self.held[author], self.retry_at[author]
        if due:
            self.go_back()  # ``covered`` shrinks: read the store again
        return bool(due)

    def go_back(self) -> None:
        """Forget what is in flight: send again from what the peer acknowledged."""
        self.sent = dict(self.acked)
        self.inflight.clear()
        self.cursor = None  # the host's position assumed `sent` never shrinks
        for author, from_seq in self.refused.items():
            self._stop_at(author, from_seq)

    def refuse(self, author: str, from_seq: int) -> None:
        """The peer set ``author`` aside from ``from_seq``: never send it that chain from
        there again in this session, and stop waiting for its ACK of what is in flight there.
        Seqs below ``from_seq`` the peer lacks are still sent (a fork proof can set an author
        aside at a peer that holds less of its chain)."""
        self.refused[author] = min(from_seq, self.refused.get(author, from_seq))
        self._stop_at(author, self.refused[author])
        for batch in self.inflight:
            if batch.top.get(author, 0) >= from_seq:
                batch.top.pop(author, None)

    def _stop_at(self, author: str, from_seq: int) -> None:
        if self.sent.get(author, 0) >= from_seq - 1:
            self.sent[author] = NEVER


def clamp(vv: dict[str, int], aside: dict[str, int]) -> dict[str, int]:
    """``vv`` without what ``aside`` (author -> from_seq) sets aside: each such author at
    most ``from_seq - 1``."""
    if not aside:
        return vv
    return {a: min(s, aside[a] - 1) if a in aside else s for a, s in vv.items()}


def covers(vv: dict[str, int], other: dict[str, int]) -> bool:
    """Whether version vector ``vv`` holds everything ``other`` does."""
    return all(vv.get(a, 0) >= s for a, s in other.items())


def covers_below(vv: dict[str, int], other: dict[str, int], held: dict[str, int]) -> bool:
    """Like :func:`covers`, counting of each author in ``held`` only the seqs below its
    held one (what is held back is not expected to arrive)."""
    return covers(vv, clamp(other, held))


def merge(into: dict[str, int], vv: dict[str, int]) -> None:
    """Raise ``into`` to hold ``vv`` too (the per-author maximum)."""
    for a, s in vv.items():
        if s > into.get(a, 0):
            into[a] = s


def resolve(st: SpaceState, ref: AuthorRef) -> str:
    """The author a peer's reference names: a key, or an index in the peer's HAVE table."""
    if isinstance(ref, bytes):
        return device_id(ref)
    assert st.their_table is not None
    if ref >= len(st.their_table):
        raise ProtocolViolation(E_UNEXPECTED, f"author index {ref} beyond the peer's table")
    return st.their_table[ref]


def refs(st: SpaceState, vv: dict[str, int]) -> list[tuple[AuthorRef, int]]:
    """A version vector as this side's references (for an ACK)."""
    return [(ref(st, a), s) for a, s in sorted(vv.items())]


def ref(st: SpaceState, author: str) -> AuthorRef:
    """This side's reference to an author: its index in our HAVE table, else its key."""
    index = st.my_index.get(author)
    return public_key(author) if index is None else index


def public_key(author: str) -> bytes:
    """An author's key from its device id."""
    return public_key_of(author)
