"""A damaged journal loses only the damaged record (issue 11, "Local damage is contained and
said"). A real process writes 200 acknowledged transactions and is SIGKILLed before sealing
any; one byte of one record in the middle of its journal is flipped; the next ``crdt-sync``
process recovers every other record, keeps the file aside and says what was lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_sync import Replica
from crdt_sync.journal import frame_record, key_prefix, read_records, scan
from crdt_sync.payload import pack_item
from tests.helpers import PROC_TIMEOUT, REPO, LineReader

WORKER = Path(__file__).resolve().with_name("damage_worker.py")
COUNT = 200


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``crdt-sync --data DATA ARGS`` as a real process importing this tree."""
    env = {k: v for k, v in os.environ.items() if k != "CRDT_SYNC_DATA"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "crdt_sync.cli", "--data", str(data), *args],
                          capture_output=True, text=True, env=env, timeout=PROC_TIMEOUT, cwd=REPO)


def dead_writer(data: Path, count: int = COUNT) -> Path:
    """Run the worker until its ``count`` puts returned, SIGKILL it; its journal file."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(WORKER), str(data), str(count)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd=REPO)
    reader = LineReader(proc)
    try:
        for k in [*range(count), "done"]:
            line = reader.next()
            if line != f"{k}\n":
                proc.kill()
                raise AssertionError(f"worker said {line!r}: {proc.communicate()[1]}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=PROC_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=PROC_TIMEOUT)
    journals = sorted((data / "journal").glob("*.log"))
    assert len(journals) == 1
    return journals[0]


def flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x40]))


def test_a_flipped_byte_loses_exactly_that_record(tmp_path: Path) -> None:
    data = tmp_path / "data"
    journal = dead_writer(data)
    records = scan(journal.read_bytes()).records
    assert len(records) == COUNT  # one record per acknowledged put, none sealed
    start, end = records[COUNT // 2]
    flip(journal, (start + end) // 2)  # a byte inside the middle record's update

    listed = cli(data, "list", "damage", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    got = {row["id"] for row in json.loads(listed.stdout)}
    assert got == {f"i{k}" for k in range(COUNT)} - {f"i{COUNT // 2}"}

    # The file was kept aside (not deleted), and status says what was lost, where.
    kept = list((data / "damaged").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith(journal.name + ".corrupt-")
    assert kept[0].read_bytes()[:end] != b""  # the damaged bytes are still there to inspect
    assert not journal.exists()
    status = cli(data, "status", "--json")
    assert status.returncode == 0, status.stderr
    damage = json.loads(status.stdout)["journal_damage"]
    assert [(d["journal"], d["kept"], d["offset"], d["bytes"], d["records"], d["tail"])
            for d in damage] == [(journal.name, str(kept[0]), start, end - start, 1, False)]
    human = cli(data, "status")
    assert human.returncode == 0 and "journal damage" in human.stderr and str(kept[0]) in human.stderr
    with Replica(data) as replica:  # the API says the same
        assert [(d.journal, d.records, d.bytes) for d in replica.status().journal_damage] == [
            (journal.name, 1, end - start)]
        assert replica.unsealed() == 0


@pytest.mark.parametrize("where", ["length", "crc", "key", "item-header"])
def test_damage_to_a_records_frame_loses_only_that_record(tmp_path: Path, where: str) -> None:
    """A flipped length resynchronises on the next record's frame, not on the bad length."""
    data = tmp_path / "data"
    journal = dead_writer(data, 20)
    start, end = scan(journal.read_bytes()).records[10]
    flip(journal, start + {"length": 1, "crc": 5, "key": 15, "item-header": 36}[where])
    with Replica(data) as replica:
        space = replica.space("damage")
        assert sorted(i for _, i in space.list()) == sorted(f"i{k}" for k in range(20) if k != 10)
        (damage,) = replica.status().journal_damage
        assert (damage.offset, damage.bytes, damage.records) == (start, end - start, 1)


# -- the scan itself, over every byte of a record ----------------------------------------------
def _journal(n: int) -> bytes:
    prefix = key_prefix("s", "c", "e")
    return b"".join(frame_record(prefix, pack_item(k, bytes([k]) * (k + 1)), zlib.crc32(prefix))
                    for k in range(n)) + bytes(4096)  # and the reserved zeros after


@given(victim=st.integers(0, 9), position=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_flipped_bit_loses_only_its_record(victim: int, position: int, bit: int) -> None:
    data = bytearray(_journal(10))
    intact = scan(bytes(data)).records
    start, end = intact[victim]
    at = start + position % (end - start)
    data[at] ^= 1 << bit
    found = scan(bytes(data))
    assert found.records == intact[:victim] + intact[victim + 1:]
    (damaged,) = found.damaged
    assert damaged.offset == start
    # a damaged last record runs to its last non-zero byte (a torn tail looks the same)
    assert damaged.length == end - start or (victim == 9 and damaged.tail)


def test_reserved_zeros_and_a_torn_tail(tmp_path: Path) -> None:
    data = _journal(3)
    assert scan(data).damaged == []
    torn = bytearray(data)
    end = scan(data).records[-1][1]
    torn[end:end + 6] = b"\x40\x00\x00\x00\x12\x34"  # half a record, as a kill mid-write leaves
    found = scan(bytes(torn))
    assert len(found.records) == 3
    assert [(d.offset, d.length, d.tail) for d in found.damaged] == [(end, 6, True)]
    path = tmp_path / "x.log"
    path.write_bytes(bytes(torn))
    assert len(list(read_records(path))) == 3


def test_a_flipped_length_that_lands_on_a_later_record_loses_only_its_record() -> None:
    # found by hypothesis (victim=1, position=0, bit=5): record 1's length 23 became 55, which
    # ends exactly where record 3 starts; resyncing there first lost the intact record 2
    data = bytearray(_journal(10))
    intact = scan(bytes(data)).records
    start = intact[1][0]
    data[start] ^= 1 << 5
    assert scan(bytes(data)).records == intact[:1] + intact[2:]
