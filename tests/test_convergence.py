"""Convergence, as a Hypothesis state machine: three replicas on separate data directories
edit offline (concurrent writes to the same fields, text, lists, deletes), are closed and
reopened, and exchange bundles: full ones, ones ``since`` the target's version vector, stale
ones, duplicates, and old bundles imported later into any replica in any order. An import
that would break a chain must be refused with ``broken-chain`` and change nothing. After a
full all-to-all exchange every replica shows the same entities, conflicts and version
vectors, before and after a reopen."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import crdt_sync.sealing as replica_module
from crdt_sync import NotFound, Rejected, Replica, Space
from tests.helpers import ManualClock, chains, exchange, scalar_values, share, space_state, sync_all

N = 3
SPACE = "site"
IDS = ["pump", "valve", "tank"]
# Few names, so that writes collide: the same field written as a value on one replica and
# as text or list on another is part of what must converge.
FIELDS = ["status", "notes", "parts"]
KEYS = {("eq", id) for id in IDS}

replicas = st.integers(min_value=0, max_value=N - 1)
ids = st.sampled_from(IDS)
fields = st.sampled_from(FIELDS)
small_values = st.one_of(scalar_values(), st.lists(scalar_values(), max_size=3),
                         st.dictionaries(st.sampled_from(["a", "b"]), scalar_values(), max_size=2))
texts = st.text(alphabet="ab ü中😀\x00", min_size=1, max_size=5)
positions = st.integers(min_value=0, max_value=12)


class Convergence(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.paths = [Path(self._tmp.name) / f"r{i}" for i in range(N)]
        # Independent, injected wall clocks that the rules move (even backwards).
        self.clocks = [ManualClock(1_700_000_000_000 + 7 * i) for i in range(N)]
        # Replica 0 keeps one entity in memory: eviction and reloading run all the time.
        self.cache_sizes = [1, 256, 256]
        self.replicas = [Replica(p, wall=c, cache_size=n)
                         for p, c, n in zip(self.paths, self.clocks, self.cache_sizes, strict=True)]
        share(*self.replicas, name=SPACE)
        self.pool: list[bytes] = []  # bundles exported earlier, to import again later
        self.stale_vvs: list[dict[str, int]] = [{}]

    def _space(self, r: int) -> Space:
        return self.replicas[r].space(SPACE)

    # -- edits ---------------------------------------------------------------------------
    @rule(r=replicas, delta=st.integers(min_value=-2_000, max_value=5_000))
    def move_clock(self, r: int, delta: int) -> None:
        self.clocks[r].advance(delta)

    @rule(r=replicas, id=ids, values=st.dictionaries(fields, small_values, max_size=3))
    def put(self, r: int, id: str, values: dict[str, Any]) -> None:
        self._space(r).put("eq", id, values)

    @rule(r=replicas, id=ids, field=fields)
    def remove(self, r: int, id: str, field: str) -> None:
        with self._space(r).transaction() as tx:
            tx.entity("eq", id).remove(field)

    @rule(r=replicas, id=ids, field=fields, index=positions, text=texts, delete=st.integers(0, 3))
    def edit_text(self, r: int, id: str, field: str, index: int, text: str, delete: int) -> None:
        with self._space(r).transaction() as tx:
            t = tx.entity("eq", id).text(field)
            t.delete(index, delete)
            t.insert(index, text)

    @rule(r=replicas, id=ids, field=fields, op=st.sampled_from(["append", "insert", "delete", "extend"]),
          index=positions, value=small_values)
    def edit_list(self, r: int, id: str, field: str, op: str, index: int, value: Any) -> None:
        with self._space(r).transaction() as tx:
            items = tx.entity("eq", id).list(field)
            if op == "append":
                items.append(value)
            elif op == "insert":
                items.insert(index, value)
            elif op == "extend":
                items.extend([value, value])
            else:
                items.delete(index, 2)

    @rule(r=replicas, id=ids)
    def delete(self, r: int, id: str) -> None:
        sp = self._space(r)
        if sp.exists("eq", id):
            sp.delete("eq", id)
            assert not sp.exists("eq", id)
        else:
            with pytest.raises(NotFound):
                sp.delete("eq", id)

    @rule(r=replicas, cache_size=st.sampled_from([1, 2, 256]))
    def reopen(self, r: int, cache_size: int) -> None:
        before = space_state(self.replicas[r], SPACE, KEYS)
        self.replicas[r].close()
        self.cache_sizes[r] = cache_size
        self.replicas[r] = self._open(r)
        assert space_state(self.replicas[r], SPACE, KEYS) == before

    def _open(self, r: int) -> Replica:
        return Replica(self.paths[r], wall=self.clocks[r], cache_size=self.cache_sizes[r])

    # -- exchanges -----------------------------------------------------------------------
    @rule(src=replicas, dst=replicas, mode=st.sampled_from(["full", "since", "stale"]), twice=st.booleans(),
          stale=st.integers(min_value=0))
    def carry(self, src: int, dst: int, mode: str, twice: bool, stale: int) -> None:
        source, target = self.replicas[src], self.replicas[dst]
        since = {"full": None, "since": target.version_vector(SPACE),
                 "stale": self.stale_vvs[stale % len(self.stale_vvs)]}[mode]
        if mode == "stale" and since:
            # A stale vector of the target itself only ever claims less than it has now.
            have = target.version_vector(SPACE)
            since = {a: min(s, have.get(a, 0)) for a, s in since.items()}
        self.stale_vvs.append(target.version_vector(SPACE))
        bundle = source.export_bundle(SPACE, since=since)
        self.pool.append(bundle)
        result = target.import_bundle(bundle)
        if twice:  # the same file imported again: all duplicates, nothing changes
            before = space_state(target, SPACE, KEYS)
            again = target.import_bundle(bundle)
            assert again.applied == 0
            assert again.duplicates == result.applied + result.duplicates
            assert space_state(target, SPACE, KEYS) == before

    @precondition(lambda self: bool(self.pool))
    @rule(pick=st.integers(min_value=0), dst=replicas)
    def import_old_bundle(self, pick: int, dst: int) -> None:
        """An earlier bundle, maybe made for another replica, imported out of order."""
        self._import_or_refuse(dst, self.pool[pick % len(self.pool)])

    @rule(src=replicas, meant_for=replicas, dst=replicas)
    def misdelivered_bundle(self, src: int, meant_for: int, dst: int) -> None:
        """A bundle made for one device (since its version vector) carried to another. The
        chains may link while the changes depend on envelopes ``dst`` lacks."""
        bundle = self.replicas[src].export_bundle(SPACE, since=self.replicas[meant_for].version_vector(SPACE))
        self.pool.append(bundle)
        self._import_or_refuse(dst, bundle)

    def _import_or_refuse(self, dst: int, bundle: bytes) -> None:
        target = self.replicas[dst]
        before = space_state(target, SPACE, KEYS)
        rejections = len(target.rejections(limit=10**6))
        try:
            target.import_bundle(bundle)
        except Rejected as rejected:
            assert rejected.reason == "broken-chain"
            assert space_state(target, SPACE, KEYS) == before
            assert target.rejections()[0].reason == "broken-chain"
            assert len(target.rejections(limit=10**6)) == rejections + 1

    @rule()
    def converge(self) -> None:
        self._check_converged()

    @invariant()
    def chains_are_contiguous(self) -> None:
        # Each replica's version vector is exactly its chains' lengths, with no gap.
        for r in self.replicas:
            assert chains(r, SPACE) == r.version_vector(SPACE)

    def _check_converged(self) -> None:
        sync_all(self.replicas, SPACE)
        states = [space_state(r, SPACE, KEYS) for r in self.replicas]
        for state in states[1:]:
            assert state == states[0]

    def teardown(self) -> None:
        try:
            self._check_converged()
            expected = space_state(self.replicas[0], SPACE, KEYS)
            for i in range(N):  # and the same from disk alone
                self.replicas[i].close()
                self.replicas[i] = self._open(i)
                assert space_state(self.replicas[i], SPACE, KEYS) == expected
        finally:
            for r in self.replicas:
                r.close()
            self._tmp.cleanup()


def test_replicas_converge(monkeypatch: pytest.MonkeyPatch) -> None:
    # Compact (snapshot) entities after 2 stored parts instead of 64, so that reopening runs
    # the real compaction path often within a short run.
    monkeypatch.setattr(replica_module, "SNAPSHOT_AFTER_PARTS", 2)
    run = Convergence.TestCase
    run.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
    run().runTest()


def test_replicas_converge_default_compaction() -> None:
    run = Convergence.TestCase
    run.settings = settings(max_examples=15, stateful_step_count=30, deadline=None)
    run().runTest()


def test_changes_that_arrive_before_their_dependencies_survive_compaction(tmp_path: Path) -> None:
    """c receives b's edits (which build on a's) before a's own: Yjs holds them pending. With
    enough stored parts, close() compacts the entity into a snapshot; the pending edits must
    not be dropped from it, or c never converges once a's edits arrive."""
    a, b, c = (Replica(tmp_path / n) for n in "abc")
    try:
        share(a, b, c, name=SPACE)
        with a.space(SPACE).transaction() as tx:
            tx.entity("eq", "doc").text("body").append("a")
        exchange(a, b, SPACE)
        for i in range(replica_module.SNAPSHOT_AFTER_PARTS + 1):  # one envelope (one part) each
            with b.space(SPACE).transaction() as tx:
                tx.entity("eq", "doc").text("body").append(str(i % 10))
            b.seal()
        # The bundle b made for a (since a's vector), carried to c instead: chains link.
        c.import_bundle(b.export_bundle(SPACE, since=a.version_vector(SPACE)))
        c.space(SPACE).put("eq", "doc", {"status": "seen by c"})  # c touches it: close compacts it
        c.close()
        c = Replica(tmp_path / "c")
        exchange(a, c, SPACE)
        assert c.space(SPACE).get("eq", "doc")["body"] == b.space(SPACE).get("eq", "doc")["body"]
        sync_all([a, b, c], SPACE)
        assert space_state(c, SPACE, KEYS) == space_state(b, SPACE, KEYS) == space_state(a, SPACE, KEYS)
    finally:
        for r in (a, b, c):
            r.close()
