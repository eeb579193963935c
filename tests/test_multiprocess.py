"""Two real processes write to one data directory at the same time (their own entities and
one shared entity, racing on the same field). Neither may lose an edit or fork the device's
chain, and each must see the other's changes while both are running."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crdt_sync import Change, Replica
from tests.helpers import PROC_TIMEOUT, chains, share, space_state, spawn_worker
from tests.sync_helpers import admit

SPACE = "mp"  # as in proc_worker.py
N = 150


def _run_pair(data: Path, seal_a: float, seal_b: float) -> list[dict[str, Any]]:
    procs = [spawn_worker("mp", str(data), "a", "b", str(N), str(seal_a)),
             spawn_worker("mp", str(data), "b", "a", str(N), str(seal_b))]
    reports = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=PROC_TIMEOUT)
            assert proc.returncode == 0, f"worker failed: {err}"
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    return reports


# seal_interval 0: every edit is a SQLite commit, so the two writers contend on every one.
# Without preinit both processes start on a directory that does not exist yet: they must
# still agree on one store and one device identity.
@pytest.mark.parametrize(("seal_a", "seal_b", "preinit"), [(0.0, 0.0, True), (0.0, 0.05, False)])
def test_two_processes_one_directory(tmp_path: Path, seal_a: float, seal_b: float, preinit: bool) -> None:
    data = tmp_path / "data"
    if preinit:
        Replica(data).close()
    reports = _run_pair(data, seal_a, seal_b)

    # Each saw everything the other reported done, through the shared store, while running.
    for report in reports:
        assert report["written"] == report["other_written"] == N
        assert report["missing"] == [] and report["missing_fields"] == [] and report["missing_text"] == []
        assert report["store_changes_seen"] > 0  # observers were told, with origin "store"

    with Replica(data) as replica:

        admit(replica)
        sp = replica.space(SPACE)
        for name in "ab":
            for i in range(N):
                assert sp.get("own", f"{name}-{i}") == {"i": i, "by": name}
        doc = sp.get("shared", "doc")
        for name in "ab":
            assert [doc[f"{name}{i}"] for i in range(N)] == list(range(N))
            # Every text and list insert is there once, in each writer's own order.
            assert [tok for tok in doc["log"].split(">") if tok.startswith(f"<{name}")] \
                == [f"<{name}{i}" for i in range(N)]
            assert [x for x in doc["items"] if x.startswith(name)] == [f"{name}{i}" for i in range(N)]
        assert len(doc["items"]) == 2 * N
        assert doc["last"] in (f"a-{N - 1}", f"b-{N - 1}")

        # One device, one chain: contiguous, no fork, and the version vector counts it.
        vv = replica.version_vector(SPACE)
        assert list(vv) == [replica.device_id]
        assert chains(replica, SPACE) == vv

        # A fresh replica verifies every envelope and chain link on import, and rebuilds
        # exactly the same state from them alone.
        with Replica(tmp_path / "fresh") as fresh:
            admit(fresh)
            share(replica, fresh, name=SPACE)  # every envelope, with fresh's grant
            assert fresh.version_vector(SPACE) == replica.version_vector(SPACE) == {
                replica.device_id: vv[replica.device_id] + 1}
            keys = {("own", f"{n}-{i}") for n in "ab" for i in range(N)} | {("shared", "doc")}
            assert space_state(fresh, SPACE, keys) == space_state(replica, SPACE, keys)


def test_a_transaction_starts_from_what_another_process_sealed(tmp_path: Path) -> None:
    """Two replicas on one directory (as two processes would be): a transaction of one
    begins with the other's sealed edits applied to the entities it has loaded."""
    a = Replica(tmp_path / "d", seal_interval=0)
    b = Replica(tmp_path / "d", seal_interval=0)
    try:
        a.space("s").put("c", "e", {"x": 1})
        assert b.space("s").get("c", "e") == {"x": 1}  # b has it loaded now
        a.space("s").put("c", "e", {"x": 2})
        a.seal()
        changes: list[Change] = []
        b.observe(changes.extend)
        with b.space("s").transaction() as tx:
            seen = tx.entity("c", "e").fields()
        assert seen == {"x": 2}
        assert [(c.id, c.origin) for c in changes] == [("e", "store")]
    finally:
        a.close()
        b.close()


def _open_store(directory: str, start: Any) -> None:
    from crdt_sync.store import Store
    start.wait()
    Store(Path(directory)).db.close()


def test_processes_creating_one_store_at_once_all_open_it(tmp_path: Path) -> None:
    """Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is
    locked" at once (no busy wait) to a second process doing the same: reproduced 66 times
    in 800 opens of four processes racing on fresh files before ``diskfaults.wal_mode``."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    for round_ in range(12):
        start = ctx.Barrier(4)
        (tmp_path / str(round_)).mkdir()
        procs = [ctx.Process(target=_open_store, args=(str(tmp_path / str(round_)), start)) for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(PROC_TIMEOUT)
        assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
