"""Issue 14's local parts: the value index holds only what ``find`` can use, compaction
(on close, when idle, past a count or byte threshold) loses nothing and changes no answer,
a kill -9 during compaction loses nothing, and ``list --json`` streams (flat memory)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_sync import Replica, ValueRejected
from crdt_sync.replica import IDLE_FOLD_AFTER
from crdt_sync.sealing import SNAPSHOT_AFTER_BYTES, SNAPSHOT_AFTER_PARTS
from crdt_sync.values import INDEX_MAX_STR
from tests.helpers import PROC_TIMEOUT, REPO, LineReader, exchange, read_entity, share

COMPACT_WORKER = Path(__file__).resolve().with_name("compact_worker.py")


def _index_rows(replica: Replica, space: str) -> dict[tuple[str, str], bytes]:
    db = sqlite3.connect(replica.path / "store.sqlite3")
    try:
        return {(e, f): bytes(v) for e, f, v in db.execute(
            "SELECT entity, field, value FROM fields WHERE space=?", (replica.space_id(space),))}
    finally:
        db.close()


# -- the value index ---------------------------------------------------------------------------
def test_index_leaves_out_bytes_and_long_strings(tmp_path: Path) -> None:
    with Replica(tmp_path / "a") as replica:
        sp = replica.create_space("s")
        long = "x" * (INDEX_MAX_STR + 1)
        sp.put("c", "e", {"photo": b"\x00" * 1024, "note": long, "name": "x" * INDEX_MAX_STR,
                          "n": 3, "ok": True, "none": None, "tags": ["a", "b"], "blob": [b"x"]})
        rows = _index_rows(replica, "s")
        assert {f for _, f in rows} == {"name", "n", "ok", "none", "tags"}
        assert sp.find("c", name="x" * INDEX_MAX_STR) == ["e"]
        assert sp.find("c", n=3) == sp.find("c", ok=True) == sp.find("c", tags=["a", "b"]) == ["e"]
        for where in ({"photo": b"\x00" * 1024}, {"note": long}, {"blob": [b"x"]}):
            with pytest.raises(ValueRejected, match="query index holds"):
                sp.find("c", **where)
        # the values themselves are all there
        assert sp.get("c", "e")["photo"] == b"\x00" * 1024 and sp.get("c", "e")["note"] == long
        # a field that grows past the limit leaves the index; one that shrinks comes back
        sp.put("c", "e", {"name": long, "note": "short"})
        assert sp.find("c", note="short") == ["e"]
        assert "name" not in {f for _, f in _index_rows(replica, "s")}


# -- compaction --------------------------------------------------------------------------------
def _since_snapshot(replica: Replica, space: str, entity: str) -> tuple[int, int, int]:
    return replica._store.parts_since_snapshot((replica.space_id(space), "docs", entity))


def test_close_folds_what_grew_and_a_burst_of_typing_is_folded_past_the_byte_threshold(
        tmp_path: Path) -> None:
    replica = Replica(tmp_path / "a")
    sp = replica.create_space("s")
    # few seals of many keystrokes (below the part count): the byte threshold folds them
    for k in range(4000):
        with sp.transaction() as tx:
            tx.entity("docs", "burst").text("body").append("abcdefghij"[k % 10])
        if k % 500 == 499:
            replica.seal()
    count, size, _ = _since_snapshot(replica, "s", "burst")
    assert count < SNAPSHOT_AFTER_PARTS and size < SNAPSHOT_AFTER_BYTES + 64 * 1024
    for k in range(3):  # three small seals: below both thresholds until close
        sp.put("docs", "small", {"v": k})
        replica.seal()
    assert _since_snapshot(replica, "s", "small")[0] == 3
    replica.close()
    with Replica(tmp_path / "a") as replica:
        assert _since_snapshot(replica, "s", "small")[0] == 0
        assert _since_snapshot(replica, "s", "burst")[0] == 0
        assert replica.space("s").get("docs", "burst")["body"] == "abcdefghij" * 400
        assert replica.space("s").get("docs", "small") == {"v": 2}


def test_maintain_folds_when_idle(tmp_path: Path) -> None:
    with Replica(tmp_path / "a") as replica:
        sp = replica.create_space("s")
        for k in range(3):
            sp.put("docs", "e", {"v": k})
            replica.seal()
        sealed_at = replica._sealed_at
        replica.maintain(now=sealed_at + IDLE_FOLD_AFTER / 2)  # not idle yet
        assert _since_snapshot(replica, "s", "e")[0] == 3
        replica.maintain(now=sealed_at + IDLE_FOLD_AFTER)
        assert _since_snapshot(replica, "s", "e")[0] == 0
        assert sp.get("docs", "e") == {"v": 2}


_ops = st.lists(st.one_of(
    st.tuples(st.just("put"), st.integers(0, 1), st.integers(0, 2), st.sampled_from("xyz"),
              st.one_of(st.integers(-3, 3), st.text(max_size=3), st.booleans(), st.none())),
    st.tuples(st.just("text"), st.integers(0, 1), st.integers(0, 2), st.text("ab", min_size=1, max_size=3)),
    st.tuples(st.just("delete"), st.integers(0, 1), st.integers(0, 2)),
    st.tuples(st.just("seal"), st.integers(0, 1)),
    st.tuples(st.just("sync"))), min_size=1, max_size=25)


def _answers(replica: Replica) -> dict[str, Any]:
    sp = replica.space("s")
    return {"state": {e: read_entity(replica, "s", "docs", f"e{e}") for e in range(3)},
            "conflicts": sp.conflicts(),
            "history": {e: sp.history("docs", f"e{e}") for e in range(3)
                        if read_entity(replica, "s", "docs", f"e{e}") is not None},
            "find": {v: sp.find("docs", x=v) for v in (-1, 0, 1, True, "a")}}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
def test_compaction_changes_no_answer(tmp_path_factory: pytest.TempPathFactory, ops: list[Any]) -> None:
    """Random puts, text edits, deletes and concurrent writes from two devices; then every
    entity of ``a`` is folded and ``a`` reopened: values, conflicts (and their winners),
    history and find give the same answers as before, and as a replica that never folded."""
    tmp = tmp_path_factory.mktemp("fold")
    a, b = Replica(tmp / "a"), Replica(tmp / "b")
    try:
        share(a, b, name="s")
        for op in ops:
            r = (a, b)[op[1]] if op[0] != "sync" else a
            if op[0] == "put":
                r.space("s").put("docs", f"e{op[2]}", {op[3]: op[4]})
            elif op[0] == "text":
                with r.space("s").transaction() as tx:
                    tx.entity("docs", f"e{op[2]}").text("t").append(op[3])
            elif op[0] == "delete":
                if read_entity(r, "s", "docs", f"e{op[2]}") is not None:
                    r.space("s").delete("docs", f"e{op[2]}")
            elif op[0] == "seal":
                r.seal()
            else:
                exchange(a, b, "s")
                exchange(b, a, "s")
        exchange(b, a, "s")
        before = _answers(a)
        sid = a.space_id("s")
        for e in range(3):
            a._sealer.compact((sid, "docs", f"e{e}"), parts=1)
        a.close()
        a = Replica(tmp / "a")
        assert _answers(a) == before
        # a third device that replays every envelope (no snapshot) agrees too
        c = Replica(tmp / "c")
        try:
            exchange(a, c, "s")
            assert _answers(c)["state"] == before["state"]
            assert _answers(c)["conflicts"] == before["conflicts"]
        finally:
            c.close()
    finally:
        a.close()
        b.close()


def test_kill_during_compaction_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "d"
    for round_ in range(3):
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([sys.executable, str(COMPACT_WORKER), str(data)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        reader = LineReader(proc)
        try:
            ready = reader.next()
            assert ready is not None and ready.startswith("ready"), proc.stderr
            reported = []
            for _ in range(40 + 17 * round_):  # each line is followed by a fold
                line = reader.next()
                assert line is not None
                reported.append(int(line))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=PROC_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=PROC_TIMEOUT)
        reported += [int(line) for line in reader.rest() if line.endswith("\n")]
        with Replica(data) as replica:
            sp = replica.space("fold")
            body = sp.get("docs", "d")["body"]
            have = [int(x) for x in body.split(";") if x]
            assert have == list(range(len(have)))  # gap-free, in order
            assert set(reported) <= set(have)
            for i in reported:
                assert sp.get("items", f"i{i}") == {"n": i}
            # the snapshot and the parts agree: a replay of the parts alone gives the same text
            assert replica.export_bundle("fold")  # the chain is intact (export reads it)
            c = Replica(tmp_path / f"check{round_}")
            try:
                exchange(replica, c, "fold")
                assert c.space("fold").get("docs", "d")["body"] == body
            finally:
                c.close()


# -- streaming reads ---------------------------------------------------------------------------
def _make_space(data: Path, entities: int) -> None:
    with Replica(data) as replica:
        sp = replica.create_space("s")
        for lo in range(0, entities, 1000):
            with sp.transaction() as tx:
                for k in range(lo, min(entities, lo + 1000)):
                    tx.put("assets", f"a{k:06d}", {"site": k % 100, "serial": f"SN-{k:08d}"})


_LIST_PEAK = ("import sys; from crdt_sync.cli.main import main; "
              "rc = main(['--data', sys.argv[1], '--json', 'list', 's']); sys.stdout.flush(); "
              "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0], file=sys.stderr); "
              "sys.exit(rc)")


def _list_json(data: Path) -> tuple[int, int]:
    """``(peak RSS KiB, entities listed)`` of a ``crdt-sync list --json`` subprocess."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _LIST_PEAK, str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    assert proc.stdout is not None
    text = proc.stdout.read()  # the test holds it; the child streams it
    out, err = proc.communicate(timeout=PROC_TIMEOUT)
    assert proc.returncode == 0, err
    rows = json.loads(text + out)
    assert rows[0] == {"collection": "assets", "id": "a000000",
                       "fields": {"site": 0, "serial": "SN-00000000"}}
    return int(err.strip().splitlines()[-1]), len(rows)


def test_list_json_memory_is_flat_in_the_size_of_the_space(tmp_path: Path) -> None:
    _make_space(tmp_path / "small", 2000)
    _make_space(tmp_path / "big", 20000)
    small, n_small = _list_json(tmp_path / "small")
    big, n_big = _list_json(tmp_path / "big")
    assert (n_small, n_big) == (2000, 20000)
    # 10x the entities: before streaming the peak grew by ~25 MiB (45 -> 70 MiB)
    assert big - small < 6 * 1024, (small, big)


# -- one update per entity per envelope -------------------------------------------------------
def test_a_burst_of_transactions_travels_as_one_merged_update_per_entity(tmp_path: Path) -> None:
    """200 keystrokes and a register write on one entity, sealed together: the envelope holds
    one item for it (smaller than the 201 updates), the receiver ends with the same text and
    fields, and history has one entry for the seal."""
    from crdt_sync.envelope import open_envelope
    from crdt_sync.space_crypto import decrypt_payload

    with Replica(tmp_path / "a", seal_interval=3600, seal_max_wait=3600) as a, Replica(tmp_path / "b") as b:
        space = share(a, b)
        site = a.space(space)
        site.put("notes", "n-0", {"status": "first"})
        a.seal()  # (sealed on its own: the burst below is what is measured)
        before = a.version_vector(space)[a.device_id]
        for i in range(200):
            with site.transaction() as tx:
                tx.entity("notes", "n-1").text("body").append("xy"[i % 2])
        site.put("notes", "n-1", {"status": "draft"})
        a.seal()
        assert a.version_vector(space)[a.device_id] == before + 1  # one envelope
        wire = a.sync_host.envelope_wire(space, a.device_id, before + 1)
        assert wire is not None
        env = open_envelope(wire)
        from crdt_sync.payload import decode_payload

        keys = a.secrets.keyring().keys_of(space)
        body = decrypt_payload(keys, space, env.author_key, env.seq, env.payload)
        [(coll, ent, blob, items)] = decode_payload(body)
        assert (coll, ent, len(items)) == ("notes", "n-1", 1)
        assert len(blob) < 4_000  # 201 updates of 20 bytes or more each (header included), merged
        exchange(a, b, space)
        want = a.space(space).get("notes", "n-1")
        assert want is not None and want["body"] == "xy" * 100 and want["status"] == "draft"
        assert b.space(space).get("notes", "n-1") == want
        assert len(b.space(space).history("notes", "n-1")) == 1
