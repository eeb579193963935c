"""Values the CRDT cannot hold are refused with exit 5 and a message naming the field, through
real ``crdt-sync`` processes and through the API alike (issue 11, "Local damage is contained
and said"): non-finite floats (``1e400`` is Infinity), names that are not UTF-8 (a command
line byte that is not UTF-8 arrives as a lone surrogate), values nested too deep (a 50,000
deep JSON array used to overflow the parser's recursion)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from crdt_sync import Replica, ValueRejected
from crdt_sync.values import MAX_DEPTH, loads_json, to_json
from tests.test_damage_journal import cli

REFUSED = 5


def _refused(data: Path, *args: str | bytes) -> dict[str, object]:
    result = cli(data, *args, "--json")  # type: ignore[arg-type]
    assert result.returncode == REFUSED, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["code"] == REFUSED and error["kind"] == "value-rejected"
    return dict(error)


@pytest.mark.parametrize("arg", ["n=1e400", "n=-1e400", 'n=[1, {"a": 1e999}]'])
def test_non_finite_floats_are_refused(tmp_path: Path, arg: str) -> None:
    error = _refused(tmp_path, "put", "s", "c", "e", arg)
    assert "field 'n'" in str(error["message"]) and "Infinity" in str(error["message"])
    assert cli(tmp_path, "get", "s", "c", "e").returncode == 3  # nothing was written


def test_nan_is_not_json_so_it_is_a_string(tmp_path: Path) -> None:
    """``NaN`` is not JSON: by the documented rule it is the string "NaN", never a float."""
    put = cli(tmp_path, "put", "s", "c", "e", "n=NaN", "--json")
    assert put.returncode == 0 and json.loads(put.stdout)["fields"] == {"n": "NaN"}


def test_a_non_utf8_field_name_is_refused(tmp_path: Path) -> None:
    error = _refused(tmp_path, "put", "s", "c", "e", b"\xff=1")
    assert "field name '\\udcff'" in str(error["message"])
    error = _refused(tmp_path, "put", "s", "c", "e", b'x={"\xfe": 1}')
    assert "field 'x'" in str(error["message"]) and "'\\udcfe'" in str(error["message"])
    error = _refused(tmp_path, "put", "s", b"c\xff", "e", "n=1")
    assert "collection 'c\\udcff'" in str(error["message"])


def test_a_50000_deep_value_is_refused(tmp_path: Path) -> None:
    deep = "[" * 50_000 + "]" * 50_000
    error = _refused(tmp_path, "put", "s", "c", "e", f"x={deep}")
    assert "field 'x'" in str(error["message"]) and f"deeper than {MAX_DEPTH}" in str(error["message"])
    ok = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)  # the limit itself is fine
    assert cli(tmp_path, "put", "s", "c", "e", f"x={ok}").returncode == 0


def test_the_api_refuses_them_too(tmp_path: Path) -> None:
    with Replica(tmp_path / "r") as replica:
        space = replica.space("s")
        cases: list[tuple[dict[str, object], str]] = [
            ({"n": math.inf}, "field 'n': Infinity"),
            ({"n": [-math.inf]}, "field 'n': -Infinity"),
            ({"n": math.nan}, "field 'n': NaN"),
            ({"\udcff": 1}, "field name '\\udcff'"),
            ({"d": {"\udcff": 1}}, "field 'd': dict key"),
            ({"d": _nested(MAX_DEPTH + 1)}, f"field 'd': value nested deeper than {MAX_DEPTH}"),
        ]
        for fields, message in cases:
            with pytest.raises(ValueRejected, match="^" + message.replace("\\", "\\\\")):
                space.put("c", "e", fields)
        assert not space.exists("c", "e")
        with space.transaction() as tx:
            items = tx.entity("c", "e").list("l")
            with pytest.raises(ValueRejected, match="Infinity"):
                items.append(math.inf)
        assert space.get("c", "e") == {"l": []}


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


def test_json_forms() -> None:
    assert to_json([math.inf, -math.inf, 1.5]) == [
        {"$float": "Infinity"}, {"$float": "-Infinity"}, 1.5]
    assert loads_json('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}') == {
        "a": "[" * 38}  # brackets inside strings do not nest
    with pytest.raises(ValueError):
        loads_json("Infinity")


def test_an_infinity_already_stored_prints_as_valid_json(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A store written by an older crdt-sync (which let 1e400 through) still reads, and
    ``--json`` prints valid JSON for it."""
    import crdt_sync.space as space_module
    from crdt_sync import values

    def unchecked(name: str, value: object) -> bytes:
        values.check_value(value, finite=False)
        return values.cbor2.dumps(value)

    monkeypatch.setattr(space_module, "encode_field", unchecked)  # the old, unchecked write
    with Replica(tmp_path) as replica:
        replica.space("s").put("c", "e", {"n": math.inf})
    monkeypatch.undo()
    got = cli(tmp_path, "get", "s", "c", "e", "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"n": {"$float": "Infinity"}}
    human = cli(tmp_path, "get", "s", "c", "e")
    assert human.returncode == 0 and "Infinity" in human.stdout
