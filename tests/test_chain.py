"""The chain rules (crdt_sync.chain) on their own, and as the device store and the relay's
store apply them: one suite, run against both receivers.

Each receiver takes full envelope wires (as a bundle brings them to a device, and as the
relay's sessions hand them to its store), all or nothing: a refused batch keeps nothing.
A fork is not refused: it is proven (crdt_sync.forks), and its author set aside in the
space from the fork seq on, both branches, while the rest of the batch is kept.
The payloads are opaque bytes, which the chain rules never read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from crdt_sync import chain, forks
from crdt_sync.chain import ChainView, Fault, Outcome, PendingChains, Verdict
from crdt_sync.envelope import Envelope, seal
from crdt_sync.errors import Rejected
from crdt_sync.fork_guard import ForkGuard
from crdt_sync.identity import Identity
from crdt_sync.relay.storage import RelayStore
from crdt_sync.store import Store

SPACE = "site-42"


class Receiver(Protocol):
    """What the suite needs of a receiver: its chains, and an all-or-nothing receive."""

    view: ChainView

    def receive(self, envs: list[Envelope], space: str | None = None,
                tolerate_gaps: bool = False) -> tuple[int, int, int]: ...

    def version_vector(self, space: str) -> dict[str, int]: ...

    def fork_proofs(self, space: str) -> list[bytes]: ...


class DeviceReceiver:
    """The device store, as a replica's receive drives it: check_chain, then insert, in one
    transaction (the payload step, which the chain rules do not cover, left out)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        self.store = Store(directory)
        self.view: ChainView = self.store
        self.forks = ForkGuard(self.store)

    def receive(self, envs: list[Envelope], space: str | None = None,
                tolerate_gaps: bool = False) -> tuple[int, int, int]:
        applied = dups = gaps = 0
        with self.store.write():
            self.forks.begin()
            for env in envs:
                chain.check_space(env, space).accept()
                if self.forks.excluded(env):  # as receive.py: a forked author's later seqs
                    continue
                verdict = chain.check(env, self.store, tolerate_gaps)
                if verdict.fault is Fault.FORK:  # as receive.py: proven, both branches go
                    self.forks.conflict(env, "test")
                    continue
                status = verdict.accept()
                if status != "new":  # the comparison replica.py makes
                    dups += status == "duplicate"
                    gaps += status == "gap"
                    continue
                self.store.insert_envelope(env)
                applied += 1
        return applied, dups, gaps

    def version_vector(self, space: str) -> dict[str, int]:
        return self.store.version_vector(space)

    def fork_proofs(self, space: str) -> list[bytes]:
        return self.store.fork_proofs(space)

    def close(self) -> None:
        self.store.close()


class RelayReceiver:
    """The relay's store (no event loop: each receive writes through, committed), without its
    membership step (on by default; as the device receiver leaves its payload step out: the
    chain rules do not cover it, and these payloads are opaque bytes in a space of no genesis)."""

    def __init__(self, directory: Path) -> None:
        self.store = RelayStore(directory, enforce_membership=False)
        self.view: ChainView = self.store

    def receive(self, envs: list[Envelope], space: str | None = None,
                tolerate_gaps: bool = False) -> tuple[int, int, int]:
        return self.store.receive([e.wire for e in envs], space, tolerate_gaps)

    def version_vector(self, space: str) -> dict[str, int]:
        assert self.store.reader.version_vector(space) == self.store.version_vector(space)
        return self.store.version_vector(space)

    def fork_proofs(self, space: str) -> list[bytes]:
        assert self.store.reader.fork_proofs(space) == self.store.fork_proofs(space)
        return self.store.fork_proofs(space)

    def close(self) -> None:
        self.store.close()


@pytest.fixture(params=["device", "relay"])
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Receiver]:
    opened = DeviceReceiver(tmp_path / "device") if request.param == "device" else \
        RelayReceiver(tmp_path / "relay")
    yield opened
    opened.close()


@dataclass
class Author:
    """One author's chain in one space, sealed ahead of time (opaque payloads)."""

    identity: Identity
    space: str
    envs: list[Envelope]

    @classmethod
    def make(cls, length: int, space: str = SPACE, identity: Identity | None = None) -> Author:
        author = cls(identity or Identity.generate(), space, [])
        for _ in range(length):
            author.envs.append(author.next(os.urandom(16)))
        return author

    def next(self, payload: bytes, prev: bytes | None = None, skip: int = 0) -> Envelope:
        """The envelope after the chain's last (``skip`` seqs further), not appended."""
        seq = len(self.envs) + 1 + skip
        if prev is None:
            prev = self.envs[-1].hash if self.envs else b""
        return seal(self.identity, self.space, seq, prev, seq << 16, payload)

    @property
    def id(self) -> str:
        return self.identity.id


def refused(receiver: Receiver, envs: list[Envelope], reason: str, space: str | None = None,
            tolerate_gaps: bool = False) -> Rejected:
    """``envs`` are refused with ``reason`` and nothing of them is kept."""
    before = {s: receiver.version_vector(s) for s in {e.space for e in envs} | {SPACE}}
    with pytest.raises(Rejected) as info:
        receiver.receive(envs, space, tolerate_gaps)
    assert info.value.reason == reason, info.value
    assert {s: receiver.version_vector(s) for s in before} == before
    return info.value


# -- new, duplicate, gap -------------------------------------------------------------------------
def test_a_chain_grows_by_its_next_seq(receiver: Receiver) -> None:
    a = Author.make(3)
    assert receiver.receive(a.envs[:1]) == (1, 0, 0)
    assert receiver.receive(a.envs[1:]) == (2, 0, 0)  # one batch, each on the one before
    assert receiver.version_vector(SPACE) == {a.id: 3}
    assert receiver.view.chain_head(SPACE, a.id) == (3, a.envs[-1].hash)


def test_duplicates_at_and_below_the_head_are_ignored(receiver: Receiver) -> None:
    a = Author.make(3)
    receiver.receive(a.envs)
    assert receiver.receive([a.envs[2], a.envs[0]]) == (0, 2, 0)
    assert receiver.receive([a.envs[1], a.envs[1]]) == (0, 2, 0)
    assert receiver.version_vector(SPACE) == {a.id: 3}


def test_the_same_envelope_twice_in_one_batch_is_one_new_and_one_duplicate(receiver: Receiver) -> None:
    a = Author.make(2)
    assert receiver.receive([a.envs[0], a.envs[1], a.envs[1]]) == (2, 1, 0)


def test_a_tolerated_gap_is_skipped_and_stores_nothing(receiver: Receiver) -> None:
    a = Author.make(1)
    receiver.receive(a.envs)
    later = a.next(b"x", prev=os.urandom(32), skip=1)  # seq 3 while seq 2 is missing
    assert receiver.receive([later], tolerate_gaps=True) == (0, 0, 1)
    assert receiver.version_vector(SPACE) == {a.id: 1}


def test_a_first_envelope_beyond_seq_1_is_a_gap(receiver: Receiver) -> None:
    a = Author.make(3)
    assert receiver.receive(a.envs[1:], tolerate_gaps=True) == (0, 0, 2)
    refused(receiver, a.envs[1:2], "broken-chain")
    assert receiver.receive(a.envs) == (3, 0, 0)  # in order, they are taken


def test_chains_are_per_space_and_author(receiver: Receiver) -> None:
    a = Author.make(2)
    same_key_elsewhere = Author.make(1, space="elsewhere", identity=a.identity)
    b = Author.make(1)
    assert receiver.receive([*a.envs, *same_key_elsewhere.envs, *b.envs]) == (4, 0, 0)
    assert receiver.version_vector(SPACE) == {a.id: 2, b.id: 1}
    assert receiver.version_vector("elsewhere") == {a.id: 1}


# -- rejections ---------------------------------------------------------------------------------
def test_an_untolerated_gap_is_a_broken_chain(receiver: Receiver) -> None:
    a = Author.make(1)
    receiver.receive(a.envs)
    rejected = refused(receiver, [a.next(b"x", prev=os.urandom(32), skip=1)], "broken-chain")
    assert "arrived before seq 2" in rejected.detail


def test_a_wrong_prev_hash_is_a_broken_chain(receiver: Receiver) -> None:
    a = Author.make(2)
    receiver.receive(a.envs)
    rejected = refused(receiver, [a.next(b"x", prev=a.envs[0].hash)], "broken-chain")
    assert "does not follow seq 2" in rejected.detail


def test_a_wrong_prev_hash_is_refused_even_when_gaps_are_tolerated(receiver: Receiver) -> None:
    a = Author.make(1)
    receiver.receive(a.envs)
    refused(receiver, [a.next(b"x", prev=os.urandom(32))], "broken-chain", tolerate_gaps=True)


def proven(receiver: Receiver, author: Author, seq: int, hashes: set[bytes]) -> None:
    """The receiver holds one proof, of ``author`` at ``seq`` between ``hashes``, and keeps
    nothing of the author from ``seq`` on (both branches), whatever arrives."""
    [data] = receiver.fork_proofs(SPACE)
    proof = forks.verify(data)
    assert (proof.author, proof.seq, set(proof.hashes)) == (author.id, seq, hashes)
    assert receiver.version_vector(SPACE).get(author.id, 0) == seq - 1
    receiver.receive([*author.envs, *author.envs], tolerate_gaps=True)
    assert receiver.version_vector(SPACE).get(author.id, 0) == seq - 1


@pytest.mark.parametrize("at", [1, 2, 3], ids=["below-the-head", "below-the-head-2", "at-the-head"])
def test_another_envelope_at_a_stored_seq_is_a_fork(receiver: Receiver, at: int) -> None:
    a = Author.make(3)
    receiver.receive(a.envs)
    prev = b"" if at == 1 else a.envs[at - 2].hash
    other = seal(a.identity, SPACE, at, prev, 7, b"the other branch")
    assert receiver.receive([other], tolerate_gaps=True) == (0, 0, 0)
    proven(receiver, a, at, {other.hash, a.envs[at - 1].hash})


def test_a_fork_inside_one_batch(receiver: Receiver) -> None:
    a = Author.make(1)
    receiver.receive(a.envs)
    one, other = a.next(b"one"), a.next(b"other")
    receiver.receive([one, other])
    proven(receiver, a, 2, {one.hash, other.hash})


def test_a_fork_sets_its_author_aside_and_keeps_the_rest_of_the_batch(receiver: Receiver) -> None:
    a, b = Author.make(3), Author.make(1)
    receiver.receive(a.envs[:1])
    bad = seal(a.identity, SPACE, 1, b"", 9, b"fork of seq 1")
    receiver.receive([*b.envs, a.envs[1], bad])
    assert receiver.version_vector(SPACE) == {b.id: 1}
    proven(receiver, a, 1, {bad.hash, a.envs[0].hash})
    assert receiver.receive([*b.envs, *a.envs[1:]]) == (0, 1, 0)  # a's later seqs: set aside


def test_an_envelope_of_another_space_is_refused(receiver: Receiver) -> None:
    elsewhere = Author.make(1, space="elsewhere")
    rejected = refused(receiver, elsewhere.envs, "wrong-space", space=SPACE)
    assert "'elsewhere'" in rejected.detail and repr(SPACE) in rejected.detail


# -- the rules on their own ---------------------------------------------------------------------
class Heads:
    """A ChainView over plain dicts."""

    def __init__(self, envs: list[Envelope]) -> None:
        self.hashes = {(e.space, e.author, e.seq): e.hash for e in envs}

    def chain_head(self, space: str, author: str) -> tuple[int, bytes]:
        seqs = [s for (sp, a, s) in self.hashes if (sp, a) == (space, author)]
        return (max(seqs), self.hashes[(space, author, max(seqs))]) if seqs else (0, b"")

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None:
        return self.hashes.get((space, author, seq))


def test_verdicts_are_typed_and_equal_the_strings_they_replaced() -> None:
    a = Author.make(2)
    view = Heads(a.envs[:1])
    assert chain.check(a.envs[1], view) == Verdict(Outcome.NEW)
    assert chain.check(a.envs[0], view) == Verdict(Outcome.DUPLICATE)
    assert chain.check(a.next(b"x"), view, tolerate_gaps=True) == Verdict(Outcome.GAP)
    assert [Outcome.NEW, Outcome.DUPLICATE, Outcome.GAP] == ["new", "duplicate", "gap"]
    assert chain.check(a.envs[1], view).accept() is Outcome.NEW
    with pytest.raises(ValueError, match="not a rejection"):
        chain.check(a.envs[1], view).error()


@pytest.mark.parametrize(("make", "fault", "reason"), [
    (lambda a: seal(a.identity, SPACE, 1, b"", 5, b"fork"), Fault.FORK, "fork"),
    (lambda a: a.next(b"x", prev=os.urandom(32)), Fault.WRONG_PREV, "broken-chain"),
    (lambda a: a.next(b"x", skip=3), Fault.SEQ_GAP, "broken-chain"),
], ids=["fork", "wrong-prev", "seq-gap"])
def test_each_fault_has_its_reason_code(make: Callable[[Author], Envelope], fault: Fault,
                                        reason: str) -> None:
    a = Author.make(2)
    verdict = chain.check(make(a), Heads(a.envs))
    assert verdict.rejected and verdict.outcome is Outcome.REJECTED
    assert (verdict.fault, verdict.fault.reason if verdict.fault else None) == (fault, reason)
    with pytest.raises(Rejected) as info:
        verdict.accept()
    assert (info.value.reason, info.value.detail) == (reason, verdict.detail)


def test_check_space() -> None:
    env = Author.make(1, space="elsewhere").envs[0]
    assert chain.check_space(env, None) == Verdict(Outcome.NEW)
    assert chain.check_space(env, "elsewhere") == Verdict(Outcome.NEW)
    wrong = chain.check_space(env, SPACE)
    assert wrong.fault is Fault.WRONG_SPACE and wrong.error().reason == "wrong-space"


def test_pending_chains_judge_a_batch_before_it_is_stored() -> None:
    a = Author.make(3)
    base = Heads(a.envs[:1])
    pending = PendingChains(base)
    assert chain.check(a.envs[1], pending).outcome is Outcome.NEW
    pending.extend(a.envs[1])
    assert pending.chain_head(SPACE, a.id) == (2, a.envs[1].hash)
    assert chain.check(a.envs[1], pending).outcome is Outcome.DUPLICATE
    assert chain.check(a.envs[2], pending).outcome is Outcome.NEW
    assert base.chain_head(SPACE, a.id) == (1, a.envs[0].hash)  # the base is left alone
