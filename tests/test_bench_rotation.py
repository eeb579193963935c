"""The key-rotation benchmark on tiny sizes: its output's structure, and that every member
finds and opens its box (the runner checks it too; no timing is asserted)."""

from __future__ import annotations

import json

import pytest

from crdt_sync import space_crypto
from crdt_sync.benchmarks import rotation
from crdt_sync.membership import MAX_RECORD_BYTES, Keys, decode_membership, make_genesis, space_id_of

FIELDS = {"members", "keys_records", "payloads", "payload_bytes", "build_seconds", "seal_seconds",
          "sign_seconds", "decode_seconds", "open_seconds_median", "open_seconds_max", "opened"}


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert rotation.main(["--members", "2,5", "--repeat", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["benchmark"] == "rotation" and out["repeat"] == 2 and "machine" in out
    assert [r["members"] for r in out["results"]] == [2, 5]
    for r in out["results"]:
        assert set(r) == FIELDS
        assert r["opened"] == r["members"]
        assert r["keys_records"] == 1 and r["payloads"] == 1 and r["payload_bytes"] > 0
        assert r["build_seconds"] >= r["seal_seconds"] >= 0


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert rotation.main(["--members", "3", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "key rotation" in out and "3/3" in out


def test_boxes_split_over_keys_records_of_one_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    assert rotation.main(["--members", "7", "--repeat", "1", "--boxes-per-record", "2", "--json"]) == 0
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert r["keys_records"] == 4 and r["opened"] == 7


def test_every_member_opens_its_box_and_no_other() -> None:
    members = rotation.members_of(6)
    admin, stranger = members[0], rotation.members_of(7)[-1]
    genesis = make_genesis(admin, rotation.WALL_MS << 16)
    space = space_id_of(genesis)
    secret = space_crypto.new_key()
    built, _seal, _sign = rotation.build_rotation(admin, space, genesis.hash, members, secret, 1,
                                                  rotation.WALL_MS << 16, boxes_per_record=4)
    records = [rec for p in built.payloads for rec in decode_membership(p)]
    keys = [rec for rec in records if isinstance(rec, Keys)]
    assert len(keys) == 2 and {(k.epoch_n, k.epoch_id) for k in keys} == {(1, built.epoch_id)}
    assert sorted(key for k in keys for key, _ in k.boxes) == sorted(m.public_key for m in members)
    for member in members:
        assert rotation.open_rotation(member, keys, built.epoch_id) == built.epoch_key
        box = next(b for k in keys if (b := k.box_for(member.public_key)) is not None)
        assert space_crypto.open_box(member, box) == (built.epoch_key, secret)
    assert rotation.open_rotation(stranger, keys, built.epoch_id) is None


def test_a_full_keys_record_fits_the_record_bound() -> None:
    n = rotation.BOXES_PER_RECORD + 1  # one full record and one of a single box
    members = rotation.members_of(n)
    genesis = make_genesis(members[0], rotation.WALL_MS << 16)
    built, _seal, _sign = rotation.build_rotation(members[0], space_id_of(genesis), genesis.hash, members,
                                                  space_crypto.new_key(), 1, rotation.WALL_MS << 16)
    assert [len(k.boxes) for k in built.records] == [rotation.BOXES_PER_RECORD, 1]
    assert max(len(k.wire) for k in built.records) <= MAX_RECORD_BYTES
