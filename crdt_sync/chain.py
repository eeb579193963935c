"""The chain rules: where a verified envelope fits in its author's chain in a space.

Devices (:meth:`crdt_sync.store.Store.check_chain`) and the relay
(:meth:`crdt_sync.relay.storage.RelayStore.receive`) apply these same functions, so that
both reach the same verdict on the same envelope. The module does no I/O: the caller hands
it the chain as it stands through :class:`ChainView` and stores what is accepted.

The rules, for an envelope ``e`` whose signature and shape already passed
:func:`crdt_sync.envelope.open_envelope`, against the chain of ``(e.space, e.author)``
whose head is ``(top, top_hash)`` (``(0, b"")`` for an author never seen there). A chain
holds every seq from 1 to ``top``, each with its hash, and only grows by ``top + 1``:

1. ``e.seq <= top``: the stored hash at ``e.seq`` equal to ``e.hash`` is a **duplicate**;
   any other (or none) is a **fork**: rejected.
2. ``e.seq > top + 1``: a **gap** (its predecessor has not arrived). Skipped when the
   caller tolerates gaps (sync sessions: the sender resends), else rejected.
3. ``e.seq == top + 1``: when ``e.seq > 1``, ``e.prev_hash`` must equal ``top_hash``, else
   rejected (**wrong prev_hash**). Otherwise the envelope is **new**: the caller stores it
   and it becomes the head.

Rejections carry the codes receivers record and send: ``fork``, and ``broken-chain`` for a
wrong ``prev_hash`` or an untolerated gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from .envelope import Envelope
from .errors import Rejected


class Outcome(StrEnum):
    """What a receiver does with an envelope (equal to the strings it replaced)."""

    NEW = "new"
    DUPLICATE = "duplicate"
    GAP = "gap"
    REJECTED = "rejected"


class Fault(StrEnum):
    """Why an envelope was rejected; :attr:`reason` is the code that is recorded and sent."""

    FORK = "fork"
    WRONG_PREV = "wrong-prev"
    SEQ_GAP = "seq-gap"
    WRONG_SPACE = "wrong-space"

    @property
    def reason(self) -> str:
        return _REASONS[self]


_REASONS = {Fault.FORK: "fork", Fault.WRONG_PREV: "broken-chain", Fault.SEQ_GAP: "broken-chain",
            Fault.WRONG_SPACE: "wrong-space"}


@dataclass(frozen=True, slots=True)
class Verdict:
    """Where an envelope fits: an outcome, and for a rejection its fault and a detail."""

    outcome: Outcome
    fault: Fault | None = None
    detail: str = ""

    @property
    def rejected(self) -> bool:
        return self.outcome is Outcome.REJECTED

    def error(self) -> Rejected:
        """The :class:`Rejected` to raise for a rejection."""
        if self.fault is None:
            raise ValueError(f"a {self.outcome} verdict is not a rejection")
        return Rejected(self.fault.reason, self.detail)

    def accept(self) -> Outcome:
        """The outcome; raises :class:`Rejected` for a rejection."""
        if self.fault is not None:
            raise self.error()
        return self.outcome


NEW = Verdict(Outcome.NEW)
DUPLICATE = Verdict(Outcome.DUPLICATE)
GAP = Verdict(Outcome.GAP)


class ChainView(Protocol):
    """The chains as one receiver holds them (a device store, the relay's heads)."""

    def chain_head(self, space: str, author: str) -> tuple[int, bytes]:
        """``(seq, hash)`` of the author's last envelope in ``space``; ``(0, b"")`` if none."""
        ...

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None:
        """The hash of the author's envelope ``seq`` in ``space`` (asked only for
        ``seq`` below the head); None if it is not held."""
        ...


def check(env: Envelope, chains: ChainView, tolerate_gaps: bool = False) -> Verdict:
    """Where a verified envelope fits in its author's chain (see the module's rules)."""
    author = env.author  # computed from the key on each access
    top, top_hash = chains.chain_head(env.space, author)
    if env.seq <= top:
        have = top_hash if env.seq == top else chains.envelope_hash(env.space, author, env.seq)
        if have == env.hash:
            return DUPLICATE
        return Verdict(Outcome.REJECTED, Fault.FORK,
                       f"{author} signed two different envelopes as seq {env.seq} in {env.space!r}")
    if env.seq > top + 1:
        if tolerate_gaps:
            return GAP
        return Verdict(Outcome.REJECTED, Fault.SEQ_GAP,
                       f"{author} seq {env.seq} arrived before seq {env.seq - 1}")
    if env.seq > 1 and env.prev_hash != top_hash:
        return Verdict(Outcome.REJECTED, Fault.WRONG_PREV,
                       f"{author} seq {env.seq} does not follow seq {env.seq - 1}")
    return NEW


def check_space(env: Envelope, expected: str | None) -> Verdict:
    """An envelope received as part of ``expected`` (a bundle's or a frame's space; None:
    any) must belong to it."""
    if expected is not None and env.space != expected:
        return Verdict(Outcome.REJECTED, Fault.WRONG_SPACE,
                       f"envelope of space {env.space!r} sent as part of {expected!r}")
    return NEW


class PendingChains:
    """A :class:`ChainView` over another one plus the envelopes accepted on top of it and
    not stored yet, so that a batch is checked as a whole before any of it is kept (the
    relay stages a batch, then commits it)."""

    def __init__(self, base: ChainView) -> None:
        self._base = base
        self._heads: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._hashes: dict[tuple[str, str, int], bytes] = {}

    def chain_head(self, space: str, author: str) -> tuple[int, bytes]:
        got = self._heads.get((space, author))
        return got if got is not None else self._base.chain_head(space, author)

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None:
        got = self._hashes.get((space, author, seq))
        return got if got is not None else self._base.envelope_hash(space, author, seq)

    def extend(self, env: Envelope) -> None:
        """``env`` (judged :attr:`Outcome.NEW`) is now its chain's head."""
        author = env.author
        self._heads[(env.space, author)] = (env.seq, env.hash)
        self._hashes[(env.space, author, env.seq)] = env.hash


__all__ = ["DUPLICATE", "GAP", "NEW", "ChainView", "Fault", "Outcome", "PendingChains", "Verdict",
           "check", "check_space"]
