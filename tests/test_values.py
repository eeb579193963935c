"""Values round-trip exactly (type included) through set/get, close+reopen and a bundle to
another replica; what the CRDT cannot hold is refused with ValueRejected and changes nothing."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync import EntityWriter, NotFound, Replica, Space, ValueRejected
from crdt_sync.values import MAX_DEPTH, MAX_VALUE_BYTES
from tests.conftest import ReplicaFactory
from tests.helpers import exchange, space_state, typed, values

# One field per hard case: each is something pycrdt alone would change or refuse.
EDGE_VALUES: dict[str, Any] = {
    "int_max_signed": 2**63 - 1,
    "int_2_63": 2**63,
    "int_min": -(2**63),
    "int_max": 2**64 - 1,
    "int_zero": 0,
    "int_small": 7,
    "float_whole": 7.0,
    "float_neg_zero": -0.0,
    "float_subnormal": 5e-324,
    "float_third": 1 / 3,
    "true": True,
    "false": False,
    "none": None,
    "bytes_empty": b"",
    "bytes_binary": bytes(range(256)),
    "str_empty": "",
    "str_nul": "a\x00b\x00",
    "str_emoji": "👩🏽‍🔧 fixed pump 🚰",
    "str_astral": "\U0010ffff\U0001f600",
    "str_rtl": "שלום مرحبا",
    "list_mixed": [1, 1.0, True, None, b"x", "x", [], {}],
    "dict_nested": {"a": {"b": [1, {"c": b"\x00"}]}, "": -0.0, "\x00": 2**64 - 1},
    "deep": [[[[[[[[1]]]]]]]],
}


def _assert_exact(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert typed(got) == typed(expected)


def test_edge_values_round_trip_set_get_reopen_and_bundle(open_replica: ReplicaFactory) -> None:
    a = open_replica("a")
    a.space("s").put("things", "edge", EDGE_VALUES)
    _assert_exact(a.space("s").get("things", "edge"), EDGE_VALUES)

    # Each field written on its own through the writer API as well.
    with a.space("s").transaction() as tx:
        writer = tx.entity("things", "one-by-one")
        for name, value in EDGE_VALUES.items():
            writer.set(name, value)
    _assert_exact(a.space("s").get("things", "one-by-one"), EDGE_VALUES)

    a.close()
    a = open_replica("a")  # from the store alone: nothing cached
    _assert_exact(a.space("s").get("things", "edge"), EDGE_VALUES)
    _assert_exact(a.space("s").get("things", "one-by-one"), EDGE_VALUES)

    b = open_replica("b")
    exchange(a, b, "s")
    _assert_exact(b.space("s").get("things", "edge"), EDGE_VALUES)
    _assert_exact(b.space("s").get("things", "one-by-one"), EDGE_VALUES)


def test_edge_values_round_trip_as_list_elements(open_replica: ReplicaFactory) -> None:
    a = open_replica("a")
    items = list(EDGE_VALUES.values())
    with a.space("s").transaction() as tx:
        tx.entity("things", "l").list("items").extend(items)
    assert typed(a.space("s").get("things", "l")["items"]) == typed(items)
    b = open_replica("b")
    exchange(a, b, "s")
    assert typed(b.space("s").get("things", "l")["items"]) == typed(items)


@settings(max_examples=25)
@given(fields=st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda s: "\x00" not in s
                                                                       and "\x01" not in s),
                              values(), min_size=1, max_size=5))
def test_random_values_round_trip(fields: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with Replica(Path(tmp) / "a") as a:
            a.space("s").put("c", "e", fields)
            _assert_exact(a.space("s").get("c", "e"), fields)
        with Replica(Path(tmp) / "a") as a, Replica(Path(tmp) / "b") as b:
            _assert_exact(a.space("s").get("c", "e"), fields)
            exchange(a, b, "s")
            _assert_exact(b.space("s").get("c", "e"), fields)


# -- refusals --------------------------------------------------------------------------------
class Unsupported:
    pass


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


BAD_VALUES: dict[str, Any] = {
    "int_2_64": 2**64,
    "int_below_min": -(2**63) - 1,
    "int_huge": 10**100,
    "nan": math.nan,
    "nan_nested": [1, {"x": math.nan}],
    # refused since issue 11: JSON cannot carry them, so `--json` could not print them
    "inf": math.inf,
    "neg_inf": -math.inf,
    "inf_nested": [1, {"x": -math.inf}],
    "surrogate_dict_key": {"\udcff": 1},
    "lone_surrogate": "ok\ud800",
    "surrogate_in_dict_value": {"k": "\udfff"},
    "oversize_bytes": b"x" * (MAX_VALUE_BYTES + 1),
    "oversize_str": "é" * (MAX_VALUE_BYTES // 2 + 1),
    "oversize_nested": [b"y" * 40_000, b"z" * 40_000],
    "int_dict_key": {1: "one"},
    "bytes_dict_key": {b"k": 1},
    "nested_bad_key": {"a": [{None: 1}]},
    "too_deep": _nested(MAX_DEPTH + 2),
    "set": {1, 2},
    "object": Unsupported(),
    "complex": 1j,
    "bytearray": bytearray(b"x"),
}


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_refused_values_change_nothing(open_replica: ReplicaFactory, name: str) -> None:
    bad = BAD_VALUES[name]
    r = open_replica("r")
    sp = r.space("s")
    sp.put("c", "kept", {"v": 1})
    with sp.transaction() as tx:
        kept = tx.entity("c", "kept")
        kept.text("t").append("text")
        kept.list("l").append(1)  # made a list field here: list() on a plain field converts it
    calls: list[Any] = []
    sp.observe(calls.append)
    before = space_state(r, "s", {("c", "new")})

    attempts: list[Callable[[], None]] = [
        lambda: sp.put("c", "kept", {"ok": 2, "bad": bad}),  # a good field alongside
        lambda: sp.put("c", "new", {"bad": bad}),
        lambda: _in_tx(sp, lambda w: w.set("v", bad)),
        lambda: _in_tx(sp, lambda w: w.update({"ok": 2, "v": bad})),
        lambda: _in_tx(sp, lambda w: w.list("l").append(bad)),
        lambda: _in_tx(sp, lambda w: w.list("l").insert(0, bad)),
        lambda: _in_tx(sp, lambda w: w.list("l").extend([5, bad])),
        lambda: _in_tx(sp, lambda w: w.set("v", bad), id="new"),
    ]
    for attempt in attempts:
        with pytest.raises(ValueRejected):
            attempt()

    assert space_state(r, "s", {("c", "new")}) == before
    assert r.unsealed() == 0
    assert calls == []
    # ...and still nothing after the store is read back from disk.
    r.close()
    r = open_replica("r")
    assert space_state(r, "s", {("c", "new")}) == before
    with pytest.raises(NotFound):
        r.space("s").get("c", "new")


def _in_tx(sp: Space, write: Callable[[EntityWriter], object], id: str = "kept") -> None:
    with sp.transaction() as tx:
        write(tx.entity("c", id))


@pytest.mark.parametrize("text", ["bad\ud800", "x" * (MAX_VALUE_BYTES + 1)])
def test_refused_text_changes_nothing(replica: Replica, text: str) -> None:
    sp = replica.space("s")
    with sp.transaction() as tx:
        tx.entity("c", "e").text("t").append("keep")
    before = space_state(replica, "s")
    for op in ("insert", "append", "set"):
        with pytest.raises(ValueRejected), sp.transaction() as tx:
            field = tx.entity("c", "e").text("t")
            if op == "insert":
                field.insert(0, text)
            else:
                getattr(field, op)(text)
    assert space_state(replica, "s") == before


@pytest.mark.parametrize("name", ["", "a\x00b", "\x01deleted", 5, None, "x" * 257, "\udcff"])
def test_refused_field_names(replica: Replica, name: Any) -> None:
    sp = replica.space("s")
    sp.put("c", "e", {"v": 1})
    before = space_state(replica, "s")
    with pytest.raises(ValueRejected):
        sp.put("c", "e", {name: 1})
    with pytest.raises(ValueRejected), sp.transaction() as tx:
        tx.entity("c", "e").set(name, 1)
    assert space_state(replica, "s") == before


def test_value_rejected_is_a_value_error() -> None:
    # Integrators catching ValueError keep working; the engine's root error still applies.
    from crdt_sync import CrdtSyncError

    assert issubclass(ValueRejected, ValueError)
    assert issubclass(ValueRejected, CrdtSyncError)


def test_the_largest_allowed_value_is_accepted(replica: Replica) -> None:
    # Exactly at the documented limit: accepted (the refusal above is not off by a mile).
    import cbor2

    payload = b"x" * (MAX_VALUE_BYTES - 3)  # 3 bytes of CBOR header
    assert len(cbor2.dumps(payload)) == MAX_VALUE_BYTES
    replica.space("s").put("c", "big", {"v": payload})
    assert replica.space("s").get("c", "big")["v"] == payload
    with pytest.raises(ValueRejected):  # one byte more is refused
        replica.space("s").put("c", "big", {"v": payload + b"x"})
