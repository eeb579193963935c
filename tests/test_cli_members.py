"""The sharing commands of issue 12 as real ``crdt-sync`` processes on real data directories:
a space is created, an invite token carries a device in, the members sync by bundle and
through a relay, a read-only member's write is refused with a reason, a revoked device's
later edit reaches no one, a name two spaces carry is refused with their ids, and an old
data directory names the command that migrates it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from crdt_sync import Replica
from crdt_sync.cli.members import parse_duration, render_qr
from crdt_sync.cli.output import UsageError
from crdt_sync.identity import Identity
from tests.helpers import PROC_TIMEOUT, REPO


def needs(*names: str) -> pytest.MarkDecorator:
    """Skip until the device-side API of issue 12 that a test drives is in this tree."""
    missing = [n for n in names if not (importlib.util.find_spec("crdt_sync.migrate") if n == "migrate"
                                        else hasattr(Replica, n))]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (issue 12, device side)")


needs_spaces = needs("create_space", "space_infos", "members", "grant")
needs_invites = needs("create_space", "invite", "revoke", "members")
FIXTURES = Path(__file__).resolve().with_name("fixtures")


def cli(data: Path, *args: str, stdin: str | None = None) -> tuple[int, Any, str]:
    """``crdt-sync --json --data DATA ARGS``: (exit code, parsed stdout or None, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "CRDT_SYNC_DATA"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-m", "crdt_sync.cli", "--json", "--data", str(data), *args],
                          capture_output=True, text=True, env=env, timeout=PROC_TIMEOUT, cwd=REPO,
                          input=stdin)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None, done.stderr


def ok(data: Path, *args: str, stdin: str | None = None) -> Any:
    code, out, err = cli(data, *args, stdin=stdin)
    assert code == 0, (args, err)
    return out


def error(data: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = cli(data, *args)
    assert code != 0 and out is None, (args, out)
    return code, json.loads(err.splitlines()[-1])["error"]


def carry(src: Path, dst: Path, space: str, tmp: Path) -> None:
    """A bundle of ``space`` from ``src`` imported by ``dst`` (a USB stick)."""
    bundle = tmp / f"{src.name}-to-{dst.name}.bundle"
    ok(src, "export", space, "--out", str(bundle))
    ok(dst, "import", str(bundle))


# -- no device API needed: the command line itself ---------------------------------------------
def test_durations() -> None:
    day = 86_400_000
    assert parse_duration("7d", "--expires", 30 * day) == 7 * day
    assert parse_duration("90s", "--expires", day) == 90_000
    assert parse_duration("2w", "--expires", 30 * day) == 14 * day
    assert parse_duration("12h", "--expires", day) == day // 2
    for bad in ("", "7", "d", "7 days", "-1d", "0d", "1.5h", "31d"):
        with pytest.raises(UsageError):
            parse_duration(bad, "--expires", 30 * day)


def test_the_qr_code_is_a_block_of_terminal_lines() -> None:
    import segno

    token = "cs1" + "A" * 600
    lines = render_qr(token).splitlines()
    size = segno.make_qr(token, error="l", boost_error=False).symbol_size(border=4)[0]
    assert len(lines) == (size + 1) // 2  # two modules a line
    assert {len(line) for line in lines} == {size}
    assert set("".join(lines)) <= set("█▀▄ ")


def test_command_line_mistakes_are_usage_errors_before_anything_opens(tmp_path: Path) -> None:
    data = tmp_path / "d"
    for args, says in [
        (["invite", "s", "--rights", "write", "--expires", "31d"], "at most 30 days"),
        (["invite", "s", "--rights", "owner"], "invalid choice"),
        (["invite", "s"], "--rights"),
        (["join", "site-42"], "crdt-sync keep SPACE"),
        (["grant", "s", "not-a-device", "--rights", "read"], "not a device id"),
        (["grant", "s", "a" * 52, "--rights", "read"], "not a device id"),  # base32, not a key
        (["grant", "s", Identity(bytes(32)).id, "--rights", "read", "--expires", "soon"], "a duration is"),
        (["spaces", "create"], "name"),
    ]:
        code, err = error(data, *args)
        assert (code, err["kind"]) == (2, "usage"), (args, err)
        assert says in err["message"], (args, err)
    assert not (data / "store.sqlite3").exists()  # nothing was created for a mistake


# -- the commands against real data directories -------------------------------------------------
@needs_invites
def test_invite_join_sync_by_bundle_read_only_refused_and_revoke(tmp_path: Path) -> None:
    alice, bob, carol = tmp_path / "alice", tmp_path / "bob", tmp_path / "carol"
    bob_id, carol_id = ok(bob, "init")["device"], ok(carol, "init")["device"]
    created = ok(alice, "spaces", "create", "site-42")
    sid = created["id"]
    assert created["name"] == "site-42" and sid.startswith("s")
    ok(alice, "put", "site-42", "equipment", "pump-7", "status=ok")
    [listed] = ok(alice, "spaces")["spaces"]
    assert listed == {"id": sid, "name": "site-42", "rights": "admin", "members": 1}

    invite = ok(alice, "invite", "site-42", "--rights", "write")
    assert invite["space"] == sid and invite["token"].startswith("cs1") and invite["expires"]
    joined = ok(bob, "join", invite["token"])
    assert joined["space"] == sid and joined["name"] == "site-42" and joined["device"] == bob_id
    carry(alice, bob, sid, tmp_path)
    carry(bob, alice, sid, tmp_path)  # bob's redemption reaches the admin
    assert ok(bob, "get", "site-42", "equipment", "pump-7") == {"status": "ok"}
    ok(bob, "put", sid, "equipment", "pump-7", "status=leaking")  # by id, too
    carry(bob, alice, sid, tmp_path)
    assert ok(alice, "get", sid, "equipment", "pump-7") == {"status": "leaking"}

    # A read-only member reads, and its write is refused on its own device, with the reason.
    token = ok(alice, "invite", sid, "--rights", "read", "--no-history")["token"]
    ok(carol, "join", "-", stdin=token + "\n")  # a long token can come on stdin
    carry(alice, carol, sid, tmp_path)
    assert ok(carol, "get", "site-42", "equipment", "pump-7") == {"status": "leaking"}
    code, err = error(carol, "put", "site-42", "equipment", "pump-7", "status=ok")
    assert (code, err["kind"]) == (5, "read-only")
    assert "may only read" in err["message"] and "crdt-sync grant" in err["message"]

    members = {m["device"]: m for m in ok(alice, "members", "site-42")["members"]}
    assert members[bob_id]["rights"] == "write" and members[bob_id]["revoked_after"] is None
    assert members[carol_id]["rights"] == "read"
    assert {m["rights"] for m in members.values() if m["this_device"]} == {"admin"}

    # Revoked: bob's later edit is set aside by the admin, and by everyone it reaches.
    revoked = ok(alice, "revoke", "site-42", bob_id[:10])  # a unique prefix is enough
    assert revoked == {"space": sid, "device": bob_id, "revoked": True, "rotated": True}
    assert ok(alice, "members", sid)["members"][0]  # still listed
    assert {m["device"]: m for m in ok(alice, "members", sid)["members"]}[bob_id]["revoked_after"] \
        is not None
    ok(bob, "put", "site-42", "equipment", "pump-7", "status=sabotaged")
    carry(bob, alice, sid, tmp_path)
    assert ok(alice, "get", sid, "equipment", "pump-7") == {"status": "leaking"}


@needs_spaces
def test_grant_by_device_id_with_scope_and_expiry(tmp_path: Path) -> None:
    alice, dan = tmp_path / "alice", tmp_path / "dan"
    dan_id = ok(dan, "init")["device"]
    sid = ok(alice, "spaces", "create", "site-42")["id"]
    ok(alice, "put", sid, "inspections", "I-1", "result=pass")
    granted = ok(alice, "grant", sid, dan_id, "--rights", "write", "--collection", "inspections",
                 "--expires", "30d")
    assert granted["device"] == dan_id and granted["collections"] == ["inspections"]
    assert granted["expires"]
    [member] = [m for m in ok(alice, "members", sid)["members"] if m["device"] == dan_id]
    assert member["rights"] == "write" and member["collections"] == ["inspections"]
    assert member["expires"] and member["via"] == "grant"
    code, err = error(alice, "revoke", sid, "zzzzzzzz")
    assert (code, err["kind"]) == (3, "not-found")


@needs_spaces
def test_writes_beyond_a_grant_are_refused_on_the_device_with_the_reason(tmp_path: Path) -> None:
    alice, carol, dana = tmp_path / "alice", tmp_path / "carol", tmp_path / "dana"
    carol_id, dana_id = ok(carol, "init")["device"], ok(dana, "init")["device"]
    sid = ok(alice, "spaces", "create", "site-42")["id"]
    ok(alice, "put", sid, "equipment", "pump-7", "status=ok")
    ok(alice, "grant", sid, carol_id, "--rights", "read")
    ok(alice, "grant", sid, dana_id, "--rights", "write", "--collection", "inspections")
    for who in (carol, dana):
        carry(alice, who, sid, tmp_path)
        assert ok(who, "get", "site-42", "equipment", "pump-7") == {"status": "ok"}
    code, err = error(carol, "put", "site-42", "equipment", "pump-7", "status=broken")
    assert (code, err["kind"]) == (5, "read-only"), err
    assert "may only read" in err["message"] and "crdt-sync grant" in err["message"]
    code, err = error(dana, "delete", "site-42", "equipment", "pump-7")
    assert (code, err["kind"]) == (5, "out-of-scope"), err
    ok(dana, "put", "site-42", "inspections", "I-1", "result=pass")  # in scope
    carry(dana, alice, sid, tmp_path)
    assert ok(alice, "get", sid, "inspections", "I-1") == {"result": "pass"}
    assert ok(carol, "get", sid, "equipment", "pump-7") == {"status": "ok"}  # nothing changed
    code, err = error(tmp_path / "stranger", "put", sid, "equipment", "pump-7", "status=mine")
    assert (code, err["kind"]) == (5, "not-a-member"), err  # it holds no key of the space


@needs("create_space", "grant", "revoke")
def test_revoke_sets_a_members_later_edits_aside(tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    bob_id = ok(bob, "init")["device"]
    sid = ok(alice, "spaces", "create", "site-42")["id"]
    ok(alice, "grant", sid, bob_id, "--rights", "write")
    carry(alice, bob, sid, tmp_path)
    ok(bob, "put", "site-42", "equipment", "pump-7", "status=leaking")
    carry(bob, alice, sid, tmp_path)
    code, err = error(alice, "revoke", sid, alice.name)  # not a member's id
    assert (code, err["kind"]) == (3, "not-found")
    revoked = ok(alice, "revoke", "site-42", bob_id[:10])  # a prefix one member has
    assert revoked == {"space": sid, "device": bob_id, "revoked": True, "rotated": True}
    [member] = [m for m in ok(alice, "members", sid)["members"] if m["device"] == bob_id]
    assert member["revoked_after"] is not None
    ok(bob, "put", "site-42", "equipment", "pump-7", "status=sabotaged")  # bob has not heard yet
    carry(bob, alice, sid, tmp_path)
    assert ok(alice, "get", sid, "equipment", "pump-7") == {"status": "leaking"}  # what he wrote before stays
    code, err = error(alice, "revoke", sid, ok(alice, "init")["device"])
    assert (code, err["kind"]) == (2, "usage") and "cannot revoke itself" in err["message"]


@needs_spaces
def test_a_name_two_spaces_carry_is_refused_with_their_ids(tmp_path: Path) -> None:
    alice = tmp_path / "alice"
    first = ok(alice, "spaces", "create", "site-42")["id"]
    second = ok(alice, "spaces", "create", "site-42")["id"]
    assert first != second  # two spaces that share a name are different spaces
    for args in (["list", "site-42"], ["put", "site-42", "c", "e", "a=1"], ["members", "site-42"],
                 ["export", "site-42", "--out", str(tmp_path / "b")], ["spaces", "rename", "site-42", "x"]):
        code, err = error(alice, *args)
        assert (code, err["kind"]) == (2, "ambiguous-space"), (args, err)
        assert first in err["message"] and second in err["message"]
        assert sorted(err["ids"]) == sorted([first, second]) and err["name"] == "site-42"
    ok(alice, "put", second, "c", "e", "a=1")  # the id always works
    renamed = ok(alice, "spaces", "rename", second, "site-43")
    assert renamed == {"id": second, "name": "site-43"}
    assert ok(alice, "list", "site-43") == [{"collection": "c", "id": "e", "fields": {"a": 1}}]
    assert ok(alice, "list", "site-42") == []


def old_directory(tmp_path: Path) -> Path:
    """A data directory written by crdt-sync 0.1 (store format 2: spaces named by plain names)."""
    with tarfile.open(FIXTURES / "store-v2.tgz") as archive:
        archive.extractall(tmp_path, filter="data")
    return tmp_path / "data"


@needs_spaces
def test_an_old_data_directory_is_refused_with_the_command_that_migrates_it(tmp_path: Path) -> None:
    old = old_directory(tmp_path)
    for args in (["list", "site-42"], ["spaces"], ["put", "site-42", "c", "e", "a=1"]):
        code, err = error(old, *args)
        assert (code, err["kind"]) == (1, "store-version"), (args, err)
        assert f"crdt-sync migrate {old}" in err["message"]
    assert not (old / "store.sqlite3.v2-backup").exists()  # nothing was changed


@needs("create_space", "migrate")
def test_migrate_moves_an_old_data_directory(tmp_path: Path) -> None:
    old = old_directory(tmp_path)
    device = ok(tmp_path / "elsewhere", "init")["device"]  # (another directory: unaffected)
    ok(old, "migrate", str(old))
    assert (old / "store.sqlite3.v2-backup").exists()
    spaces = ok(old, "spaces")["spaces"]
    assert {s["name"] for s in spaces} == {"site-42", "depot"}
    assert {s["rights"] for s in spaces} == {"admin"}
    assert ok(old, "get", "site-42", "equipment", "pump-7") == {"status": "ok", "pressure_bar": 4.2}
    assert ok(old, "get", "depot", "tasks", "T-1") == {"done": False}
    assert ok(old, "init")["device"] != device
    code, err = error(tmp_path / "nowhere", "migrate", str(tmp_path / "nowhere"))
    assert (code, err["kind"]) == (3, "not-found")


@needs_invites
async def test_join_over_a_relay(tmp_path: Path) -> None:
    from tests.relay_helpers import run_cli, running_relay

    alice, bob = tmp_path / "alice", tmp_path / "bob"
    sid = ok(alice, "spaces", "create", "site-42")["id"]
    ok(alice, "put", sid, "equipment", "pump-7", "status=ok")
    token = ok(alice, "invite", sid, "--rights", "write")["token"]
    async with running_relay(tmp_path / "relay") as relay:
        async def sync(data: Path) -> dict[str, Any]:
            code, out, err = await run_cli("sync", "--json", "--relay", relay.url, "--data", str(data))
            assert code == 0, err
            return dict(json.loads(out))

        await sync(alice)
        ok(bob, "join", token)
        await sync(bob)  # the redemption up, the space down
        assert ok(bob, "get", "site-42", "equipment", "pump-7") == {"status": "ok"}
        ok(bob, "put", "site-42", "equipment", "pump-7", "status=leaking")
        await sync(bob)
        await sync(alice)
    assert ok(alice, "get", sid, "equipment", "pump-7") == {"status": "leaking"}
