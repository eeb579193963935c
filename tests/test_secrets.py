"""Local secrets (crdt_sync/secrets.py): DIR/keys holds the device seed and the keyring,
mode 0600 in a 0700 directory, optionally sealed with a passphrase; the seed of a data
directory from before moves there out of the store."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest

from crdt_sync import Replica
from crdt_sync import space_crypto as sc
from crdt_sync.errors import StoreError
from crdt_sync.identity import Identity
from crdt_sync.secrets import KEYS_FILE, PASSPHRASE_ENV, PassphraseError, Secrets
from tests.helpers import PROC_TIMEOUT, REPO
from tests.test_damage_disk import small_disk  # noqa: F401 (a fixture)

SPACE = "s" + "a" * 32


@pytest.fixture(autouse=True)
def _no_passphrase_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def meta_seed(directory: Path) -> bytes | None:
    db = sqlite3.connect(directory / "store.sqlite3")
    try:
        row = db.execute("SELECT value FROM meta WHERE key='device_seed'").fetchone()
    finally:
        db.close()
    return None if row is None else bytes(row[0])


def add_epoch(secrets: Secrets, n: int = 0, space: str = SPACE) -> tuple[bytes, bytes]:
    epoch_id, key = sc.new_epoch()
    ring = secrets.keyring()
    ring.add(space, n, epoch_id, key, ring.secret(space) or sc.new_key())
    return epoch_id, key


def test_a_replica_keeps_its_seed_in_the_key_file_with_mode_0600(tmp_path: Path) -> None:
    data = tmp_path / "d"
    with Replica(data) as r:
        device = r.device_id
        assert Identity(r.secrets.device_seed()).id == device
    assert mode(data / KEYS_FILE) == 0o600 and mode(data) == 0o700
    assert meta_seed(data) is None  # not in the store any more
    assert not list(data.glob("keys.*.tmp"))
    with Replica(data) as r:
        assert r.device_id == device
    with Replica(data, read_only=True) as r:
        assert r.device_id == device


def test_keys_survive_reopening_and_loose_modes_are_tightened(tmp_path: Path) -> None:
    with Replica(tmp_path / "d") as r:
        epoch_id, key = add_epoch(r.secrets)
        r.secrets.save()
    os.chmod(tmp_path / "d" / KEYS_FILE, 0o644)
    os.chmod(tmp_path / "d", 0o755)
    with Replica(tmp_path / "d") as r:
        assert r.secrets.keyring().key(SPACE, epoch_id) == key
        assert r.secrets.keyring().epochs(SPACE) == [(0, epoch_id)]
    assert mode(tmp_path / "d" / KEYS_FILE) == 0o600 and mode(tmp_path / "d") == 0o700


def test_save_merges_what_another_process_saved(tmp_path: Path) -> None:
    one = Secrets.open(tmp_path)
    two = Secrets.open(tmp_path)
    first = add_epoch(one, 0)
    one.save()
    assert two.keyring().key(SPACE, first[0]) is None
    assert two.reload() == 1 and two.keyring().key(SPACE, first[0]) == first[1]
    assert two.reload() == 0  # unchanged file: not read again
    other = add_epoch(two, 0, "s" + "b" * 32)
    more = add_epoch(one, 1)
    two.save()
    one.save()
    final = Secrets.open(tmp_path)
    assert {final.keyring().key(SPACE, e) for e in (first[0], more[0])} == {first[1], more[1]}
    assert final.keyring().key("s" + "b" * 32, other[0]) == other[1]


def test_passphrase_seals_the_file(tmp_path: Path) -> None:
    data = tmp_path / "d"
    with Replica(data, passphrase="correct horse") as r:
        device = r.device_id
        epoch_id, key = add_epoch(r.secrets)
        r.secrets.save()
        assert r.secrets.sealed
    raw = (data / KEYS_FILE).read_bytes()
    version, kdf, _body = cbor2.loads(raw)
    assert version == 1 and kdf[0] == "argon2id13" and len(kdf[1]) == 16
    seed = Secrets.open(data, "correct horse").device_seed()
    assert seed not in raw and key not in raw
    with Replica(data, passphrase="correct horse") as r:
        assert r.device_id == device and r.secrets.keyring().key(SPACE, epoch_id) == key
    with pytest.raises(PassphraseError, match=PASSPHRASE_ENV) as wrong:
        Replica(data, passphrase="wrong horse")
    assert wrong.value.reason == "wrong"
    with pytest.raises(PassphraseError, match=PASSPHRASE_ENV) as missing:
        Replica(data)
    assert missing.value.reason == "missing"
    with pytest.raises(PassphraseError):
        Replica(data, read_only=True)


def test_the_passphrase_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "daemon secret")
    with Replica(tmp_path / "d") as r:
        device = r.device_id
    assert Secrets.open(tmp_path / "d", "daemon secret").sealed
    with Replica(tmp_path / "d", read_only=True) as r:
        assert r.device_id == device
    monkeypatch.setenv(PASSPHRASE_ENV, "another")
    with pytest.raises(PassphraseError):
        Replica(tmp_path / "d")


def test_set_passphrase_seals_changes_and_removes(tmp_path: Path) -> None:
    secrets = Secrets.open(tmp_path)
    epoch_id, key = add_epoch(secrets)
    secrets.save()
    assert not secrets.sealed
    secrets.set_passphrase("one")
    assert Secrets.open(tmp_path, "one").keyring().key(SPACE, epoch_id) == key
    secrets.set_passphrase("two")
    with pytest.raises(PassphraseError):
        Secrets.open(tmp_path, "one")
    reopened = Secrets.open(tmp_path, "two")
    add_epoch(reopened, 1)
    reopened.save()  # a save reuses the derived key
    assert len(Secrets.open(tmp_path, "two").keyring().epochs(SPACE)) == 2
    reopened.set_passphrase(None)
    assert not Secrets.open(tmp_path).sealed
    with pytest.raises(Exception, match="empty"):
        reopened.set_passphrase("")


def test_a_passphrase_that_is_not_utf8_is_its_bytes(tmp_path: Path) -> None:
    Secrets.open(tmp_path, "caf\udce9")  # b"caf\xe9" from a Latin-1 environment
    assert Secrets.open(tmp_path, "caf\udce9").sealed
    with pytest.raises(PassphraseError):
        Secrets.open(tmp_path, "café")


def test_an_unsealed_file_opens_whatever_passphrase_is_given(tmp_path: Path) -> None:
    Secrets.open(tmp_path)
    assert not Secrets.open(tmp_path, "unused").sealed


def _old_directory(path: Path) -> tuple[str, bytes]:
    """A data directory as an older build wrote it: the device seed in the store's meta."""
    with Replica(path) as r:
        r.space("site").put("eq", "pump", {"status": "ok"})
        device, seed = r.device_id, r.secrets.device_seed()
    (path / KEYS_FILE).unlink()
    db = sqlite3.connect(path / "store.sqlite3")
    db.execute("INSERT INTO meta VALUES('device_seed', ?)", (seed,))
    db.commit()
    db.close()
    return device, seed


def test_the_seed_of_an_old_directory_moves_to_the_key_file(tmp_path: Path) -> None:
    device, seed = _old_directory(tmp_path / "d")
    with Replica(tmp_path / "d", read_only=True) as r:  # read-only: used where it is, nothing written
        assert r.device_id == device
    assert not (tmp_path / "d" / KEYS_FILE).exists() and meta_seed(tmp_path / "d") == seed
    with Replica(tmp_path / "d") as r:
        assert r.device_id == device
        assert r.space("site").get("eq", "pump") == {"status": "ok"}
    assert meta_seed(tmp_path / "d") is None
    assert Secrets.open(tmp_path / "d").device_seed() == seed
    assert mode(tmp_path / "d" / KEYS_FILE) == 0o600


def test_a_migration_cut_short_is_finished(tmp_path: Path) -> None:
    # killed after writing the key file, before the store's commit: both hold the seed
    _device, seed = _old_directory(tmp_path / "d")
    Secrets.open(tmp_path / "d", legacy_seed=seed)
    with Replica(tmp_path / "d") as r:
        assert r.secrets.device_seed() == seed
    assert meta_seed(tmp_path / "d") is None


def test_a_store_and_key_file_of_different_devices_are_refused(tmp_path: Path) -> None:
    _old_directory(tmp_path / "d")
    Secrets.open(tmp_path / "d", legacy_seed=os.urandom(32))
    with pytest.raises(StoreError, match="different device keys"):
        Replica(tmp_path / "d")


def test_read_only_without_a_device(tmp_path: Path) -> None:
    Replica(tmp_path / "d").close()
    (tmp_path / "d" / KEYS_FILE).unlink()  # a store, and no device key anywhere
    with pytest.raises(StoreError, match="no device yet"):
        Replica(tmp_path / "d", read_only=True)


@pytest.mark.parametrize("data", [
    b"", b"garbage", cbor2.dumps([1, None]), cbor2.dumps([1, None, b"\xff"]),
    cbor2.dumps([1, None, cbor2.dumps({"device_seed": b"short", "spaces": {}})]),
    cbor2.dumps([1, None, cbor2.dumps({"device_seed": bytes(32), "spaces": []})]),
    cbor2.dumps([1, None, cbor2.dumps({"device_seed": bytes(32), "spaces": {}})]) + b"x",
    cbor2.dumps([1, ["argon2id13", bytes(16), 2**40, 2**40], b"x"]),  # a file asking for 1 TiB
    cbor2.dumps([1, ["scrypt", bytes(16), 2, 8192], b"x"]),
])
def test_a_damaged_key_file_is_a_store_error(tmp_path: Path, data: bytes) -> None:
    (tmp_path / KEYS_FILE).write_bytes(data)
    with pytest.raises(StoreError) as info:
        Secrets.open(tmp_path)
    assert not isinstance(info.value, PassphraseError)


def test_a_newer_key_file_says_upgrade(tmp_path: Path) -> None:
    (tmp_path / KEYS_FILE).write_bytes(cbor2.dumps([2, None, b""]))
    with pytest.raises(StoreError, match="upgrade"):
        Secrets.open(tmp_path)


def test_read_only_secrets_are_not_saved(tmp_path: Path) -> None:
    Secrets.open(tmp_path)
    ro = Secrets.open(tmp_path, read_only=True)
    add_epoch(ro)
    with pytest.raises(StoreError, match="read-only"):
        ro.save()


# -- the command line: real processes ---------------------------------------------------
def cli(data: Path, *args: str, **env: str) -> tuple[int, Any, str]:
    """``crdt-sync --json --data DATA ARGS`` as a real process importing this tree, with
    ``env`` added to an environment without the passphrase; (exit code, JSON out, stderr)."""
    full = {k: v for k, v in os.environ.items() if k not in ("CRDT_SYNC_DATA", PASSPHRASE_ENV)}
    full.update(env, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "crdt_sync.cli", "--json", "--data", str(data), *args],
                          capture_output=True, text=True, env=full, timeout=PROC_TIMEOUT, cwd=REPO,
                          stdin=subprocess.DEVNULL)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None, done.stderr


def error_of(stderr: str) -> dict[str, Any]:
    assert "Traceback" not in stderr
    return json.loads(stderr)["error"]  # type: ignore[no-any-return]


def test_cli_init_with_a_passphrase(tmp_path: Path) -> None:
    data = tmp_path / "d"
    code, out, _err = cli(data, "init", "--passphrase-env", "MY_PASS", MY_PASS="field secret")
    assert code == 0 and out["sealed"] is True and out["created"] is True
    assert Secrets.open(data, "field secret").sealed and mode(data / KEYS_FILE) == 0o600
    # every other command opens it with $CRDT_SYNC_PASSPHRASE
    code, out, _err = cli(data, "put", "site", "eq", "pump", "status=ok", CRDT_SYNC_PASSPHRASE="field secret")
    assert code == 0
    code, _out, err = cli(data, "get", "site", "eq", "pump")
    assert code == 1 and error_of(err)["kind"] == "passphrase" and PASSPHRASE_ENV in error_of(err)["message"]
    code, _out, err = cli(data, "get", "site", "eq", "pump", CRDT_SYNC_PASSPHRASE="wrong")
    assert code == 1 and error_of(err)["kind"] == "passphrase" and "does not open" in error_of(err)["message"]
    # a new passphrase: the current one from the environment, the new one from --passphrase-env
    code, out, _err = cli(data, "init", "--passphrase-env", "NEW", NEW="second",
                          CRDT_SYNC_PASSPHRASE="field secret")
    assert code == 0 and out["sealed"] and not out["created"]
    code, out, _err = cli(data, "get", "site", "eq", "pump", CRDT_SYNC_PASSPHRASE="second")
    assert code == 0 and out == {"status": "ok"}


def test_cli_init_passphrase_from_the_environment_and_its_errors(tmp_path: Path) -> None:
    data = tmp_path / "d"
    code, out, _err = cli(data, "init")
    assert code == 0 and out["sealed"] is False and mode(data / KEYS_FILE) == 0o600
    device = out["device"]
    code, _out, err = cli(data, "init", "--passphrase")  # no variable, no terminal
    assert code == 2 and PASSPHRASE_ENV in error_of(err)["message"]
    code, _out, err = cli(data, "init", "--passphrase-env", "UNSET_VAR")
    assert code == 2 and "UNSET_VAR" in error_of(err)["message"]
    assert not Secrets.open(data).sealed  # nothing changed
    code, out, _err = cli(data, "init", "--passphrase", CRDT_SYNC_PASSPHRASE="from env")
    assert code == 0 and out["sealed"] and out["device"] == device
    assert Secrets.open(data, "from env").device_seed()


# -- a full disk (a real small tmpfs, as tests/test_damage_disk.py) ---------------------------
def test_a_full_disk_keeps_the_old_key_file_and_reads_working(small_disk: Path) -> None:  # noqa: F811
    from crdt_sync.errors import DiskFull
    from tests.test_damage_disk import fill

    data = small_disk / "d"
    device, seed = _old_directory(data)
    filler = fill(small_disk)
    code, out, err = cli(data, "get", "site", "eq", "pump")  # read-only, the seed where it is
    assert code == 0 and out == {"status": "ok"}, err
    assert json.loads(err.splitlines()[0])["warning"]["kind"] == "disk-full"
    filler.unlink()
    with Replica(data) as r:  # room again: migrated
        assert r.device_id == device
    assert meta_seed(data) is None
    secrets = Secrets.open(data)
    before = (data / KEYS_FILE).read_bytes()
    add_epoch(secrets)
    filler = fill(small_disk)
    with pytest.raises(DiskFull, match="keys"):
        secrets.save()
    assert (data / KEYS_FILE).read_bytes() == before and not list(data.glob("keys.*.tmp"))
    filler.unlink()
    secrets.save()
    assert Secrets.open(data).keyring().epochs(SPACE) == secrets.keyring().epochs(SPACE)
    assert Secrets.open(data).device_seed() == seed


def test_processes_opening_a_new_directory_at_once_agree_on_one_device(tmp_path: Path) -> None:
    data = tmp_path / "d"
    code = ("import sys; from crdt_sync import Replica\n"
            "with Replica(sys.argv[1]) as r: print(r.device_id)")
    env = {k: v for k, v in os.environ.items() if k not in ("CRDT_SYNC_DATA", PASSPHRASE_ENV)}
    env["PYTHONPATH"] = str(REPO)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(data)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO) for _ in range(4)]
    ids = set()
    for proc in procs:
        out, err = proc.communicate(timeout=PROC_TIMEOUT)
        assert proc.returncode == 0, err
        ids.add(out.strip())
    assert ids == {Identity(Secrets.open(data).device_seed()).id}
