"""A full disk and a damaged store, through real ``crdt-sync`` processes (issue 11, "Local
damage is contained and said").

The full disk is real: a 4 MiB tmpfs mounted by the test (the suite runs as root here; the
test is skipped, saying why, where mounting is not possible), filled by a file, then freed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from crdt_sync import Replica
from crdt_sync.store import DB_NAME
from tests.test_damage_journal import cli

ERROR = 1
READ_ONLY = [("get", "s", "c", "e"), ("list", "s"), ("status",), ("history", "s", "c", "e")]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own (unmounted afterwards)."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (not root?): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` but ``leave`` bytes; the filler file, to delete to free it."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        todo, block = max(0, free - leave), bytes(65536)
        with contextlib.suppress(OSError):
            while todo > 0:
                todo -= os.write(fd, block[:min(todo, len(block))])
        if not leave:
            with contextlib.suppress(OSError):  # and every last byte
                while os.write(fd, block[:512]):
                    pass
    finally:
        os.close(fd)
    return filler


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


def test_a_full_disk_is_said_and_reads_keep_working(small_disk: Path) -> None:
    data = small_disk / "data"
    assert cli(data, "put", "s", "c", "e", "a=1").returncode == 0
    filler = fill(small_disk)

    put = cli(data, "put", "s", "c", "e", "b=2", "--json")
    _no_traceback(put)
    assert put.returncode == ERROR, put.stderr
    error = json.loads(put.stderr)["error"]
    assert error["kind"] == "disk-full" and error["message"].startswith("disk full")
    assert "cannot rollback" not in error["message"]
    human = cli(data, "put", "s", "c", "e", "b=2")
    _no_traceback(human)
    assert human.returncode == ERROR and "disk full" in human.stderr

    for command in READ_ONLY:  # reads go on, read-only, and say why
        result = cli(data, *command, "--json")
        _no_traceback(result)
        assert result.returncode == 0, (command, result.stderr)
        json.loads(result.stdout)
        assert json.loads(result.stderr.splitlines()[0])["warning"]["kind"] == "disk-full"
    got = cli(data, "get", "s", "c", "e", "--json")
    assert json.loads(got.stdout) == {"a": 1}

    filler.unlink()  # room again: the next write works, and nothing half-done is left
    assert cli(data, "put", "s", "c", "e", "b=2").returncode == 0
    assert json.loads(cli(data, "get", "s", "c", "e", "--json").stdout) == {"a": 1, "b": 2}


def test_edits_journaled_before_the_disk_filled_are_sealed_later(small_disk: Path) -> None:
    """The disk fills between the journal write (room reserved ahead) and the seal: the put
    says so, the edit stays in the journal, and it is sealed once there is room."""
    data = small_disk / "data"
    assert cli(data, "put", "s", "c", "e", "a=1").returncode == 0
    filler = fill(small_disk, leave=1_200_000)  # room for a journal, not for the seal
    big = "x" * 60_000
    results = [cli(data, "put", "s", "c", f"e{i}", f"big={big}", "--json") for i in range(8)]
    failed = [r for r in results if r.returncode != 0]
    assert failed, "the disk never filled"
    for r in results:
        _no_traceback(r)
        assert r.returncode in (0, ERROR)
    for r in failed:
        assert json.loads(r.stderr)["error"]["kind"] == "disk-full"
    status = cli(data, "status", "--json")
    assert status.returncode == 0, status.stderr
    filler.unlink()
    listed = cli(data, "list", "s", "--json")
    assert listed.returncode == 0 and "warning" not in listed.stderr, listed.stderr
    stored = {row["id"] for row in json.loads(listed.stdout)}
    # every put that said "nothing is lost" (its edit was journaled) is there now
    for i, r in enumerate(results):
        if r.returncode == 0 or "Nothing is lost" in r.stderr:
            assert f"e{i}" in stored, (i, r.stderr)
    with Replica(data) as replica:
        assert replica.unsealed() == 0


def test_a_corrupt_store_names_the_file_and_what_to_do(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Replica(data) as replica:  # enough pages that damage lands in tables, not the header
        space = replica.space("s")
        with replica.transaction():
            for i in range(300):
                space.put("c", f"e{i}", {"text": "x" * 200})
    db = data / DB_NAME
    for suffix in ("-wal", "-shm"):
        assert not Path(f"{db}{suffix}").exists()  # closed: everything is in the file itself
    size = db.stat().st_size
    with db.open("r+b") as f:  # overwrite pages in the middle (not the header page)
        f.seek(size // 2 - size // 2 % 4096)
        f.write(os.urandom(4096 * 4))
    said = 0
    for command in [("list", "s"), ("get", "s", "c", "e150"), ("status",), ("put", "s", "c", "x", "a=1")]:
        result = cli(data, *command, "--json")
        _no_traceback(result)
        if result.returncode == 0:
            continue  # a command that never reads a damaged page works
        said += 1
        assert result.returncode == ERROR, result.stderr
        error = json.loads(result.stderr)["error"]
        assert error["kind"] == "store-corrupt", error
        assert str(db) in error["message"] and "backup" in error["message"]
    assert said, "no command met the damage"
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / DB_NAME).write_bytes(os.urandom(8192))  # not a SQLite file at all
    result = cli(garbage, "status", "--json")
    _no_traceback(result)
    assert result.returncode == ERROR
    assert json.loads(result.stderr)["error"]["kind"] == "store-corrupt"
