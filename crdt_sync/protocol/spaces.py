"""A session's state per shared space: author tables, what each side has, sent and
acknowledged, and the batches in flight (see the go-back-N notes in ``session``)."""

from __future__ import annotations

from dataclasses import dataclass, field


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

    def go_back(self) -> None:
        """Forget what is in flight: send again from what the peer acknowledged."""
        self.sent = dict(self.acked)
        self.inflight.clear()
        self.cursor = None  # the host's position assumed `sent` never shrinks


def covers(vv: dict[str, int], other: dict[str, int]) -> bool:
    """Whether version vector ``vv`` holds everything ``other`` does."""
    return all(vv.get(a, 0) >= s for a, s in other.items())


def merge(into: dict[str, int], vv: dict[str, int]) -> None:
    """Raise ``into`` to hold ``vv`` too (the per-author maximum)."""
    for a, s in vv.items():
        if s > into.get(a, 0):
            into[a] = s
