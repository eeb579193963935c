"""No ``crdt-sync`` command prints a traceback for any input, exits with an undocumented code,
or prints ``--json`` output that does not parse (issue 11, "Local damage is contained and
said").

The property test runs the CLI's ``main`` in this process (hundreds of runs in seconds),
with stdout and stderr strict UTF-8 text streams over bytes as in a real process, on hostile
arguments: names that are not UTF-8 (lone surrogates, as a non-UTF-8 command line arrives),
huge and empty names, hostile JSON values, version vectors and paths. A few of the same
invocations also run as real processes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_sync import Replica
from crdt_sync.cli.main import main
from crdt_sync.values import MAX_DEPTH
from tests.test_damage_journal import cli

#: The documented exit codes (README, "Exit codes").
DOCUMENTED = {0, 1, 2, 3, 5}
DEEP = "[" * 50_000 + "]" * 50_000

_NASTY = [
    "", " ", "=", "a=", "=b", "\x00", "\x01deleted", "a\x00b", "\udcff", "x\udcfe=1",
    "\U0010ffff", "é" * 300, "x" * 5000, "../../etc", "/dev/null", ".", "null", "NaN",
    "n=1e400", "n=-1e999", "n=NaN", "n=Infinity", "n=18446744073709551616", "n=-9223372036854775809",
    f"d={DEEP}", "d=" + "{\"a\":" * 40 + "1" + "}" * 40, 'b={"$bytes": "!!"}',
    'b={"$bytes": "AAE="}', 'f={"$float": "Infinity"}', 'k={"\udcff": 1}', "t=" + "y" * 70_000,
    '{"a": 1e400}', "[" * 40, '{"dev": 99999999999999999999999}', '{"dev": -1}', '{"dev": 1.5}',
    "{}", "[]", "-", "--", "-x", "--bogus",
]
hostile = st.one_of(st.sampled_from(_NASTY), st.text(max_size=12),
                    st.text(st.characters(codec=None, categories=["Cs", "Cc", "Zs", "So"]), max_size=6))
name = hostile.filter(lambda s: not s.startswith("-") or s in ("-", "--", "-x", "--bogus"))
assignment = st.one_of(st.sampled_from([a for a in _NASTY if "=" in a]),
                       st.builds(lambda k, v: f"{k}={v}", name, hostile))


#: The sharing commands (issue 12).
SHARING = ["spaces", "keep", "invite", "join", "members", "grant", "revoke", "migrate"]
rights = st.sampled_from(["read", "write", "admin"]) | name


@st.composite
def invocations(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from([
        "init", "put", "get", "list", "delete", "history", "conflicts", "leave", "status", "export",
        "import", "no-such-command", *SHARING]))
    args = [command]
    if command == "spaces":
        args += draw(st.sampled_from([[], ["create", draw(name)], ["rename", draw(name), draw(name)],
                                      [draw(name)]]))
    elif command == "invite":
        args += [draw(st.sampled_from(["s"]) | name), "--rights", draw(rights)]
        args += draw(st.sampled_from([[], ["--expires", draw(hostile)], ["--collection", draw(name)],
                                      ["--no-history", "--qr"]]))
    elif command == "join":
        args += [draw(st.sampled_from(["cs1", "cs1AAAA", "cs1" + "A" * 5000, "s"]) | name)]
    elif command in ("grant", "revoke"):
        args += [draw(st.sampled_from(["s"]) | name), draw(st.sampled_from(["a" * 52]) | name)]
        if command == "grant":
            args += ["--rights", draw(rights), *draw(st.sampled_from(
                [[], ["--expires", draw(hostile)], ["--collection", draw(name)]]))]
    elif command == "migrate":
        args += draw(st.sampled_from([[], ["/nonexistent/dir"], ["{tmp}/garbage"]]))
    elif command in ("put", "get", "delete", "history"):
        args += [draw(st.sampled_from(["s", "site"]) | name) for _ in range(3)]
        if command == "put":
            args += draw(st.lists(assignment, min_size=0, max_size=3))
    elif command in ("list", "conflicts", "keep", "members", "leave"):
        args += draw(st.lists(st.sampled_from(["s"]) | name, min_size=0, max_size=2))
    elif command == "export":
        args += [draw(st.sampled_from(["s"]) | name), "--out",
                 draw(st.sampled_from(["{tmp}/b.bundle", "/nonexistent/dir/b", "{tmp}", "{tmp}/\udcff"]))]
        args += draw(st.sampled_from([[], ["--since", draw(hostile)], ["--for", draw(name)]]))
    elif command == "import":
        args += [draw(st.sampled_from(["{tmp}/b.bundle", "{tmp}/garbage", "{tmp}/deep", "{tmp}",
                                       "/nonexistent", "{tmp}/\udcff"]))]
    if draw(st.booleans()):
        args.insert(draw(st.integers(0, len(args))), "--json")
    return args


def run(argv: list[str]) -> tuple[int, str, str]:
    """``crdt-sync ARGV`` in this process: (exit code, stdout, stderr), with stdout and stderr
    as a real process has them (strict UTF-8 text over bytes). Any exception other than
    SystemExit is a traceback a user would have seen, and fails the test."""
    raw_out, raw_err = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(raw_out, encoding="utf-8", errors="strict", write_through=True)
    err = io.TextIOWrapper(raw_err, encoding="utf-8", errors="strict", write_through=True)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out.flush()
        err.flush()
    return code, raw_out.getvalue().decode("utf-8"), raw_err.getvalue().decode("utf-8")


def check(argv: list[str], code: int, stdout: str, stderr: str) -> None:
    assert code in DOCUMENTED, (argv, code, stderr)
    assert "Traceback" not in stderr, (argv, stderr)
    options = argv[:argv.index("--")] if "--" in argv else argv  # after "--": positionals
    if "--json" in options and "-h" not in options and "--help" not in options:
        if code == 0:
            json.loads(stdout)  # valid JSON (NaN and Infinity are not)
        elif stdout:
            json.loads(stdout)
        for line in stderr.splitlines():  # errors and warnings as JSON too
            json.loads(line)


@pytest.fixture(scope="module")
def workspace() -> Iterator[Path]:
    """A data directory with a little data, a bundle, a garbage file, a deep CBOR file."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with Replica(root / "data") as replica:
            replica.space("s").put("c", "e", {"a": 1})
            (root / "b.bundle").write_bytes(replica.export_bundle("s"))
        (root / "garbage").write_bytes(os.urandom(256))
        (root / "deep").write_bytes(b"\x81" * 100_000 + b"\x00")
        yield root


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                   HealthCheck.too_slow])
@given(argv=invocations())
def test_no_input_prints_a_traceback(workspace: Path, argv: list[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRDT_SYNC_DATA", str(workspace / "data"))  # never the user's own
    argv = [a.replace("{tmp}", str(workspace)) for a in argv]
    code, stdout, stderr = run(["--data", str(workspace / "data"), *argv])
    check(argv, code, stdout, stderr)


@pytest.mark.parametrize("argv", [
    ["put", "s", "c", "e", "n=1e400", "--json"],
    ["put", "s", "c", "e", "\udcff=1"],
    ["put", "s", "c", "e", f"d={DEEP}", "--json"],
    ["list", "s", "\udcff", "--json"],
    ["export", "s", "--out", "/nonexistent/dir/b", "--json"],
    ["export", "s", "--out", "{tmp}/x", "--since", "[" * 10_000, "--json"],
    ["export", "s", "--out", "{tmp}/x", "--since", '{"d": 99999999999999999999999}', "--json"],
    ["import", "{tmp}/deep", "--json"],
    ["import", "{tmp}/garbage"],
    ["get", "s", "c", "e", "--bogus", "--json"],
    ["no-such-command", "--json"],
    # the networked commands, with arguments refused before any connection is tried
    ["sync", "--relay", "notaurl", "--json"],
    ["sync", "--relay", "ws://[::1", "--json"],
    ["peer", "--relay", "ftp://127.0.0.1:1"],
    ["sync", "--relay", "ws://127.0.0.1:1", "--timeout", "nan", "--json"],
    ["relay", "--cert", "/nonexistent/c", "--key", "/nonexistent/k", "--port", "0", "--json"],
])
def test_as_real_processes(workspace: Path, argv: list[str]) -> None:
    argv = [a.replace("{tmp}", str(workspace)) for a in argv]
    encoded = [a.encode("utf-8", "surrogateescape") for a in argv]  # bytes on the command line
    result = cli(workspace / "data", *encoded)  # type: ignore[arg-type]
    check(argv, result.returncode, result.stdout, result.stderr)
    assert result.returncode != 0 or argv[0] == "list"


def test_the_depth_limit_is_the_documented_one() -> None:
    assert MAX_DEPTH == 32  # README, "Values"


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_second_double_dash_is_a_usage_error(workspace: Path, json_flag: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # Found by the fuzz above: after a second `--` argparse hands `collection` over as [],
    # which reached the entity cache as a key and raised TypeError (a traceback).
    with pytest.raises(SystemExit) as ended:
        main([*json_flag, "put", "--data", str(workspace), "s", "--", "--", "=", "a="])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "argument collection is missing" in err
    if json_flag:
        assert json.loads(err)["error"]["kind"] == "usage"
