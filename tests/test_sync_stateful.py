"""Convergence over sync sessions, as a Hypothesis state machine.

Three to five replicas on separate data directories edit offline (plain fields, the same
field written concurrently on two devices, text, lists, deletes), are closed and reopened,
and meet in pairs for one-shot sessions over memory links that lose, duplicate and reorder
frames and may drop mid-transfer. A session in which either side saw "synced" must leave both
with equal version vectors. At the end, sessions over clean links between every pair,
repeated until a round moves nothing, leave every replica with identical entities,
conflicts and version vectors; and no honest exchange was ever rejected.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from crdt_sync import Replica
from crdt_sync.transports.driver import SessionOutcome
from crdt_sync.transports.memory import LinkConditions, MemoryNetwork
from tests.sync_helpers import FAST, SPACE, admit, applied, snapshot, sync_over

IDS = ["pump", "valve", "tank"]
# Few names, so that writes collide, including a value written where another device keeps
# text or a list.
FIELDS = ["status", "notes", "parts"]
#: Long enough for a lossy session of a few dozen envelopes; a slower one just ends early.
LOSSY_TIMEOUT = 2.0
#: Small batches: more frames per session, so a drop after N frames often falls mid-transfer.
CONFIG = dataclasses.replace(FAST, batch_count=2)
#: Rounds of all-pairs clean sessions: two spread everything; the last must move nothing.
FINAL_ROUNDS = 4

who = st.integers(min_value=0, max_value=4)  # taken modulo the number of replicas
ids = st.sampled_from(IDS)
fields = st.sampled_from(FIELDS)
values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(alphabet="ab ü😀", max_size=4),
                   st.lists(st.integers(0, 3), max_size=2))
texts = st.text(alphabet="xy é中", min_size=1, max_size=4)
conditions = st.builds(
    LinkConditions,
    loss=st.sampled_from([0.0, 0.0, 0.1, 0.3]),
    duplicate=st.sampled_from([0.0, 0.2, 0.5]),
    reorder=st.sampled_from([0.0, 0.2, 0.5]),
    # the handshake takes about ten frames: most drops fall just after it, mid-transfer
    disconnect_after_frames=st.none() | st.integers(min_value=9, max_value=16)
    | st.integers(min_value=1, max_value=40),
)


class SyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="crdt-sync-stateful-"))
        self.replicas: list[Replica] = []

    # -- helpers -------------------------------------------------------------------------------
    def r(self, i: int) -> Replica:
        return self.replicas[i % len(self.replicas)]

    def two(self, i: int, j: int) -> tuple[Replica, Replica]:
        n = len(self.replicas)
        i, j = i % n, j % n
        return self.replicas[i], self.replicas[(j if j != i else i + 1) % n]

    def session(self, a: Replica, b: Replica, link: LinkConditions, seed: int,
                timeout: float) -> tuple[SessionOutcome, SessionOutcome]:
        async def run() -> tuple[SessionOutcome, SessionOutcome]:
            network = MemoryNetwork(seed)
            la, lb = network.pair(link)
            try:
                return await sync_over(a, b, la, lb, config=CONFIG, timeout=timeout)
            finally:
                network.close_all()

        return asyncio.run(run())

    # -- setup -----------------------------------------------------------------------------------
    @initialize(n=st.integers(min_value=3, max_value=5))
    def open_replicas(self, n: int) -> None:
        self.replicas = [Replica(self.root / f"r{i}") for i in range(n)]
        for replica in self.replicas:
            admit(replica)

    # -- edits -------------------------------------------------------------------------------------
    @rule(i=who, id=ids, field=fields, value=values)
    def put(self, i: int, id: str, field: str, value: Any) -> None:
        self.r(i).space(SPACE).put("eq", id, {field: value})

    @rule(i=who, j=who, id=ids, field=fields, first=values, second=values)
    def concurrent_writes(self, i: int, j: int, id: str, field: str, first: Any, second: Any) -> None:
        a, b = self.two(i, j)
        a.space(SPACE).put("eq", id, {field: first})
        b.space(SPACE).put("eq", id, {field: second})

    @rule(i=who, id=ids, at=st.integers(0, 8), text=texts, cut=st.integers(0, 3))
    def edit_text(self, i: int, id: str, at: int, text: str, cut: int) -> None:
        with self.r(i).space(SPACE).transaction() as tx:
            notes = tx.entity("eq", id).text("notes")
            notes.insert(at, text)
            notes.delete(at // 2, cut)

    @rule(i=who, id=ids, item=st.integers(0, 9), drop=st.none() | st.integers(0, 3))
    def edit_list(self, i: int, id: str, item: int, drop: int | None) -> None:
        with self.r(i).space(SPACE).transaction() as tx:
            parts = tx.entity("eq", id).list("parts")
            if drop is not None and drop < len(parts):
                parts.delete(drop)
            else:
                parts.append(item)

    @rule(i=who, id=ids, n=st.integers(min_value=5, max_value=25))
    def offline_burst(self, i: int, id: str, n: int) -> None:
        """Many small edits, each sealed on its own: transfers long enough to be cut."""
        replica = self.r(i)
        for k in range(n):
            replica.space(SPACE).put("eq", id, {"count": k})
            replica.seal()

    @rule(i=who, id=ids)
    def delete(self, i: int, id: str) -> None:
        with self.r(i).space(SPACE).transaction() as tx:
            tx.delete("eq", id)

    @rule(i=who)
    def reopen(self, i: int) -> None:
        n = i % len(self.replicas)
        self.replicas[n].close()
        self.replicas[n] = Replica(self.root / f"r{n}")

    # -- sessions ------------------------------------------------------------------------------
    @rule(i=who, j=who, link=conditions, seed=st.integers(0, 2**16))
    def sync(self, i: int, j: int, link: LinkConditions, seed: int) -> None:
        a, b = self.two(i, j)
        oa, ob = self.session(a, b, link, seed, LOSSY_TIMEOUT)
        if oa.synced or ob.synced:  # either side's "synced" means both hold the same
            assert a.version_vector(SPACE) == b.version_vector(SPACE), (oa.closed, ob.closed)

    @invariant()
    def nothing_rejected(self) -> None:
        for replica in self.replicas:
            assert replica.rejections() == [], replica.rejections()

    # -- the end -------------------------------------------------------------------------------
    def converge(self) -> None:
        pairs = [(a, b) for k, a in enumerate(self.replicas) for b in self.replicas[k + 1:]]
        for _ in range(FINAL_ROUNDS):
            moved = 0
            for a, b in pairs:
                oa, ob = self.session(a, b, LinkConditions(), seed=0, timeout=10.0)
                assert oa.synced and ob.synced, (oa.closed, ob.closed)
                moved += applied(oa) + applied(ob)
            if moved == 0:
                break
        else:
            raise AssertionError(f"sessions still moved envelopes after {FINAL_ROUNDS} rounds")
        first, *others = [snapshot(r) for r in self.replicas]
        for other in others:
            assert other.rows == first.rows
            assert other.conflicts == first.conflicts
            assert other.version_vector == first.version_vector
            assert other.key() == first.key()  # the same, exactly (1, 1.0 and True differ)

    def teardown(self) -> None:
        try:
            if self.replicas:
                self.converge()
        finally:
            for replica in self.replicas:
                replica.close()
            shutil.rmtree(self.root, ignore_errors=True)


SyncMachine.TestCase.settings = settings(max_examples=12, stateful_step_count=15, deadline=None)
TestSyncConvergence = SyncMachine.TestCase
