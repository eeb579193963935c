"""The integrator's API on real data directories: text and list fields, removing fields,
deleting and reviving entities, queries and observers (local, remote and another process)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync import Change, CrdtSyncError, NotFound, Replica, ValueRejected, _pycrdt_compat
from crdt_sync.entity import MAX_TX_BYTES_PER_ENTITY
from crdt_sync.values import MAX_TEXT_INSERT
from tests.conftest import ReplicaFactory
from tests.helpers import PROC_TIMEOUT, exchange, scalar_values, share, space_state, spawn_worker, typed


@pytest.fixture(autouse=True, params=["internals", "public-api"])
def pycrdt_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs on both of _pycrdt_compat's paths: pycrdt's internals (the fast
    path, when the installed pycrdt checks out) and its public API (the fallback)."""
    if request.param == "internals" and not _pycrdt_compat.INTERNALS:
        pytest.skip(f"pycrdt's internals are not usable here: {_pycrdt_compat.FALLBACK_REASON}")
    monkeypatch.setattr(_pycrdt_compat, "INTERNALS", request.param == "internals")
    return str(request.param)


def _reopened_and_copied(open_replica: ReplicaFactory, a: Replica, name: str) -> list[Replica]:
    """The same data seen three ways: a fresh open of ``a``'s directory, and another replica
    that received it by bundle. Callers assert each view is identical."""
    a.close()
    a = open_replica(name)
    b = open_replica(name + "-copy")
    share(a, b, name="s")
    return [a, b]


def test_text_field_operations(open_replica: ReplicaFactory) -> None:
    a = open_replica("a")
    sp = a.space("s")
    with sp.transaction() as tx:
        note = tx.entity("c", "e").text("note")
        note.append("hello")
        note.insert(0, ">> ")
        note.append(" world 🌍")
        assert str(note) == ">> hello world 🌍"
        assert len(note) == len(">> hello world 🌍")
    assert sp.get("c", "e") == {"note": ">> hello world 🌍"}
    with sp.transaction() as tx:
        note = tx.entity("c", "e").text("note")
        note.delete(0, 3)
        note.delete(5)  # default length 1: the space after "hello"
    assert sp.get("c", "e")["note"] == "helloworld 🌍"
    with sp.transaction() as tx:
        tx.entity("c", "e").text("other").set("first")
    with sp.transaction() as tx:
        tx.entity("c", "e").text("other").set("replaced\x00entirely")
    expected = {"note": "helloworld 🌍", "other": "replaced\x00entirely"}
    assert sp.get("c", "e") == expected
    for view in _reopened_and_copied(open_replica, a, "a"):
        assert view.space("s").get("c", "e") == expected


# Text and list edits follow Python's own semantics, which a Python model checks exactly:
# indices count characters (not UTF-8 bytes, which is what pycrdt counts) and out-of-range
# indices clamp like slicing / list.insert instead of panicking inside Yrs.
_ids = itertools.count()
TEXT_ALPHABET = "ab é中😀\x00"
text_ops = st.lists(st.tuples(st.sampled_from(["insert", "append", "delete"]),
                              st.integers(min_value=0, max_value=12), st.integers(min_value=0, max_value=4),
                              st.text(alphabet=TEXT_ALPHABET, min_size=1, max_size=4)), max_size=12)


@pytest.fixture(scope="module")
def shared_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    # One replica for all examples of a property (fresh entity ids): opening one per example
    # would dominate the run time without testing anything more.
    with Replica(tmp_path_factory.mktemp("shared")) as replica:
        yield replica


@settings(max_examples=60)
@given(ops=text_ops)
def test_text_edits_match_python_str(shared_replica: Replica, ops: list[tuple[str, int, int, str]]) -> None:
    sp, id = shared_replica.space("text"), f"e{next(_ids)}"
    model = ""
    with sp.transaction() as tx:
        tx.entity("c", id).text("t")
    for op, index, length, text in ops:
        with sp.transaction() as tx:
            field = tx.entity("c", id).text("t")
            if op == "insert":
                field.insert(index, text)
                model = model[:index] + text + model[index:]
            elif op == "append":
                field.append(text)
                model += text
            else:
                field.delete(index, length)
                model = model[:index] + model[index + length:]
            assert str(field) == model
            assert len(field) == len(model)
        assert sp.get("c", id)["t"] == model


@settings(max_examples=40)
@given(ops=st.lists(st.tuples(st.sampled_from(["insert", "append", "delete"]),
                              st.integers(min_value=0, max_value=8), st.integers(min_value=0, max_value=3),
                              scalar_values()), max_size=10))
def test_list_edits_match_python_list(shared_replica: Replica, ops: list[tuple[str, int, int, Any]]) -> None:
    sp, id = shared_replica.space("lists"), f"e{next(_ids)}"
    model: list[Any] = []
    for op, index, length, value in ops:
        with sp.transaction() as tx:
            field = tx.entity("c", id).list("l")
            if op == "insert":
                field.insert(index, value)
                model.insert(index, value)
            elif op == "append":
                field.append(value)
                model.append(value)
            else:
                field.delete(index, length)
                del model[index:index + length]
            assert len(field) == len(model)
        assert typed(sp.get("c", id)["l"]) == typed(model)


def test_text_edits_on_unicode_text_survive_reopen_and_exchange(open_replica: ReplicaFactory) -> None:
    a = open_replica("a")
    sp = a.space("s")
    with sp.transaction() as tx:
        t = tx.entity("c", "e").text("t")
        t.append("Prüfung: 🔧 ok")
    with sp.transaction() as tx:
        t = tx.entity("c", "e").text("t")
        t.insert(9, "Pumpe ")  # after "Prüfung: "
        t.delete(0, 1)  # the "P"
        t.insert(len(t), "!")
    expected = "rüfung: Pumpe 🔧 ok!"
    assert sp.get("c", "e")["t"] == expected
    for view in _reopened_and_copied(open_replica, a, "a"):
        assert view.space("s").get("c", "e")["t"] == expected


def test_list_field_operations(open_replica: ReplicaFactory) -> None:
    a = open_replica("a")
    sp = a.space("s")
    with sp.transaction() as tx:
        items = tx.entity("c", "e").list("items")
        items.append(1)
        items.extend([2.0, "three", b"four"])
        items.insert(0, None)
        items.insert(2, {"nested": [True]})
        assert len(items) == 6
    expected: list[Any] = [None, 1, {"nested": [True]}, 2.0, "three", b"four"]
    assert typed(sp.get("c", "e")["items"]) == typed(expected)
    with sp.transaction() as tx:
        items = tx.entity("c", "e").list("items")
        items.delete(1)  # the 1
        items.delete(2, 2)  # 2.0 and "three"
        assert typed(items.to_list()) == typed([None, {"nested": [True]}, b"four"])
    expected = [None, {"nested": [True]}, b"four"]
    assert typed(sp.get("c", "e")["items"]) == typed(expected)
    for view in _reopened_and_copied(open_replica, a, "a"):
        assert typed(view.space("s").get("c", "e")["items"]) == typed(expected)


def test_remove_field(open_replica: ReplicaFactory) -> None:
    a = open_replica("a")
    sp = a.space("s")
    sp.put("c", "e", {"keep": 1, "drop": 2, "t": 0})
    with sp.transaction() as tx:
        writer = tx.entity("c", "e")
        writer.remove("drop")
        writer.remove("never-set")  # removing what is absent is allowed and harmless
    assert sp.get("c", "e") == {"keep": 1, "t": 0}
    assert sp.find("c", drop=2) == []
    for view in _reopened_and_copied(open_replica, a, "a"):
        assert view.space("s").get("c", "e") == {"keep": 1, "t": 0}
    # A removed field can be set again.
    b = open_replica("a")
    b.space("s").put("c", "e", {"drop": "back"})
    assert b.space("s").get("c", "e") == {"keep": 1, "t": 0, "drop": "back"}


def test_delete_and_revive(open_replica: ReplicaFactory) -> None:
    a = open_replica("a")
    sp = a.space("s")
    sp.put("c", "e", {"v": 1})
    sp.put("c", "other", {"v": 1})
    b = open_replica("b")
    share(a, b, name="s")

    sp.delete("c", "e")
    with pytest.raises(NotFound):
        sp.get("c", "e")
    assert not sp.exists("c", "e")
    assert sp.list() == [("c", "other")]
    assert sp.find("c", v=1) == ["other"]
    with pytest.raises(NotFound):
        sp.delete("c", "e")  # already deleted
    with pytest.raises(NotFound):
        sp.delete("c", "never-existed")
    with pytest.raises(NotFound):
        sp.get("c", "never-existed")

    # The tombstone travels: b sees the delete after an exchange.
    exchange(a, b, "s")
    with pytest.raises(NotFound):
        b.space("s").get("c", "e")
    assert b.space("s").list() == [("c", "other")]

    # And survives a reopen.
    a.close()
    a = open_replica("a")
    sp = a.space("s")
    with pytest.raises(NotFound):
        sp.get("c", "e")

    # A put after the delete revives it, here and after an exchange.
    sp.put("c", "e", {"v": 2, "new": True})
    fields = sp.get("c", "e")
    assert fields["v"] == 2 and fields["new"] is True
    assert ("c", "e") in sp.list()
    assert sp.find("c", v=2) == ["e"]
    exchange(a, b, "s")
    assert b.space("s").get("c", "e") == fields


def test_list_and_find_use_exact_types(replica: Replica) -> None:
    sp = replica.space("s")
    sp.put("pumps", "int", {"v": 1, "site": "north"})
    sp.put("pumps", "float", {"v": 1.0, "site": "north"})
    sp.put("pumps", "bool", {"v": True, "site": "south"})
    sp.put("pumps", "str", {"v": "1", "site": "south"})
    sp.put("pumps", "bytes", {"v": b"1"})
    sp.put("pumps", "none", {"v": None})
    sp.put("valves", "int", {"v": 1})
    assert sp.find("pumps", v=1) == ["int"]
    assert sp.find("pumps", v=1.0) == ["float"]
    assert sp.find("pumps", v=True) == ["bool"]
    assert sp.find("pumps", v="1") == ["str"]
    with pytest.raises(ValueRejected, match="query index holds"):  # bytes are not indexed
        sp.find("pumps", v=b"1")
    assert sp.find("pumps", v=None) == ["none"]
    assert sp.find("pumps", v=2) == []
    assert sp.find("pumps", site="north") == ["float", "int"]
    assert sp.find("pumps", site="north", v=1) == ["int"]  # several conditions: all must hold
    assert sp.find("valves", v=1) == ["int"]
    assert sp.find("nothing-here", v=1) == []
    assert sp.list("valves") == [("valves", "int")]
    assert sp.list() == [("pumps", p) for p in ("bool", "bytes", "float", "int", "none", "str")] \
        + [("valves", "int")]
    # The index follows changes: a new value moves the entity between results.
    sp.put("pumps", "int", {"v": 2})
    assert sp.find("pumps", v=1) == []
    assert sp.find("pumps", v=2) == ["int"]
    # Spaces are separate.
    assert replica.space("elsewhere").list() == []


def test_find_matches_equal_dicts_whatever_their_key_order(replica: Replica) -> None:
    # {"a": 1, "b": 2} == {"b": 2, "a": 1} in Python: a query by value must not depend on the
    # order the keys happened to be inserted in.
    sp = replica.space("s")
    sp.put("c", "e", {"where": {"a": 1, "b": 2}})
    assert sp.find("c", where={"a": 1, "b": 2}) == ["e"]
    assert sp.find("c", where={"b": 2, "a": 1}) == ["e"]


def test_find_and_list_see_remote_changes(open_replica: ReplicaFactory) -> None:
    a, b = open_replica("a"), open_replica("b")
    a.space("s").put("c", "x", {"status": "ok"})
    share(a, b, name="s")
    assert b.space("s").find("c", status="ok") == ["x"]
    assert b.space("s").list() == [("c", "x")]


# -- observers -------------------------------------------------------------------------------
def test_observer_sees_local_changes(replica: Replica) -> None:
    sp = replica.space("s")
    seen: list[list[Change]] = []
    unsubscribe = sp.observe(seen.append)
    other_space: list[list[Change]] = []
    replica.space("other").observe(other_space.append)

    with sp.transaction() as tx:  # one transaction, two entities: one notification
        tx.put("c", "a", {"v": 1})
        tx.entity("c", "b").text("t").append("x")
    assert seen == [[Change(sp.id, "c", "a", "local"), Change(sp.id, "c", "b", "local")]]
    sp.delete("c", "a")
    assert seen[-1] == [Change(sp.id, "c", "a", "local")]
    assert other_space == []

    unsubscribe()
    sp.put("c", "a", {"v": 2})
    assert len(seen) == 2


def test_observer_sees_imported_bundles_as_remote(open_replica: ReplicaFactory) -> None:
    a, b = open_replica("a"), open_replica("b")
    a.space("s").put("c", "x", {"v": 1})
    a.space("s").put("c", "y", {"v": 1})
    seen: list[Change] = []
    b.observe(seen.extend)
    share(a, b, name="s")
    sid = a.space_id("s")
    assert sorted(seen, key=lambda c: c.id) == [Change(sid, "c", "x", "remote"),
                                                Change(sid, "c", "y", "remote")]
    seen.clear()
    exchange(a, b, "s")  # nothing new: nothing to tell
    assert seen == []


def test_observer_sees_another_process_as_store(tmp_path: Path) -> None:
    data = tmp_path / "shared"
    with Replica(data) as replica:
        sp = replica.space("s")
        sp.put("c", "mine", {"v": 0})
        seen: list[Change] = []
        sp.observe(seen.extend)

        proc = spawn_worker("put", str(data), "s", "c", "theirs", json.dumps({"v": 1, "who": "child"}))
        _, err = proc.communicate(timeout=PROC_TIMEOUT)
        assert proc.returncode == 0, err

        assert seen == []  # nothing is pushed: refresh() picks it up
        replica.refresh()
        assert seen == [Change(sp.id, "c", "theirs", "store")]
        assert sp.get("c", "theirs") == {"v": 1, "who": "child"}
        assert sp.find("c", who="child") == ["theirs"]
        assert sp.list() == [("c", "mine"), ("c", "theirs")]
        before = space_state(replica, "s")
    with Replica(data) as again:
        assert space_state(again, "s") == before


def test_another_process_sees_changes_to_a_loaded_entity(tmp_path: Path) -> None:
    # The entity is loaded (cached) here before the other process changes it: refresh must
    # merge the change into the loaded document, not only tell observers.
    data = tmp_path / "shared"
    with Replica(data) as replica:
        sp = replica.space("s")
        sp.put("c", "e", {"mine": 1})
        replica.seal()
        assert sp.get("c", "e") == {"mine": 1}
        seen: list[Change] = []
        sp.observe(seen.extend)
        proc = spawn_worker("put", str(data), "s", "c", "e", json.dumps({"theirs": 2}))
        _, err = proc.communicate(timeout=PROC_TIMEOUT)
        assert proc.returncode == 0, err
        assert sp.get("c", "e") == {"mine": 1, "theirs": 2}
        assert seen == [Change(sp.id, "c", "e", "store")]


ascii_ops = st.lists(st.lists(st.tuples(st.sampled_from(["insert", "delete"]),
                                        st.integers(min_value=-3, max_value=14),
                                        st.integers(min_value=-1, max_value=5),
                                        st.text(alphabet="abc xyz", min_size=1, max_size=3)),
                              min_size=1, max_size=4), max_size=10)


@settings(max_examples=60)
@given(batches=ascii_ops)
def test_typing_fast_path_matches_python_str(shared_replica: Replica,
                                             batches: list[list[tuple[str, int, int, str]]]) -> None:
    """ASCII typing takes the lean path (known length, the binding called directly); it must
    behave as the general path does, out-of-range indices included, in multi-edit transactions."""
    sp, id = shared_replica.space("typing"), f"e{next(_ids)}"
    model = ""
    for batch in batches:
        with sp.transaction() as tx:
            field = tx.entity("c", id).text("t")
            for op, index, length, text in batch:
                if op == "insert":
                    at = min(max(index + len(model) if index < 0 else index, 0), len(model))
                    field.insert(index, text)
                    model = model[:at] + text + model[at:]
                else:
                    start = min(max(index + len(model) if index < 0 else index, 0), len(model))
                    field.delete(index, length)
                    model = model[:start] + model[start + max(length, 0):]
            assert str(field) == model
    if batches:
        assert sp.get("c", id)["t"] == model


def test_a_failed_journal_write_raises_and_loses_only_that_transaction(
        open_replica: ReplicaFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    a = open_replica("a")
    sp = a.space("s")
    with sp.transaction() as tx:
        tx.entity("c", "one").text("t").insert(0, "kept")
        tx.put("c", "two", {"n": 1})

    def full_disk(*record: object) -> None:
        raise OSError(28, "No space left on device")

    # The journal is full: no room left in the mapped file, and growing it fails.
    monkeypatch.setattr(a._journal, "limit", a._journal.size)
    monkeypatch.setattr(a._journal, "append_record", full_disk)
    with pytest.raises(OSError, match="No space left"), sp.transaction() as tx:
        tx.entity("c", "one").text("t").insert(4, " lost")
        tx.put("c", "two", {"n": 2})
    monkeypatch.undo()
    # Memory matches the disk again (the edits that did not reach the journal are gone) ...
    assert sp.get("c", "one") == {"t": "kept"}
    assert sp.get("c", "two") == {"n": 1}
    # ... and the replica keeps working.
    with sp.transaction() as tx:
        tx.entity("c", "one").text("t").insert(4, "!")
    a.close()
    b = open_replica("a")
    assert b.space("s").get("c", "one") == {"t": "kept!"}
    assert b.space("s").get("c", "two") == {"n": 1}


def test_writers_are_reused_across_transactions_and_refuse_an_ended_one(replica: Replica) -> None:
    sp = replica.space("s")
    with sp.transaction() as tx:
        first = tx.entity("c", "e")
        first.set("n", 1)
        body = first.text("body")
        body.insert(0, "ab")
    with sp.transaction() as tx:
        again = tx.entity("c", "e")
        assert again is first  # handed to this transaction
        assert again.text("body") is body
        again.set("n", 2)
        body.insert(2, "c")
    assert sp.get("c", "e") == {"n": 2, "body": "abc"}
    with pytest.raises(CrdtSyncError, match="transaction has ended"):
        first.set("n", 3)
    with pytest.raises(CrdtSyncError, match="transaction has ended"):
        first.text("other")
    assert sp.get("c", "e") == {"n": 2, "body": "abc"}


def test_typing_fast_path_still_refuses_oversized_inserts(replica: Replica) -> None:
    sp = replica.space("s")
    with sp.transaction() as tx:
        tx.entity("c", "e").text("t").insert(0, "ab")  # a known-ASCII text from here on
    with pytest.raises(ValueRejected, match="text insert larger"), sp.transaction() as tx:
        tx.entity("c", "e").text("t").insert(1, "x" * (MAX_TEXT_INSERT + 1))
    assert sp.get("c", "e") == {"t": "ab"}
    with pytest.raises(ValueRejected, match="into one entity"), sp.transaction() as tx:
        field = tx.entity("c", "e").text("t")
        for _ in range(MAX_TX_BYTES_PER_ENTITY // MAX_TEXT_INSERT + 1):
            field.insert(0, "y" * MAX_TEXT_INSERT)
    # what was written before the refusal stays (transactions do not roll back), nothing more
    assert len(sp.get("c", "e")["t"]) == 2 + MAX_TX_BYTES_PER_ENTITY
